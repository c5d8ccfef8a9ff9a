//! Segment registers as the VMCB stores them.
//!
//! Manual: AMD64 Architecture Programmer's Manual Volume 2: System Programming, Publication
//! No. 24593, Revision 3.42, March 2024 — Section 15.5.1 "Basic Operation" ("Segment State in the
//! VMCB") and Appendix B Table B-2 "VMCB Layout, State Save Area" (offsets 000h–09Fh).
//!
//! Base and limit are stored fully expanded; the attributes are the 12-bit concatenation of
//! descriptor bits 55:52 and 47:40.

use bit_field::BitField;

/// The 12 attribute bits of a VMCB segment register (APM 15.5.1 "Segment State in the VMCB").
///
/// Layout: bits 3:0 type, 4 S (code/data), 6:5 DPL, 7 P, 8 AVL, 9 L, 10 D/B, 11 G.
/// For a NULL segment all bits are zero.
#[repr(transparent)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SegmentAttributes(u16);

/// Descriptor type values (the 4-bit type field) used by the constructors of
/// [`SegmentAttributes`]; Volume 2 Section 4.7 "Legacy Segment Descriptors" and 4.8 "Long-Mode
/// Segment Descriptors".
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct SegmentType(pub u8);

impl SegmentType {
    /// Data, read/write, accessed (code/data descriptor, S = 1).
    pub const DATA_READ_WRITE_ACCESSED: Self = Self(0x3);
    /// Code, execute/read, accessed (code/data descriptor, S = 1).
    pub const CODE_EXECUTE_READ_ACCESSED: Self = Self(0xB);
    /// LDT (system descriptor, S = 0).
    pub const LDT: Self = Self(0x2);
    /// 16-bit TSS, busy (system descriptor, S = 0).
    pub const TSS16_BUSY: Self = Self(0x3);
    /// 32-/64-bit TSS, available (system descriptor, S = 0).
    pub const TSS_AVAILABLE: Self = Self(0x9);
    /// 32-/64-bit TSS, busy (system descriptor, S = 0).
    pub const TSS_BUSY: Self = Self(0xB);
}

impl SegmentAttributes {
    /// The attributes of a NULL segment (all zero, P = 0).
    pub const NULL: Self = Self(0);

    /// Wraps raw attribute bits as stored in the VMCB (bits 15:12 are kept as given).
    #[must_use]
    pub const fn from_bits(bits: u16) -> Self {
        Self(bits)
    }

    /// The raw attribute bits.
    #[must_use]
    pub const fn bits(self) -> u16 {
        self.0
    }

    /// Converts an in-memory 8-byte segment descriptor to VMCB attributes by concatenating
    /// descriptor bits 55:52 and 47:40 (APM 15.5.1 "Segment State in the VMCB").
    #[must_use]
    pub fn from_descriptor(descriptor: u64) -> Self {
        let mut bits = 0u16;
        bits.set_bits(0..8, descriptor.get_bits(40..48) as u16);
        bits.set_bits(8..12, descriptor.get_bits(52..56) as u16);
        Self(bits)
    }

    /// A present segment with the given fields.
    #[must_use]
    pub fn new(segment_type: SegmentType, code_or_data: bool, dpl: u8) -> Self {
        let mut bits = 0u16;
        bits.set_bits(0..4, u16::from(segment_type.0 & 0xF));
        bits.set_bit(4, code_or_data);
        bits.set_bits(5..7, u16::from(dpl & 3));
        bits.set_bit(7, true);
        Self(bits)
    }

    /// A 64-bit code segment (L = 1, D = 0), execute/read, accessed, present.
    #[must_use]
    pub fn code64(dpl: u8) -> Self {
        Self::new(SegmentType::CODE_EXECUTE_READ_ACCESSED, true, dpl)
            .with_long(true)
            .with_granularity(true)
    }

    /// A 32-bit code segment (D = 1), execute/read, accessed, present, 4 KiB granularity.
    #[must_use]
    pub fn code32(dpl: u8) -> Self {
        Self::new(SegmentType::CODE_EXECUTE_READ_ACCESSED, true, dpl)
            .with_default_big(true)
            .with_granularity(true)
    }

    /// A flat read/write data segment (B = 1, G = 1), accessed, present.
    #[must_use]
    pub fn data(dpl: u8) -> Self {
        Self::new(SegmentType::DATA_READ_WRITE_ACCESSED, true, dpl)
            .with_default_big(true)
            .with_granularity(true)
    }

    /// A busy 64-bit TSS, as TR must hold in long mode.
    #[must_use]
    pub fn tss_busy() -> Self {
        Self::new(SegmentType::TSS_BUSY, false, 0)
    }

    /// An LDT descriptor.
    #[must_use]
    pub fn ldt() -> Self {
        Self::new(SegmentType::LDT, false, 0)
    }

    /// Type field, bits 3:0.
    #[must_use]
    pub fn segment_type(self) -> SegmentType {
        SegmentType(self.0.get_bits(0..4) as u8)
    }

    /// S bit (bit 4): 1 for code/data, 0 for system descriptors.
    #[must_use]
    pub fn code_or_data(self) -> bool {
        self.0.get_bit(4)
    }

    /// DPL, bits 6:5.
    #[must_use]
    pub fn dpl(self) -> u8 {
        self.0.get_bits(5..7) as u8
    }

    /// P bit (bit 7); 0 marks a NULL segment.
    #[must_use]
    pub fn present(self) -> bool {
        self.0.get_bit(7)
    }

    /// AVL bit (bit 8).
    #[must_use]
    pub fn available(self) -> bool {
        self.0.get_bit(8)
    }

    /// L bit (bit 9): 64-bit code segment.
    #[must_use]
    pub fn long(self) -> bool {
        self.0.get_bit(9)
    }

    /// D/B bit (bit 10): default operand size / big.
    #[must_use]
    pub fn default_big(self) -> bool {
        self.0.get_bit(10)
    }

    /// G bit (bit 11): 4 KiB limit granularity.
    #[must_use]
    pub fn granularity(self) -> bool {
        self.0.get_bit(11)
    }

    /// Returns a copy with the L bit set to `value`.
    #[must_use]
    pub fn with_long(mut self, value: bool) -> Self {
        self.0.set_bit(9, value);
        self
    }

    /// Returns a copy with the D/B bit set to `value`.
    #[must_use]
    pub fn with_default_big(mut self, value: bool) -> Self {
        self.0.set_bit(10, value);
        self
    }

    /// Returns a copy with the G bit set to `value`.
    #[must_use]
    pub fn with_granularity(mut self, value: bool) -> Self {
        self.0.set_bit(11, value);
        self
    }

    /// Returns a copy with the P bit set to `value`.
    #[must_use]
    pub fn with_present(mut self, value: bool) -> Self {
        self.0.set_bit(7, value);
        self
    }
}

impl core::fmt::Debug for SegmentAttributes {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SegmentAttributes")
            .field("bits", &format_args!("{:#05x}", self.0))
            .field("type", &self.segment_type().0)
            .field("s", &self.code_or_data())
            .field("dpl", &self.dpl())
            .field("p", &self.present())
            .field("l", &self.long())
            .field("db", &self.default_big())
            .field("g", &self.granularity())
            .finish()
    }
}

/// One segment register in the VMCB state save area: selector, attributes, limit, base
/// (16 bytes; APM Table B-2, e.g. ES at 000h–00Fh).
///
/// GDTR and IDTR use the same layout with selector and attributes reserved.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, Debug)]
pub struct Segment {
    /// Selector (offset +0).
    pub selector: u16,
    /// Attributes (offset +2).
    pub attributes: SegmentAttributes,
    /// Expanded limit (offset +4).
    pub limit: u32,
    /// Base (offset +8); VMRUN canonicalizes it (15.5.1).
    pub base: u64,
}

const _: () = {
    assert!(core::mem::size_of::<Segment>() == 16);
    assert!(core::mem::offset_of!(Segment, selector) == 0);
    assert!(core::mem::offset_of!(Segment, attributes) == 2);
    assert!(core::mem::offset_of!(Segment, limit) == 4);
    assert!(core::mem::offset_of!(Segment, base) == 8);
};

impl Segment {
    /// A NULL segment (all zero).
    pub const NULL: Self = Self {
        selector: 0,
        attributes: SegmentAttributes::NULL,
        limit: 0,
        base: 0,
    };

    /// A segment with the given fields.
    #[must_use]
    pub const fn new(selector: u16, attributes: SegmentAttributes, limit: u32, base: u64) -> Self {
        Self {
            selector,
            attributes,
            limit,
            base,
        }
    }

    /// A descriptor-table register value (GDTR/IDTR): base and limit, selector and attributes
    /// zero.
    #[must_use]
    pub const fn table(base: u64, limit: u16) -> Self {
        Self {
            selector: 0,
            attributes: SegmentAttributes::NULL,
            limit: limit as u32,
            base,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptor_conversion_concatenates_bits() {
        // A flat 64-bit kernel code descriptor: 0x00AF_9B00_0000_FFFF.
        let attrs = SegmentAttributes::from_descriptor(0x00AF_9B00_0000_FFFF);
        assert_eq!(attrs.bits(), 0xA9B);
        assert!(attrs.long());
        assert!(!attrs.default_big());
        assert!(attrs.present());
        assert_eq!(attrs, SegmentAttributes::code64(0));
    }

    #[test]
    fn constructors_decode() {
        let d = SegmentAttributes::data(3);
        assert_eq!(d.dpl(), 3);
        assert_eq!(d.segment_type(), SegmentType::DATA_READ_WRITE_ACCESSED);
        assert!(d.code_or_data() && d.default_big() && d.granularity());
        let tr = SegmentAttributes::tss_busy();
        assert!(!tr.code_or_data());
        assert_eq!(tr.segment_type(), SegmentType::TSS_BUSY);
        assert!(!SegmentAttributes::NULL.present());
    }
}
