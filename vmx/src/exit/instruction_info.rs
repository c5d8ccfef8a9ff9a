//! The VM-exit instruction-information field: how the instruction that caused the VM exit
//! named its operands.
//!
//! Reference: Intel® 64 and IA-32 Architectures Software Developer's Manual, Order Number
//! 325462-086US (December 2024), Volume 3C, 28.2.5 "Information for VM Exits Due to Instruction
//! Execution" (the tables "Format of the VM-Exit Instruction-Information Field as Used for INS
//! and OUTS", "… for INVEPT, INVPCID, and INVVPID", "… for LIDT, LGDT, SIDT, or SGDT", "… for
//! LLDT, LTR, SLDT, and STR", "… for LOADIWKEY", "… for RDRAND and RDSEED", "… for TPAUSE and
//! UMWAIT", "… for VMCLEAR, VMPTRLD, VMPTRST, VMXON, XRSTORS, and XSAVES" and "… for VMREAD and
//! VMWRITE").
//!
//! A memory operand's effective address is `base + index × scale + displacement`, where the
//! displacement is the exit qualification ([`crate::exit::DisplacementQualification`]).

use core::fmt;

use super::bits::{flag, u8_field};
use super::operand::{AddressSize, Gpr, SegmentRegister, XmmRegister};
use super::reason::BasicExitReason;

/// A memory operand as the instruction-information field describes it (scaling in bits 1:0,
/// address size 9:7, segment 17:15, index 21:18 with invalid bit 22, base 26:23 with invalid
/// bit 27).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MemoryOperand {
    /// The address size.
    pub address_size: AddressSize,
    /// The segment register.
    pub segment: SegmentRegister,
    /// The index register and its scale factor (1, 2, 4 or 8), if the operand has an index.
    pub index: Option<(Gpr, u8)>,
    /// The base register, if the operand has one.
    pub base: Option<Gpr>,
}

impl MemoryOperand {
    fn decode(raw: u64) -> Self {
        let index = if flag(raw, 22) {
            None
        } else {
            Some((
                Gpr::from_index(u8_field(raw, 18..22)),
                1 << u8_field(raw, 0..2),
            ))
        };
        let base = if flag(raw, 27) {
            None
        } else {
            Some(Gpr::from_index(u8_field(raw, 23..27)))
        };
        Self {
            address_size: AddressSize::from_bits(u8_field(raw, 7..10)),
            segment: SegmentRegister::from_bits(u8_field(raw, 15..18)),
            index,
            base,
        }
    }
}

/// An operand that is either a register or memory (bit 10: 0 = memory, 1 = register).
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operand {
    /// A general-purpose register (bits 6:3, "reg1").
    Register(Gpr),
    /// A memory operand.
    Memory(MemoryOperand),
}

impl Operand {
    fn decode(raw: u64) -> Self {
        if flag(raw, 10) {
            Self::Register(Gpr::from_index(u8_field(raw, 3..7)))
        } else {
            Self::Memory(MemoryOperand::decode(raw))
        }
    }
}

macro_rules! info_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash)]
        pub struct $name(pub u32);

        impl $name {
            fn raw(self) -> u64 {
                u64::from(self.0)
            }
        }
    };
}

info_type! {
    /// Instruction information for INS and OUTS (basic reason 30 with a string instruction),
    /// saved only when IA32_VMX_BASIC bit 54 is 1: the address size (bits 9:7) and, for OUTS,
    /// the segment (bits 17:15; INS always uses ES).
    InsOutsInstructionInfo
}

impl InsOutsInstructionInfo {
    /// Bits 9:7: the address size.
    #[must_use]
    pub fn address_size(self) -> AddressSize {
        AddressSize::from_bits(u8_field(self.raw(), 7..10))
    }

    /// Bits 17:15: the segment register of the source (meaningful for OUTS; undefined for INS,
    /// whose destination is always ES).
    #[must_use]
    pub fn segment(self) -> SegmentRegister {
        SegmentRegister::from_bits(u8_field(self.raw(), 15..18))
    }
}

info_type! {
    /// Instruction information for INVEPT, INVPCID and INVVPID (basic reasons 50, 58, 53): the
    /// memory operand (the descriptor) and, in bits 31:28, the register holding the type.
    InvalidationInstructionInfo
}

impl InvalidationInstructionInfo {
    /// The memory operand (the INVEPT/INVPCID/INVVPID descriptor).
    #[must_use]
    pub fn memory_operand(self) -> MemoryOperand {
        MemoryOperand::decode(self.raw())
    }

    /// Bits 31:28 ("reg2"): the register operand holding the invalidation type.
    #[must_use]
    pub fn type_register(self) -> Gpr {
        Gpr::from_index(u8_field(self.raw(), 28..32))
    }
}

/// Which descriptor-table instruction exited (bits 29:28 for LGDT, LIDT, SGDT, SIDT).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DescriptorTableInstruction {
    /// 0: SGDT.
    Sgdt,
    /// 1: SIDT.
    Sidt,
    /// 2: LGDT.
    Lgdt,
    /// 3: LIDT.
    Lidt,
}

info_type! {
    /// Instruction information for LGDT, LIDT, SGDT and SIDT (basic reason 46): the memory
    /// operand, the operand size (bit 11: 0 = 16-bit, 1 = 32-bit) and the instruction (bits
    /// 29:28).
    DescriptorTableInstructionInfo
}

impl DescriptorTableInstructionInfo {
    /// The memory operand (the pseudo-descriptor).
    #[must_use]
    pub fn memory_operand(self) -> MemoryOperand {
        MemoryOperand::decode(self.raw())
    }

    /// Bit 11: the operand size, 16 or 32 (undefined in 64-bit mode, where it is always 64).
    #[must_use]
    pub fn operand_size(self) -> u8 {
        if flag(self.raw(), 11) { 32 } else { 16 }
    }

    /// Bits 29:28: the instruction.
    #[must_use]
    pub fn instruction(self) -> DescriptorTableInstruction {
        match u8_field(self.raw(), 28..30) {
            0 => DescriptorTableInstruction::Sgdt,
            1 => DescriptorTableInstruction::Sidt,
            2 => DescriptorTableInstruction::Lgdt,
            _ => DescriptorTableInstruction::Lidt,
        }
    }
}

/// Which LDTR/TR instruction exited (bits 29:28 for LLDT, LTR, SLDT, STR).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LdtrTrInstruction {
    /// 0: SLDT.
    Sldt,
    /// 1: STR.
    Str,
    /// 2: LLDT.
    Lldt,
    /// 3: LTR.
    Ltr,
}

info_type! {
    /// Instruction information for LLDT, LTR, SLDT and STR (basic reason 47): a register or
    /// memory operand and the instruction (bits 29:28).
    LdtrTrInstructionInfo
}

impl LdtrTrInstructionInfo {
    /// The operand: a register (bits 6:3 with bit 10 = 1) or memory.
    #[must_use]
    pub fn operand(self) -> Operand {
        Operand::decode(self.raw())
    }

    /// Bits 29:28: the instruction.
    #[must_use]
    pub fn instruction(self) -> LdtrTrInstruction {
        match u8_field(self.raw(), 28..30) {
            0 => LdtrTrInstruction::Sldt,
            1 => LdtrTrInstruction::Str,
            2 => LdtrTrInstruction::Lldt,
            _ => LdtrTrInstruction::Ltr,
        }
    }
}

/// The operand size of RDRAND/RDSEED (bits 12:11).
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RdrandOperandSize {
    /// 0: 16-bit.
    Bits16,
    /// 1: 32-bit.
    Bits32,
    /// 2: 64-bit.
    Bits64,
    /// 3: not used, kept as data.
    Unused(u8),
}

info_type! {
    /// Instruction information for RDRAND and RDSEED (basic reasons 57, 61): the destination
    /// register (bits 6:3) and the operand size (bits 12:11).
    RdrandRdseedInstructionInfo
}

impl RdrandRdseedInstructionInfo {
    /// Bits 6:3: the destination register.
    #[must_use]
    pub fn destination(self) -> Gpr {
        Gpr::from_index(u8_field(self.raw(), 3..7))
    }

    /// Bits 12:11: the operand size.
    #[must_use]
    pub fn operand_size(self) -> RdrandOperandSize {
        match u8_field(self.raw(), 11..13) {
            0 => RdrandOperandSize::Bits16,
            1 => RdrandOperandSize::Bits32,
            2 => RdrandOperandSize::Bits64,
            other => RdrandOperandSize::Unused(other),
        }
    }
}

info_type! {
    /// Instruction information for TPAUSE and UMWAIT (basic reasons 68, 67): the register
    /// operand (bits 6:3) that holds the requested power state.
    WaitInstructionInfo
}

impl WaitInstructionInfo {
    /// Bits 6:3: the register operand.
    #[must_use]
    pub fn register(self) -> Gpr {
        Gpr::from_index(u8_field(self.raw(), 3..7))
    }
}

info_type! {
    /// Instruction information for LOADIWKEY (basic reason 69): its two XMM register operands
    /// (bits 6:3 and 31:28).
    LoadIwkeyInstructionInfo
}

impl LoadIwkeyInstructionInfo {
    /// Bits 6:3 ("reg1"): the first XMM operand.
    #[must_use]
    pub fn register1(self) -> XmmRegister {
        XmmRegister(u8_field(self.raw(), 3..7))
    }

    /// Bits 31:28 ("reg2"): the second XMM operand.
    #[must_use]
    pub fn register2(self) -> XmmRegister {
        XmmRegister(u8_field(self.raw(), 28..32))
    }
}

info_type! {
    /// Instruction information for VMCLEAR, VMPTRLD, VMPTRST, VMXON, XRSTORS and XSAVES (basic
    /// reasons 19, 21, 22, 27, 64, 63): their memory operand.
    VmxMemoryInstructionInfo
}

impl VmxMemoryInstructionInfo {
    /// The memory operand.
    #[must_use]
    pub fn memory_operand(self) -> MemoryOperand {
        MemoryOperand::decode(self.raw())
    }
}

info_type! {
    /// Instruction information for VMREAD and VMWRITE (basic reasons 23, 25): the VMREAD
    /// destination / VMWRITE source (register or memory) and the register holding the field
    /// encoding (bits 31:28).
    VmreadVmwriteInstructionInfo
}

impl VmreadVmwriteInstructionInfo {
    /// The VMREAD destination or VMWRITE source: a register (bits 6:3 with bit 10 = 1) or
    /// memory.
    #[must_use]
    pub fn operand(self) -> Operand {
        Operand::decode(self.raw())
    }

    /// Bits 31:28 ("reg2"): the register holding the VMCS field encoding.
    #[must_use]
    pub fn field_register(self) -> Gpr {
        Gpr::from_index(u8_field(self.raw(), 28..32))
    }
}

macro_rules! debug_via {
    ($name:ident, $($field:ident),*) => {
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($name))
                    $(.field(stringify!($field), &self.$field()))*
                    .finish()
            }
        }
    };
}

debug_via!(InsOutsInstructionInfo, address_size, segment);
debug_via!(InvalidationInstructionInfo, memory_operand, type_register);
debug_via!(
    DescriptorTableInstructionInfo,
    instruction,
    operand_size,
    memory_operand
);
debug_via!(LdtrTrInstructionInfo, instruction, operand);
debug_via!(RdrandRdseedInstructionInfo, destination, operand_size);
debug_via!(WaitInstructionInfo, register);
debug_via!(LoadIwkeyInstructionInfo, register1, register2);
debug_via!(VmxMemoryInstructionInfo, memory_operand);
debug_via!(VmreadVmwriteInstructionInfo, operand, field_register);

/// The instruction-information field decoded according to the basic exit reason.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DecodedInstructionInfo {
    /// Reason 30 (I/O instruction): meaningful only for INS/OUTS and only with
    /// IA32_VMX_BASIC bit 54.
    InsOuts(InsOutsInstructionInfo),
    /// Reasons 50, 53, 58.
    Invalidation(InvalidationInstructionInfo),
    /// Reason 46.
    DescriptorTable(DescriptorTableInstructionInfo),
    /// Reason 47.
    LdtrTr(LdtrTrInstructionInfo),
    /// Reasons 57, 61.
    RdrandRdseed(RdrandRdseedInstructionInfo),
    /// Reasons 67, 68.
    Wait(WaitInstructionInfo),
    /// Reason 69.
    LoadIwkey(LoadIwkeyInstructionInfo),
    /// Reasons 19, 21, 22, 27, 63, 64.
    VmxMemory(VmxMemoryInstructionInfo),
    /// Reasons 23, 25.
    VmreadVmwrite(VmreadVmwriteInstructionInfo),
    /// The reason does not use the instruction-information field (it is undefined).
    NotDefined,
    /// A basic reason this crate does not know; the raw field is kept.
    UnknownReason(u32),
}

/// The raw 32-bit VM-exit instruction-information field (SDM Vol. 3C, 28.2.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct InstructionInfo(pub u32);

impl InstructionInfo {
    /// Decodes `raw` as the instruction information of a VM exit with basic reason `reason`.
    #[must_use]
    pub fn decode(reason: BasicExitReason, raw: u32) -> DecodedInstructionInfo {
        use DecodedInstructionInfo as D;
        match reason {
            BasicExitReason::IO_INSTRUCTION => D::InsOuts(InsOutsInstructionInfo(raw)),
            BasicExitReason::INVEPT | BasicExitReason::INVVPID | BasicExitReason::INVPCID => {
                D::Invalidation(InvalidationInstructionInfo(raw))
            }
            BasicExitReason::GDTR_IDTR_ACCESS => {
                D::DescriptorTable(DescriptorTableInstructionInfo(raw))
            }
            BasicExitReason::LDTR_TR_ACCESS => D::LdtrTr(LdtrTrInstructionInfo(raw)),
            BasicExitReason::RDRAND | BasicExitReason::RDSEED => {
                D::RdrandRdseed(RdrandRdseedInstructionInfo(raw))
            }
            BasicExitReason::UMWAIT | BasicExitReason::TPAUSE => D::Wait(WaitInstructionInfo(raw)),
            BasicExitReason::LOADIWKEY => D::LoadIwkey(LoadIwkeyInstructionInfo(raw)),
            BasicExitReason::VMCLEAR
            | BasicExitReason::VMPTRLD
            | BasicExitReason::VMPTRST
            | BasicExitReason::VMXON
            | BasicExitReason::XSAVES
            | BasicExitReason::XRSTORS => D::VmxMemory(VmxMemoryInstructionInfo(raw)),
            BasicExitReason::VMREAD | BasicExitReason::VMWRITE => {
                D::VmreadVmwrite(VmreadVmwriteInstructionInfo(raw))
            }
            other if other.name().is_some() => D::NotDefined,
            _ => D::UnknownReason(raw),
        }
    }

    /// Decodes this raw value for `reason`; see [`InstructionInfo::decode`].
    #[must_use]
    pub fn decode_for(self, reason: BasicExitReason) -> DecodedInstructionInfo {
        Self::decode(reason, self.0)
    }
}
