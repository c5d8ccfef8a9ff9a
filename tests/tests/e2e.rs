//! The end-to-end cases: the bare-metal kernel in Bochs and QEMU, one test per run.
//!
//! Each test prints the one-line summary (`e2e <case> <vendor>/<emulator> PASS|FAIL <exits>
//! exits <seconds>s`, plus the log paths on failure) and fails when the run fails.
//! `cargo xtask e2e [FILTER]` runs them after installing the emulators.

use std::fs;

use hvkit_e2e::{Case, Emulator, Outcome, Vendor};

/// Prints the summary and turns a failed run into a failed test.
fn finish(outcome: &Outcome) {
    println!("{}", outcome.report());
    assert!(outcome.pass, "{}", outcome.report());
}

/// The lines starting with `prefix` (`msr `, `cpuid `) of a serial log or fixture.
fn lines_with<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
    text.lines()
        .map(str::trim)
        .filter(|l| l.starts_with(prefix))
        .collect()
}

/// Fails `outcome` unless the `prefix` lines the kernel printed equal those of `fixture`
/// (a file in `tests/fixtures/`): the emulator still reports the recorded capabilities.
fn compare_with_fixture(outcome: &mut Outcome, prefix: &str, fixture: &str) {
    let path = hvkit_e2e::workspace_root()
        .join("tests/fixtures")
        .join(fixture);
    let expected = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) => return outcome.fail(format!("reading {}: {e}", path.display())),
    };
    let seen = lines_with(&outcome.serial_text, prefix);
    let expected = lines_with(&expected, prefix);
    if outcome.pass && seen != expected {
        let new: Vec<_> = seen.iter().filter(|l| !expected.contains(l)).collect();
        let gone: Vec<_> = expected.iter().filter(|l| !seen.contains(l)).collect();
        outcome.fail(format!(
            "the emulator's capabilities differ from {}: now {new:?}, fixture {gone:?}",
            path.display()
        ));
    }
}

/// VMX on Bochs (Skylake-X): capability snapshot (checked against the fixture), VMXON,
/// VMCS instructions and their VM-instruction errors, the whole hvkit-vmx field table swept,
/// INVEPT/INVVPID, VMLAUNCH refused for bad controls and host state, an entry failure on invalid
/// guest state, then a 64-bit guest under a 1:1 EPT built by hvkit-paging exiting on OUT, IN,
/// CPUID, an EPT violation served on demand, and VMCALL.
#[test]
fn smoke_vmx_bochs() {
    let mut outcome = hvkit_e2e::run(&Case::new("smoke", Vendor::Vmx, Emulator::BOCHS_SKYLAKE));
    compare_with_fixture(&mut outcome, "msr ", "bochs-corei7_skylake_x.msrs");
    compare_with_fixture(
        &mut outcome,
        "vmcs-unsupported ",
        "bochs-corei7_skylake_x.vmcs-unsupported",
    );
    finish(&outcome);
}

/// VMX on Bochs's Core 2 Penryn model: the same case without EPT or VPID (the guest's probe-page
/// access does not exit), with VMWRITE to the read-only exit reason refused (error 13).
#[test]
fn smoke_vmx_bochs_penryn() {
    let mut outcome = hvkit_e2e::run(&Case::new("smoke", Vendor::Vmx, Emulator::BOCHS_PENRYN));
    compare_with_fixture(&mut outcome, "msr ", "bochs-core2_penryn_t9600.msrs");
    compare_with_fixture(
        &mut outcome,
        "vmcs-unsupported ",
        "bochs-core2_penryn_t9600.vmcs-unsupported",
    );
    finish(&outcome);
}

/// SVM on QEMU TCG (`-cpu max`: NPT, no NRIP save): enabling SVM, `check_vmcb`, three illegal
/// VMCBs refused by VMRUN, then a 64-bit guest under a 1:1 nested page table built by
/// hvkit-paging exiting on OUT and IN (through the IOPM), CPUID, a nested page fault served on
/// demand, and VMMCALL
/// (instructions skipped by their fixed lengths).
#[test]
fn smoke_svm_qemu() {
    let mut outcome = hvkit_e2e::run(&Case::new("smoke", Vendor::Svm, Emulator::QEMU));
    compare_with_fixture(&mut outcome, "cpuid ", "qemu-tcg-max.cpuid");
    finish(&outcome);
}

/// SVM on QEMU TCG `-cpu qemu64,+svm`, which has no nested paging: the guest runs on the host's
/// page tables directly and its probe-page access does not exit.
#[test]
fn smoke_svm_qemu_no_npt() {
    let mut outcome = hvkit_e2e::run(&Case::new("smoke", Vendor::Svm, Emulator::QEMU_NO_NPT));
    compare_with_fixture(&mut outcome, "cpuid ", "qemu-tcg-qemu64-svm.cpuid");
    finish(&outcome);
}

/// The same SVM case on Bochs's Trinity APU model (NPT and NRIP save: the exits' nRIP is
/// checked against the instruction lengths).
#[test]
fn smoke_svm_bochs() {
    let mut outcome = hvkit_e2e::run(&Case::new("smoke", Vendor::Svm, Emulator::BOCHS_TRINITY));
    compare_with_fixture(&mut outcome, "cpuid ", "bochs-trinity_apu.cpuid");
    finish(&outcome);
}

/// The runner's failure path: an unknown case, a guest-visible exception and a missing or empty
/// boot memory map must all come back as failed runs with the kernel's reason (these runs are expected to fail, so they print no
/// summary line).
#[test]
fn failures_are_reported_qemu() {
    let unknown = hvkit_e2e::run(&Case::new("no-such-case", Vendor::Svm, Emulator::QEMU));
    assert!(!unknown.pass, "{}", unknown.report());
    assert!(
        unknown.reason.contains("FAIL unknown case"),
        "{}",
        unknown.report()
    );
    let exception = hvkit_e2e::run(&Case::new("host-ud2", Vendor::Svm, Emulator::QEMU));
    assert!(!exception.pass, "{}", exception.report());
    assert!(
        exception.reason.contains("FAIL exception: vector 6"),
        "{}",
        exception.report()
    );
    // A loader without a memory map, or with an empty one (`memmap=none|empty` makes the kernel
    // take it so): the kernel says why it has no frames and stops, without a panic.
    for (args, why) in [
        ("memmap=none", "the boot loader gave no memory map"),
        (
            "memmap=empty",
            "the boot loader's memory map has no entries",
        ),
    ] {
        let case = Case {
            args,
            ..Case::new("no-memory-map", Vendor::Svm, Emulator::QEMU)
        };
        let outcome = hvkit_e2e::run(&case);
        assert!(!outcome.pass, "{}", outcome.report());
        assert!(
            outcome
                .reason
                .contains("FAIL frames: no frame allocator from the boot memory map: ")
                && outcome.reason.contains(why),
            "{args}: {}",
            outcome.report()
        );
    }
}

/// The guest kernel `examples/guests/mbkernel` booted with no hypervisor by
/// `qemu-system-i386 -kernel mbkernel.elf -append … -initrd module.txt`: the same ELF file that
/// the `mbkernel` runs hand to hvkit passes its own checks under a real multiboot loader.
#[test]
fn mbkernel_native_qemu_i386() {
    finish(&hvkit_e2e::run(&Case::new(
        hvkit_e2e::MBKERNEL_CASE,
        Vendor::Native,
        Emulator::QEMU_I386,
    )));
}

/// One test per guest of `examples/guests` and emulator: the kernel runs the guest through
/// `hvkit_vcpu::Vcpu`; the guest checks itself and reports PASS/FAIL, the host checks the exits
/// it saw and prints a summary (exits by kind, total, guest result).
macro_rules! guest_runs {
    ($($test:ident: $guest:literal on $vendor:ident / $emulator:ident;)*) => {$(
        #[test]
        fn $test() {
            finish(&hvkit_e2e::run(&Case::new($guest, Vendor::$vendor, Emulator::$emulator)));
        }
    )*};
}

// The million-exit loop takes about 15 s under QEMU and about 40 s under Bochs (alone; measured
// 39.9 s SVM, 46.6 s VMX), so these runs have a longer timeout (`Case::timeout`).
guest_runs! {
    guest_mbkernel_vmx_bochs: "mbkernel" on Vmx / BOCHS_SKYLAKE;
    guest_mbkernel_svm_qemu: "mbkernel" on Svm / QEMU;
    guest_mbkernel_svm_bochs: "mbkernel" on Svm / BOCHS_TRINITY;
    guest_hostile_loop_svm_qemu: "hostile-loop-1m" on Svm / QEMU;
    guest_hostile_loop_vmx_bochs: "hostile-loop-1m" on Vmx / BOCHS_SKYLAKE;
    guest_hostile_loop_svm_bochs: "hostile-loop-1m" on Svm / BOCHS_TRINITY;
    guest_cpuid_vmx_bochs: "cpuid" on Vmx / BOCHS_SKYLAKE;
    guest_cpuid_svm_qemu: "cpuid" on Svm / QEMU;
    guest_cpuid_svm_bochs: "cpuid" on Svm / BOCHS_TRINITY;
    guest_io_vmx_bochs: "io" on Vmx / BOCHS_SKYLAKE;
    guest_io_svm_qemu: "io" on Svm / QEMU;
    guest_io_svm_bochs: "io" on Svm / BOCHS_TRINITY;
    guest_msr_vmx_bochs: "msr" on Vmx / BOCHS_SKYLAKE;
    guest_msr_svm_qemu: "msr" on Svm / QEMU;
    guest_msr_svm_bochs: "msr" on Svm / BOCHS_TRINITY;
    guest_hlt_vmx_bochs: "hlt" on Vmx / BOCHS_SKYLAKE;
    guest_hlt_svm_qemu: "hlt" on Svm / QEMU;
    guest_hlt_svm_bochs: "hlt" on Svm / BOCHS_TRINITY;
    guest_hypercall_vmx_bochs: "hypercall" on Vmx / BOCHS_SKYLAKE;
    guest_hypercall_svm_qemu: "hypercall" on Svm / QEMU;
    guest_hypercall_svm_bochs: "hypercall" on Svm / BOCHS_TRINITY;
    guest_npf_vmx_bochs: "npf" on Vmx / BOCHS_SKYLAKE;
    guest_npf_svm_qemu: "npf" on Svm / QEMU;
    guest_npf_svm_bochs: "npf" on Svm / BOCHS_TRINITY;
    guest_exception_vmx_bochs: "exception" on Vmx / BOCHS_SKYLAKE;
    guest_exception_svm_qemu: "exception" on Svm / QEMU;
    guest_exception_svm_bochs: "exception" on Svm / BOCHS_TRINITY;
    guest_realmode_vmx_bochs: "realmode" on Vmx / BOCHS_SKYLAKE;
    guest_realmode_svm_qemu: "realmode" on Svm / QEMU;
    guest_realmode_svm_bochs: "realmode" on Svm / BOCHS_TRINITY;
    guest_paging_vmx_bochs: "paging" on Vmx / BOCHS_SKYLAKE;
    guest_paging_svm_qemu: "paging" on Svm / QEMU;
    guest_paging_svm_bochs: "paging" on Svm / BOCHS_TRINITY;
    guest_hostile_vmx_bochs: "hostile" on Vmx / BOCHS_SKYLAKE;
    guest_hostile_svm_qemu: "hostile" on Svm / QEMU;
    guest_hostile_svm_bochs: "hostile" on Svm / BOCHS_TRINITY;
    guest_exitcost_vmx_bochs: "exitcost" on Vmx / BOCHS_SKYLAKE;
    guest_exitcost_svm_qemu: "exitcost" on Svm / QEMU;
    guest_exitcost_svm_bochs: "exitcost" on Svm / BOCHS_TRINITY;
    guest_entryfail_vmx_bochs: "entryfail" on Vmx / BOCHS_SKYLAKE;
    guest_entryfail_svm_qemu: "entryfail" on Svm / QEMU;
    guest_entryfail_svm_bochs: "entryfail" on Svm / BOCHS_TRINITY;
    guest_bluepill_vmx_bochs: "bluepill" on Vmx / BOCHS_SKYLAKE;
    guest_bluepill_svm_qemu: "bluepill" on Svm / QEMU;
    guest_bluepill_svm_bochs: "bluepill" on Svm / BOCHS_TRINITY;
    guest_extint_vmx_bochs: "extint" on Vmx / BOCHS_SKYLAKE;
    guest_extint_svm_qemu: "extint" on Svm / QEMU;
    guest_extint_svm_bochs: "extint" on Svm / BOCHS_TRINITY;
    guest_fpu_vmx_bochs: "fpu" on Vmx / BOCHS_SKYLAKE;
    guest_fpu_svm_qemu: "fpu" on Svm / QEMU;
    guest_fpu_svm_bochs: "fpu" on Svm / BOCHS_TRINITY;
    guest_fpu_legacy_vmx_bochs: "fpu-legacy" on Vmx / BOCHS_SKYLAKE;
    guest_fpu_legacy_svm_qemu: "fpu-legacy" on Svm / QEMU;
    guest_fpu_legacy_svm_bochs: "fpu-legacy" on Svm / BOCHS_TRINITY;
    demo_svm_qemu: "demo" on Svm / QEMU;
    demo_vmx_bochs: "demo" on Vmx / BOCHS_SKYLAKE;
}
