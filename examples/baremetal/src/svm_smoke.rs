//! The SVM smoke case: enable SVM with hvkit-svm, build a VMCB for a 64-bit guest that shares the
//! host's page tables (under a 1:1 nested page table when the CPU has NPT), check it with
//! `check_vmcb`, make VMRUN fail on purpose (ASID 0), then run the guest: CPUID and VMMCALL exits.
//!
//! Reference: AMD64 Architecture Programmer's Manual Volume 2 (Publication No. 24593, Revision
//! 3.42, March 2024): 15.4 "Enabling SVM", 15.5 "VMRUN Instruction" (15.5.1 "Basic Operation"
//! for the consistency checks), 15.6 "#VMEXIT", 15.7 "Intercept Operation", 15.25 "Nested
//! Paging", Appendix C "SVM Intercept Exit Codes".
// UNSAFETY: this case executes SVM instructions and hands the CPU a guest built from assembly
// symbols.
#![expect(unsafe_code, reason = "the case drives SVM directly")]

use core::arch::global_asm;
use core::arch::x86_64::{__cpuid, __cpuid_count};
use core::sync::atomic::{AtomicU64, Ordering};

use hvkit_paging::{
    Flush, FlushKind, GuestPhysAddr, HostPhysAddr, NptCapabilities, NptTable, X86Attrs,
};
use hvkit_svm::check::{Rule, check_vmcb};
use hvkit_svm::enable::{SvmMsrs, disable_svm, enable_svm};
use hvkit_svm::exit::{Exit, ExitCode, NpfErrorCode};
use hvkit_svm::features::{HostCapabilities, SvmFeatureFlags};
use hvkit_svm::instructions::{HardwareCpuid, HardwareSvmMsrs, clgi, stgi, vmload, vmrun, vmsave};
use hvkit_svm::intercept::{MiscIntercepts1, MiscIntercepts2};
use hvkit_svm::regs::VmrunGprs;
use hvkit_svm::segment::Segment;
use hvkit_svm::setup::LongModeGuest;
use hvkit_svm::vmcb::{Intercepts, NestedControl, TlbControl, Vmcb};
use hvkit_svm::{Iopm, Msrpm};
use x86_64::PhysAddr;
use x86_64::instructions::tables;
use x86_64::structures::paging::PageTableFlags;

use crate::boot::selectors;
use crate::frames::FramePool;
use crate::println;
use crate::serial;
use crate::sync::{ProbePage, TakeOnce};

/// The CPUID leaf the host answers itself, and the signature it returns in EBX, ECX, EDX.
const HV_LEAF: u32 = 0x4000_0000;
const HV_SIGNATURE: &[u8; 12] = b"hvkitHVKIThv";
/// The value the guest stores to [`svm_guest_marker`] before its VMMCALL.
const GUEST_MARKER: u64 = 0x600D_F00D_0000_0002;
/// Instruction lengths for CPUs without NRIP save (QEMU TCG): CPUID is 0F A2, VMMCALL 0F 01 D9.
const CPUID_LENGTH: u64 = 2;
const VMMCALL_LENGTH: u64 = 3;

/// An illegal-VMCB case: name, the `check_vmcb` rule, the setter and value that break the VMCB,
/// and whether every emulator is known to refuse it.
type IllegalVmcb = (&'static str, Rule, fn(&mut Vmcb, u64), u64, bool);

/// CR0.NW (bit 29) and CR0.CD (bit 30) (APM Vol. 2, 3.1.1 "CR0 Register").
const CR0_NW: u64 = 1 << 29;
const CR0_CD: u64 = 1 << 30;

global_asm!(
    r#"
    .text
    .global svm_guest_entry
svm_guest_entry:
    // Port I/O, intercepted through the IOPM: OUT of 42h to port 80h, then IN from port 81h
    // (the host answers 99h).
    mov dx, 0x80
    mov al, 0x42
    out dx, al
    mov dx, 0x81
    in al, dx
    movzx r11d, al
    mov eax, 0x40000000
    xor ecx, ecx
    cpuid
    mov r8, 0x600DF00D00000002
    mov qword ptr [rip + svm_guest_marker], r8
    // Read the probe page (unmapped in the nested table: the first try is a nested page fault),
    // then write it.
    mov r9, qword ptr [rip + svm_probe_page]
    mov r10, 0x57524954455F4F4B
    mov qword ptr [rip + svm_probe_page + 8], r10
    .global svm_guest_vmmcall
svm_guest_vmmcall:
    vmmcall
    ud2

    .section .bss.svm, "aw", @nobits
    .balign 16
svm_guest_stack:
    .skip 4096
    .global svm_guest_stack_top
svm_guest_stack_top:
"#
);

unsafe extern "C" {
    static svm_guest_entry: u8;
    static svm_guest_vmmcall: u8;
    static svm_guest_stack_top: u8;
}

/// Written by the guest (through the shared identity mapping) right before its VMMCALL.
#[unsafe(no_mangle)]
static svm_guest_marker: AtomicU64 = AtomicU64::new(0);

/// The page the host removes from the nested table before the guest runs: the guest's read of
/// word 0 is a nested page fault that the host serves by mapping the page again; then the guest
/// writes word 1.
#[unsafe(no_mangle)]
static svm_probe_page: ProbePage = ProbePage::new();
/// The ports the guest uses, what it writes, and what the host answers to its IN.
const OUT_PORT: u16 = 0x80;
const OUT_VALUE: u8 = 0x42;
const IN_PORT: u16 = 0x81;
const IN_VALUE: u8 = 0x99;

/// What the host puts in word 0 of the probe page, and what the guest writes to word 1.
const PROBE_PATTERN: u64 = 0x5052_4F42_455F_5244;
const GUEST_PROBE_WRITE: u64 = 0x5752_4954_455F_4F4B;

static HOST_SAVE_AREA: TakeOnce<hvkit_svm::enable::HostSaveArea> =
    TakeOnce::new(hvkit_svm::enable::HostSaveArea::new());
static GUEST_VMCB: TakeOnce<Vmcb> = TakeOnce::new(Vmcb::new());
static HOST_VMCB: TakeOnce<Vmcb> = TakeOnce::new(Vmcb::new());
static IOPM: TakeOnce<Iopm> = TakeOnce::new(Iopm::intercept_none());
static MSRPM: TakeOnce<Msrpm> = TakeOnce::new(Msrpm::intercept_none());

fn fail(what: &str, exits: u64, detail: core::fmt::Arguments<'_>) -> ! {
    println!("FAIL {what}: {detail}");
    serial::finish(false, exits)
}

fn check(what: &str, ok: bool, exits: u64, detail: core::fmt::Arguments<'_>) {
    if ok {
        println!("ok {what}: {detail}");
    } else {
        fail(what, exits, detail);
    }
}

fn addr<T>(r: &T) -> u64 {
    core::ptr::from_ref(r) as u64
}

/// Present, writable, user: nested walks are user accesses (APM 15.25.5).
fn rw_user() -> X86Attrs {
    X86Attrs::new(
        PageTableFlags::PRESENT | PageTableFlags::WRITABLE | PageTableFlags::USER_ACCESSIBLE,
    )
}

/// Performs the invalidation hvkit-paging asks for after changing a live nested table: a TLB
/// flush with the guest's next VMRUN.
fn invalidate(guest: &mut Vmcb, flush: Flush, tlb: TlbControl) {
    match flush.kind() {
        FlushKind::NestedAsid => guest.set_tlb_control(tlb),
        other => fail("npt flush", 0, format_args!("unexpected {other:?}")),
    }
}

/// Builds an identity nested page table of the low 4 GiB with hvkit-paging (U/S set at every
/// level, as nested walks are user accesses: APM 15.25.5) and returns it with its nCR3.
fn build_npt(caps: &NptCapabilities) -> (NptTable<FramePool>, u64) {
    let config = match caps.table_config() {
        Ok(config) => config,
        Err(e) => fail("npt config", 0, format_args!("{e}")),
    };
    let mut npt = match NptTable::new(FramePool, config) {
        Ok(table) => table,
        Err(e) => fail("npt root", 0, format_args!("{e}")),
    };
    match npt.map(GuestPhysAddr::ZERO, HostPhysAddr::ZERO, 4 << 30, rw_user()) {
        // No VMCB refers to the table yet, so there is nothing stale to invalidate.
        Ok(flush) => flush.ignore(),
        Err(e) => fail("npt map", 0, format_args!("{e}")),
    }
    let probe = 0x0012_3456;
    let translated = npt.translate_addr(GuestPhysAddr::new_truncate(probe));
    check(
        "npt translate",
        translated == Some(HostPhysAddr::new_truncate(probe)),
        0,
        format_args!("{probe:#x} -> {translated:?}"),
    );
    let ncr3 = match caps.ncr3(npt.root(), config.levels) {
        Ok(ncr3) => ncr3,
        Err(e) => fail("ncr3", 0, format_args!("{e}")),
    };
    println!(
        "ok npt (hvkit-paging): 1:1 map of 0..4 GiB in {} table frames, nCR3 {:#x}",
        npt.table_frames(),
        ncr3.0
    );
    (npt, ncr3.0)
}

/// One world switch: host state out, guest in, VMRUN, and back.
///
/// # Safety
/// - SVM is enabled on this CPU; `guest`/`host` live at `guest_pa`/`host_pa`; the guest VMCB
///   describes a guest that only touches memory this kernel lets it share.
unsafe fn world_switch(
    guest: &mut Vmcb,
    guest_pa: PhysAddr,
    host: &mut Vmcb,
    host_pa: PhysAddr,
    regs: &mut VmrunGprs,
) {
    // SAFETY: forwarded from this function's contract. GIF stays clear from CLGI to STGI, so the
    // host takes nothing while its FS/GS/TR state is the guest's.
    unsafe {
        clgi();
        vmsave(host, host_pa);
        vmload(guest, guest_pa);
        vmrun(guest, guest_pa, regs);
        vmsave(guest, guest_pa);
        vmload(host, host_pa);
        stgi();
    }
}

/// The SVM smoke case.
pub fn run() -> ! {
    let cpuid = HardwareCpuid;
    let leaf = __cpuid(0x8000_000A);
    let sizes = __cpuid(0x8000_0008);
    let ext = __cpuid(0x8000_0001);
    // The raw values, for the e2e fixture (`cpuid <leaf> <eax> <ebx> <ecx> <edx>`).
    for (number, r) in [
        (0x8000_0001u32, ext),
        (0x8000_0008, sizes),
        (0x8000_000A, leaf),
    ] {
        println!(
            "cpuid {number:#x} {:#010x} {:#010x} {:#010x} {:#010x}",
            r.eax, r.ebx, r.ecx, r.edx
        );
    }
    let caps =
        HostCapabilities::from_cpuid([leaf.eax, leaf.ebx, leaf.ecx, leaf.edx], sizes.eax, ext.edx);
    println!("caps {caps:#x?}");
    let nested = caps.svm.has(SvmFeatureFlags::NESTED_PAGING);
    let nrip = caps.svm.has(SvmFeatureFlags::NRIP_SAVE);
    let gigabyte_pages = ext.edx & (1 << 26) != 0;

    let (Some(hsave), Some(guest), Some(host), Some(iopm), Some(msrpm)) = (
        HOST_SAVE_AREA.take(),
        GUEST_VMCB.take(),
        HOST_VMCB.take(),
        IOPM.take(),
        MSRPM.take(),
    ) else {
        fail("statics", 0, format_args!("taken twice"))
    };
    let hsave_pa = PhysAddr::new(addr(hsave));
    let guest_pa = PhysAddr::new(addr(guest));
    let host_pa = PhysAddr::new(addr(host));

    // SAFETY: ring 0 on the only CPU; this kernel owns its SVM state.
    let mut msrs = unsafe { HardwareSvmMsrs::new() };
    let features = match enable_svm(&cpuid, &mut msrs, hsave_pa) {
        Ok(f) => f,
        Err(e) => fail("enable", 0, format_args!("{e}")),
    };
    let efer = msrs.efer();
    let hsave_read = msrs.vm_hsave_pa();
    check(
        "enable",
        efer & hvkit_svm::enable::EFER_SVME != 0 && hsave_read == hsave_pa.as_u64(),
        0,
        format_args!(
            "EFER {efer:#x}, VM_HSAVE_PA {hsave_read:#x}, revision {}, {} ASIDs, NPT {nested}, NRIP save {nrip}",
            features.revision, features.asid_count
        ),
    );

    let (cr3, _) = x86_64::registers::control::Cr3::read_raw();
    let gdtr = tables::sgdt();
    let idtr = tables::sidt();
    // SAFETY: only symbol addresses are taken.
    let (entry, vmmcall_rip, stack) = unsafe {
        (
            addr(&svm_guest_entry),
            addr(&svm_guest_vmmcall),
            addr(&svm_guest_stack_top),
        )
    };
    guest.set_flat_long_mode(&LongModeGuest {
        cr3: cr3.start_address().as_u64(),
        rip: entry,
        rsp: stack,
        code_selector: selectors::CODE,
        data_selector: selectors::DATA,
        gdtr: Segment::table(gdtr.base.as_u64(), gdtr.limit),
        idtr: Segment::table(idtr.base.as_u64(), idtr.limit),
    });
    let mut intercepts = Intercepts::baseline();
    intercepts.misc1 |= MiscIntercepts1::CPUID | MiscIntercepts1::IOIO_PROT;
    if let Err(e) = iopm.set_range(OUT_PORT..=IN_PORT, true) {
        fail("iopm", 0, format_args!("{e}"));
    }
    intercepts.misc2 |= MiscIntercepts2::VMRUN | MiscIntercepts2::VMMCALL;
    guest.set_intercepts(intercepts);
    guest.set_iopm_base_pa(PhysAddr::new(addr(iopm)));
    guest.set_msrpm_base_pa(PhysAddr::new(addr(msrpm)));
    guest.set_guest_asid(1);
    // The nested table lives as long as this function, which never returns.
    let mut npt = nested.then(|| {
        let (table, ncr3) = build_npt(&NptCapabilities {
            nested_paging: true,
            host_la57: false,
            pages_1g: gigabyte_pages,
            phys_bits: (sizes.eax & 0xFF) as u8,
        });
        guest.set_nested_control(NestedControl::NP_ENABLE);
        guest.set_nested_cr3(PhysAddr::new(ncr3));
        table
    });
    guest.mark_all_dirty();

    let violations = check_vmcb(guest, &caps);
    check(
        "check_vmcb",
        violations.is_empty(),
        0,
        format_args!("{violations:?}"),
    );

    // Illegal VMCBs (APM 15.5.1): `check_vmcb` must flag each, and VMRUN must refuse those the
    // emulators are known to check (these three: Bochs and QEMU TCG 7.2 both refuse them).
    let mut regs = VmrunGprs::default();
    let (efer, cr0) = (guest.save().efer(), guest.save().cr0());
    let illegal: [IllegalVmcb; 3] = [
        (
            "ASID 0",
            Rule::AsidZero,
            |v, asid| v.set_guest_asid(asid as u32),
            0,
            true,
        ),
        (
            "guest EFER.SVME clear",
            Rule::EferSvmeClear,
            Vmcb::set_efer,
            efer & !hvkit_svm::enable::EFER_SVME,
            true,
        ),
        (
            "guest CR0.NW without CD",
            Rule::Cr0NwWithoutCd,
            Vmcb::set_cr0,
            (cr0 | CR0_NW) & !CR0_CD,
            true,
        ),
    ];
    for (what, rule, set, value, must_refuse) in illegal {
        set(guest, value);
        let flagged = check_vmcb(guest, &caps).contains(rule);
        // SAFETY: SVM is enabled; the VMCBs are statics at the given addresses. If VMRUN does
        // not refuse this guest, it runs the guest code, whose CPUID is intercepted.
        unsafe { world_switch(guest, guest_pa, host, host_pa, &mut regs) };
        let code = guest.control().exit_code();
        let refused = code.is_invalid();
        let what = format_args!(
            "{what}: exit code {code:?}, check_vmcb flags {rule:?}: {flagged}, emulator refuses: {refused}"
        );
        check(
            "illegal VMCB",
            flagged && (refused || !must_refuse),
            0,
            what,
        );
        guest.set_guest_asid(1);
        guest.set_efer(efer);
        guest.set_cr0(cr0);
        guest.set_rip(entry);
        guest.set_rsp(stack);
        guest.mark_all_dirty();
    }
    regs = VmrunGprs::default();

    // Take the probe page out of the nested table: the guest's first access to it must exit.
    let probe = svm_probe_page.phys();
    svm_probe_page.0[0].store(PROBE_PATTERN, Ordering::SeqCst);
    let flush_tlb = if caps.svm.has(SvmFeatureFlags::FLUSH_BY_ASID) {
        TlbControl::FLUSH_GUEST
    } else {
        TlbControl::FLUSH_ALL
    };
    if let Some(table) = npt.as_mut() {
        match table.unmap(GuestPhysAddr::new_truncate(probe), 4096) {
            Ok(flush) => invalidate(guest, flush, flush_tlb),
            Err(e) => fail("npt unmap", 0, format_args!("{e}")),
        }
        let gone = table.translate_addr(GuestPhysAddr::new_truncate(probe));
        check(
            "npt unmap of the probe page",
            gone.is_none(),
            0,
            format_args!(
                "{probe:#x} -> {gone:?}, {} table frames",
                table.table_frames()
            ),
        );
    }

    let mut exits = 0u64;
    let mut cpuid_exits = 0u64;
    let mut nested_faults = 0u64;
    let mut io_exits = 0u64;
    loop {
        // SAFETY: SVM is enabled; the VMCBs are statics at the given addresses; the guest shares
        // the host's identity-mapped memory and only runs the code above.
        unsafe { world_switch(guest, guest_pa, host, host_pa, &mut regs) };
        guest.mark_all_clean();
        // A requested TLB flush happened with this VMRUN; VMRUN does not clear the field.
        guest.set_tlb_control(TlbControl::DO_NOTHING);
        exits += 1;
        let code = guest.control().exit_code();
        let rip = guest.save().rip();
        let next_rip = guest.control().next_rip();
        println!("exit {exits}: code {code:?} at rip {rip:#x}, nRIP {next_rip:#x}");
        if exits > 10 {
            fail("exit loop", exits, format_args!("too many exits"));
        }
        match code {
            ExitCode::CPUID => {
                if nrip {
                    check(
                        "cpuid nRIP",
                        next_rip == rip + CPUID_LENGTH,
                        exits,
                        format_args!("{next_rip:#x}"),
                    );
                }
                let (leaf, subleaf) = (guest.save().rax() as u32, regs.rcx as u32);
                if leaf == HV_LEAF {
                    let word = |i: usize| {
                        let mut b = [0u8; 4];
                        b.copy_from_slice(&HV_SIGNATURE[i * 4..i * 4 + 4]);
                        u64::from(u32::from_le_bytes(b))
                    };
                    guest.set_rax(u64::from(HV_LEAF));
                    regs.rbx = word(0);
                    regs.rcx = word(1);
                    regs.rdx = word(2);
                } else {
                    let r = __cpuid_count(leaf, subleaf);
                    guest.set_rax(u64::from(r.eax));
                    regs.rbx = u64::from(r.ebx);
                    regs.rcx = u64::from(r.ecx);
                    regs.rdx = u64::from(r.edx);
                }
                cpuid_exits += 1;
                guest.skip_instruction(rip + CPUID_LENGTH);
            }
            ExitCode::IOIO => {
                let decoded = guest.control().decode_exit();
                let Ok(Exit::Io(io)) = decoded else {
                    fail("ioio decode", exits, format_args!("{decoded:?}"))
                };
                let plain = io.size().bytes() == 1 && !io.is_string() && !io.is_rep();
                let next = io.next_rip();
                // EXITINFO2 holds the next RIP even without NRIP save; with it, nRIP agrees.
                let next_ok = next == rip + 1 && (!nrip || next_rip == next);
                let al = guest.save().rax() as u8;
                match (io.is_in(), io.port()) {
                    (false, OUT_PORT) => check(
                        "out exit",
                        plain && next_ok && al == OUT_VALUE,
                        exits,
                        format_args!("{io:?}, AL {al:#x}"),
                    ),
                    (true, IN_PORT) => {
                        check("in exit", plain && next_ok, exits, format_args!("{io:?}"));
                        let rax = guest.save().rax();
                        guest.set_rax((rax & !0xFF) | u64::from(IN_VALUE));
                    }
                    _ => fail("unexpected port I/O", exits, format_args!("{io:?}")),
                }
                io_exits += 1;
                guest.skip_instruction(next);
            }
            ExitCode::NPF => {
                let decoded = guest.control().decode_exit();
                let Ok(Exit::NestedPageFault {
                    error,
                    guest_physical,
                }) = decoded
                else {
                    fail("npf decode", exits, format_args!("{decoded:?}"))
                };
                check(
                    "nested page fault",
                    guest_physical == probe
                        && error.contains(NpfErrorCode::FINAL_TRANSLATION | NpfErrorCode::USER)
                        && !error.intersects(NpfErrorCode::PRESENT | NpfErrorCode::WRITE),
                    exits,
                    format_args!("GPA {guest_physical:#x} (probe {probe:#x}), {error:?}"),
                );
                // Serve it: map the page again, flush, and let the guest retry the read.
                let Some(table) = npt.as_mut() else {
                    fail("nested page fault", exits, format_args!("no nested table"))
                };
                let page = GuestPhysAddr::new_truncate(probe);
                match table.map(page, HostPhysAddr::new_truncate(probe), 4096, rw_user()) {
                    Ok(flush) => invalidate(guest, flush, flush_tlb),
                    Err(e) => fail("npt map", exits, format_args!("{e}")),
                }
                nested_faults += 1;
            }
            ExitCode::VMMCALL => {
                if nrip {
                    check(
                        "vmmcall nRIP",
                        next_rip == rip + VMMCALL_LENGTH,
                        exits,
                        format_args!("{next_rip:#x}"),
                    );
                }
                check(
                    "vmmcall guest rip",
                    rip == vmmcall_rip,
                    exits,
                    format_args!("{rip:#x}, expected {vmmcall_rip:#x}"),
                );
                let mut signature = [0u8; 12];
                signature[..4].copy_from_slice(&(regs.rbx as u32).to_le_bytes());
                signature[4..8].copy_from_slice(&(regs.rcx as u32).to_le_bytes());
                signature[8..].copy_from_slice(&(regs.rdx as u32).to_le_bytes());
                let rax = guest.save().rax();
                check(
                    "guest saw the host's CPUID answer",
                    &signature == HV_SIGNATURE && rax == u64::from(HV_LEAF),
                    exits,
                    format_args!(
                        "eax {rax:#x}, signature {:?}",
                        core::str::from_utf8(&signature)
                    ),
                );
                let marker = svm_guest_marker.load(Ordering::SeqCst);
                check(
                    "guest memory write seen by the host",
                    marker == GUEST_MARKER,
                    exits,
                    format_args!("{marker:#x}"),
                );
                let probe_write = svm_probe_page.0[1].load(Ordering::SeqCst);
                check(
                    "guest read and wrote the probe page",
                    regs.r9 == PROBE_PATTERN && probe_write == GUEST_PROBE_WRITE,
                    exits,
                    format_args!("read {:#x}, wrote {probe_write:#x}", regs.r9),
                );
                check(
                    "guest saw the host's IN answer",
                    regs.r11 == u64::from(IN_VALUE),
                    exits,
                    format_args!("{:#x}", regs.r11),
                );
                let expected_faults = u64::from(npt.is_some());
                check(
                    "exit sequence",
                    exits == 4 + expected_faults
                        && cpuid_exits == 1
                        && io_exits == 2
                        && nested_faults == expected_faults,
                    exits,
                    format_args!(
                        "{exits} exits: {io_exits} I/O, {cpuid_exits} CPUID, {nested_faults} nested page faults, 1 VMMCALL"
                    ),
                );
                break;
            }
            other => fail(
                "unexpected exit",
                exits,
                format_args!("{other:?}, info {:#x?}", guest.control().exit_info()),
            ),
        }
    }

    let off = disable_svm(&mut msrs);
    let efer = msrs.efer();
    check(
        "disable",
        off.is_ok() && efer & hvkit_svm::enable::EFER_SVME == 0,
        exits,
        format_args!("{off:?}, EFER {efer:#x}"),
    );
    println!("PASS svm smoke");
    serial::finish(true, exits)
}
