//! VMCS and VMCB traffic per common exit: what handling one exit the usual way and re-entering
//! costs in VMREADs and VMWRITEs on VMX (a `Counting<SoftVmcs>` under the exit path), and which
//! VMCB areas stay clean for the next VMRUN on SVM (a boxed `Vmcb`: the areas whose clean bit is
//! set are not reloaded, APM 15.15 "VMCB State Caching").
//!
//! `cargo bench -p hvkit-vcpu --bench vmcs_traffic` prints one row per exit kind. The figures are
//! counts, not times, so one run is exact. The assertions on them (the budgets) stay in the host
//! tests (`vmx::tests::vmcs_traffic`, `svm::tests::svm_clean_bits`); this target only measures.
//!
//! Each row starts from a fresh vCPU in 64-bit mode after its first entry (RFLAGS.IF = 1 unless
//! the row says otherwise, no interrupt window open), fakes the exit (the exit-information
//! fields and the guest's RFLAGS are written past the counter; RFLAGS has no VMCB clean bit),
//! runs `decode_exit`,
//! the handler and `prepare_entry`, and counts from `decode_exit` on. The first twelve rows are
//! the scenarios of the `vmcs_traffic` test, so the VMX figures are the ones it checks.
#![expect(clippy::unwrap_used, reason = "a benchmark: failures abort the run")]

use hvkit_svm::features::HostCapabilities;
use hvkit_svm::vmcb::{CleanBits, TlbControl};
use hvkit_svm::{ExitCode, Vmcb};
use hvkit_vcpu::Event;
use hvkit_vcpu::state::GuestState;
use hvkit_vcpu::svm::{Entry, NoMemory, SvmCore, VmcbLayout, write_vmcb};
use hvkit_vcpu::vmx::{
    CrPolicy, HostState, VmcsLayout, VmxCore, VmxOptions, controls_request, write_vmcs,
};
use hvkit_vmx::capabilities::VmxCapabilities;
use hvkit_vmx::fields::{exit_info, guest};
use hvkit_vmx::msr::*;
use hvkit_vmx::vmcs::{Counting, SoftVmcs, VmcsCounts, VmcsWrite};
use raw_cpuid::CpuIdResult;

type Vmx = VmxCore<Counting<SoftVmcs>>;
type Svm = SvmCore<Box<Vmcb>, NoMemory>;

/// Bochs' Skylake-X capability MSRs (as in the VMX host tests).
fn vmx_caps() -> VmxCapabilities {
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

fn state() -> GuestState {
    let mut s = GuestState::long_mode_flat(0x1000, 0x10_0000, 0x8000);
    s.rflags = 0x202;
    s
}

fn vmx_core() -> Vmx {
    let caps = vmx_caps();
    let state = state();
    let request = controls_request(&caps, &state, VmxOptions::default()).unwrap();
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
    let host = HostState {
        cr0: 0x8005_0033,
        cr3: 0x1000,
        cr4: 0x2620,
        cs: 0x08,
        ss: 0x10,
        tr: 0x18,
        efer: 0xd01,
        pat: hvkit_vcpu::state::PAT_RESET,
        ..HostState::default()
    };
    let mut soft = SoftVmcs::new();
    write_vmcs(&mut soft, &layout, &state, &host).unwrap();
    soft.write(guest::RFLAGS, 0x202).unwrap();
    let mut core = VmxCore::new(Counting::new(soft), controls.primary, false, cr);
    core.regs = state.regs;
    core
}

/// CPUID Fn8000_000A of a processor with nested paging, NRIP save and decode assists (16 ASIDs).
fn svm_core() -> Svm {
    const NP_NRIP_DECODE_ASSISTS: u32 = 1 | 1 << 3 | 1 << 7;
    let caps = HostCapabilities::from_cpuid([1, 16, 0, NP_NRIP_DECODE_ASSISTS], 40, 1 << 29);
    let layout = VmcbLayout {
        iopm: 0x10_0000,
        msrpm: 0x10_4000,
        asid: 1,
        tlb_control: TlbControl::FLUSH_ALL,
        ncr3: Some(0x20_0000),
        exception_bitmap: 0,
        tsc_offset: 0,
        external_interrupt_exiting: false,
    };
    let state = state();
    let mut vmcb = Box::new(Vmcb::new());
    write_vmcb(&mut vmcb, &layout, &state);
    let mut core = SvmCore::new(vmcb, caps);
    core.regs = state.regs;
    assert_eq!(core.prepare_entry().unwrap(), Entry::Run, "the first entry");
    core
}

fn host_cpuid(leaf: u32, _subleaf: u32) -> CpuIdResult {
    CpuIdResult {
        eax: leaf + 1,
        ebx: 2,
        ecx: 3,
        edx: 4,
    }
}

/// The exit-information fields of a faked VMX exit.
#[derive(Clone, Copy)]
enum Info {
    Qualification(u64),
    Length(u32),
    Gpa(u64),
    Interruption(u32),
}

/// A faked SVM #VMEXIT: exit code, EXITINFO1, EXITINFO2, instruction length (for nRIP).
type SvmExit = (ExitCode, u64, u64, u64);

/// One exit kind, on both vendors, with the handler a hypervisor usually runs.
struct Row {
    name: &'static str,
    vmx_reason: u32,
    vmx_info: &'static [Info],
    vmx_handler: fn(&mut Vmx),
    svm_exit: SvmExit,
    svm_handler: fn(&mut Svm),
    /// The guest's RFLAGS at the exit.
    rflags: u64,
}

const IF: u64 = 0x202;

fn rows() -> [Row; 13] {
    [
        Row {
            name: "CPUID (leaf 0)",
            vmx_reason: 10,
            vmx_info: &[Info::Length(2)],
            vmx_handler: |c| c.complete_cpuid(host_cpuid).unwrap(),
            svm_exit: (ExitCode::CPUID, 0, 0, 2),
            svm_handler: |c| c.complete_cpuid(host_cpuid).unwrap(),
            rflags: IF,
        },
        Row {
            name: "HLT (skip)",
            vmx_reason: 12,
            vmx_info: &[Info::Length(1)],
            vmx_handler: |c| c.skip_instruction().unwrap(),
            svm_exit: (ExitCode::HLT, 0, 0, 1),
            svm_handler: |c| c.skip_instruction().unwrap(),
            rflags: IF,
        },
        Row {
            name: "VMCALL/VMMCALL (PING)",
            vmx_reason: 18,
            vmx_info: &[Info::Length(3)],
            vmx_handler: |c| assert!(c.handle_default(host_cpuid).unwrap()),
            svm_exit: (ExitCode::VMMCALL, 0, 0, 3),
            svm_handler: |c| assert!(c.handle_default(host_cpuid).unwrap()),
            rflags: IF,
        },
        Row {
            name: "OUT imm8, AL",
            vmx_reason: 30,
            vmx_info: &[Info::Qualification(0x0080_0040), Info::Length(2)],
            vmx_handler: |c| c.complete_io(0).unwrap(),
            // Port 80h, 8-bit, OUT; EXITINFO2 is the next RIP (APM 15.10.2).
            svm_exit: (ExitCode::IOIO, 0x0080_0010, 0x1002, 2),
            svm_handler: |c| c.complete_io(0).unwrap(),
            rflags: IF,
        },
        Row {
            name: "IN AL, DX",
            vmx_reason: 30,
            vmx_info: &[Info::Qualification(0x0060_0008), Info::Length(1)],
            vmx_handler: |c| c.complete_io(0x55).unwrap(),
            svm_exit: (ExitCode::IOIO, 0x0060_0011, 0x1001, 1),
            svm_handler: |c| c.complete_io(0x55).unwrap(),
            rflags: IF,
        },
        Row {
            name: "RDMSR",
            vmx_reason: 31,
            vmx_info: &[Info::Length(2)],
            vmx_handler: |c| c.complete_msr(0).unwrap(),
            svm_exit: (ExitCode::MSR, 0, 0, 2),
            svm_handler: |c| c.complete_msr(0).unwrap(),
            rflags: IF,
        },
        Row {
            name: "WRMSR",
            vmx_reason: 32,
            vmx_info: &[Info::Length(2)],
            vmx_handler: |c| c.complete_msr(0).unwrap(),
            svm_exit: (ExitCode::MSR, 1, 0, 2),
            svm_handler: |c| c.complete_msr(0).unwrap(),
            rflags: IF,
        },
        Row {
            name: "EPT violation/NPF (to caller)",
            vmx_reason: 48,
            vmx_info: &[Info::Qualification(0x1), Info::Gpa(0x8000_0000)],
            vmx_handler: |_| {},
            svm_exit: (ExitCode::NPF, 0x4, 0x8000_0000, 0),
            svm_handler: |_| {},
            rflags: IF,
        },
        Row {
            name: "#UD intercepted (reflect)",
            vmx_reason: 0,
            vmx_info: &[Info::Qualification(0), Info::Interruption(0x8000_0306)],
            vmx_handler: |c| c.inject(Event::UD),
            svm_exit: (ExitCode::EXCP_UD, 0, 0, 0),
            svm_handler: |c| c.inject(Event::UD),
            rflags: IF,
        },
        Row {
            name: "MOV CR4, RBX (emulate)",
            vmx_reason: 28,
            vmx_info: &[Info::Qualification(0x304), Info::Length(3)],
            vmx_handler: |c| assert!(c.handle_default(host_cpuid).unwrap()),
            // Decode assists: EXITINFO1 bit 63 valid, GPR 3 (APM 15.8.1).
            svm_exit: (ExitCode::CR4_WRITE, (1 << 63) | 3, 0, 3),
            svm_handler: |c| assert!(c.handle_default(host_cpuid).unwrap()),
            rflags: IF,
        },
        Row {
            name: "external interrupt",
            vmx_reason: 1,
            vmx_info: &[],
            vmx_handler: |_| {},
            svm_exit: (ExitCode::INTR, 0, 0, 0),
            svm_handler: |_| {},
            rflags: IF,
        },
        Row {
            name: "interrupt window + inject",
            vmx_reason: 7,
            vmx_info: &[],
            vmx_handler: |c| c.inject(Event::Interrupt { vector: 0x30 }),
            svm_exit: (ExitCode::VINTR, 0, 0, 0),
            svm_handler: |c| c.inject(Event::Interrupt { vector: 0x30 }),
            rflags: IF,
        },
        Row {
            // An interrupt for a guest with RFLAGS.IF = 0 waits: the handler opens the
            // interrupt window (VMX: "interrupt-window exiting"; SVM: V_IRQ and the VINTR
            // intercept).
            name: "HLT + inject while IF = 0",
            vmx_reason: 12,
            vmx_info: &[Info::Length(1)],
            vmx_handler: |c| {
                c.skip_instruction().unwrap();
                c.inject(Event::Interrupt { vector: 0x30 });
            },
            svm_exit: (ExitCode::HLT, 0, 0, 1),
            svm_handler: |c| {
                c.skip_instruction().unwrap();
                c.inject(Event::Interrupt { vector: 0x30 });
            },
            rflags: 0x2,
        },
    ]
}

fn vmx_traffic(row: &Row) -> VmcsCounts {
    let mut core = vmx_core();
    core.regs.rax = 0;
    core.regs.rbx = 0x20;
    let soft = core.vmcs_mut().inner_mut();
    soft.write(guest::RFLAGS, row.rflags).unwrap();
    soft.set_exit_info(exit_info::EXIT_REASON, row.vmx_reason);
    soft.set_exit_info(exit_info::IDT_VECTORING_INFO, 0);
    for info in row.vmx_info {
        match *info {
            Info::Qualification(q) => soft.set_exit_info(exit_info::EXIT_QUALIFICATION, q),
            Info::Length(l) => soft.set_exit_info(exit_info::VM_EXIT_INSTRUCTION_LENGTH, l),
            Info::Gpa(g) => soft.set_exit_info(exit_info::GUEST_PHYSICAL_ADDRESS, g),
            Info::Interruption(i) => soft.set_exit_info(exit_info::VM_EXIT_INTERRUPTION_INFO, i),
        }
    }
    core.forget_cached();
    core.vmcs().take_counts();
    core.decode_exit().unwrap();
    (row.vmx_handler)(&mut core);
    core.prepare_entry().unwrap();
    core.vmcs().take_counts()
}

/// The clean bits of the VMRUN after the exit, with the areas left dirty.
fn svm_clean(row: &Row) -> CleanBits {
    let mut core = svm_core();
    let (code, info1, info2, length) = row.svm_exit;
    core.regs.rax = 0;
    core.regs.rbx = 0x20;
    let rip = core.vmcb().save().rip();
    let vmcb = core.vmcb_mut();
    vmcb.set_rax(0);
    vmcb.set_rflags(row.rflags);
    vmcb.set_exit_code(code);
    vmcb.set_exit_info1(info1);
    vmcb.set_exit_info2(info2);
    vmcb.set_next_rip(if length == 0 { 0 } else { rip + length });
    core.decode_exit().unwrap();
    (row.svm_handler)(&mut core);
    assert_eq!(core.prepare_entry().unwrap(), Entry::Run, "{}", row.name);
    core.vmcb().clean_bits()
}

fn main() {
    let areas = CleanBits::all().bits().count_ones();
    println!("VMCS/VMCB traffic per exit (handled, then re-entered; fresh 64-bit vCPU per row)");
    println!(
        "{:<30} {:>7} {:>8}   SVM: VMCB areas clean at VMRUN",
        "exit", "VMREADs", "VMWRITEs"
    );
    let (mut reads, mut writes, mut clean) = (0, 0, 0);
    let rows = rows();
    for row in &rows {
        let counts = vmx_traffic(row);
        let bits = svm_clean(row);
        let dirty = CleanBits::all() - bits;
        let dirty = if dirty.is_empty() {
            String::new()
        } else {
            let names: Vec<&str> = dirty.iter_names().map(|(name, _)| name).collect();
            format!(" (dirty: {})", names.join(", "))
        };
        let n = bits.bits().count_ones();
        println!(
            "{:<30} {:>7} {:>8}   {n:>2}/{areas}{dirty}",
            row.name, counts.reads, counts.writes
        );
        reads += counts.reads;
        writes += counts.writes;
        if n == areas {
            clean += 1;
        }
    }
    println!(
        "{:<30} {:>7} {:>8}   {clean} of {} re-entries fully clean",
        "total",
        reads,
        writes,
        rows.len()
    );
}
