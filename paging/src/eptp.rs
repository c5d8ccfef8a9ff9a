//! EPT pointers and nested CR3 values, validated against what the CPU reports.
//!
//! Manual: Intel® 64 and IA-32 Architectures Software Developer's Manual, Combined Volumes, Order
//! Number 325462-086US, December 2024, Vol. 3C Section 25.6.11 "Extended-Page-Table Pointer (EPTP)"
//! (Table 25-9) and Vol. 3D Appendix A.10 "VPID and EPT Capabilities"; AMD64 Architecture
//! Programmer's Manual Volume 2: System Programming, Publication No. 24593, Revision 3.42, March 2024,
//! Section 15.25.4 "Nested Paging and VMRUN/#VMEXIT" (nCR3) and Section 15.25.1 "Nested Paging
//! Facilities" (CPUID Fn8000_000A_EDX\[NP\]).
//!
//! [`EptCapabilities`] is a small plain struct so that this crate does not depend on hvkit-vmx;
//! hvkit-vmx converts its IA32_VMX_EPT_VPID_CAP snapshot into it (or use
//! [`EptCapabilities::from_msr`]).

use bit_field::BitField;

use crate::addr::HostPhysAddr;
use crate::format::{EptAttrs, EptFlags};
use crate::memtype::MemoryType;
use crate::table::TableConfig;

/// A request the CPU cannot honour.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EptpError {
    /// The page-walk length (4 or 5 levels) is not supported (IA32_VMX_EPT_VPID_CAP bits 6/7).
    #[error("{0}-level page walks are not supported")]
    UnsupportedWalkLength(u8),
    /// The paging-structure memory type is not allowed (UC: bit 8, WB: bit 14).
    #[error("paging-structure memory type {0:?} is not supported")]
    UnsupportedMemoryType(MemoryType),
    /// Accessed/dirty flags for EPT are not supported (bit 21).
    #[error("EPT accessed/dirty flags are not supported")]
    AccessedDirtyUnsupported,
    /// The root is not 4 KiB aligned or is beyond MAXPHYADDR.
    #[error("root {0:?} is misaligned or beyond MAXPHYADDR")]
    BadRoot(HostPhysAddr),
    /// Execute-only EPT pages are not supported (bit 0).
    #[error("execute-only translations are not supported")]
    ExecuteOnlyUnsupported,
    /// Nested paging is not supported (CPUID Fn8000_000A_EDX\[NP\]).
    #[error("nested paging is not supported")]
    NestedPagingUnsupported,
}

/// The EPT-related bits of IA32_VMX_EPT_VPID_CAP (SDM Vol. 3D Appendix A.10).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[expect(clippy::struct_excessive_bools, reason = "one bool per capability bit")]
pub struct EptCapabilities {
    /// Bit 0: execute-only translations.
    pub execute_only: bool,
    /// Bit 6: 4-level page walks.
    pub page_walk_4: bool,
    /// Bit 7: 5-level page walks.
    pub page_walk_5: bool,
    /// Bit 8: UC paging-structure memory type.
    pub uncacheable: bool,
    /// Bit 14: WB paging-structure memory type.
    pub write_back: bool,
    /// Bit 16: 2 MiB pages.
    pub pages_2m: bool,
    /// Bit 17: 1 GiB pages.
    pub pages_1g: bool,
    /// Bit 21: accessed and dirty flags.
    pub accessed_dirty: bool,
    /// Bit 22: advanced VM-exit information for EPT violations.
    pub advanced_exit_info: bool,
    /// Bit 23: supervisor shadow-stack control.
    pub supervisor_shadow_stack: bool,
}

impl EptCapabilities {
    /// Decodes the raw IA32_VMX_EPT_VPID_CAP value (MSR 48CH).
    #[must_use]
    pub fn from_msr(v: u64) -> Self {
        Self {
            execute_only: v.get_bit(0),
            page_walk_4: v.get_bit(6),
            page_walk_5: v.get_bit(7),
            uncacheable: v.get_bit(8),
            write_back: v.get_bit(14),
            pages_2m: v.get_bit(16),
            pages_1g: v.get_bit(17),
            accessed_dirty: v.get_bit(21),
            advanced_exit_info: v.get_bit(22),
            supervisor_shadow_stack: v.get_bit(23),
        }
    }

    fn walk_ok(&self, levels: u8) -> Result<(), EptpError> {
        match levels {
            4 if self.page_walk_4 => Ok(()),
            5 if self.page_walk_5 => Ok(()),
            _ => Err(EptpError::UnsupportedWalkLength(levels)),
        }
    }

    /// The builder configuration for an EPT of `levels` levels on a CPU with MAXPHYADDR
    /// `phys_bits`: 2 MiB and 1 GiB pages only where supported.
    ///
    /// # Errors
    /// [`EptpError::UnsupportedWalkLength`].
    pub fn table_config(&self, levels: u8, phys_bits: u8) -> Result<TableConfig, EptpError> {
        self.walk_ok(levels)?;
        Ok(TableConfig::new(levels)
            .with_large_pages(self.pages_2m)
            .with_huge_pages(self.pages_2m && self.pages_1g)
            .with_phys_bits(phys_bits))
    }

    /// Checks leaf attributes against the CPU (execute-only needs bit 0).
    ///
    /// # Errors
    /// [`EptpError::ExecuteOnlyUnsupported`].
    pub fn check_attrs(&self, attrs: &EptAttrs) -> Result<(), EptpError> {
        let f = attrs.flags;
        if !self.execute_only
            && !f.contains(EptFlags::READ)
            && f.intersects(EptFlags::EXECUTE | EptFlags::USER_EXECUTE)
        {
            return Err(EptpError::ExecuteOnlyUnsupported);
        }
        Ok(())
    }

    /// Builds an EPTP for the table rooted at `root`.
    ///
    /// # Errors
    /// [`EptpError`] if the walk length, memory type or A/D flags are not supported, or the root is
    /// misaligned.
    pub fn eptp(
        &self,
        root: HostPhysAddr,
        levels: u8,
        memory_type: MemoryType,
        accessed_dirty: bool,
    ) -> Result<Eptp, EptpError> {
        self.walk_ok(levels)?;
        let mt_ok = match memory_type {
            MemoryType::UNCACHEABLE => self.uncacheable,
            MemoryType::WRITE_BACK => self.write_back,
            _ => false,
        };
        if !mt_ok {
            return Err(EptpError::UnsupportedMemoryType(memory_type));
        }
        if accessed_dirty && !self.accessed_dirty {
            return Err(EptpError::AccessedDirtyUnsupported);
        }
        if !root.is_aligned(crate::PageSize::Size4K) {
            return Err(EptpError::BadRoot(root));
        }
        let mut v = root.as_u64();
        v.set_bits(0..3, u64::from(memory_type.0));
        v.set_bits(3..6, u64::from(levels - 1));
        v.set_bit(6, accessed_dirty);
        Ok(Eptp(v))
    }
}

impl EptCapabilities {
    /// [`Self::eptp`] for a built table (root and depth taken from it).
    ///
    /// # Errors
    /// As [`Self::eptp`].
    pub fn eptp_for<C: crate::memory::FrameAllocator>(
        &self,
        table: &crate::table::EptTable<C>,
        memory_type: MemoryType,
        accessed_dirty: bool,
    ) -> Result<Eptp, EptpError> {
        self.eptp(
            table.root(),
            table.config().levels,
            memory_type,
            accessed_dirty,
        )
    }
}

/// An EPT pointer (SDM Vol. 3C 25.6.11, Table 25-9).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(transparent)]
pub struct Eptp(pub u64);

impl Eptp {
    /// Bits 2:0: memory type used to access the EPT paging structures.
    #[must_use]
    pub fn memory_type(self) -> MemoryType {
        #[expect(clippy::cast_possible_truncation, reason = "a 3-bit field")]
        MemoryType(self.0.get_bits(0..3) as u8)
    }

    /// Bits 5:3 plus one: the page-walk length (4 or 5).
    #[must_use]
    pub fn page_walk_length(self) -> u8 {
        #[expect(clippy::cast_possible_truncation, reason = "a 3-bit field")]
        let l = self.0.get_bits(3..6) as u8;
        l + 1
    }

    /// Bit 6: accessed and dirty flags enabled.
    #[must_use]
    pub fn accessed_dirty(self) -> bool {
        self.0.get_bit(6)
    }

    /// Bit 7: supervisor shadow-stack access rights enforced.
    #[must_use]
    pub fn supervisor_shadow_stack(self) -> bool {
        self.0.get_bit(7)
    }

    /// Bits 51:12: the EPT PML4 (or PML5) table.
    #[must_use]
    pub fn root(self) -> HostPhysAddr {
        HostPhysAddr::new_truncate(self.0 & 0x000f_ffff_ffff_f000)
    }
}

/// What the CPU reports for AMD nested paging (CPUID Fn8000_000A_EDX and Fn8000_0001_EDX, CR4.LA57).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NptCapabilities {
    /// Fn8000_000A_EDX\[0\] NP: nested paging.
    pub nested_paging: bool,
    /// The host runs 5-level paging (CR4.LA57), so nested tables have five levels.
    pub host_la57: bool,
    /// Fn8000_0001_EDX\[26\] Page1GB: 1 GiB pages.
    pub pages_1g: bool,
    /// MAXPHYADDR (Fn8000_0008_EAX\[7:0\]).
    pub phys_bits: u8,
}

impl NptCapabilities {
    /// The builder configuration for nested tables (the host's depth, 2 MiB always, 1 GiB if supported).
    ///
    /// # Errors
    /// [`EptpError::NestedPagingUnsupported`].
    pub fn table_config(&self) -> Result<TableConfig, EptpError> {
        if !self.nested_paging {
            return Err(EptpError::NestedPagingUnsupported);
        }
        let levels = if self.host_la57 { 5 } else { 4 };
        Ok(TableConfig::new(levels)
            .with_huge_pages(self.pages_1g)
            .with_phys_bits(self.phys_bits))
    }

    /// The nCR3 for a nested table rooted at `root` with `levels` levels.
    ///
    /// # Errors
    /// [`EptpError`] if nested paging is missing, the depth differs from the host's, or the root is
    /// misaligned or beyond MAXPHYADDR.
    pub fn ncr3(&self, root: HostPhysAddr, levels: u8) -> Result<NestedCr3, EptpError> {
        let cfg = self.table_config()?;
        if levels != cfg.levels {
            return Err(EptpError::UnsupportedWalkLength(levels));
        }
        if !root.is_aligned(crate::PageSize::Size4K) || root.as_u64() >> self.phys_bits.min(52) != 0
        {
            return Err(EptpError::BadRoot(root));
        }
        Ok(NestedCr3(root.as_u64()))
    }
}

impl NptCapabilities {
    /// [`Self::ncr3`] for a built nested table (root and depth taken from it).
    ///
    /// # Errors
    /// As [`Self::ncr3`].
    pub fn ncr3_for<C: crate::memory::FrameAllocator>(
        &self,
        table: &crate::table::NptTable<C>,
    ) -> Result<NestedCr3, EptpError> {
        self.ncr3(table.root(), table.config().levels)
    }
}

/// The VMCB N_CR3 field (APM 15.25.4): the nested table root in CR3 format (PWT bit 3, PCD bit 4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(transparent)]
pub struct NestedCr3(pub u64);

impl NestedCr3 {
    /// Bits 51:12: the nested PML4 (or PML5) table.
    #[must_use]
    pub fn root(self) -> HostPhysAddr {
        HostPhysAddr::new_truncate(self.0 & 0x000f_ffff_ffff_f000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps() -> EptCapabilities {
        EptCapabilities::from_msr((1 << 6) | (1 << 14) | (1 << 16) | (1 << 21))
    }

    #[test]
    fn eptp_fields() {
        let root = HostPhysAddr::new_truncate(0x1234_5000);
        let e = caps().eptp(root, 4, MemoryType::WRITE_BACK, true);
        assert_eq!(e, Ok(Eptp(0x1234_5000 | 6 | (3 << 3) | (1 << 6))));
        let e = e.unwrap_or(Eptp(0));
        assert_eq!(
            (
                e.page_walk_length(),
                e.memory_type(),
                e.accessed_dirty(),
                e.root()
            ),
            (4, MemoryType::WRITE_BACK, true, root)
        );
    }

    #[test]
    fn refuses_what_the_cpu_lacks() {
        let root = HostPhysAddr::new_truncate(0x1000);
        let c = caps();
        assert_eq!(
            c.eptp(root, 5, MemoryType::WRITE_BACK, false),
            Err(EptpError::UnsupportedWalkLength(5))
        );
        assert_eq!(
            c.eptp(root, 4, MemoryType::UNCACHEABLE, false),
            Err(EptpError::UnsupportedMemoryType(MemoryType::UNCACHEABLE))
        );
        assert_eq!(
            c.eptp(root, 4, MemoryType::WRITE_THROUGH, false),
            Err(EptpError::UnsupportedMemoryType(MemoryType::WRITE_THROUGH))
        );
        let no_ad = EptCapabilities {
            accessed_dirty: false,
            ..c
        };
        assert_eq!(
            no_ad.eptp(root, 4, MemoryType::WRITE_BACK, true),
            Err(EptpError::AccessedDirtyUnsupported)
        );
        assert_eq!(
            c.eptp(
                HostPhysAddr::new_truncate(0x1800),
                4,
                MemoryType::WRITE_BACK,
                false
            ),
            Err(EptpError::BadRoot(HostPhysAddr::new_truncate(0x1800)))
        );
        let cfg = c.table_config(4, 46);
        assert_eq!(
            cfg.map(|c| (c.large_pages, c.huge_pages, c.phys_bits)),
            Ok((true, false, 46))
        );
        let x = EptAttrs::new(EptFlags::EXECUTE, MemoryType::WRITE_BACK);
        assert_eq!(c.check_attrs(&x), Err(EptpError::ExecuteOnlyUnsupported));
        assert_eq!(
            EptCapabilities {
                execute_only: true,
                ..c
            }
            .check_attrs(&x),
            Ok(())
        );
    }

    #[test]
    fn from_tables() {
        let arena = crate::HostArena::new(8);
        let c = caps();
        let t = crate::EptTable::new(&arena, c.table_config(4, 39).unwrap()).unwrap();
        assert_eq!(
            c.eptp_for(&t, MemoryType::WRITE_BACK, false)
                .map(|e| e.root()),
            Ok(t.root())
        );
        let n = NptCapabilities {
            nested_paging: true,
            host_la57: true,
            pages_1g: false,
            phys_bits: 48,
        };
        let nt = crate::NptTable::new(&arena, n.table_config().unwrap()).unwrap();
        assert_eq!(n.ncr3_for(&nt), Ok(NestedCr3(nt.root().as_u64())));
        assert_eq!(nt.config().levels, 5);
        t.free_all();
        nt.free_all();
    }

    #[test]
    fn ncr3() {
        let c = NptCapabilities {
            nested_paging: true,
            host_la57: false,
            pages_1g: true,
            phys_bits: 48,
        };
        let r = HostPhysAddr::new_truncate(0x7000);
        assert_eq!(c.ncr3(r, 4), Ok(NestedCr3(0x7000)));
        assert_eq!(c.ncr3(r, 5), Err(EptpError::UnsupportedWalkLength(5)));
        assert_eq!(
            NptCapabilities::default().ncr3(r, 4),
            Err(EptpError::NestedPagingUnsupported)
        );
        assert_eq!(
            c.ncr3(HostPhysAddr::new_truncate(1 << 48), 4),
            Err(EptpError::BadRoot(HostPhysAddr::new_truncate(1 << 48)))
        );
    }
}
