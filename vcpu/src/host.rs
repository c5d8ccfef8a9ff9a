//! [`HostPlatform`]: a [`Platform`] over one host allocation, for tests (feature `host`).
//!
//! It poses a heap block as physical memory starting at [`HostPlatform::DEFAULT_BASE`], hands out
//! zeroed runs first-fit, refuses double frees, counts live frames and panics on drop if any
//! leaked. It has one CPU (index 0) and keeps log lines for inspection.
// UNSAFETY: allocates and zeroes the block posing as physical memory, and implements the unsafe
// `Platform` trait over it.
#![expect(
    unsafe_code,
    reason = "owns a raw host allocation that poses as physical memory"
)]

use core::cell::RefCell;
use core::fmt;
use core::ptr::NonNull;
use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::string::String;
use std::vec::Vec;

use hvkit_paging::HostPhysAddr;

use crate::platform::{FRAME_SIZE, LogLevel, Platform};

#[derive(Debug)]
struct State {
    /// One entry per frame: the run length starting there if allocated, 0 inside a run or free.
    run_at: Vec<usize>,
    live: Vec<bool>,
    live_frames: usize,
    fail_after: Option<usize>,
    log: Vec<(LogLevel, String)>,
}

/// A heap block posing as physical frames `base .. base + frames * 4096`, with one CPU.
#[derive(Debug)]
pub struct HostPlatform {
    base: u64,
    frames: usize,
    region: NonNull<u8>,
    state: RefCell<State>,
}

impl HostPlatform {
    /// The physical address of the first frame: 1 GiB (below 4 GiB, above typical guest RAM).
    pub const DEFAULT_BASE: u64 = 0x4000_0000;

    /// A platform with `frames` frames (at least 1).
    ///
    /// # Panics
    /// If the host cannot allocate the block.
    #[must_use]
    #[expect(clippy::panic, reason = "a test fixture without memory cannot run")]
    pub fn new(frames: usize) -> Self {
        let frames = frames.max(1);
        let layout = Self::layout(frames);
        // SAFETY: the layout has a non-zero size.
        let raw = unsafe { alloc_zeroed(layout) };
        let Some(region) = NonNull::new(raw) else {
            panic!("host platform: cannot allocate {frames} frames");
        };
        Self {
            base: Self::DEFAULT_BASE,
            frames,
            region,
            state: RefCell::new(State {
                run_at: std::vec![0; frames],
                live: std::vec![false; frames],
                live_frames: 0,
                fail_after: None,
                log: Vec::new(),
            }),
        }
    }

    #[expect(clippy::panic, reason = "a test fixture without memory cannot run")]
    fn layout(frames: usize) -> Layout {
        match Layout::from_size_align(frames * FRAME_SIZE, FRAME_SIZE) {
            Ok(layout) => layout,
            Err(_) => panic!("host platform: {frames} frames do not fit a layout"),
        }
    }

    /// Frames currently allocated.
    #[must_use]
    pub fn live_frames(&self) -> usize {
        self.state.borrow().live_frames
    }

    /// Makes allocation fail after `n` more successful runs (`None`: never).
    pub fn fail_after(&self, n: Option<usize>) {
        self.state.borrow_mut().fail_after = n;
    }

    /// The log lines written so far.
    #[must_use]
    pub fn log_lines(&self) -> Vec<(LogLevel, String)> {
        self.state.borrow().log.clone()
    }

    fn index(&self, phys: HostPhysAddr) -> Option<usize> {
        let off = phys.as_u64().checked_sub(self.base)?;
        let index = usize::try_from(off / FRAME_SIZE as u64).ok()?;
        (index < self.frames).then_some(index)
    }
}

impl Drop for HostPlatform {
    #[expect(clippy::panic, reason = "a leak fails the test that caused it")]
    fn drop(&mut self) {
        let live = self.state.get_mut().live_frames;
        // SAFETY: `region` was allocated in `new` with this layout and is freed once.
        unsafe { dealloc(self.region.as_ptr(), Self::layout(self.frames)) };
        if live != 0 && !std::thread::panicking() {
            panic!("host platform: {live} frame(s) leaked");
        }
    }
}

// SAFETY: runs are found first-fit among frames marked free, marked live until freed, and zeroed
// before being handed out; `phys_to_virt` maps the block linearly, so runs are contiguous in both
// spaces; there is one CPU, index 0; `virt_to_phys` inverts the linear map and refuses the rest.
unsafe impl Platform for HostPlatform {
    fn allocate_frames(&self, count: usize) -> Option<HostPhysAddr> {
        let count = count.max(1);
        let mut st = self.state.borrow_mut();
        if let Some(n) = st.fail_after.as_mut() {
            if *n == 0 {
                return None;
            }
            *n -= 1;
        }
        let mut start = 0;
        while start + count <= self.frames {
            match (start..start + count).find(|&i| st.live[i]) {
                Some(busy) => start = busy + 1,
                None => {
                    for i in start..start + count {
                        st.live[i] = true;
                    }
                    st.run_at[start] = count;
                    st.live_frames += count;
                    let run = self.region.as_ptr().wrapping_add(start * FRAME_SIZE);
                    // SAFETY: the run lies inside the allocation (checked by the loop bound) and
                    // is reached only through raw pointers.
                    unsafe { run.write_bytes(0, count * FRAME_SIZE) };
                    return Some(HostPhysAddr::new_truncate(
                        self.base + (start * FRAME_SIZE) as u64,
                    ));
                }
            }
        }
        None
    }

    #[expect(clippy::panic, reason = "a bad free fails the test that caused it")]
    unsafe fn free_frames(&self, first: HostPhysAddr, count: usize) {
        let count = count.max(1);
        let mut st = self.state.borrow_mut();
        let Some(index) = self.index(first) else {
            panic!("host platform: free of foreign frame {first:?}");
        };
        if st.run_at[index] != count {
            panic!(
                "host platform: free of {count} frame(s) at {first:?}, which is not an allocated run (run length {})",
                st.run_at[index]
            );
        }
        st.run_at[index] = 0;
        for i in index..index + count {
            st.live[i] = false;
        }
        st.live_frames -= count;
    }

    fn phys_to_virt(&self, phys: HostPhysAddr) -> Option<NonNull<u8>> {
        let index = self.index(phys)?;
        let offset = index * FRAME_SIZE + (phys.as_u64() % FRAME_SIZE as u64) as usize;
        // SAFETY: `offset` is inside the allocation because `index < frames`.
        Some(unsafe { self.region.add(offset) })
    }

    fn virt_to_phys(&self, virt: NonNull<u8>) -> Option<HostPhysAddr> {
        let offset = (virt.as_ptr() as usize).checked_sub(self.region.as_ptr() as usize)?;
        (offset < self.frames * FRAME_SIZE)
            .then(|| HostPhysAddr::new_truncate(self.base + offset as u64))
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
        self.state
            .borrow_mut()
            .log
            .push((level, std::format!("{message}")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::{OwnedFrames, PlatformFrames};
    use hvkit_paging::{EptAttrs, EptTable, GuestPhysAddr, TableConfig};

    #[test]
    fn contiguous_runs_are_zeroed_tracked_and_reused() {
        let p = HostPlatform::new(8);
        let a = OwnedFrames::allocate(&p, 3).unwrap();
        let b = OwnedFrames::allocate(&p, 2).unwrap();
        assert_eq!(a.phys().as_u64(), HostPlatform::DEFAULT_BASE);
        assert_eq!(b.phys().as_u64(), HostPlatform::DEFAULT_BASE + 3 * 4096);
        assert_eq!(p.live_frames(), 5);
        // SAFETY: the run is 3 frames of platform memory owned by `a`.
        unsafe { a.as_ptr().as_ptr().write_bytes(0xaa, a.len_bytes()) };
        drop(a);
        assert!(
            OwnedFrames::allocate(&p, 4).is_err(),
            "only 3 + 3 free, not contiguous 4"
        );
        let c = OwnedFrames::allocate(&p, 3).unwrap();
        let at = c.as_ptr().as_ptr().wrapping_add(2 * 4096 + 17);
        // SAFETY: `at` is inside the run `c` owns.
        let byte = unsafe { at.read() };
        assert_eq!(byte, 0, "reused frames are zeroed");
        assert_eq!(p.virt_to_phys(c.as_ptr()), Some(c.phys()));
        drop((b, c));
        assert_eq!(p.live_frames(), 0);
    }

    #[test]
    fn serves_paging_as_frame_allocator() {
        let p = HostPlatform::new(16);
        let mut ept = EptTable::new(PlatformFrames(&p), TableConfig::new(4)).unwrap();
        ept.map(
            GuestPhysAddr::ZERO,
            HostPhysAddr::new_truncate(0x1000_0000),
            0x1000,
            EptAttrs::RWX_WB,
        )
        .unwrap()
        .ignore();
        assert_eq!(p.live_frames(), 4);
        ept.free_all();
        assert_eq!(p.live_frames(), 0);
    }

    #[test]
    #[should_panic(expected = "leaked")]
    fn leak_is_reported() {
        let p = HostPlatform::new(2);
        let run = OwnedFrames::allocate(&p, 1).unwrap();
        let _ = run.into_raw();
    }

    #[test]
    fn injected_failure_and_logs() {
        let p = HostPlatform::new(4);
        p.fail_after(Some(0));
        assert_eq!(OwnedFrames::allocate(&p, 1).unwrap_err().0, 1);
        p.log(LogLevel::Info, format_args!("hello {}", 1));
        assert_eq!(p.log_lines(), [(LogLevel::Info, "hello 1".into())]);
    }
}
