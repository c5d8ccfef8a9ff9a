//! What a host environment provides to a vCPU: memory, CPUs and logging.
//!
//! [`Platform`] is implemented once per environment: the bare-metal example, a kernel module, and
//! `host::HostPlatform` for host tests (feature `host`). The vCPU takes
//! every frame it needs from it: VMCS/VMCB pages, MSR and I/O bitmaps (contiguous runs), XSAVE
//! areas, EPT/NPT tables and guest RAM, and gives them back when it is dropped.
//!
//! [`PlatformFrames`] adapts a platform to `hvkit-paging`'s [`FrameAllocator`] and
//! [`TableMemory`], so EPT and nested page tables are built from the platform's frames.
//!
//! # A bare-metal platform
//! An identity-mapped kernel with one CPU can hand out frames from a static pool with a bump
//! pointer (never reusing them); this is what the emulator runs of this crate used:
//!
//! ```
//! use core::cell::Cell;
//! use core::ptr::NonNull;
//! use hvkit_paging::HostPhysAddr;
//! use hvkit_vcpu::{LogLevel, Platform};
//!
//! /// Frames `base .. base + len * 4096` of identity-mapped memory that nothing else uses.
//! struct Bump {
//!     base: u64,
//!     len: usize,
//!     next: Cell<usize>,
//! }
//!
//! // SAFETY: runs are handed out once each from memory this value owns, zeroed, contiguous and
//! // identity-mapped (physical address = pointer); one CPU.
//! unsafe impl Platform for Bump {
//!     fn allocate_frames(&self, count: usize) -> Option<HostPhysAddr> {
//!         let first = self.next.get();
//!         if first + count > self.len {
//!             return None;
//!         }
//!         self.next.set(first + count);
//!         let addr = self.base + first as u64 * 4096;
//!         // SAFETY: the run is inside the pool and handed out for the first time.
//!         unsafe { core::ptr::write_bytes(addr as *mut u8, 0, count * 4096) };
//!         HostPhysAddr::try_new(addr).ok()
//!     }
//!     unsafe fn free_frames(&self, _first: HostPhysAddr, _count: usize) {}
//!     fn phys_to_virt(&self, phys: HostPhysAddr) -> Option<NonNull<u8>> {
//!         NonNull::new(phys.as_u64() as *mut u8)
//!     }
//!     fn virt_to_phys(&self, virt: NonNull<u8>) -> Option<HostPhysAddr> {
//!         HostPhysAddr::try_new(virt.as_ptr() as u64).ok()
//!     }
//!     fn current_cpu(&self) -> usize {
//!         0
//!     }
//!     fn cpu_count(&self) -> usize {
//!         1
//!     }
//!     fn run_on_each_cpu(&self, f: &(dyn Fn(usize) + Sync)) {
//!         f(0);
//!     }
//!     fn log(&self, _level: LogLevel, _message: core::fmt::Arguments<'_>) {}
//! }
//! # let _ = Bump { base: 0, len: 0, next: Cell::new(0) };
//! ```
//!
//! Manuals: Intel® 64 and IA-32 Architectures Software Developer's Manual, Combined Volumes,
//! Order Number 325462-086US, December 2024, Vol. 3C 25.2 "Format of the VMCS Region" (4-KByte
//! aligned regions); AMD64 Architecture Programmer's Manual Volume 2: System Programming,
//! Publication No. 24593, Revision 3.42, March 2024, 15.5 "VMRUN Instruction" (4-KByte aligned
//! VMCB) and 15.10/15.11 (the 12-KByte I/O and 8-KByte MSR permission maps, physically
//! contiguous).
// UNSAFETY: declares the `unsafe trait Platform` (a wrong implementation hands the hardware memory
// the program does not own) and implements hvkit-paging's unsafe frame traits on top of it.
#![expect(
    unsafe_code,
    reason = "declares the unsafe Platform trait and adapts it to the unsafe paging traits"
)]

use core::fmt;
use core::ptr::NonNull;

use hvkit_paging::{FrameAllocator, HostPhysAddr, TableMemory};

/// The size of a frame: 4 KiB.
pub const FRAME_SIZE: usize = 4096;

/// How important a log message is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum LogLevel {
    /// Something failed; the vCPU cannot continue as asked.
    Error,
    /// Something unusual that the vCPU handled (a guest fault it reflected, a missing feature).
    Warn,
    /// Set-up milestones (capabilities found, VMCS built).
    Info,
    /// Per-exit detail.
    Debug,
}

/// The services of a host environment: frames, address translation, CPUs and logging.
///
/// All methods take `&self`: a platform is shared by every vCPU (one per CPU), so
/// implementations use interior mutability (a lock around the frame allocator).
///
/// # Safety
/// Implementors promise that:
/// - every run returned by [`allocate_frames`](Self::allocate_frames) is `count` frames that are
///   4 KiB aligned, physically contiguous, filled with zeroes, and used by nothing else until it
///   is passed to [`free_frames`](Self::free_frames);
/// - for every frame of such a run, [`phys_to_virt`](Self::phys_to_virt) returns a pointer to
///   its 4096 bytes that is valid for reads and writes, and the run is contiguous in that
///   mapping too (`phys_to_virt(first + i * 4096) == phys_to_virt(first) + i * 4096`); the same
///   address always gives the same pointer;
/// - [`virt_to_phys`](Self::virt_to_phys) is the inverse of `phys_to_virt` on those frames, and
///   for a pointer to any other memory of the running program (such as a stack) it returns the
///   physical address the processor would use for it, or `None`;
/// - [`current_cpu`](Self::current_cpu) returns a distinct index below
///   [`cpu_count`](Self::cpu_count) on each logical processor, and the caller's code does not
///   migrate between processors while it holds a vCPU (the vCPU's VMCS or VMCB is per processor).
pub unsafe trait Platform {
    /// `count` (at least 1) physically contiguous, zeroed, 4 KiB-aligned frames, or `None` when
    /// memory is exhausted.
    fn allocate_frames(&self, count: usize) -> Option<HostPhysAddr>;

    /// Gives back a run from [`allocate_frames`](Self::allocate_frames).
    ///
    /// # Safety
    /// - `first` and `count` are exactly a run returned by `allocate_frames` and not freed since;
    /// - nothing (no VMCS/VMCB field, page table or pointer) uses its frames any more.
    unsafe fn free_frames(&self, first: HostPhysAddr, count: usize);

    /// Where the processor can reach physical address `phys` (within an allocated run, or any
    /// memory the environment maps), or `None` if it is not mapped.
    fn phys_to_virt(&self, phys: HostPhysAddr) -> Option<NonNull<u8>>;

    /// The physical address of the memory at `virt`, or `None` if it has none.
    fn virt_to_phys(&self, virt: NonNull<u8>) -> Option<HostPhysAddr>;

    /// The index of the logical processor running the caller (0-based).
    fn current_cpu(&self) -> usize;

    /// The number of logical processors.
    fn cpu_count(&self) -> usize;

    /// Runs `f` on every logical processor (with its index), returning when all are done.
    fn run_on_each_cpu(&self, f: &(dyn Fn(usize) + Sync));

    /// Writes a log message.
    fn log(&self, level: LogLevel, message: fmt::Arguments<'_>);

    /// One zeroed frame (see [`allocate_frames`](Self::allocate_frames)).
    fn allocate_frame(&self) -> Option<HostPhysAddr> {
        self.allocate_frames(1)
    }
}

// SAFETY: a shared reference forwards every call to the same implementation.
unsafe impl<P: Platform + ?Sized> Platform for &P {
    fn allocate_frames(&self, count: usize) -> Option<HostPhysAddr> {
        (**self).allocate_frames(count)
    }
    unsafe fn free_frames(&self, first: HostPhysAddr, count: usize) {
        // SAFETY: the caller's obligations are passed on unchanged.
        unsafe { (**self).free_frames(first, count) }
    }
    fn phys_to_virt(&self, phys: HostPhysAddr) -> Option<NonNull<u8>> {
        (**self).phys_to_virt(phys)
    }
    fn virt_to_phys(&self, virt: NonNull<u8>) -> Option<HostPhysAddr> {
        (**self).virt_to_phys(virt)
    }
    fn current_cpu(&self) -> usize {
        (**self).current_cpu()
    }
    fn cpu_count(&self) -> usize {
        (**self).cpu_count()
    }
    fn run_on_each_cpu(&self, f: &(dyn Fn(usize) + Sync)) {
        (**self).run_on_each_cpu(f);
    }
    fn log(&self, level: LogLevel, message: fmt::Arguments<'_>) {
        (**self).log(level, message);
    }
}

/// A run of frames owned by a vCPU: freed exactly once, when dropped.
///
/// Type invariant: `first`/`count` were returned by `platform.allocate_frames` and are not freed
/// elsewhere; `ptr` is `platform.phys_to_virt(first)`.
pub struct OwnedFrames<'p, P: Platform + ?Sized> {
    platform: &'p P,
    first: HostPhysAddr,
    count: usize,
    ptr: NonNull<u8>,
}

impl<P: Platform + ?Sized> fmt::Debug for OwnedFrames<'_, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnedFrames")
            .field("first", &self.first)
            .field("count", &self.count)
            .finish_non_exhaustive()
    }
}

impl<'p, P: Platform + ?Sized> OwnedFrames<'p, P> {
    /// `count` zeroed contiguous frames from `platform`.
    ///
    /// # Errors
    /// [`OutOfMemory`] when the platform has no such run or does not map it.
    pub fn allocate(platform: &'p P, count: usize) -> Result<Self, OutOfMemory> {
        let count = count.max(1);
        let first = platform.allocate_frames(count).ok_or(OutOfMemory(count))?;
        let Some(ptr) = platform.phys_to_virt(first) else {
            // SAFETY: just allocated, never used.
            unsafe { platform.free_frames(first, count) };
            return Err(OutOfMemory(count));
        };
        Ok(Self {
            platform,
            first,
            count,
            ptr,
        })
    }

    /// The physical address of the first frame.
    #[must_use]
    pub fn phys(&self) -> HostPhysAddr {
        self.first
    }

    /// The number of frames.
    #[must_use]
    pub fn count(&self) -> usize {
        self.count
    }

    /// The length in bytes.
    #[must_use]
    pub fn len_bytes(&self) -> usize {
        self.count * FRAME_SIZE
    }

    /// Where the run is mapped (valid for `len_bytes()` bytes of reads and writes while `self`
    /// lives).
    #[must_use]
    pub fn as_ptr(&self) -> NonNull<u8> {
        self.ptr
    }

    /// Gives up ownership without freeing (the caller frees with the returned address and count).
    #[must_use]
    pub fn into_raw(self) -> (HostPhysAddr, usize) {
        let raw = (self.first, self.count);
        core::mem::forget(self);
        raw
    }
}

impl<P: Platform + ?Sized> Drop for OwnedFrames<'_, P> {
    fn drop(&mut self) {
        // SAFETY: by the type invariant the run came from this platform and is freed only here;
        // whoever put its address into hardware structures stopped using it before dropping.
        unsafe { self.platform.free_frames(self.first, self.count) };
    }
}

/// The platform had no free run of this many frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("out of memory: no run of {0} free frame(s)")]
pub struct OutOfMemory(pub usize);

/// A platform seen as `hvkit-paging`'s [`FrameAllocator`] and [`TableMemory`] (a `Copy` handle).
#[derive(Debug)]
pub struct PlatformFrames<'p, P: Platform + ?Sized>(pub &'p P);

impl<P: Platform + ?Sized> Clone for PlatformFrames<'_, P> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<P: Platform + ?Sized> Copy for PlatformFrames<'_, P> {}

// SAFETY: `Platform`'s contract gives a stable pointer to the 4096 bytes of every allocated frame;
// other addresses panic as `TableMemory` requires.
unsafe impl<P: Platform + ?Sized> TableMemory for PlatformFrames<'_, P> {
    #[expect(
        clippy::panic,
        reason = "TableMemory requires a panic for addresses that are not table frames"
    )]
    fn frame_ptr(&self, frame: HostPhysAddr) -> NonNull<u8> {
        match self.0.phys_to_virt(frame) {
            Some(ptr) => ptr,
            None => panic!("platform does not map frame {frame:?}"),
        }
    }
}

// SAFETY: frames come from `Platform::allocate_frames(1)`, which promises zeroed, aligned,
// exclusively owned frames that `phys_to_virt` (and so `frame_ptr`) covers.
unsafe impl<P: Platform + ?Sized> FrameAllocator for PlatformFrames<'_, P> {
    fn allocate_zeroed(&mut self) -> Option<HostPhysAddr> {
        self.0.allocate_frames(1)
    }

    unsafe fn free(&mut self, frame: HostPhysAddr) {
        // SAFETY: the caller guarantees `frame` came from `allocate_zeroed` (a 1-frame run) and
        // is unused.
        unsafe { self.0.free_frames(frame, 1) }
    }
}
