//! How page-table code reaches memory: the frame allocator, the frame-to-pointer map, and physical
//! memory reads for the walker.
//!
//! Manual: Intel® 64 and IA-32 Architectures Software Developer's Manual, Combined Volumes, Order
//! Number 325462-086US, December 2024, Vol. 3A Section 4.2 "Hierarchical Paging Structures: an
//! Overview" (every paging structure is one naturally aligned 4-KByte frame).
//!
//! [`FrameAllocator`] has [`TableMemory`] as a supertrait, so the value that hands out a frame is the
//! value that says where the frame is mapped: a table can never be given frames that its memory view
//! does not cover. Several tables share one pool by each owning a cheap handle (for example
//! `&HostArena`, or a `Copy` handle around a kernel's locked allocator).
//
// UNSAFETY: the two traits are `unsafe` because a wrong implementation (a frame handed out twice, a
// pointer to the wrong memory) makes the table code write to memory it does not own.
#![expect(
    unsafe_code,
    reason = "declares the unsafe FrameAllocator and TableMemory traits"
)]

use core::ptr::NonNull;

use crate::addr::HostPhysAddr;

/// Turns a table frame into a pointer the page-table code can read and write.
///
/// # Safety
/// Implementors promise that, for every frame currently handed out (and not yet freed) by the
/// [`FrameAllocator`] of the same value (or of a handle to the same pool):
/// - [`frame_ptr`](Self::frame_ptr) returns a pointer to 4096 bytes that are valid for reads and
///   writes, aligned to 8 bytes, and not reachable through any live Rust reference;
/// - the same frame always gives the same pointer and distinct frames never overlap;
/// - for any other address it panics instead of returning a pointer.
pub unsafe trait TableMemory {
    /// The pointer to the first byte of `frame` (4 KiB aligned).
    fn frame_ptr(&self, frame: HostPhysAddr) -> NonNull<u8>;
}

// SAFETY: a shared reference forwards to the same implementation, which keeps its promises.
unsafe impl<T: TableMemory + ?Sized> TableMemory for &T {
    #[inline(always)]
    fn frame_ptr(&self, frame: HostPhysAddr) -> NonNull<u8> {
        (**self).frame_ptr(frame)
    }
}

/// Hands out zeroed 4 KiB frames for paging structures and takes them back.
///
/// # Safety
/// Implementors promise that every frame returned by
/// [`allocate_zeroed`](Self::allocate_zeroed):
/// - is 4 KiB aligned and fits the implementation's [`TableMemory`] (see its obligations);
/// - is filled with zeroes;
/// - is not handed out again, nor used by anyone else, until it is passed to [`free`](Self::free).
pub unsafe trait FrameAllocator: TableMemory {
    /// A zeroed 4 KiB frame, or `None` when the pool is exhausted.
    fn allocate_zeroed(&mut self) -> Option<HostPhysAddr>;

    /// Returns `frame` to the pool.
    ///
    /// # Safety
    /// - `frame` was returned by `allocate_zeroed` of this pool and has not been freed since;
    /// - nothing (no page table, no CPU register such as an EPTP or CR3) uses it any more.
    unsafe fn free(&mut self, frame: HostPhysAddr);
}

// SAFETY: forwards to the implementation behind the mutable reference.
unsafe impl<T: FrameAllocator + ?Sized> FrameAllocator for &mut T {
    #[inline]
    fn allocate_zeroed(&mut self) -> Option<HostPhysAddr> {
        (**self).allocate_zeroed()
    }

    #[inline]
    unsafe fn free(&mut self, frame: HostPhysAddr) {
        // SAFETY: the caller's obligations are passed on unchanged.
        unsafe { (**self).free(frame) }
    }
}

// SAFETY: a mutable reference forwards to the same implementation.
unsafe impl<T: TableMemory + ?Sized> TableMemory for &mut T {
    #[inline(always)]
    fn frame_ptr(&self, frame: HostPhysAddr) -> NonNull<u8> {
        (**self).frame_ptr(frame)
    }
}

/// A physical address the walker could not read or write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("physical address {0:?} is not backed by memory")]
pub struct MemoryError(pub HostPhysAddr);

/// Host-physical memory as the two-dimensional walker sees it: guest page tables and EPT/NPT tables
/// are read (and their accessed/dirty flags written) through this trait, so the walker runs against
/// real memory, a host arena or a fuzzer's sparse map alike.
///
/// Writes take `&self`: guest memory is shared with running vCPUs, so implementations use interior
/// mutability (volatile or atomic accesses).
pub trait PhysMemory {
    /// Reads the naturally aligned 8 bytes at `addr`.
    ///
    /// # Errors
    /// [`MemoryError`] if `addr` is not backed.
    fn read_u64(&self, addr: HostPhysAddr) -> Result<u64, MemoryError>;

    /// Writes the naturally aligned 8 bytes at `addr`.
    ///
    /// # Errors
    /// [`MemoryError`] if `addr` is not backed.
    fn write_u64(&self, addr: HostPhysAddr, value: u64) -> Result<(), MemoryError>;

    /// Reads the naturally aligned 4 bytes at `addr` (32-bit paging entries).
    ///
    /// # Errors
    /// [`MemoryError`] if `addr` is not backed.
    fn read_u32(&self, addr: HostPhysAddr) -> Result<u32, MemoryError> {
        let word = self.read_u64(HostPhysAddr::new_truncate(addr.as_u64() & !7))?;
        let shift = (addr.as_u64() & 4) * 8;
        Ok(((word >> shift) & 0xffff_ffff) as u32)
    }

    /// Writes the naturally aligned 4 bytes at `addr`.
    ///
    /// # Errors
    /// [`MemoryError`] if `addr` is not backed.
    fn write_u32(&self, addr: HostPhysAddr, value: u32) -> Result<(), MemoryError> {
        let at = HostPhysAddr::new_truncate(addr.as_u64() & !7);
        let word = self.read_u64(at)?;
        let shift = (addr.as_u64() & 4) * 8;
        let word = (word & !(0xffff_ffff << shift)) | (u64::from(value) << shift);
        self.write_u64(at, word)
    }
}

impl<T: PhysMemory + ?Sized> PhysMemory for &T {
    fn read_u64(&self, addr: HostPhysAddr) -> Result<u64, MemoryError> {
        (**self).read_u64(addr)
    }
    fn write_u64(&self, addr: HostPhysAddr, value: u64) -> Result<(), MemoryError> {
        (**self).write_u64(addr, value)
    }
    fn read_u32(&self, addr: HostPhysAddr) -> Result<u32, MemoryError> {
        (**self).read_u32(addr)
    }
    fn write_u32(&self, addr: HostPhysAddr, value: u32) -> Result<(), MemoryError> {
        (**self).write_u32(addr, value)
    }
}
