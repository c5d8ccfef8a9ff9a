//! The x86 paging formats: 4/5-level (also AMD nested paging), PAE and 32-bit.
//!
//! Manual: Intel® 64 and IA-32 Architectures Software Developer's Manual, Combined Volumes, Order
//! Number 325462-086US, December 2024, Vol. 3A Section 4.3 "32-Bit Paging" (Tables 4-4 to 4-6),
//! Section 4.4 "PAE Paging" (Tables 4-8 to 4-11), Section 4.5 "4-Level Paging and 5-Level Paging"
//! (Tables 4-15 to 4-20) and Section 4.6.2 "Protection Keys"; AMD64 Architecture Programmer's Manual
//! Volume 2: System Programming, Publication No. 24593, Revision 3.42, March 2024, Section 5.3
//! "Long-Mode Page Translation" and Section 15.25 "Nested Paging".
//!
//! The flag bits are the `x86_64` crate's [`PageTableFlags`], which mean the same thing.

use x86_64::structures::paging::PageTableFlags;

use super::{Entry, PageTableFormat, mask};
use crate::addr::PageSize;
use crate::flush::FlushKind;

/// A raw x86 paging entry (8 bytes; 32-bit paging entries are zero-extended) with accessors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[repr(transparent)]
pub struct X86Entry(pub u64);

impl X86Entry {
    /// The flag bits (bits 11:0, 62:52 and 63).
    #[must_use]
    pub const fn flags(self) -> PageTableFlags {
        PageTableFlags::from_bits_truncate(self.0)
    }

    /// Bits 62:59: the protection key of a 4/5-level leaf (SDM Vol. 3A 4.6.2).
    #[must_use]
    pub const fn protection_key(self) -> u8 {
        ((self.0 >> 59) & 0xf) as u8
    }

    /// The PAT bit of a leaf at `level` (bit 7 of a PTE, bit 12 of a large-page entry).
    #[must_use]
    pub const fn pat(self, level: u8) -> bool {
        let bit = if level == 1 { 7 } else { 12 };
        self.0 & (1 << bit) != 0
    }
}

/// Attributes of an x86 leaf: flags, the PAT bit and the protection key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct X86Attrs {
    /// PRESENT (required), WRITABLE, USER_ACCESSIBLE, WRITE_THROUGH, NO_CACHE, GLOBAL, NO_EXECUTE and
    /// the available bits; HUGE_PAGE, ACCESSED, DIRTY and bits 62:59 are managed by the table.
    pub flags: PageTableFlags,
    /// The PAT index bit (bit 7 of a PTE, bit 12 of a large-page entry).
    pub pat: bool,
    /// Protection key, bits 62:59 (4/5-level paging only; 0 elsewhere).
    pub protection_key: u8,
}

impl X86Attrs {
    /// `flags` with PAT clear and key 0.
    #[must_use]
    pub const fn new(flags: PageTableFlags) -> Self {
        Self {
            flags,
            pat: false,
            protection_key: 0,
        }
    }
}

const MANAGED: u64 = PageTableFlags::HUGE_PAGE.bits()
    | PageTableFlags::ACCESSED.bits()
    | PageTableFlags::DIRTY.bits()
    | mask(62, 59);
const HIGH_SOFT: u64 = mask(58, 52);
const PERMISSIVE: u64 = PageTableFlags::PRESENT.bits()
    | PageTableFlags::WRITABLE.bits()
    | PageTableFlags::USER_ACCESSIBLE.bits();

#[inline(always)]
fn check_common(a: &X86Attrs) -> Result<(), &'static str> {
    if !a.flags.contains(PageTableFlags::PRESENT) {
        return Err("PRESENT must be set");
    }
    if a.flags.bits() & MANAGED != 0 {
        return Err("HUGE_PAGE, ACCESSED, DIRTY and bits 62:59 are managed by the table");
    }
    Ok(())
}

#[inline(always)]
fn leaf64(phys: u64, a: &X86Attrs, level: u8) -> u64 {
    let pat_bit = if level == 1 { 7 } else { 12 };
    let huge = if level > 1 {
        PageTableFlags::HUGE_PAGE.bits()
    } else {
        0
    };
    phys | (a.flags.bits() & !MANAGED)
        | (u64::from(a.pat) << pat_bit)
        | (u64::from(a.protection_key & 0xf) << 59)
        | huge
}

#[inline(always)]
fn decode64(raw: u64, level: u8, large_levels: u8, addr_hi: u32) -> Entry<X86Attrs> {
    if raw & PageTableFlags::PRESENT.bits() == 0 {
        return Entry::Absent;
    }
    if level == 1 || (level <= large_levels && raw & PageTableFlags::HUGE_PAGE.bits() != 0) {
        let shift = 12 + 9 * (u32::from(level) - 1);
        let pat_bit = if level == 1 { 7 } else { 12 };
        let flags =
            PageTableFlags::from_bits_truncate(raw & !MANAGED & !(1 << pat_bit) & !mask(51, 12));
        Entry::Leaf(
            raw & mask(addr_hi, shift),
            X86Attrs {
                flags,
                pat: raw & (1 << pat_bit) != 0,
                protection_key: X86Entry(raw).protection_key(),
            },
        )
    } else {
        Entry::Table(raw & mask(addr_hi, 12))
    }
}

/// x86-64 4-level / 5-level paging; also the AMD nested-paging format (APM 15.25).
#[derive(Clone, Copy, Debug, Default)]
pub struct LongMode;

impl PageTableFormat for LongMode {
    type Attrs = X86Attrs;
    const NAME: &'static str = "4/5-level";
    const WIDE: bool = true;
    const INDEX_BITS: u32 = 9;
    const MIN_LEVELS: u8 = 4;
    const MAX_LEVELS: u8 = 5;
    const MAX_OUTPUT_BITS: u32 = 52;
    const AD_MASK: u64 = PageTableFlags::ACCESSED.bits() | PageTableFlags::DIRTY.bits();

    #[inline(always)]
    fn leaf_size(level: u8) -> Option<PageSize> {
        match level {
            1 => Some(PageSize::Size4K),
            2 => Some(PageSize::Size2M),
            3 => Some(PageSize::Size1G),
            _ => None,
        }
    }

    fn check_attrs(a: &X86Attrs) -> Result<(), &'static str> {
        check_common(a)?;
        if a.protection_key > 15 {
            return Err("protection key is 4 bits");
        }
        Ok(())
    }

    #[inline(always)]
    fn leaf(phys: u64, a: &X86Attrs, level: u8) -> u64 {
        leaf64(phys, a, level)
    }

    #[inline(always)]
    fn table(phys: u64, _level: u8) -> u64 {
        phys | PERMISSIVE
    }

    #[inline(always)]
    fn decode(raw: u64, level: u8) -> Entry<X86Attrs> {
        decode64(raw, level, 3, 51)
    }

    fn flush_kind(guest_physical_input: bool) -> FlushKind {
        if guest_physical_input {
            FlushKind::NestedAsid
        } else {
            FlushKind::GuestTlb
        }
    }
}

/// PAE paging: a 4-entry PDPT, then 512-entry directories and tables of 8-byte entries.
#[derive(Clone, Copy, Debug, Default)]
pub struct Pae;

impl PageTableFormat for Pae {
    type Attrs = X86Attrs;
    const NAME: &'static str = "PAE";
    const WIDE: bool = true;
    const INDEX_BITS: u32 = 9;
    const MIN_LEVELS: u8 = 3;
    const MAX_LEVELS: u8 = 3;
    const MAX_OUTPUT_BITS: u32 = 52;
    const AD_MASK: u64 = PageTableFlags::ACCESSED.bits() | PageTableFlags::DIRTY.bits();

    fn top_index_bits(_levels: u8) -> u32 {
        2
    }

    #[inline(always)]
    fn leaf_size(level: u8) -> Option<PageSize> {
        match level {
            1 => Some(PageSize::Size4K),
            2 => Some(PageSize::Size2M),
            _ => None,
        }
    }

    fn check_attrs(a: &X86Attrs) -> Result<(), &'static str> {
        check_common(a)?;
        if a.protection_key != 0 || a.flags.bits() & HIGH_SOFT != 0 {
            return Err("PAE entries have no protection key and bits 62:52 are reserved");
        }
        Ok(())
    }

    #[inline(always)]
    fn leaf(phys: u64, a: &X86Attrs, level: u8) -> u64 {
        leaf64(phys, a, level)
    }

    #[inline(always)]
    fn table(phys: u64, level: u8) -> u64 {
        // A PDPTE has only P, PWT, PCD: bits 2:1 are reserved (SDM Vol. 3A Table 4-8).
        if level == 3 {
            phys | PageTableFlags::PRESENT.bits()
        } else {
            phys | PERMISSIVE
        }
    }

    #[inline(always)]
    fn decode(raw: u64, level: u8) -> Entry<X86Attrs> {
        decode64(raw, level, 2, 51)
    }

    fn flush_kind(_guest_physical_input: bool) -> FlushKind {
        FlushKind::GuestTlb
    }
}

/// 32-bit paging: 1024-entry directory and tables of 4-byte entries; 4 MiB pages with CR4.PSE.
#[derive(Clone, Copy, Debug, Default)]
pub struct Legacy32;

impl PageTableFormat for Legacy32 {
    type Attrs = X86Attrs;
    const NAME: &'static str = "32-bit";
    const WIDE: bool = false;
    const INDEX_BITS: u32 = 10;
    const MIN_LEVELS: u8 = 2;
    const MAX_LEVELS: u8 = 2;
    const MAX_OUTPUT_BITS: u32 = 40;
    const MAX_TABLE_BITS: u32 = 32;
    const AD_MASK: u64 = PageTableFlags::ACCESSED.bits() | PageTableFlags::DIRTY.bits();

    fn max_output_bits_at(level: u8) -> u32 {
        if level == 2 { 40 } else { 32 }
    }

    #[inline(always)]
    fn leaf_size(level: u8) -> Option<PageSize> {
        match level {
            1 => Some(PageSize::Size4K),
            2 => Some(PageSize::Size4M),
            _ => None,
        }
    }

    fn check_attrs(a: &X86Attrs) -> Result<(), &'static str> {
        check_common(a)?;
        if a.protection_key != 0 || a.flags.bits() >> 32 != 0 {
            return Err("32-bit entries have no execute-disable, protection key or high bits");
        }
        Ok(())
    }

    #[inline(always)]
    fn leaf(phys: u64, a: &X86Attrs, level: u8) -> u64 {
        // PSE-36: physical-address bits 39:32 of a 4 MiB page go to bits 20:13 (SDM Vol. 3A Table 4-4).
        leaf64(phys & mask(31, 0), a, level) | (((phys >> 32) & 0xff) << 13)
    }

    #[inline(always)]
    fn table(phys: u64, _level: u8) -> u64 {
        phys | PERMISSIVE
    }

    #[inline(always)]
    fn decode(raw: u64, level: u8) -> Entry<X86Attrs> {
        if raw & 1 == 0 {
            return Entry::Absent;
        }
        if level == 2 && raw & PageTableFlags::HUGE_PAGE.bits() != 0 {
            // PSE-36: bits 20:13 hold physical-address bits 39:32 (SDM Vol. 3A Table 4-4).
            let addr = (raw & mask(31, 22)) | ((raw & mask(20, 13)) << 19);
            let flags =
                PageTableFlags::from_bits_truncate(raw & mask(11, 0) & !MANAGED & !(1 << 12));
            return Entry::Leaf(
                addr,
                X86Attrs {
                    flags,
                    pat: raw & (1 << 12) != 0,
                    protection_key: 0,
                },
            );
        }
        decode64(raw, level, 0, 31)
    }

    fn flush_kind(_guest_physical_input: bool) -> FlushKind {
        FlushKind::GuestTlb
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_mode_round_trip() {
        let a = X86Attrs {
            flags: PageTableFlags::PRESENT | PageTableFlags::WRITABLE | PageTableFlags::NO_EXECUTE,
            pat: true,
            protection_key: 5,
        };
        let raw = LongMode::leaf(0x20_0000, &a, 2);
        assert_eq!(raw & (1 << 12), 1 << 12, "PAT of a 2 MiB page is bit 12");
        assert_eq!(X86Entry(raw).protection_key(), 5);
        assert_eq!(LongMode::decode(raw, 2), Entry::Leaf(0x20_0000, a));
        let raw4k = LongMode::leaf(0x3000, &a, 1);
        assert!(X86Entry(raw4k).pat(1));
        assert_eq!(LongMode::decode(raw4k, 1), Entry::Leaf(0x3000, a));
        assert_eq!(
            LongMode::decode(LongMode::table(0x9000, 4), 4),
            Entry::Table(0x9000)
        );
        assert_eq!(Pae::table(0x9000, 3), 0x9001, "PDPTE bits 2:1 reserved");
    }

    #[test]
    fn legacy_pse36() {
        let raw = 0x0040_0000 | (0x12 << 13) | 0x83;
        assert!(matches!(
            Legacy32::decode(raw, 2),
            Entry::Leaf(0x12_0040_0000, _)
        ));
        let a = X86Attrs::new(PageTableFlags::PRESENT | PageTableFlags::NO_EXECUTE);
        assert!(Legacy32::check_attrs(&a).is_err());
        assert!(
            Pae::check_attrs(&X86Attrs {
                protection_key: 1,
                ..X86Attrs::new(PageTableFlags::PRESENT)
            })
            .is_err()
        );
        assert!(LongMode::check_attrs(&X86Attrs::new(PageTableFlags::WRITABLE)).is_err());
    }
}
