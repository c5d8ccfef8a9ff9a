//! Host-side memory for tests, fuzzers and benchmarks: one contiguous arena that is table memory, a
//! tracking frame allocator and physical memory at once.
//!
//! The arena pretends to be physical memory starting at a chosen base address. It counts every
//! allocation, refuses double frees and frees of frames it never handed out (a panic: these are bugs
//! in the code under test), fails allocations on demand (to test that errors leave tables unchanged),
//! and panics on drop if frames are still allocated (a leak), unless the thread is already panicking.
//
// UNSAFETY: the arena owns a raw heap allocation that it hands out as 4 KiB frames through raw
// pointers (that is what `TableMemory` is), and it reads and writes that memory for `PhysMemory`.
#![expect(
    unsafe_code,
    reason = "raw heap allocation handed out as page-table frames"
)]
#![expect(
    clippy::panic,
    reason = "the host arena is a test double: misuse (double free, leak, foreign frame) must fail the test"
)]

#[cfg(not(test))]
extern crate std;

use core::cell::RefCell;
use core::ptr::NonNull;
use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::vec::Vec;

use crate::addr::HostPhysAddr;
use crate::memory::{FrameAllocator, MemoryError, PhysMemory, TableMemory};

const FRAME: usize = 4096;

#[derive(Debug)]
struct State {
    live: Vec<bool>,
    free: Vec<usize>,
    next: usize,
    live_count: usize,
    allocations: u64,
    frees: u64,
    fail_after: Option<usize>,
}

/// A contiguous block of host memory posing as physical frames `base .. base + frames * 4096`.
#[derive(Debug)]
pub struct HostArena {
    base: u64,
    frames: usize,
    region: NonNull<u8>,
    state: RefCell<State>,
}

impl HostArena {
    /// Default base address: 1 GiB, below 4 GiB so 32-bit and PAE tables can reference it.
    pub const DEFAULT_BASE: u64 = 0x4000_0000;

    /// An arena of `frames` frames (at least one) at [`Self::DEFAULT_BASE`].
    #[must_use]
    pub fn new(frames: usize) -> Self {
        Self::with_base(HostPhysAddr::new_truncate(Self::DEFAULT_BASE), frames)
    }

    /// An arena of `frames` frames (at least one) whose first frame has address `base`
    /// (rounded down to 4 KiB).
    ///
    /// # Panics
    /// If the host cannot allocate the memory.
    #[must_use]
    pub fn with_base(base: HostPhysAddr, frames: usize) -> Self {
        let frames = frames.max(1);
        let layout = Self::layout(frames);
        // SAFETY: the layout has a non-zero size.
        let raw = unsafe { alloc_zeroed(layout) };
        let Some(region) = NonNull::new(raw) else {
            panic!("host arena: cannot allocate {frames} frames");
        };
        Self {
            base: base.as_u64() & !0xfff,
            frames,
            region,
            state: RefCell::new(State {
                live: std::vec![false; frames],
                free: Vec::new(),
                next: 0,
                live_count: 0,
                allocations: 0,
                frees: 0,
                fail_after: None,
            }),
        }
    }

    fn layout(frames: usize) -> Layout {
        match Layout::from_size_align(frames * FRAME, FRAME) {
            Ok(l) => l,
            Err(_) => panic!("host arena: {frames} frames do not fit a layout"),
        }
    }

    /// First address of the arena.
    #[must_use]
    pub fn base(&self) -> HostPhysAddr {
        HostPhysAddr::new_truncate(self.base)
    }

    /// Size of the arena in bytes.
    #[must_use]
    pub fn len_bytes(&self) -> u64 {
        (self.frames * FRAME) as u64
    }

    /// Lets `n` more allocations succeed, then fails every one (`None`: never fail).
    pub fn fail_after(&self, n: Option<usize>) {
        self.state.borrow_mut().fail_after = n;
    }

    /// Frames currently allocated.
    #[must_use]
    pub fn live_frames(&self) -> usize {
        self.state.borrow().live_count
    }

    /// Successful allocations so far.
    #[must_use]
    pub fn allocations(&self) -> u64 {
        self.state.borrow().allocations
    }

    /// Frees so far.
    #[must_use]
    pub fn frees(&self) -> u64 {
        self.state.borrow().frees
    }

    /// A frame of the arena that the allocator has not handed out, for use as plain data (guest
    /// tables written by hand, pages the walker reads). It stays allocated until freed.
    ///
    /// # Panics
    /// If the arena is exhausted.
    #[must_use]
    pub fn take_frame(&self) -> HostPhysAddr {
        let mut me = self;
        match me.allocate_zeroed() {
            Some(f) => f,
            None => panic!("host arena exhausted"),
        }
    }

    /// Returns a frame obtained with [`Self::take_frame`].
    ///
    /// # Panics
    /// On a double free or a foreign frame.
    pub fn give_back(&self, frame: HostPhysAddr) {
        self.release(frame);
    }

    /// Marks every frame free (for tables some other code built in the arena and will not free,
    /// such as a peer library in a benchmark).
    pub fn reset(&self) {
        let mut st = self.state.borrow_mut();
        st.frees += st.live_count as u64;
        st.live.iter_mut().for_each(|l| *l = false);
        st.live_count = 0;
        // Every frame handed out so far becomes reusable (and is zeroed when handed out again).
        st.free = (0..st.next).rev().collect();
    }

    fn index(&self, addr: u64) -> Option<usize> {
        let off = addr.checked_sub(self.base)?;
        let idx = usize::try_from(off / FRAME as u64).ok()?;
        (idx < self.frames).then_some(idx)
    }

    fn release(&self, frame: HostPhysAddr) {
        let Some(idx) = self
            .index(frame.as_u64())
            .filter(|_| frame.as_u64() & 0xfff == 0)
        else {
            panic!("host arena: free of foreign frame {frame:?}");
        };
        let mut st = self.state.borrow_mut();
        if !st.live[idx] {
            panic!("host arena: double free of {frame:?}");
        }
        st.live[idx] = false;
        st.live_count -= 1;
        st.frees += 1;
        st.free.push(idx);
    }

    fn byte_ptr(&self, addr: HostPhysAddr, width: u64) -> Result<NonNull<u8>, MemoryError> {
        let a = addr.as_u64();
        if a & (width - 1) != 0 {
            return Err(MemoryError(addr));
        }
        let off = a.checked_sub(self.base).ok_or(MemoryError(addr))?;
        if off + width > self.len_bytes() {
            return Err(MemoryError(addr));
        }
        let off = usize::try_from(off).map_err(|_| MemoryError(addr))?;
        // SAFETY: `off + width` is within the allocation (checked above).
        Ok(unsafe { self.region.add(off) })
    }
}

impl Drop for HostArena {
    fn drop(&mut self) {
        let live = self.state.get_mut().live_count;
        // SAFETY: `region` was allocated in `with_base` with this same layout and is freed once.
        unsafe { dealloc(self.region.as_ptr(), Self::layout(self.frames)) };
        if live != 0 && !std::thread::panicking() {
            panic!("host arena: {live} frame(s) leaked");
        }
    }
}

// SAFETY: `frame_ptr` returns a pointer into the arena's own allocation at a 4 KiB-aligned offset;
// frames are disjoint, stable, and only reached through raw pointers. Foreign addresses panic.
unsafe impl TableMemory for HostArena {
    #[inline(always)]
    fn frame_ptr(&self, frame: HostPhysAddr) -> NonNull<u8> {
        let off = frame.as_u64().wrapping_sub(self.base);
        if off >= self.len_bytes() {
            panic!("host arena: {frame:?} is not an arena frame");
        }
        // SAFETY: `off` is below the allocation size (checked), and `usize` holds it since it is
        // below `frames * 4096`, which is a `usize`.
        unsafe { self.region.add((off & !0xfff) as usize) }
    }
}

// SAFETY: frames come from the arena (so `frame_ptr` covers them), are zeroed before being handed
// out, and are tracked so none is handed out twice while live.
unsafe impl FrameAllocator for &HostArena {
    fn allocate_zeroed(&mut self) -> Option<HostPhysAddr> {
        let arena: &HostArena = self;
        let mut st = arena.state.borrow_mut();
        if let Some(n) = st.fail_after.as_mut() {
            if *n == 0 {
                return None;
            }
            *n -= 1;
        }
        let idx = if let Some(i) = st.free.pop() {
            // SAFETY: `i` < frames, so the 4096 bytes at `i * 4096` are inside the allocation.
            unsafe {
                arena
                    .region
                    .as_ptr()
                    .wrapping_add(i * FRAME)
                    .write_bytes(0, FRAME)
            };
            i
        } else if st.next < arena.frames {
            st.next += 1;
            st.next - 1
        } else {
            return None;
        };
        st.live[idx] = true;
        st.live_count += 1;
        st.allocations += 1;
        Some(HostPhysAddr::new_truncate(
            arena.base + (idx * FRAME) as u64,
        ))
    }

    unsafe fn free(&mut self, frame: HostPhysAddr) {
        self.release(frame);
    }
}

impl PhysMemory for HostArena {
    fn read_u64(&self, addr: HostPhysAddr) -> Result<u64, MemoryError> {
        let p = self.byte_ptr(addr, 8)?;
        // SAFETY: in bounds and 8-aligned (checked by `byte_ptr`); raw-pointer access only.
        Ok(unsafe { p.cast::<u64>().read_volatile() })
    }

    fn write_u64(&self, addr: HostPhysAddr, value: u64) -> Result<(), MemoryError> {
        let p = self.byte_ptr(addr, 8)?;
        // SAFETY: as in `read_u64`.
        unsafe { p.cast::<u64>().write_volatile(value) };
        Ok(())
    }

    fn read_u32(&self, addr: HostPhysAddr) -> Result<u32, MemoryError> {
        let p = self.byte_ptr(addr, 4)?;
        // SAFETY: in bounds and 4-aligned (checked by `byte_ptr`).
        Ok(unsafe { p.cast::<u32>().read_volatile() })
    }

    fn write_u32(&self, addr: HostPhysAddr, value: u32) -> Result<(), MemoryError> {
        let p = self.byte_ptr(addr, 4)?;
        // SAFETY: as in `read_u32`.
        unsafe { p.cast::<u32>().write_volatile(value) };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracks_frames() {
        let arena = HostArena::new(4);
        let mut a = &arena;
        let f1 = a.allocate_zeroed();
        let f2 = a.allocate_zeroed();
        assert_eq!(
            f1,
            Some(HostPhysAddr::new_truncate(HostArena::DEFAULT_BASE))
        );
        assert_ne!(f1, f2);
        assert_eq!(arena.live_frames(), 2);
        let f1 = f1.unwrap_or_default();
        arena.write_u64(f1, 0xdead).unwrap_or_default();
        // SAFETY: f1 came from this arena and is not used any more.
        unsafe { a.free(f1) };
        arena.fail_after(Some(1));
        let f3 = a.allocate_zeroed().unwrap_or_default();
        assert_eq!(f3, f1, "freed frame is reused");
        assert_eq!(arena.read_u64(f3), Ok(0), "reused frame is zeroed");
        assert_eq!(a.allocate_zeroed(), None, "fail_after");
        arena.fail_after(None);
        assert_eq!(
            arena.read_u64(HostPhysAddr::new_truncate(1)),
            Err(MemoryError(HostPhysAddr::new_truncate(1)))
        );
        arena.give_back(f3);
        arena.give_back(f2.unwrap_or_default());
        assert_eq!(arena.live_frames(), 0);
    }

    #[test]
    #[should_panic(expected = "double free")]
    fn double_free_panics() {
        let arena = HostArena::new(2);
        let f = arena.take_frame();
        arena.give_back(f);
        arena.give_back(f);
    }

    #[test]
    #[should_panic(expected = "leaked")]
    fn leak_panics() {
        let arena = HostArena::new(2);
        let _ = arena.take_frame();
    }
}
