//! Host tests of the SVM exit path on a boxed VMCB, including clean bits on re-entry.

use std::boxed::Box;
use std::println;

use hvkit_svm::intercept::MiscIntercepts1;
use hvkit_svm::vmcb::{CleanBits, InterruptState};
use hvkit_svm::{EventInjection, ExitCode, Vmcb};
use raw_cpuid::CpuIdResult;

use super::*;
use crate::error::{Unsupported, VcpuError};
use crate::event::Event;
use crate::exit::{CrAccessKind, EntryFailure, ExitKind, IoDirection};
use crate::hypercall;

fn core(nrip: bool) -> SvmCore<Box<Vmcb>> {
    let mut vmcb = Box::new(Vmcb::new());
    vmcb.set_rip(0x1000);
    vmcb.set_cr0(0x8000_0011);
    vmcb.set_rflags(0x202);
    let mut core = SvmCore::new(vmcb, nrip, false);
    // The first entry marks everything dirty.
    core.prepare_entry();
    core
}

/// Fakes a #VMEXIT: the guest's RAX (from `core.regs`, as the guest left it) and the exit
/// fields in the VMCB, then the run loop's `after_exit`.
fn exit(core: &mut SvmCore<Box<Vmcb>>, code: ExitCode, info1: u64, info2: u64) -> ExitKind {
    let rax = core.regs.rax;
    let vmcb = core.vmcb_mut();
    vmcb.set_rax(rax);
    vmcb.set_exit_code(code);
    vmcb.set_exit_info1(info1);
    vmcb.set_exit_info2(info2);
    vmcb.set_next_rip(0);
    core.after_exit().kind
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
fn cpuid_without_nrip_uses_the_fixed_length_and_stays_clean() {
    let mut c = core(false);
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
    c.prepare_entry();
    assert_eq!(c.vmcb().save().rip(), 0x1002);
    assert_eq!(c.vmcb().save().rax(), u64::from(hypercall::ABI_VERSION));
    assert_eq!(c.vmcb().clean_bits(), CleanBits::all());
    assert_eq!(c.clean_stats().all_clean, 1);
}

#[test]
fn nrip_wins_and_ioio_uses_exitinfo2() {
    let mut c = core(true);
    c.vmcb_mut().set_exit_code(ExitCode::HLT);
    c.vmcb_mut().set_next_rip(0x1005);
    c.after_exit();
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
}

#[test]
fn unknown_lengths_are_typed_errors() {
    let mut c = core(false);
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
    let mut c = core(false);
    // Measured under QEMU TCG: a read of an unmapped GPA, EXITINFO1 = 1_0000_0004.
    let ExitKind::NestedPageFault(f) = exit(&mut c, ExitCode::NPF, 0x1_0000_0004, 0xc000_0000)
    else {
        panic!()
    };
    assert_eq!(f.gpa.as_u64(), 0xc000_0000);
    assert!(f.access.read && !f.access.write && !f.access.present && !f.during_walk);
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
    c.prepare_entry();
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
    assert_eq!(
        c.vmcb().control().event_injection(),
        EventInjection::from_bits(0),
        "cleared after the exit"
    );
    let ExitKind::CrAccess(cr) = exit(&mut c, ExitCode::CR4_WRITE, 0, 0) else {
        panic!()
    };
    assert_eq!((cr.cr, cr.kind), (4, CrAccessKind::Write { gpr: None }));
    assert_eq!(
        exit(&mut c, ExitCode(0xffff_ffff), 0, 0),
        ExitKind::EntryFailure(EntryFailure::VmrunFailed(ExitCode::INVALID))
    );
    assert_eq!(
        exit(&mut c, ExitCode::VMRUN, 0, 0),
        ExitKind::VirtualizationInstruction
    );
    assert!(c.handle_default(host_cpuid).unwrap());
    c.prepare_entry();
    assert_eq!(
        c.vmcb().control().event_injection(),
        EventInjection::exception(6, None)
    );
    assert_eq!(exit(&mut c, ExitCode::SHUTDOWN, 0, 0), ExitKind::Shutdown);
    assert_eq!(exit(&mut c, ExitCode::PAUSE, 0, 0), ExitKind::Other);
}

#[test]
fn interrupt_waits_for_the_virtual_interrupt_window() {
    let mut c = core(true);
    c.vmcb_mut().set_rflags(0x2);
    exit(&mut c, ExitCode::HLT, 0, 0);
    c.inject(Event::Interrupt { vector: 0x30 });
    c.prepare_entry();
    let v = c.vmcb().control();
    assert!(v.virtual_interrupt().v_irq());
    assert!(v.intercept_misc1().contains(MiscIntercepts1::VINTR));
    assert!(!v.event_injection().valid());
    c.vmcb_mut().set_rflags(0x202);
    assert_eq!(
        exit(&mut c, ExitCode::VINTR, 0, 0),
        ExitKind::InterruptWindow
    );
    c.prepare_entry();
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
    c.prepare_entry();
    assert_eq!(
        c.vmcb().control().event_injection(),
        EventInjection::interrupt(0x31)
    );
}

#[test]
fn exitintinfo_is_reinjected_first() {
    let mut c = core(true);
    c.vmcb_mut()
        .set_exit_int_info(EventInjection::exception(14, Some(6)));
    exit(&mut c, ExitCode::NPF, 0x1_0000_0006, 0x5000);
    c.inject(Event::Nmi);
    c.prepare_entry();
    assert_eq!(
        c.vmcb().control().event_injection(),
        EventInjection::exception(14, Some(6))
    );
}

/// The share of VMRUNs that re-enter with every VMCB area clean, for a loop of common exits
/// handled the usual way (the figure the e2e summary reports). Run with
/// `cargo test -p hvkit-vcpu svm_clean_bits -- --nocapture`.
#[test]
fn svm_clean_bits() {
    let mut c = core(false);
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
        c.prepare_entry();
        assert_eq!(c.vmcb().clean_bits(), CleanBits::all(), "{code:?}");
    }
    // A CR4 change dirties CRX only.
    exit(&mut c, ExitCode::HLT, 0, 0);
    c.set_cr4(0x20);
    c.prepare_entry();
    assert_eq!(c.vmcb().clean_bits(), CleanBits::all() - CleanBits::CRX);
    let s = c.clean_stats();
    println!(
        "SVM clean re-entries: {} of {} VMRUNs ({}%)",
        s.all_clean,
        s.entries,
        s.all_clean * 100 / s.entries
    );
    assert_eq!((s.entries, s.all_clean), (7, 5));
}

#[test]
fn efer_writes_keep_svme() {
    let mut c = core(false);
    c.vmcb_mut().set_efer(0x1500);
    c.regs.rcx = 0xc000_0080;
    c.regs.rax = 0x100;
    c.regs.rdx = 0;
    exit(&mut c, ExitCode::MSR, 1, 0);
    assert!(c.handle_default(host_cpuid).unwrap());
    assert_eq!(c.vmcb().save().efer(), 0x1500);
    assert_eq!(c.efer().unwrap(), 0x500);
    c.regs.rax = 1 << 20;
    exit(&mut c, ExitCode::MSR, 1, 0);
    assert!(c.handle_default(host_cpuid).unwrap());
    c.prepare_entry();
    assert_eq!(
        c.vmcb().control().event_injection(),
        EventInjection::exception(13, Some(0))
    );
}
