//! Guest non-register state: interruptibility state, activity state and pending debug
//! exceptions.
//!
//! Reference: Intel® 64 and IA-32 Architectures Software Developer's Manual, Order Number
//! 325462-086US (December 2024), Volume 3C, 25.4.2 "Guest Non-Register State" (tables "Format of
//! Interruptibility State" and "Format of Pending-Debug-Exceptions").

use core::fmt;

use bitflags::bitflags;

bitflags! {
    /// The guest interruptibility-state field (32 bits) (SDM Vol. 3C, 25.4.2, table "Format of
    /// Interruptibility State"). Bits 31:5 are reserved and must be 0 for VM entry;
    /// [`from_bits_retain`](Self::from_bits_retain) keeps them so a check can report them.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct Interruptibility: u32 {
        /// Bit 0: blocking by STI (interrupts blocked for one instruction after STI set IF).
        const BLOCKING_BY_STI = 1 << 0;
        /// Bit 1: blocking by MOV SS (or POP SS) for one instruction.
        const BLOCKING_BY_MOV_SS = 1 << 1;
        /// Bit 2: blocking by SMI (the guest is in SMM).
        const BLOCKING_BY_SMI = 1 << 2;
        /// Bit 3: blocking by NMI (or virtual-NMI blocking with "virtual NMIs" = 1).
        const BLOCKING_BY_NMI = 1 << 3;
        /// Bit 4: enclave interruption (the last VM exit or event interrupted enclave
        /// execution).
        const ENCLAVE_INTERRUPTION = 1 << 4;
    }
}

impl Interruptibility {
    /// The reserved bits (31:5) that are set.
    #[must_use]
    pub const fn reserved_bits(self) -> u32 {
        self.bits() & !Self::all().bits()
    }
}

bitflags! {
    /// The guest pending-debug-exceptions field (natural width) (SDM Vol. 3C, 25.4.2, table
    /// "Format of Pending-Debug-Exceptions"): debug exceptions recognized but not yet delivered.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct PendingDebugExceptions: u64 {
        /// Bit 0 (B0): breakpoint 0 condition met.
        const B0 = 1 << 0;
        /// Bit 1 (B1): breakpoint 1 condition met.
        const B1 = 1 << 1;
        /// Bit 2 (B2): breakpoint 2 condition met.
        const B2 = 1 << 2;
        /// Bit 3 (B3): breakpoint 3 condition met.
        const B3 = 1 << 3;
        /// Bit 12 (enabled breakpoint): at least one data or I/O breakpoint was met and enabled
        /// in DR7.
        const ENABLED_BREAKPOINT = 1 << 12;
        /// Bit 14 (BS): a single-step trap is pending.
        const BS = 1 << 14;
        /// Bit 16 (RTM): a debug exception occurred inside an RTM region.
        const RTM = 1 << 16;
    }
}

impl PendingDebugExceptions {
    /// The reserved bits (11:4, 13, 15, 63:17) that are set.
    #[must_use]
    pub const fn reserved_bits(self) -> u64 {
        self.bits() & !Self::all().bits()
    }
}

/// The guest activity state (32 bits) (SDM Vol. 3C, 25.4.2). An open newtype: the states a
/// processor supports are enumerated in IA32_VMX_MISC bits 8:6, and other values are data.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ActivityState(pub u32);

impl ActivityState {
    /// 0: active, executing instructions normally.
    pub const ACTIVE: Self = Self(0);
    /// 1: HLT, halted after executing HLT.
    pub const HLT: Self = Self(1);
    /// 2: shutdown, after a triple fault (or other shutdown condition).
    pub const SHUTDOWN: Self = Self(2);
    /// 3: wait-for-SIPI, waiting for a start-up IPI.
    pub const WAIT_FOR_SIPI: Self = Self(3);

    /// The constant's name, or `None` for a value the SDM does not define.
    #[must_use]
    pub const fn name(self) -> Option<&'static str> {
        match self.0 {
            0 => Some("ACTIVE"),
            1 => Some("HLT"),
            2 => Some("SHUTDOWN"),
            3 => Some("WAIT_FOR_SIPI"),
            _ => None,
        }
    }
}

impl fmt::Debug for ActivityState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "ActivityState::{name}"),
            None => write!(f, "ActivityState({})", self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interruptibility_bits() {
        assert_eq!(Interruptibility::BLOCKING_BY_STI.bits(), 1);
        assert_eq!(Interruptibility::BLOCKING_BY_MOV_SS.bits(), 2);
        assert_eq!(Interruptibility::BLOCKING_BY_SMI.bits(), 4);
        assert_eq!(Interruptibility::BLOCKING_BY_NMI.bits(), 8);
        assert_eq!(Interruptibility::ENCLAVE_INTERRUPTION.bits(), 0x10);
        let state = Interruptibility::from_bits_retain(0x9);
        assert!(
            state.contains(Interruptibility::BLOCKING_BY_STI | Interruptibility::BLOCKING_BY_NMI)
        );
        assert_eq!(state.reserved_bits(), 0);
        let bad = Interruptibility::from_bits_retain(0x8000_0022);
        assert_eq!(bad.reserved_bits(), 0x8000_0020);
        assert!(bad.contains(Interruptibility::BLOCKING_BY_MOV_SS));
    }

    #[test]
    fn pending_debug_exceptions_bits() {
        let pending = PendingDebugExceptions::from_bits_retain(0x5001);
        assert!(pending.contains(PendingDebugExceptions::B0));
        assert!(pending.contains(PendingDebugExceptions::ENABLED_BREAKPOINT));
        assert!(pending.contains(PendingDebugExceptions::BS));
        assert!(!pending.contains(PendingDebugExceptions::RTM));
        assert_eq!(pending.reserved_bits(), 0);
        assert_eq!(
            PendingDebugExceptions::from_bits_retain(0x2010).reserved_bits(),
            0x2010
        );
        assert_eq!(PendingDebugExceptions::all().bits(), 0x1_500F);
    }

    #[test]
    fn activity_states() {
        assert_eq!(ActivityState::default(), ActivityState::ACTIVE);
        assert_eq!(ActivityState(1), ActivityState::HLT);
        assert_eq!(ActivityState::SHUTDOWN.0, 2);
        assert_eq!(ActivityState::WAIT_FOR_SIPI.0, 3);
        assert_eq!(
            format!("{:?}", ActivityState(3)),
            "ActivityState::WAIT_FOR_SIPI"
        );
        assert_eq!(format!("{:?}", ActivityState(4)), "ActivityState(4)");
        assert_eq!(ActivityState(4).name(), None);
    }
}
