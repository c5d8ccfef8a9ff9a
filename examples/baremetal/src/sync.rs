//! The two shared-state cells the kernel needs, without `static mut`: a spin lock (state the VM
//! exit handler takes over from the code that launched the guest) and a take-once cell (pages
//! handed out as `&'static mut` exactly once).
// UNSAFETY: both cells hand out `&mut` to a value in a `static`, which needs `UnsafeCell`
// and an `unsafe impl Sync`.
#![expect(unsafe_code, reason = "interior mutability for statics")]

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, Ordering};

/// A minimal spin lock.
#[derive(Debug)]
pub struct SpinLock<T> {
    locked: AtomicBool,
    value: UnsafeCell<T>,
}

// SAFETY: access to `value` is serialized by `locked`; `T: Send` lets it move between contexts.
unsafe impl<T: Send> Sync for SpinLock<T> {}

impl<T> SpinLock<T> {
    /// A lock holding `value`.
    pub const fn new(value: T) -> Self {
        Self {
            locked: AtomicBool::new(false),
            value: UnsafeCell::new(value),
        }
    }

    /// Runs `f` with exclusive access to the value.
    pub fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        while self.locked.swap(true, Ordering::Acquire) {
            core::hint::spin_loop();
        }
        // SAFETY: `locked` was false and is now true, so this is the only reference until the
        // store below.
        let result = f(unsafe { &mut *self.value.get() });
        self.locked.store(false, Ordering::Release);
        result
    }
}

/// A value that can be borrowed mutably for the rest of the run, once.
#[derive(Debug)]
pub struct TakeOnce<T> {
    taken: AtomicBool,
    value: UnsafeCell<T>,
}

// SAFETY: `take` hands out the only reference at most once.
unsafe impl<T: Send> Sync for TakeOnce<T> {}

impl<T> TakeOnce<T> {
    /// A cell holding `value`.
    pub const fn new(value: T) -> Self {
        Self {
            taken: AtomicBool::new(false),
            value: UnsafeCell::new(value),
        }
    }

    /// The value, the first time; `None` afterwards.
    #[expect(
        clippy::mut_from_ref,
        reason = "the `taken` flag guarantees that the reference is unique"
    )]
    pub fn take(&'static self) -> Option<&'static mut T> {
        if self.taken.swap(true, Ordering::AcqRel) {
            return None;
        }
        // SAFETY: `taken` was false, so no other reference was ever handed out.
        Some(unsafe { &mut *self.value.get() })
    }
}

/// A 4 KiB page.
#[repr(C, align(4096))]
#[derive(Debug)]
pub struct Page(pub [u64; 512]);

impl Page {
    /// A zeroed page.
    pub const fn zeroed() -> Self {
        Self([0; 512])
    }

    /// The page's physical address (the kernel runs identity-mapped).
    pub fn phys(&self) -> u64 {
        core::ptr::from_ref(self) as u64
    }
}

/// A 4 KiB page of 64-bit words that a guest and the host both touch (through the shared identity
/// mapping), so the host reads and writes it with atomics and never holds a reference the guest
/// could invalidate.
#[repr(C, align(4096))]
#[derive(Debug)]
pub struct ProbePage(pub [core::sync::atomic::AtomicU64; 512]);

impl ProbePage {
    /// A zeroed page.
    pub const fn new() -> Self {
        Self([const { core::sync::atomic::AtomicU64::new(0) }; 512])
    }

    /// The page's physical address (the kernel runs identity-mapped).
    pub fn phys(&self) -> u64 {
        core::ptr::from_ref(self) as u64
    }
}
