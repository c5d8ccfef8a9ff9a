//! Small helpers that narrow a bit field read with [`BitField`] to the integer type the
//! accessor returns. The ranges passed in are fixed by the manual's layouts and are never wider
//! than the target type, so the narrowing never loses bits; the unit tests of every decoder
//! check the extreme values of each field.

use bit_field::BitField;
use core::ops::Range;

/// Reads `range` (at most 8 bits wide) of `value`.
#[expect(
    clippy::cast_possible_truncation,
    reason = "every caller passes a range of at most 8 bits, so the masked value fits in u8"
)]
pub(crate) fn u8_field(value: u64, range: Range<usize>) -> u8 {
    value.get_bits(range) as u8
}

/// Reads `range` (at most 16 bits wide) of `value`.
#[expect(
    clippy::cast_possible_truncation,
    reason = "every caller passes a range of at most 16 bits, so the masked value fits in u16"
)]
pub(crate) fn u16_field(value: u64, range: Range<usize>) -> u16 {
    value.get_bits(range) as u16
}

/// Reads `range` (at most 32 bits wide) of `value`.
#[expect(
    clippy::cast_possible_truncation,
    reason = "every caller passes a range of at most 32 bits, so the masked value fits in u32"
)]
pub(crate) fn u32_field(value: u64, range: Range<usize>) -> u32 {
    value.get_bits(range) as u32
}

/// Reads bit `bit` of `value`.
pub(crate) fn flag(value: u64, bit: usize) -> bool {
    value.get_bit(bit)
}
