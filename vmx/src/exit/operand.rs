//! Register and operand encodings shared by the exit qualifications and the VM-exit
//! instruction-information layouts.
//!
//! Reference: Intel® 64 and IA-32 Architectures Software Developer's Manual, Order Number
//! 325462-086US (December 2024), Volume 3C: 28.2.1 "Basic VM-Exit Information" (general-purpose
//! register numbering in the exit-qualification tables) and 28.2.5 "Information for VM Exits Due
//! to Instruction Execution" (scaling, address size, segment, index and base encodings).

use core::fmt;

/// A general-purpose register as the VM-exit information fields number it: 0 = RAX, 1 = RCX,
/// 2 = RDX, 3 = RBX, 4 = RSP, 5 = RBP, 6 = RSI, 7 = RDI, 8–15 = R8–R15 (SDM Vol. 3C, 28.2.1,
/// table "Exit Qualification for Control-Register Accesses", and 28.2.5).
///
/// Every 4-bit value names a register, so decoding never fails. The enum is
/// `#[non_exhaustive]` because the fields have no room yet for more registers but the
/// architecture may grow (e.g. APX).
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Gpr {
    /// 0: RAX (EAX, AX).
    Rax = 0,
    /// 1: RCX.
    Rcx = 1,
    /// 2: RDX.
    Rdx = 2,
    /// 3: RBX.
    Rbx = 3,
    /// 4: RSP.
    Rsp = 4,
    /// 5: RBP.
    Rbp = 5,
    /// 6: RSI.
    Rsi = 6,
    /// 7: RDI.
    Rdi = 7,
    /// 8: R8.
    R8 = 8,
    /// 9: R9.
    R9 = 9,
    /// 10: R10.
    R10 = 10,
    /// 11: R11.
    R11 = 11,
    /// 12: R12.
    R12 = 12,
    /// 13: R13.
    R13 = 13,
    /// 14: R14.
    R14 = 14,
    /// 15: R15.
    R15 = 15,
}

impl Gpr {
    /// All sixteen registers in encoding order.
    pub const ALL: [Self; 16] = [
        Self::Rax,
        Self::Rcx,
        Self::Rdx,
        Self::Rbx,
        Self::Rsp,
        Self::Rbp,
        Self::Rsi,
        Self::Rdi,
        Self::R8,
        Self::R9,
        Self::R10,
        Self::R11,
        Self::R12,
        Self::R13,
        Self::R14,
        Self::R15,
    ];

    /// The register with encoding `index & 0xF` (the fields are 4 bits wide).
    #[must_use]
    pub const fn from_index(index: u8) -> Self {
        Self::ALL[(index & 0xF) as usize]
    }

    /// The 4-bit encoding of the register.
    #[must_use]
    pub const fn index(self) -> u8 {
        self as u8
    }
}

/// A segment register as the instruction-information field numbers it (bits 17:15): 0 = ES,
/// 1 = CS, 2 = SS, 3 = DS, 4 = FS, 5 = GS; 6 and 7 are not used (SDM Vol. 3C, 28.2.5).
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SegmentRegister {
    /// 0: ES.
    Es,
    /// 1: CS.
    Cs,
    /// 2: SS.
    Ss,
    /// 3: DS.
    Ds,
    /// 4: FS.
    Fs,
    /// 5: GS.
    Gs,
    /// 6 or 7: a value the SDM does not use, kept as data.
    Unused(u8),
}

impl SegmentRegister {
    /// Decodes a 3-bit segment-register field.
    #[must_use]
    pub const fn from_bits(bits: u8) -> Self {
        match bits {
            0 => Self::Es,
            1 => Self::Cs,
            2 => Self::Ss,
            3 => Self::Ds,
            4 => Self::Fs,
            5 => Self::Gs,
            other => Self::Unused(other),
        }
    }

    /// The encoding of this segment register.
    #[must_use]
    pub const fn bits(self) -> u8 {
        match self {
            Self::Es => 0,
            Self::Cs => 1,
            Self::Ss => 2,
            Self::Ds => 3,
            Self::Fs => 4,
            Self::Gs => 5,
            Self::Unused(other) => other,
        }
    }
}

/// The address size of a memory operand (instruction-information bits 9:7): 0 = 16-bit,
/// 1 = 32-bit, 2 = 64-bit; other values are not used (SDM Vol. 3C, 28.2.5).
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AddressSize {
    /// 0: 16-bit addressing.
    Bits16,
    /// 1: 32-bit addressing.
    Bits32,
    /// 2: 64-bit addressing.
    Bits64,
    /// A value the SDM does not use, kept as data.
    Unused(u8),
}

impl AddressSize {
    /// Decodes a 3-bit address-size field.
    #[must_use]
    pub const fn from_bits(bits: u8) -> Self {
        match bits {
            0 => Self::Bits16,
            1 => Self::Bits32,
            2 => Self::Bits64,
            other => Self::Unused(other),
        }
    }

    /// The width in bits, or `None` for an unused encoding.
    #[must_use]
    pub const fn width(self) -> Option<u8> {
        match self {
            Self::Bits16 => Some(16),
            Self::Bits32 => Some(32),
            Self::Bits64 => Some(64),
            Self::Unused(_) => None,
        }
    }
}

/// An XMM register number (0–15) as LOADIWKEY's instruction information reports it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct XmmRegister(pub u8);

impl fmt::Debug for XmmRegister {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "XMM{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpr_numbering() {
        for (i, gpr) in Gpr::ALL.iter().enumerate() {
            assert_eq!(usize::from(gpr.index()), i);
            assert_eq!(Gpr::from_index(gpr.index()), *gpr);
        }
        assert_eq!(Gpr::from_index(0), Gpr::Rax);
        assert_eq!(Gpr::from_index(4), Gpr::Rsp);
        assert_eq!(Gpr::from_index(15), Gpr::R15);
        assert_eq!(Gpr::from_index(0x13), Gpr::Rbx, "only the low 4 bits count");
    }

    #[test]
    fn segment_and_address_size_encodings() {
        for bits in 0..8 {
            assert_eq!(SegmentRegister::from_bits(bits).bits(), bits);
        }
        assert_eq!(SegmentRegister::from_bits(3), SegmentRegister::Ds);
        assert_eq!(SegmentRegister::from_bits(6), SegmentRegister::Unused(6));
        assert_eq!(AddressSize::from_bits(2).width(), Some(64));
        assert_eq!(AddressSize::from_bits(0).width(), Some(16));
        assert_eq!(AddressSize::from_bits(3), AddressSize::Unused(3));
        assert_eq!(AddressSize::from_bits(7).width(), None);
        assert_eq!(format!("{:?}", XmmRegister(7)), "XMM7");
    }
}
