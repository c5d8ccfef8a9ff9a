//! `cargo xtask demo`: a tour of what hvkit does.
//!
//! 1. The host-side tour of hvkit-vmx (`cargo run -p hvkit-vmx --example tour`), no emulator
//!    needed.
//! 2. The bare-metal hypervisor (`examples/baremetal`) booted with its demo guests on QEMU (AMD-V)
//!    and on Bochs (VT-x): the same host code runs the cpuid, io, hypercall, npf, exception and
//!    exit-cost guests of `examples/guests` through `hvkit_vcpu::Vcpu` one after the other. The
//!    serial console streams as it runs; then the per-emulator summary (exits by kind, the exit
//!    cost in guest TSC cycles per CPUID round trip) is printed again.
//!
//! Like `cargo xtask e2e` it installs what a fresh Debian machine lacks (the rustup target, the
//! emulator packages).

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use crate::steps::{Result, announce, cargo, ensure_rustup, root};

/// The demo runs, as test names of `tests/tests/e2e.rs`.
const RUNS: &[(&str, &str)] = &[
    ("demo_svm_qemu", "AMD-V on QEMU TCG (-cpu max)"),
    ("demo_vmx_bochs", "VT-x on Bochs (corei7_skylake_x)"),
];

/// Runs the demo.
pub(crate) fn run() -> Result {
    announce("hvkit demo, part 1: the host-side tour (no emulator needed)");
    crate::steps::run(
        "running the hvkit-vmx capability tour (examples/tour.rs)",
        cargo().args(["run", "--quiet", "-p", "hvkit-vmx", "--example", "tour"]),
    )?;
    announce("hvkit demo, part 2: the bare-metal hypervisor with guests, in emulators");
    ensure_rustup(None, &[], &["x86_64-unknown-none"])?;
    crate::e2e::ensure_debian_packages()?;
    let mut summaries = Vec::new();
    for (test, what) in RUNS {
        announce(&format!(
            "booting examples/baremetal (case=demo) on {what}; its serial console:"
        ));
        let mut child = cargo()
            .args(["test", "--quiet", "-p", "hvkit-e2e", "--test", "e2e", test])
            .args(["--", "--exact", "--nocapture"])
            .current_dir(root())
            .env_remove("RUSTFLAGS")
            .env("HVKIT_E2E_STREAM", "1")
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("could not start cargo test: {e}"))?;
        let mut summary = Vec::new();
        let mut in_summary = false;
        if let Some(out) = child.stdout.take() {
            for line in BufReader::new(out).lines().map_while(std::io::Result::ok) {
                let serial = line.split_once("] ").map(|(_, l)| l);
                if serial.is_some_and(|l| l.starts_with("demo summary")) {
                    in_summary = true;
                } else if serial.is_some_and(|l| !l.starts_with("  ")) {
                    in_summary = false;
                }
                if in_summary {
                    summary.push(serial.unwrap_or_default().to_owned());
                }
                if line.starts_with("e2e ") {
                    summary.push(line.clone());
                }
                if line.starts_with('[') || line.starts_with("e2e ") || line.starts_with("  ") {
                    println!("{line}");
                }
            }
        }
        let status = child
            .wait()
            .map_err(|e| format!("waiting for cargo test: {e}"))?;
        if !status.success() {
            return Err(format!("the demo on {what} failed ({status}); see above"));
        }
        summaries.push((what, summary));
    }
    announce("hvkit demo: summary");
    for (what, summary) in summaries {
        println!("{what}:");
        for line in summary {
            println!("  {line}");
        }
    }
    Ok(())
}
