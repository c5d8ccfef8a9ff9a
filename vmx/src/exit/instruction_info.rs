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
    /// Instruction information for URDMSR, UWRMSR and the immediate forms of RDMSR and WRMSRNS
    /// (basic reasons 80, 81, 84, 85): the data register (bits 6:3), the destination for reads
    /// and the source for writes. The MSR address is the exit qualification
    /// ([`crate::exit::MsrAddressQualification`]). Layout as Linux KVM documents it for reasons
    /// 84 and 85 and as Xen uses it for 81; not re-read in the SDM.
    MsrRegisterInstructionInfo
}

impl MsrRegisterInstructionInfo {
    /// Bits 6:3: the register that receives (reads) or supplies (writes) the MSR data.
    #[must_use]
    pub fn data_register(self) -> Gpr {
        Gpr::from_index(u8_field(self.raw(), 3..7))
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
debug_via!(MsrRegisterInstructionInfo, data_register);
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
    /// Reasons 80, 81, 84, 85.
    MsrRegister(MsrRegisterInstructionInfo),
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
            BasicExitReason::URDMSR
            | BasicExitReason::UWRMSR
            | BasicExitReason::RDMSR_IMMEDIATE
            | BasicExitReason::WRMSRNS_IMMEDIATE => D::MsrRegister(MsrRegisterInstructionInfo(raw)),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a memory-form instruction-information value.
    fn memory_info(
        scale_bits: u32,
        address_size: u32,
        segment: u32,
        index: Option<u32>,
        base: Option<u32>,
    ) -> u32 {
        let mut raw = scale_bits | (address_size << 7) | (segment << 15);
        raw |= match index {
            Some(i) => i << 18,
            None => 1 << 22,
        };
        raw |= match base {
            Some(b) => b << 23,
            None => 1 << 27,
        };
        raw
    }

    #[test]
    fn vmread_to_memory_with_sib() {
        // vmread [rbx + rcx*8 + disp], rdx in 64-bit mode, DS segment.
        let raw = memory_info(3, 2, 3, Some(1), Some(3)) | (2 << 28);
        let info = VmreadVmwriteInstructionInfo(raw);
        assert_eq!(
            info.operand(),
            Operand::Memory(MemoryOperand {
                address_size: AddressSize::Bits64,
                segment: SegmentRegister::Ds,
                index: Some((Gpr::Rcx, 8)),
                base: Some(Gpr::Rbx),
            })
        );
        assert_eq!(info.field_register(), Gpr::Rdx);
    }

    #[test]
    fn vmwrite_from_register() {
        // vmwrite rax (field encoding), r9 (value): reg1 = R9, bit 10 = 1, reg2 = RAX.
        let info = VmreadVmwriteInstructionInfo((9 << 3) | (1 << 10));
        assert_eq!(info.operand(), Operand::Register(Gpr::R9));
        assert_eq!(info.field_register(), Gpr::Rax);
    }

    #[test]
    fn memory_operand_without_index_or_base() {
        // vmptrld [disp32] in 32-bit mode: no index, no base, DS.
        let info = VmxMemoryInstructionInfo(memory_info(0, 1, 3, None, None));
        let op = info.memory_operand();
        assert_eq!(op.address_size, AddressSize::Bits32);
        assert_eq!(op.index, None);
        assert_eq!(op.base, None);
        // RIP-relative operands have neither index nor base either; scaling is ignored.
        let rip = VmxMemoryInstructionInfo(memory_info(2, 2, 3, None, None));
        assert_eq!(rip.memory_operand().index, None);
        // Every scale encoding.
        for (bits, factor) in [(0, 1), (1, 2), (2, 4), (3, 8)] {
            let op = VmxMemoryInstructionInfo(memory_info(bits, 2, 2, Some(15), Some(4)))
                .memory_operand();
            assert_eq!(op.index, Some((Gpr::R15, factor)));
            assert_eq!(op.base, Some(Gpr::Rsp));
            assert_eq!(op.segment, SegmentRegister::Ss);
        }
        // Unused address size and segment encodings are data.
        let odd = VmxMemoryInstructionInfo(memory_info(0, 5, 7, None, None)).memory_operand();
        assert_eq!(odd.address_size, AddressSize::Unused(5));
        assert_eq!(odd.segment, SegmentRegister::Unused(7));
    }

    #[test]
    fn invept_invpcid_invvpid() {
        // invept rax, [rdi] (64-bit): type in RAX, descriptor at [rdi].
        let info = InvalidationInstructionInfo(memory_info(0, 2, 3, None, Some(7)));
        assert_eq!(info.type_register(), Gpr::Rax);
        assert_eq!(info.memory_operand().base, Some(Gpr::Rdi));
        let info = InvalidationInstructionInfo(memory_info(0, 2, 3, None, Some(7)) | (14 << 28));
        assert_eq!(info.type_register(), Gpr::R14);
    }

    #[test]
    fn descriptor_table_instructions() {
        let cases = [
            (0, DescriptorTableInstruction::Sgdt),
            (1, DescriptorTableInstruction::Sidt),
            (2, DescriptorTableInstruction::Lgdt),
            (3, DescriptorTableInstruction::Lidt),
        ];
        for (bits, instruction) in cases {
            let raw = memory_info(0, 1, 3, None, Some(0)) | (1 << 11) | (bits << 28);
            let info = DescriptorTableInstructionInfo(raw);
            assert_eq!(info.instruction(), instruction);
            assert_eq!(info.operand_size(), 32);
            assert_eq!(info.memory_operand().base, Some(Gpr::Rax));
        }
        assert_eq!(DescriptorTableInstructionInfo(0).operand_size(), 16);
    }

    #[test]
    fn ldtr_tr_instructions() {
        // ltr ax: register form.
        let ltr = LdtrTrInstructionInfo((1 << 10) | (3 << 28));
        assert_eq!(ltr.instruction(), LdtrTrInstruction::Ltr);
        assert_eq!(ltr.operand(), Operand::Register(Gpr::Rax));
        // sldt [rbp + rsi*2]
        let sldt = LdtrTrInstructionInfo(memory_info(1, 2, 2, Some(6), Some(5)));
        assert_eq!(sldt.instruction(), LdtrTrInstruction::Sldt);
        assert!(matches!(
            sldt.operand(),
            Operand::Memory(MemoryOperand {
                index: Some((Gpr::Rsi, 2)),
                base: Some(Gpr::Rbp),
                ..
            })
        ));
        assert_eq!(
            LdtrTrInstructionInfo(1 << 28).instruction(),
            LdtrTrInstruction::Str
        );
        assert_eq!(
            LdtrTrInstructionInfo(2 << 28).instruction(),
            LdtrTrInstruction::Lldt
        );
    }

    #[test]
    fn rdrand_rdseed_wait_loadiwkey_ins_outs() {
        // rdrand r10 (64-bit).
        let rdrand = RdrandRdseedInstructionInfo((10 << 3) | (2 << 11));
        assert_eq!(rdrand.destination(), Gpr::R10);
        assert_eq!(rdrand.operand_size(), RdrandOperandSize::Bits64);
        assert_eq!(
            RdrandRdseedInstructionInfo(1 << 11).operand_size(),
            RdrandOperandSize::Bits32
        );
        assert_eq!(
            RdrandRdseedInstructionInfo(0).operand_size(),
            RdrandOperandSize::Bits16
        );
        assert_eq!(
            RdrandRdseedInstructionInfo(3 << 11).operand_size(),
            RdrandOperandSize::Unused(3)
        );
        // tpause ecx
        assert_eq!(WaitInstructionInfo(1 << 3).register(), Gpr::Rcx);
        // loadiwkey xmm1, xmm2
        let key = LoadIwkeyInstructionInfo((1 << 3) | (2 << 28));
        assert_eq!(key.register1(), XmmRegister(1));
        assert_eq!(key.register2(), XmmRegister(2));
        // rep outsb with a 32-bit address size from FS.
        let outs = InsOutsInstructionInfo((1 << 7) | (4 << 15));
        assert_eq!(outs.address_size(), AddressSize::Bits32);
        assert_eq!(outs.segment(), SegmentRegister::Fs);
    }

    #[test]
    fn decode_dispatch() {
        use DecodedInstructionInfo as D;
        assert!(matches!(
            InstructionInfo::decode(BasicExitReason::VMREAD, 0),
            D::VmreadVmwrite(_)
        ));
        assert!(matches!(
            InstructionInfo::decode(BasicExitReason::INVPCID, 0),
            D::Invalidation(_)
        ));
        assert!(matches!(
            InstructionInfo::decode(BasicExitReason::XSAVES, 0),
            D::VmxMemory(_)
        ));
        assert!(matches!(
            InstructionInfo::decode(BasicExitReason::TPAUSE, 0),
            D::Wait(_)
        ));
        assert!(matches!(
            InstructionInfo::decode(BasicExitReason::LOADIWKEY, 0),
            D::LoadIwkey(_)
        ));
        assert!(matches!(
            InstructionInfo::decode(BasicExitReason::GDTR_IDTR_ACCESS, 0),
            D::DescriptorTable(_)
        ));
        assert!(matches!(
            InstructionInfo::decode(BasicExitReason::LDTR_TR_ACCESS, 0),
            D::LdtrTr(_)
        ));
        assert!(matches!(
            InstructionInfo::decode(BasicExitReason::RDSEED, 0),
            D::RdrandRdseed(_)
        ));
        assert!(matches!(
            InstructionInfo::decode(BasicExitReason::IO_INSTRUCTION, 0),
            D::InsOuts(_)
        ));
        assert_eq!(
            InstructionInfo::decode(BasicExitReason::CPUID, 5),
            D::NotDefined
        );
        assert_eq!(
            InstructionInfo(5).decode_for(BasicExitReason(300)),
            D::UnknownReason(5)
        );
        let defined = BasicExitReason::ALL
            .iter()
            .filter(|&&r| InstructionInfo::decode(r, 0) != D::NotDefined)
            .count();
        // 30, 46, 47, 50, 53, 58, 57, 61, 67, 68, 69, 19, 21, 22, 27, 63, 64, 23, 25, 80, 81,
        // 84, 85.
        assert_eq!(defined, 23);
        // rdmsr r11, 0x1b (immediate form).
        let msr = MsrRegisterInstructionInfo(11 << 3);
        assert_eq!(msr.data_register(), Gpr::R11);
        assert_eq!(
            InstructionInfo::decode(BasicExitReason::RDMSR_IMMEDIATE, 11 << 3),
            D::MsrRegister(msr)
        );
        let dbg = format!("{:?}", VmreadVmwriteInstructionInfo((9 << 3) | (1 << 10)));
        assert!(dbg.contains("R9"), "{dbg}");
    }
}
