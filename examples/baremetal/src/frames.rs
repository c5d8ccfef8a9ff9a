//! A frame pool for hvkit-paging's table builder: a fixed run of zeroed static pages, handed out
//! once each (the kernel runs identity-mapped, so a frame's physical address is its pointer).
// UNSAFETY: implementing hvkit-paging's `unsafe` `TableMemory`/`FrameAllocator` traits means
// promising pointer validity and exclusive frames; the pool keeps only a raw base pointer.
#![expect(unsafe_code, reason = "implements the unsafe frame-allocator traits")]

use core::ptr::NonNull;

use hvkit_paging::{FrameAllocator, HostPhysAddr, TableMemory};

use crate::sync::Page;

/// A bump allocator over `len` static pages starting at `base`.
#[derive(Debug)]
pub struct FramePool {
    base: NonNull<Page>,
    len: usize,
    next: usize,
}

impl FramePool {
    /// A pool over `pages`, which it owns for the rest of the run.
    pub fn new(pages: &'static mut [Page]) -> Self {
        Self {
            len: pages.len(),
            base: NonNull::from(pages).cast(),
            next: 0,
        }
    }

    fn start(&self) -> u64 {
        self.base.as_ptr() as u64
    }
}

// SAFETY: the pool owns its pages outright (the `&'static mut` it was made from is gone), so moving
// it to another context (this kernel has one CPU) moves that ownership with it.
unsafe impl Send for FramePool {}

// SAFETY: every frame handed out lies in the pool, whose pages are 4 KiB-aligned, valid for
// reads and writes, and reachable through no Rust reference (the `&'static mut` was turned into
// this raw base); identity mapping makes the pointer of a frame its address, so the same frame
// gives the same pointer and distinct frames do not overlap; other addresses panic.
unsafe impl TableMemory for FramePool {
    fn frame_ptr(&self, frame: HostPhysAddr) -> NonNull<u8> {
        let addr = frame.as_u64();
        let end = self.start() + (self.len as u64) * 4096;
        assert!(
            (self.start()..end).contains(&addr) && addr % 4096 == 0,
            "frame {addr:#x} is not in the pool"
        );
        // The offset keeps the pointer's provenance (the pool's pages).
        let offset = (addr - self.start()) as usize / 4096;
        // SAFETY: `offset` < `len`, so the result stays inside the pool.
        unsafe { self.base.add(offset) }.cast()
    }
}

// SAFETY: frames are handed out once each (the bump index only grows; `free` keeps them out of
// circulation), zeroed before they are returned, and lie in the pool that `frame_ptr` covers.
unsafe impl FrameAllocator for FramePool {
    fn allocate_zeroed(&mut self) -> Option<HostPhysAddr> {
        if self.next == self.len {
            return None;
        }
        // SAFETY: `next` < `len`: a page of the pool that was never handed out.
        let page = unsafe { self.base.add(self.next) };
        self.next += 1;
        // SAFETY: the page is valid for writes and nothing else refers to it.
        unsafe { page.write(Page::zeroed()) };
        HostPhysAddr::try_new(page.as_ptr() as u64).ok()
    }

    unsafe fn free(&mut self, _frame: HostPhysAddr) {
        // A bump pool: freed frames are simply never handed out again.
    }
}
