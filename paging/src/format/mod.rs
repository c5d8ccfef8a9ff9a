//! Page-table entry formats and the [`PageTableFormat`] trait the builder is generic over.
//!
//! Manual: Intel® 64 and IA-32 Architectures Software Developer's Manual, Combined Volumes, Order
//! Number 325462-086US, December 2024: Vol. 3A Section 4.3 "32-Bit Paging", Section 4.4 "PAE
//! Paging", Section 4.5 "4-Level Paging and 5-Level Paging", and Vol. 3C Section 29.3.2 "EPT
//! Translation Mechanism"; AMD64 Architecture Programmer's Manual Volume 2: System Programming,
//! Publication No. 24593, Revision 3.42, March 2024, Section 15.25 "Nested Paging" (nested tables use
//! the long-mode format).
//!
//! Levels are numbered as in the manuals: 1 is the page table (PTE), 2 the page directory, 3 the
//! PDPT, 4 the PML4 and 5 the PML5.

mod ept;
mod x86;

pub use ept::{Ept, EptAttrs, EptEntry, EptFlags};
pub use x86::{Legacy32, LongMode, Pae, X86Attrs, X86Entry};

use crate::addr::PageSize;
use crate::flush::FlushKind;

/// An entry as the builder sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry<A> {
    /// Not present.
    Absent,
    /// References the next-level table at this physical address.
    Table(u64),
    /// Maps a page at this physical address with these attributes (accessed/dirty excluded).
    Leaf(u64, A),
}

/// One paging-structure format. Implemented by [`Ept`], [`LongMode`] (x86-64 4/5-level, also the
/// nested-paging format), [`Pae`] and [`Legacy32`].
pub trait PageTableFormat: 'static {
    /// Leaf attributes: permissions, caching and software bits (never address, page size, A/D).
    type Attrs: Copy + Eq + core::fmt::Debug;
    /// Human-readable name.
    const NAME: &'static str;
    /// `true` for 8-byte entries, `false` for 4-byte (32-bit paging).
    const WIDE: bool;
    /// Index bits per level (9, or 10 for 32-bit paging).
    const INDEX_BITS: u32;
    /// Fewest levels a root may have.
    const MIN_LEVELS: u8;
    /// Most levels a root may have.
    const MAX_LEVELS: u8;
    /// Widest physical address an entry can hold for a page mapped by the builder.
    const MAX_OUTPUT_BITS: u32;
    /// Widest physical address a table frame may have.
    const MAX_TABLE_BITS: u32 = Self::MAX_OUTPUT_BITS;
    /// The accessed and dirty bits of a leaf (kept when the builder splits, merges or re-protects).
    const AD_MASK: u64;

    /// Index bits of the top-level table (PAE's PDPT has four entries).
    #[must_use]
    fn top_index_bits(_levels: u8) -> u32 {
        Self::INDEX_BITS
    }

    /// Widest physical address a leaf at `level` can hold (32-bit paging: 4 KiB pages below 4 GiB,
    /// 4 MiB pages below 1 TiB through PSE-36).
    #[must_use]
    fn max_output_bits_at(_level: u8) -> u32 {
        Self::MAX_OUTPUT_BITS
    }

    /// The page size a leaf at `level` maps, if the format allows leaves there.
    fn leaf_size(level: u8) -> Option<PageSize>;

    /// Checks attributes the builder is asked to write.
    ///
    /// # Errors
    /// A short reason if the attributes are not a present, well-formed leaf for this format.
    fn check_attrs(attrs: &Self::Attrs) -> Result<(), &'static str>;

    /// The raw leaf entry at `level` mapping `phys` (aligned to the level's page size).
    fn leaf(phys: u64, attrs: &Self::Attrs, level: u8) -> u64;

    /// The raw entry at `level` referencing the table at `phys`, with permissive rights so that the
    /// leaf alone decides.
    fn table(phys: u64, level: u8) -> u64;

    /// Decodes a raw entry at `level` (as written by this builder).
    fn decode(raw: u64, level: u8) -> Entry<Self::Attrs>;

    /// The invalidation a change needs; `guest_physical_input` is `true` for nested tables.
    fn flush_kind(guest_physical_input: bool) -> FlushKind;
}

/// Bits `hi..=lo` of a value, as a mask.
#[inline(always)]
pub(crate) const fn mask(hi: u32, lo: u32) -> u64 {
    (u64::MAX >> (63 - hi)) & !((1u64 << lo) - 1)
}
