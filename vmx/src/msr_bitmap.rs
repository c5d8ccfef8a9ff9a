//! The MSR bitmap.
//!
//! Manual: Intel® 64 and IA-32 Architectures Software Developer's Manual, Combined Volumes, Order
//! Number 325462-086US, December 2024 — Vol. 3C 25.6.9 "MSR-Bitmap Address" (the layout) and
//! 26.1.3 "Instructions That Cause VM Exits Conditionally" (RDMSR, WRMSR: which accesses exit).
//!
//! With the "use MSR bitmaps" primary processor-based control (bit 28,
//! [`crate::controls::PrimaryControls::USE_MSR_BITMAPS`]) set, the processor reads one 4 KiB
//! page, 4 KiB aligned, whose address is in [`crate::fields::control::MSR_BITMAPS`]. It has four
//! 1 KiB parts, one bit per MSR:
//!
//! | bytes       | bitmap     | MSRs                   |
//! |-------------|------------|------------------------|
//! | 000h–3FFh   | read low   | 0000_0000h–0000_1FFFh  |
//! | 400h–7FFh   | read high  | C000_0000h–C000_1FFFh  |
//! | 800h–BFFh   | write low  | 0000_0000h–0000_1FFFh  |
//! | C00h–FFFh   | write high | C000_0000h–C000_1FFFh  |
//!
//! RDMSR (WRMSR) of a covered MSR exits if its read (write) bit is set; RDMSR and WRMSR of any
//! other MSR always exit.

use core::mem::{offset_of, size_of};

/// Size of the MSR bitmap in bytes (4 KiB).
pub const MSR_BITMAP_SIZE: usize = 4096;

/// The MSR ranges the bitmap covers, first and last MSR of each: low, then high (SDM 25.6.9).
pub const MSR_BITMAP_RANGES: [(u32, u32); 2] =
    [(0x0000_0000, 0x0000_1FFF), (0xC000_0000, 0xC000_1FFF)];

/// Errors from MSR-bitmap operations.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum MsrBitmapError {
    /// The MSR lies outside the two ranges the bitmap covers; RDMSR and WRMSR of it always exit.
    #[error("MSR {0:#x} is outside the MSR-bitmap ranges (always exits)")]
    OutOfRange(u32),
}

/// Which accesses to an MSR exit.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[non_exhaustive]
pub enum MsrIntercept {
    /// Neither RDMSR nor WRMSR exits.
    None,
    /// RDMSR exits.
    Read,
    /// WRMSR exits.
    Write,
    /// Both exit.
    ReadWrite,
}

impl MsrIntercept {
    /// The intercept with the read and write bits given.
    #[must_use]
    pub const fn from_bits(read: bool, write: bool) -> Self {
        match (read, write) {
            (false, false) => Self::None,
            (true, false) => Self::Read,
            (false, true) => Self::Write,
            (true, true) => Self::ReadWrite,
        }
    }

    /// The read and write bits.
    #[must_use]
    pub const fn bits(self) -> (bool, bool) {
        match self {
            Self::None => (false, false),
            Self::Read => (true, false),
            Self::Write => (false, true),
            Self::ReadWrite => (true, true),
        }
    }
}

/// The position of one bit: byte offset in the 4 KiB page and bit in that byte.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct MsrBit {
    /// Byte offset within the page (000h–FFFh).
    pub byte: usize,
    /// Bit within that byte (0–7).
    pub bit: u8,
}

/// The 4 KiB MSR bitmap, page aligned so its physical address can go into the VMCS.
#[repr(C, align(4096))]
#[derive(Clone)]
pub struct MsrBitmap {
    /// Read bitmap for low MSRs (0000_0000h–0000_1FFFh).
    read_low: [u8; 1024],
    /// Read bitmap for high MSRs (C000_0000h–C000_1FFFh).
    read_high: [u8; 1024],
    /// Write bitmap for low MSRs.
    write_low: [u8; 1024],
    /// Write bitmap for high MSRs.
    write_high: [u8; 1024],
}

const _: () = {
    assert!(size_of::<MsrBitmap>() == MSR_BITMAP_SIZE);
    assert!(core::mem::align_of::<MsrBitmap>() == 4096);
    assert!(offset_of!(MsrBitmap, read_low) == 0x000);
    assert!(offset_of!(MsrBitmap, read_high) == 0x400);
    assert!(offset_of!(MsrBitmap, write_low) == 0x800);
    assert!(offset_of!(MsrBitmap, write_high) == 0xC00);
};

impl core::fmt::Debug for MsrBitmap {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let set_bits: u32 = self
            .parts()
            .iter()
            .flat_map(|p| p.iter())
            .map(|b| b.count_ones())
            .sum();
        f.debug_struct("MsrBitmap")
            .field("set_bits", &set_bits)
            .finish()
    }
}

impl MsrBitmap {
    /// A bitmap under which every RDMSR and WRMSR exits.
    #[must_use]
    pub const fn intercept_all() -> Self {
        Self {
            read_low: [0xFF; 1024],
            read_high: [0xFF; 1024],
            write_low: [0xFF; 1024],
            write_high: [0xFF; 1024],
        }
    }

    /// A bitmap under which no covered MSR exits (MSRs outside the ranges still do).
    #[must_use]
    pub const fn intercept_none() -> Self {
        Self {
            read_low: [0; 1024],
            read_high: [0; 1024],
            write_low: [0; 1024],
            write_high: [0; 1024],
        }
    }

    /// Sets or clears every bit in place (no 4 KiB temporary).
    pub fn set_all(&mut self, intercept: bool) {
        let byte = if intercept { 0xFF } else { 0 };
        for part in [
            &mut self.read_low,
            &mut self.read_high,
            &mut self.write_low,
            &mut self.write_high,
        ] {
            part.fill(byte);
        }
    }

    /// Where the read (`write == false`) or write bit of `msr` lives.
    ///
    /// # Errors
    /// [`MsrBitmapError::OutOfRange`] for an MSR outside the two covered ranges.
    pub const fn bit_position(msr: u32, write: bool) -> Result<MsrBit, MsrBitmapError> {
        let [(low, low_last), (high, high_last)] = MSR_BITMAP_RANGES;
        let (first, part) = if low <= msr && msr <= low_last {
            (low, 0)
        } else if high <= msr && msr <= high_last {
            (high, 1)
        } else {
            return Err(MsrBitmapError::OutOfRange(msr));
        };
        let part = if write { part + 2 } else { part };
        let index = (msr - first) as usize;
        Ok(MsrBit {
            byte: part * 1024 + index / 8,
            bit: (index % 8) as u8,
        })
    }

    fn byte_mut(&mut self, offset: usize) -> &mut u8 {
        let part = match offset / 1024 {
            0 => &mut self.read_low,
            1 => &mut self.read_high,
            2 => &mut self.write_low,
            _ => &mut self.write_high,
        };
        &mut part[offset % 1024]
    }

    /// Sets which accesses to `msr` exit.
    ///
    /// # Errors
    /// [`MsrBitmapError::OutOfRange`] for an MSR outside the covered ranges; nothing changes.
    pub fn set(&mut self, msr: u32, intercept: MsrIntercept) -> Result<(), MsrBitmapError> {
        let (read, write) = intercept.bits();
        let read_pos = Self::bit_position(msr, false)?;
        let write_pos = Self::bit_position(msr, true)?;
        for (pos, on) in [(read_pos, read), (write_pos, write)] {
            let byte = self.byte_mut(pos.byte);
            if on {
                *byte |= 1 << pos.bit;
            } else {
                *byte &= !(1 << pos.bit);
            }
        }
        Ok(())
    }

    /// Whether RDMSR (`write == false`) or WRMSR (`write == true`) of `msr` exits. MSRs outside
    /// the covered ranges always exit.
    #[must_use]
    pub fn is_intercepted(&self, msr: u32, write: bool) -> bool {
        match Self::bit_position(msr, write) {
            Ok(pos) => self.parts()[pos.byte / 1024][pos.byte % 1024] & (1 << pos.bit) != 0,
            Err(MsrBitmapError::OutOfRange(_)) => true,
        }
    }

    /// The four parts in page order: read low, read high, write low, write high (for tests and
    /// dumps).
    #[must_use]
    pub fn parts(&self) -> [&[u8; 1024]; 4] {
        [
            &self.read_low,
            &self.read_high,
            &self.write_low,
            &self.write_high,
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set_bits(map: &MsrBitmap) -> u32 {
        map.parts()
            .iter()
            .flat_map(|p| p.iter())
            .map(|b| b.count_ones())
            .sum()
    }

    #[test]
    fn bit_positions_in_each_part() {
        let at = |byte, bit| Ok(MsrBit { byte, bit });
        // IA32_SYSENTER_CS (174h), IA32_APIC_BASE (1Bh), top of the low range.
        assert_eq!(MsrBitmap::bit_position(0x174, false), at(0x2E, 4));
        assert_eq!(MsrBitmap::bit_position(0x1B, true), at(0x800 + 3, 3));
        assert_eq!(MsrBitmap::bit_position(0x1FFF, false), at(0x3FF, 7));
        // EFER C000_0080h, KERNEL_GS_BASE C000_0102h, top of the high range.
        assert_eq!(MsrBitmap::bit_position(0xC000_0080, false), at(0x410, 0));
        assert_eq!(MsrBitmap::bit_position(0xC000_0080, true), at(0xC10, 0));
        assert_eq!(MsrBitmap::bit_position(0xC000_0102, true), at(0xC20, 2));
        assert_eq!(MsrBitmap::bit_position(0xC000_1FFF, true), at(0xFFF, 7));
    }

    #[test]
    fn msrs_outside_the_ranges_are_errors_and_always_exit() {
        for msr in [
            0x2000,
            0x4000_0000,
            0xBFFF_FFFF,
            0xC000_2000,
            0xC001_0080,
            0xFFFF_FFFF,
        ] {
            for write in [false, true] {
                assert_eq!(
                    MsrBitmap::bit_position(msr, write),
                    Err(MsrBitmapError::OutOfRange(msr))
                );
            }
            let mut map = MsrBitmap::intercept_none();
            assert_eq!(
                map.set(msr, MsrIntercept::None),
                Err(MsrBitmapError::OutOfRange(msr))
            );
            assert!(map.is_intercepted(msr, false) && map.is_intercepted(msr, true));
            assert_eq!(set_bits(&map), 0);
        }
    }

    /// Every covered MSR owns exactly its own read bit and write bit: the 2 × 8192 MSRs fill the
    /// page without overlap, each read bit in a read part and each write bit 2 KiB after it.
    #[test]
    fn every_covered_msr_has_its_own_bits() {
        let mut seen = std::collections::HashSet::new();
        for (n, (first, last)) in MSR_BITMAP_RANGES.into_iter().enumerate() {
            for msr in first..=last {
                let read = MsrBitmap::bit_position(msr, false).unwrap();
                let write = MsrBitmap::bit_position(msr, true).unwrap();
                assert_eq!(read.byte / 1024, n, "{msr:#x}");
                assert_eq!((write.byte - read.byte, write.bit), (2048, read.bit));
                assert!(seen.insert(read) && seen.insert(write), "{msr:#x} overlaps");
            }
        }
        assert_eq!(seen.len(), MSR_BITMAP_SIZE * 8);
        let mut map = MsrBitmap::intercept_none();
        for (first, last) in MSR_BITMAP_RANGES {
            for msr in first..=last {
                for (intercept, read, write) in [
                    (MsrIntercept::Read, true, false),
                    (MsrIntercept::Write, false, true),
                    (MsrIntercept::ReadWrite, true, true),
                ] {
                    map.set(msr, intercept).unwrap();
                    assert_eq!(map.is_intercepted(msr, false), read, "{msr:#x}");
                    assert_eq!(map.is_intercepted(msr, true), write, "{msr:#x}");
                }
                assert_eq!(set_bits(&map), 2, "{msr:#x}");
                map.set(msr, MsrIntercept::None).unwrap();
                assert_eq!(set_bits(&map), 0, "{msr:#x}");
            }
        }
    }

    #[test]
    fn all_none_and_bits_round_trip() {
        let mut map = MsrBitmap::intercept_all();
        assert_eq!(set_bits(&map), 4096 * 8);
        map.set(0x10, MsrIntercept::Write).unwrap();
        assert!(!map.is_intercepted(0x10, false) && map.is_intercepted(0x10, true));
        assert!(map.is_intercepted(0x11, false));
        map.set_all(false);
        assert_eq!(set_bits(&map), 0);
        map.set_all(true);
        assert_eq!(set_bits(&map), 4096 * 8);
        for (r, w) in [(false, false), (true, false), (false, true), (true, true)] {
            assert_eq!(MsrIntercept::from_bits(r, w).bits(), (r, w));
        }
        assert!(format!("{:?}", MsrBitmap::intercept_none()).contains("set_bits: 0"));
    }
}
