//! Memory types from the MTRRs, and EPT mappings that follow them.
//!
//! Manual: Intel® 64 and IA-32 Architectures Software Developer's Manual, Combined Volumes, Order
//! Number 325462-086US, December 2024, Vol. 3A Section 12.11 "Memory Type Range Registers (MTRRs)":
//! 12.11.1 "MTRR Feature Identification" (IA32_MTRRCAP), 12.11.2.1 "IA32_MTRR_DEF_TYPE MSR",
//! 12.11.2.2 "Fixed Range MTRRs" (Table 12-9), 12.11.2.3 "Variable Range MTRRs", 12.11.4.1 "MTRR
//! Precedences"; and Vol. 3C Section 29.3.7.2 "Memory Type Used for Translated Guest-Physical
//! Addresses" (the EPT memory type takes the place of the MTRR type for guest accesses).
//!
//! [`Mtrrs::ranges`] turns the registers into effective ranges; [`map_with_mtrrs`] maps guest memory
//! through EPT giving each page the type the MTRRs give its host-physical address, splitting into
//! smaller pages exactly where the type changes.

use bit_field::BitField;

use crate::addr::{GuestPhysAddr, HostPhysAddr};
use crate::flush::Flush;
use crate::format::{EptAttrs, EptFlags};
use crate::memory::FrameAllocator;
use crate::memtype::MemoryType;
use crate::table::{EptTable, MapError};

/// IA32_MTRRCAP (FEH).
pub const IA32_MTRRCAP: u32 = 0xfe;
/// IA32_MTRR_DEF_TYPE (2FFH).
pub const IA32_MTRR_DEF_TYPE: u32 = 0x2ff;
/// IA32_MTRR_PHYSBASE0 (200H); PHYSBASEn is 200H + 2n, PHYSMASKn 201H + 2n.
pub const IA32_MTRR_PHYSBASE0: u32 = 0x200;
/// The eleven fixed-range MTRRs in address order (Table 12-9): FIX64K_00000, FIX16K_80000,
/// FIX16K_A0000, FIX4K_C0000 .. FIX4K_F8000.
pub const FIXED_MSRS: [u32; 11] = [
    0x250, 0x258, 0x259, 0x268, 0x269, 0x26a, 0x26b, 0x26c, 0x26d, 0x26e, 0x26f,
];

/// Most variable ranges this type holds (IA32_MTRRCAP.VCNT is 8 to 10 on current parts).
pub const MAX_VARIABLE: usize = 32;

/// A snapshot of the MTRR MSRs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mtrrs {
    /// IA32_MTRRCAP.
    pub cap: u64,
    /// IA32_MTRR_DEF_TYPE.
    pub def_type: u64,
    /// The fixed-range MTRRs in [`FIXED_MSRS`] order.
    pub fixed: [u64; 11],
    /// (PHYSBASEn, PHYSMASKn) pairs; only the first `IA32_MTRRCAP.VCNT` are used.
    pub variable: [(u64, u64); MAX_VARIABLE],
    /// MAXPHYADDR.
    pub phys_bits: u8,
}

impl Mtrrs {
    /// Reads every MTRR through `rdmsr` (a safe closure the caller provides: the hardware read is
    /// the caller's business).
    pub fn read(mut rdmsr: impl FnMut(u32) -> u64, phys_bits: u8) -> Self {
        let cap = rdmsr(IA32_MTRRCAP);
        let mut me = Self {
            cap,
            def_type: rdmsr(IA32_MTRR_DEF_TYPE),
            fixed: [0; 11],
            variable: [(0, 0); MAX_VARIABLE],
            phys_bits,
        };
        if cap.get_bit(8) {
            for (slot, msr) in me.fixed.iter_mut().zip(FIXED_MSRS) {
                *slot = rdmsr(msr);
            }
        }
        for n in 0..me.vcnt() {
            #[expect(clippy::cast_possible_truncation, reason = "n < 32")]
            let base = IA32_MTRR_PHYSBASE0 + 2 * n as u32;
            me.variable[n] = (rdmsr(base), rdmsr(base + 1));
        }
        me
    }

    /// All MTRRs disabled (everything UC), for building up in tests.
    #[must_use]
    pub const fn disabled(phys_bits: u8) -> Self {
        Self {
            cap: 0,
            def_type: 0,
            fixed: [0; 11],
            variable: [(0, 0); MAX_VARIABLE],
            phys_bits,
        }
    }

    /// IA32_MTRRCAP.VCNT (bits 7:0), at most [`MAX_VARIABLE`].
    #[must_use]
    pub fn vcnt(&self) -> usize {
        usize::try_from(self.cap.get_bits(0..8))
            .unwrap_or(0)
            .min(MAX_VARIABLE)
    }

    fn enabled(&self) -> bool {
        self.def_type.get_bit(11)
    }

    fn fixed_enabled(&self) -> bool {
        self.enabled() && self.def_type.get_bit(10) && self.cap.get_bit(8)
    }

    fn phys_mask(&self) -> u64 {
        let bits = u32::from(self.phys_bits.clamp(36, 52));
        ((1u64 << bits) - 1) & !0xfff
    }

    /// The valid variable ranges as (base, mask, type), masks limited to MAXPHYADDR.
    fn vars(&self) -> impl Iterator<Item = (u64, u64, MemoryType)> + '_ {
        let pm = self.phys_mask();
        self.variable[..self.vcnt()]
            .iter()
            .filter(|(_, m)| m.get_bit(11))
            .map(move |&(b, m)| {
                #[expect(clippy::cast_possible_truncation, reason = "an 8-bit field")]
                let ty = MemoryType(b.get_bits(0..8) as u8);
                (b & pm, m & pm, ty)
            })
    }

    /// The fixed-range type of `addr` (< 1 MiB).
    fn fixed_type(&self, addr: u64) -> MemoryType {
        let (msr, byte) = match addr {
            0..0x8_0000 => (0, addr >> 16),
            0x8_0000..0xc_0000 => (
                1 + (addr - 0x8_0000) / 0x2_0000,
                ((addr - 0x8_0000) >> 14) & 7,
            ),
            _ => (
                3 + (addr - 0xc_0000) / 0x8000,
                ((addr - 0xc_0000) >> 12) & 7,
            ),
        };
        #[expect(clippy::cast_possible_truncation, reason = "a byte")]
        let t = (self.fixed[msr as usize] >> (8 * byte)) as u8;
        MemoryType(t)
    }

    /// The memory type of physical address `addr` by the precedence rules of SDM 12.11.4.1.
    /// Overlaps other than with UC or WT+WB are undefined by the manual; they give UC here.
    #[must_use]
    pub fn memory_type(&self, addr: u64) -> MemoryType {
        if !self.enabled() {
            return MemoryType::UNCACHEABLE;
        }
        if addr < 0x10_0000 && self.fixed_enabled() {
            return self.fixed_type(addr);
        }
        let a = addr & self.phys_mask();
        let mut found: Option<MemoryType> = None;
        let mut wt_wb_only = true;
        for (base, mask, ty) in self.vars() {
            if a & mask != base & mask {
                continue;
            }
            if ty == MemoryType::UNCACHEABLE {
                return MemoryType::UNCACHEABLE;
            }
            wt_wb_only &= ty == MemoryType::WRITE_THROUGH || ty == MemoryType::WRITE_BACK;
            found = Some(match found {
                None => ty,
                Some(prev) if prev == ty => ty,
                Some(_) if wt_wb_only => MemoryType::WRITE_THROUGH,
                Some(_) => MemoryType::UNCACHEABLE,
            });
        }
        #[expect(clippy::cast_possible_truncation, reason = "an 8-bit field")]
        let default = MemoryType(self.def_type.get_bits(0..8) as u8);
        found.unwrap_or(default)
    }

    /// The next address after `addr` where the type may change.
    fn next_boundary(&self, addr: u64) -> u64 {
        let mut next = u64::MAX;
        if self.enabled() {
            if addr < 0x10_0000 && self.fixed_enabled() {
                let step = match addr {
                    0..0x8_0000 => 0x1_0000,
                    0x8_0000..0xc_0000 => 0x4000,
                    _ => 0x1000,
                };
                next = (addr | (step - 1)) + 1;
            } else if addr < 0x10_0000 {
                next = 0x10_0000;
            }
            let pm = self.phys_mask();
            for (base, mask, _) in self.vars() {
                let granule = 1u64 << mask.trailing_zeros().min(63);
                let contiguous = (mask | (granule - 1)) | !pm == u64::MAX;
                let cand = if contiguous {
                    let start = base & mask;
                    let end = start.saturating_add(granule);
                    if addr < start {
                        start
                    } else if addr < end {
                        end
                    } else {
                        u64::MAX
                    }
                } else {
                    (addr | (granule - 1)).saturating_add(1)
                };
                next = next.min(cand);
            }
        }
        next
    }

    /// Effective memory-type ranges covering `start .. end`, coalesced.
    #[must_use]
    pub fn ranges(&self, start: u64, end: u64) -> Ranges<'_> {
        Ranges {
            mtrrs: self,
            pos: start,
            end,
        }
    }
}

/// Iterator of `(start, end, type)` ranges ([`Mtrrs::ranges`]).
#[derive(Debug)]
pub struct Ranges<'a> {
    mtrrs: &'a Mtrrs,
    pos: u64,
    end: u64,
}

impl Iterator for Ranges<'_> {
    type Item = (u64, u64, MemoryType);

    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.end {
            return None;
        }
        let start = self.pos;
        let ty = self.mtrrs.memory_type(start);
        let mut p = start;
        while p < self.end {
            let n = self.mtrrs.next_boundary(p).min(self.end);
            p = n;
            if p < self.end && self.mtrrs.memory_type(p) != ty {
                break;
            }
        }
        self.pos = p;
        Some((start, p, ty))
    }
}

/// Maps `gpa .. gpa + len` to `hpa ..` with `flags`, giving each page the memory type the MTRRs
/// give its host-physical address (types the EPT cannot hold become UC), with the largest pages
/// each uniformly typed stretch allows.
///
/// # Errors
/// As [`EptTable::map`]; on error nothing is mapped and no frame leaks.
pub fn map_with_mtrrs<C: FrameAllocator>(
    ept: &mut EptTable<C>,
    gpa: GuestPhysAddr,
    hpa: HostPhysAddr,
    len: u64,
    flags: EptFlags,
    mtrrs: &Mtrrs,
) -> Result<Flush, MapError> {
    let h0 = hpa.as_u64();
    let end = h0.checked_add(len).ok_or(MapError::BeyondMaxPhysAddr(h0))?;
    let mut flush: Option<Flush> = None;
    for (s, e, ty) in mtrrs.ranges(h0, end) {
        let ty = if ty.is_valid_for_ept() {
            ty
        } else {
            MemoryType::UNCACHEABLE
        };
        // Type boundaries are 4 KiB aligned (MTRR granularity); round defensively.
        let (s, e) = (s & !0xfff, (e + 0xfff) & !0xfff);
        let g = GuestPhysAddr::new_truncate(gpa.as_u64() + (s - h0));
        match ept.map(
            g,
            HostPhysAddr::new_truncate(s),
            e - s,
            EptAttrs::new(flags, ty),
        ) {
            Ok(f) => {
                flush = Some(match flush.take() {
                    Some(prev) => prev.merge(f),
                    None => f,
                })
            }
            Err(err) => {
                if s > h0 {
                    // Undo what this call mapped: exact leaves, so no split and no allocation.
                    if let Ok(f) = ept.unmap(gpa, s - h0) {
                        f.ignore();
                    }
                }
                if let Some(f) = flush {
                    f.ignore();
                }
                return Err(err);
            }
        }
    }
    flush.ok_or(MapError::EmptyRange)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{HostArena, PageSize, TableConfig};

    const WB: u64 = 6;

    fn sample() -> Mtrrs {
        let mut m = Mtrrs::disabled(40);
        m.cap = (1 << 8) | 8;
        m.def_type = (1 << 11) | (1 << 10) | WB;
        m.fixed = [0x0606_0606_0606_0606; 11];
        m.fixed[2] = 0; // A0000-BFFFF UC (VGA)
        m.fixed[3] = 0x0505_0505_0505_0505; // C0000-C7FFF WP
        let mask = |size: u64| (((1u64 << 40) - 1) & !(size - 1)) | (1 << 11);
        m.variable[0] = (0xc000_0000, mask(1 << 30)); // 3G-4G UC
        m.variable[1] = (0x1_0000_0000 | 4, mask(1 << 21)); // 4G..4G+2M WT
        m.variable[2] = (0x1_0000_0000 | WB, mask(1 << 22)); // 4G..4G+4M WB: WT wins in overlap
        m.variable[3] = (0x2_0000_0000 | WB, mask(1 << 30)); // 8G.. WB
        m.variable[4] = (0x2_0000_0000 | 1, mask(1 << 12)); // one WC page inside, conflicting: UC
        m
    }

    #[test]
    fn precedence() {
        let m = sample();
        assert_eq!(m.memory_type(0x1000), MemoryType::WRITE_BACK);
        assert_eq!(m.memory_type(0xa_0000), MemoryType::UNCACHEABLE);
        assert_eq!(m.memory_type(0xc_7000), MemoryType::WRITE_PROTECTED);
        assert_eq!(m.memory_type(0xc_8000), MemoryType::WRITE_BACK);
        assert_eq!(m.memory_type(0xc000_1000), MemoryType::UNCACHEABLE);
        assert_eq!(
            m.memory_type(0x1_0000_0000),
            MemoryType::WRITE_THROUGH,
            "WT + WB = WT"
        );
        assert_eq!(m.memory_type(0x1_0030_0000), MemoryType::WRITE_BACK);
        assert_eq!(
            m.memory_type(0x2_0000_0000),
            MemoryType::UNCACHEABLE,
            "WB + WC is undefined: UC"
        );
        let mut off = m;
        off.def_type &= !(1 << 11);
        assert_eq!(
            off.memory_type(0x1000),
            MemoryType::UNCACHEABLE,
            "MTRRs disabled"
        );
        let mut nofixed = m;
        nofixed.def_type &= !(1 << 10);
        assert_eq!(
            nofixed.memory_type(0xa_0000),
            MemoryType::WRITE_BACK,
            "fixed ranges disabled"
        );
    }

    #[test]
    fn reads_msrs() {
        let s = sample();
        let m = Mtrrs::read(
            |msr| match msr {
                IA32_MTRRCAP => s.cap,
                IA32_MTRR_DEF_TYPE => s.def_type,
                0x200..=0x20f => {
                    let (b, mk) = s.variable[((msr - 0x200) / 2) as usize];
                    if msr % 2 == 0 { b } else { mk }
                }
                _ => FIXED_MSRS
                    .iter()
                    .position(|&f| f == msr)
                    .map_or(0, |i| s.fixed[i]),
            },
            40,
        );
        assert_eq!(m, s);
    }

    #[test]
    fn effective_ranges() {
        let m = sample();
        let r: std::vec::Vec<_> = m.ranges(0x9_0000, 0x1_0040_0000).collect();
        assert_eq!(
            r,
            [
                (0x9_0000, 0xa_0000, MemoryType::WRITE_BACK),
                (0xa_0000, 0xc_0000, MemoryType::UNCACHEABLE),
                (0xc_0000, 0xc_8000, MemoryType::WRITE_PROTECTED),
                (0xc_8000, 0xc000_0000, MemoryType::WRITE_BACK),
                (0xc000_0000, 0x1_0000_0000, MemoryType::UNCACHEABLE),
                (0x1_0000_0000, 0x1_0020_0000, MemoryType::WRITE_THROUGH),
                (0x1_0020_0000, 0x1_0040_0000, MemoryType::WRITE_BACK),
            ]
        );
        // A non-contiguous mask (bit 14 clear): pages 0x1000 and 0x5000 match; ranges stay exact.
        let mut nc = Mtrrs::disabled(36);
        nc.cap = 1;
        nc.def_type = (1 << 11) | WB;
        nc.variable[0] = (0x1000, (((1u64 << 36) - 1) & !0x4fff) | (1 << 11));
        let r: std::vec::Vec<_> = nc.ranges(0, 0x8000).collect();
        assert_eq!(
            r,
            [
                (0, 0x1000, MemoryType::WRITE_BACK),
                (0x1000, 0x2000, MemoryType::UNCACHEABLE),
                (0x2000, 0x5000, MemoryType::WRITE_BACK),
                (0x5000, 0x6000, MemoryType::UNCACHEABLE),
                (0x6000, 0x8000, MemoryType::WRITE_BACK),
            ]
        );
    }

    #[test]
    fn ept_follows_mtrrs_with_splitting() {
        let m = sample();
        let arena = HostArena::new(64);
        let mut ept = EptTable::new(&arena, TableConfig::new(4).with_huge_pages(true)).unwrap();
        let rwx = EptFlags::READ | EptFlags::WRITE | EptFlags::EXECUTE;
        let z = GuestPhysAddr::ZERO;
        map_with_mtrrs(&mut ept, z, HostPhysAddr::ZERO, 5 << 30, rwx, &m)
            .unwrap()
            .ignore();
        let at = |a: u64| {
            ept.translate(GuestPhysAddr::new_truncate(a))
                .map(|x| (x.attrs.memory_type, x.size))
        };
        assert_eq!(
            at(0xa_0000),
            Some((MemoryType::UNCACHEABLE, PageSize::Size4K))
        );
        assert_eq!(
            at(0xc_0000),
            Some((MemoryType::WRITE_PROTECTED, PageSize::Size4K))
        );
        assert_eq!(
            at(0x20_0000),
            Some((MemoryType::WRITE_BACK, PageSize::Size2M))
        );
        assert_eq!(
            at(0x4000_0000),
            Some((MemoryType::WRITE_BACK, PageSize::Size1G))
        );
        assert_eq!(
            at(0xc000_0000),
            Some((MemoryType::UNCACHEABLE, PageSize::Size1G))
        );
        assert_eq!(
            at(0x1_0000_0000),
            Some((MemoryType::WRITE_THROUGH, PageSize::Size2M))
        );
        assert_eq!(
            at(0x1_0020_0000),
            Some((MemoryType::WRITE_BACK, PageSize::Size2M))
        );
        // Failure half-way leaves nothing behind.
        let mut e2 = EptTable::new(&arena, TableConfig::new(4).with_huge_pages(true)).unwrap();
        arena.fail_after(Some(3));
        let live = arena.live_frames();
        assert_eq!(
            map_with_mtrrs(&mut e2, z, HostPhysAddr::ZERO, 5 << 30, rwx, &m),
            Err(MapError::OutOfFrames)
        );
        arena.fail_after(None);
        assert_eq!(e2.iter().count(), 0);
        assert_eq!(arena.live_frames(), live);
        ept.free_all();
        e2.free_all();
    }
}
