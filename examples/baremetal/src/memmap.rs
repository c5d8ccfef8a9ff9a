//! The frames this kernel may hand out, from the boot loader's memory map: the map's entries
//! (multiboot1 `mmap_*`, parsed here; multiboot2 tag type 6, read in `boot.rs` with the
//! `multiboot2` crate) become [`UsableMemory`], a sorted list of disjoint 4 KiB-aligned ranges,
//! and [`FrameBitmap`] hands out contiguous runs of frames from it and takes them back.
//!
//! What is usable: the union of the *available* entries (type 1), shrunk to whole pages, minus
//! - every entry of another type (reserved, ACPI, NVS, defective), grown to whole pages: an
//!   entry that overlaps an available one wins, whatever the order of the entries;
//! - everything outside `bounds` (the kernel passes 1 MiB up to the end of the identity map its
//!   boot page tables build: the low 1 MiB holds the BIOS data, the EBDA and the real-mode
//!   guests' conventions, and memory above the map cannot be reached);
//! - the caller's exclusions, grown to whole pages (the kernel's image, the boot information,
//!   the boot modules: anything still in use when the allocator starts).
//!
//! The entries may come unsorted and overlapping, and bounds need not be page-aligned: the
//! result is the same set of frames either way.
//!
//! References: Multiboot Specification 0.6.96 §3.3 "Boot information format" (`flags` bit 6,
//! `mmap_length`, `mmap_addr`; each entry is `size`, `base_addr`, `length`, `type`, and the next
//! entry starts `size + 4` bytes further); Multiboot2 Specification 2.0 §3.6.8 "Memory map"
//! (the same types: 1 available, 3 ACPI reclaimable, 4 preserved on hibernation, 5 defective,
//! anything else reserved).
//!
//! Plain `core` code without `unsafe`: compiled into the kernel and, as it is, into the host
//! tests (`tests/tests/memmap.rs`).

use core::fmt;
use core::ops::Range;

/// The frame size.
pub const PAGE_SIZE: u64 = 4096;

/// Where usable memory starts at the earliest: the first 1 MiB is left alone.
pub const LOW_MEMORY_END: u64 = 1 << 20;

/// Most disjoint ranges a [`RangeSet`] holds (the available memory and the usable memory
/// after exclusions; real maps have a handful).
pub const MAX_RANGES: usize = 64;

/// Bytes of a multiboot1 entry after its `size` field: `base_addr`, `length`, `type`.
pub const MULTIBOOT1_ENTRY_MIN: u32 = 20;

/// Why no frame allocator could be built from the boot information.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    /// The loader gave no memory map.
    #[error(
        "the boot loader gave no memory map (multiboot1: flags bit 6 clear; multiboot2: no \
         tag of type 6)"
    )]
    Missing,
    /// The memory map has no entries.
    #[error("the boot loader's memory map has no entries")]
    Empty,
    /// A multiboot1 entry's `size` is too small for its fields.
    #[error(
        "memory-map entry at byte {offset}: size {size} is less than the {MULTIBOOT1_ENTRY_MIN} \
         bytes of base, length and type"
    )]
    EntryTooSmall {
        /// The entry's offset in the map.
        offset: usize,
        /// Its `size` field.
        size: u32,
    },
    /// A multiboot1 entry runs past `mmap_length`.
    #[error("memory-map entry at byte {offset} runs past the map's {len} bytes")]
    Truncated {
        /// The entry's offset in the map.
        offset: usize,
        /// The map's length (`mmap_length`).
        len: usize,
    },
    /// The map splits memory into more ranges than this kernel keeps.
    #[error("the memory map splits memory into more than {MAX_RANGES} ranges")]
    TooManyRanges,
    /// Nothing usable is left.
    #[error(
        "no usable memory: the map's {available_kib} KiB available (in {entries} entries) lie \
         below 1 MiB, above the identity map, in reserved entries or under the kernel, the \
         boot information and the modules"
    )]
    NoUsableMemory {
        /// KiB of the available entries.
        available_kib: u64,
        /// Entries in the map.
        entries: usize,
    },
}

/// The type of a memory-map entry: an open newtype, as loaders may report types the
/// specifications do not name (those count as reserved).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegionKind(pub u32);

impl RegionKind {
    /// RAM free for the operating system.
    pub const AVAILABLE: Self = Self(1);
    /// Reserved.
    pub const RESERVED: Self = Self(2);
    /// ACPI tables, reclaimable once read (this kernel does not reclaim it).
    pub const ACPI_RECLAIMABLE: Self = Self(3);
    /// To be preserved on hibernation (ACPI NVS).
    pub const ACPI_NVS: Self = Self(4);
    /// Defective RAM.
    pub const DEFECTIVE: Self = Self(5);
}

impl fmt::Display for RegionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::AVAILABLE => f.write_str("available"),
            Self::RESERVED => f.write_str("reserved"),
            Self::ACPI_RECLAIMABLE => f.write_str("ACPI reclaimable"),
            Self::ACPI_NVS => f.write_str("ACPI NVS"),
            Self::DEFECTIVE => f.write_str("defective"),
            Self(other) => write!(f, "type {other} (reserved)"),
        }
    }
}

/// One entry of the memory map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    /// First byte.
    pub start: u64,
    /// Length in bytes.
    pub len: u64,
    /// Its type.
    pub kind: RegionKind,
}

impl Region {
    /// The first byte after it (saturating at `u64::MAX`).
    pub const fn end(&self) -> u64 {
        self.start.saturating_add(self.len)
    }
}

/// The entries of a multiboot1 memory map: the `mmap_length` bytes at `mmap_addr`.
#[derive(Debug, Clone)]
pub struct Multiboot1Entries<'a> {
    bytes: &'a [u8],
    offset: usize,
}

/// The entries of the multiboot1 memory map `bytes`; an entry that does not fit ends the
/// iteration with an error.
pub fn multiboot1_entries(bytes: &[u8]) -> Multiboot1Entries<'_> {
    Multiboot1Entries { bytes, offset: 0 }
}

fn le_u32(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(word)
}

fn le_u64(bytes: &[u8], at: usize) -> u64 {
    u64::from(le_u32(bytes, at)) | (u64::from(le_u32(bytes, at + 4)) << 32)
}

impl Iterator for Multiboot1Entries<'_> {
    type Item = Result<Region, MapError>;

    fn next(&mut self) -> Option<Self::Item> {
        let offset = self.offset;
        let len = self.bytes.len();
        if offset >= len {
            return None;
        }
        // Ends the iteration after this item.
        self.offset = len;
        if len - offset < 4 {
            return Some(Err(MapError::Truncated { offset, len }));
        }
        let size = le_u32(self.bytes, offset);
        if size < MULTIBOOT1_ENTRY_MIN {
            return Some(Err(MapError::EntryTooSmall { offset, size }));
        }
        let next = offset + 4 + size as usize;
        if next > len {
            return Some(Err(MapError::Truncated { offset, len }));
        }
        self.offset = next;
        Some(Ok(Region {
            start: le_u64(self.bytes, offset + 4),
            len: le_u64(self.bytes, offset + 12),
            kind: RegionKind(le_u32(self.bytes, offset + 20)),
        }))
    }
}

const fn align_down(addr: u64) -> u64 {
    addr & !(PAGE_SIZE - 1)
}

const fn align_up(addr: u64) -> u64 {
    match addr.checked_add(PAGE_SIZE - 1) {
        Some(a) => align_down(a),
        None => align_down(u64::MAX),
    }
}

/// A sorted list of disjoint, non-adjacent, non-empty ranges `[start, end)`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct RangeSet {
    ranges: [(u64, u64); MAX_RANGES],
    len: usize,
}

impl fmt::Debug for RangeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl Default for RangeSet {
    fn default() -> Self {
        Self::new()
    }
}

impl RangeSet {
    /// The empty set.
    pub const fn new() -> Self {
        Self {
            ranges: [(0, 0); MAX_RANGES],
            len: 0,
        }
    }

    /// The ranges, lowest first.
    pub fn iter(&self) -> impl Iterator<Item = Range<u64>> + '_ {
        self.ranges[..self.len].iter().map(|&(s, e)| s..e)
    }

    /// How many ranges.
    pub const fn len(&self) -> usize {
        self.len
    }

    /// No range at all.
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes in all ranges.
    pub fn bytes(&self) -> u64 {
        self.iter().map(|r| r.end - r.start).sum()
    }

    /// Whether `start..end` lies inside one range.
    pub fn contains(&self, start: u64, end: u64) -> bool {
        self.iter().any(|r| r.start <= start && end <= r.end)
    }

    /// Adds `start..end`, merging it with the ranges it overlaps or touches.
    ///
    /// # Errors
    /// [`MapError::TooManyRanges`] if the set would hold more than [`MAX_RANGES`] ranges.
    pub fn insert(&mut self, start: u64, end: u64) -> Result<(), MapError> {
        if start >= end {
            return Ok(());
        }
        let (mut start, mut end) = (start, end);
        let mut out = Self::new();
        let mut placed = false;
        for &(s, e) in &self.ranges[..self.len] {
            if e < start {
                out.push(s, e)?;
            } else if end < s {
                if !placed {
                    out.push(start, end)?;
                    placed = true;
                }
                out.push(s, e)?;
            } else {
                start = start.min(s);
                end = end.max(e);
            }
        }
        if !placed {
            out.push(start, end)?;
        }
        *self = out;
        Ok(())
    }

    /// Takes `start..end` out, splitting the range it falls inside.
    ///
    /// # Errors
    /// [`MapError::TooManyRanges`] if the set would hold more than [`MAX_RANGES`] ranges.
    pub fn remove(&mut self, start: u64, end: u64) -> Result<(), MapError> {
        if start >= end {
            return Ok(());
        }
        let mut out = Self::new();
        for &(s, e) in &self.ranges[..self.len] {
            if e <= start || end <= s {
                out.push(s, e)?;
                continue;
            }
            if s < start {
                out.push(s, start)?;
            }
            if end < e {
                out.push(end, e)?;
            }
        }
        *self = out;
        Ok(())
    }

    fn push(&mut self, start: u64, end: u64) -> Result<(), MapError> {
        let slot = self
            .ranges
            .get_mut(self.len)
            .ok_or(MapError::TooManyRanges)?;
        *slot = (start, end);
        self.len += 1;
        Ok(())
    }
}

/// The memory the frame allocator may hand out, with what the map said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsableMemory {
    /// The usable ranges (page-aligned).
    pub ranges: RangeSet,
    /// Entries in the map.
    pub entries: usize,
    /// Bytes of the available entries (their union, in whole pages), before anything is taken
    /// out.
    pub available: u64,
}

impl UsableMemory {
    /// The usable memory of the map `entries` inside `bounds`, without `exclusions`.
    ///
    /// `entries` is read twice (the available entries first, then the others), so the order of
    /// the entries does not matter.
    ///
    /// # Errors
    /// The first entry that could not be read; [`MapError::Empty`] for a map without entries;
    /// [`MapError::TooManyRanges`]; [`MapError::NoUsableMemory`] if nothing is left.
    pub fn build<I>(
        entries: I,
        bounds: Range<u64>,
        exclusions: &[Range<u64>],
    ) -> Result<Self, MapError>
    where
        I: IntoIterator<Item = Result<Region, MapError>>,
        I::IntoIter: Clone,
    {
        let entries = entries.into_iter();
        let mut available = RangeSet::new();
        let mut count = 0;
        for region in entries.clone() {
            let region = region?;
            count += 1;
            if region.kind == RegionKind::AVAILABLE {
                available.insert(align_up(region.start), align_down(region.end()))?;
            }
        }
        if count == 0 {
            return Err(MapError::Empty);
        }
        let mut usable = available;
        usable.remove(0, align_up(bounds.start))?;
        usable.remove(align_down(bounds.end), u64::MAX)?;
        for region in entries {
            let region = region?;
            if region.kind != RegionKind::AVAILABLE {
                usable.remove(align_down(region.start), align_up(region.end()))?;
            }
        }
        for excluded in exclusions {
            usable.remove(align_down(excluded.start), align_up(excluded.end))?;
        }
        if usable.is_empty() {
            return Err(MapError::NoUsableMemory {
                available_kib: available.bytes() / 1024,
                entries: count,
            });
        }
        Ok(Self {
            ranges: usable,
            entries: count,
            available: available.bytes(),
        })
    }

    /// Usable bytes.
    pub fn usable(&self) -> u64 {
        self.ranges.bytes()
    }

    /// Bytes of the available entries that are not usable.
    pub fn excluded(&self) -> u64 {
        self.available - self.usable()
    }
}

/// Why a run could not be given back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FreeError {
    /// The address is not page-aligned, or the run is empty.
    #[error("run of {count} frames at {addr:#x}: not page-aligned or empty")]
    Misaligned {
        /// The run's first byte.
        addr: u64,
        /// Its frames.
        count: usize,
    },
    /// The run is not inside one usable range.
    #[error("run of {count} frames at {addr:#x} is not usable memory of this allocator")]
    NotUsable {
        /// The run's first byte.
        addr: u64,
        /// Its frames.
        count: usize,
    },
    /// A frame of the run is free already (a double free).
    #[error("frame {frame:#x} of the run at {addr:#x} is free already")]
    NotAllocated {
        /// The run's first byte.
        addr: u64,
        /// The first frame of it that is free.
        frame: u64,
    },
}

/// A frame allocator over [`UsableMemory`]: one bit per frame (set = free) in memory the
/// caller provides, covering frames from address 0 up; contiguous runs first-fit from the
/// lowest free frame. It counts the frames it has out.
#[derive(Debug)]
pub struct FrameBitmap<'a> {
    words: &'a mut [u64],
    usable: RangeSet,
    /// The lowest word that may have a free bit.
    lowest: usize,
    in_use: usize,
    total: usize,
}

impl<'a> FrameBitmap<'a> {
    /// The frames a bitmap of `words` covers: `words.len() * 64` frames from address 0.
    pub const fn covered(words: usize) -> u64 {
        words as u64 * 64 * PAGE_SIZE
    }

    /// An allocator of the usable frames of `memory` that `words` covers (the others are
    /// left out: callers size `words` for their bounds). `words` is overwritten.
    pub fn new(words: &'a mut [u64], memory: &UsableMemory) -> Self {
        words.fill(0);
        let limit = Self::covered(words.len());
        let mut usable = memory.ranges;
        // Cannot fail: removing a tail never splits a range.
        let _ = usable.remove(limit, u64::MAX);
        let mut total = 0;
        for range in usable.iter() {
            for frame in (range.start / PAGE_SIZE)..(range.end / PAGE_SIZE) {
                let frame = frame as usize;
                words[frame / 64] |= 1 << (frame % 64);
                total += 1;
            }
        }
        let mut bitmap = Self {
            words,
            usable,
            lowest: 0,
            in_use: 0,
            total,
        };
        bitmap.skip_full_words();
        bitmap
    }

    fn free_bit(&self, frame: usize) -> bool {
        self.words[frame / 64] & (1 << (frame % 64)) != 0
    }

    fn skip_full_words(&mut self) {
        while self.lowest < self.words.len() && self.words[self.lowest] == 0 {
            self.lowest += 1;
        }
    }

    /// The address of `count` (at least 1) contiguous free frames, now marked allocated, the
    /// lowest such run; `None` if there is none. The frames are not zeroed here (the caller
    /// writes memory; this only keeps the books).
    pub fn allocate(&mut self, count: usize) -> Option<u64> {
        let bits = self.words.len() * 64;
        if count == 0 {
            return None;
        }
        let mut at = self.lowest * 64;
        while at + count <= bits {
            let rest = self.words[at / 64] >> (at % 64);
            if rest == 0 {
                at = (at / 64 + 1) * 64;
                continue;
            }
            at += rest.trailing_zeros() as usize;
            let mut run = 0;
            while run < count && at + run < bits && self.free_bit(at + run) {
                run += 1;
            }
            if run == count {
                for frame in at..at + count {
                    self.words[frame / 64] &= !(1 << (frame % 64));
                }
                self.in_use += count;
                self.skip_full_words();
                return Some(at as u64 * PAGE_SIZE);
            }
            at += run;
        }
        None
    }

    /// Gives back the run of `count` frames at `addr`.
    ///
    /// # Errors
    /// A misaligned or empty run, a run outside the usable memory, or one with a frame that is
    /// free already; nothing changes then.
    pub fn free(&mut self, addr: u64, count: usize) -> Result<(), FreeError> {
        if addr % PAGE_SIZE != 0 || count == 0 {
            return Err(FreeError::Misaligned { addr, count });
        }
        let end = (count as u64)
            .checked_mul(PAGE_SIZE)
            .and_then(|len| addr.checked_add(len))
            .ok_or(FreeError::NotUsable { addr, count })?;
        if !self.usable.contains(addr, end) {
            return Err(FreeError::NotUsable { addr, count });
        }
        let first = (addr / PAGE_SIZE) as usize;
        if let Some(frame) = (first..first + count).find(|&f| self.free_bit(f)) {
            return Err(FreeError::NotAllocated {
                addr,
                frame: frame as u64 * PAGE_SIZE,
            });
        }
        for frame in first..first + count {
            self.words[frame / 64] |= 1 << (frame % 64);
        }
        self.in_use -= count;
        self.lowest = self.lowest.min(first / 64);
        Ok(())
    }

    /// Whether the frame at `addr` is usable memory handed out and not given back.
    pub fn is_allocated(&self, addr: u64) -> bool {
        addr % PAGE_SIZE == 0
            && self.usable.contains(addr, addr.saturating_add(PAGE_SIZE))
            && !self.free_bit((addr / PAGE_SIZE) as usize)
    }

    /// Frames handed out and not given back.
    pub const fn in_use(&self) -> usize {
        self.in_use
    }

    /// Frames this allocator manages.
    pub const fn total(&self) -> usize {
        self.total
    }
}
