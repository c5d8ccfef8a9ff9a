//! The Rust half of the hvkit Linux kernel module: a Linux [`Platform`](hvkit_vcpu::Platform)
//! and the per-CPU "blue pill" built on hvkit-vcpu.
//!
//! Built as a staticlib for `x86_64-unknown-none` with nightly `-Zbuild-std` and the kernel's
//! code model (see README.md), linked into one relocatable object and then into `hvkit.ko` with
//! the C shim in `kmod/`. The shim calls the `hvkit_rust_*` functions below; the Rust half calls
//! the shim's `hvkit_shim_*` functions (`shim`).
#![no_std]

mod exports;
mod hv;
mod platform;
mod shim;
mod stats;

/// The most CPUs the module virtualizes.
pub const MAX_CPUS: usize = 64;

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    loop {
        core::hint::spin_loop();
    }
}
