//! The I/O permission map (IOPM).
//!
//! Manual: AMD64 Architecture Programmer's Manual Volume 2: System Programming, Publication
//! No. 24593, Revision 3.42, March 2024 — Section 15.10.1 "I/O Permissions Map".
//!
//! The IOPM is 12 KiB of physically contiguous memory, aligned to 4 KiB. Bit *n* intercepts
//! accesses to port *n* (ports 0–FFFFh use the first 64 Kbit). An access of *k* bytes at port *p*
//! checks the bits of ports *p* … *p*+*k*−1, so a 2- or 4-byte access at FFFEh/FFFFh reaches bits
//! 10000h–10002h in the third page; those bits should stay set (intercept) and
//! [`Iopm::intercept_all`] / [`Iopm::intercept_none`] keep them so.
//!
//! Enable the map with [`crate::intercept::MiscIntercepts1::IOIO_PROT`] and write its physical
//! address with [`crate::vmcb::Vmcb::set_iopm_base_pa`].

use core::ops::RangeInclusive;

/// Size of the IOPM in bytes (12 KiB).
pub const IOPM_SIZE: usize = 12 * 1024;

/// Errors from IOPM range operations.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum IopmError {
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

/// The 12 KiB I/O permission map, page aligned so its physical address can go into the VMCB.
#[repr(C, align(4096))]
#[derive(Clone)]
pub struct Iopm([u8; IOPM_SIZE]);

const _: () = {
    assert!(core::mem::size_of::<Iopm>() == IOPM_SIZE);
    assert!(core::mem::align_of::<Iopm>() == 4096);
};

impl core::fmt::Debug for Iopm {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let intercepted = (0..=u16::MAX).filter(|&p| self.is_intercepted(p)).count();
        f.debug_struct("Iopm")
            .field("intercepted_ports", &intercepted)
            .finish()
    }
}

impl Iopm {
    /// A map that intercepts every port (all bits set).
    #[must_use]
    pub const fn intercept_all() -> Self {
        Self([0xFF; IOPM_SIZE])
    }

    /// A map that intercepts no port 0–FFFFh; the wrap-around bits beyond FFFFh stay set so a
    /// multi-byte access at the top of the port space is still intercepted.
    #[must_use]
    pub const fn intercept_none() -> Self {
        let mut bytes = [0xFF; IOPM_SIZE];
        let mut i = 0;
        while i < 0x2000 {
            bytes[i] = 0;
            i += 1;
        }
        Self(bytes)
    }

    /// Sets or clears the bits of ports 0–FFFFh in place (a map in memory the caller already
    /// owns, such as a zeroed frame, needs no 12 KiB temporary); the wrap-around bits beyond
    /// FFFFh end up set either way, as in [`Iopm::intercept_none`].
    pub fn set_all(&mut self, intercept: bool) {
        let (ports, beyond) = self.0.split_at_mut(0x2000);
        ports.fill(if intercept { 0xFF } else { 0 });
        beyond.fill(0xFF);
    }

    /// The bit position (byte index, bit in byte) of `port`.
    #[must_use]
    pub const fn bit_position(port: u16) -> (usize, u8) {
        ((port / 8) as usize, (port % 8) as u8)
    }

    /// Whether accesses to `port` are intercepted.
    #[must_use]
    pub fn is_intercepted(&self, port: u16) -> bool {
        let (byte, bit) = Self::bit_position(port);
        self.0[byte] & (1 << bit) != 0
    }

    /// Whether an access of `size` bytes at `port` is intercepted: the CPU checks the bits of
    /// every port the access touches, including bits 10000h–10002h past the top of the space.
    ///
    /// # Errors
    /// [`IopmError::BadSize`] if `size` is not 1, 2 or 4.
    pub fn access_intercepted(&self, port: u16, size: u8) -> Result<bool, IopmError> {
        if !matches!(size, 1 | 2 | 4) {
            return Err(IopmError::BadSize(size));
        }
        Ok((0..usize::from(size)).any(|i| {
            let bit = usize::from(port) + i;
            self.0[bit / 8] & (1 << (bit % 8)) != 0
        }))
    }

    /// Sets whether `port` is intercepted.
    pub fn set(&mut self, port: u16, intercept: bool) {
        let (byte, bit) = Self::bit_position(port);
        if intercept {
            self.0[byte] |= 1 << bit;
        } else {
            self.0[byte] &= !(1 << bit);
        }
    }

    /// Sets whether every port in `ports` is intercepted.
    ///
    /// # Errors
    /// [`IopmError::EmptyRange`] if the range is empty (end before start).
    pub fn set_range(
        &mut self,
        ports: RangeInclusive<u16>,
        intercept: bool,
    ) -> Result<(), IopmError> {
        let (start, end) = (*ports.start(), *ports.end());
        if end < start {
            return Err(IopmError::EmptyRange { start, end });
        }
        for port in ports {
            self.set(port, intercept);
        }
        Ok(())
    }

    /// The raw bytes (for tests and dumps).
    #[must_use]
    pub fn as_bytes(&self) -> &[u8; IOPM_SIZE] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bit_positions_for_sample_ports() {
        assert_eq!(Iopm::bit_position(0x0000), (0, 0));
        assert_eq!(Iopm::bit_position(0x0060), (0x0C, 0));
        assert_eq!(Iopm::bit_position(0x03F8), (0x7F, 0));
        assert_eq!(Iopm::bit_position(0x03FD), (0x7F, 5));
        assert_eq!(Iopm::bit_position(0x0CF8), (0x19F, 0));
        assert_eq!(Iopm::bit_position(0xFFFF), (0x1FFF, 7));
    }

    #[test]
    fn set_and_query_ports() {
        let mut iopm = Iopm::intercept_none();
        assert!(!iopm.is_intercepted(0x3F8));
        iopm.set(0x3FD, true);
        assert_eq!(iopm.as_bytes()[0x7F], 1 << 5);
        assert!(iopm.is_intercepted(0x3FD));
        assert!(!iopm.is_intercepted(0x3FC));
        iopm.set_range(0x3F8..=0x3FF, true).unwrap();
        assert_eq!(iopm.as_bytes()[0x7F], 0xFF);
        iopm.set(0x3FD, false);
        assert_eq!(iopm.as_bytes()[0x7F], 0xDF);
        let (start, end) = (0x10, 0x0F);
        assert_eq!(
            iopm.set_range(start..=end, true),
            Err(IopmError::EmptyRange {
                start: 0x10,
                end: 0x0F
            })
        );
    }

    /// Each port toggles exactly its own bit, for every port.
    #[test]
    fn every_port_has_its_own_bit() {
        let mut iopm = Iopm::intercept_none();
        for port in 0..=u16::MAX {
            iopm.set(port, true);
            assert!(iopm.is_intercepted(port));
            let (byte, bit) = Iopm::bit_position(port);
            assert_eq!(iopm.as_bytes()[byte], 1 << bit, "port {port:#x}");
            iopm.set(port, false);
            assert!(!iopm.is_intercepted(port));
        }
        assert!(iopm.as_bytes()[..0x2000].iter().all(|&b| b == 0));
    }

    #[test]
    fn multi_byte_accesses_check_every_port_and_wrap() {
        let mut iopm = Iopm::intercept_none();
        iopm.set(0x71, true);
        assert_eq!(iopm.access_intercepted(0x70, 1), Ok(false));
        assert_eq!(iopm.access_intercepted(0x70, 2), Ok(true));
        assert_eq!(iopm.access_intercepted(0x6E, 4), Ok(true));
        assert_eq!(iopm.access_intercepted(0x6C, 4), Ok(false));
        // A dword at FFFEh reaches bits 10000h/10001h in the third page: still intercepted.
        assert_eq!(iopm.access_intercepted(0xFFFE, 4), Ok(true));
        assert_eq!(iopm.access_intercepted(0xFFFF, 1), Ok(false));
        assert_eq!(iopm.access_intercepted(0, 3), Err(IopmError::BadSize(3)));
        let all = Iopm::intercept_all();
        assert!(all.is_intercepted(0x1234));
    }

    #[test]
    fn set_all_in_place_keeps_the_wrap_bits() {
        let mut iopm = Iopm::intercept_all();
        iopm.set_all(false);
        assert_eq!(iopm.as_bytes(), Iopm::intercept_none().as_bytes());
        iopm.set_all(true);
        assert_eq!(iopm.as_bytes(), Iopm::intercept_all().as_bytes());
        // A zeroed frame (what a platform hands out) gets its wrap bits.
        let mut zeroed = Iopm::intercept_all();
        zeroed.0.fill(0);
        zeroed.set_all(false);
        assert_eq!(zeroed.access_intercepted(0xFFFF, 2), Ok(true));
        assert_eq!(zeroed.access_intercepted(0xFFFE, 2), Ok(false));
    }
}
