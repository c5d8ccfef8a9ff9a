//! The VMX smoke case: capability snapshot, enabling VMX, VMCS instructions and their failure
//! modes, then a tiny 64-bit guest (CPUID, VMCALL) under a 1:1 EPT when the CPU offers one.
//!
//! Reference: Intel SDM (325462-086US, December 2024) Vol. 3C: 25 "Virtual Machine Control
//! Structures" (25.4 guest-state area, 25.5 host-state area, 25.6–25.8 controls), 27 "VM Entries"
//! (27.2 checks of controls and host state), 28 "VM Exits", 29.3 "The EPT Translation
//! Mechanism", 31 "VMX Instruction Reference" and Appendix B "Field Encoding in VMCS" for the raw
//! encodings below.
// UNSAFETY: this case executes VMX instructions, reads and writes MSRs and control registers,
// and hands the CPU a host and a guest context built from assembly symbols.
#![expect(unsafe_code, reason = "the case drives VMX directly")]

use core::arch::global_asm;
use core::arch::x86_64::__cpuid_count;
use core::sync::atomic::{AtomicU64, Ordering};

use hvkit_vmx::capabilities::{ControlsRequest, VmxCapabilities};
use hvkit_vmx::controls::{EntryControls, ExitControls, SecondaryControls};
use hvkit_vmx::enable::{self, HardwareCpu, SmxMode, VmxCpu, VmxOn, VmxonRegion};
use hvkit_vmx::instructions::{self as vmx, InveptType, InvvpidType};
use hvkit_vmx::{VmFail, VmInstructionError};
use x86_64::structures::paging::{PhysFrame, Size4KiB};
use x86_64::{PhysAddr, instructions::tables};

use crate::boot::{self, selectors};
use crate::println;
use crate::serial;
use crate::sync::{Page, SpinLock, TakeOnce};

/// Raw VMCS field encodings (SDM Vol. 3C, Appendix B "Field Encoding in VMCS").
#[expect(
    dead_code,
    reason = "a reference set; not every encoding is used by this case"
)]
mod enc {
    // B.1.1 16-bit control fields.
    pub const VPID: u32 = 0x0000;
    // B.1.2 16-bit guest-state fields.
    pub const GUEST_ES_SELECTOR: u32 = 0x0800;
    pub const GUEST_CS_SELECTOR: u32 = 0x0802;
    pub const GUEST_SS_SELECTOR: u32 = 0x0804;
    pub const GUEST_DS_SELECTOR: u32 = 0x0806;
    pub const GUEST_FS_SELECTOR: u32 = 0x0808;
    pub const GUEST_GS_SELECTOR: u32 = 0x080A;
    pub const GUEST_LDTR_SELECTOR: u32 = 0x080C;
    pub const GUEST_TR_SELECTOR: u32 = 0x080E;
    // B.1.3 16-bit host-state fields.
    pub const HOST_ES_SELECTOR: u32 = 0x0C00;
    pub const HOST_CS_SELECTOR: u32 = 0x0C02;
    pub const HOST_SS_SELECTOR: u32 = 0x0C04;
    pub const HOST_DS_SELECTOR: u32 = 0x0C06;
    pub const HOST_FS_SELECTOR: u32 = 0x0C08;
    pub const HOST_GS_SELECTOR: u32 = 0x0C0A;
    pub const HOST_TR_SELECTOR: u32 = 0x0C0C;
    // B.2.1 64-bit control fields.
    pub const VM_EXIT_MSR_STORE_ADDR: u32 = 0x2006;
    pub const EPT_POINTER: u32 = 0x201A;
    // B.2.3 64-bit guest-state fields.
    pub const VMCS_LINK_POINTER: u32 = 0x2800;
    pub const VMCS_LINK_POINTER_HIGH: u32 = 0x2801;
    pub const GUEST_IA32_DEBUGCTL: u32 = 0x2802;
    pub const GUEST_IA32_EFER: u32 = 0x2806;
    // B.2.4 64-bit host-state fields.
    pub const HOST_IA32_EFER: u32 = 0x2C02;
    // B.3.1 32-bit control fields.
    pub const PIN_BASED_CONTROLS: u32 = 0x4000;
    pub const PRIMARY_CONTROLS: u32 = 0x4002;
    pub const EXCEPTION_BITMAP: u32 = 0x4004;
    pub const PAGE_FAULT_ERROR_CODE_MASK: u32 = 0x4006;
    pub const PAGE_FAULT_ERROR_CODE_MATCH: u32 = 0x4008;
    pub const CR3_TARGET_COUNT: u32 = 0x400A;
    pub const EXIT_CONTROLS: u32 = 0x400C;
    pub const EXIT_MSR_STORE_COUNT: u32 = 0x400E;
    pub const EXIT_MSR_LOAD_COUNT: u32 = 0x4010;
    pub const ENTRY_CONTROLS: u32 = 0x4012;
    pub const ENTRY_MSR_LOAD_COUNT: u32 = 0x4014;
    pub const ENTRY_INTERRUPTION_INFO: u32 = 0x4016;
    pub const SECONDARY_CONTROLS: u32 = 0x401E;
    // B.3.2 32-bit read-only data fields.
    pub const VM_INSTRUCTION_ERROR: u32 = 0x4400;
    pub const EXIT_REASON: u32 = 0x4402;
    pub const EXIT_INSTRUCTION_LENGTH: u32 = 0x440C;
    // B.3.3 32-bit guest-state fields.
    pub const GUEST_ES_LIMIT: u32 = 0x4800;
    pub const GUEST_CS_LIMIT: u32 = 0x4802;
    pub const GUEST_SS_LIMIT: u32 = 0x4804;
    pub const GUEST_DS_LIMIT: u32 = 0x4806;
    pub const GUEST_FS_LIMIT: u32 = 0x4808;
    pub const GUEST_GS_LIMIT: u32 = 0x480A;
    pub const GUEST_LDTR_LIMIT: u32 = 0x480C;
    pub const GUEST_TR_LIMIT: u32 = 0x480E;
    pub const GUEST_GDTR_LIMIT: u32 = 0x4810;
    pub const GUEST_IDTR_LIMIT: u32 = 0x4812;
    pub const GUEST_ES_ACCESS_RIGHTS: u32 = 0x4814;
    pub const GUEST_CS_ACCESS_RIGHTS: u32 = 0x4816;
    pub const GUEST_SS_ACCESS_RIGHTS: u32 = 0x4818;
    pub const GUEST_DS_ACCESS_RIGHTS: u32 = 0x481A;
    pub const GUEST_FS_ACCESS_RIGHTS: u32 = 0x481C;
    pub const GUEST_GS_ACCESS_RIGHTS: u32 = 0x481E;
    pub const GUEST_LDTR_ACCESS_RIGHTS: u32 = 0x4820;
    pub const GUEST_TR_ACCESS_RIGHTS: u32 = 0x4822;
    pub const GUEST_INTERRUPTIBILITY: u32 = 0x4824;
    pub const GUEST_ACTIVITY_STATE: u32 = 0x4826;
    pub const GUEST_SYSENTER_CS: u32 = 0x482A;
    // B.3.4 32-bit host-state field.
    pub const HOST_SYSENTER_CS: u32 = 0x4C00;
    // B.4.1 natural-width control fields.
    pub const CR0_GUEST_HOST_MASK: u32 = 0x6000;
    pub const CR4_GUEST_HOST_MASK: u32 = 0x6002;
    pub const CR0_READ_SHADOW: u32 = 0x6004;
    pub const CR4_READ_SHADOW: u32 = 0x6006;
    // B.4.2 natural-width read-only data fields.
    pub const EXIT_QUALIFICATION: u32 = 0x6400;
    // B.4.3 natural-width guest-state fields.
    pub const GUEST_CR0: u32 = 0x6800;
    pub const GUEST_CR3: u32 = 0x6802;
    pub const GUEST_CR4: u32 = 0x6804;
    pub const GUEST_ES_BASE: u32 = 0x6806;
    pub const GUEST_CS_BASE: u32 = 0x6808;
    pub const GUEST_SS_BASE: u32 = 0x680A;
    pub const GUEST_DS_BASE: u32 = 0x680C;
    pub const GUEST_FS_BASE: u32 = 0x680E;
    pub const GUEST_GS_BASE: u32 = 0x6810;
    pub const GUEST_LDTR_BASE: u32 = 0x6812;
    pub const GUEST_TR_BASE: u32 = 0x6814;
    pub const GUEST_GDTR_BASE: u32 = 0x6816;
    pub const GUEST_IDTR_BASE: u32 = 0x6818;
    pub const GUEST_DR7: u32 = 0x681A;
    pub const GUEST_RSP: u32 = 0x681C;
    pub const GUEST_RIP: u32 = 0x681E;
    pub const GUEST_RFLAGS: u32 = 0x6820;
    pub const GUEST_PENDING_DEBUG_EXCEPTIONS: u32 = 0x6822;
    pub const GUEST_SYSENTER_ESP: u32 = 0x6824;
    pub const GUEST_SYSENTER_EIP: u32 = 0x6826;
    // B.4.4 natural-width host-state fields.
    pub const HOST_CR0: u32 = 0x6C00;
    pub const HOST_CR3: u32 = 0x6C02;
    pub const HOST_CR4: u32 = 0x6C04;
    pub const HOST_FS_BASE: u32 = 0x6C06;
    pub const HOST_GS_BASE: u32 = 0x6C08;
    pub const HOST_TR_BASE: u32 = 0x6C0A;
    pub const HOST_GDTR_BASE: u32 = 0x6C0C;
    pub const HOST_IDTR_BASE: u32 = 0x6C0E;
    pub const HOST_SYSENTER_ESP: u32 = 0x6C10;
    pub const HOST_SYSENTER_EIP: u32 = 0x6C12;
    pub const HOST_RSP: u32 = 0x6C14;
    pub const HOST_RIP: u32 = 0x6C16;
}

/// Basic exit reasons this case expects (SDM Vol. 3C, Appendix C "VMX Basic Exit Reasons").
const EXIT_REASON_CPUID: u64 = 10;
const EXIT_REASON_VMCALL: u64 = 18;
/// Exit reason bit 31: VM-entry failure (SDM Vol. 3C, 25.9.1 "Basic VM-Exit Information").
const EXIT_REASON_ENTRY_FAILURE: u64 = 1 << 31;

/// MSRs read for the host state (SDM Vol. 4, Table 2-2).
const IA32_SYSENTER_CS: u32 = 0x174;
const IA32_SYSENTER_ESP: u32 = 0x175;
const IA32_SYSENTER_EIP: u32 = 0x176;
const IA32_EFER: u32 = 0xC000_0080;
const IA32_FS_BASE: u32 = 0xC000_0100;
const IA32_GS_BASE: u32 = 0xC000_0101;

/// The CPUID leaf the host answers itself, and the signature it returns in EBX, ECX, EDX.
const HV_LEAF: u32 = 0x4000_0000;
const HV_SIGNATURE: &[u8; 12] = b"hvkitHVKIThv";
/// The value the guest stores to [`vmx_guest_marker`] before its VMCALL.
const GUEST_MARKER: u64 = 0x600D_F00D_0000_0001;

/// Segment access rights in the VMCS format (SDM Vol. 3C, 25.4.1 "Guest Register State",
/// Table 25-2 "Format of Access Rights").
mod access_rights {
    const ACCESSED: u32 = 1 << 0;
    const WRITABLE_OR_READABLE: u32 = 1 << 1;
    const CODE: u32 = 1 << 3;
    const CODE_OR_DATA: u32 = 1 << 4;
    const PRESENT: u32 = 1 << 7;
    const LONG_MODE: u32 = 1 << 13;
    const DEFAULT_BIG: u32 = 1 << 14;
    const GRANULARITY: u32 = 1 << 15;
    const UNUSABLE: u32 = 1 << 16;
    /// Type 11 for a system descriptor: busy 64-bit TSS.
    const TSS_BUSY_64: u32 = 0xB;

    /// A 64-bit ring-0 code segment, accessed.
    pub const CODE64: u32 =
        ACCESSED | WRITABLE_OR_READABLE | CODE | CODE_OR_DATA | PRESENT | LONG_MODE | GRANULARITY;
    /// A flat ring-0 data segment, accessed.
    pub const DATA: u32 =
        ACCESSED | WRITABLE_OR_READABLE | CODE_OR_DATA | PRESENT | DEFAULT_BIG | GRANULARITY;
    /// The busy 64-bit TSS.
    pub const TSS: u32 = TSS_BUSY_64 | PRESENT;
    /// An unusable segment (the LDTR here).
    pub const UNUSABLE_SEGMENT: u32 = UNUSABLE;
}

/// EPT entry bits (SDM Vol. 3C, 29.3.2 "EPT Translation Mechanism", Tables 29-1 to 29-6) and the
/// EPTP format (25.6.11 "Extended-Page-Table Pointer (EPTP)").
mod ept {
    pub const READ: u64 = 1 << 0;
    pub const WRITE: u64 = 1 << 1;
    pub const EXECUTE: u64 = 1 << 2;
    /// Bits 5:3 of a leaf: memory type 6 (write-back).
    pub const LEAF_WB: u64 = 6 << 3;
    /// Bit 7: the entry maps a page.
    pub const PAGE: u64 = 1 << 7;
    /// EPTP bits 2:0: memory type of the paging structures, 6 = write-back.
    pub const EPTP_WB: u64 = 6;
    /// EPTP bits 5:3: page-walk length minus one.
    pub const EPTP_WALK_4: u64 = 3 << 3;
}

/// The guest registers the exit stub saves on the host stack, in push order reversed.
#[repr(C)]
#[derive(Debug)]
struct GuestRegisters {
    rax: u64,
    rbx: u64,
    rcx: u64,
    rdx: u64,
    rsi: u64,
    rdi: u64,
    rbp: u64,
    r8: u64,
    r9: u64,
    r10: u64,
    r11: u64,
    r12: u64,
    r13: u64,
    r14: u64,
    r15: u64,
}

global_asm!(
    r#"
    .text
    // VM-exit entry (HOST_RIP): save the guest GPRs, let Rust handle the exit, restore, resume.
    .global vmx_exit_entry
vmx_exit_entry:
    push r15
    push r14
    push r13
    push r12
    push r11
    push r10
    push r9
    push r8
    push rbp
    push rdi
    push rsi
    push rdx
    push rcx
    push rbx
    push rax
    mov rdi, rsp
    sub rsp, 8
    call vmx_exit_handler
    add rsp, 8
    pop rax
    pop rbx
    pop rcx
    pop rdx
    pop rsi
    pop rdi
    pop rbp
    pop r8
    pop r9
    pop r10
    pop r11
    pop r12
    pop r13
    pop r14
    pop r15
    vmresume
    // Only reached when VMRESUME fails: pass RFLAGS to the reporter.
    pushfq
    pop rdi
    and rsp, -16
    call vmx_resume_failed
7:
    hlt
    jmp 7b

    // The guest: ask the hypervisor's CPUID leaf, leave a marker in shared memory, VMCALL.
    .global vmx_guest_entry
vmx_guest_entry:
    mov eax, 0x40000000
    xor ecx, ecx
    cpuid
    mov r8, 0x600DF00D00000001
    mov qword ptr [rip + vmx_guest_marker], r8
    .global vmx_guest_vmcall
vmx_guest_vmcall:
    vmcall
    ud2

    .section .bss.vmx, "aw", @nobits
    .balign 16
vmx_exit_stack:
    .skip 16384
    .global vmx_exit_stack_top
vmx_exit_stack_top:
vmx_guest_stack:
    .skip 4096
    .global vmx_guest_stack_top
vmx_guest_stack_top:
"#
);

unsafe extern "C" {
    static vmx_exit_entry: u8;
    static vmx_exit_stack_top: u8;
    static vmx_guest_entry: u8;
    static vmx_guest_vmcall: u8;
    static vmx_guest_stack_top: u8;
}

/// Written by the guest (through the shared identity mapping) right before its VMCALL.
#[unsafe(no_mangle)]
static vmx_guest_marker: AtomicU64 = AtomicU64::new(0);

static VMXON_REGION: TakeOnce<VmxonRegion> = TakeOnce::new(VmxonRegion::new());
static VMCS_REGION: TakeOnce<Page> = TakeOnce::new(Page::zeroed());
static EPT_PML4: TakeOnce<Page> = TakeOnce::new(Page::zeroed());
static EPT_PDPT: TakeOnce<Page> = TakeOnce::new(Page::zeroed());
static EPT_PD: TakeOnce<[Page; 4]> = TakeOnce::new([const { Page::zeroed() }; 4]);

/// What the exit handler needs from the launch code.
struct State {
    on: Option<VmxOn>,
    exits: u64,
    cpuid_exits: u64,
}

static STATE: SpinLock<State> = SpinLock::new(State {
    on: None,
    exits: 0,
    cpuid_exits: 0,
});

/// Ends the run with a failure line.
fn fail(what: &str, detail: core::fmt::Arguments<'_>) -> ! {
    println!("FAIL {what}: {detail}");
    let exits = STATE.with(|s| s.exits);
    serial::finish(false, exits)
}

/// Prints a passed check, or fails the run.
fn check(what: &str, ok: bool, detail: core::fmt::Arguments<'_>) {
    if ok {
        println!("ok {what}: {detail}");
    } else {
        fail(what, detail);
    }
}

fn frame(phys: u64) -> PhysFrame<Size4KiB> {
    match PhysFrame::from_start_address(PhysAddr::new(phys)) {
        Ok(frame) => frame,
        Err(_) => fail("frame", format_args!("{phys:#x} is not 4 KiB aligned")),
    }
}

fn vmread(encoding: u32) -> u64 {
    // SAFETY: only called in VMX root operation with a current VMCS.
    match unsafe { vmx::vmread(encoding) } {
        Ok(value) => value,
        Err(e) => fail("vmread", format_args!("field {encoding:#06x}: {e}")),
    }
}

/// VMWRITE of a field that must be accepted.
///
/// # Safety
/// - VMX root operation with a current VMCS; the value obeys [`vmx::vmwrite`]'s contract.
unsafe fn vmwrite(encoding: u32, value: u64) {
    // SAFETY: forwarded to the caller.
    if let Err(e) = unsafe { vmx::vmwrite(encoding, value) } {
        fail(
            "vmwrite",
            format_args!("field {encoding:#06x} = {value:#x}: {e}"),
        );
    }
}

fn is_error(result: Result<impl Sized, VmFail>, expected: VmInstructionError) -> bool {
    matches!(result, Err(VmFail::Valid(e)) if e == expected)
}

fn sym(s: &u8) -> u64 {
    core::ptr::from_ref(s) as u64
}

/// The VMX smoke case.
pub fn run() -> ! {
    // SAFETY: ring 0, 64-bit mode; only architectural and VMX MSRs that exist are read.
    let mut cpu = unsafe { HardwareCpu::new() };

    // The capability snapshot, with every MSR that `VmxCapabilities::read` decided to read.
    let log = SpinLock::new([(0u32, 0u64); 32]);
    let count = core::sync::atomic::AtomicUsize::new(0);
    let caps = VmxCapabilities::read(&|msr: u32| {
        let value = cpu.read_msr(msr);
        let i = count.fetch_add(1, Ordering::Relaxed);
        log.with(|l| {
            if let Some(slot) = l.get_mut(i) {
                *slot = (msr, value);
            }
        });
        value
    });
    let n = count.load(Ordering::Relaxed).min(32);
    log.with(|l| {
        for (msr, value) in &l[..n] {
            println!("msr {msr:#x} {value:#018x}");
        }
    });
    println!("caps {caps:#x?}");
    println!("caps-end");

    let Some(region) = VMXON_REGION.take() else {
        fail("vmxon region", format_args!("taken twice"))
    };
    let region_phys = frame(core::ptr::from_ref(region) as u64);
    // SAFETY: ring 0 on the only CPU; `region_phys` is `region` (identity map), a static that is
    // never touched again.
    let on = match unsafe { enable::enable(&mut cpu, region, region_phys, SmxMode::Outside) } {
        Ok(on) => on,
        Err(e) => fail("enable", format_args!("{e}")),
    };
    let revision = on.basic().revision_id();
    println!("ok enable: VMXON done, revision id {revision:#x}");
    STATE.with(|s| s.on = Some(on));

    let Some(vmcs) = VMCS_REGION.take() else {
        fail("vmcs region", format_args!("taken twice"))
    };
    vmcs.0[0] = u64::from(revision);
    let vmcs_phys = vmcs.phys();
    let vmcs_frame = frame(vmcs_phys);

    // SAFETY: VMX root operation; the VMCS region is a static page with the revision id.
    let cleared = unsafe { vmx::vmclear(vmcs_frame) };
    check("vmclear", cleared.is_ok(), format_args!("{cleared:?}"));
    // SAFETY: as above; the region was just cleared.
    let loaded = unsafe { vmx::vmptrld(vmcs_frame) };
    check("vmptrld", loaded.is_ok(), format_args!("{loaded:?}"));
    // SAFETY: VMX root operation.
    let current = unsafe { vmx::vmptrst() };
    check(
        "vmptrst",
        current == Some(PhysAddr::new(vmcs_phys)),
        format_args!("{current:?}, loaded {vmcs_phys:#x}"),
    );

    // Round trips of one field of each width.
    let trips: [(&str, u32, u64); 4] = [
        ("16-bit guest ES selector", enc::GUEST_ES_SELECTOR, 0x0010),
        ("32-bit guest ES limit", enc::GUEST_ES_LIMIT, 0x000F_FFFF),
        (
            "64-bit VMCS link pointer",
            enc::VMCS_LINK_POINTER,
            0x1234_5678_9ABC_D000,
        ),
        (
            "natural-width guest ES base",
            enc::GUEST_ES_BASE,
            0xFFFF_8000_1234_5000,
        ),
    ];
    for (what, encoding, value) in trips {
        // SAFETY: guest-state fields only; the VMCS is not entered before they are rewritten.
        unsafe { vmwrite(encoding, value) };
        let back = vmread(encoding);
        check(
            "vmwrite/vmread",
            back == value,
            format_args!("{what} ({encoding:#06x}) wrote {value:#x} read {back:#x}"),
        );
    }
    let high = vmread(enc::VMCS_LINK_POINTER_HIGH);
    check(
        "vmread high half",
        high == 0x1234_5678,
        format_args!("{:#06x} read {high:#x}", enc::VMCS_LINK_POINTER_HIGH),
    );
    // SAFETY: VMX root operation with a current VMCS; a 32-bit value is written to a 16-bit
    // field, which the CPU truncates (SDM 31.3 "VMWRITE": unused upper bits are ignored).
    unsafe { vmwrite(enc::GUEST_ES_SELECTOR, 0xABCD_0018) };
    let truncated = vmread(enc::GUEST_ES_SELECTOR);
    check(
        "vmwrite truncation",
        truncated == 0x0018,
        format_args!("16-bit field read {truncated:#x} after writing 0xabcd0018"),
    );

    // An encoding beyond IA32_VMX_VMCS_ENUM's highest index: error 12.
    let unsupported = 0x4800 | (0x1FF << 1);
    // SAFETY: VMX root operation with a current VMCS.
    let read = unsafe { vmx::vmread(unsupported) };
    check(
        "vmread unsupported field",
        is_error(read, VmInstructionError::UNSUPPORTED_VMCS_COMPONENT),
        format_args!("{unsupported:#06x}: {read:x?}"),
    );
    // SAFETY: VMX root operation with a current VMCS; the field is never used for entry.
    let wrote = unsafe { vmx::vmwrite(unsupported, 1) };
    check(
        "vmwrite unsupported field",
        is_error(wrote, VmInstructionError::UNSUPPORTED_VMCS_COMPONENT),
        format_args!("{unsupported:#06x}: {wrote:?}"),
    );
    // The exit reason is read-only unless IA32_VMX_MISC[29] allows VMWRITE to any field.
    // SAFETY: the exit-reason field does not affect VM entry.
    let wrote = unsafe { vmx::vmwrite(enc::EXIT_REASON, 0x1234) };
    if caps.misc.vmwrite_any_field() {
        let back = vmread(enc::EXIT_REASON);
        check(
            "vmwrite read-only field (allowed by IA32_VMX_MISC[29])",
            wrote.is_ok() && back == 0x1234,
            format_args!("{wrote:?}, read back {back:#x}"),
        );
    } else {
        check(
            "vmwrite read-only field",
            is_error(wrote, VmInstructionError::VMWRITE_READ_ONLY_COMPONENT),
            format_args!("{wrote:?}"),
        );
    }

    // VMCLEAR makes the VMCS not current; its data survives a VMPTRLD.
    // SAFETY: VMX root operation; the region is the current VMCS.
    let cleared = unsafe { vmx::vmclear(vmcs_frame) };
    // SAFETY: VMX root operation.
    let current = unsafe { vmx::vmptrst() };
    check(
        "vmclear then vmptrst",
        cleared.is_ok() && current.is_none(),
        format_args!("{cleared:?}, current {current:?}"),
    );
    // SAFETY: there is no current VMCS now, so VMREAD must fail with VMfailInvalid.
    let read = unsafe { vmx::vmread(enc::GUEST_ES_BASE) };
    check(
        "vmread without current VMCS",
        read == Err(VmFail::Invalid),
        format_args!("{read:x?}"),
    );
    // SAFETY: the region was just cleared.
    let loaded = unsafe { vmx::vmptrld(vmcs_frame) };
    let kept = vmread(enc::GUEST_ES_BASE);
    check(
        "vmptrld keeps data",
        loaded.is_ok() && kept == 0xFFFF_8000_1234_5000,
        format_args!("{loaded:?}, guest ES base {kept:#x}"),
    );

    // Controls from the capabilities: EPT and VPID when offered, EFER loading both ways.
    let ept_caps = caps.ept_vpid.unwrap_or_default();
    use hvkit_vmx::capabilities::EptVpidCap as Cap;
    let secondary_ok =
        |bits: SecondaryControls| caps.secondary.is_some_and(|s| s.allows(bits.bits()));
    let use_ept = secondary_ok(SecondaryControls::ENABLE_EPT)
        && ept_caps.contains(Cap::PAGE_WALK_4 | Cap::MEMORY_TYPE_WB);
    let use_vpid = secondary_ok(SecondaryControls::ENABLE_VPID);
    let load_efer = caps.exit.allows(ExitControls::LOAD_IA32_EFER.bits())
        && caps.entry.allows(EntryControls::LOAD_IA32_EFER.bits());
    let mut request = ControlsRequest {
        exit: ExitControls::HOST_ADDRESS_SPACE_SIZE,
        entry: EntryControls::IA32E_MODE_GUEST,
        ..ControlsRequest::default()
    };
    if use_ept {
        request.secondary |= SecondaryControls::ENABLE_EPT;
    }
    if use_vpid {
        request.secondary |= SecondaryControls::ENABLE_VPID;
    }
    if load_efer {
        request.exit |= ExitControls::LOAD_IA32_EFER;
        request.entry |= EntryControls::LOAD_IA32_EFER;
    }
    let controls = match caps.adjust(&request) {
        Ok(controls) => controls,
        Err(refused) => fail("adjust controls", format_args!("{refused}")),
    };
    println!("ok controls: ept {use_ept}, vpid {use_vpid}, load EFER {load_efer}: {controls:#x?}");

    let eptp = if use_ept { build_ept(ept_caps) } else { 0 };

    // SAFETY: ring 0; reading control registers and MSRs has no side effects.
    let host = HostState::current(&cpu);
    // SAFETY: VMX root operation with a current VMCS. The host state is this CPU's, HOST_RIP is
    // the exit stub with its own stack, the EPT maps guest-physical 1:1 onto memory that stays
    // put, and the guest shares the host's page tables and descriptor tables, which live for the
    // whole run.
    unsafe { write_vmcs(&controls, &host, eptp, use_vpid) };

    if let Some(fake) = invalid_pin_based(&caps) {
        // SAFETY: a control value the CPU rejects before entering the guest.
        unsafe { vmwrite(enc::PIN_BASED_CONTROLS, u64::from(fake)) };
        // SAFETY: the VMCS is complete; the broken control makes the launch fail with error 7.
        let failed = unsafe { vmx::vmlaunch() };
        check(
            "vmlaunch with an unsupported pin-based control",
            failed == VmFail::Valid(VmInstructionError::ENTRY_INVALID_CONTROL_FIELD),
            format_args!("pin-based {fake:#x}: {failed:?}"),
        );
        // SAFETY: restores the adjusted value.
        unsafe { vmwrite(enc::PIN_BASED_CONTROLS, u64::from(controls.pin_based)) };
    }
    // SAFETY: VMRESUME of a VMCS that was never launched fails with error 5 before any entry.
    let failed = unsafe { vmx::vmresume() };
    check(
        "vmresume of a clear VMCS",
        failed == VmFail::Valid(VmInstructionError::VMRESUME_NON_LAUNCHED_VMCS),
        format_args!("{failed:?}"),
    );

    if use_ept && ept_caps.contains(Cap::INVEPT) {
        if ept_caps.contains(Cap::INVEPT_SINGLE_CONTEXT) {
            // SAFETY: VMX root operation, INVEPT supported; `eptp` is the EPT just built.
            let r = unsafe { vmx::invept(InveptType::SingleContext { eptp }) };
            check("invept single-context", r.is_ok(), format_args!("{r:?}"));
        }
        if ept_caps.contains(Cap::INVEPT_ALL_CONTEXT) {
            // SAFETY: VMX root operation, all-context INVEPT supported.
            let r = unsafe { vmx::invept(InveptType::AllContexts) };
            check("invept all-context", r.is_ok(), format_args!("{r:?}"));
        }
    }
    if use_vpid && ept_caps.contains(Cap::INVVPID) {
        let kinds = [
            (
                Cap::INVVPID_INDIVIDUAL_ADDRESS,
                InvvpidType::IndividualAddress {
                    vpid: 1,
                    address: 0x20_0000,
                },
            ),
            (
                Cap::INVVPID_SINGLE_CONTEXT,
                InvvpidType::SingleContext { vpid: 1 },
            ),
            (Cap::INVVPID_ALL_CONTEXT, InvvpidType::AllContexts),
            (
                Cap::INVVPID_SINGLE_CONTEXT_RETAINING_GLOBALS,
                InvvpidType::SingleContextRetainingGlobals { vpid: 1 },
            ),
        ];
        for (cap, kind) in kinds {
            if ept_caps.contains(cap) {
                // SAFETY: VMX root operation, INVVPID and this type supported.
                let r = unsafe { vmx::invvpid(kind) };
                check("invvpid", r.is_ok(), format_args!("{kind:?}: {r:?}"));
            }
        }
        // SAFETY: as above; VPID 0 is invalid for single-context INVVPID (error 28).
        let r = unsafe { vmx::invvpid(InvvpidType::SingleContext { vpid: 0 }) };
        check(
            "invvpid of VPID 0",
            is_error(r, VmInstructionError::INVALID_INVEPT_INVVPID_OPERAND),
            format_args!("{r:?}"),
        );
    }

    println!(
        "launching the guest at {:#x}",
        sym(
            // SAFETY: only the symbol's address is taken.
            unsafe { &vmx_guest_entry }
        )
    );
    // SAFETY: the VMCS is complete and valid (see `write_vmcs`); a successful launch continues
    // at `vmx_exit_entry`, which never returns here.
    let failed = unsafe { vmx::vmlaunch() };
    let error = vmread(enc::VM_INSTRUCTION_ERROR);
    fail(
        "vmlaunch",
        format_args!("{failed:?} (VM-instruction error {error})"),
    )
}

/// A pin-based control value with a bit the CPU does not allow, if there is one.
fn invalid_pin_based(caps: &VmxCapabilities) -> Option<u32> {
    let forbidden = !caps.pin_based.may_be_one;
    (forbidden != 0).then(|| caps.pin_based.must_be_one | (1 << forbidden.trailing_zeros()))
}

/// Builds an identity EPT of the low 4 GiB (1 GiB pages when offered, else 2 MiB) and returns the
/// EPTP.
fn build_ept(caps: hvkit_vmx::capabilities::EptVpidCap) -> u64 {
    use hvkit_vmx::capabilities::EptVpidCap as Cap;
    let (Some(pml4), Some(pdpt), Some(pds)) = (EPT_PML4.take(), EPT_PDPT.take(), EPT_PD.take())
    else {
        fail("ept", format_args!("tables taken twice"))
    };
    let rwx = ept::READ | ept::WRITE | ept::EXECUTE;
    pml4.0[0] = pdpt.phys() | rwx;
    if caps.contains(Cap::PAGE_1G) {
        for (i, entry) in pdpt.0.iter_mut().take(4).enumerate() {
            *entry = ((i as u64) << 30) | rwx | ept::LEAF_WB | ept::PAGE;
        }
        println!("ok ept: 1:1 map of 0..4 GiB with 1 GiB pages");
    } else {
        for (i, pd) in pds.iter_mut().enumerate() {
            pdpt.0[i] = pd.phys() | rwx;
            for (j, entry) in pd.0.iter_mut().enumerate() {
                *entry = (((i * 512 + j) as u64) << 21) | rwx | ept::LEAF_WB | ept::PAGE;
            }
        }
        println!("ok ept: 1:1 map of 0..4 GiB with 2 MiB pages");
    }
    pml4.phys() | ept::EPTP_WALK_4 | ept::EPTP_WB
}

/// The host state: this CPU as it runs now.
struct HostState {
    cr0: u64,
    cr3: u64,
    cr4: u64,
    efer: u64,
    fs_base: u64,
    gs_base: u64,
    gdtr_base: u64,
    gdtr_limit: u16,
    idtr_base: u64,
    idtr_limit: u16,
    sysenter_cs: u64,
    sysenter_esp: u64,
    sysenter_eip: u64,
}

impl HostState {
    fn current(cpu: &HardwareCpu) -> Self {
        let gdtr = tables::sgdt();
        let idtr = tables::sidt();
        let (cr3, _) = x86_64::registers::control::Cr3::read_raw();
        Self {
            cr0: cpu.cr0(),
            cr3: cr3.start_address().as_u64(),
            cr4: cpu.cr4(),
            efer: cpu.read_msr(IA32_EFER),
            fs_base: cpu.read_msr(IA32_FS_BASE),
            gs_base: cpu.read_msr(IA32_GS_BASE),
            gdtr_base: gdtr.base.as_u64(),
            gdtr_limit: gdtr.limit,
            idtr_base: idtr.base.as_u64(),
            idtr_limit: idtr.limit,
            sysenter_cs: cpu.read_msr(IA32_SYSENTER_CS),
            sysenter_esp: cpu.read_msr(IA32_SYSENTER_ESP),
            sysenter_eip: cpu.read_msr(IA32_SYSENTER_EIP),
        }
    }
}

/// Fills the whole VMCS: controls, host state (this CPU, exit stub), guest state (a 64-bit guest
/// sharing the host's page tables and descriptor tables).
///
/// # Safety
/// - VMX root operation with a current VMCS; `eptp` (when non-zero) points at a valid EPT that
///   lives for the rest of the run.
unsafe fn write_vmcs(
    controls: &hvkit_vmx::capabilities::AdjustedControls,
    host: &HostState,
    eptp: u64,
    vpid: bool,
) {
    let tss = boot::tss_base();
    // SAFETY: only symbol addresses are taken.
    let (exit_entry, exit_stack, guest_entry, guest_stack) = unsafe {
        (
            sym(&vmx_exit_entry),
            sym(&vmx_exit_stack_top),
            sym(&vmx_guest_entry),
            sym(&vmx_guest_stack_top),
        )
    };
    let fields: &[(u32, u64)] = &[
        // Controls.
        (enc::PIN_BASED_CONTROLS, u64::from(controls.pin_based)),
        (enc::PRIMARY_CONTROLS, u64::from(controls.primary)),
        (enc::EXIT_CONTROLS, u64::from(controls.exit)),
        (enc::ENTRY_CONTROLS, u64::from(controls.entry)),
        (enc::EXCEPTION_BITMAP, 0),
        (enc::PAGE_FAULT_ERROR_CODE_MASK, 0),
        (enc::PAGE_FAULT_ERROR_CODE_MATCH, 0),
        (enc::CR3_TARGET_COUNT, 0),
        (enc::EXIT_MSR_STORE_COUNT, 0),
        (enc::EXIT_MSR_LOAD_COUNT, 0),
        (enc::ENTRY_MSR_LOAD_COUNT, 0),
        (enc::ENTRY_INTERRUPTION_INFO, 0),
        (enc::CR0_GUEST_HOST_MASK, 0),
        (enc::CR4_GUEST_HOST_MASK, 0),
        (enc::CR0_READ_SHADOW, host.cr0),
        (enc::CR4_READ_SHADOW, host.cr4),
        // Host state.
        (enc::HOST_CR0, host.cr0),
        (enc::HOST_CR3, host.cr3),
        (enc::HOST_CR4, host.cr4),
        (enc::HOST_ES_SELECTOR, u64::from(selectors::DATA)),
        (enc::HOST_CS_SELECTOR, u64::from(selectors::CODE)),
        (enc::HOST_SS_SELECTOR, u64::from(selectors::DATA)),
        (enc::HOST_DS_SELECTOR, u64::from(selectors::DATA)),
        (enc::HOST_FS_SELECTOR, u64::from(selectors::DATA)),
        (enc::HOST_GS_SELECTOR, u64::from(selectors::DATA)),
        (enc::HOST_TR_SELECTOR, u64::from(selectors::TSS)),
        (enc::HOST_FS_BASE, host.fs_base),
        (enc::HOST_GS_BASE, host.gs_base),
        (enc::HOST_TR_BASE, tss),
        (enc::HOST_GDTR_BASE, host.gdtr_base),
        (enc::HOST_IDTR_BASE, host.idtr_base),
        (enc::HOST_SYSENTER_CS, host.sysenter_cs),
        (enc::HOST_SYSENTER_ESP, host.sysenter_esp),
        (enc::HOST_SYSENTER_EIP, host.sysenter_eip),
        (enc::HOST_RSP, exit_stack),
        (enc::HOST_RIP, exit_entry),
        // Guest state: the same CPU state, entering at the guest code with its own stack.
        (enc::GUEST_CR0, host.cr0),
        (enc::GUEST_CR3, host.cr3),
        (enc::GUEST_CR4, host.cr4),
        (enc::GUEST_DR7, 0x400),
        (enc::GUEST_RSP, guest_stack),
        (enc::GUEST_RIP, guest_entry),
        (enc::GUEST_RFLAGS, 0x2),
        (enc::GUEST_CS_SELECTOR, u64::from(selectors::CODE)),
        (enc::GUEST_CS_BASE, 0),
        (enc::GUEST_CS_LIMIT, 0xFFFF_FFFF),
        (
            enc::GUEST_CS_ACCESS_RIGHTS,
            u64::from(access_rights::CODE64),
        ),
        (enc::GUEST_TR_SELECTOR, u64::from(selectors::TSS)),
        (enc::GUEST_TR_BASE, tss),
        (enc::GUEST_TR_LIMIT, u64::from(boot::TSS_LIMIT)),
        (enc::GUEST_TR_ACCESS_RIGHTS, u64::from(access_rights::TSS)),
        (enc::GUEST_LDTR_SELECTOR, 0),
        (enc::GUEST_LDTR_BASE, 0),
        (enc::GUEST_LDTR_LIMIT, 0),
        (
            enc::GUEST_LDTR_ACCESS_RIGHTS,
            u64::from(access_rights::UNUSABLE_SEGMENT),
        ),
        (enc::GUEST_GDTR_BASE, host.gdtr_base),
        (enc::GUEST_GDTR_LIMIT, u64::from(host.gdtr_limit)),
        (enc::GUEST_IDTR_BASE, host.idtr_base),
        (enc::GUEST_IDTR_LIMIT, u64::from(host.idtr_limit)),
        (enc::GUEST_IA32_DEBUGCTL, 0),
        (enc::GUEST_SYSENTER_CS, host.sysenter_cs),
        (enc::GUEST_SYSENTER_ESP, host.sysenter_esp),
        (enc::GUEST_SYSENTER_EIP, host.sysenter_eip),
        (enc::VMCS_LINK_POINTER, u64::MAX),
        (enc::GUEST_INTERRUPTIBILITY, 0),
        (enc::GUEST_ACTIVITY_STATE, 0),
        (enc::GUEST_PENDING_DEBUG_EXCEPTIONS, 0),
    ];
    for &(encoding, value) in fields {
        // SAFETY: forwarded from this function's contract; every value describes this CPU.
        unsafe { vmwrite(encoding, value) };
    }
    let data_segments = [
        (
            enc::GUEST_ES_SELECTOR,
            enc::GUEST_ES_BASE,
            enc::GUEST_ES_LIMIT,
            enc::GUEST_ES_ACCESS_RIGHTS,
        ),
        (
            enc::GUEST_SS_SELECTOR,
            enc::GUEST_SS_BASE,
            enc::GUEST_SS_LIMIT,
            enc::GUEST_SS_ACCESS_RIGHTS,
        ),
        (
            enc::GUEST_DS_SELECTOR,
            enc::GUEST_DS_BASE,
            enc::GUEST_DS_LIMIT,
            enc::GUEST_DS_ACCESS_RIGHTS,
        ),
        (
            enc::GUEST_FS_SELECTOR,
            enc::GUEST_FS_BASE,
            enc::GUEST_FS_LIMIT,
            enc::GUEST_FS_ACCESS_RIGHTS,
        ),
        (
            enc::GUEST_GS_SELECTOR,
            enc::GUEST_GS_BASE,
            enc::GUEST_GS_LIMIT,
            enc::GUEST_GS_ACCESS_RIGHTS,
        ),
    ];
    for (selector, base, limit, rights) in data_segments {
        let base_value = match base {
            enc::GUEST_FS_BASE => host.fs_base,
            enc::GUEST_GS_BASE => host.gs_base,
            _ => 0,
        };
        // SAFETY: as above.
        unsafe {
            vmwrite(selector, u64::from(selectors::DATA));
            vmwrite(base, base_value);
            vmwrite(limit, 0xFFFF_FFFF);
            vmwrite(rights, u64::from(access_rights::DATA));
        }
    }
    if controls.secondary != 0 {
        // SAFETY: as above.
        unsafe { vmwrite(enc::SECONDARY_CONTROLS, u64::from(controls.secondary)) };
    }
    if eptp != 0 {
        // SAFETY: the caller guarantees the EPT.
        unsafe { vmwrite(enc::EPT_POINTER, eptp) };
    }
    if vpid {
        // SAFETY: VPID 1 tags this guest's translations.
        unsafe { vmwrite(enc::VPID, 1) };
    }
    if controls.entry & EntryControls::LOAD_IA32_EFER.bits() != 0 {
        // SAFETY: the guest runs with the host's EFER (LME, LMA as the IA-32e guest needs).
        unsafe {
            vmwrite(enc::GUEST_IA32_EFER, host.efer);
            vmwrite(enc::HOST_IA32_EFER, host.efer);
        }
    }
}

/// Handles one VM exit; returning resumes the guest.
#[unsafe(no_mangle)]
extern "C" fn vmx_exit_handler(regs: &mut GuestRegisters) {
    let exits = STATE.with(|s| {
        s.exits += 1;
        s.exits
    });
    let reason = vmread(enc::EXIT_REASON);
    let rip = vmread(enc::GUEST_RIP);
    let length = vmread(enc::EXIT_INSTRUCTION_LENGTH);
    println!("exit {exits}: reason {reason:#x} at rip {rip:#x}, instruction length {length}");
    if reason & EXIT_REASON_ENTRY_FAILURE != 0 {
        let qualification = vmread(enc::EXIT_QUALIFICATION);
        fail(
            "vm entry",
            format_args!(
                "failed with reason {reason:#x}, qualification {qualification:#x} (see bochs.log)"
            ),
        );
    }
    match reason & 0xFFFF {
        EXIT_REASON_CPUID => {
            check("cpuid exit length", length == 2, format_args!("{length}"));
            let (leaf, subleaf) = (regs.rax as u32, regs.rcx as u32);
            if leaf == HV_LEAF {
                let word = |i: usize| {
                    let mut b = [0u8; 4];
                    b.copy_from_slice(&HV_SIGNATURE[i * 4..i * 4 + 4]);
                    u64::from(u32::from_le_bytes(b))
                };
                regs.rax = u64::from(HV_LEAF);
                regs.rbx = word(0);
                regs.rcx = word(1);
                regs.rdx = word(2);
            } else {
                let r = __cpuid_count(leaf, subleaf);
                regs.rax = u64::from(r.eax);
                regs.rbx = u64::from(r.ebx);
                regs.rcx = u64::from(r.ecx);
                regs.rdx = u64::from(r.edx);
            }
            STATE.with(|s| s.cpuid_exits += 1);
            // SAFETY: advancing the guest RIP past the CPUID instruction.
            unsafe { vmwrite(enc::GUEST_RIP, rip + length) };
        }
        EXIT_REASON_VMCALL => {
            check("vmcall exit length", length == 3, format_args!("{length}"));
            // SAFETY: only the symbol's address is taken.
            let expected_rip = sym(unsafe { &vmx_guest_vmcall });
            check(
                "vmcall guest rip",
                rip == expected_rip,
                format_args!("{rip:#x}, expected {expected_rip:#x}"),
            );
            let mut signature = [0u8; 12];
            signature[..4].copy_from_slice(&(regs.rbx as u32).to_le_bytes());
            signature[4..8].copy_from_slice(&(regs.rcx as u32).to_le_bytes());
            signature[8..].copy_from_slice(&(regs.rdx as u32).to_le_bytes());
            check(
                "guest saw the host's CPUID answer",
                &signature == HV_SIGNATURE && regs.rax == u64::from(HV_LEAF),
                format_args!(
                    "eax {:#x}, signature {:?}",
                    regs.rax,
                    core::str::from_utf8(&signature)
                ),
            );
            let marker = vmx_guest_marker.load(Ordering::SeqCst);
            check(
                "guest memory write seen by the host",
                marker == GUEST_MARKER,
                format_args!("{marker:#x}"),
            );
            let cpuid_exits = STATE.with(|s| s.cpuid_exits);
            check(
                "exit sequence",
                exits == 2 && cpuid_exits == 1,
                format_args!("{exits} exits, {cpuid_exits} CPUID"),
            );
            finish_vmx(exits);
        }
        other => fail(
            "unexpected exit",
            format_args!(
                "reason {other}, qualification {:#x}",
                vmread(enc::EXIT_QUALIFICATION)
            ),
        ),
    }
}

/// Leaves VMX operation and reports the result.
fn finish_vmx(exits: u64) -> ! {
    let Some(on) = STATE.with(|s| s.on.take()) else {
        fail("disable", format_args!("no VMX token"))
    };
    // SAFETY: ring 0, 64-bit mode, on the CPU that enabled VMX.
    let mut cpu = unsafe { HardwareCpu::new() };
    // SAFETY: this CPU is in VMX root operation and the guest will not be resumed.
    let off = unsafe { enable::disable(&mut cpu, on) };
    let cr4 = cpu.cr4();
    check(
        "disable",
        off.is_ok() && cr4 & enable::CR4_VMXE == 0,
        format_args!("{off:?}, CR4 {cr4:#x}"),
    );
    println!("PASS vmx smoke");
    serial::finish(true, exits)
}

/// Reports a failed VMRESUME (called by the exit stub with the RFLAGS after the instruction).
#[unsafe(no_mangle)]
extern "C" fn vmx_resume_failed(rflags: u64) -> ! {
    // SAFETY: still in VMX root operation with the current VMCS.
    let error = unsafe { vmx::vmread(enc::VM_INSTRUCTION_ERROR) };
    fail(
        "vmresume",
        format_args!("RFLAGS {rflags:#x}, VM-instruction error {error:?}"),
    )
}
