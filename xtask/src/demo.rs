//! `cargo xtask demo`: a tour of what the crates do today.

use crate::steps::{Result, announce, cargo};

/// Runs the demo: until the bare-metal hypervisor exists, the host-side tour of hvkit-vmx.
pub(crate) fn run() -> Result {
    announce("hvkit demo: the host-side tour (no emulator needed)");
    crate::steps::run(
        "running the hvkit-vmx capability tour (examples/tour.rs)",
        cargo().args(["run", "--quiet", "-p", "hvkit-vmx", "--example", "tour"]),
    )
}
