//! Entry reads and writes through [`TableMemory`] pointers.
//
// UNSAFETY: paging structures are memory the CPU also reads and writes (accessed/dirty flags), so
// entries are reached through raw volatile pointers, never long-lived references. This is the only
// place the table code dereferences those pointers.
#![expect(
    unsafe_code,
    reason = "volatile entry accesses through TableMemory pointers"
)]

use crate::addr::HostPhysAddr;
use crate::memory::TableMemory;

/// Reads the entry at `byte_offset` (masked into the frame and to the entry size) of `table`.
///
/// Callers pass only frames that are live tables of a page table whose frames came from the
/// `FrameAllocator` behind `mem` (the page-table invariant).
#[inline(always)]
pub(crate) fn read<M: TableMemory + ?Sized>(
    mem: &M,
    table: HostPhysAddr,
    byte_offset: usize,
    wide: bool,
) -> u64 {
    let base = mem.frame_ptr(table);
    if wide {
        let off = byte_offset & 0xff8;
        // SAFETY: `off` < 4096 and 8-aligned; `table` is a live frame of `mem`'s pool, for which
        // `TableMemory` promises 4096 valid, 8-aligned bytes not aliased by references.
        unsafe {
            base.as_ptr()
                .wrapping_add(off)
                .cast::<u64>()
                .read_volatile()
        }
    } else {
        let off = byte_offset & 0xffc;
        // SAFETY: as above with a 4-byte entry inside the frame.
        u64::from(unsafe {
            base.as_ptr()
                .wrapping_add(off)
                .cast::<u32>()
                .read_volatile()
        })
    }
}

/// Writes the entry at `byte_offset` (masked like [`read`]) of `table`.
#[inline(always)]
pub(crate) fn write<M: TableMemory + ?Sized>(
    mem: &M,
    table: HostPhysAddr,
    byte_offset: usize,
    wide: bool,
    value: u64,
) {
    let base = mem.frame_ptr(table);
    if wide {
        let off = byte_offset & 0xff8;
        // SAFETY: see `read`; the frame is writable by the `TableMemory` promise.
        unsafe {
            base.as_ptr()
                .wrapping_add(off)
                .cast::<u64>()
                .write_volatile(value)
        }
    } else {
        let off = byte_offset & 0xffc;
        #[expect(
            clippy::cast_possible_truncation,
            reason = "32-bit formats only produce 32-bit entries"
        )]
        let v = value as u32;
        // SAFETY: see `read`.
        unsafe {
            base.as_ptr()
                .wrapping_add(off)
                .cast::<u32>()
                .write_volatile(v)
        }
    }
}

/// Returns a table frame to its allocator.
///
/// Callers pass only frames the table code allocated from `ctx` and has already unlinked from every
/// table (the page-table invariant).
pub(crate) fn free_frame<C: crate::memory::FrameAllocator + ?Sized>(
    ctx: &mut C,
    frame: HostPhysAddr,
) {
    // SAFETY: by the caller contract above the frame came from this pool's `allocate_zeroed`, is
    // freed once, and no table references it any more.
    unsafe { ctx.free(frame) }
}
