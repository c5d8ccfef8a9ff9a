//! The page-table builder, generic over the entry format.
//!
//! Manual: Intel® 64 and IA-32 Architectures Software Developer's Manual, Combined Volumes, Order
//! Number 325462-086US, December 2024, Vol. 3A Chapter 4 "Paging" (Sections 4.3 to 4.5 for the
//! structure of the hierarchy, 4.10.4 "Invalidation of TLBs and Paging-Structure Caches") and Vol. 3C
//! Section 29.3.2 "EPT Translation Mechanism"; AMD64 Architecture Programmer's Manual Volume 2:
//! System Programming, Publication No. 24593, Revision 3.42, March 2024, Section 15.25 "Nested
//! Paging".
//!
//! # Invariants
//! - Every table frame came from the table's own [`FrameAllocator`] and is referenced exactly once.
//! - No table except the root is empty: unmapping frees tables it empties. That is what makes
//!   rollback exact: after a failed map, removing what the call added and freeing the tables that
//!   became empty restores the previous state bit for bit, because no pre-existing table was empty.
//! - Operations that must split large pages (unmap, protect) count the frames they need and
//!   allocate all of them before changing anything, so they either fail untouched or succeed.

use core::marker::PhantomData;

use crate::addr::{Address, GuestPhysAddr, GuestVirtAddr, HostPhysAddr, PageSize};
use crate::flush::Flush;
use crate::format::{Entry, Ept, LongMode, PageTableFormat};
use crate::memory::FrameAllocator;
use crate::raw;

/// What went wrong; the table is unchanged and no frame leaked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MapError {
    /// An address or length is not a multiple of 4 KiB.
    #[error("{0:#x} is not 4 KiB aligned")]
    Misaligned(u64),
    /// The length is zero.
    #[error("empty range")]
    EmptyRange,
    /// The input range ends beyond what the root can translate (48 bits for 4 levels, 57 for 5,
    /// 32 for PAE and 32-bit paging).
    #[error("input address {0:#x} is beyond the root's reach")]
    BeyondReach(u64),
    /// A linear address is not canonical for the root's paging depth.
    #[error("linear address {0:#x} is not canonical")]
    NonCanonical(u64),
    /// The output range ends beyond MAXPHYADDR (or what the format can encode).
    #[error("output address {0:#x} is beyond MAXPHYADDR")]
    BeyondMaxPhysAddr(u64),
    /// Part of the range is already mapped (at this input address).
    #[error("range overlaps the mapping at {0:#x}")]
    Overlap(u64),
    /// Part of the range is not mapped (at this input address).
    #[error("{0:#x} is not mapped")]
    NotMapped(u64),
    /// The frame allocator ran out.
    #[error("frame allocator exhausted")]
    OutOfFrames,
    /// The allocator returned a frame the format cannot reference (e.g. above 4 GiB for 32-bit paging).
    #[error("frame {0:#x} is out of the format's reach")]
    FrameUnreachable(u64),
    /// The attributes are not a valid present leaf for this format.
    #[error("invalid attributes: {0}")]
    InvalidAttributes(&'static str),
    /// The format has no root with this many levels.
    #[error("the format has no {0}-level root")]
    UnsupportedLevels(u8),
}

/// How a table is built: depth and the page sizes and physical width the CPU supports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableConfig {
    /// Paging depth of the root (4 or 5 for EPT and 4/5-level paging, 3 for PAE, 2 for 32-bit).
    pub levels: u8,
    /// Allow 2 MiB pages (4 MiB for 32-bit paging, which needs CR4.PSE).
    pub large_pages: bool,
    /// Allow 1 GiB pages (EPT: IA32_VMX_EPT_VPID_CAP bit 17; x86-64: CPUID.80000001H:EDX.Page1GB).
    pub huge_pages: bool,
    /// MAXPHYADDR: output addresses must be below `1 << phys_bits`.
    pub phys_bits: u8,
}

impl TableConfig {
    /// `levels` deep with 2 MiB pages, no 1 GiB pages, MAXPHYADDR 52.
    #[must_use]
    pub const fn new(levels: u8) -> Self {
        Self {
            levels,
            large_pages: true,
            huge_pages: false,
            phys_bits: 52,
        }
    }

    /// With or without 1 GiB pages (also enables 2 MiB pages when on).
    #[must_use]
    pub const fn with_huge_pages(mut self, on: bool) -> Self {
        self.huge_pages = on;
        if on {
            self.large_pages = true;
        }
        self
    }

    /// With or without 2 MiB / 4 MiB pages (also disables 1 GiB pages when off).
    #[must_use]
    pub const fn with_large_pages(mut self, on: bool) -> Self {
        self.large_pages = on;
        if !on {
            self.huge_pages = false;
        }
        self
    }

    /// With MAXPHYADDR `bits`.
    #[must_use]
    pub const fn with_phys_bits(mut self, bits: u8) -> Self {
        self.phys_bits = bits;
        self
    }
}

/// One mapped page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping<I, O, A> {
    /// First input address of the page.
    pub virt: I,
    /// First output address of the page.
    pub phys: O,
    /// Page size.
    pub size: PageSize,
    /// Leaf attributes.
    pub attrs: A,
}

/// A page-table hierarchy in format `F`, whose frames come from `C`, translating `I` addresses to
/// `O` addresses. See the crate docs for an example.
#[derive(Debug)]
pub struct PageTable<
    F: PageTableFormat,
    C: FrameAllocator,
    I: Address = GuestPhysAddr,
    O: Address = HostPhysAddr,
> {
    ctx: C,
    root: HostPhysAddr,
    cfg: TableConfig,
    /// The last page table (level 1) a single-page map wrote to, keyed by `va >> shift(2)`: a
    /// one-entry software TLB for runs of single-page maps. Cleared by every other mutation.
    last_pt: Option<(u64, HostPhysAddr)>,
    _p: PhantomData<(F, I, O)>,
}

/// An EPT hierarchy (guest-physical → host-physical).
pub type EptTable<C> = PageTable<Ept, C>;
/// An AMD nested page table (guest-physical → host-physical, long-mode format).
pub type NptTable<C> = PageTable<LongMode, C>;
/// A guest's own page table (guest-virtual → guest-physical) in format `F`.
pub type GuestTable<F, C> = PageTable<F, C, GuestVirtAddr, GuestPhysAddr>;

impl<F: PageTableFormat, C: FrameAllocator, I: Address, O: Address> PageTable<F, C, I, O> {
    /// An empty table (one zeroed root frame).
    ///
    /// # Errors
    /// [`MapError::UnsupportedLevels`] if the format has no such root, [`MapError::OutOfFrames`] or
    /// [`MapError::FrameUnreachable`] if the root frame cannot be had.
    pub fn new(ctx: C, cfg: TableConfig) -> Result<Self, MapError> {
        if cfg.levels < F::MIN_LEVELS || cfg.levels > F::MAX_LEVELS {
            return Err(MapError::UnsupportedLevels(cfg.levels));
        }
        let mut me = Self {
            ctx,
            root: HostPhysAddr::ZERO,
            cfg,
            last_pt: None,
            _p: PhantomData,
        };
        me.cfg.large_pages |= me.cfg.huge_pages;
        me.root = me.new_table()?;
        Ok(me)
    }

    /// The root frame (what goes into the EPTP, nCR3 or CR3).
    pub fn root(&self) -> HostPhysAddr {
        self.root
    }

    /// The configuration.
    pub fn config(&self) -> TableConfig {
        self.cfg
    }

    /// The frame allocator / table memory.
    pub fn context(&self) -> &C {
        &self.ctx
    }

    // ---- geometry -------------------------------------------------------------------------

    #[inline(always)]
    fn top(&self) -> u8 {
        self.cfg.levels
    }

    #[inline(always)]
    fn shift(level: u8) -> u32 {
        12 + F::INDEX_BITS * (u32::from(level) - 1)
    }

    #[inline(always)]
    fn bits(&self, level: u8) -> u32 {
        if level == self.top() {
            F::top_index_bits(self.cfg.levels)
        } else {
            F::INDEX_BITS
        }
    }

    #[inline(always)]
    fn entries(&self, level: u8) -> usize {
        1 << self.bits(level)
    }

    #[inline(always)]
    fn reach_bits(&self) -> u32 {
        Self::shift(self.top()) + self.bits(self.top())
    }

    #[inline(always)]
    fn index(&self, level: u8, va: u64) -> usize {
        #[expect(clippy::cast_possible_truncation, reason = "masked to at most 10 bits")]
        let i = ((va >> Self::shift(level)) & ((1 << self.bits(level)) - 1)) as usize;
        i
    }

    #[inline(always)]
    fn read(&self, table: HostPhysAddr, i: usize) -> u64 {
        raw::read(&self.ctx, table, i << if F::WIDE { 3 } else { 2 }, F::WIDE)
    }

    #[inline(always)]
    fn write(&self, table: HostPhysAddr, i: usize, v: u64) {
        raw::write(
            &self.ctx,
            table,
            i << if F::WIDE { 3 } else { 2 },
            F::WIDE,
            v,
        );
    }

    /// The leaf page size allowed at `level` by both the format and the configuration.
    #[inline(always)]
    fn leaf_ok(&self, level: u8) -> Option<PageSize> {
        match F::leaf_size(level)? {
            PageSize::Size4K => Some(PageSize::Size4K),
            PageSize::Size1G if self.cfg.huge_pages => Some(PageSize::Size1G),
            s @ (PageSize::Size2M | PageSize::Size4M) if self.cfg.large_pages => Some(s),
            _ => None,
        }
    }

    fn sign_extended(&self) -> bool {
        I::VIRTUAL && F::WIDE && self.reach_bits() >= 48
    }

    /// Input range → internal (reach-masked) start and end.
    fn input_range(&self, va: u64, len: u64) -> Result<(u64, u64), MapError> {
        if va & 0xfff != 0 {
            return Err(MapError::Misaligned(va));
        }
        if len & 0xfff != 0 {
            return Err(MapError::Misaligned(len));
        }
        if len == 0 {
            return Err(MapError::EmptyRange);
        }
        let reach = self.reach_bits();
        let lim = 1u64 << reach;
        let mut v = va;
        if self.sign_extended() {
            let top = (va as i64) >> (reach - 1);
            if top != 0 && top != -1 {
                return Err(MapError::NonCanonical(va));
            }
            v &= lim - 1;
        }
        let end = v
            .checked_add(len)
            .filter(|&e| e <= lim)
            .ok_or(MapError::BeyondReach(va.wrapping_add(len - 1)))?;
        // A range may not cross the canonical hole.
        if self.sign_extended() && v < lim / 2 && end > lim / 2 {
            return Err(MapError::NonCanonical(va.wrapping_add(lim / 2 - v)));
        }
        Ok((v, end))
    }

    fn output_range(&self, pa: u64, len: u64) -> Result<(), MapError> {
        if pa & 0xfff != 0 {
            return Err(MapError::Misaligned(pa));
        }
        let bits = u32::from(self.cfg.phys_bits).min(F::MAX_OUTPUT_BITS);
        match pa.checked_add(len) {
            Some(end) if end <= 1u64 << bits => Ok(()),
            _ => Err(MapError::BeyondMaxPhysAddr(pa.wrapping_add(len - 1))),
        }
    }

    fn external(&self, v: u64) -> u64 {
        if self.sign_extended() {
            let reach = self.reach_bits();
            (((v << (64 - reach)) as i64) >> (64 - reach)) as u64
        } else {
            v
        }
    }

    fn flush(&self, va: u64, len: u64) -> Flush {
        Flush::new(
            F::flush_kind(I::GUEST_PHYSICAL),
            self.root,
            va,
            va.wrapping_add(len),
        )
    }

    fn new_table(&mut self) -> Result<HostPhysAddr, MapError> {
        let f = self.ctx.allocate_zeroed().ok_or(MapError::OutOfFrames)?;
        if f.as_u64() >> F::MAX_TABLE_BITS != 0 {
            raw::free_frame(&mut self.ctx, f);
            return Err(MapError::FrameUnreachable(f.as_u64()));
        }
        Ok(f)
    }

    fn is_empty(&self, table: HostPhysAddr, level: u8) -> bool {
        (0..self.entries(level)).all(|i| self.read(table, i) == 0)
    }

    // ---- map ------------------------------------------------------------------------------

    /// Maps `virt .. virt + len` to `phys .. phys + len` with `attrs`, using the largest page sizes
    /// that alignment and the configuration allow.
    ///
    /// # Errors
    /// [`MapError`] for misalignment, reach, MAXPHYADDR, invalid attributes, overlap with an existing
    /// mapping, or allocator exhaustion. On error the table is exactly as before.
    #[inline]
    pub fn map(&mut self, virt: I, phys: O, len: u64, attrs: F::Attrs) -> Result<Flush, MapError> {
        self.map_with_max(virt, phys, len, attrs, PageSize::Size1G)
    }

    /// Like [`map`](Self::map) with pages no larger than `max_page`.
    ///
    /// # Errors
    /// As for [`map`](Self::map).
    #[inline]
    pub fn map_with_max(
        &mut self,
        virt: I,
        phys: O,
        len: u64,
        attrs: F::Attrs,
        max_page: PageSize,
    ) -> Result<Flush, MapError> {
        F::check_attrs(&attrs).map_err(MapError::InvalidAttributes)?;
        // Fastest path: one page inside the page table the previous single-page map used. A key
        // match proves the address is within reach; linear addresses must also be in the lower
        // canonical half (the upper half is stored masked and takes the general path).
        if len == 0x1000 {
            if let Some((key, pt)) = self.last_pt {
                let (va, pa) = (virt.to_u64(), phys.to_u64());
                let lower_half = !I::VIRTUAL || va >> (self.reach_bits() - 1) == 0;
                let out_bits = u32::from(self.cfg.phys_bits).min(F::max_output_bits_at(1));
                if va >> Self::shift(2) == key
                    && lower_half
                    && (va | pa) & 0xfff == 0
                    && pa >> out_bits == 0
                {
                    let i = self.index(1, va);
                    if F::decode(self.read(pt, i), 1) != Entry::Absent {
                        return Err(MapError::Overlap(va));
                    }
                    self.write(pt, i, F::leaf(pa, &attrs, 1));
                    return Ok(self.flush(va, len));
                }
            }
        }
        self.map_general(virt, phys, len, attrs, max_page)
    }

    /// Everything but the cached single-page case (kept out of line so that case stays small).
    #[inline(never)]
    fn map_general(
        &mut self,
        virt: I,
        phys: O,
        len: u64,
        attrs: F::Attrs,
        max_page: PageSize,
    ) -> Result<Flush, MapError> {
        let (start, end) = self.input_range(virt.to_u64(), len)?;
        let pa = phys.to_u64();
        self.output_range(pa, len)?;
        if len == 0x1000 {
            self.map_one_4k(start, pa, &attrs)?;
            return Ok(self.flush(virt.to_u64(), len));
        }
        self.last_pt = None;
        let mut done = start;
        let root = self.root;
        let top = self.top();
        let job = MapJob {
            va0: start,
            pa0: pa,
            attrs,
            max: max_page.bytes(),
        };
        match self.map_level(root, top, start, end, &job, &mut done) {
            Ok(()) => Ok(self.flush(virt.to_u64(), len)),
            Err(e) => {
                self.remove_level(root, top, start, end, start, done);
                Err(e)
            }
        }
    }

    /// The single-page case without recursion: one descent, creating tables on the way. On failure
    /// the tables this call created (all on the path, all empty) are unlinked and freed.
    #[inline(always)]
    fn map_one_4k(&mut self, va: u64, pa: u64, attrs: &F::Attrs) -> Result<(), MapError> {
        if pa >> F::max_output_bits_at(1) != 0 {
            return Err(MapError::BeyondMaxPhysAddr(pa + 0xfff));
        }
        let key = va >> Self::shift(2);
        if let Some((k, pt)) = self.last_pt {
            if k == key {
                let i = self.index(1, va);
                if F::decode(self.read(pt, i), 1) != Entry::Absent {
                    return Err(MapError::Overlap(self.external(va)));
                }
                self.write(pt, i, F::leaf(pa, attrs, 1));
                return Ok(());
            }
        }
        let mut created = [(HostPhysAddr::ZERO, 0usize, HostPhysAddr::ZERO); 4];
        let mut n = 0;
        let mut table = self.root;
        let mut level = self.top();
        let err = loop {
            let i = self.index(level, va);
            let raw = self.read(table, i);
            if level == 1 {
                if F::decode(raw, 1) != Entry::Absent {
                    break MapError::Overlap(self.external(va));
                }
                self.write(table, i, F::leaf(pa, attrs, 1));
                self.last_pt = Some((key, table));
                return Ok(());
            }
            match F::decode(raw, level) {
                Entry::Table(t) => table = HostPhysAddr::new_truncate(t),
                Entry::Absent => match self.new_table() {
                    Ok(t) => {
                        self.write(table, i, F::table(t.as_u64(), level));
                        created[n] = (table, i, t);
                        n += 1;
                        table = t;
                    }
                    Err(e) => break e,
                },
                Entry::Leaf(..) => break MapError::Overlap(self.external(va)),
            }
            level -= 1;
        };
        for &(parent, i, t) in created[..n].iter().rev() {
            self.write(parent, i, 0);
            raw::free_frame(&mut self.ctx, t);
        }
        Err(err)
    }

    fn map_level(
        &mut self,
        table: HostPhysAddr,
        level: u8,
        mut va: u64,
        end: u64,
        job: &MapJob<F::Attrs>,
        done: &mut u64,
    ) -> Result<(), MapError> {
        let size = 1u64 << Self::shift(level);
        let leaf_here = self.leaf_ok(level).is_some_and(|s| s.bytes() <= job.max);
        while va < end {
            let i = self.index(level, va);
            let slot_end = (va | (size - 1)) + 1;
            let pa = job.pa0 + (va - job.va0);
            let fits = (pa + size - 1) >> F::max_output_bits_at(level) == 0;
            if level == 1 && !fits {
                return Err(MapError::BeyondMaxPhysAddr(pa + size - 1));
            }
            let raw = self.read(table, i);
            if leaf_here && fits && va & (size - 1) == 0 && slot_end <= end && pa & (size - 1) == 0
            {
                if F::decode(raw, level) != Entry::Absent {
                    return Err(MapError::Overlap(
                        self.external(self.first_mapped(raw, level, va)),
                    ));
                }
                self.write(table, i, F::leaf(pa, &job.attrs, level));
                *done = slot_end;
            } else {
                let child = match F::decode(raw, level) {
                    Entry::Absent => {
                        let t = self.new_table()?;
                        self.write(table, i, F::table(t.as_u64(), level));
                        t
                    }
                    Entry::Table(a) => HostPhysAddr::new_truncate(a),
                    Entry::Leaf(..) => return Err(MapError::Overlap(self.external(va))),
                };
                self.map_level(child, level - 1, va, end.min(slot_end), job, done)?;
            }
            va = slot_end;
        }
        Ok(())
    }

    /// The first mapped address under the non-absent entry `raw` at `level` covering `base`.
    fn first_mapped(&self, raw: u64, level: u8, base: u64) -> u64 {
        match F::decode(raw, level) {
            Entry::Table(t) if level > 1 => {
                let t = HostPhysAddr::new_truncate(t);
                let child = level - 1;
                let s = Self::shift(child);
                for i in 0..self.entries(child) {
                    let r = self.read(t, i);
                    if F::decode(r, child) != Entry::Absent {
                        return self.first_mapped(r, child, base + ((i as u64) << s));
                    }
                }
                base
            }
            _ => base,
        }
    }

    /// Clears leaves lying fully inside `lo .. clear_end` and frees tables that become empty, for
    /// every slot overlapping `va .. end`.
    fn remove_level(
        &mut self,
        table: HostPhysAddr,
        level: u8,
        mut va: u64,
        end: u64,
        lo: u64,
        clear_end: u64,
    ) {
        let size = 1u64 << Self::shift(level);
        while va < end {
            let i = self.index(level, va);
            let slot_start = va & !(size - 1);
            let slot_end = slot_start + size;
            let raw = self.read(table, i);
            match F::decode(raw, level) {
                Entry::Absent => {}
                Entry::Leaf(..) => {
                    if slot_start >= lo && slot_end <= clear_end {
                        self.write(table, i, 0);
                    }
                }
                Entry::Table(t) => {
                    let t = HostPhysAddr::new_truncate(t);
                    self.remove_level(t, level - 1, va, end.min(slot_end), lo, clear_end);
                    if self.is_empty(t, level - 1) {
                        self.write(table, i, 0);
                        raw::free_frame(&mut self.ctx, t);
                    }
                }
            }
            va = slot_end;
        }
    }

    // ---- lookups --------------------------------------------------------------------------

    /// The leaf containing internal address `va`: (level, table, index, raw entry).
    fn leaf_at(&self, va: u64) -> Option<(u8, HostPhysAddr, usize, u64)> {
        let mut table = self.root;
        let mut level = self.top();
        loop {
            let i = self.index(level, va);
            let raw = self.read(table, i);
            match F::decode(raw, level) {
                Entry::Absent => return None,
                Entry::Leaf(..) => return Some((level, table, i, raw)),
                Entry::Table(t) => {
                    table = HostPhysAddr::new_truncate(t);
                    level -= 1;
                }
            }
        }
    }

    /// The page mapping `virt`, if any.
    pub fn translate(&self, virt: I) -> Option<Mapping<I, O, F::Attrs>> {
        let v = virt.to_u64();
        let reach = self.reach_bits();
        let va = if self.sign_extended() {
            let top = (v as i64) >> (reach - 1);
            if top != 0 && top != -1 {
                return None;
            }
            v & ((1 << reach) - 1)
        } else if v >> reach != 0 {
            return None;
        } else {
            v
        };
        let (level, _, _, raw) = self.leaf_at(va)?;
        let Entry::Leaf(pa, attrs) = F::decode(raw, level) else {
            return None;
        };
        let size = F::leaf_size(level)?;
        Some(Mapping {
            virt: I::from_u64(self.external(va & !(size.bytes() - 1))),
            phys: O::from_u64(pa),
            size,
            attrs,
        })
    }

    /// The output address `virt` translates to, if mapped.
    pub fn translate_addr(&self, virt: I) -> Option<O> {
        let m = self.translate(virt)?;
        let off = virt.to_u64() & (m.size.bytes() - 1);
        Some(O::from_u64(m.phys.to_u64() + off))
    }

    // ---- splitting ------------------------------------------------------------------------

    /// How many frames splitting the leaves around boundaries `a` and `b` takes.
    fn splits_needed(&self, bounds: [u64; 2]) -> Result<usize, MapError> {
        let mut seen = [(0u8, 0u64); 8];
        let mut n = 0;
        let lim = 1u64 << self.reach_bits();
        for b in bounds {
            if b >= lim {
                continue;
            }
            let Some((level, _, _, raw)) = self.leaf_at(b) else {
                continue;
            };
            if let Entry::Leaf(pa, _) = F::decode(raw, level) {
                let last = pa + (1u64 << Self::shift(level)) - 1;
                if b & ((1u64 << Self::shift(level)) - 1) != 0
                    && last >> F::max_output_bits_at(1) != 0
                {
                    return Err(MapError::BeyondMaxPhysAddr(last));
                }
            }
            let mut m = level;
            while m > 1 && b & ((1u64 << Self::shift(m)) - 1) != 0 {
                let key = (m, b >> Self::shift(m));
                if !seen[..n].contains(&key) {
                    seen[n] = key;
                    n += 1;
                }
                m -= 1;
            }
        }
        Ok(n)
    }

    /// Splits every large leaf that `a` or `b` falls strictly inside, so both are page boundaries.
    /// All frames are taken before anything changes.
    fn split_bounds(&mut self, bounds: [u64; 2]) -> Result<(), MapError> {
        let need = self.splits_needed(bounds)?;
        let mut stash = [HostPhysAddr::ZERO; 8];
        for k in 0..need {
            match self.new_table() {
                Ok(f) => stash[k] = f,
                Err(e) => {
                    for f in &stash[..k] {
                        raw::free_frame(&mut self.ctx, *f);
                    }
                    return Err(e);
                }
            }
        }
        let mut used = 0;
        let lim = 1u64 << self.reach_bits();
        for b in bounds {
            if b >= lim {
                continue;
            }
            while let Some((level, table, i, raw)) = self.leaf_at(b) {
                if level == 1 || b & ((1u64 << Self::shift(level)) - 1) == 0 {
                    break;
                }
                let Entry::Leaf(pa, attrs) = F::decode(raw, level) else {
                    break;
                };
                let frame = stash[used];
                used += 1;
                let child = level - 1;
                let step = 1u64 << Self::shift(child);
                for k in 0..self.entries(child) {
                    let ad = raw & F::AD_MASK;
                    self.write(frame, k, F::leaf(pa + k as u64 * step, &attrs, child) | ad);
                }
                self.write(table, i, F::table(frame.as_u64(), level));
            }
        }
        debug_assert_eq!(used, need);
        for f in &stash[used..need] {
            raw::free_frame(&mut self.ctx, *f);
        }
        Ok(())
    }

    // ---- unmap / protect / merge ----------------------------------------------------------

    /// Removes every mapping in `virt .. virt + len` (holes are fine), splitting large pages that
    /// straddle the ends and freeing tables that become empty.
    ///
    /// # Errors
    /// Misalignment or reach errors, or [`MapError::OutOfFrames`] if a split cannot get a frame; the
    /// table is then unchanged.
    pub fn unmap(&mut self, virt: I, len: u64) -> Result<Flush, MapError> {
        self.last_pt = None;
        let (start, end) = self.input_range(virt.to_u64(), len)?;
        self.split_bounds([start, end])?;
        let (root, top) = (self.root, self.top());
        self.remove_level(root, top, start, end, start, end);
        Ok(self.flush(virt.to_u64(), len))
    }

    fn first_hole(&self, mut va: u64, end: u64) -> Option<u64> {
        while va < end {
            let Some((level, ..)) = self.leaf_at(va) else {
                return Some(va);
            };
            va = (va | ((1u64 << Self::shift(level)) - 1)) + 1;
        }
        None
    }

    /// Replaces the attributes of every page in `virt .. virt + len`, which must be fully mapped,
    /// splitting large pages that straddle the ends. Output addresses and accessed/dirty flags
    /// are kept.
    ///
    /// # Errors
    /// [`MapError::NotMapped`] for a hole, invalid attributes, misalignment or reach errors, or
    /// [`MapError::OutOfFrames`]; the table is then unchanged.
    pub fn protect(&mut self, virt: I, len: u64, attrs: F::Attrs) -> Result<Flush, MapError> {
        self.last_pt = None;
        F::check_attrs(&attrs).map_err(MapError::InvalidAttributes)?;
        let (start, end) = self.input_range(virt.to_u64(), len)?;
        if let Some(hole) = self.first_hole(start, end) {
            return Err(MapError::NotMapped(self.external(hole)));
        }
        self.split_bounds([start, end])?;
        let mut va = start;
        while va < end {
            let Some((level, table, i, raw)) = self.leaf_at(va) else {
                break;
            };
            if let Entry::Leaf(pa, _) = F::decode(raw, level) {
                self.write(table, i, F::leaf(pa, &attrs, level) | (raw & F::AD_MASK));
            }
            va = (va | ((1u64 << Self::shift(level)) - 1)) + 1;
        }
        Ok(self.flush(virt.to_u64(), len))
    }

    /// Replaces tables under `virt .. virt + len` whose entries form one contiguous, uniformly
    /// attributed, suitably aligned large page by that large page, bottom-up, freeing the tables.
    /// Returns the number of tables merged with the invalidation.
    ///
    /// # Errors
    /// Misalignment or reach errors.
    pub fn merge(&mut self, virt: I, len: u64) -> Result<(Flush, usize), MapError> {
        self.last_pt = None;
        let (start, end) = self.input_range(virt.to_u64(), len)?;
        let (root, top) = (self.root, self.top());
        let n = self.merge_level(root, top, start, end);
        Ok((self.flush(virt.to_u64(), len), n))
    }

    fn merge_level(&mut self, table: HostPhysAddr, level: u8, mut va: u64, end: u64) -> usize {
        let size = 1u64 << Self::shift(level);
        let mut merged = 0;
        while va < end {
            let i = self.index(level, va);
            let slot_end = (va | (size - 1)) + 1;
            if let Entry::Table(t) = F::decode(self.read(table, i), level) {
                let t = HostPhysAddr::new_truncate(t);
                merged += self.merge_level(t, level - 1, va, end.min(slot_end));
                if self.leaf_ok(level).is_some() {
                    if let Some((pa, attrs, ad)) = self.uniform(t, level - 1) {
                        if pa & (size - 1) == 0 {
                            self.write(table, i, F::leaf(pa, &attrs, level) | ad);
                            raw::free_frame(&mut self.ctx, t);
                            merged += 1;
                        }
                    }
                }
            }
            va = slot_end;
        }
        merged
    }

    /// (first address, attributes, OR of the accessed/dirty bits) if `table` is one contiguous,
    /// uniformly attributed run of leaves.
    fn uniform(&self, table: HostPhysAddr, level: u8) -> Option<(u64, F::Attrs, u64)> {
        let first = self.read(table, 0);
        let Entry::Leaf(p0, a0) = F::decode(first, level) else {
            return None;
        };
        let mut ad = first & F::AD_MASK;
        let step = 1u64 << Self::shift(level);
        for k in 1..self.entries(level) {
            let raw = self.read(table, k);
            match F::decode(raw, level) {
                Entry::Leaf(p, a) if p == p0 + k as u64 * step && a == a0 => ad |= raw & F::AD_MASK,
                _ => return None,
            }
        }
        Some((p0, a0, ad))
    }

    // ---- iteration, accounting, teardown ---------------------------------------------------

    /// The first mapping at or after internal address `va`.
    fn next_from(
        &self,
        table: HostPhysAddr,
        level: u8,
        va: u64,
        base: u64,
    ) -> Option<(u64, u8, u64, F::Attrs)> {
        let s = Self::shift(level);
        let first = if va > base { self.index(level, va) } else { 0 };
        for i in first..self.entries(level) {
            let slot = base + ((i as u64) << s);
            match F::decode(self.read(table, i), level) {
                Entry::Absent => {}
                Entry::Leaf(pa, a) => return Some((slot, level, pa, a)),
                Entry::Table(t) => {
                    if let Some(hit) =
                        self.next_from(HostPhysAddr::new_truncate(t), level - 1, va.max(slot), slot)
                    {
                        return Some(hit);
                    }
                }
            }
        }
        None
    }

    /// Every mapping in input-address order.
    pub fn iter(&self) -> Iter<'_, F, C, I, O> {
        Iter {
            table: self,
            next: 0,
            done: false,
        }
    }

    /// Number of table frames in use (root included).
    pub fn table_frames(&self) -> usize {
        self.count_tables(self.root, self.top())
    }

    fn count_tables(&self, table: HostPhysAddr, level: u8) -> usize {
        let mut n = 1;
        if level > 1 {
            for i in 0..self.entries(level) {
                if let Entry::Table(t) = F::decode(self.read(table, i), level) {
                    n += self.count_tables(HostPhysAddr::new_truncate(t), level - 1);
                }
            }
        }
        n
    }

    /// Frees every table (root included) and hands back the allocator. The root must no longer be
    /// in use by any CPU (no EPTP, nCR3 or CR3 points to it).
    pub fn free_all(mut self) -> C {
        let (root, top) = (self.root, self.top());
        self.free_tree(root, top);
        self.ctx
    }

    fn free_tree(&mut self, table: HostPhysAddr, level: u8) {
        if level > 1 {
            for i in 0..self.entries(level) {
                if let Entry::Table(t) = F::decode(self.read(table, i), level) {
                    self.free_tree(HostPhysAddr::new_truncate(t), level - 1);
                }
            }
        }
        raw::free_frame(&mut self.ctx, table);
    }
}

struct MapJob<A> {
    va0: u64,
    pa0: u64,
    attrs: A,
    max: u64,
}

/// Iterator over a table's mappings in input-address order ([`PageTable::iter`]).
#[derive(Debug)]
pub struct Iter<'a, F: PageTableFormat, C: FrameAllocator, I: Address, O: Address> {
    table: &'a PageTable<F, C, I, O>,
    next: u64,
    done: bool,
}

impl<F: PageTableFormat, C: FrameAllocator, I: Address, O: Address> Iterator
    for Iter<'_, F, C, I, O>
{
    type Item = Mapping<I, O, F::Attrs>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let t = self.table;
        let Some((va, level, pa, attrs)) = t.next_from(t.root, t.top(), self.next, 0) else {
            self.done = true;
            return None;
        };
        let size = F::leaf_size(level)?;
        match va.checked_add(size.bytes()) {
            Some(n) if n < 1u64 << t.reach_bits() => self.next = n,
            _ => self.done = true,
        }
        Some(Mapping {
            virt: I::from_u64(t.external(va)),
            phys: O::from_u64(pa),
            size,
            attrs,
        })
    }
}
