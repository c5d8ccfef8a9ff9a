//! The bare-metal [`Platform`] for hvkit-vcpu: frames from the kernel's allocator over the boot
//! memory map ([`crate::frames`]), zeroed when handed out, identity-mapped (physical address =
//! pointer), one CPU. The allocator counts the frames that are out, so a run can check that a
//! vCPU allocates nothing per exit and gives everything back when dropped; frames given back are
//! handed out again.
// UNSAFETY: implementing the `unsafe trait Platform` promises valid, exclusive, zeroed frames.
#![expect(unsafe_code, reason = "implements hvkit-vcpu's unsafe Platform trait")]

use core::fmt;
use core::ptr::NonNull;

use hvkit_paging::HostPhysAddr;
use hvkit_vcpu::{LogLevel, Platform};

use crate::boot::IDENTITY_MAP_END;
use crate::frames;
use crate::println;

/// The platform over the frame allocator (which `frames::init` started).
#[derive(Debug)]
pub struct MapPlatform {
    _private: (),
}

impl MapPlatform {
    /// The platform; `frames::init` has started the allocator.
    pub const fn new() -> Self {
        Self { _private: () }
    }

    /// Frames handed out and not given back (by this platform and by the page-table pools).
    pub fn frames_in_use(&self) -> usize {
        frames::in_use()
    }
}

// SAFETY: runs come from `frames::allocate_zeroed`: contiguous, 4 KiB-aligned, zeroed, usable
// memory of the boot map below `IDENTITY_MAP_END` (not the kernel, the boot information or a
// module), marked allocated until `free_frames` gives them back; the kernel is identity-mapped
// over that range, so `phys_to_virt`/`virt_to_phys` are the identity there; there is one CPU and
// `run_on_each_cpu` runs on it.
unsafe impl Platform for MapPlatform {
    fn allocate_frames(&self, count: usize) -> Option<HostPhysAddr> {
        if count == 0 {
            return None;
        }
        frames::allocate_zeroed(count)
    }

    unsafe fn free_frames(&self, first: HostPhysAddr, count: usize) {
        // SAFETY: forwarded: the caller no longer uses the run.
        if let Err(e) = unsafe { frames::free(first, count) } {
            println!("FAIL frames: a vCPU gave back a run that is not out: {e}");
        }
    }

    fn phys_to_virt(&self, phys: HostPhysAddr) -> Option<NonNull<u8>> {
        // The whole low 4 GiB is identity-mapped by the boot stub.
        (phys.as_u64() < IDENTITY_MAP_END)
            .then(|| {
                NonNull::new(core::ptr::with_exposed_provenance_mut::<u8>(
                    phys.as_u64() as usize
                ))
            })
            .flatten()
    }

    fn virt_to_phys(&self, virt: NonNull<u8>) -> Option<HostPhysAddr> {
        HostPhysAddr::try_new(virt.as_ptr() as u64).ok()
    }

    fn current_cpu(&self) -> usize {
        0
    }

    fn cpu_count(&self) -> usize {
        1
    }

    fn run_on_each_cpu(&self, f: &(dyn Fn(usize) + Sync)) {
        f(0);
    }

    fn log(&self, level: LogLevel, message: fmt::Arguments<'_>) {
        println!("vcpu {level:?}: {message}");
    }
}
