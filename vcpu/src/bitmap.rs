//! Intercept bitmaps in platform frames: the vendor crates' page-aligned structures ([`IoBitmaps`]
//! and [`MsrBitmap`] of `hvkit-vmx`, [`Iopm`] and [`Msrpm`] of `hvkit-svm`), which own the
//! layouts and the index arithmetic, placed in zeroed frames a vCPU owns.
//!
//! Manuals: Intel® 64 and IA-32 Architectures Software Developer's Manual, Combined Volumes, Order
//! Number 325462-086US, December 2024, Vol. 3C 25.6.4 "I/O-Bitmap Addresses" and 25.6.9
//! "MSR-Bitmap Address"; AMD64 Architecture Programmer's Manual Volume 2: System Programming,
//! Publication No. 24593, Revision 3.42, March 2024, 15.10.1 "I/O Permissions Map" and 15.11
//! "MSR Intercepts".
// UNSAFETY: the bitmaps are frames the processor reads, reached through a raw pointer from the
// platform; this module holds the layout obligations that make the typed view sound.
#![expect(
    unsafe_code,
    reason = "a typed view of platform frames through a raw pointer"
)]

use core::ptr::NonNull;

use hvkit_svm::{Iopm, Msrpm};
use hvkit_vmx::{IoBitmaps, MsrBitmap};

use crate::platform::{OutOfMemory, OwnedFrames, Platform};

/// A vendor bitmap type that may live in zeroed platform frames.
///
/// # Safety
/// - Every bit pattern is a valid value of the type (in particular all zeros): it is plain bytes
///   with no padding, references or invariants beyond its bytes.
/// - Its alignment is at most 4096.
pub unsafe trait FrameBitmap: Sized {
    /// How many 4 KiB frames the type fills.
    const FRAMES: usize = size_of::<Self>().div_ceil(4096);
    /// Puts a freshly zeroed value into its "nothing intercepted" state in place.
    fn reset(&mut self);
}

// SAFETY: `IoBitmaps` is two `[u8; 4096]` arrays (repr(C), no padding), aligned to 4096.
unsafe impl FrameBitmap for IoBitmaps {
    fn reset(&mut self) {
        self.set_all(false);
    }
}

// SAFETY: `MsrBitmap` is four `[u8; 1024]` arrays (repr(C), no padding), aligned to 4096.
unsafe impl FrameBitmap for MsrBitmap {
    fn reset(&mut self) {
        self.set_all(false);
    }
}

// SAFETY: `Iopm` wraps one `[u8; 12288]`, aligned to 4096.
unsafe impl FrameBitmap for Iopm {
    fn reset(&mut self) {
        // Ports pass; the bits past FFFFh stay set (APM 15.10.1).
        self.set_all(false);
    }
}

// SAFETY: `Msrpm` wraps one `[u8; 8192]`, aligned to 4096.
unsafe impl FrameBitmap for Msrpm {
    fn reset(&mut self) {
        self.set_all(false);
    }
}

/// A vendor bitmap `T` in frames owned by a vCPU (the processor reads it while the guest runs;
/// the host changes it between runs through [`get_mut`](Self::get_mut)).
///
/// Type invariant: `ptr` points at the start of `frames`, which hold at least
/// `size_of::<T>()` bytes, are 4 KiB aligned and owned by this value, and hold a valid `T`;
/// Rust reaches them only through this value. The processor only reads them, and the guest
/// cannot reach them (they are not in its memory map).
#[derive(Debug)]
pub struct Bitmap<'p, P: Platform + ?Sized, T: FrameBitmap> {
    frames: OwnedFrames<'p, P>,
    ptr: NonNull<T>,
}

impl<'p, P: Platform + ?Sized, T: FrameBitmap> Bitmap<'p, P, T> {
    /// A bitmap in new zeroed frames, reset to "nothing intercepted" ([`FrameBitmap::reset`]).
    ///
    /// # Errors
    /// [`OutOfMemory`].
    pub fn new(platform: &'p P) -> Result<Self, OutOfMemory> {
        let frames = OwnedFrames::allocate(platform, T::FRAMES)?;
        // The frames are zeroed (a valid `T` by `FrameBitmap`'s contract), 4 KiB aligned, large
        // enough, and owned by this value from now on: the type invariant holds.
        let mut me = Self {
            ptr: frames.as_ptr().cast::<T>(),
            frames,
        };
        me.get_mut().reset();
        Ok(me)
    }

    /// The physical address (for the VMCS/VMCB).
    #[must_use]
    pub fn phys(&self) -> hvkit_paging::HostPhysAddr {
        self.frames.phys()
    }

    /// The bitmap.
    #[must_use]
    pub fn get(&self) -> &T {
        // SAFETY: the type invariant: a valid `T` owned by this value.
        unsafe { self.ptr.as_ref() }
    }

    /// The bitmap, mutably (change it only while the guest does not run on it).
    pub fn get_mut(&mut self) -> &mut T {
        // SAFETY: the type invariant, and `&mut self` makes this the only access.
        unsafe { self.ptr.as_mut() }
    }
}

#[cfg(test)]
mod tests {
    use hvkit_svm::msrpm::MsrIntercept as SvmMsrIntercept;
    use hvkit_vmx::msr_bitmap::MsrIntercept;

    use super::*;
    use crate::host::HostPlatform;

    #[test]
    fn vendor_bitmaps_in_frames() {
        let p = HostPlatform::new(16);
        let mut io = Bitmap::<_, IoBitmaps>::new(&p).unwrap();
        let mut msr = Bitmap::<_, MsrBitmap>::new(&p).unwrap();
        let mut iopm = Bitmap::<_, Iopm>::new(&p).unwrap();
        let mut msrpm = Bitmap::<_, Msrpm>::new(&p).unwrap();
        assert_eq!(
            (IoBitmaps::FRAMES, MsrBitmap::FRAMES, Iopm::FRAMES),
            (2, 1, 3)
        );
        assert_eq!(Msrpm::FRAMES, 2);
        assert!(!io.get().is_intercepted(0x3f8));
        io.get_mut().set(0xfff0, true);
        assert!(io.get().is_intercepted(0xfff0) && !io.get().is_intercepted(0xfff1));
        msr.get_mut().set(0xc000_0080, MsrIntercept::Write).unwrap();
        assert!(msr.get().is_intercepted(0xc000_0080, true));
        assert!(!msr.get().is_intercepted(0xc000_0080, false));
        // The IOPM's wrap-around bits are set in a fresh frame, the ports clear.
        assert_eq!(iopm.get().access_intercepted(0xffff, 2), Ok(true));
        assert_eq!(iopm.get().access_intercepted(0xfffe, 2), Ok(false));
        iopm.get_mut().set(0x60, true);
        assert!(iopm.get().is_intercepted(0x60));
        msrpm
            .get_mut()
            .set(0x10, SvmMsrIntercept::ReadWrite)
            .unwrap();
        assert!(msrpm.get().is_intercepted(0x10, false));
        assert_ne!(io.phys(), msr.phys());
        assert_eq!(io.phys().as_u64() % 4096, 0);
    }
}
