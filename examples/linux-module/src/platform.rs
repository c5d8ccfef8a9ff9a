//! The Linux [`Platform`]: frames from one physically contiguous pool that the C shim allocated
//! with `__get_free_pages` before any CPU was virtualized, addresses through the kernel's direct
//! map (`__va`/`__pa`: virtual = physical + `page_offset_base`), CPUs through the shim
//! (`smp_processor_id`, `on_each_cpu`) and logging through `printk`.
//!
//! Nothing here calls the kernel's allocator once a CPU runs as a guest: the guest kernel may
//! hold the allocator's locks at the moment it exits, so the hypervisor takes frames only from
//! the pool, under its own spin lock.
// UNSAFETY: implementing the `unsafe trait Platform` promises valid, exclusive, zeroed frames;
// zeroing a run writes through a raw pointer into the pool, and the shim is C.
#![expect(
    unsafe_code,
    reason = "implements hvkit-vcpu's unsafe Platform trait over a C-allocated pool"
)]

use core::fmt::{self, Write};
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use hvkit_paging::HostPhysAddr;
use hvkit_vcpu::{LogLevel, Platform};

use crate::shim;

/// The most frames the pool may hold (a 2 MiB run: order 9).
pub const MAX_POOL_FRAMES: usize = 512;

/// The Linux platform (one, shared by every CPU).
#[derive(Debug)]
pub struct LinuxPlatform {
    /// Physical address of the pool's first frame.
    pool_phys: AtomicU64,
    /// Frames in the pool.
    pool_frames: AtomicUsize,
    /// `page_offset_base`: where the direct map starts.
    page_offset: AtomicU64,
    /// Online CPUs when the module was loaded.
    cpus: AtomicUsize,
    lock: AtomicBool,
    /// Bit n set: frame n is handed out.
    used: [AtomicU64; MAX_POOL_FRAMES / 64],
    /// Frames handed out now (a leak check for unload).
    live: AtomicUsize,
    /// Per CPU: the CPU runs its host loop, where printk is not safe.
    quiet: [AtomicBool; crate::MAX_CPUS],
}

/// The platform every vCPU uses.
pub static PLATFORM: LinuxPlatform = LinuxPlatform {
    pool_phys: AtomicU64::new(0),
    pool_frames: AtomicUsize::new(0),
    page_offset: AtomicU64::new(0),
    cpus: AtomicUsize::new(0),
    lock: AtomicBool::new(false),
    used: [const { AtomicU64::new(0) }; MAX_POOL_FRAMES / 64],
    live: AtomicUsize::new(0),
    quiet: [const { AtomicBool::new(false) }; crate::MAX_CPUS],
};

impl LinuxPlatform {
    /// Takes the pool (`frames` frames at `phys`) and the direct-map base.
    pub fn init(&self, phys: u64, frames: usize, page_offset: u64, cpus: usize) {
        self.pool_phys.store(phys, Ordering::Relaxed);
        self.pool_frames
            .store(frames.min(MAX_POOL_FRAMES), Ordering::Relaxed);
        self.page_offset.store(page_offset, Ordering::Relaxed);
        self.cpus.store(cpus, Ordering::Relaxed);
        for word in &self.used {
            word.store(0, Ordering::Relaxed);
        }
        self.live.store(0, Ordering::Release);
    }

    /// The pool as a physical range (start, length in bytes).
    pub fn pool(&self) -> (u64, u64) {
        (
            self.pool_phys.load(Ordering::Relaxed),
            self.pool_frames.load(Ordering::Relaxed) as u64 * 4096,
        )
    }

    /// Frames handed out and not yet given back.
    pub fn live_frames(&self) -> usize {
        self.live.load(Ordering::Acquire)
    }

    /// Marks whether `cpu` runs its host loop (no printk there).
    pub fn set_quiet(&self, cpu: usize, quiet: bool) {
        if let Some(flag) = self.quiet.get(cpu) {
            flag.store(quiet, Ordering::Release);
        }
    }

    fn locked<T>(&self, f: impl FnOnce() -> T) -> T {
        while self
            .lock
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            core::hint::spin_loop();
        }
        let result = f();
        self.lock.store(false, Ordering::Release);
        result
    }

    fn is_used(&self, frame: usize) -> bool {
        self.used[frame / 64].load(Ordering::Relaxed) & (1 << (frame % 64)) != 0
    }

    fn mark(&self, frame: usize, used: bool) {
        let bit = 1u64 << (frame % 64);
        if used {
            self.used[frame / 64].fetch_or(bit, Ordering::Relaxed);
        } else {
            self.used[frame / 64].fetch_and(!bit, Ordering::Relaxed);
        }
    }
}

// SAFETY: runs come from the pool, which the shim allocated for this module alone and which is
// mapped contiguously by the direct map; a run is handed out only while its bits are clear (under
// the lock) and is zeroed before it is returned; `phys_to_virt`/`virt_to_phys` are the direct
// map's exact inverse.
unsafe impl Platform for LinuxPlatform {
    fn allocate_frames(&self, count: usize) -> Option<HostPhysAddr> {
        let total = self.pool_frames.load(Ordering::Relaxed);
        let first = self.locked(|| {
            let mut start = 0;
            while start + count <= total {
                match (start..start + count).find(|&f| self.is_used(f)) {
                    Some(busy) => start = busy + 1,
                    None => {
                        for f in start..start + count {
                            self.mark(f, true);
                        }
                        return Some(start);
                    }
                }
            }
            None
        })?;
        self.live.fetch_add(count, Ordering::AcqRel);
        let phys = self.pool_phys.load(Ordering::Relaxed) + first as u64 * 4096;
        let ptr = self.phys_to_virt(HostPhysAddr::try_new(phys).ok()?)?;
        // SAFETY: the run is inside the pool, mapped by the direct map and now owned by the
        // caller alone (its bits were clear and are now set).
        unsafe { core::ptr::write_bytes(ptr.as_ptr(), 0, count * 4096) };
        HostPhysAddr::try_new(phys).ok()
    }

    unsafe fn free_frames(&self, first: HostPhysAddr, count: usize) {
        let base = self.pool_phys.load(Ordering::Relaxed);
        let Some(offset) = first.as_u64().checked_sub(base) else {
            return;
        };
        let index = (offset / 4096) as usize;
        let total = self.pool_frames.load(Ordering::Relaxed);
        if index + count > total {
            return;
        }
        self.locked(|| {
            for f in index..index + count {
                self.mark(f, false);
            }
        });
        self.live.fetch_sub(count, Ordering::AcqRel);
    }

    fn phys_to_virt(&self, phys: HostPhysAddr) -> Option<NonNull<u8>> {
        let offset = self.page_offset.load(Ordering::Relaxed);
        NonNull::new(phys.as_u64().checked_add(offset)? as *mut u8)
    }

    fn virt_to_phys(&self, virt: NonNull<u8>) -> Option<HostPhysAddr> {
        let offset = self.page_offset.load(Ordering::Relaxed);
        HostPhysAddr::try_new((virt.as_ptr() as u64).checked_sub(offset)?).ok()
    }

    fn current_cpu(&self) -> usize {
        // SAFETY: reads this CPU's number from the kernel's per-CPU area (GS is the kernel's in
        // the guest and in the host loop alike).
        unsafe { shim::hvkit_shim_cpu() as usize }
    }

    fn cpu_count(&self) -> usize {
        self.cpus.load(Ordering::Relaxed)
    }

    fn run_on_each_cpu(&self, f: &(dyn Fn(usize) + Sync)) {
        let mut f = f;
        // SAFETY: `each_cpu_trampoline` gets back exactly this pointer to a live `&dyn Fn`, and
        // `on_each_cpu` returns only when every CPU has run it.
        unsafe { shim::hvkit_shim_on_each_cpu(each_cpu_trampoline, (&raw mut f).cast()) };
    }

    fn log(&self, level: LogLevel, message: fmt::Arguments<'_>) {
        let cpu = self.current_cpu();
        if self
            .quiet
            .get(cpu)
            .is_some_and(|q| q.load(Ordering::Acquire))
        {
            return;
        }
        let mut line = Line::default();
        let _ = line.write_fmt(message);
        let level = match level {
            LogLevel::Error => 3,
            LogLevel::Warn => 4,
            LogLevel::Info => 6,
            _ => 7,
        };
        // SAFETY: `line.buf[..line.len]` is initialized; printk copies it.
        unsafe { shim::hvkit_shim_log(level, line.buf.as_ptr(), line.len) };
    }
}

extern "C" fn each_cpu_trampoline(context: *mut core::ffi::c_void) {
    // SAFETY: `run_on_each_cpu` passes a pointer to a `&dyn Fn` that outlives `on_each_cpu`.
    let f = unsafe { *context.cast::<&(dyn Fn(usize) + Sync)>() };
    f(PLATFORM.current_cpu());
}

/// A log line (longer messages are cut).
struct Line {
    buf: [u8; 200],
    len: usize,
}

impl Default for Line {
    fn default() -> Self {
        Self {
            buf: [0; 200],
            len: 0,
        }
    }
}

impl Write for Line {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = self.buf.len() - self.len;
        let n = s.len().min(room);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// Logs through the platform (for the module's own messages).
pub fn log(message: fmt::Arguments<'_>) {
    PLATFORM.log(LogLevel::Info, message);
}
