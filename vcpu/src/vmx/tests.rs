//! Host tests of the VMX exit path on a software VMCS, including the VMCS traffic figures.

use std::println;

use hvkit_vmx::capabilities::VmxCapabilities;
use hvkit_vmx::controls::PrimaryControls;
use hvkit_vmx::exit::Interruptibility;
use hvkit_vmx::fields::{control, exit_info, guest};
use hvkit_vmx::msr::*;
use hvkit_vmx::vmcs::{Counting, SoftVmcs, VmcsCounts, VmcsRead, VmcsWrite};
use raw_cpuid::CpuIdResult;

use super::*;
use crate::error::Unsupported;
use crate::event::Event;
use crate::exit::{CrAccessKind, ExitKind, IoDirection};
use crate::hypercall;
use crate::state::GuestState;

/// A Skylake-class capability snapshot (the values of hvkit-vmx's docs plus CR fixed bits and
/// EPT/VPID capabilities as Bochs' Skylake-X model reports them).
fn caps() -> VmxCapabilities {
    let msrs = |msr: u32| match msr {
        IA32_VMX_BASIC => 0x00da_0400_0000_0004,
        IA32_VMX_PINBASED_CTLS | IA32_VMX_TRUE_PINBASED_CTLS => 0x0000_007f_0000_0016,
        IA32_VMX_PROCBASED_CTLS => 0xfff9_fffe_0401_e172,
        IA32_VMX_TRUE_PROCBASED_CTLS => 0xfff9_fffe_0400_6172,
        IA32_VMX_PROCBASED_CTLS2 => 0x0053_7dff_0000_0000,
        IA32_VMX_EXIT_CTLS | IA32_VMX_TRUE_EXIT_CTLS => 0x01ff_ffff_0003_6dfb,
        IA32_VMX_ENTRY_CTLS | IA32_VMX_TRUE_ENTRY_CTLS => 0x0003_ffff_0000_11fb,
        IA32_VMX_CR0_FIXED0 => 0x8000_0021,
        IA32_VMX_CR0_FIXED1 => 0xffff_ffff,
        IA32_VMX_CR4_FIXED0 => 0x2000,
        IA32_VMX_CR4_FIXED1 => 0x0037_67ff,
        IA32_VMX_EPT_VPID_CAP => 0x0f01_0673_4141,
        _ => 0,
    };
    VmxCapabilities::read(&msrs)
}

fn host_state() -> HostState {
    HostState {
        cr0: 0x8005_0033,
        cr3: 0x1000,
        cr4: 0x2620,
        cs: 0x08,
        ss: 0x10,
        tr: 0x18,
        efer: 0xd01,
        pat: crate::state::PAT_RESET,
        ..HostState::default()
    }
}

fn core_for(state: &GuestState) -> VmxCore<Counting<SoftVmcs>> {
    let caps = caps();
    let request = controls_request(&caps, state, VmxOptions::default()).unwrap();
    let controls = caps.adjust(&request).unwrap();
    let cr = CrPolicy {
        cr0_fixed: caps.cr0_fixed,
        cr4_fixed: caps.cr4_fixed,
        unrestricted: true,
        ..CrPolicy::default()
    };
    let layout = VmcsLayout {
        controls,
        cr,
        io_bitmaps: 0x10_0000,
        msr_bitmap: 0x10_2000,
        eptp: 0x20_001e,
        vpid: 1,
        exception_bitmap: 0,
        tsc_offset: 0,
    };
    let mut soft = SoftVmcs::new();
    write_vmcs(&mut soft, &layout, state, &host_state()).unwrap();
    VmxCore::new(Counting::new(soft), controls.primary, false, cr)
}

fn long_mode_core() -> VmxCore<Counting<SoftVmcs>> {
    core_for(&GuestState::long_mode_flat(0x1000, 0x10_0000, 0x8000))
}

/// Fakes a VM exit: the exit fields, then the same steps as the run loop.
fn exit(core: &mut VmxCore<Counting<SoftVmcs>>, reason: u32, fields: &[(FieldEncodingOf, u64)]) {
    let soft = core.vmcs_mut().inner_mut();
    soft.set_exit_info(exit_info::EXIT_REASON, reason);
    for &(field, value) in fields {
        match field {
            FieldEncodingOf::Qualification => {
                soft.set_exit_info(exit_info::EXIT_QUALIFICATION, value)
            }
            FieldEncodingOf::Length => {
                soft.set_exit_info(exit_info::VM_EXIT_INSTRUCTION_LENGTH, value as u32);
            }
            FieldEncodingOf::Gpa => soft.set_exit_info(exit_info::GUEST_PHYSICAL_ADDRESS, value),
            FieldEncodingOf::Idt => soft.set_exit_info(exit_info::IDT_VECTORING_INFO, value as u32),
            FieldEncodingOf::IdtError => {
                soft.set_exit_info(exit_info::IDT_VECTORING_ERROR_CODE, value as u32);
            }
            FieldEncodingOf::Interruption => {
                soft.set_exit_info(exit_info::VM_EXIT_INTERRUPTION_INFO, value as u32);
            }
            FieldEncodingOf::InterruptionError => {
                soft.set_exit_info(exit_info::VM_EXIT_INTERRUPTION_ERROR_CODE, value as u32);
            }
        }
    }
    soft.set_exit_info(exit_info::IDT_VECTORING_INFO, 0);
    if let Some(&(_, v)) = fields.iter().find(|(f, _)| *f == FieldEncodingOf::Idt) {
        soft.set_exit_info(exit_info::IDT_VECTORING_INFO, v as u32);
    }
    core.forget_cached();
    core.vmcs().take_counts();
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FieldEncodingOf {
    Qualification,
    Length,
    Gpa,
    Idt,
    IdtError,
    Interruption,
    InterruptionError,
}
use FieldEncodingOf as F;

fn host_cpuid(leaf: u32, _subleaf: u32) -> CpuIdResult {
    CpuIdResult {
        eax: leaf + 1,
        ebx: 2,
        ecx: 3,
        edx: 4,
    }
}

#[test]
fn vmcs_written_from_long_mode_state() {
    let core = long_mode_core();
    let v = core.vmcs().inner();
    assert_eq!(v.read(guest::RIP).unwrap(), 0x10_0000);
    assert_eq!(v.read(guest::CS_ACCESS_RIGHTS).unwrap(), 0xa09b);
    assert_eq!(v.read(guest::VMCS_LINK_POINTER).unwrap(), u64::MAX);
    // CR4.VMXE is forced and hidden by the shadow.
    assert_ne!(v.read(guest::CR4).unwrap() & (1 << 13), 0);
    assert_eq!(v.read(control::CR4_READ_SHADOW).unwrap() & (1 << 13), 0);
    assert_ne!(v.read(control::CR4_GUEST_HOST_MASK).unwrap() & (1 << 13), 0);
    let entry = v.read(control::VM_ENTRY_CONTROLS).unwrap();
    assert_ne!(entry & (1 << 9), 0, "IA-32e mode guest");
    let secondary = v
        .read(control::SECONDARY_PROC_BASED_VM_EXEC_CONTROL)
        .unwrap();
    assert_ne!(secondary & (1 << 1), 0, "EPT");
    assert_ne!(secondary & (1 << 7), 0, "unrestricted guest");
}

#[test]
fn real_mode_guest_keeps_pe_and_pg_clear() {
    let core = core_for(&GuestState::real_mode(0, 0x7c00, 0x7000));
    let v = core.vmcs().inner();
    let cr0 = v.read(guest::CR0).unwrap();
    assert_eq!(cr0 & 0x8000_0001, 0);
    assert_ne!(cr0 & 0x20, 0, "NE forced");
    assert_eq!(v.read(control::VM_ENTRY_CONTROLS).unwrap() & (1 << 9), 0);
}

#[test]
fn unrestricted_guest_is_required_for_real_mode() {
    let mut caps = caps();
    if let Some(s) = caps.secondary.as_mut() {
        s.may_be_one &= !(1 << 7);
    }
    let state = GuestState::real_mode(0, 0, 0);
    assert_eq!(
        controls_request(&caps, &state, VmxOptions::default()),
        Err(Unsupported::NoUnrestrictedGuest)
    );
    caps.secondary = None;
    assert_eq!(
        controls_request(&caps, &state, VmxOptions::default()),
        Err(Unsupported::NoEpt)
    );
}

#[test]
fn cpuid_exit_round_trip_and_traffic() {
    let mut core = long_mode_core();
    core.regs.rax = 0;
    core.regs.rcx = 0;
    exit(&mut core, 10, &[(F::Length, 2)]);
    let e = core.decode_exit().unwrap();
    assert_eq!(
        e.kind,
        ExitKind::Cpuid {
            leaf: 0,
            subleaf: 0
        }
    );
    core.complete_cpuid(host_cpuid).unwrap();
    core.prepare_entry().unwrap();
    assert_eq!(core.regs.rax, 1);
    assert_eq!(core.vmcs().inner().read(guest::RIP).unwrap(), 0x10_0002);
    let counts = core.vmcs().take_counts();
    assert!(counts.reads <= 4 && counts.writes <= 1, "{counts:?}");
    // The hvkit leaf through the default handler.
    core.regs.rax = u64::from(hypercall::LEAF_SIGNATURE);
    exit(&mut core, 10, &[(F::Length, 2)]);
    core.decode_exit().unwrap();
    assert!(core.handle_default(host_cpuid).unwrap());
    assert_eq!(core.regs.rbx as u32, hypercall::signature_registers()[0]);
    assert_eq!(core.complete_cpuid(host_cpuid), Ok(()));
    assert_eq!(
        core.complete_hypercall(0),
        Err(crate::VcpuError::WrongExit("a hypercall"))
    );
}

#[test]
fn sti_shadow_is_cleared_when_rip_advances() {
    let mut core = long_mode_core();
    core.vmcs_mut()
        .inner_mut()
        .write(guest::INTERRUPTIBILITY_STATE, 1)
        .unwrap();
    exit(&mut core, 12, &[(F::Length, 1)]);
    assert_eq!(core.decode_exit().unwrap().kind, ExitKind::Hlt);
    core.skip_instruction().unwrap();
    core.prepare_entry().unwrap();
    let v = core.vmcs().inner();
    assert_eq!(v.read(guest::INTERRUPTIBILITY_STATE).unwrap(), 0);
    assert_eq!(v.read(guest::RIP).unwrap(), 0x10_0001);
}

#[test]
fn io_exits_decode_and_complete() {
    let mut core = long_mode_core();
    core.regs.rax = 0x1234_5678;
    // OUT DX, AL to 0x3f8 (size 0 = 1 byte, port operand DX).
    exit(
        &mut core,
        30,
        &[(F::Qualification, 0x03f8_0000), (F::Length, 1)],
    );
    let ExitKind::Io(io) = core.decode_exit().unwrap().kind else {
        panic!()
    };
    assert_eq!(
        (io.port, io.size, io.direction, io.data),
        (0x3f8, 1, IoDirection::Out, Some(0x78))
    );
    core.complete_io(0).unwrap();
    // IN AX, DX from 0x60 (size 1 = 2 bytes, direction bit 3 = in).
    exit(
        &mut core,
        30,
        &[(F::Qualification, 0x0060_0009), (F::Length, 1)],
    );
    let ExitKind::Io(io) = core.decode_exit().unwrap().kind else {
        panic!()
    };
    assert_eq!((io.size, io.direction, io.data), (2, IoDirection::In, None));
    core.complete_io(0xabcd).unwrap();
    assert_eq!(core.regs.rax, 0x1234_abcd);
    // REP OUTSB: string + rep.
    exit(
        &mut core,
        30,
        &[(F::Qualification, 0x03f8_0030), (F::Length, 2)],
    );
    let ExitKind::Io(io) = core.decode_exit().unwrap().kind else {
        panic!()
    };
    assert!(io.string && io.rep && io.data.is_none());
    assert!(core.complete_io(0).is_err());
}

#[test]
fn msr_hypercall_xsetbv_and_virtualization_instructions() {
    let mut core = long_mode_core();
    core.regs.rcx = 0xc000_0080;
    exit(&mut core, 31, &[(F::Length, 2)]);
    assert_eq!(
        core.decode_exit().unwrap().kind,
        ExitKind::MsrRead { msr: 0xc000_0080 }
    );
    core.complete_msr(0x1_0000_0d01).unwrap();
    assert_eq!((core.regs.rax, core.regs.rdx), (0xd01, 1));
    core.regs.rax = hypercall::PING;
    core.regs.rbx = 3;
    exit(&mut core, 18, &[(F::Length, 3)]);
    assert!(matches!(
        core.decode_exit().unwrap().kind,
        ExitKind::Hypercall(_)
    ));
    assert!(core.handle_default(host_cpuid).unwrap());
    assert_eq!(core.regs.rax, hypercall::PING_REPLY + 3);
    // XSETBV of x87|SSE with only x87 supported: #GP.
    core.regs.rcx = 0;
    core.regs.rax = 3;
    core.regs.rdx = 0;
    exit(&mut core, 55, &[(F::Length, 3)]);
    core.decode_exit().unwrap();
    assert!(core.handle_default(host_cpuid).unwrap());
    core.prepare_entry().unwrap();
    assert_eq!(
        core.vmcs()
            .inner()
            .read(control::VM_ENTRY_INTERRUPTION_INFO)
            .unwrap(),
        0x8000_0b0d
    );
    core.xcr0_supported = 7;
    exit(&mut core, 55, &[(F::Length, 3)]);
    core.decode_exit().unwrap();
    assert!(core.handle_default(host_cpuid).unwrap());
    assert_eq!(core.xcr0, 3);
    // VMXON in the guest: #UD.
    exit(&mut core, 27, &[(F::Qualification, 0), (F::Length, 4)]);
    assert_eq!(
        core.decode_exit().unwrap().kind,
        ExitKind::VirtualizationInstruction
    );
    assert!(core.handle_default(host_cpuid).unwrap());
    core.prepare_entry().unwrap();
    assert_eq!(
        core.vmcs()
            .inner()
            .read(control::VM_ENTRY_INTERRUPTION_INFO)
            .unwrap(),
        0x8000_0306
    );
}

#[test]
fn cr_writes_are_emulated_with_shadows() {
    let mut core = core_for(&GuestState::protected_mode_flat(0x1000, 0x2000));
    // MOV CR4, RBX with VMXE clear but PAE set: qualification CR 4, MOV to, GPR 3.
    core.regs.rbx = 0x20;
    exit(&mut core, 28, &[(F::Qualification, 0x304), (F::Length, 3)]);
    let ExitKind::CrAccess(access) = core.decode_exit().unwrap().kind else {
        panic!()
    };
    assert_eq!(
        (access.cr, access.kind),
        (4, CrAccessKind::Write { gpr: Some(3) })
    );
    assert!(core.handle_default(host_cpuid).unwrap());
    assert_eq!(core.cr4().unwrap(), 0x20);
    core.prepare_entry().unwrap();
    assert_eq!(core.vmcs().inner().read(guest::CR4).unwrap(), 0x2020);
    // A reserved CR4 bit: #GP, RIP unchanged.
    core.regs.rbx = 1 << 30;
    exit(&mut core, 28, &[(F::Qualification, 0x304), (F::Length, 3)]);
    core.decode_exit().unwrap();
    let rip = core.rip().unwrap();
    assert!(core.handle_default(host_cpuid).unwrap());
    assert_eq!(core.rip().unwrap(), rip);
}

#[test]
fn ept_violation_and_reinjection_of_interrupted_event() {
    let mut core = long_mode_core();
    // A write to 0xfee00000 during delivery of #PF (vector 14, hardware exception, error code).
    exit(
        &mut core,
        48,
        &[
            (F::Qualification, 0x182),
            (F::Gpa, 0xfee0_0000),
            (F::Idt, 0x8000_0b0e),
            (F::IdtError, 2),
        ],
    );
    core.vmcs_mut()
        .inner_mut()
        .set_exit_info(exit_info::GUEST_LINEAR_ADDRESS, 0xffff_8000_0000_0000);
    let ExitKind::NestedPageFault(f) = core.decode_exit().unwrap().kind else {
        panic!()
    };
    assert_eq!(f.gpa.as_u64(), 0xfee0_0000);
    assert!(f.access.write && !f.access.present);
    assert_eq!(f.linear_address, Some(0xffff_8000_0000_0000));
    core.prepare_entry().unwrap();
    let v = core.vmcs().inner();
    assert_eq!(
        v.read(control::VM_ENTRY_INTERRUPTION_INFO).unwrap(),
        0x8000_0b0e
    );
    assert_eq!(v.read(control::VM_ENTRY_EXCEPTION_ERROR_CODE).unwrap(), 2);
}

#[test]
fn interrupts_wait_for_a_window() {
    let mut core = long_mode_core();
    // IF = 0: the interrupt waits and interrupt-window exiting goes on.
    exit(&mut core, 12, &[(F::Length, 1)]);
    core.decode_exit().unwrap();
    core.inject(Event::Interrupt { vector: 0x20 });
    core.prepare_entry().unwrap();
    let window = PrimaryControls::INTERRUPT_WINDOW_EXITING.bits();
    let primary = core
        .vmcs()
        .inner()
        .read(control::PRIMARY_PROC_BASED_VM_EXEC_CONTROL)
        .unwrap();
    assert_ne!(primary & window, 0);
    // The window exit: IF = 1 now, the interrupt goes in and the window closes.
    core.vmcs_mut()
        .inner_mut()
        .write(guest::RFLAGS, 0x202)
        .unwrap();
    exit(&mut core, 7, &[]);
    assert_eq!(core.decode_exit().unwrap().kind, ExitKind::InterruptWindow);
    core.prepare_entry().unwrap();
    let v = core.vmcs().inner();
    assert_eq!(
        v.read(control::VM_ENTRY_INTERRUPTION_INFO).unwrap(),
        0x8000_0020
    );
    assert_eq!(
        v.read(control::PRIMARY_PROC_BASED_VM_EXEC_CONTROL).unwrap() & window,
        0
    );
    // An NMI under blocking by MOV SS waits too (interrupt window without NMI-window support).
    core.vmcs_mut()
        .inner_mut()
        .write(
            guest::INTERRUPTIBILITY_STATE,
            Interruptibility::BLOCKING_BY_MOV_SS.bits(),
        )
        .unwrap();
    exit(&mut core, 12, &[(F::Length, 1)]);
    core.decode_exit().unwrap();
    core.inject(Event::Nmi);
    core.prepare_entry().unwrap();
    let primary = core
        .vmcs()
        .inner()
        .read(control::PRIMARY_PROC_BASED_VM_EXEC_CONTROL)
        .unwrap();
    assert_ne!(primary & window, 0);
}

#[test]
fn entry_failures_and_exceptions_decode() {
    let mut core = long_mode_core();
    exit(&mut core, 0x8000_0021, &[(F::Qualification, 0)]);
    assert_eq!(
        core.decode_exit().unwrap().kind,
        ExitKind::EntryFailure(crate::exit::EntryFailure::InvalidGuestState { qualification: 0 })
    );
    // #PF intercepted: vector 14, error code 2, CR2 in the qualification.
    exit(
        &mut core,
        0,
        &[
            (F::Qualification, 0xdead_0000),
            (F::Interruption, 0x8000_0b0e),
            (F::InterruptionError, 2),
        ],
    );
    let ExitKind::Exception(e) = core.decode_exit().unwrap().kind else {
        panic!()
    };
    assert_eq!(
        (e.vector, e.error_code, e.detail),
        (14, Some(2), Some(0xdead_0000))
    );
    exit(&mut core, 2, &[]);
    assert_eq!(core.decode_exit().unwrap().kind, ExitKind::Shutdown);
    exit(&mut core, 0xffff, &[]);
    assert_eq!(core.decode_exit().unwrap().kind, ExitKind::Other);
    // Injecting #GP in real mode drops the error code.
    let mut real = core_for(&GuestState::real_mode(0, 0x7c00, 0));
    exit(&mut real, 12, &[(F::Length, 1)]);
    real.decode_exit().unwrap();
    real.inject(Event::GP0);
    real.prepare_entry().unwrap();
    assert_eq!(
        real.vmcs()
            .inner()
            .read(control::VM_ENTRY_INTERRUPTION_INFO)
            .unwrap(),
        0x8000_030d
    );
}

#[test]
fn xcr0_rules() {
    assert!(xcr0_valid(1, 7) && xcr0_valid(7, 7) && xcr0_valid(3, 7));
    assert!(!xcr0_valid(0, 7) && !xcr0_valid(5, 7) && !xcr0_valid(0xf, 7));
    assert!(!xcr0_valid(0x27, 0xff) && xcr0_valid(0xe7, 0xff) && !xcr0_valid(0xe3, 0xff));
    assert!(!xcr0_valid(0xb, 0xff) && xcr0_valid(0x1b, 0x1f));
}

/// The VMCS traffic of each common exit handled the usual way and resumed (one row per exit).
/// The figures themselves: `cargo bench -p hvkit-vcpu --bench vmcs_traffic` prints them.
#[test]
fn vmcs_traffic() {
    type Handler = fn(&mut VmxCore<Counting<SoftVmcs>>);
    type Row<'a> = (
        &'a str,
        u32,
        &'a [(FieldEncodingOf, u64)],
        Handler,
        VmcsCounts,
    );
    let rows: [Row<'_>; 12] = [
        (
            "CPUID (leaf 0)",
            10,
            &[(F::Length, 2)],
            |c| c.complete_cpuid(host_cpuid).unwrap(),
            VmcsCounts {
                reads: 4,
                writes: 1,
            },
        ),
        (
            "HLT (skip)",
            12,
            &[(F::Length, 1)],
            |c| c.skip_instruction().unwrap(),
            VmcsCounts {
                reads: 4,
                writes: 1,
            },
        ),
        (
            "VMCALL (PING)",
            18,
            &[(F::Length, 3)],
            |c| assert!(c.handle_default(host_cpuid).unwrap()),
            VmcsCounts {
                reads: 4,
                writes: 1,
            },
        ),
        (
            "OUT imm8, AL",
            30,
            &[(F::Qualification, 0x0080_0040), (F::Length, 2)],
            |c| c.complete_io(0).unwrap(),
            VmcsCounts {
                reads: 5,
                writes: 1,
            },
        ),
        (
            "IN AL, DX",
            30,
            &[(F::Qualification, 0x0060_0008), (F::Length, 1)],
            |c| c.complete_io(0x55).unwrap(),
            VmcsCounts {
                reads: 5,
                writes: 1,
            },
        ),
        (
            "RDMSR",
            31,
            &[(F::Length, 2)],
            |c| c.complete_msr(0).unwrap(),
            VmcsCounts {
                reads: 4,
                writes: 1,
            },
        ),
        (
            "WRMSR",
            32,
            &[(F::Length, 2)],
            |c| c.complete_msr(0).unwrap(),
            VmcsCounts {
                reads: 4,
                writes: 1,
            },
        ),
        (
            "EPT violation (to caller)",
            48,
            &[(F::Qualification, 0x1), (F::Gpa, 0x8000_0000)],
            |_| {},
            VmcsCounts {
                reads: 4,
                writes: 0,
            },
        ),
        (
            "#UD intercepted (reflect)",
            0,
            &[(F::Qualification, 0), (F::Interruption, 0x8000_0306)],
            |c| c.inject(Event::UD),
            VmcsCounts {
                reads: 5,
                writes: 1,
            },
        ),
        (
            "MOV CR4 (emulate)",
            28,
            &[(F::Qualification, 0x304), (F::Length, 3)],
            |c| assert!(c.handle_default(host_cpuid).unwrap()),
            VmcsCounts {
                reads: 6,
                writes: 3,
            },
        ),
        (
            "external interrupt",
            1,
            &[],
            |_| {},
            VmcsCounts {
                reads: 2,
                writes: 0,
            },
        ),
        (
            "interrupt window + inject",
            7,
            &[],
            |c| c.inject(Event::Interrupt { vector: 0x30 }),
            VmcsCounts {
                reads: 3,
                writes: 2,
            },
        ),
    ];
    println!("{:<28} {:>7} {:>8}", "exit", "VMREADs", "VMWRITEs");
    for (name, reason, fields, handler, budget) in rows {
        let mut core = long_mode_core();
        core.regs.rax = 0;
        core.regs.rbx = 0x20;
        core.vmcs_mut()
            .inner_mut()
            .write(guest::RFLAGS, 0x202)
            .unwrap();
        exit(&mut core, reason, fields);
        core.decode_exit().unwrap();
        handler(&mut core);
        core.prepare_entry().unwrap();
        let counts = core.vmcs().take_counts();
        println!("{name:<28} {:>7} {:>8}", counts.reads, counts.writes);
        assert!(
            counts.reads <= budget.reads && counts.writes <= budget.writes,
            "{name}: {counts:?} over {budget:?}"
        );
    }
}

#[test]
fn segments_read_and_write() {
    let mut core = long_mode_core();
    let cs = core.segment(crate::state::SegmentName::Cs).unwrap();
    assert_eq!(
        (cs.selector, cs.access.0, cs.limit),
        (0x08, 0xa09b, 0xffff_ffff)
    );
    let fs = crate::state::Segment {
        selector: 0x33,
        base: 0x7000,
        limit: 0xfff,
        access: crate::state::SegmentAccess::DATA32,
    };
    core.set_segment(crate::state::SegmentName::Fs, &fs)
        .unwrap();
    assert_eq!(core.segment(crate::state::SegmentName::Fs).unwrap(), fs);
    assert_eq!(
        core.segment(crate::state::SegmentName::Ldtr)
            .unwrap()
            .access,
        crate::state::SegmentAccess::UNUSABLE
    );
}

#[test]
fn acknowledged_vector_of_an_external_interrupt() {
    let mut core = long_mode_core();
    exit(&mut core, 1, &[(F::Interruption, 0x8000_0031)]);
    assert_eq!(
        core.decode_exit().unwrap().kind,
        ExitKind::ExternalInterrupt
    );
    assert_eq!(core.acknowledged_vector().unwrap(), Some(0x31));
    exit(&mut core, 12, &[(F::Length, 1)]);
    core.decode_exit().unwrap();
    assert_eq!(core.acknowledged_vector().unwrap(), None);
}

#[test]
fn nmi_blocked_by_nmi_waits_without_spinning_on_windows() {
    let mut core = long_mode_core();
    core.vmcs_mut()
        .inner_mut()
        .write(
            guest::INTERRUPTIBILITY_STATE,
            Interruptibility::BLOCKING_BY_NMI.bits(),
        )
        .unwrap();
    core.vmcs_mut()
        .inner_mut()
        .write(guest::RFLAGS, 0x202)
        .unwrap();
    exit(&mut core, 12, &[(F::Length, 1)]);
    core.decode_exit().unwrap();
    core.inject(Event::Nmi);
    core.prepare_entry().unwrap();
    let v = core.vmcs().inner();
    let primary = v.read(control::PRIMARY_PROC_BASED_VM_EXEC_CONTROL).unwrap();
    assert_eq!(
        primary & PrimaryControls::INTERRUPT_WINDOW_EXITING.bits(),
        0
    );
    assert_eq!(
        v.read(control::VM_ENTRY_INTERRUPTION_INFO).unwrap() & (1 << 31),
        0
    );
    // Unblocked at a later exit: the NMI goes in (type 2, vector 2).
    core.vmcs_mut()
        .inner_mut()
        .write(guest::INTERRUPTIBILITY_STATE, 0)
        .unwrap();
    exit(&mut core, 12, &[(F::Length, 1)]);
    core.decode_exit().unwrap();
    core.prepare_entry().unwrap();
    assert_eq!(
        core.vmcs()
            .inner()
            .read(control::VM_ENTRY_INTERRUPTION_INFO)
            .unwrap(),
        0x8000_0202
    );
}

#[test]
fn invd_is_skipped_by_default() {
    let mut core = long_mode_core();
    exit(&mut core, 13, &[(F::Length, 2)]);
    assert_eq!(core.decode_exit().unwrap().kind, ExitKind::Other);
    assert!(core.handle_default(host_cpuid).unwrap());
    assert_eq!(core.rip().unwrap(), 0x10_0002);
    exit(&mut core, 0x3fff, &[]);
    core.decode_exit().unwrap();
    assert!(!core.handle_default(host_cpuid).unwrap());
}

/// CPUID leaf 1 also reads CR4 (OSXSAVE follows the guest's CR4): one more VMREAD.
#[test]
fn vmcs_traffic_cpuid_leaf_1() {
    let mut core = long_mode_core();
    core.regs.rax = 1;
    exit(&mut core, 10, &[(F::Length, 2)]);
    core.decode_exit().unwrap();
    core.complete_cpuid(host_cpuid).unwrap();
    core.prepare_entry().unwrap();
    let counts = core.vmcs().take_counts();
    println!(
        "CPUID (leaf 1): {} VMREADs, {} VMWRITEs",
        counts.reads, counts.writes
    );
    assert_eq!((counts.reads, counts.writes), (5, 1));
}

#[test]
fn hlt_exiting_can_be_turned_off_and_on() {
    let mut core = long_mode_core();
    let hlt = PrimaryControls::HLT_EXITING.bits();
    let primary = |core: &VmxCore<Counting<SoftVmcs>>| {
        core.vmcs()
            .inner()
            .read(control::PRIMARY_PROC_BASED_VM_EXEC_CONTROL)
            .unwrap()
    };
    assert_ne!(primary(&core) & hlt, 0, "on by default");
    core.set_hlt_exiting(false);
    core.prepare_entry().unwrap();
    assert_eq!(primary(&core) & hlt, 0, "written before the entry");
    core.set_hlt_exiting(true);
    core.prepare_entry().unwrap();
    assert_ne!(primary(&core) & hlt, 0);
}
