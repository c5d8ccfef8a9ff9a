//! The guest's physical memory: a map of regions (RAM, MMIO, reserved), turned into EPT or NPT.
//!
//! Manuals: Intel® 64 and IA-32 Architectures Software Developer's Manual, Combined Volumes, Order
//! Number 325462-086US, December 2024, Vol. 3C 29.3 "The Extended Page Table Mechanism (EPT)"
//! (29.3.3 "EPT-Induced VM Exits", 29.3.7 "EPT and Memory Typing"); AMD64 Architecture
//! Programmer's Manual Volume 2: System Programming, Publication No. 24593, Revision 3.42, March
//! 2024, 15.25 "Nested Paging".
//!
//! Only RAM regions are mapped in the nested tables. Each RAM region carries the memory type its
//! EPT entries get (write-back for ordinary RAM; a blue-pill hypervisor that maps the host's
//! physical address space one to one gives each range the type the host's MTRRs give it,
//! `hvkit_paging::Mtrrs::ranges`, since the EPT type replaces the MTRR type for guest accesses:
//! SDM Vol. 3C 29.3.7.2 "Memory Type Used for Translated Guest-Physical Addresses"). NPT entries
//! are always write-back: on AMD the host's MTRRs still apply to nested translations and combine
//! with it (APM 15.25.8 "Combining Memory Types, MTRRs"), so write-back there gives the MTRR type. An access to an MMIO or reserved region,
//! or to a hole, is a nested-page fault that reaches the caller as
//! [`crate::ExitKind::NestedPageFault`], with [`MemoryMap::lookup`] telling which region it hit.
//! RAM can also be mapped on demand later ([`NestedPaging::map_ram`]); every change returns an
//! `hvkit_paging::Flush` that the vCPU turns into INVEPT or a TLB flush.

use hvkit_paging::{
    EptAttrs, EptCapabilities, EptTable, Eptp, Flush, GuestPhysAddr, HostPhysAddr, MapError,
    MemoryType, NestedCr3, NptCapabilities, NptTable, PageSize, X86Attrs,
};
use x86_64::structures::paging::PageTableFlags;

use crate::platform::{Platform, PlatformFrames};

/// How many regions a [`MemoryMap`] holds.
pub const MAX_REGIONS: usize = 32;

/// What a guest-physical region is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RegionKind {
    /// RAM backed by the contiguous host-physical range starting at `host`.
    Ram {
        /// The host-physical address of the region's first byte.
        host: HostPhysAddr,
        /// The memory type of its EPT entries (SDM Vol. 3C 29.3.7.2 "Memory Type Used for
        /// Translated Guest-Physical Addresses"): [`MemoryType::WRITE_BACK`] for ordinary RAM;
        /// UC, WC, WT and WP for host ranges mapped straight through (device memory). Ignored
        /// by NPT, whose entries are write-back and combine with the host's MTRRs (APM 15.25.8
        /// "Combining Memory Types, MTRRs").
        memory_type: MemoryType,
    },
    /// Device memory the host emulates: never mapped, every access exits.
    Mmio,
    /// Nothing is there: accesses exit and the caller decides (usually a #GP or ignoring them).
    Reserved,
}

/// A guest-physical region.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Region {
    /// The first guest-physical address (4 KiB aligned).
    pub start: GuestPhysAddr,
    /// The length in bytes (a multiple of 4 KiB).
    pub len: u64,
    /// What it is.
    pub kind: RegionKind,
}

impl Region {
    /// Whether `gpa` is inside.
    #[must_use]
    pub fn contains(&self, gpa: GuestPhysAddr) -> bool {
        gpa.checked_offset_from(self.start)
            .is_some_and(|off| off < self.len)
    }

    /// The host-physical address of `gpa`, for RAM regions that contain it.
    #[must_use]
    pub fn host_address(&self, gpa: GuestPhysAddr) -> Option<HostPhysAddr> {
        let off = gpa
            .checked_offset_from(self.start)
            .filter(|&o| o < self.len)?;
        match self.kind {
            RegionKind::Ram { host, .. } => host.checked_add(off),
            _ => None,
        }
    }
}

/// Why a region was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MemoryMapError {
    /// The start, length or host address is not 4 KiB aligned, or the length is 0.
    #[error("region {start:#x}+{len:#x} is empty or not 4 KiB aligned")]
    Misaligned {
        /// The start.
        start: u64,
        /// The length.
        len: u64,
    },
    /// The region overlaps the existing region starting at this address.
    #[error("region overlaps the region at {0:#x}")]
    Overlap(u64),
    /// The map is full ([`MAX_REGIONS`]).
    #[error("the memory map already holds {MAX_REGIONS} regions")]
    Full,
    /// A RAM region's memory type is not one an EPT entry can hold (UC, WC, WT, WP, WB).
    #[error("region at {start:#x}: memory type {memory_type:?} is not valid in EPT entries")]
    MemoryType {
        /// The start.
        start: u64,
        /// The refused type.
        memory_type: MemoryType,
    },
    /// The region ends beyond the 52-bit physical address space.
    #[error("region {start:#x}+{len:#x} ends beyond the physical address space")]
    Wraps {
        /// The start.
        start: u64,
        /// The length.
        len: u64,
    },
}

/// The guest-physical memory map (at most [`MAX_REGIONS`] non-overlapping regions).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryMap {
    regions: [Option<Region>; MAX_REGIONS],
}

impl Default for MemoryMap {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryMap {
    /// An empty map.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            regions: [None; MAX_REGIONS],
        }
    }

    /// Adds a region.
    ///
    /// # Errors
    /// [`MemoryMapError`] for misaligned, empty, wrapping or overlapping regions, RAM of a memory
    /// type EPT cannot hold, or a full map.
    pub fn add(&mut self, region: Region) -> Result<(), MemoryMapError> {
        let (start, len) = (region.start.as_u64(), region.len);
        let host_ok = match region.kind {
            RegionKind::Ram { host, .. } => host.is_aligned(PageSize::Size4K),
            _ => true,
        };
        if len == 0 || start % 4096 != 0 || len % 4096 != 0 || !host_ok {
            return Err(MemoryMapError::Misaligned { start, len });
        }
        if let RegionKind::Ram { memory_type, .. } = region.kind
            && !memory_type.is_valid_for_ept()
        {
            return Err(MemoryMapError::MemoryType { start, memory_type });
        }
        let end = start
            .checked_add(len)
            .filter(|&end| GuestPhysAddr::try_new(end - 1).is_ok())
            .ok_or(MemoryMapError::Wraps { start, len })?;
        for r in self.regions.iter().flatten() {
            let (rs, re) = (r.start.as_u64(), r.start.as_u64().saturating_add(r.len));
            if start < re && rs < end {
                return Err(MemoryMapError::Overlap(rs));
            }
        }
        let slot = self
            .regions
            .iter_mut()
            .find(|r| r.is_none())
            .ok_or(MemoryMapError::Full)?;
        *slot = Some(region);
        Ok(())
    }

    /// Removes the region starting at `start`, returning it.
    pub fn remove(&mut self, start: GuestPhysAddr) -> Option<Region> {
        self.regions
            .iter_mut()
            .find(|r| matches!(r, Some(r) if r.start == start))
            .and_then(Option::take)
    }

    /// The region containing `gpa`.
    #[must_use]
    pub fn lookup(&self, gpa: GuestPhysAddr) -> Option<Region> {
        self.regions
            .iter()
            .flatten()
            .find(|r| r.contains(gpa))
            .copied()
    }

    /// The regions, in insertion order.
    pub fn regions(&self) -> impl Iterator<Item = &Region> {
        self.regions.iter().flatten()
    }
}

/// Why nested paging could not be built or changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NestedPagingError {
    /// The table builder refused (out of frames, overlap, …).
    #[error(transparent)]
    Map(#[from] MapError),
    /// The CPU cannot use this EPTP / nCR3.
    #[error(transparent)]
    Pointer(#[from] hvkit_paging::EptpError),
}

/// The nested page tables of one guest: EPT (Intel) or NPT (AMD), from platform frames.
#[derive(Debug)]
pub enum NestedPaging<'p, P: Platform + ?Sized> {
    /// Intel EPT and its EPTP.
    Ept {
        /// The table.
        table: EptTable<PlatformFrames<'p, P>>,
        /// The EPT pointer (checked against the capabilities).
        eptp: Eptp,
    },
    /// AMD nested paging and its nCR3.
    Npt {
        /// The table.
        table: NptTable<PlatformFrames<'p, P>>,
        /// The nested CR3.
        ncr3: NestedCr3,
    },
}

/// The attributes of RAM in the nested tables: read, write, execute, write-back.
const NPT_RAM: PageTableFlags = PageTableFlags::PRESENT
    .union(PageTableFlags::WRITABLE)
    .union(PageTableFlags::USER_ACCESSIBLE);

impl<'p, P: Platform + ?Sized> NestedPaging<'p, P> {
    /// A 4-level EPT with every RAM region of `map` mapped read/write/execute with the region's
    /// memory type; the
    /// EPTP uses write-back paging structures, and accessed/dirty flags when the CPU has them.
    ///
    /// # Errors
    /// [`NestedPagingError`]: the CPU lacks 4-level walks or write-back structures, or frames ran out.
    pub fn ept(
        platform: &'p P,
        map: &MemoryMap,
        caps: &EptCapabilities,
        phys_bits: u8,
    ) -> Result<Self, NestedPagingError> {
        let cfg = caps.table_config(4, phys_bits)?;
        let table = EptTable::new(PlatformFrames(platform), cfg)?;
        let eptp = match caps.eptp(table.root(), 4, MemoryType::WRITE_BACK, false) {
            Ok(eptp) => eptp,
            Err(e) => {
                table.free_all();
                return Err(e.into());
            }
        };
        let mut me = Self::Ept { table, eptp };
        if let Err(e) = me.map_all(map) {
            me.free();
            return Err(e);
        }
        Ok(me)
    }

    /// Nested tables of the host's depth with every RAM region of `map` mapped.
    ///
    /// # Errors
    /// [`NestedPagingError`]: no nested paging, or frames ran out.
    pub fn npt(
        platform: &'p P,
        map: &MemoryMap,
        caps: &NptCapabilities,
    ) -> Result<Self, NestedPagingError> {
        let cfg = caps.table_config()?;
        let table = NptTable::new(PlatformFrames(platform), cfg)?;
        let ncr3 = match caps.ncr3(table.root(), cfg.levels) {
            Ok(n) => n,
            Err(e) => {
                table.free_all();
                return Err(e.into());
            }
        };
        let mut me = Self::Npt { table, ncr3 };
        if let Err(e) = me.map_all(map) {
            me.free();
            return Err(e);
        }
        Ok(me)
    }

    fn map_all(&mut self, map: &MemoryMap) -> Result<(), NestedPagingError> {
        for r in map.regions() {
            if let RegionKind::Ram { host, memory_type } = r.kind {
                self.map_ram_typed(r.start, host, r.len, memory_type)?
                    .ignore();
            }
        }
        Ok(())
    }

    /// Maps `len` bytes of RAM at `gpa` to `host` (read, write, execute, write-back).
    ///
    /// # Errors
    /// [`NestedPagingError::Map`] (the tables are unchanged).
    pub fn map_ram(
        &mut self,
        gpa: GuestPhysAddr,
        host: HostPhysAddr,
        len: u64,
    ) -> Result<Flush, NestedPagingError> {
        self.map_ram_typed(gpa, host, len, MemoryType::WRITE_BACK)
    }

    /// Maps `len` bytes at `gpa` to `host` (read, write, execute) with EPT memory type
    /// `memory_type` (SDM Vol. 3C 29.3.7.2); NPT entries stay write-back, and the host's MTRRs
    /// combine with them (APM 15.25.8 "Combining Memory Types, MTRRs"). A type EPT entries
    /// cannot hold (UC- or a reserved encoding) is mapped as UC.
    ///
    /// # Errors
    /// [`NestedPagingError::Map`] (the tables are unchanged).
    pub fn map_ram_typed(
        &mut self,
        gpa: GuestPhysAddr,
        host: HostPhysAddr,
        len: u64,
        memory_type: MemoryType,
    ) -> Result<Flush, NestedPagingError> {
        let memory_type = if memory_type.is_valid_for_ept() {
            memory_type
        } else {
            MemoryType::UNCACHEABLE
        };
        Ok(match self {
            Self::Ept { table, .. } => {
                let attrs = EptAttrs::new(EptAttrs::RWX_WB.flags, memory_type);
                table.map(gpa, host, len, attrs)?
            }
            Self::Npt { table, .. } => table.map(gpa, host, len, X86Attrs::new(NPT_RAM))?,
        })
    }

    /// The EPT memory type of the page that maps `gpa` (`None` when unmapped, and on NPT, whose
    /// entries carry no type of their own).
    #[must_use]
    pub fn memory_type(&self, gpa: GuestPhysAddr) -> Option<MemoryType> {
        match self {
            Self::Ept { table, .. } => table.translate(gpa).map(|m| m.attrs.memory_type),
            Self::Npt { .. } => None,
        }
    }

    /// Unmaps `len` bytes at `gpa`.
    ///
    /// # Errors
    /// [`NestedPagingError::Map`] (the tables are unchanged).
    pub fn unmap(&mut self, gpa: GuestPhysAddr, len: u64) -> Result<Flush, NestedPagingError> {
        Ok(match self {
            Self::Ept { table, .. } => table.unmap(gpa, len)?,
            Self::Npt { table, .. } => table.unmap(gpa, len)?,
        })
    }

    /// The host-physical address `gpa` maps to.
    #[must_use]
    pub fn translate(&self, gpa: GuestPhysAddr) -> Option<HostPhysAddr> {
        match self {
            Self::Ept { table, .. } => table.translate_addr(gpa),
            Self::Npt { table, .. } => table.translate_addr(gpa),
        }
    }

    /// How many frames the tables use.
    #[must_use]
    pub fn table_frames(&self) -> usize {
        match self {
            Self::Ept { table, .. } => table.table_frames(),
            Self::Npt { table, .. } => table.table_frames(),
        }
    }

    /// Frees every table frame.
    pub fn free(self) {
        match self {
            Self::Ept { table, .. } => {
                table.free_all();
            }
            Self::Npt { table, .. } => {
                table.free_all();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::HostPlatform;

    fn ram(start: u64, len: u64, host: u64) -> Region {
        Region {
            start: GuestPhysAddr::new_truncate(start),
            len,
            kind: RegionKind::Ram {
                host: HostPhysAddr::new_truncate(host),
                memory_type: MemoryType::WRITE_BACK,
            },
        }
    }

    #[test]
    fn map_refuses_bad_regions_and_looks_up() {
        let mut m = MemoryMap::new();
        m.add(ram(0, 0x20_0000, 0x1000_0000)).unwrap();
        m.add(Region {
            start: GuestPhysAddr::new_truncate(0xfee0_0000),
            len: 0x1000,
            kind: RegionKind::Mmio,
        })
        .unwrap();
        assert_eq!(
            m.add(ram(0x1f_f000, 0x2000, 0)),
            Err(MemoryMapError::Overlap(0))
        );
        assert!(matches!(
            m.add(ram(0x123, 0x1000, 0)),
            Err(MemoryMapError::Misaligned { .. })
        ));
        assert!(matches!(
            m.add(ram(0x40_0000, 0, 0)),
            Err(MemoryMapError::Misaligned { .. })
        ));
        assert!(matches!(
            m.add(ram(0xffff_ffff_ffff_f000, 0x2000, 0)),
            Err(MemoryMapError::Wraps { .. })
        ));
        let hit = m.lookup(GuestPhysAddr::new_truncate(0x1234)).unwrap();
        assert_eq!(
            hit.host_address(GuestPhysAddr::new_truncate(0x1234)),
            Some(HostPhysAddr::new_truncate(0x1000_1234))
        );
        assert_eq!(
            m.lookup(GuestPhysAddr::new_truncate(0xfee0_0300))
                .map(|r| r.kind),
            Some(RegionKind::Mmio)
        );
        assert_eq!(m.lookup(GuestPhysAddr::new_truncate(0x30_0000)), None);
        for i in 0..(MAX_REGIONS as u64 - 2) {
            m.add(ram(0x1_0000_0000 + i * 0x1000, 0x1000, 0)).unwrap();
        }
        assert_eq!(
            m.add(ram(0x2_0000_0000, 0x1000, 0)),
            Err(MemoryMapError::Full)
        );
        assert!(m.remove(GuestPhysAddr::ZERO).is_some());
        assert_eq!(m.regions().count(), MAX_REGIONS - 1);
    }

    #[test]
    fn ept_entries_take_the_region_type() {
        let p = HostPlatform::new(64);
        let mut m = MemoryMap::new();
        m.add(ram(0, 0x40_0000, 0)).unwrap();
        let uc = |start: u64, len: u64, memory_type: MemoryType| Region {
            start: GuestPhysAddr::new_truncate(start),
            len,
            kind: RegionKind::Ram {
                host: HostPhysAddr::new_truncate(start),
                memory_type,
            },
        };
        m.add(uc(0xfec0_0000, 0x30_0000, MemoryType::UNCACHEABLE))
            .unwrap();
        assert_eq!(
            m.add(uc(0x1_0000_0000, 0x1000, MemoryType::UNCACHED_MINUS)),
            Err(MemoryMapError::MemoryType {
                start: 0x1_0000_0000,
                memory_type: MemoryType::UNCACHED_MINUS
            }),
            "UC- is a PAT type only"
        );
        assert!(matches!(
            m.add(uc(0x1_0000_0000, 0x1000, MemoryType(2))),
            Err(MemoryMapError::MemoryType { .. })
        ));
        let caps = EptCapabilities {
            page_walk_4: true,
            write_back: true,
            pages_2m: true,
            ..EptCapabilities::default()
        };
        let mut ept = NestedPaging::ept(&p, &m, &caps, 39).unwrap();
        let at = |a: u64| GuestPhysAddr::new_truncate(a);
        assert_eq!(ept.memory_type(at(0x1234)), Some(MemoryType::WRITE_BACK));
        assert_eq!(
            ept.memory_type(at(0xfee0_0300)),
            Some(MemoryType::UNCACHEABLE)
        );
        assert_eq!(
            ept.translate(at(0xfee0_0300)),
            Some(HostPhysAddr::new_truncate(0xfee0_0300))
        );
        assert_eq!(ept.memory_type(at(0x8000_0000)), None, "unmapped");
        // A type EPT cannot hold is mapped as UC by the direct call.
        ept.map_ram_typed(
            at(0x9000_0000),
            HostPhysAddr::new_truncate(0x9000_0000),
            0x1000,
            MemoryType::UNCACHED_MINUS,
        )
        .unwrap()
        .ignore();
        assert_eq!(
            ept.memory_type(at(0x9000_0000)),
            Some(MemoryType::UNCACHEABLE)
        );
        ept.free();
        let npt_caps = NptCapabilities {
            nested_paging: true,
            host_la57: false,
            pages_1g: false,
            phys_bits: 40,
        };
        let npt = NestedPaging::npt(&p, &m, &npt_caps).unwrap();
        assert!(npt.translate(at(0xfee0_0000)).is_some());
        assert_eq!(npt.memory_type(at(0xfee0_0000)), None, "NPT: no own type");
        npt.free();
        assert_eq!(p.live_frames(), 0);
    }

    #[test]
    fn ept_and_npt_map_only_ram() {
        let p = HostPlatform::new(64);
        let mut m = MemoryMap::new();
        m.add(ram(0, 0x40_0000, 0x1000_0000)).unwrap();
        m.add(Region {
            start: GuestPhysAddr::new_truncate(0x8000_0000),
            len: 0x1000,
            kind: RegionKind::Mmio,
        })
        .unwrap();
        let caps = EptCapabilities {
            page_walk_4: true,
            write_back: true,
            pages_2m: true,
            ..EptCapabilities::default()
        };
        let mut ept = NestedPaging::ept(&p, &m, &caps, 39).unwrap();
        assert_eq!(
            ept.translate(GuestPhysAddr::new_truncate(0x20_1234)),
            Some(HostPhysAddr::new_truncate(0x1020_1234))
        );
        assert_eq!(
            ept.translate(GuestPhysAddr::new_truncate(0x8000_0000)),
            None
        );
        let NestedPaging::Ept { eptp, .. } = &ept else {
            unreachable!()
        };
        assert_eq!(eptp.page_walk_length(), 4);
        // Map on demand, then unmap.
        ept.map_ram(
            GuestPhysAddr::new_truncate(0x9000_0000),
            HostPhysAddr::new_truncate(0x2000_0000),
            0x1000,
        )
        .unwrap()
        .ignore();
        assert!(
            ept.translate(GuestPhysAddr::new_truncate(0x9000_0000))
                .is_some()
        );
        ept.unmap(GuestPhysAddr::new_truncate(0x9000_0000), 0x1000)
            .unwrap()
            .ignore();
        ept.free();
        let no_wb = EptCapabilities {
            page_walk_4: true,
            ..EptCapabilities::default()
        };
        assert!(matches!(
            NestedPaging::ept(&p, &m, &no_wb, 39),
            Err(NestedPagingError::Pointer(_))
        ));
        let npt_caps = NptCapabilities {
            nested_paging: true,
            host_la57: false,
            pages_1g: false,
            phys_bits: 40,
        };
        let npt = NestedPaging::npt(&p, &m, &npt_caps).unwrap();
        assert_eq!(
            npt.translate(GuestPhysAddr::new_truncate(0x3f_f000)),
            Some(HostPhysAddr::new_truncate(0x103f_f000))
        );
        npt.free();
        assert!(NestedPaging::npt(&p, &m, &NptCapabilities::default()).is_err());
        assert_eq!(p.live_frames(), 0);
    }
}
