//! The bare-metal [`Platform`] for hvkit-vcpu: frames from a static pool with a bump pointer,
//! identity-mapped (physical address = pointer), one CPU. It counts the frames it has out, so a
//! run can check that a vCPU allocates nothing per exit and gives everything back when dropped.
// UNSAFETY: implementing the `unsafe trait Platform` promises valid, exclusive, zeroed frames,
// and zeroing a run means writing through a raw pointer into the pool.
#![expect(unsafe_code, reason = "implements hvkit-vcpu's unsafe Platform trait")]

use core::cell::Cell;
use core::fmt;
use core::ptr::NonNull;

use hvkit_paging::HostPhysAddr;
use hvkit_vcpu::{LogLevel, Platform};

use crate::println;
use crate::sync::{Page, TakeOnce};

/// Pages in the pool: a guest's 2 MiB of RAM, its nested tables, VMCS/VMCB, bitmaps and
/// on-demand pages, several times over.
pub const POOL_PAGES: usize = 2048;

static POOL: TakeOnce<[Page; POOL_PAGES]> = TakeOnce::new([const { Page::zeroed() }; POOL_PAGES]);

/// A bump allocator over the static pool. Frames are not reused while any run is out; when
/// every run has come back (a vCPU was dropped), the pool starts over.
#[derive(Debug)]
pub struct BumpPlatform {
    base: NonNull<Page>,
    next: Cell<usize>,
    live: Cell<usize>,
}

impl BumpPlatform {
    /// The platform over the static pool, once per run (`None` the second time).
    pub fn take() -> Option<Self> {
        let pages = POOL.take()?;
        Some(Self {
            base: NonNull::from(pages).cast(),
            next: Cell::new(0),
            live: Cell::new(0),
        })
    }

    /// Frames handed out and not given back.
    pub fn frames_in_use(&self) -> usize {
        self.live.get()
    }
}

// SAFETY: runs come from the pool this value owns (the `&'static mut` it was made from is gone);
// each is handed out once (the bump index only grows while any run is out, and restarts only
// when all came back), zeroed, contiguous and 4 KiB-aligned; the kernel is identity-mapped, so
// `phys_to_virt`/`virt_to_phys` are the identity; there is one CPU and `run_on_each_cpu` runs
// on it.
unsafe impl Platform for BumpPlatform {
    fn allocate_frames(&self, count: usize) -> Option<HostPhysAddr> {
        if self.live.get() == 0 {
            self.next.set(0);
        }
        let first = self.next.get();
        if count == 0 || first + count > POOL_PAGES {
            return None;
        }
        self.next.set(first + count);
        self.live.set(self.live.get() + count);
        // SAFETY: `first + count` ≤ the pool's length, so the run lies inside the pool.
        let run = unsafe { self.base.add(first) };
        // SAFETY: the run is valid for writes and nothing else refers to it (handed out now).
        unsafe { core::ptr::write_bytes(run.as_ptr(), 0, count) };
        HostPhysAddr::try_new(run.as_ptr() as u64).ok()
    }

    unsafe fn free_frames(&self, _first: HostPhysAddr, count: usize) {
        self.live.set(self.live.get().saturating_sub(count));
    }

    fn phys_to_virt(&self, phys: HostPhysAddr) -> Option<NonNull<u8>> {
        // The whole low 4 GiB is identity-mapped by the boot stub.
        (phys.as_u64() < (1 << 32))
            .then(|| NonNull::new(phys.as_u64() as *mut u8))
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
