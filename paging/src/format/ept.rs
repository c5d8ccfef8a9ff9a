//! Extended page tables (Intel EPT).
//!
//! Manual: Intel® 64 and IA-32 Architectures Software Developer's Manual, Combined Volumes, Order
//! Number 325462-086US, December 2024, Vol. 3C Section 29.3.2 "EPT Translation Mechanism", Tables
//! 29-1 to 29-6 (EPT PML4E/PDPTE/PDE/PTE formats), Section 29.3.3.2 "EPT Violations", Section 29.3.5
//! "Accessed and Dirty Flags for EPT", Section 29.3.4 "Sub-Page Write Permissions" and Section
//! 26.5.7.1 "Convertible EPT Violations" (suppress #VE).

use bit_field::BitField;
use bitflags::bitflags;

use super::{Entry, PageTableFormat, mask};
use crate::addr::PageSize;
use crate::flush::FlushKind;
use crate::memtype::MemoryType;

bitflags! {
    /// Single-bit fields of an EPT paging-structure entry (SDM Vol. 3C Tables 29-1 to 29-6).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct EptFlags: u64 {
        /// Bit 0: reads allowed.
        const READ = 1 << 0;
        /// Bit 1: writes allowed.
        const WRITE = 1 << 1;
        /// Bit 2: instruction fetches allowed (supervisor-mode linear addresses when mode-based
        /// execute control is on).
        const EXECUTE = 1 << 2;
        /// Bit 6 (leaf): ignore the guest PAT memory type and use bits 5:3 alone.
        const IGNORE_PAT = 1 << 6;
        /// Bit 7: the entry maps a page (PDPTE: 1 GiB, PDE: 2 MiB) instead of a table.
        const LARGE_PAGE = 1 << 7;
        /// Bit 8: accessed (set by the CPU when EPTP bit 6 enables A/D flags).
        const ACCESSED = 1 << 8;
        /// Bit 9 (leaf): dirty (set by the CPU on writes when A/D flags are enabled).
        const DIRTY = 1 << 9;
        /// Bit 10: instruction fetches from user-mode linear addresses allowed (mode-based execute
        /// control for EPT).
        const USER_EXECUTE = 1 << 10;
        /// Bit 57 (leaf): verify guest paging (HLAT / guest-paging verification).
        const VERIFY_GUEST_PAGING = 1 << 57;
        /// Bit 58 (leaf): paging-write access (guest paging A/D updates allowed under guest-paging
        /// verification).
        const PAGING_WRITE_ACCESS = 1 << 58;
        /// Bit 60 (leaf): supervisor shadow-stack page.
        const SUPERVISOR_SHADOW_STACK = 1 << 60;
        /// Bit 61 (4 KiB leaf): sub-page write permissions apply (SPP).
        const SUB_PAGE_WRITE = 1 << 61;
        /// Bit 63: suppress #VE (EPT violations through this entry are never converted to #VE).
        const SUPPRESS_VE = 1 << 63;
    }
}

const PERMS: u64 = EptFlags::READ.bits() | EptFlags::WRITE.bits() | EptFlags::EXECUTE.bits();
const ATTR_FLAGS: EptFlags = EptFlags::READ
    .union(EptFlags::WRITE)
    .union(EptFlags::EXECUTE)
    .union(EptFlags::IGNORE_PAT)
    .union(EptFlags::USER_EXECUTE)
    .union(EptFlags::VERIFY_GUEST_PAGING)
    .union(EptFlags::PAGING_WRITE_ACCESS)
    .union(EptFlags::SUPERVISOR_SHADOW_STACK)
    .union(EptFlags::SUB_PAGE_WRITE)
    .union(EptFlags::SUPPRESS_VE);

/// A raw EPT paging-structure entry with named accessors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[repr(transparent)]
pub struct EptEntry(pub u64);

impl EptEntry {
    /// The single-bit fields.
    #[must_use]
    pub const fn flags(self) -> EptFlags {
        EptFlags::from_bits_truncate(self.0)
    }

    /// Bits 5:3 of a leaf: the EPT memory type.
    #[must_use]
    pub fn memory_type(self) -> MemoryType {
        #[expect(clippy::cast_possible_truncation, reason = "a 3-bit field")]
        MemoryType(self.0.get_bits(3..6) as u8)
    }

    /// Present per SDM 29.3.2: any of bits 2:0, or bit 10 when mode-based execute control is on.
    #[must_use]
    pub const fn is_present(self, mode_based_execute: bool) -> bool {
        self.0 & PERMS != 0 || (mode_based_execute && self.0 & EptFlags::USER_EXECUTE.bits() != 0)
    }

    /// The physical address in bits 51:12, with the low bits of a `size` page cleared.
    #[must_use]
    pub const fn addr(self, size: PageSize) -> u64 {
        self.0 & mask(51, size.shift())
    }
}

/// Attributes of an EPT leaf: permission and other flags, plus the memory type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EptAttrs {
    /// Permission and control flags (address, large-page and A/D bits are ignored here).
    pub flags: EptFlags,
    /// Memory type, bits 5:3 (SDM Vol. 3C 29.3.7.2 "Memory Type Used for Translated Guest-Physical
    /// Addresses").
    pub memory_type: MemoryType,
}

impl EptAttrs {
    /// Read/write/execute, write-back.
    pub const RWX_WB: Self = Self {
        flags: EptFlags::READ
            .union(EptFlags::WRITE)
            .union(EptFlags::EXECUTE),
        memory_type: MemoryType::WRITE_BACK,
    };

    /// `flags` with memory type `memory_type`.
    #[must_use]
    pub const fn new(flags: EptFlags, memory_type: MemoryType) -> Self {
        Self { flags, memory_type }
    }
}

/// The EPT format (4- or 5-level; SDM Vol. 3C 29.3.2).
#[derive(Clone, Copy, Debug, Default)]
pub struct Ept;

impl PageTableFormat for Ept {
    type Attrs = EptAttrs;
    const NAME: &'static str = "EPT";
    const WIDE: bool = true;
    const INDEX_BITS: u32 = 9;
    const MIN_LEVELS: u8 = 4;
    const MAX_LEVELS: u8 = 5;
    const MAX_OUTPUT_BITS: u32 = 52;
    const AD_MASK: u64 = EptFlags::ACCESSED.bits() | EptFlags::DIRTY.bits();

    #[inline(always)]
    fn leaf_size(level: u8) -> Option<PageSize> {
        match level {
            1 => Some(PageSize::Size4K),
            2 => Some(PageSize::Size2M),
            3 => Some(PageSize::Size1G),
            _ => None,
        }
    }

    fn check_attrs(attrs: &EptAttrs) -> Result<(), &'static str> {
        let f = attrs.flags.bits();
        if f & !ATTR_FLAGS.bits() != 0 {
            return Err("large-page, accessed and dirty bits are managed by the table");
        }
        if f & (PERMS | EptFlags::USER_EXECUTE.bits()) == 0 {
            return Err("no access right: the entry would not be present");
        }
        if f & EptFlags::WRITE.bits() != 0 && f & EptFlags::READ.bits() == 0 {
            return Err("write without read is an EPT misconfiguration");
        }
        if !attrs.memory_type.is_valid_for_ept() {
            return Err("memory type 2, 3 or 7 is an EPT misconfiguration");
        }
        Ok(())
    }

    #[inline(always)]
    fn leaf(phys: u64, attrs: &EptAttrs, level: u8) -> u64 {
        let large = if level > 1 {
            EptFlags::LARGE_PAGE.bits()
        } else {
            0
        };
        phys | (attrs.flags.bits() & ATTR_FLAGS.bits())
            | (u64::from(attrs.memory_type.0 & 7) << 3)
            | large
    }

    #[inline(always)]
    fn table(phys: u64, _level: u8) -> u64 {
        phys | PERMS | EptFlags::USER_EXECUTE.bits()
    }

    #[inline(always)]
    fn decode(raw: u64, level: u8) -> Entry<EptAttrs> {
        if raw & (PERMS | EptFlags::USER_EXECUTE.bits()) == 0 {
            return Entry::Absent;
        }
        if level == 1 || (level <= 3 && raw & EptFlags::LARGE_PAGE.bits() != 0) {
            let shift = 12 + 9 * (u32::from(level) - 1);
            let e = EptEntry(raw);
            Entry::Leaf(
                raw & mask(51, shift),
                EptAttrs {
                    flags: EptFlags::from_bits_truncate(raw & ATTR_FLAGS.bits()),
                    memory_type: e.memory_type(),
                },
            )
        } else {
            Entry::Table(raw & mask(51, 12))
        }
    }

    fn flush_kind(_guest_physical_input: bool) -> FlushKind {
        FlushKind::InveptSingleContext
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaf_round_trip() {
        let a = EptAttrs::new(
            EptFlags::READ | EptFlags::EXECUTE | EptFlags::SUPPRESS_VE | EptFlags::IGNORE_PAT,
            MemoryType::WRITE_THROUGH,
        );
        let raw = Ept::leaf(0x4000_0000, &a, 3);
        assert_eq!(
            raw,
            0x4000_0000 | 1 | 4 | (4 << 3) | (1 << 6) | (1 << 7) | (1 << 63)
        );
        assert_eq!(Ept::decode(raw, 3), Entry::Leaf(0x4000_0000, a));
        assert_eq!(EptEntry(raw).memory_type(), MemoryType::WRITE_THROUGH);
        assert!(EptEntry(raw).flags().contains(EptFlags::LARGE_PAGE));
        assert_eq!(Ept::decode(Ept::table(0x5000, 4), 4), Entry::Table(0x5000));
        assert_eq!(Ept::decode(0x5000, 1), Entry::Absent);
    }

    #[test]
    fn attrs_checked() {
        assert!(Ept::check_attrs(&EptAttrs::RWX_WB).is_ok());
        assert!(Ept::check_attrs(&EptAttrs::new(EptFlags::WRITE, MemoryType::WRITE_BACK)).is_err());
        assert!(
            Ept::check_attrs(&EptAttrs::new(EptFlags::empty(), MemoryType::WRITE_BACK)).is_err()
        );
        assert!(Ept::check_attrs(&EptAttrs::new(EptFlags::READ, MemoryType(2))).is_err());
        assert!(
            Ept::check_attrs(&EptAttrs::new(
                EptFlags::READ | EptFlags::DIRTY,
                MemoryType(0)
            ))
            .is_err()
        );
        assert!(EptEntry(1 << 10).is_present(true));
        assert!(!EptEntry(1 << 10).is_present(false));
        assert_eq!(EptEntry(0x20_1007).addr(PageSize::Size2M), 0x20_0000);
    }
}
