//! The functions the C shim calls (`hvkit_rust_*`).
// UNSAFETY: `#[no_mangle]` entry points for C, two of them `unsafe fn`s that virtualize or
// devirtualize the calling CPU, one that writes into a C buffer.
#![expect(unsafe_code, reason = "C entry points that (de)virtualize the CPU")]

use core::fmt::Write;

use crate::platform::PLATFORM;
use crate::stats::{Breakdown, CBuffer, STATS};
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
    hv::detect();
    for s in &STATS {
        s.reset();
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

/// Figure `which` of `cpu`: 0 exits, 1 CPUID exits, 2 denied accesses to hypervisor memory,
/// 3 exits answered with #UD, 4 the guest-physical address of the last denied access.
#[unsafe(no_mangle)]
pub extern "C" fn hvkit_rust_stat(cpu: u32, which: u32) -> u64 {
    let Some(s) = STATS.get(cpu as usize) else {
        return 0;
    };
    match which {
        0 => s.total(),
        1 => s.kind("cpuid"),
        2 => s.denied(),
        4 => s.last_denied(),
        _ => s.undefined_count(),
    }
}

/// Writes the exit breakdown of `cpu` (`"143 exits: cpuid 140, ..."`) into `buf` (`len` bytes,
/// NUL-terminated, cut to fit); returns its length.
///
/// # Safety
/// - `buf` points at `len` writable bytes (or `len` is 0).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn hvkit_rust_exit_breakdown(cpu: u32, buf: *mut u8, len: usize) -> usize {
    let Some(s) = STATS.get(cpu as usize) else {
        return 0;
    };
    if buf.is_null() || len == 0 {
        return 0;
    }
    // SAFETY: the caller's obligation: `len` writable bytes at `buf`, used by nothing else
    // during this call.
    let bytes = unsafe { core::slice::from_raw_parts_mut(buf, len) };
    let mut out = CBuffer::new(bytes);
    let _ = write!(out, "{}", Breakdown(s));
    out.finish()
}

/// Writes the identity map's regions with their nested memory types (one `start-end ept|npt
/// type` line each) into `buf` (`len` bytes, NUL-terminated, cut to fit); returns the length.
/// Reads the MTRRs: process context at CPL 0.
///
/// # Safety
/// - `buf` points at `len` writable bytes (or `len` is 0).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn hvkit_rust_memory_types(buf: *mut u8, len: usize) -> usize {
    if buf.is_null() || len == 0 {
        return 0;
    }
    // SAFETY: the caller's obligation: `len` writable bytes at `buf`, used by nothing else
    // during this call.
    let bytes = unsafe { core::slice::from_raw_parts_mut(buf, len) };
    let mut out = CBuffer::new(bytes);
    let _ = hv::write_memory_types(&mut out);
    out.finish()
}

/// Frames of the pool in use (0 after every CPU was devirtualized and its stack freed).
#[unsafe(no_mangle)]
pub extern "C" fn hvkit_rust_live_frames() -> u64 {
    PLATFORM.live_frames() as u64
}
