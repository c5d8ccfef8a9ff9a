//! The kernel's frame allocator: one [`FrameBitmap`] over the usable memory of the boot memory
//! map ([`crate::memmap`]), behind a spin lock, that every frame user shares: the vCPU
//! [`Platform`](crate::platform::MapPlatform) and [`FramePool`], the frame source of
//! hvkit-paging's table builder. Frames are zeroed when they are handed out (memory from the map
//! holds whatever was there before) and counted while they are out.
//!
//! The kernel runs identity-mapped over the low 4 GiB (`boot.rs`), so a frame's physical
//! address is its pointer; the bitmap covers exactly that range (128 KiB of `.bss`).
// UNSAFETY: zeroing a frame writes through a pointer made from its physical address, and
// implementing hvkit-paging's `unsafe` `TableMemory`/`FrameAllocator` traits promises pointer
// validity and exclusive frames.
#![expect(
    unsafe_code,
    reason = "zeroes frames through the identity map; implements the unsafe frame-allocator traits"
)]

use core::ptr::NonNull;

use hvkit_paging::{FrameAllocator, HostPhysAddr, TableMemory};

use crate::boot::IDENTITY_MAP_END;
use crate::memmap::{FrameBitmap, FreeError, PAGE_SIZE, UsableMemory};
use crate::println;
use crate::sync::{SpinLock, TakeOnce};

/// Bitmap words: one bit per frame of the identity map.
const WORDS: usize = (IDENTITY_MAP_END / PAGE_SIZE / 64) as usize;

const _: () = assert!(FrameBitmap::covered(WORDS) == IDENTITY_MAP_END);

static BITMAP: TakeOnce<[u64; WORDS]> = TakeOnce::new([0; WORDS]);

static ALLOCATOR: SpinLock<Option<FrameBitmap<'static>>> = SpinLock::new(None);

/// Starts the allocator over `memory`, once; returns the frames it manages (`None` if it was
/// started already).
///
/// `memory` must leave out everything still in use: the kernel image, the boot information
/// and modules, and (through its bounds) memory outside the identity map.
pub fn init(memory: &UsableMemory) -> Option<usize> {
    let words = BITMAP.take()?;
    let bitmap = FrameBitmap::new(words, memory);
    let total = bitmap.total();
    ALLOCATOR.with(|a| *a = Some(bitmap));
    Some(total)
}

/// `count` contiguous zeroed frames, or `None` when there is no such run (or no allocator).
pub fn allocate_zeroed(count: usize) -> Option<HostPhysAddr> {
    let addr = ALLOCATOR.with(|a| a.as_mut()?.allocate(count))?;
    let ptr = core::ptr::with_exposed_provenance_mut::<u8>(addr as usize);
    // SAFETY: the run is usable memory of the boot map (not the kernel, the boot information or
    // a module) below `IDENTITY_MAP_END`, so identity-mapped and writable; the bitmap just
    // marked it allocated, so nothing else uses it; `count * 4096` bytes is its length.
    unsafe { core::ptr::write_bytes(ptr, 0, count * PAGE_SIZE as usize) };
    HostPhysAddr::try_new(addr).ok()
}

/// Gives back the run of `count` frames at `first`.
///
/// # Errors
/// The run was not handed out as such (a double free, say): nothing is freed.
///
/// # Safety
/// - nothing (no Rust reference, page table, VMCS/VMCB pointer or the guest) uses the run any
///   more, since it may be handed out again at once.
pub unsafe fn free(first: HostPhysAddr, count: usize) -> Result<(), FreeError> {
    ALLOCATOR.with(|a| match a.as_mut() {
        Some(bitmap) => bitmap.free(first.as_u64(), count),
        None => Err(FreeError::NotUsable {
            addr: first.as_u64(),
            count,
        }),
    })
}

/// Frames handed out and not given back.
pub fn in_use() -> usize {
    ALLOCATOR.with(|a| a.as_ref().map_or(0, FrameBitmap::in_use))
}

fn is_allocated(addr: u64) -> bool {
    ALLOCATOR.with(|a| a.as_ref().is_some_and(|b| b.is_allocated(addr)))
}

/// The frame source of hvkit-paging's table builder: frames from the shared allocator, given
/// back when the table frees them.
#[derive(Debug, Default, Clone, Copy)]
pub struct FramePool;

// SAFETY: every frame handed out comes from `allocate_zeroed` (usable memory of the boot map,
// identity-mapped below 4 GiB, marked allocated until freed, so reachable through no Rust
// reference); the identity map makes a frame's pointer its address, so the same frame gives
// the same pointer and distinct frames do not overlap; any address that is not an allocated
// frame panics.
unsafe impl TableMemory for FramePool {
    fn frame_ptr(&self, frame: HostPhysAddr) -> NonNull<u8> {
        let addr = frame.as_u64();
        assert!(
            is_allocated(addr),
            "frame {addr:#x} is not an allocated frame"
        );
        match NonNull::new(core::ptr::with_exposed_provenance_mut::<u8>(addr as usize)) {
            Some(ptr) => ptr,
            None => panic!("frame 0 is never usable"),
        }
    }
}

// SAFETY: frames come from `allocate_zeroed` (zeroed, 4 KiB-aligned, inside what `frame_ptr`
// accepts) and are marked allocated, so not handed out again, until `free` gives them back.
unsafe impl FrameAllocator for FramePool {
    fn allocate_zeroed(&mut self) -> Option<HostPhysAddr> {
        allocate_zeroed(1)
    }

    unsafe fn free(&mut self, frame: HostPhysAddr) {
        // SAFETY: forwarded: the table no longer uses the frame.
        if let Err(e) = unsafe { free(frame, 1) } {
            println!("FAIL frames: page-table frame given back: {e}");
        }
    }
}
