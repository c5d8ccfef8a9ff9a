//! The I/O bitmaps A and B.
//!
//! Manual: Intel® 64 and IA-32 Architectures Software Developer's Manual, Combined Volumes, Order
//! Number 325462-086US, December 2024 — Vol. 3C 25.6.4 "I/O-Bitmap Addresses" (the layout) and
//! 26.1.3 "Instructions That Cause VM Exits Conditionally" (IN, INS/INSB/INSW/INSD, OUT,
//! OUTS/OUTSB/OUTSW/OUTSD: which accesses exit).
//!
//! With the "use I/O bitmaps" primary processor-based control (bit 25,
//! [`crate::controls::PrimaryControls::USE_IO_BITMAPS`]) set, the processor reads two 4 KiB
//! bitmaps: bitmap A holds one bit for each port 0000h–7FFFh, bitmap B one bit for each port
//! 8000h–FFFFh. An access of *k* bytes at port *p* exits if the bit of any port *p* …
//! *p*+*k*−1 is set, and always if it wraps around the port space (touches both FFFFh and
//! 0000h). Each bitmap's physical address is 4 KiB aligned and goes into its own VMCS field
//! ([`crate::fields::control::IO_BITMAP_A`], [`crate::fields::control::IO_BITMAP_B`]).
//!
//! [`IoBitmaps`] keeps A and B in one 8 KiB, 4 KiB-aligned block, B right after A, so that bit
//! *n* of the block is port *n*: write the block's address to `IO_BITMAP_A` and that address
//! plus [`IoBitmaps::B_OFFSET`] to `IO_BITMAP_B`.

use core::mem::{offset_of, size_of};
use core::ops::RangeInclusive;

/// Size of one I/O bitmap in bytes (4 KiB, 32 Kbit: 32 768 ports).
pub const IO_BITMAP_SIZE: usize = 4096;

/// Errors from I/O-bitmap operations.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum IoBitmapError {
    /// A port range's end lies before its start.
    #[error("empty or reversed I/O port range {start:#x}..={end:#x}")]
    EmptyRange {
        /// First port.
        start: u16,
        /// Last port.
        end: u16,
    },
    /// An access size other than 1, 2 or 4 bytes.
    #[error("I/O access size {0} is not 1, 2 or 4")]
    BadSize(u8),
}

/// I/O bitmaps A (ports 0000h–7FFFh) and B (ports 8000h–FFFFh), one after the other in an
/// 8 KiB block aligned to 4 KiB (SDM 25.6.4).
#[repr(C, align(4096))]
#[derive(Clone)]
pub struct IoBitmaps {
    /// Bitmap A: bit *n* is port *n*, for ports 0000h–7FFFh.
    a: [u8; IO_BITMAP_SIZE],
    /// Bitmap B: bit *n* is port 8000h + *n*, for ports 8000h–FFFFh.
    b: [u8; IO_BITMAP_SIZE],
}

const _: () = {
    assert!(size_of::<IoBitmaps>() == 2 * IO_BITMAP_SIZE);
    assert!(core::mem::align_of::<IoBitmaps>() == 4096);
    assert!(offset_of!(IoBitmaps, a) == 0);
    assert!(offset_of!(IoBitmaps, b) == IoBitmaps::B_OFFSET);
};

impl core::fmt::Debug for IoBitmaps {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let intercepted = (0..=u16::MAX).filter(|&p| self.is_intercepted(p)).count();
        f.debug_struct("IoBitmaps")
            .field("intercepted_ports", &intercepted)
            .finish()
    }
}

impl IoBitmaps {
    /// Offset of bitmap B from the start of the block (its address is the block's plus this).
    pub const B_OFFSET: usize = IO_BITMAP_SIZE;

    /// Bitmaps that make every port access exit (all bits set).
    #[must_use]
    pub const fn intercept_all() -> Self {
        Self {
            a: [0xFF; IO_BITMAP_SIZE],
            b: [0xFF; IO_BITMAP_SIZE],
        }
    }

    /// Bitmaps that let every port access through (all bits clear); accesses that wrap around
    /// the port space still exit.
    #[must_use]
    pub const fn intercept_none() -> Self {
        Self {
            a: [0; IO_BITMAP_SIZE],
            b: [0; IO_BITMAP_SIZE],
        }
    }

    /// Sets or clears the bit of every port in place (a block in memory the caller already owns,
    /// such as a zeroed frame, needs no 8 KiB temporary).
    pub fn set_all(&mut self, intercept: bool) {
        let byte = if intercept { 0xFF } else { 0 };
        self.a.fill(byte);
        self.b.fill(byte);
    }

    /// The bit position of `port`: byte offset in the 8 KiB block (bitmap B starts at
    /// [`Self::B_OFFSET`]) and bit in that byte.
    #[must_use]
    pub const fn bit_position(port: u16) -> (usize, u8) {
        ((port / 8) as usize, (port % 8) as u8)
    }

    fn byte(&self, offset: usize) -> u8 {
        if offset < Self::B_OFFSET {
            self.a[offset]
        } else {
            self.b[offset - Self::B_OFFSET]
        }
    }

    fn byte_mut(&mut self, offset: usize) -> &mut u8 {
        if offset < Self::B_OFFSET {
            &mut self.a[offset]
        } else {
            &mut self.b[offset - Self::B_OFFSET]
        }
    }

    /// Whether an access to `port` exits.
    #[must_use]
    pub fn is_intercepted(&self, port: u16) -> bool {
        let (byte, bit) = Self::bit_position(port);
        self.byte(byte) & (1 << bit) != 0
    }

    /// Whether an access of `size` bytes at `port` exits: the bit of any port it touches is
    /// set, or it wraps around from FFFFh to 0000h (SDM 26.1.3).
    ///
    /// # Errors
    /// [`IoBitmapError::BadSize`] if `size` is not 1, 2 or 4.
    pub fn access_intercepted(&self, port: u16, size: u8) -> Result<bool, IoBitmapError> {
        if !matches!(size, 1 | 2 | 4) {
            return Err(IoBitmapError::BadSize(size));
        }
        Ok((0..u16::from(size)).any(|i| match port.checked_add(i) {
            Some(p) => self.is_intercepted(p),
            None => true,
        }))
    }

    /// Sets whether accesses to `port` exit.
    pub fn set(&mut self, port: u16, intercept: bool) {
        let (byte, bit) = Self::bit_position(port);
        let byte = self.byte_mut(byte);
        if intercept {
            *byte |= 1 << bit;
        } else {
            *byte &= !(1 << bit);
        }
    }

    /// Sets whether accesses to every port in `ports` exit.
    ///
    /// # Errors
    /// [`IoBitmapError::EmptyRange`] if the range is empty (end before start); nothing changes.
    pub fn set_range(
        &mut self,
        ports: RangeInclusive<u16>,
        intercept: bool,
    ) -> Result<(), IoBitmapError> {
        let (start, end) = (*ports.start(), *ports.end());
        if end < start {
            return Err(IoBitmapError::EmptyRange { start, end });
        }
        for port in ports {
            self.set(port, intercept);
        }
        Ok(())
    }

    /// Bitmap A (ports 0000h–7FFFh), for tests and dumps.
    #[must_use]
    pub fn bitmap_a(&self) -> &[u8; IO_BITMAP_SIZE] {
        &self.a
    }

    /// Bitmap B (ports 8000h–FFFFh), for tests and dumps.
    #[must_use]
    pub fn bitmap_b(&self) -> &[u8; IO_BITMAP_SIZE] {
        &self.b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set_bits(maps: &IoBitmaps) -> u32 {
        let count = |m: &[u8; IO_BITMAP_SIZE]| m.iter().map(|b| b.count_ones()).sum::<u32>();
        count(maps.bitmap_a()) + count(maps.bitmap_b())
    }

    #[test]
    fn bit_positions_for_sample_ports() {
        assert_eq!(IoBitmaps::bit_position(0x0000), (0, 0));
        assert_eq!(IoBitmaps::bit_position(0x0060), (0x0C, 0));
        assert_eq!(IoBitmaps::bit_position(0x03FD), (0x7F, 5));
        assert_eq!(IoBitmaps::bit_position(0x7FFF), (0x0FFF, 7));
        // Bitmap B: port 8000h is its bit 0.
        assert_eq!(IoBitmaps::bit_position(0x8000), (IoBitmaps::B_OFFSET, 0));
        assert_eq!(IoBitmaps::bit_position(0xFFFF), (0x1FFF, 7));
    }

    #[test]
    fn ports_land_in_the_right_bitmap() {
        let mut maps = IoBitmaps::intercept_none();
        maps.set(0x3F8, true);
        assert_eq!(maps.bitmap_a()[0x7F], 1);
        maps.set(0x8001, true);
        assert_eq!(maps.bitmap_b()[0], 0b10);
        maps.set(0xFFFF, true);
        assert_eq!(maps.bitmap_b()[0xFFF], 0x80);
        assert_eq!(set_bits(&maps), 3);
        maps.set(0x3F8, false);
        assert!(!maps.is_intercepted(0x3F8));
        assert_eq!(maps.bitmap_a()[0x7F], 0);
    }

    /// Each port sets and clears exactly its own bit, for every port, in the bitmap the manual
    /// gives: setting the ports in order fills each byte from bit 0 up and never reaches the
    /// next byte; clearing them in order empties it the same way.
    #[test]
    fn every_port_has_its_own_bit() {
        let byte_of = |maps: &IoBitmaps, port: u16| {
            let (byte, bit) = IoBitmaps::bit_position(port);
            assert_eq!(byte, usize::from(port) / 8);
            assert_eq!(
                byte >= IoBitmaps::B_OFFSET,
                port >= 0x8000,
                "port {port:#x}"
            );
            let map = if port >= 0x8000 {
                maps.bitmap_b()
            } else {
                maps.bitmap_a()
            };
            let next = map.get(usize::from(port % 0x8000) / 8 + 1).copied();
            (map[usize::from(port % 0x8000) / 8], next, bit)
        };
        let mut maps = IoBitmaps::intercept_none();
        for port in 0..=u16::MAX {
            maps.set(port, true);
            assert!(maps.is_intercepted(port));
            let (byte, next, bit) = byte_of(&maps, port);
            assert_eq!(byte, ((1u16 << (bit + 1)) - 1) as u8, "port {port:#x}");
            assert!(matches!(next, None | Some(0)), "port {port:#x}");
        }
        assert_eq!(set_bits(&maps), 65536);
        for port in 0..=u16::MAX {
            maps.set(port, false);
            assert!(!maps.is_intercepted(port));
            let (byte, next, bit) = byte_of(&maps, port);
            assert_eq!(byte, !((1u16 << (bit + 1)) - 1) as u8, "port {port:#x}");
            assert!(matches!(next, None | Some(0xFF)), "port {port:#x}");
        }
        assert_eq!(set_bits(&maps), 0);
    }

    #[test]
    fn ranges_all_and_errors() {
        let mut maps = IoBitmaps::intercept_none();
        maps.set_range(0x7FFC..=0x8003, true).unwrap();
        assert_eq!(set_bits(&maps), 8);
        assert!(maps.is_intercepted(0x7FFF) && maps.is_intercepted(0x8000));
        let (start, end) = (0x10, 0x0F);
        assert_eq!(
            maps.set_range(start..=end, true),
            Err(IoBitmapError::EmptyRange {
                start: 0x10,
                end: 0x0F
            })
        );
        assert_eq!(set_bits(&maps), 8);
        maps.set_all(true);
        assert_eq!(set_bits(&maps), 65536);
        let all = IoBitmaps::intercept_all();
        assert!((0..=u16::MAX).all(|p| all.is_intercepted(p)));
        maps.set_all(false);
        assert_eq!(set_bits(&maps), 0);
    }

    #[test]
    fn multi_byte_accesses_check_every_port_and_wraps_exit() {
        let mut maps = IoBitmaps::intercept_none();
        maps.set(0x71, true);
        assert_eq!(maps.access_intercepted(0x70, 1), Ok(false));
        assert_eq!(maps.access_intercepted(0x70, 2), Ok(true));
        assert_eq!(maps.access_intercepted(0x6E, 4), Ok(true));
        assert_eq!(maps.access_intercepted(0x6C, 4), Ok(false));
        // Across the A/B boundary.
        maps.set(0x8000, true);
        assert_eq!(maps.access_intercepted(0x7FFE, 4), Ok(true));
        assert_eq!(maps.access_intercepted(0x7FFE, 2), Ok(false));
        // Wrapping from FFFFh to 0000h always exits, even with every bit clear.
        let none = IoBitmaps::intercept_none();
        assert_eq!(none.access_intercepted(0xFFFF, 1), Ok(false));
        assert_eq!(none.access_intercepted(0xFFFE, 2), Ok(false));
        assert_eq!(none.access_intercepted(0xFFFF, 2), Ok(true));
        assert_eq!(none.access_intercepted(0xFFFD, 4), Ok(true));
        assert_eq!(
            none.access_intercepted(0, 3),
            Err(IoBitmapError::BadSize(3))
        );
        assert!(format!("{none:?}").contains("intercepted_ports: 0"));
    }
}
