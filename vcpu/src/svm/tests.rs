//! Host tests of the SVM backend on a boxed VMCB and the host-test platform: VMCB set-up and
//! its checks, exit decoding, instruction skipping (nRIP, IOIO, decoding guest code through the
//! 2-D walker), events, and the clean-bit figures.

use std::boxed::Box;
use std::println;

use hvkit_paging::{
    GuestPhysAddr, GuestTable, GuestVirtAddr, HostPhysAddr, LongMode, Nested, NptCapabilities,
    PhysMemory, TableConfig, X86Attrs,
};
use hvkit_svm::check::Rule;
use hvkit_svm::features::HostCapabilities;
use hvkit_svm::intercept::{CrIntercepts, MiscIntercepts1, MiscIntercepts2};
use hvkit_svm::vmcb::{CleanBits, InterruptState, TlbControl};
use hvkit_svm::{EventInjection, ExitCode, Vmcb};
use raw_cpuid::CpuIdResult;
use x86_64::structures::paging::PageTableFlags;

use super::*;
use crate::bitmap::Bitmap;
use crate::error::{Unsupported, VcpuError};
use crate::event::Event;
use crate::exit::{CrAccessKind, EntryFailure, ExitKind, IoDirection};
use crate::host::HostPlatform;
use crate::hypercall;
use crate::memory::{MemoryMap, NestedPaging, Region, RegionKind};
use crate::platform::{OwnedFrames, PlatformFrames};
use crate::state::GuestState;

/// CPUID Fn8000_000A EDX of a processor with nested paging only (QEMU TCG) or also NRIP save
/// and decode assists.
fn caps(edx: u32) -> HostCapabilities {
    HostCapabilities::from_cpuid([1, 16, 0, edx], 40, 1 << 29)
}
const NP: u32 = 1;
const NRIP: u32 = 1 << 3;
const DECODE_ASSISTS: u32 = 1 << 7;

fn layout() -> VmcbLayout {
    VmcbLayout {
        iopm: 0x10_0000,
        msrpm: 0x10_4000,
        asid: 1,
        tlb_control: TlbControl::FLUSH_ALL,
        ncr3: Some(0x20_0000),
        exception_bitmap: 0,
        tsc_offset: 0,
        external_interrupt_exiting: false,
    }
}

type TestCore<M = NoMemory> = SvmCore<Box<Vmcb>, M>;

/// A core over a VMCB built from a long-mode state, after its first (fake) entry.
fn core_with<M: PhysMemory>(edx: u32, state: &GuestState) -> TestCore<M> {
    let mut vmcb = Box::new(Vmcb::new());
    write_vmcb(&mut vmcb, &layout(), state);
    let mut core = SvmCore::new(vmcb, caps(edx));
    core.regs = state.regs;
    assert_eq!(core.prepare_entry().unwrap(), Entry::Run);
    core
}

fn core(edx: u32) -> TestCore {
    let mut s = GuestState::long_mode_flat(0x1000, 0x1000, 0x8000);
    s.rflags = 0x202;
    core_with(edx, &s)
}

/// Fakes a #VMEXIT: the guest's RAX (from `core.regs`, as the guest left it) and the exit
/// fields in the VMCB, then the run loop's `decode_exit`.
fn exit<M: PhysMemory>(core: &mut TestCore<M>, code: ExitCode, info1: u64, info2: u64) -> ExitKind {
    let rax = core.regs.rax;
    let vmcb = core.vmcb_mut();
    vmcb.set_rax(rax);
    vmcb.set_exit_code(code);
    vmcb.set_exit_info1(info1);
    vmcb.set_exit_info2(info2);
    vmcb.set_next_rip(0);
    core.decode_exit().unwrap().kind
}

fn host_cpuid(leaf: u32, _: u32) -> CpuIdResult {
    CpuIdResult {
        eax: leaf,
        ebx: 0,
        ecx: 0,
        edx: 0,
    }
}

#[test]
fn presets_pass_the_vmrun_checks() {
    let presets = [
        GuestState::real_mode(0xf000, 0xfff0, 0x7c00),
        GuestState::protected_mode_flat(0x10_0000, 0x9_0000),
        GuestState::long_mode_flat(0x1000, 0x20_0000, 0x30_0000),
    ];
    for state in presets {
        let mut vmcb = Box::new(Vmcb::new());
        write_vmcb(&mut vmcb, &layout(), &state);
        let v = hvkit_svm::check_vmcb(&vmcb, &caps(NP));
        assert!(v.is_empty(), "{state:?}: {v:?}");
        let save = vmcb.save();
        assert_eq!(save.rip(), state.rip);
        assert_ne!(save.efer() & crate::state::EFER_SVME, 0);
        assert_eq!(
            save.cs().attributes.bits(),
            state.cs.access.svm_attributes()
        );
        assert_eq!(
            vmcb.clean_bits(),
            CleanBits::empty(),
            "first VMRUN loads all"
        );
        let c = vmcb.control();
        assert!(
            c.intercept_misc2().contains(
                MiscIntercepts2::VMRUN | MiscIntercepts2::VMMCALL | MiscIntercepts2::XSETBV
            )
        );
        assert!(
            c.intercept_misc1().contains(
                MiscIntercepts1::CPUID | MiscIntercepts1::HLT | MiscIntercepts1::SHUTDOWN
            )
        );
        assert_eq!(c.nested_cr3().as_u64(), 0x20_0000);
    }
    let real = GuestState::real_mode(0, 0x7c00, 0);
    let mut vmcb = Box::new(Vmcb::new());
    write_vmcb(&mut vmcb, &layout(), &real);
    assert_eq!(vmcb.save().cpl(), 0);
    assert_eq!(vmcb.save().cs().base, 0);
}

/// The configured ASID (`VcpuConfig::vpid`) is what the VMCB gets when the processor has it:
/// QEMU TCG reports 16 ASIDs, Bochs' trinity_apu 64 (CPUID Fn8000_000A_EBX).
#[test]
fn the_configured_asid_is_used_when_the_processor_has_it() {
    for (configured, count) in [(1, 16), (7, 16), (15, 16), (1, 64), (63, 64), (1, 2)] {
        assert_eq!(guest_asid(configured, count), Ok(u32::from(configured)));
    }
    let count = caps(NP).svm.asid_count;
    assert_eq!(count, 16);
    let mut l = layout();
    l.asid = guest_asid(9, count).unwrap();
    let mut vmcb = Box::new(Vmcb::new());
    write_vmcb(
        &mut vmcb,
        &l,
        &GuestState::long_mode_flat(0x1000, 0x1000, 0x8000),
    );
    assert_eq!(vmcb.control().guest_asid(), 9);
    let mut c: TestCore = SvmCore::new(vmcb, caps(NP));
    assert_eq!(c.prepare_entry().unwrap(), Entry::Run);
    assert!(c.violations().is_empty());
}

/// ASID 0 (the host's) and ASIDs the processor lacks are typed errors, which `Vcpu::new`
/// returns before it enables SVM.
#[test]
fn the_host_asid_and_missing_asids_are_refused() {
    assert_eq!(guest_asid(0, 16), Err(AsidError::Zero));
    assert_eq!(guest_asid(0, 0), Err(AsidError::Zero));
    for (asid, count) in [(16, 16), (17, 16), (64, 64), (u16::MAX, 64), (1, 1), (1, 0)] {
        assert_eq!(
            guest_asid(asid, count),
            Err(AsidError::OutOfRange {
                asid: u32::from(asid),
                count
            }),
            "{asid} of {count}"
        );
    }
    let e = VcpuError::from(guest_asid(16, 16).unwrap_err());
    assert_eq!(
        e,
        VcpuError::Asid(AsidError::OutOfRange {
            asid: 16,
            count: 16
        })
    );
    assert_eq!(
        std::format!("{e}"),
        "ASID 16 is not below the processor's ASID count 16 (CPUID Fn8000_000A_EBX)"
    );
    assert_eq!(
        std::format!("{}", AsidError::Zero),
        "ASID 0 is the host's; a guest needs 1 or more"
    );
}

#[test]
fn a_failed_check_refuses_the_entry_and_names_the_rules() {
    let mut vmcb = Box::new(Vmcb::new());
    let mut bad = layout();
    bad.asid = 0;
    let mut state = GuestState::long_mode_flat(0x1000, 0, 0);
    state.cr0 |= 1 << 29; // NW without CD
    write_vmcb(&mut vmcb, &bad, &state);
    let mut c: TestCore = SvmCore::new(vmcb, caps(NP));
    let Entry::Refused(exit) = c.prepare_entry().unwrap() else {
        panic!("entered an illegal VMCB")
    };
    assert_eq!(
        exit.kind,
        ExitKind::EntryFailure(EntryFailure::VmrunFailed(ExitCode::INVALID))
    );
    let v = c.violations();
    assert!(
        v.contains(Rule::AsidZero) && v.contains(Rule::Cr0NwWithoutCd),
        "{v:?}"
    );
    assert_eq!(v.len(), 2);
    // Fixed, it runs.
    c.vmcb_mut().set_guest_asid(1);
    c.vmcb_mut().set_cr0(state.cr0 & !(1 << 29));
    assert_eq!(c.prepare_entry().unwrap(), Entry::Run);
    // VMEXIT_INVALID as QEMU writes it (low 32 bits) also names what is wrong now.
    c.vmcb_mut().set_guest_asid(0);
    assert_eq!(
        exit_kind_raw(&mut c, ExitCode(0xffff_ffff)),
        ExitKind::EntryFailure(EntryFailure::VmrunFailed(ExitCode::INVALID))
    );
    assert_eq!(c.violations(), hvkit_svm::Violations::only(Rule::AsidZero));
}

fn exit_kind_raw(c: &mut TestCore, code: ExitCode) -> ExitKind {
    exit(c, code, 0, 0)
}

#[test]
fn cpuid_without_nrip_or_code_uses_the_fixed_length_and_stays_clean() {
    let mut c = core(NP);
    c.regs.rax = hypercall::LEAF_INTERFACE.into();
    assert_eq!(
        exit(&mut c, ExitCode::CPUID, 0, 0),
        ExitKind::Cpuid {
            leaf: hypercall::LEAF_INTERFACE,
            subleaf: 0
        }
    );
    c.complete_cpuid(host_cpuid).unwrap();
    assert_eq!(c.regs.rbx, u64::from(hypercall::INSTRUCTION_VMMCALL));
    assert_eq!(c.prepare_entry().unwrap(), Entry::Run);
    assert_eq!(c.vmcb().save().rip(), 0x1002);
    assert_eq!(c.vmcb().save().rax(), u64::from(hypercall::ABI_VERSION));
    assert_eq!(c.vmcb().clean_bits(), CleanBits::all());
    let s = c.clean_stats();
    assert_eq!((s.reentries, s.clean_reentries), (1, 1));
}

#[test]
fn nrip_wins_and_ioio_uses_exitinfo2() {
    let mut c = core(NP | NRIP);
    c.vmcb_mut().set_exit_code(ExitCode::HLT);
    c.vmcb_mut().set_next_rip(0x1005);
    assert_eq!(c.decode_exit().unwrap().kind, ExitKind::Hlt);
    c.skip_instruction().unwrap();
    assert_eq!(c.vmcb().save().rip(), 0x1005);
    // OUT DX, AL to 3F8h: EXITINFO1 port 3F8h, SZ8; EXITINFO2 next RIP.
    c.regs.rax = 0x41;
    let ExitKind::Io(io) = exit(&mut c, ExitCode::IOIO, 0x03f8_0010, 0x2001) else {
        panic!()
    };
    assert_eq!(
        (io.port, io.size, io.direction, io.data),
        (0x3f8, 1, IoDirection::Out, Some(0x41))
    );
    c.complete_io(0).unwrap();
    assert_eq!(c.vmcb().save().rip(), 0x2001);
    // IN EAX, DX from 60h: type bit 0 (IN), SZ32 bit 6.
    let ExitKind::Io(io) = exit(&mut c, ExitCode::IOIO, 0x0060_0041, 0x3001) else {
        panic!()
    };
    assert_eq!((io.size, io.direction), (4, IoDirection::In));
    c.complete_io(0xdead_beef).unwrap();
    assert_eq!(c.regs.rax, 0xdead_beef);
    // REP OUTSB (STR, REP): reported with its form, not completed by `complete_io`.
    let ExitKind::Io(io) = exit(&mut c, ExitCode::IOIO, 0x03f8_001c, 0x3003) else {
        panic!()
    };
    assert!(io.string && io.rep && io.data.is_none());
    assert_eq!(
        c.complete_io(0),
        Err(VcpuError::WrongExit("IN or OUT (not INS/OUTS)"))
    );
}

#[test]
fn unknown_lengths_are_typed_errors() {
    let mut c = core(NP);
    exit(&mut c, ExitCode::INVLPG, 0, 0);
    assert_eq!(
        c.skip_instruction(),
        Err(VcpuError::Unsupported(Unsupported::InstructionLength))
    );
    assert_eq!(fixed_length(ExitCode::VMMCALL), Some(3));
    assert_eq!(fixed_length(ExitCode::NPF), None);
}

#[test]
fn decodes_npf_msr_exceptions_cr_and_failures() {
    let mut c = core(NP | DECODE_ASSISTS);
    // Measured under QEMU TCG: a read of an unmapped GPA, EXITINFO1 = 1_0000_0004.
    let ExitKind::NestedPageFault(f) = exit(&mut c, ExitCode::NPF, 0x1_0000_0004, 0xc000_0000)
    else {
        panic!()
    };
    assert_eq!(f.gpa.as_u64(), 0xc000_0000);
    assert!(f.access.read && !f.access.write && !f.access.present && !f.during_walk);
    // A write during the guest's table walk to a present page.
    let ExitKind::NestedPageFault(f) = exit(&mut c, ExitCode::NPF, 0x2_0000_0007, 0x5000) else {
        panic!()
    };
    assert!(f.access.write && f.access.present && f.during_walk && !f.access.read);
    c.regs.rcx = 0xc001_0117;
    c.regs.rax = 0x500;
    c.regs.rdx = 0;
    assert_eq!(
        exit(&mut c, ExitCode::MSR, 1, 0),
        ExitKind::MsrWrite {
            msr: 0xc001_0117,
            value: 0x500
        }
    );
    assert!(c.handle_default(host_cpuid).unwrap());
    assert_eq!(c.prepare_entry().unwrap(), Entry::Run);
    assert_eq!(
        c.vmcb().control().event_injection(),
        EventInjection::exception(13, Some(0))
    );
    let ExitKind::Exception(e) = exit(&mut c, ExitCode::EXCP_PF, 2, 0xdead_0000) else {
        panic!()
    };
    assert_eq!(
        (e.vector, e.error_code, e.detail),
        (14, Some(2), Some(0xdead_0000))
    );
    assert!(
        !c.vmcb().control().event_injection().valid(),
        "EVENTINJ cleared after the exit"
    );
    let ExitKind::Exception(e) = exit(&mut c, ExitCode::EXCP_UD, 0, 0) else {
        panic!()
    };
    assert_eq!(e.error_code, None);
    // Decode assists: MOV CR4, RBX (bit 63, GPR 3).
    let ExitKind::CrAccess(cr) = exit(&mut c, ExitCode::CR4_WRITE, (1 << 63) | 3, 0) else {
        panic!()
    };
    assert_eq!((cr.cr, cr.kind), (4, CrAccessKind::Write { gpr: Some(3) }));
    // And INVLPG's EXITINFO1 is the address.
    assert_eq!(
        exit(&mut c, ExitCode::INVLPG, 0xffff_8000_0000_1000, 0),
        ExitKind::Invlpg {
            linear_address: 0xffff_8000_0000_1000
        }
    );
    assert_eq!(
        exit(&mut c, ExitCode::VMLOAD, 0, 0),
        ExitKind::VirtualizationInstruction
    );
    assert!(c.handle_default(host_cpuid).unwrap());
    assert_eq!(c.prepare_entry().unwrap(), Entry::Run);
    assert_eq!(
        c.vmcb().control().event_injection(),
        EventInjection::exception(6, None)
    );
    assert_eq!(exit(&mut c, ExitCode::SHUTDOWN, 0, 0), ExitKind::Shutdown);
    assert_eq!(exit(&mut c, ExitCode::INIT, 0, 0), ExitKind::Init);
    assert_eq!(
        exit(&mut c, ExitCode::INTR, 0, 0),
        ExitKind::ExternalInterrupt
    );
    assert_eq!(
        exit(&mut c, ExitCode::NMI, 0, 0),
        ExitKind::ExternalInterrupt
    );
    assert_eq!(exit(&mut c, ExitCode::PAUSE, 0, 0), ExitKind::Other);
    // A malformed IOIO (no size bit) is data, not a panic.
    assert_eq!(
        exit(&mut c, ExitCode::IOIO, 0x0060_0001, 0),
        ExitKind::Other
    );
    c.regs.rcx = 0;
    c.regs.rax = 7;
    c.regs.rdx = 0;
    assert_eq!(
        exit(&mut c, ExitCode::XSETBV, 0, 0),
        ExitKind::Xsetbv { xcr: 0, value: 7 }
    );
    c.xcr0_supported = 7;
    c.vmcb_mut().set_next_rip(0); // no nRIP on this model: the fixed length (3)
    let rip = c.vmcb().save().rip();
    assert!(c.handle_default(host_cpuid).unwrap());
    assert_eq!((c.xcr0, c.vmcb().save().rip()), (7, rip + 3));
}

#[test]
fn interrupt_waits_for_the_virtual_interrupt_window() {
    let mut c = core(NP | NRIP);
    c.vmcb_mut().set_rflags(0x2);
    exit(&mut c, ExitCode::HLT, 0, 0);
    c.inject(Event::Interrupt { vector: 0x30 });
    assert_eq!(c.prepare_entry().unwrap(), Entry::Run);
    let v = c.vmcb().control();
    assert!(v.virtual_interrupt().v_irq() && v.virtual_interrupt().v_ign_tpr());
    assert!(v.intercept_misc1().contains(MiscIntercepts1::VINTR));
    assert!(!v.event_injection().valid());
    c.vmcb_mut().set_rflags(0x202);
    assert_eq!(
        exit(&mut c, ExitCode::VINTR, 0, 0),
        ExitKind::InterruptWindow
    );
    assert!(c.handle_default(host_cpuid).unwrap());
    assert_eq!(c.prepare_entry().unwrap(), Entry::Run);
    let v = c.vmcb().control();
    assert_eq!(v.event_injection(), EventInjection::interrupt(0x30));
    assert!(!v.virtual_interrupt().v_irq());
    assert!(!v.intercept_misc1().contains(MiscIntercepts1::VINTR));
    // An interrupt shadow also holds it back, and skipping ends the shadow.
    exit(&mut c, ExitCode::HLT, 0, 0);
    c.vmcb_mut()
        .set_interrupt_state(InterruptState::INTERRUPT_SHADOW);
    c.inject(Event::Interrupt { vector: 0x31 });
    c.vmcb_mut().set_next_rip(0x4000);
    c.skip_instruction().unwrap();
    assert!(c.vmcb().control().interrupt_state().is_empty());
    assert_eq!(c.prepare_entry().unwrap(), Entry::Run);
    assert_eq!(
        c.vmcb().control().event_injection(),
        EventInjection::interrupt(0x31)
    );
}

#[test]
fn exceptions_carry_error_codes_and_real_mode_drops_them() {
    let mut c = core(NP | NRIP);
    exit(&mut c, ExitCode::HLT, 0, 0);
    c.inject(Event::Exception {
        vector: 14,
        error_code: Some(0x6),
    });
    assert_eq!(c.prepare_entry().unwrap(), Entry::Run);
    assert_eq!(
        c.vmcb().control().event_injection(),
        EventInjection::exception(14, Some(6))
    );
    let mut r = core_with::<NoMemory>(NP | NRIP, &GuestState::real_mode(0, 0x7c00, 0x7000));
    exit(&mut r, ExitCode::HLT, 0, 0);
    r.inject(Event::GP0);
    assert_eq!(r.prepare_entry().unwrap(), Entry::Run);
    assert_eq!(
        r.vmcb().control().event_injection(),
        EventInjection::exception(13, None)
    );
}

#[test]
fn exitintinfo_is_reinjected_first_and_the_rest_waits() {
    let mut c = core(NP | NRIP);
    c.vmcb_mut()
        .set_exit_int_info(EventInjection::exception(14, Some(6)));
    exit(&mut c, ExitCode::NPF, 0x1_0000_0006, 0x5000);
    c.inject(Event::Nmi);
    assert_eq!(c.prepare_entry().unwrap(), Entry::Run);
    assert_eq!(
        c.vmcb().control().event_injection(),
        EventInjection::exception(14, Some(6))
    );
    assert!(
        c.vmcb().control().virtual_interrupt().v_irq(),
        "a window for the NMI"
    );
    // Next exit (nothing interrupted): the NMI goes in, and IRET is intercepted.
    c.vmcb_mut().set_exit_int_info(EventInjection::NONE);
    assert_eq!(
        exit(&mut c, ExitCode::VINTR, 0, 0),
        ExitKind::InterruptWindow
    );
    assert_eq!(c.prepare_entry().unwrap(), Entry::Run);
    assert_eq!(c.vmcb().control().event_injection(), EventInjection::nmi());
    assert!(
        c.vmcb()
            .control()
            .intercept_misc1()
            .contains(MiscIntercepts1::IRET)
    );
    // A second NMI waits for the guest's IRET.
    exit(&mut c, ExitCode::HLT, 0, 0);
    c.inject(Event::Nmi);
    assert_eq!(c.prepare_entry().unwrap(), Entry::Run);
    assert!(!c.vmcb().control().event_injection().valid());
    let iret_rip = c.vmcb().save().rip();
    assert_eq!(exit(&mut c, ExitCode::IRET, 0, 0), ExitKind::NmiWindow);
    assert!(
        !c.vmcb()
            .control()
            .intercept_misc1()
            .contains(MiscIntercepts1::IRET)
    );
    // Not before the IRET retires: a window first, the NMI at the next exit past the IRET.
    assert!(c.handle_default(host_cpuid).unwrap());
    assert_eq!(c.prepare_entry().unwrap(), Entry::Run);
    assert!(!c.vmcb().control().event_injection().valid());
    assert!(c.vmcb().control().virtual_interrupt().v_irq());
    c.vmcb_mut().set_rip(iret_rip + 1);
    assert_eq!(
        exit(&mut c, ExitCode::VINTR, 0, 0),
        ExitKind::InterruptWindow
    );
    assert_eq!(c.prepare_entry().unwrap(), Entry::Run);
    assert_eq!(c.vmcb().control().event_injection(), EventInjection::nmi());
}

/// The share of VMRUNs that re-enter with every VMCB area clean, for a loop of common exits
/// handled the usual way (the figure the e2e summary reports). The clean areas per exit kind:
/// `cargo bench -p hvkit-vcpu --bench vmcs_traffic`.
#[test]
fn svm_clean_bits() {
    let mut c = core(NP);
    let rounds: [(ExitCode, u64, u64); 5] = [
        (ExitCode::CPUID, 0, 0),
        (ExitCode::IOIO, 0x03f8_0010, 0x9000),
        (ExitCode::MSR, 0, 0),
        (ExitCode::VMMCALL, 0, 0),
        (ExitCode::HLT, 0, 0),
    ];
    for (code, info1, info2) in rounds {
        c.regs.rax = 0;
        c.regs.rcx = 0x10;
        exit(&mut c, code, info1, info2);
        match code {
            ExitCode::MSR => c.complete_msr(5).unwrap(),
            ExitCode::IOIO => c.complete_io(0).unwrap(),
            ExitCode::HLT => c.skip_instruction().unwrap(),
            _ => assert!(c.handle_default(host_cpuid).unwrap()),
        }
        assert_eq!(c.prepare_entry().unwrap(), Entry::Run);
        assert_eq!(c.vmcb().clean_bits(), CleanBits::all(), "{code:?}");
    }
    // What a handler changes is reloaded, and only that: CR4 dirties CRX, an interrupt window
    // TPR and the intercepts, the exception bitmap the intercepts.
    exit(&mut c, ExitCode::HLT, 0, 0);
    c.set_cr4(0x20).unwrap();
    assert_eq!(c.prepare_entry().unwrap(), Entry::Run);
    assert_eq!(c.clean_stats().last_dirty, CleanBits::CRX);
    exit(&mut c, ExitCode::HLT, 0, 0);
    c.vmcb_mut().set_rflags(0x2);
    c.inject(Event::Interrupt { vector: 0x20 });
    assert_eq!(c.prepare_entry().unwrap(), Entry::Run);
    assert_eq!(
        c.clean_stats().last_dirty,
        CleanBits::TPR | CleanBits::INTERCEPTS
    );
    exit(&mut c, ExitCode::HLT, 0, 0);
    c.set_exception_bitmap(1 << 14);
    c.set_exception_bitmap(1 << 14);
    c.vmcb_mut().set_rflags(0x202);
    assert_eq!(c.prepare_entry().unwrap(), Entry::Run);
    assert_eq!(
        c.clean_stats().last_dirty,
        CleanBits::TPR | CleanBits::INTERCEPTS,
        "the injection also closed the window"
    );
    let s = c.clean_stats();
    println!(
        "SVM clean re-entries: {} of {} ({} per mille)",
        s.clean_reentries,
        s.reentries,
        s.clean_per_mille()
    );
    assert_eq!((s.reentries, s.clean_reentries), (8, 5));
    assert_eq!(s.clean_per_mille(), 625);
}

#[test]
fn efer_writes_keep_svme_and_reads_hide_it() {
    let mut c = core(NP);
    c.vmcb_mut().set_efer(0x1500);
    c.regs.rcx = 0xc000_0080;
    c.regs.rax = 0x100;
    c.regs.rdx = 0;
    exit(&mut c, ExitCode::MSR, 1, 0);
    assert!(c.handle_default(host_cpuid).unwrap());
    assert_eq!(c.vmcb().save().efer(), 0x1500);
    // Turning SVM on is #GP, as on a processor without SVM (what the guest's CPUID says).
    c.regs.rax = 0x1500;
    exit(&mut c, ExitCode::MSR, 1, 0);
    assert!(c.handle_default(host_cpuid).unwrap());
    assert_eq!(c.prepare_entry().unwrap(), Entry::Run);
    assert_eq!(
        c.vmcb().control().event_injection(),
        EventInjection::exception(13, Some(0))
    );
    c.regs.rcx = 0xc000_0080;
    assert_eq!(c.efer().unwrap(), 0x500);
    exit(&mut c, ExitCode::MSR, 0, 0);
    assert!(c.handle_default(host_cpuid).unwrap());
    assert_eq!((c.regs.rax, c.regs.rdx), (0x500, 0));
    c.regs.rcx = 0xc000_0080;
    c.regs.rax = 1 << 20;
    exit(&mut c, ExitCode::MSR, 1, 0);
    assert!(c.handle_default(host_cpuid).unwrap());
    assert_eq!(c.prepare_entry().unwrap(), Entry::Run);
    assert_eq!(
        c.vmcb().control().event_injection(),
        EventInjection::exception(13, Some(0))
    );
}

#[test]
fn cr_masks_intercept_writes_and_the_default_applies_them() {
    let mut c = core(NP | DECODE_ASSISTS | NRIP);
    c.set_cr_masks(1 << 16, 0).unwrap();
    assert_eq!(c.vmcb().control().intercept_cr(), CrIntercepts::CR0_WRITE);
    // MOV CR0, RSP (GPR 4 is RSP, from the VMCB) turning paging off in long mode: LMA clears.
    let cr0 = c.vmcb().save().cr0() & !(1 << 31);
    c.vmcb_mut().set_rsp(cr0);
    exit(&mut c, ExitCode::CR0_WRITE, (1 << 63) | 4, 0);
    c.vmcb_mut().set_next_rip(0x1003);
    assert!(c.handle_default(host_cpuid).unwrap());
    assert_eq!(c.vmcb().save().cr0(), cr0);
    assert_eq!(c.vmcb().save().efer() & crate::state::EFER_LMA, 0);
    assert_eq!(c.vmcb().save().rip(), 0x1003);
    // PG without PE is #GP.
    c.regs.rbx = 1 << 31;
    exit(&mut c, ExitCode::CR0_WRITE, (1 << 63) | 3, 0);
    assert!(c.handle_default(host_cpuid).unwrap());
    assert_eq!(c.prepare_entry().unwrap(), Entry::Run);
    assert_eq!(
        c.vmcb().control().event_injection(),
        EventInjection::exception(13, Some(0))
    );
    c.set_cr_masks(0, 0).unwrap();
    assert!(c.vmcb().control().intercept_cr().is_empty());
}

#[test]
fn permission_maps_in_frames() {
    let p = HostPlatform::new(8);
    let iopm = Bitmap::<_, hvkit_svm::Iopm>::new(&p).unwrap();
    let mut msrpm = Bitmap::<_, hvkit_svm::Msrpm>::new(&p).unwrap();
    setup::init_msrpm(msrpm.get_mut());
    // A word or dword at FFFFh reaches the bits past the port space: they intercept.
    assert_eq!(iopm.get().access_intercepted(0xffff, 2), Ok(true));
    assert!(!iopm.get().is_intercepted(0xffff));
    let m = msrpm.get();
    for msr in [setup::MSR_VM_CR, setup::MSR_VM_HSAVE_PA, 0xc000_0080] {
        assert!(
            m.is_intercepted(msr, false) && m.is_intercepted(msr, true),
            "{msr:#x}"
        );
    }
    assert!(!m.is_intercepted(0xc000_0081, false), "STAR passes through");
    let set: u32 = m.as_bytes().iter().map(|b| b.count_ones()).sum();
    assert_eq!(set, 6);
}

/// Guest RAM, nested tables and guest page tables in a host-test platform, for decoding tests:
/// the NPT maps the platform's whole range 1:1, so a frame's host address is its GPA.
struct Guest<'p> {
    platform: &'p HostPlatform,
    nested: Option<NestedPaging<'p, HostPlatform>>,
    table: Option<GuestTable<LongMode, PlatformFrames<'p, HostPlatform>>>,
    code: OwnedFrames<'p, HostPlatform>,
}

const FRAMES: usize = 64;
const CODE_VA: u64 = 0xffff_8000_0010_0000;

impl<'p> Guest<'p> {
    fn new(platform: &'p HostPlatform) -> Self {
        let base = HostPlatform::DEFAULT_BASE;
        let mut map = MemoryMap::new();
        map.add(Region {
            start: GuestPhysAddr::new_truncate(base),
            len: (FRAMES * 4096) as u64,
            kind: RegionKind::Ram {
                host: HostPhysAddr::new_truncate(base),
                memory_type: hvkit_paging::MemoryType::WRITE_BACK,
            },
        })
        .unwrap();
        let npt_caps = NptCapabilities {
            nested_paging: true,
            host_la57: false,
            pages_1g: false,
            phys_bits: 40,
        };
        let nested = NestedPaging::npt(platform, &map, &npt_caps).unwrap();
        let code = OwnedFrames::allocate(platform, 2).unwrap();
        let mut table =
            GuestTable::<LongMode, _>::new(PlatformFrames(platform), TableConfig::new(4)).unwrap();
        let attrs = X86Attrs::new(PageTableFlags::PRESENT | PageTableFlags::WRITABLE);
        table
            .map(
                GuestVirtAddr::new(CODE_VA),
                GuestPhysAddr::new_truncate(code.phys().as_u64()),
                0x2000,
                attrs,
            )
            .unwrap()
            .ignore();
        Self {
            platform,
            nested: Some(nested),
            table: Some(table),
            code,
        }
    }

    fn code_memory(&self) -> CodeMemory<PlatformMemory<'p, HostPlatform>> {
        let Some(NestedPaging::Npt { ncr3, .. }) = &self.nested else {
            unreachable!()
        };
        CodeMemory {
            memory: PlatformMemory(self.platform),
            nested: Nested::Npt {
                ncr3: *ncr3,
                levels: 4,
                nxe: true,
            },
        }
    }

    /// Writes `bytes` at code offset `at` (0..0x2000).
    fn put(&self, at: u64, bytes: &[u8]) {
        let mem = PlatformMemory(self.platform);
        for (i, &b) in bytes.iter().enumerate() {
            let addr = self.code.phys().as_u64() + at + i as u64;
            let word = HostPhysAddr::new_truncate(addr & !7);
            let mut w = mem.read_u64(word).unwrap().to_le_bytes();
            w[(addr & 7) as usize] = b;
            mem.write_u64(word, u64::from_le_bytes(w)).unwrap();
        }
    }

    /// A long-mode core whose RIP is code offset `at`.
    fn core(&self, edx: u32, at: u64) -> TestCore<PlatformMemory<'p, HostPlatform>> {
        let root = self.table.as_ref().unwrap().root().as_u64();
        let state = GuestState::long_mode_flat(root, CODE_VA + at, 0x8000);
        let mut c = core_with(edx, &state);
        c.set_code_memory(self.code_memory());
        c
    }
}

impl Drop for Guest<'_> {
    fn drop(&mut self) {
        if let Some(t) = self.table.take() {
            t.free_all();
        }
        if let Some(n) = self.nested.take() {
            n.free();
        }
    }
}

#[test]
fn without_nrip_the_instruction_is_decoded_through_the_2d_walker() {
    let p = HostPlatform::new(FRAMES);
    let g = Guest::new(&p);
    // CPUID with a redundant CS prefix, straddling the two code pages: 3 bytes, not 2.
    g.put(0xffe, &[0x2e, 0x0f, 0xa2]);
    let mut c = g.core(NP, 0xffe);
    c.regs.rax = 0;
    assert_eq!(
        exit(&mut c, ExitCode::CPUID, 0, 0),
        ExitKind::Cpuid {
            leaf: 0,
            subleaf: 0
        }
    );
    c.complete_cpuid(host_cpuid).unwrap();
    assert_eq!(c.vmcb().save().rip(), CODE_VA + 0x1001);
    assert_eq!(c.prepare_entry().unwrap(), Entry::Run);
    assert_eq!(c.vmcb().clean_bits(), CleanBits::all());

    // MOV CR4, R9 without decode assists: the decoder names the GPR; the default applies it.
    g.put(0x10, &[0x41, 0x0f, 0x22, 0xe1]);
    c.vmcb_mut().set_rip(CODE_VA + 0x10);
    c.regs.r9 = 0x6a0;
    let ExitKind::CrAccess(cr) = exit(&mut c, ExitCode::CR4_WRITE, 0, 0) else {
        panic!()
    };
    assert_eq!((cr.cr, cr.kind), (4, CrAccessKind::Write { gpr: Some(9) }));
    assert!(c.handle_default(host_cpuid).unwrap());
    assert_eq!(c.vmcb().save().cr4(), 0x6a0);
    assert_eq!(c.vmcb().save().rip(), CODE_VA + 0x14);
    assert_eq!(c.prepare_entry().unwrap(), Entry::Run);
    assert_eq!(c.clean_stats().last_dirty, CleanBits::CRX);

    // INVLPG [RAX + RCX*4 + 10h] without decode assists: the address from the operand.
    g.put(0x20, &[0x0f, 0x01, 0x7c, 0x88, 0x10]);
    c.vmcb_mut().set_rip(CODE_VA + 0x20);
    c.regs.rax = 0x40_0000;
    c.regs.rcx = 0x100;
    assert_eq!(
        exit(&mut c, ExitCode::INVLPG, 0, 0),
        ExitKind::Invlpg {
            linear_address: 0x40_0410
        }
    );
    c.skip_instruction().unwrap();
    assert_eq!(c.vmcb().save().rip(), CODE_VA + 0x25);

    // Code the walker cannot reach: the fixed length still skips CPUID, MOV CR is unknown.
    c.vmcb_mut().set_rip(0x7000_0000);
    exit(&mut c, ExitCode::CPUID, 0, 0);
    c.skip_instruction().unwrap();
    assert_eq!(c.vmcb().save().rip(), 0x7000_0002);
    c.vmcb_mut().set_rip(0x7000_0000);
    let ExitKind::CrAccess(cr) = exit(&mut c, ExitCode::CR4_WRITE, 0, 0) else {
        panic!()
    };
    assert_eq!(cr.kind, CrAccessKind::Write { gpr: None });
    assert!(!c.handle_default(host_cpuid).unwrap(), "left to the caller");
    assert_eq!(
        c.skip_instruction(),
        Err(VcpuError::Unsupported(Unsupported::InstructionLength))
    );
}

#[test]
fn a_protected_mode_guest_is_decoded_with_its_code_segment() {
    let p = HostPlatform::new(FRAMES);
    let g = Guest::new(&p);
    // 32-bit code without paging: linear = CS.base + EIP = GPA.
    let gpa = g.code.phys().as_u64();
    g.put(0x40, &[0x0f, 0x22, 0xd8]); // mov cr3, eax
    let mut state = GuestState::protected_mode_flat(0x40, 0x9000);
    state.cs.base = gpa;
    let mut c = core_with::<PlatformMemory<'_, HostPlatform>>(NP, &state);
    c.set_code_memory(g.code_memory());
    c.regs.rax = 0x5000;
    let ExitKind::CrAccess(cr) = exit(&mut c, ExitCode::CR3_WRITE, 0, 0) else {
        panic!()
    };
    assert_eq!((cr.cr, cr.kind), (3, CrAccessKind::Write { gpr: Some(0) }));
    assert!(c.handle_default(host_cpuid).unwrap());
    assert_eq!(
        (c.vmcb().save().cr3(), c.vmcb().save().rip()),
        (0x5000, 0x43)
    );
}

#[test]
fn intercept_configuration_dirties_only_the_intercepts() {
    let mut c = core(NP | NRIP);
    exit(&mut c, ExitCode::HLT, 0, 0);
    c.set_tsc_offset(-1000);
    assert_eq!(c.vmcb().control().tsc_offset(), (-1000i64) as u64);
    assert!(c.intercept_cr(3, true, false));
    assert!(!c.intercept_cr(16, true, true));
    c.set_exception_bitmap(1 << 6);
    assert_eq!(c.prepare_entry().unwrap(), Entry::Run);
    assert_eq!(c.clean_stats().last_dirty, CleanBits::INTERCEPTS);
    let v = c.vmcb().control();
    assert_eq!(v.intercept_cr(), CrIntercepts::CR3_READ);
    assert_eq!(v.intercept_exceptions().bits(), 1 << 6);
    // The same values again change nothing.
    exit(&mut c, ExitCode::HLT, 0, 0);
    c.set_tsc_offset(-1000);
    assert!(c.intercept_cr(3, true, false));
    c.set_exception_bitmap(1 << 6);
    c.set_cr_masks(0, 0).unwrap();
    assert_eq!(c.prepare_entry().unwrap(), Entry::Run);
    assert_eq!(c.clean_stats().last_dirty, CleanBits::empty());
    // MOV RAX, CR3 with decode assists... here without: read with an unknown GPR is the
    // caller's.
    let ExitKind::CrAccess(cr) = exit(&mut c, ExitCode::CR3_READ, 0, 0) else {
        panic!()
    };
    assert_eq!(cr.kind, CrAccessKind::Read { gpr: None });
}

#[test]
fn a_blue_pill_state_passes_the_checks() {
    // What `capture::current_state` reads on a 64-bit kernel: EFER with SCE/LME/LMA/NXE (and
    // SVME, already on), CR4 with PGE/OSFXSR/OSXSAVE/FSGSBASE, a 64-bit TSS, DPL-0 flat data.
    let mut s = GuestState::long_mode_flat(0x10_0000, 0xffff_ffff_8100_0000, 0xffff_c900_0000_0000);
    s.efer |= 1 | crate::state::EFER_SVME;
    s.cr4 |= (1 << 7) | (1 << 16) | crate::state::CR4_OSXSAVE;
    s.tr.base = 0xffff_fe00_0000_3000;
    s.gdtr = crate::state::DescriptorTable {
        base: 0xffff_fe00_0000_1000,
        limit: 0x7f,
    };
    let mut vmcb = Box::new(Vmcb::new());
    write_vmcb(&mut vmcb, &layout(), &s);
    assert!(hvkit_svm::check_vmcb(&vmcb, &caps(NP)).is_empty());
    assert_eq!(vmcb.save().tr().base, 0xffff_fe00_0000_3000);
    assert_eq!(vmcb.save().efer(), s.efer);
    let mut c: TestCore = SvmCore::new(vmcb, caps(NP));
    assert_eq!(c.efer().unwrap(), s.efer & !crate::state::EFER_SVME);
}

#[test]
fn xsave_area_size_follows_the_guest_xcr0_not_the_host_one() {
    // Host: x87+SSE (576 bytes) ends at 576, AVX (component 2) at 576 + 256.
    let host = |leaf: u32, subleaf: u32| match (leaf, subleaf) {
        (0xd, 0) => CpuIdResult {
            eax: 7,
            ebx: 576,
            ecx: 832,
            edx: 0,
        },
        (0xd, 2) => CpuIdResult {
            eax: 256,
            ebx: 576,
            ecx: 0,
            edx: 0,
        },
        _ => host_cpuid(leaf, subleaf),
    };
    for (xcr0, size) in [(3, 576), (7, 832)] {
        let mut c = core(NP);
        c.xcr0 = xcr0;
        c.regs.rax = 0xd;
        c.regs.rcx = 0;
        assert_eq!(
            exit(&mut c, ExitCode::CPUID, 0, 0),
            ExitKind::Cpuid {
                leaf: 0xd,
                subleaf: 0
            }
        );
        c.complete_cpuid(host).unwrap();
        assert_eq!(c.regs.rbx, size, "guest XCR0 {xcr0:#x}");
    }
}
