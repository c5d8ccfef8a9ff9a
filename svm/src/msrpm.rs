//! The MSR permission map (MSRPM).
//!
//! Manual: AMD64 Architecture Programmer's Manual Volume 2: System Programming, Publication
//! No. 24593, Revision 3.42, March 2024 — Section 15.11 "MSR Intercepts" (Table 15-8 "MSR
//! Ranges Covered by MSRPM").
//!
//! The MSRPM is 8 KiB of physically contiguous memory, aligned to 4 KiB. Each covered MSR has two
//! bits: the even bit intercepts RDMSR, the odd bit WRMSR. Three 2 KiB vectors cover:
//!
//! | bytes        | MSRs                      |
//! |--------------|---------------------------|
//! | 0000h–07FFh  | 0000_0000h–0000_1FFFh     |
//! | 0800h–0FFFh  | C000_0000h–C000_1FFFh     |
//! | 1000h–17FFh  | C001_0000h–C001_1FFFh     |
//! | 1800h–1FFFh  | reserved                  |
//!
//! Accesses to MSRs outside these ranges are always intercepted (when MSR_PROT is set).
//!
//! Enable the map with [`crate::intercept::MiscIntercepts1::MSR_PROT`] and write its physical
//! address with [`crate::vmcb::Vmcb::set_msrpm_base_pa`].

/// Size of the MSRPM in bytes (8 KiB).
pub const MSRPM_SIZE: usize = 8 * 1024;

/// The MSR ranges the MSRPM covers, with the byte offset of each range's vector (Table 15-8).
pub const MSRPM_RANGES: [(u32, u32, usize); 3] = [
    (0x0000_0000, 0x0000_1FFF, 0x0000),
    (0xC000_0000, 0xC000_1FFF, 0x0800),
    (0xC001_0000, 0xC001_1FFF, 0x1000),
];

/// Errors from MSRPM operations.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum MsrpmError {
    /// The MSR lies outside the three ranges the MSRPM covers; the CPU always intercepts it.
    #[error("MSR {0:#x} is outside the MSRPM ranges (always intercepted)")]
    OutOfRange(u32),
}

/// Which accesses to intercept.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[non_exhaustive]
pub enum MsrIntercept {
    /// Intercept neither RDMSR nor WRMSR.
    None,
    /// Intercept RDMSR only.
    Read,
    /// Intercept WRMSR only.
    Write,
    /// Intercept both.
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

/// The position of an MSR's read bit: byte offset in the map and bit within the byte (the write
/// bit is the next bit).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct MsrBit {
    /// Byte offset within the 8 KiB map.
    pub byte: usize,
    /// Bit of the read intercept within that byte (0, 2, 4 or 6); the write bit is `bit + 1`.
    pub bit: u8,
}

/// The 8 KiB MSR permission map, page aligned so its physical address can go into the VMCB.
#[repr(C, align(4096))]
#[derive(Clone)]
pub struct Msrpm([u8; MSRPM_SIZE]);

const _: () = {
    assert!(core::mem::size_of::<Msrpm>() == MSRPM_SIZE);
    assert!(core::mem::align_of::<Msrpm>() == 4096);
};

impl core::fmt::Debug for Msrpm {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let set_bits: u32 = self.0.iter().map(|b| b.count_ones()).sum();
        f.debug_struct("Msrpm")
            .field("set_bits", &set_bits)
            .finish()
    }
}

impl Msrpm {
    /// A map that intercepts every RDMSR and WRMSR.
    #[must_use]
    pub const fn intercept_all() -> Self {
        Self([0xFF; MSRPM_SIZE])
    }

    /// A map that intercepts no MSR in the covered ranges (MSRs outside them still exit).
    #[must_use]
    pub const fn intercept_none() -> Self {
        Self([0; MSRPM_SIZE])
    }

    /// Sets or clears every bit in place (no 8 KiB temporary).
    pub fn set_all(&mut self, intercept: bool) {
        self.0.fill(if intercept { 0xFF } else { 0 });
    }

    /// Where the bits of `msr` live.
    ///
    /// # Errors
    /// [`MsrpmError::OutOfRange`] for an MSR outside the three covered ranges.
    pub fn bit_position(msr: u32) -> Result<MsrBit, MsrpmError> {
        for (first, last, base) in MSRPM_RANGES {
            if (first..=last).contains(&msr) {
                let index = (msr - first) as usize * 2;
                return Ok(MsrBit {
                    byte: base + index / 8,
                    bit: (index % 8) as u8,
                });
            }
        }
        Err(MsrpmError::OutOfRange(msr))
    }

    /// Sets the interception of `msr`.
    ///
    /// # Errors
    /// [`MsrpmError::OutOfRange`] for an MSR outside the covered ranges.
    pub fn set(&mut self, msr: u32, intercept: MsrIntercept) -> Result<(), MsrpmError> {
        let pos = Self::bit_position(msr)?;
        let (read, write) = intercept.bits();
        let byte = &mut self.0[pos.byte];
        for (bit, on) in [(pos.bit, read), (pos.bit + 1, write)] {
            if on {
                *byte |= 1 << bit;
            } else {
                *byte &= !(1 << bit);
            }
        }
        Ok(())
    }

    /// Whether RDMSR (`write == false`) or WRMSR (`write == true`) of `msr` is intercepted.
    /// MSRs outside the covered ranges are always intercepted.
    #[must_use]
    pub fn is_intercepted(&self, msr: u32, write: bool) -> bool {
        match Self::bit_position(msr) {
            Ok(pos) => self.0[pos.byte] & (1 << (pos.bit + u8::from(write))) != 0,
            Err(MsrpmError::OutOfRange(_)) => true,
        }
    }

    /// The raw bytes (for tests and dumps).
    #[must_use]
    pub fn as_bytes(&self) -> &[u8; MSRPM_SIZE] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bit_positions_in_each_range() {
        // Range 1: MSR 0 and IA32_SYSENTER_CS (174h), IA32_PAT (277h), top of range 1FFFh.
        assert_eq!(Msrpm::bit_position(0), Ok(MsrBit { byte: 0, bit: 0 }));
        assert_eq!(
            Msrpm::bit_position(0x174),
            Ok(MsrBit { byte: 0x5D, bit: 0 })
        );
        assert_eq!(
            Msrpm::bit_position(0x277),
            Ok(MsrBit { byte: 0x9D, bit: 6 })
        );
        assert_eq!(
            Msrpm::bit_position(0x1FFF),
            Ok(MsrBit {
                byte: 0x7FF,
                bit: 6
            })
        );
        // Range 2: EFER C000_0080h, LSTAR C000_0082h, KERNEL_GS_BASE C000_0102h.
        assert_eq!(
            Msrpm::bit_position(0xC000_0080),
            Ok(MsrBit {
                byte: 0x820,
                bit: 0
            })
        );
        assert_eq!(
            Msrpm::bit_position(0xC000_0082),
            Ok(MsrBit {
                byte: 0x820,
                bit: 4
            })
        );
        assert_eq!(
            Msrpm::bit_position(0xC000_0102),
            Ok(MsrBit {
                byte: 0x840,
                bit: 4
            })
        );
        // Range 3: VM_CR C001_0114h, VM_HSAVE_PA C001_0117h, top C001_1FFFh.
        assert_eq!(
            Msrpm::bit_position(0xC001_0114),
            Ok(MsrBit {
                byte: 0x1045,
                bit: 0
            })
        );
        assert_eq!(
            Msrpm::bit_position(0xC001_0117),
            Ok(MsrBit {
                byte: 0x1045,
                bit: 6
            })
        );
        assert_eq!(
            Msrpm::bit_position(0xC001_1FFF),
            Ok(MsrBit {
                byte: 0x17FF,
                bit: 6
            })
        );
    }

    #[test]
    fn msrs_outside_the_ranges_are_errors_and_always_intercepted() {
        for msr in [
            0x2000,
            0xBFFF_FFFF,
            0xC000_2000,
            0xC000_FFFF,
            0xC001_2000,
            0xFFFF_FFFF,
        ] {
            assert_eq!(Msrpm::bit_position(msr), Err(MsrpmError::OutOfRange(msr)));
            let mut map = Msrpm::intercept_none();
            assert_eq!(
                map.set(msr, MsrIntercept::None),
                Err(MsrpmError::OutOfRange(msr))
            );
            assert!(map.is_intercepted(msr, false));
            assert!(map.is_intercepted(msr, true));
        }
    }

    /// Every covered MSR owns exactly its own two bits: setting one MSR changes exactly one
    /// bit pair, and the 3 × 8192 MSRs fill the first 6 KiB without overlap.
    #[test]
    fn every_covered_msr_has_its_own_bits() {
        let mut seen = std::collections::HashSet::new();
        for (first, last, base) in MSRPM_RANGES {
            for msr in first..=last {
                let pos = Msrpm::bit_position(msr).unwrap();
                assert!((base..base + 0x800).contains(&pos.byte), "{msr:#x}");
                assert!(seen.insert((pos.byte, pos.bit)), "{msr:#x} overlaps");
            }
        }
        assert_eq!(seen.len(), 3 * 8192);
        let mut map = Msrpm::intercept_none();
        map.set(0xC001_0117, MsrIntercept::ReadWrite).unwrap();
        let set: u32 = map.as_bytes().iter().map(|b| b.count_ones()).sum();
        assert_eq!(set, 2);
        assert!(map.as_bytes()[0x1800..].iter().all(|&b| b == 0));
    }

    #[test]
    fn read_and_write_bits_are_separate() {
        let mut map = Msrpm::intercept_none();
        map.set(0xC000_0080, MsrIntercept::Write).unwrap();
        assert_eq!(map.as_bytes()[0x820], 0b10);
        assert!(!map.is_intercepted(0xC000_0080, false));
        assert!(map.is_intercepted(0xC000_0080, true));
        map.set(0xC000_0081, MsrIntercept::ReadWrite).unwrap();
        assert_eq!(map.as_bytes()[0x820], 0b1110);
        map.set(0xC000_0080, MsrIntercept::Read).unwrap();
        assert_eq!(map.as_bytes()[0x820], 0b1101);
        let mut all = Msrpm::intercept_all();
        all.set(0x10, MsrIntercept::None).unwrap();
        assert!(!all.is_intercepted(0x10, true));
        assert!(all.is_intercepted(0x11, false));
        all.set_all(false);
        assert_eq!(all.as_bytes(), Msrpm::intercept_none().as_bytes());
        all.set_all(true);
        assert_eq!(all.as_bytes(), Msrpm::intercept_all().as_bytes());
        for (r, w) in [(false, false), (true, false), (false, true), (true, true)] {
            assert_eq!(MsrIntercept::from_bits(r, w).bits(), (r, w));
        }
    }
}
