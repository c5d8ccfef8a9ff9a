//! The functions the C shim calls (`hvkit_rust_*`).
// UNSAFETY: `#[no_mangle]` entry points for C, two of them `unsafe fn`s that virtualize or
// devirtualize the calling CPU.
#![expect(unsafe_code, reason = "C entry points that (de)virtualize the CPU")]

use core::sync::atomic::Ordering;

use crate::platform::PLATFORM;
use crate::{MAX_CPUS, hv};

/// Takes the frame pool (`frames` frames at physical `pool_phys`, 2 MiB aligned) and the direct
/// map's base. Returns 0.
#[unsafe(no_mangle)]
pub extern "C" fn hvkit_rust_init(
    pool_phys: u64,
    frames: usize,
    page_offset: u64,
    cpus: u32,
) -> i64 {
    PLATFORM.init(pool_phys, frames, page_offset, cpus as usize);
    for s in &hv::STATS {
        s.exits.store(0, Ordering::Relaxed);
        s.cpuid.store(0, Ordering::Relaxed);
        s.denied.store(0, Ordering::Relaxed);
        s.other.store(0, Ordering::Relaxed);
    }
    0
}

/// Virtualizes the calling CPU: returns 0 (now running as a guest) or a negative errno.
///
/// # Safety
/// - CPL 0, interrupts disabled, on CPU `cpu` (< `MAX_CPUS`), not virtualized yet;
/// - `hvkit_rust_init` ran, and nothing else uses VMX/SVM on this CPU.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn hvkit_rust_virtualize(cpu: u32) -> i64 {
    if cpu as usize >= MAX_CPUS {
        return -22;
    }
    // SAFETY: the caller's obligations.
    unsafe { hv::virtualize(cpu as usize) }
}

/// Devirtualizes the calling CPU (the hypercall only this module makes); returns 0, or the
/// host's answer when the CPU was not virtualized by this module (#UD if not virtualized at all:
/// call it only on virtualized CPUs).
///
/// # Safety
/// - CPL 0, interrupts disabled, on a CPU that `hvkit_rust_virtualize` virtualized.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn hvkit_rust_devirtualize(intel: bool) -> i64 {
    // SAFETY: the CPU runs as an hvkit guest (the caller's obligation), which answers the
    // hypercall from this exact instruction by returning the CPU to native execution.
    unsafe {
        if intel {
            hv::hvkit_devirtualize_vmcall()
        } else {
            hv::hvkit_devirtualize_vmmcall()
        }
    }
}

/// Frees the host stack of a CPU after it was devirtualized.
#[unsafe(no_mangle)]
pub extern "C" fn hvkit_rust_free_stack(cpu: u32) {
    hv::free_stack(cpu as usize);
}

/// Figure `which` (0 exits, 1 CPUID exits, 2 denied accesses to hypervisor memory, 3 other
/// exits answered with #UD) of `cpu`.
#[unsafe(no_mangle)]
pub extern "C" fn hvkit_rust_stat(cpu: u32, which: u32) -> u64 {
    let Some(s) = hv::STATS.get(cpu as usize) else {
        return 0;
    };
    match which {
        0 => s.exits.load(Ordering::Relaxed),
        1 => s.cpuid.load(Ordering::Relaxed),
        2 => s.denied.load(Ordering::Relaxed),
        4 => s.last_denied.load(Ordering::Relaxed),
        _ => s.other.load(Ordering::Relaxed),
    }
}

/// Frames of the pool in use (0 after every CPU was devirtualized and its stack freed).
#[unsafe(no_mangle)]
pub extern "C" fn hvkit_rust_live_frames() -> u64 {
    PLATFORM.live_frames() as u64
}
