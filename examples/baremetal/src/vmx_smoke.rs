//! The VMX smoke case: capability snapshot, enabling VMX, VMCS instructions and their failure
//! modes, a sweep of hvkit-vmx's field table against the processor, then a tiny 64-bit guest
//! (CPUID, VMCALL) under a 1:1 EPT when the CPU offers one, with the VMCS filled and read through
//! hvkit-vmx's typed fields (`fields`, `vmcs::CurrentVmcs`) and exits decoded by `exit`.
//!
//! Reference: Intel SDM (325462-086US, December 2024) Vol. 3C: 25 "Virtual Machine Control
//! Structures" (25.4 guest-state area, 25.5 host-state area, 25.6–25.8 controls), 27 "VM Entries"
//! (27.2 checks of controls and host state), 28 "VM Exits", 29.3 "The EPT Translation
//! Mechanism", 31 "VMX Instruction Reference" and Appendix B "Field Encoding in VMCS".
// UNSAFETY: this case executes VMX instructions, reads and writes MSRs and control registers,
// and hands the CPU a host and a guest context built from assembly symbols.
#![expect(unsafe_code, reason = "the case drives VMX directly")]

use core::arch::global_asm;
use core::arch::x86_64::{__cpuid, __cpuid_count};
use core::sync::atomic::{AtomicU64, Ordering};

use hvkit_paging::{
    EptAttrs, EptCapabilities, EptTable, Flush, FlushKind, GuestPhysAddr, HostPhysAddr, MemoryType,
};
use hvkit_vmx::capabilities::{AdjustedControls, ControlsRequest, EptVpidCap, VmxCapabilities};
use hvkit_vmx::controls::{EntryControls, ExitControls, PrimaryControls, SecondaryControls};
use hvkit_vmx::enable::{self, EnableError, HardwareCpu, SmxMode, VmxCpu, VmxOn, VmxonRegion};
use hvkit_vmx::exit::{
    BasicExitReason, EptViolationQualification, ExitReason, IoAccessSize, IoDirection,
    IoInstructionQualification,
};
use hvkit_vmx::fields::{self, VmcsField, WritableField, control, exit_info, guest, host};
use hvkit_vmx::instructions::{self as vmx, InveptType, InvvpidType};
use hvkit_vmx::vmcs::{CurrentVmcs, Dump, VmcsRead, VmcsWrite};
use hvkit_vmx::{VmFail, VmInstructionError};
use x86_64::structures::paging::{PhysFrame, Size4KiB};
use x86_64::{PhysAddr, instructions::tables};

use crate::boot::{self, selectors};
use crate::frames::FramePool;
use crate::println;
use crate::serial;
use crate::sync::{Page, ProbePage, SpinLock, TakeOnce};

/// Raw encodings for the instruction-level checks (SDM Vol. 3C, Appendix B "Field Encoding in
/// VMCS"); everything else goes through the typed fields of `hvkit_vmx::fields`.
mod enc {
    /// The HIGH half of the VMCS link pointer (B.2.3, access type 1).
    pub const VMCS_LINK_POINTER_HIGH: u32 = 0x2801;
    /// Index 0x1FF of the 32-bit guest-state fields: beyond any processor's VMCS.
    pub const UNSUPPORTED: u32 = 0x4800 | (0x1FF << 1);
}

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
    // Port I/O, intercepted: OUT of 42h to port 80h, then IN from port 81h (the host answers 99h).
    mov dx, 0x80
    mov al, 0x42
    out dx, al
    mov dx, 0x81
    in al, dx
    movzx r11d, al
    mov eax, 0x40000000
    xor ecx, ecx
    cpuid
    mov r8, 0x600DF00D00000001
    mov qword ptr [rip + vmx_guest_marker], r8
    // Read the probe page (unmapped in the EPT: the first try is an EPT violation), then write it.
    mov r9, qword ptr [rip + vmx_probe_page]
    mov r10, 0x57524954455F4F4B
    mov qword ptr [rip + vmx_probe_page + 8], r10
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

/// The page the host removes from the EPT before the launch: the guest's read of word 0 is an EPT
/// violation that the host serves by mapping the page again; then the guest writes word 1.
#[unsafe(no_mangle)]
static vmx_probe_page: ProbePage = ProbePage::new();
/// What the host puts in word 0 of the probe page, and what the guest writes to word 1.
const PROBE_PATTERN: u64 = 0x5052_4F42_455F_5244;
const GUEST_PROBE_WRITE: u64 = 0x5752_4954_455F_4F4B;

/// The ports the guest uses, what it writes, and what the host answers to its IN.
const OUT_PORT: u16 = 0x80;
const OUT_VALUE: u8 = 0x42;
const IN_PORT: u16 = 0x81;
const IN_VALUE: u8 = 0x99;

/// The EPT while the guest runs: the exit handler maps the probe page back into it.
struct EptState {
    table: EptTable<FramePool>,
    eptp: u64,
    caps: EptVpidCap,
}

static EPT: SpinLock<Option<EptState>> = SpinLock::new(None);

static VMXON_REGION: TakeOnce<VmxonRegion> = TakeOnce::new(VmxonRegion::new());
static SECOND_VMXON_REGION: TakeOnce<VmxonRegion> = TakeOnce::new(VmxonRegion::new());
static VMCS_REGION: TakeOnce<Page> = TakeOnce::new(Page::zeroed());
static WRONG_REVISION_VMCS: TakeOnce<Page> = TakeOnce::new(Page::zeroed());

/// What the exit handler needs from the launch code.
struct State {
    on: Option<VmxOn>,
    /// VM exits from the running guest (entry failures not counted).
    exits: u64,
    cpuid_exits: u64,
    ept_violations: u64,
    io_exits: u64,
    /// The next VM entry is meant to fail on invalid guest state (RFLAGS bit 1 clear).
    expect_entry_failure: bool,
}

static STATE: SpinLock<State> = SpinLock::new(State {
    on: None,
    exits: 0,
    cpuid_exits: 0,
    ept_violations: 0,
    io_exits: 0,
    expect_entry_failure: false,
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

/// The current VMCS, for typed access.
///
/// # Safety
/// - VMX root operation with a current VMCS that nothing clears or replaces while the value
///   lives (the obligations of [`CurrentVmcs::new`]).
unsafe fn current_vmcs() -> CurrentVmcs {
    // SAFETY: forwarded to the caller.
    unsafe { CurrentVmcs::new() }
}

/// A typed VMREAD that must succeed.
fn read<F: VmcsField>(vmcs: &CurrentVmcs, field: F) -> F::Value {
    match vmcs.read(field) {
        Ok(value) => value,
        Err(e) => fail("vmread", format_args!("{field:?}: {e}")),
    }
}

/// A typed VMWRITE that must succeed.
fn write<F: WritableField>(vmcs: &mut CurrentVmcs, field: F, value: F::Value) {
    if let Err(e) = vmcs.write(field, value) {
        fail("vmwrite", format_args!("{field:?} = {value:#x?}: {e}"));
    }
}

/// A raw VMREAD that must succeed.
fn raw_read(encoding: u32) -> u64 {
    // SAFETY: only called in VMX root operation with a current VMCS.
    match unsafe { vmx::vmread(encoding) } {
        Ok(value) => value,
        Err(e) => fail("vmread", format_args!("field {encoding:#06x}: {e}")),
    }
}

fn is_error(result: Result<impl Sized, VmFail>, expected: VmInstructionError) -> bool {
    matches!(result, Err(VmFail::Valid(e)) if e == expected)
}

fn sym(s: &u8) -> u64 {
    core::ptr::from_ref(s) as u64
}

/// Reads the capability MSRs through `VmxCapabilities::read`, printing each MSR it reads.
fn capabilities(cpu: &HardwareCpu) -> VmxCapabilities {
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
    caps
}

/// The VMX smoke case.
pub fn run() -> ! {
    // SAFETY: ring 0, 64-bit mode; only architectural and VMX MSRs that exist are read.
    let mut cpu = unsafe { HardwareCpu::new() };
    let caps = capabilities(&cpu);

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

    let Some(vmcs_page) = VMCS_REGION.take() else {
        fail("vmcs region", format_args!("taken twice"))
    };
    vmcs_page.0[0] = u64::from(revision);
    let vmcs_phys = vmcs_page.phys();
    let vmcs_frame = frame(vmcs_phys);
    instruction_checks(vmcs_frame, region_phys, revision, caps);
    enable_twice(&mut cpu);

    // From here on the VMCS stays current until VMXOFF: typed access through `CurrentVmcs`.
    // SAFETY: VMX root operation; `instruction_checks` left this VMCS current.
    let mut vmcs = unsafe { current_vmcs() };
    typed_checks(&mut vmcs);
    field_sweep(&vmcs, &caps);

    // Controls from the capabilities: EPT and VPID when offered, EFER loading both ways.
    let ept_caps = caps.ept_vpid.unwrap_or_default();
    let secondary_ok =
        |bits: SecondaryControls| caps.secondary.is_some_and(|s| s.allows(bits.bits()));
    let use_ept = secondary_ok(SecondaryControls::ENABLE_EPT)
        && ept_caps.contains(EptVpidCap::PAGE_WALK_4 | EptVpidCap::MEMORY_TYPE_WB);
    let use_vpid = secondary_ok(SecondaryControls::ENABLE_VPID);
    let load_efer = caps.exit.allows(ExitControls::LOAD_IA32_EFER.bits())
        && caps.entry.allows(EntryControls::LOAD_IA32_EFER.bits());
    let mut request = ControlsRequest {
        primary: PrimaryControls::UNCONDITIONAL_IO_EXITING,
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

    let eptp = if use_ept {
        let (mut table, eptp) = build_ept(ept_caps);
        // Take the probe page out of the EPT: the guest's first access to it must exit.
        let probe = vmx_probe_page.phys();
        vmx_probe_page.0[0].store(PROBE_PATTERN, Ordering::SeqCst);
        match table.unmap(GuestPhysAddr::new_truncate(probe), 4096) {
            Ok(flush) => invalidate(flush, eptp, ept_caps),
            Err(e) => fail("ept unmap", format_args!("{e}")),
        }
        let gone = table.translate_addr(GuestPhysAddr::new_truncate(probe));
        check(
            "ept unmap of the probe page",
            gone.is_none(),
            format_args!(
                "{probe:#x} -> {gone:?}, {} table frames",
                table.table_frames()
            ),
        );
        EPT.with(|e| {
            *e = Some(EptState {
                table,
                eptp,
                caps: ept_caps,
            });
        });
        eptp
    } else {
        vmx_probe_page.0[0].store(PROBE_PATTERN, Ordering::SeqCst);
        0
    };
    let host = HostState::current(&cpu);
    fill_vmcs(&mut vmcs, &controls, &host, eptp, use_vpid);

    if let Some(fake) = invalid_pin_based(&caps) {
        write(&mut vmcs, control::PIN_BASED_VM_EXEC_CONTROL, fake);
        // SAFETY: the VMCS is complete; the broken control makes the launch fail with error 7
        // before anything is entered.
        let failed = unsafe { vmx::vmlaunch() };
        check(
            "vmlaunch with an unsupported pin-based control",
            failed == VmFail::Valid(VmInstructionError::ENTRY_INVALID_CONTROL_FIELD),
            format_args!("pin-based {fake:#x}: {failed:?}"),
        );
        write(
            &mut vmcs,
            control::PIN_BASED_VM_EXEC_CONTROL,
            controls.pin_based,
        );
    }
    // SAFETY: VMRESUME of a VMCS that was never launched fails with error 5 before any entry.
    let failed = unsafe { vmx::vmresume() };
    check(
        "vmresume of a clear VMCS",
        failed == VmFail::Valid(VmInstructionError::VMRESUME_NON_LAUNCHED_VMCS),
        format_args!("{failed:?}"),
    );
    // A host TR selector of 0 is invalid host state (SDM 27.2.3): error 8.
    write(&mut vmcs, host::TR_SELECTOR, 0);
    // SAFETY: the host-state check fails before anything is entered.
    let failed = unsafe { vmx::vmlaunch() };
    check(
        "vmlaunch with host TR selector 0",
        failed == VmFail::Valid(VmInstructionError::ENTRY_INVALID_HOST_STATE_FIELD),
        format_args!("{failed:?}"),
    );
    write(&mut vmcs, host::TR_SELECTOR, selectors::TSS);
    invalidation_checks(ept_caps, use_ept.then_some(eptp), use_vpid);

    // Guest RFLAGS bit 1 clear is invalid guest state (SDM 27.3.1.4): the entry fails as a VM
    // exit with reason 33 | 1 << 31 at host RIP, whose handler repairs RFLAGS and launches again.
    write(&mut vmcs, guest::RFLAGS, 0);
    STATE.with(|s| s.expect_entry_failure = true);
    launch(vmcs)
}

/// VMLAUNCH of the current VMCS; never returns (the guest's exits arrive at `vmx_exit_entry`).
/// Takes the `CurrentVmcs` so that no caller keeps using it across the launch.
fn launch(vmcs: CurrentVmcs) -> ! {
    println!(
        "launching the guest at {:#x}",
        // SAFETY: only the symbol's address is taken.
        sym(unsafe { &vmx_guest_entry })
    );
    // SAFETY: the VMCS is complete (see `fill_vmcs`); a launch continues at `vmx_exit_entry`
    // (also when it fails on guest state), which never returns here. Everything it references
    // is static.
    let failed = unsafe { vmx::vmlaunch() };
    let error = vmcs.read(exit_info::VM_INSTRUCTION_ERROR);
    fail(
        "vmlaunch",
        format_args!("{failed:?} (VM-instruction error {error:?})"),
    )
}

/// `enable` on a processor already in VMX root operation: VMXON fails with error 15 and CR4.VMXE
/// (which `enable` did not set this time) stays set.
fn enable_twice(cpu: &mut HardwareCpu) {
    let Some(second) = SECOND_VMXON_REGION.take() else {
        fail("second vmxon region", format_args!("taken twice"))
    };
    let second_phys = frame(core::ptr::from_ref(second) as u64);
    let (cr0, cr4) = (cpu.cr0(), cpu.cr4());
    // SAFETY: ring 0 on the only CPU; the region is a static page never used otherwise. VMX is
    // already on, so VMXON fails without changing state (SDM 31.3 "VMXON"), and `enable` then
    // restores CR0/CR4 only if it changed them.
    let again = unsafe { enable::enable(cpu, second, second_phys, SmxMode::Outside) };
    check(
        "enable while in VMX root operation",
        matches!(
            again,
            Err(EnableError::Vmxon(VmFail::Valid(
                VmInstructionError::VMXON_IN_VMX_ROOT
            )))
        ) && cpu.cr0() == cr0
            && cpu.cr4() == cr4,
        format_args!("{again:?}, CR0 {:#x}, CR4 {:#x}", cpu.cr0(), cpu.cr4()),
    );
}

/// VMCLEAR, VMPTRLD, VMPTRST, raw VMREAD/VMWRITE and their failure modes. Leaves the VMCS at
/// `vmcs` current.
fn instruction_checks(
    vmcs: PhysFrame<Size4KiB>,
    vmxon: PhysFrame<Size4KiB>,
    revision: u32,
    caps: VmxCapabilities,
) {
    let vmcs_phys = vmcs.start_address();
    // SAFETY: VMX root operation; the VMCS region is a static page with the revision id.
    let cleared = unsafe { vmx::vmclear(vmcs) };
    check("vmclear", cleared.is_ok(), format_args!("{cleared:?}"));
    // SAFETY: as above; the region was just cleared.
    let loaded = unsafe { vmx::vmptrld(vmcs) };
    check("vmptrld", loaded.is_ok(), format_args!("{loaded:?}"));
    // SAFETY: VMX root operation.
    let current = unsafe { vmx::vmptrst() };
    check(
        "vmptrst",
        current == Some(vmcs_phys),
        format_args!("{current:?}, loaded {vmcs_phys:?}"),
    );

    // The VMXON region is not a VMCS; a VMCS needs this processor's revision identifier.
    // SAFETY: VMX root operation; VMPTRLD and VMCLEAR refuse the VMXON pointer.
    let (ptrld, clear) = unsafe { (vmx::vmptrld(vmxon), vmx::vmclear(vmxon)) };
    check(
        "vmptrld/vmclear of the VMXON region",
        is_error(ptrld, VmInstructionError::VMPTRLD_VMXON_POINTER)
            && is_error(clear, VmInstructionError::VMCLEAR_VMXON_POINTER),
        format_args!("{ptrld:?}, {clear:?}"),
    );
    let Some(wrong) = WRONG_REVISION_VMCS.take() else {
        fail("wrong-revision page", format_args!("taken twice"))
    };
    wrong.0[0] = u64::from(revision ^ 1);
    // SAFETY: VMX root operation; VMPTRLD refuses a region with another revision identifier.
    let ptrld = unsafe { vmx::vmptrld(frame(wrong.phys())) };
    // SAFETY: VMX root operation.
    let current = unsafe { vmx::vmptrst() };
    check(
        "vmptrld with a wrong revision identifier",
        is_error(ptrld, VmInstructionError::VMPTRLD_INCORRECT_REVISION)
            && current == Some(vmcs_phys),
        format_args!("{ptrld:?}, current VMCS still {current:?}"),
    );

    // Raw round trips of one field of each width (guest-state fields, rewritten before entry).
    let trips: [(&str, u32, u64); 4] = [
        ("16-bit guest ES selector", 0x0800, 0x0010),
        ("32-bit guest ES limit", 0x4800, 0x000F_FFFF),
        ("64-bit VMCS link pointer", 0x2800, 0x1234_5678_9ABC_D000),
        ("natural-width guest ES base", 0x6806, 0xFFFF_8000_1234_5000),
    ];
    for (what, encoding, value) in trips {
        // SAFETY: VMX root operation with a current VMCS; guest-state fields only, and the VMCS
        // is not entered before they are rewritten.
        let wrote = unsafe { vmx::vmwrite(encoding, value) };
        let back = raw_read(encoding);
        check(
            "vmwrite/vmread",
            wrote.is_ok() && back == value,
            format_args!("{what} ({encoding:#06x}) wrote {value:#x} read {back:#x}"),
        );
    }
    let high = raw_read(enc::VMCS_LINK_POINTER_HIGH);
    check(
        "vmread high half",
        high == 0x1234_5678,
        format_args!("{:#06x} read {high:#x}", enc::VMCS_LINK_POINTER_HIGH),
    );

    // An encoding beyond IA32_VMX_VMCS_ENUM's highest index: error 12.
    // SAFETY: VMX root operation with a current VMCS.
    let read = unsafe { vmx::vmread(enc::UNSUPPORTED) };
    check(
        "vmread unsupported field",
        is_error(read, VmInstructionError::UNSUPPORTED_VMCS_COMPONENT),
        format_args!("{:#06x}: {read:x?}", enc::UNSUPPORTED),
    );
    // SAFETY: VMX root operation with a current VMCS; the field does not exist.
    let wrote = unsafe { vmx::vmwrite(enc::UNSUPPORTED, 1) };
    check(
        "vmwrite unsupported field",
        is_error(wrote, VmInstructionError::UNSUPPORTED_VMCS_COMPONENT),
        format_args!("{:#06x}: {wrote:?}", enc::UNSUPPORTED),
    );
    // The exit reason is read-only unless IA32_VMX_MISC[29] allows VMWRITE to any field.
    let exit_reason = exit_info::EXIT_REASON.encoding().0;
    // SAFETY: the exit-reason field does not affect VM entry.
    let wrote = unsafe { vmx::vmwrite(exit_reason, 0x1234) };
    if caps.misc.vmwrite_any_field() {
        let back = raw_read(exit_reason);
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
    let cleared = unsafe { vmx::vmclear(vmcs) };
    // SAFETY: VMX root operation.
    let current = unsafe { vmx::vmptrst() };
    check(
        "vmclear then vmptrst",
        cleared.is_ok() && current.is_none(),
        format_args!("{cleared:?}, current {current:?}"),
    );
    // SAFETY: there is no current VMCS now, so VMREAD must fail with VMfailInvalid.
    let read = unsafe { vmx::vmread(0x6806) };
    check(
        "vmread without current VMCS",
        read == Err(VmFail::Invalid),
        format_args!("{read:x?}"),
    );
    // SAFETY: the region was just cleared.
    let loaded = unsafe { vmx::vmptrld(vmcs) };
    let kept = raw_read(0x6806);
    check(
        "vmptrld keeps data",
        loaded.is_ok() && kept == 0xFFFF_8000_1234_5000,
        format_args!("{loaded:?}, guest ES base {kept:#x}"),
    );
}

/// Typed access through `CurrentVmcs`: the typed encodings must reach the same fields as the raw
/// ones, and values wider than a field are cut to its width.
fn typed_checks(vmcs: &mut CurrentVmcs) {
    write(vmcs, guest::ES_SELECTOR, 0x0018);
    write(vmcs, guest::ES_LIMIT, 0x0000_FFFF);
    write(vmcs, guest::VMCS_LINK_POINTER, 0x0FED_CBA9_8765_4000);
    write(vmcs, guest::ES_BASE, 0xFFFF_8000_0000_1000);
    let raw = [
        raw_read(0x0800),
        raw_read(0x4800),
        raw_read(0x2800),
        raw_read(0x6806),
    ];
    check(
        "typed vmwrite, raw vmread",
        raw == [0x18, 0xFFFF, 0x0FED_CBA9_8765_4000, 0xFFFF_8000_0000_1000],
        format_args!("{raw:#x?}"),
    );
    let typed = (
        read(vmcs, guest::ES_SELECTOR),
        read(vmcs, guest::ES_LIMIT),
        read(vmcs, guest::VMCS_LINK_POINTER),
        read(vmcs, guest::ES_BASE),
    );
    check(
        "typed vmread",
        typed == (0x18, 0xFFFF, 0x0FED_CBA9_8765_4000, 0xFFFF_8000_0000_1000),
        format_args!("{typed:#x?}"),
    );
    // A 16-bit field keeps only its low 16 bits of a raw 32-bit write (SDM 31.3 "VMWRITE").
    // SAFETY: VMX root operation with a current VMCS; a guest-state field.
    let wrote = unsafe { vmx::vmwrite(0x0800, 0xABCD_0010) };
    let selector = read(vmcs, guest::ES_SELECTOR);
    check(
        "vmwrite truncation",
        wrote.is_ok() && selector == 0x10,
        format_args!("16-bit field reads {selector:#x} after writing 0xabcd0010"),
    );
}

/// Reads every field of hvkit-vmx's table on this processor: each must read or fail with error
/// 12 (unsupported component), and no supported field may have an index above
/// IA32_VMX_VMCS_ENUM's.
fn field_sweep(vmcs: &CurrentVmcs, caps: &VmxCapabilities) {
    let mut supported = 0usize;
    let mut unsupported = 0usize;
    let mut above_enum = 0usize;
    for info in fields::ALL {
        match vmcs.read_raw(info.encoding) {
            Ok(_) => {
                supported += 1;
                let index = (info.encoding.0 >> 1) & 0x1FF;
                if index > u32::from(caps.vmcs_max_index) {
                    above_enum += 1;
                    println!("  index above VMCS_ENUM: {}", info.ident);
                }
            }
            Err(e) if e.is_unsupported_component() => {
                unsupported += 1;
                println!("vmcs-unsupported {:#06x} {}", info.encoding.0, info.ident);
            }
            Err(e) => fail("field sweep", format_args!("{}: {e}", info.ident)),
        }
    }
    check(
        "field sweep",
        supported > 0 && above_enum == 0,
        format_args!(
            "{} fields in hvkit-vmx: {supported} supported, {unsupported} unsupported, {above_enum} above VMCS_ENUM",
            fields::ALL.len()
        ),
    );
}

/// INVEPT and INVVPID of every type the capabilities report, and one refused INVVPID.
fn invalidation_checks(caps: EptVpidCap, eptp: Option<u64>, vpid: bool) {
    if let Some(eptp) = eptp.filter(|_| caps.contains(EptVpidCap::INVEPT)) {
        if caps.contains(EptVpidCap::INVEPT_SINGLE_CONTEXT) {
            // SAFETY: VMX root operation, INVEPT supported; `eptp` is the EPT just built.
            let r = unsafe { vmx::invept(InveptType::SingleContext { eptp }) };
            check("invept single-context", r.is_ok(), format_args!("{r:?}"));
        }
        if caps.contains(EptVpidCap::INVEPT_ALL_CONTEXT) {
            // SAFETY: VMX root operation, all-context INVEPT supported.
            let r = unsafe { vmx::invept(InveptType::AllContexts) };
            check("invept all-context", r.is_ok(), format_args!("{r:?}"));
        }
    }
    if !(vpid && caps.contains(EptVpidCap::INVVPID)) {
        return;
    }
    let kinds = [
        (
            EptVpidCap::INVVPID_INDIVIDUAL_ADDRESS,
            InvvpidType::IndividualAddress {
                vpid: 1,
                address: 0x20_0000,
            },
        ),
        (
            EptVpidCap::INVVPID_SINGLE_CONTEXT,
            InvvpidType::SingleContext { vpid: 1 },
        ),
        (EptVpidCap::INVVPID_ALL_CONTEXT, InvvpidType::AllContexts),
        (
            EptVpidCap::INVVPID_SINGLE_CONTEXT_RETAINING_GLOBALS,
            InvvpidType::SingleContextRetainingGlobals { vpid: 1 },
        ),
    ];
    for (cap, kind) in kinds {
        if caps.contains(cap) {
            // SAFETY: VMX root operation, INVVPID and this type supported.
            let r = unsafe { vmx::invvpid(kind) };
            check("invvpid", r.is_ok(), format_args!("{kind:?}: {r:?}"));
        }
    }
    if caps.contains(EptVpidCap::INVVPID_SINGLE_CONTEXT) {
        // SAFETY: as above; VPID 0 is invalid for single-context INVVPID (error 28).
        let r = unsafe { vmx::invvpid(InvvpidType::SingleContext { vpid: 0 }) };
        check(
            "invvpid of VPID 0",
            is_error(r, VmInstructionError::INVALID_INVEPT_INVVPID_OPERAND),
            format_args!("{r:?}"),
        );
    }
}

/// A pin-based control value with a bit the CPU does not allow, if there is one.
fn invalid_pin_based(caps: &VmxCapabilities) -> Option<u32> {
    let forbidden = !caps.pin_based.may_be_one;
    (forbidden != 0).then(|| caps.pin_based.must_be_one | (1 << forbidden.trailing_zeros()))
}

/// Performs the invalidation hvkit-paging asks for after changing a live EPT.
fn invalidate(flush: Flush, eptp: u64, caps: EptVpidCap) {
    let kind = match flush.kind() {
        FlushKind::InveptSingleContext if caps.contains(EptVpidCap::INVEPT_SINGLE_CONTEXT) => {
            InveptType::SingleContext { eptp }
        }
        FlushKind::InveptSingleContext if caps.contains(EptVpidCap::INVEPT_ALL_CONTEXT) => {
            InveptType::AllContexts
        }
        other => fail(
            "ept flush",
            format_args!("cannot perform {other:?} with {caps:?}"),
        ),
    };
    // SAFETY: VMX root operation and INVEPT of this type is supported.
    if let Err(e) = unsafe { vmx::invept(kind) } {
        fail("invept", format_args!("{kind:?}: {e}"));
    }
}

/// Builds an identity EPT of the low 4 GiB with hvkit-paging (the largest pages the
/// capabilities allow, write-back, accessed/dirty flags when offered) and returns it with its
/// EPTP.
fn build_ept(caps: EptVpidCap) -> (EptTable<FramePool>, u64) {
    let phys_bits = (__cpuid(0x8000_0008).eax & 0xFF) as u8;
    let ept_caps = EptCapabilities::from_msr(caps.bits());
    let config = match ept_caps.table_config(4, phys_bits) {
        Ok(config) => config,
        Err(e) => fail("ept config", format_args!("{e}")),
    };
    let mut ept = match EptTable::new(FramePool, config) {
        Ok(table) => table,
        Err(e) => fail("ept root", format_args!("{e}")),
    };
    match ept.map(
        GuestPhysAddr::ZERO,
        HostPhysAddr::ZERO,
        4 << 30,
        EptAttrs::RWX_WB,
    ) {
        // No EPTP refers to the table yet, so there is nothing stale to invalidate.
        Ok(flush) => flush.ignore(),
        Err(e) => fail("ept map", format_args!("{e}")),
    }
    let probe = 0x0012_3456;
    let translated = ept.translate_addr(GuestPhysAddr::new_truncate(probe));
    check(
        "ept translate",
        translated == Some(HostPhysAddr::new_truncate(probe)),
        format_args!("{probe:#x} -> {translated:?}"),
    );
    let eptp = match ept_caps.eptp(
        ept.root(),
        4,
        MemoryType::WRITE_BACK,
        ept_caps.accessed_dirty,
    ) {
        Ok(eptp) => eptp,
        Err(e) => fail("eptp", format_args!("{e}")),
    };
    println!(
        "ok ept (hvkit-paging): 1:1 map of 0..4 GiB in {} table frames, EPTP {:#x}, A/D {}",
        ept.table_frames(),
        eptp.0,
        eptp.accessed_dirty()
    );
    (ept, eptp.0)
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

/// Fills the whole VMCS through typed fields: controls, host state (this CPU, the exit stub and
/// its stack), guest state (a 64-bit guest sharing the host's page tables and descriptor tables,
/// entering at the guest code with its own stack).
fn fill_vmcs(
    vmcs: &mut CurrentVmcs,
    controls: &AdjustedControls,
    host_state: &HostState,
    eptp: u64,
    vpid: bool,
) {
    let h = host_state;
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
    let (code, data, tss_selector) = (selectors::CODE, selectors::DATA, selectors::TSS);

    write(vmcs, control::PIN_BASED_VM_EXEC_CONTROL, controls.pin_based);
    write(
        vmcs,
        control::PRIMARY_PROC_BASED_VM_EXEC_CONTROL,
        controls.primary,
    );
    if controls.secondary != 0 {
        write(
            vmcs,
            control::SECONDARY_PROC_BASED_VM_EXEC_CONTROL,
            controls.secondary,
        );
    }
    write(vmcs, control::PRIMARY_VM_EXIT_CONTROLS, controls.exit);
    write(vmcs, control::VM_ENTRY_CONTROLS, controls.entry);
    for field in [
        control::EXCEPTION_BITMAP,
        control::PAGE_FAULT_ERROR_CODE_MASK,
        control::PAGE_FAULT_ERROR_CODE_MATCH,
        control::CR3_TARGET_COUNT,
        control::VM_EXIT_MSR_STORE_COUNT,
        control::VM_EXIT_MSR_LOAD_COUNT,
        control::VM_ENTRY_MSR_LOAD_COUNT,
        control::VM_ENTRY_INTERRUPTION_INFO,
    ] {
        write(vmcs, field, 0);
    }
    write(vmcs, control::CR0_GUEST_HOST_MASK, 0);
    write(vmcs, control::CR4_GUEST_HOST_MASK, 0);
    write(vmcs, control::CR0_READ_SHADOW, h.cr0);
    write(vmcs, control::CR4_READ_SHADOW, h.cr4);
    if eptp != 0 {
        write(vmcs, control::EPT_POINTER, eptp);
    }
    if vpid {
        write(vmcs, control::VIRTUAL_PROCESSOR_ID, 1);
    }

    write(vmcs, host::CR0, h.cr0);
    write(vmcs, host::CR3, h.cr3);
    write(vmcs, host::CR4, h.cr4);
    for field in [
        host::ES_SELECTOR,
        host::SS_SELECTOR,
        host::DS_SELECTOR,
        host::FS_SELECTOR,
        host::GS_SELECTOR,
    ] {
        write(vmcs, field, data);
    }
    write(vmcs, host::CS_SELECTOR, code);
    write(vmcs, host::TR_SELECTOR, tss_selector);
    write(vmcs, host::FS_BASE, h.fs_base);
    write(vmcs, host::GS_BASE, h.gs_base);
    write(vmcs, host::TR_BASE, tss);
    write(vmcs, host::GDTR_BASE, h.gdtr_base);
    write(vmcs, host::IDTR_BASE, h.idtr_base);
    write(vmcs, host::IA32_SYSENTER_CS, h.sysenter_cs as u32);
    write(vmcs, host::IA32_SYSENTER_ESP, h.sysenter_esp);
    write(vmcs, host::IA32_SYSENTER_EIP, h.sysenter_eip);
    write(vmcs, host::RSP, exit_stack);
    write(vmcs, host::RIP, exit_entry);

    write(vmcs, guest::CR0, h.cr0);
    write(vmcs, guest::CR3, h.cr3);
    write(vmcs, guest::CR4, h.cr4);
    write(vmcs, guest::DR7, 0x400);
    write(vmcs, guest::RSP, guest_stack);
    write(vmcs, guest::RIP, guest_entry);
    write(vmcs, guest::RFLAGS, 0x2);
    write(vmcs, guest::CS_SELECTOR, code);
    write(vmcs, guest::CS_BASE, 0);
    write(vmcs, guest::CS_LIMIT, 0xFFFF_FFFF);
    write(vmcs, guest::CS_ACCESS_RIGHTS, access_rights::CODE64);
    let data_segments = [
        (
            guest::ES_SELECTOR,
            guest::ES_BASE,
            guest::ES_LIMIT,
            guest::ES_ACCESS_RIGHTS,
            0,
        ),
        (
            guest::SS_SELECTOR,
            guest::SS_BASE,
            guest::SS_LIMIT,
            guest::SS_ACCESS_RIGHTS,
            0,
        ),
        (
            guest::DS_SELECTOR,
            guest::DS_BASE,
            guest::DS_LIMIT,
            guest::DS_ACCESS_RIGHTS,
            0,
        ),
        (
            guest::FS_SELECTOR,
            guest::FS_BASE,
            guest::FS_LIMIT,
            guest::FS_ACCESS_RIGHTS,
            h.fs_base,
        ),
        (
            guest::GS_SELECTOR,
            guest::GS_BASE,
            guest::GS_LIMIT,
            guest::GS_ACCESS_RIGHTS,
            h.gs_base,
        ),
    ];
    for (selector, base, limit, rights, base_value) in data_segments {
        write(vmcs, selector, data);
        write(vmcs, base, base_value);
        write(vmcs, limit, 0xFFFF_FFFF);
        write(vmcs, rights, access_rights::DATA);
    }
    write(vmcs, guest::TR_SELECTOR, tss_selector);
    write(vmcs, guest::TR_BASE, tss);
    write(vmcs, guest::TR_LIMIT, boot::TSS_LIMIT);
    write(vmcs, guest::TR_ACCESS_RIGHTS, access_rights::TSS);
    write(vmcs, guest::LDTR_SELECTOR, 0);
    write(vmcs, guest::LDTR_BASE, 0);
    write(vmcs, guest::LDTR_LIMIT, 0);
    write(
        vmcs,
        guest::LDTR_ACCESS_RIGHTS,
        access_rights::UNUSABLE_SEGMENT,
    );
    write(vmcs, guest::GDTR_BASE, h.gdtr_base);
    write(vmcs, guest::GDTR_LIMIT, u32::from(h.gdtr_limit));
    write(vmcs, guest::IDTR_BASE, h.idtr_base);
    write(vmcs, guest::IDTR_LIMIT, u32::from(h.idtr_limit));
    write(vmcs, guest::IA32_DEBUGCTL, 0);
    write(vmcs, guest::IA32_SYSENTER_CS, h.sysenter_cs as u32);
    write(vmcs, guest::IA32_SYSENTER_ESP, h.sysenter_esp);
    write(vmcs, guest::IA32_SYSENTER_EIP, h.sysenter_eip);
    write(vmcs, guest::VMCS_LINK_POINTER, u64::MAX);
    write(vmcs, guest::INTERRUPTIBILITY_STATE, 0);
    write(vmcs, guest::ACTIVITY_STATE, 0);
    write(vmcs, guest::PENDING_DEBUG_EXCEPTIONS, 0);
    if controls.entry & EntryControls::LOAD_IA32_EFER.bits() != 0 {
        // The guest runs with the host's EFER (LME and LMA, as the IA-32e guest needs).
        write(vmcs, guest::IA32_EFER, h.efer);
        write(vmcs, host::IA32_EFER, h.efer);
    }
}

/// Handles one VM exit; returning resumes the guest.
#[unsafe(no_mangle)]
extern "C" fn vmx_exit_handler(regs: &mut GuestRegisters) {
    if let Some(exits) = handle_exit(regs) {
        finish_vmx(exits);
    }
}

/// Handles one VM exit; `Some(exits)` when the guest is done.
fn handle_exit(regs: &mut GuestRegisters) -> Option<u64> {
    // SAFETY: a VM exit leaves the processor in VMX root operation with the guest's VMCS current;
    // this value is gone before `finish_vmx` leaves VMX operation.
    let mut vmcs = unsafe { current_vmcs() };
    let reason = ExitReason(read(&vmcs, exit_info::EXIT_REASON));
    if reason.is_entry_failure() && STATE.with(|s| core::mem::take(&mut s.expect_entry_failure)) {
        let qualification = read(&vmcs, exit_info::EXIT_QUALIFICATION);
        check(
            "entry failure on invalid guest state",
            reason.basic() == BasicExitReason::ENTRY_FAILURE_INVALID_GUEST_STATE
                && qualification == 0,
            format_args!("{reason:?}, qualification {qualification:#x}"),
        );
        write(&mut vmcs, guest::RFLAGS, 0x2);
        launch(vmcs);
    }
    let exits = STATE.with(|s| {
        s.exits += 1;
        s.exits
    });
    let rip = read(&vmcs, guest::RIP);
    let length = u64::from(read(&vmcs, exit_info::VM_EXIT_INSTRUCTION_LENGTH));
    println!(
        "exit {exits}: {:?} at rip {rip:#x}, instruction length {length}",
        reason.basic()
    );
    if reason.is_entry_failure() {
        let qualification = read(&vmcs, exit_info::EXIT_QUALIFICATION);
        println!("{}", Dump(&vmcs));
        fail(
            "vm entry",
            format_args!(
                "failed: {reason:?}, qualification {qualification:#x} (see bochs.log and the dump)"
            ),
        );
    }
    match reason.basic() {
        BasicExitReason::CPUID => {
            check("cpuid exit length", length == 2, format_args!("{length}"));
            // SAFETY: the VMCS is launched now, so VMLAUNCH fails (error 4) without an entry.
            let failed = unsafe { vmx::vmlaunch() };
            check(
                "vmlaunch of a launched VMCS",
                failed == VmFail::Valid(VmInstructionError::VMLAUNCH_NON_CLEAR_VMCS),
                format_args!("{failed:?}"),
            );
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
            write(&mut vmcs, guest::RIP, rip + length);
            None
        }
        BasicExitReason::IO_INSTRUCTION => {
            let io = IoInstructionQualification(read(&vmcs, exit_info::EXIT_QUALIFICATION));
            let plain = io.size() == IoAccessSize::Byte && !io.is_string() && !io.is_rep();
            match (io.direction(), io.port()) {
                (IoDirection::Out, OUT_PORT) => check(
                    "out exit",
                    plain && length == 1 && regs.rax as u8 == OUT_VALUE,
                    format_args!("{io:?}, AL {:#x}, length {length}", regs.rax as u8),
                ),
                (IoDirection::In, IN_PORT) => {
                    check(
                        "in exit",
                        plain && length == 1,
                        format_args!("{io:?}, length {length}"),
                    );
                    regs.rax = (regs.rax & !0xFF) | u64::from(IN_VALUE);
                }
                _ => fail("unexpected port I/O", format_args!("{io:?}")),
            }
            STATE.with(|s| s.io_exits += 1);
            write(&mut vmcs, guest::RIP, rip + length);
            None
        }
        BasicExitReason::EPT_VIOLATION => {
            let gpa = read(&vmcs, exit_info::GUEST_PHYSICAL_ADDRESS);
            let qualification =
                EptViolationQualification(read(&vmcs, exit_info::EXIT_QUALIFICATION));
            let probe = vmx_probe_page.phys();
            check(
                "ept violation",
                gpa == probe
                    && qualification.read()
                    && !qualification.write()
                    && !qualification.instruction_fetch()
                    && !qualification.readable()
                    && qualification.guest_linear_address_valid(),
                format_args!("GPA {gpa:#x} (probe {probe:#x}), {qualification:?}"),
            );
            // Serve it: map the page again, invalidate, and let the guest retry the read.
            EPT.with(|e| {
                let Some(state) = e.as_mut() else {
                    fail("ept violation", format_args!("no EPT"))
                };
                let page = GuestPhysAddr::new_truncate(probe);
                match state.table.map(
                    page,
                    HostPhysAddr::new_truncate(probe),
                    4096,
                    EptAttrs::RWX_WB,
                ) {
                    Ok(flush) => invalidate(flush, state.eptp, state.caps),
                    Err(e) => fail("ept map", format_args!("{e}")),
                }
            });
            STATE.with(|s| s.ept_violations += 1);
            None
        }
        BasicExitReason::VMCALL => {
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
            let probe_write = vmx_probe_page.0[1].load(Ordering::SeqCst);
            check(
                "guest read and wrote the probe page",
                regs.r9 == PROBE_PATTERN && probe_write == GUEST_PROBE_WRITE,
                format_args!("read {:#x}, wrote {probe_write:#x}", regs.r9),
            );
            check(
                "guest saw the host's IN answer",
                regs.r11 == u64::from(IN_VALUE),
                format_args!("{:#x}", regs.r11),
            );
            let (cpuid_exits, ept_violations, io_exits) =
                STATE.with(|s| (s.cpuid_exits, s.ept_violations, s.io_exits));
            let with_ept = EPT.with(|e| e.is_some());
            let expected_violations = u64::from(with_ept);
            check(
                "exit sequence",
                exits == 4 + expected_violations
                    && cpuid_exits == 1
                    && io_exits == 2
                    && ept_violations == expected_violations,
                format_args!(
                    "{exits} exits: {io_exits} I/O, {cpuid_exits} CPUID, {ept_violations} EPT violations, 1 VMCALL"
                ),
            );
            Some(exits)
        }
        other => {
            println!("{}", Dump(&vmcs));
            fail(
                "unexpected exit",
                format_args!(
                    "{other:?}, qualification {:#x}",
                    read(&vmcs, exit_info::EXIT_QUALIFICATION)
                ),
            )
        }
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
    let vmcs = unsafe { current_vmcs() };
    let error = vmcs.read(exit_info::VM_INSTRUCTION_ERROR);
    fail(
        "vmresume",
        format_args!("RFLAGS {rflags:#x}, VM-instruction error {error:?}"),
    )
}
