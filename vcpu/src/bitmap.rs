//! Intercept bitmaps in platform frames: the VMX I/O and MSR bitmaps and the SVM I/O and MSR
//! permission maps, with the index arithmetic of each layout.
//!
//! Manuals: Intel® 64 and IA-32 Architectures Software Developer's Manual, Combined Volumes, Order
//! Number 325462-086US, December 2024, Vol. 3C 25.6.4 "I/O-Bitmap Addresses" and 25.6.9
//! "MSR-Bitmap Address"; AMD64 Architecture Programmer's Manual Volume 2: System Programming,
//! Publication No. 24593, Revision 3.42, March 2024, 15.10.1 "I/O Permissions Map" and 15.11
//! "MSR Intercepts" (Table 15-6 "MSR Ranges Covered by MSRPM").
// UNSAFETY: the bitmaps are frames the processor reads, reached through raw pointers from the
// platform; this module holds the bounds checks that make those accesses sound.
#![expect(
    unsafe_code,
    reason = "bit access to platform frames through raw pointers"
)]

use crate::platform::{OutOfMemory, OwnedFrames, Platform};

/// A bitmap of whole frames owned by a vCPU (the processor reads it; the host writes it through
/// volatile accesses).
#[derive(Debug)]
pub struct Bitmap<'p, P: Platform + ?Sized> {
    frames: OwnedFrames<'p, P>,
}

impl<'p, P: Platform + ?Sized> Bitmap<'p, P> {
    /// `frames` zeroed frames (nothing intercepted).
    ///
    /// # Errors
    /// [`OutOfMemory`].
    pub fn new(platform: &'p P, frames: usize) -> Result<Self, OutOfMemory> {
        Ok(Self {
            frames: OwnedFrames::allocate(platform, frames)?,
        })
    }

    /// The physical address (for the VMCS/VMCB).
    #[must_use]
    pub fn phys(&self) -> hvkit_paging::HostPhysAddr {
        self.frames.phys()
    }

    /// The number of bits.
    #[must_use]
    pub fn bits(&self) -> usize {
        self.frames.len_bytes() * 8
    }

    /// Sets or clears bit `index`; returns false (changing nothing) past the end.
    pub fn set(&mut self, index: usize, on: bool) -> bool {
        if index >= self.bits() {
            return false;
        }
        let byte = self.frames.as_ptr().as_ptr().wrapping_add(index / 8);
        let mask = 1u8 << (index % 8);
        // SAFETY: `byte` is inside the run this bitmap owns (index checked above); the run is
        // only reached through raw pointers.
        let old = unsafe { byte.read_volatile() };
        let new = if on { old | mask } else { old & !mask };
        // SAFETY: as above.
        unsafe { byte.write_volatile(new) };
        true
    }

    /// Bit `index` (false past the end).
    #[must_use]
    pub fn get(&self, index: usize) -> bool {
        if index >= self.bits() {
            return false;
        }
        let byte = self.frames.as_ptr().as_ptr().wrapping_add(index / 8);
        // SAFETY: inside the owned run (checked above).
        unsafe { byte.read_volatile() & (1 << (index % 8)) != 0 }
    }
}

/// Bit index of `msr` in the VMX MSR bitmap (SDM 25.6.9): read-low at byte 0, read-high
/// (C000_0000H–C000_1FFFH) at 1024, write-low at 2048, write-high at 3072. `None` for MSRs the
/// bitmap does not cover (they always exit).
#[must_use]
pub fn vmx_msr_bit(msr: u32, write: bool) -> Option<usize> {
    let base = match msr {
        0..=0x1fff => 0,
        0xc000_0000..=0xc000_1fff => 1024 * 8,
        _ => return None,
    };
    let write_offset = if write { 2048 * 8 } else { 0 };
    Some(base + write_offset + (msr & 0x1fff) as usize)
}

/// Bit index of `msr` in the SVM MSRPM (APM 15.11, Table 15-6): two bits per MSR (read, then
/// write) in three 2-KiB vectors for 0–1FFFH, C000_0000H–C000_1FFFH and C001_0000H–C001_1FFFH.
/// `None` for MSRs outside them (they always exit).
#[must_use]
pub fn svm_msr_bit(msr: u32, write: bool) -> Option<usize> {
    let vector = match msr {
        0..=0x1fff => 0,
        0xc000_0000..=0xc000_1fff => 1,
        0xc001_0000..=0xc001_1fff => 2,
        _ => return None,
    };
    Some(vector * 2048 * 8 + (msr & 0x1fff) as usize * 2 + usize::from(write))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::HostPlatform;

    #[test]
    fn layouts() {
        assert_eq!(vmx_msr_bit(0x10, false), Some(0x10));
        assert_eq!(vmx_msr_bit(0xc000_0080, false), Some(1024 * 8 + 0x80));
        assert_eq!(vmx_msr_bit(0xc000_0080, true), Some(3072 * 8 + 0x80));
        assert_eq!(vmx_msr_bit(0x1b, true), Some(2048 * 8 + 0x1b));
        assert_eq!(vmx_msr_bit(0x4000_0000, true), None);
        assert_eq!(svm_msr_bit(0xc000_0080, true), Some(0x800 * 8 + 0x101));
        assert_eq!(svm_msr_bit(0xc001_0117, false), Some(0x1000 * 8 + 0x22e));
        assert_eq!(svm_msr_bit(0x2000, false), None);
        let p = HostPlatform::new(4);
        let mut b = Bitmap::new(&p, 2).unwrap();
        assert_eq!(b.bits(), 65536);
        assert!(b.set(0x3f8, true) && b.get(0x3f8) && !b.get(0x3f9));
        assert!(b.set(0xffff, true) && b.get(0xffff));
        assert!(b.set(0x3f8, false) && !b.get(0x3f8));
        assert!(!b.set(65536, true) && !b.get(65536));
    }
}
