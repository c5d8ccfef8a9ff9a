//! Exit qualifications: the decoded forms of the 64-bit exit-qualification field for every
//! exit reason that defines one.
//!
//! Reference: Intel® 64 and IA-32 Architectures Software Developer's Manual, Order Number
//! 325462-086US (December 2024), Volume 3C: 28.2.1 "Basic VM-Exit Information" (the tables
//! "Exit Qualification for Debug Exceptions", "… for Task Switches", "… for Control-Register
//! Accesses", "… for MOV DR", "… for I/O Instructions", "… for APIC-Access VM Exits from Linear
//! Accesses and Guest-Physical Accesses" and "… for EPT Violations"), 28.2.3 "Information About
//! NMI Unblocking Due to IRET", 27.8 "VM-Entry Failures During or After Loading Guest State"
//! and 34.15.2.3 "SMM VM Exits" (I/O SMI).
//!
//! Every decoder takes the raw field and never fails: reserved and undefined bits are kept and
//! reported, unknown codes are variants that carry their value.

use core::fmt;

use bit_field::BitField;
use bitflags::bitflags;

use super::bits::{flag, u8_field, u16_field, u32_field};
use super::operand::{AddressSize, Gpr};
use super::reason::BasicExitReason;

bitflags! {
    /// Exit qualification for a #DB exception that caused a VM exit (exit reason 0 with vector
    /// 1) (SDM Vol. 3C, 28.2.1, table "Exit Qualification for Debug Exceptions"). It reports
    /// what DR6 would have received; DR6 itself is not changed by the VM exit.
    ///
    /// Bits not named here are reserved (cleared to 0); [`from_bits_retain`](Self::from_bits_retain)
    /// keeps them so nothing is lost.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct DebugExceptionQualification: u64 {
        /// Bit 0 (B0): the condition of breakpoint 0 (DR0/DR7) was met.
        const B0 = 1 << 0;
        /// Bit 1 (B1): the condition of breakpoint 1 was met.
        const B1 = 1 << 1;
        /// Bit 2 (B2): the condition of breakpoint 2 was met.
        const B2 = 1 << 2;
        /// Bit 3 (B3): the condition of breakpoint 3 was met.
        const B3 = 1 << 3;
        /// Bit 13 (BD): debug-register access detected (DR7.GD).
        const BD = 1 << 13;
        /// Bit 14 (BS): single step (RFLAGS.TF) or a branch with IA32_DEBUGCTL.BTF.
        const BS = 1 << 14;
        /// Bit 16 (RTM): the #DB or #BP occurred inside an RTM transactional region.
        const RTM = 1 << 16;
    }
}

impl DebugExceptionQualification {
    /// Decodes the raw field, keeping reserved bits.
    #[must_use]
    pub const fn decode(raw: u64) -> Self {
        Self::from_bits_retain(raw)
    }

    /// The reserved bits that were set (0 on a conforming processor).
    #[must_use]
    pub const fn reserved_bits(self) -> u64 {
        self.bits() & !Self::all().bits()
    }

    /// The breakpoints (0–3) whose conditions were met, as a 4-bit mask (bit n = Bn).
    #[must_use]
    pub fn breakpoints(self) -> u8 {
        u8_field(self.bits(), 0..4)
    }
}

/// The qualification of an exception-or-NMI exit (basic reason 0), whose meaning depends on the
/// vector in the VM-exit interruption-information field (SDM Vol. 3C, 28.2.1): a #DB fills in
/// [`DebugExceptionQualification`], a #PF the faulting linear address, everything else leaves
/// it undefined.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ExceptionQualification(pub u64);

/// An [`ExceptionQualification`] resolved with the exception vector.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExceptionDetail {
    /// Vector 1 (#DB): which debug conditions were met.
    Debug(DebugExceptionQualification),
    /// Vector 14 (#PF): the linear address that caused the page fault (what CR2 would have
    /// received; CR2 is not changed by the VM exit). Bits 63:32 are cleared outside 64-bit
    /// mode, and bits 11:0 when the fault happened in enclave mode.
    PageFault {
        /// The faulting linear address.
        linear_address: u64,
    },
    /// Any other vector (or an NMI): the field is not defined.
    NotDefined,
}

impl ExceptionQualification {
    /// Vector of the debug exception (#DB).
    pub const DEBUG_VECTOR: u8 = 1;
    /// Vector of the page fault (#PF).
    pub const PAGE_FAULT_VECTOR: u8 = 14;

    /// Resolves the qualification with the exception vector (bits 7:0 of the VM-exit
    /// interruption-information field, see [`crate::exit::ExitInterruptionInfo::vector`]).
    #[must_use]
    pub const fn for_vector(self, vector: u8) -> ExceptionDetail {
        match vector {
            Self::DEBUG_VECTOR => {
                ExceptionDetail::Debug(DebugExceptionQualification::from_bits_retain(self.0))
            }
            Self::PAGE_FAULT_VECTOR => ExceptionDetail::PageFault {
                linear_address: self.0,
            },
            _ => ExceptionDetail::NotDefined,
        }
    }
}

impl fmt::Debug for ExceptionQualification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ExceptionQualification({:#x})", self.0)
    }
}

/// Exit qualification for a start-up IPI (basic reason 4): bits 7:0 are the SIPI vector; the
/// rest is cleared (SDM Vol. 3C, 28.2.1).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SipiQualification(pub u64);

impl SipiQualification {
    /// Bits 7:0: the SIPI vector (the start page is `vector << 12`).
    #[must_use]
    pub fn vector(self) -> u8 {
        u8_field(self.0, 0..8)
    }

    /// The physical address where the processor starts: `vector × 4 KiB`.
    #[must_use]
    pub fn start_address(self) -> u64 {
        u64::from(self.vector()) << 12
    }

    /// Bits 63:8, cleared by the processor.
    #[must_use]
    pub fn reserved_bits(self) -> u64 {
        self.0 & !0xFF
    }
}

impl fmt::Debug for SipiQualification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SipiQualification")
            .field("vector", &format_args!("{:#04x}", self.vector()))
            .finish()
    }
}

/// What started a task switch (exit-qualification bits 31:30 of a task-switch exit).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TaskSwitchSource {
    /// 0: a CALL instruction.
    Call,
    /// 1: an IRET instruction.
    Iret,
    /// 2: a JMP instruction.
    Jmp,
    /// 3: a task gate in the IDT.
    TaskGateInIdt,
}

/// Exit qualification for a task switch (basic reason 9) (SDM Vol. 3C, 28.2.1, table "Exit
/// Qualification for Task Switches").
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TaskSwitchQualification(pub u64);

impl TaskSwitchQualification {
    /// Bits 15:0: the selector of the TSS to which the guest attempted to switch.
    #[must_use]
    pub fn tss_selector(self) -> u16 {
        u16_field(self.0, 0..16)
    }

    /// Bits 31:30: the source of the task switch.
    #[must_use]
    pub fn source(self) -> TaskSwitchSource {
        match self.0.get_bits(30..32) {
            0 => TaskSwitchSource::Call,
            1 => TaskSwitchSource::Iret,
            2 => TaskSwitchSource::Jmp,
            _ => TaskSwitchSource::TaskGateInIdt,
        }
    }

    /// Bits 29:16 and 63:32, reserved (cleared to 0).
    #[must_use]
    pub fn reserved_bits(self) -> u64 {
        self.0 & !0xC000_FFFF
    }
}

impl fmt::Debug for TaskSwitchQualification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskSwitchQualification")
            .field("tss_selector", &format_args!("{:#x}", self.tss_selector()))
            .field("source", &self.source())
            .finish()
    }
}

/// The qualification of the instructions that take a memory operand and report its
/// displacement: INVEPT, INVPCID, INVVPID, LGDT, LIDT, LLDT, LTR, SGDT, SIDT, SLDT, STR,
/// VMCLEAR, VMPTRLD, VMPTRST, VMREAD, VMWRITE, VMXON, XRSTORS and XSAVES (SDM Vol. 3C, 28.2.1).
///
/// The field holds the instruction's displacement sign-extended to 64 bits (0 when the
/// instruction has no displacement, e.g. a register operand). With RIP-relative addressing
/// (64-bit mode) it holds the displacement plus the RIP of the next instruction instead. Bits
/// beyond the instruction's address size are undefined: use [`masked`](Self::masked) with the
/// address size from the instruction information. The rest of the address computation is
/// described by the VM-exit instruction-information field ([`crate::exit::InstructionInfo`]).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct DisplacementQualification(pub u64);

impl DisplacementQualification {
    /// The displacement as a signed value.
    #[must_use]
    pub const fn displacement(self) -> i64 {
        i64::from_ne_bytes(self.0.to_ne_bytes())
    }

    /// The value with the bits beyond `address_size` cleared (those bits are undefined); the
    /// raw value for an unused address-size encoding.
    #[must_use]
    pub fn masked(self, address_size: AddressSize) -> u64 {
        match address_size.width() {
            Some(width) if width < 64 => self.0.get_bits(0..usize::from(width)),
            _ => self.0,
        }
    }
}

impl fmt::Debug for DisplacementQualification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DisplacementQualification({})", self.displacement())
    }
}

/// How a control register was accessed (exit-qualification bits 5:4 of a control-register
/// access).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CrAccessType {
    /// 0: MOV to CR.
    MovToCr,
    /// 1: MOV from CR.
    MovFromCr,
    /// 2: CLTS.
    Clts,
    /// 3: LMSW.
    Lmsw,
}

/// Where LMSW took its operand from (exit-qualification bit 6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LmswOperand {
    /// 0: a register.
    Register,
    /// 1: memory (the guest-linear address field holds its address).
    Memory,
}

/// Exit qualification for a control-register access (basic reason 28) (SDM Vol. 3C, 28.2.1,
/// table "Exit Qualification for Control-Register Accesses").
///
/// | Bits  | Content |
/// |-------|---------|
/// | 3:0   | number of the control register (0 for CLTS and LMSW) |
/// | 5:4   | access type: 0 MOV to CR, 1 MOV from CR, 2 CLTS, 3 LMSW |
/// | 6     | LMSW operand type: 0 register, 1 memory (0 for the others) |
/// | 11:8  | for MOV CR, the general-purpose register |
/// | 31:16 | for LMSW, the LMSW source data |
///
/// ```
/// use hvkit_vmx::exit::{ControlRegisterAccessQualification, CrAccessType, Gpr};
///
/// // mov cr3, rax
/// let q = ControlRegisterAccessQualification(0x3);
/// assert_eq!(q.control_register(), 3);
/// assert_eq!(q.access_type(), CrAccessType::MovToCr);
/// assert_eq!(q.register(), Some(Gpr::Rax));
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ControlRegisterAccessQualification(pub u64);

impl ControlRegisterAccessQualification {
    /// Bits 3:0: the control register (0, 3, 4 or 8; 0 for CLTS and LMSW).
    #[must_use]
    pub fn control_register(self) -> u8 {
        u8_field(self.0, 0..4)
    }

    /// Bits 5:4: the access type.
    #[must_use]
    pub fn access_type(self) -> CrAccessType {
        match self.0.get_bits(4..6) {
            0 => CrAccessType::MovToCr,
            1 => CrAccessType::MovFromCr,
            2 => CrAccessType::Clts,
            _ => CrAccessType::Lmsw,
        }
    }

    /// Bit 6, meaningful for LMSW only: where the operand came from.
    #[must_use]
    pub fn lmsw_operand(self) -> Option<LmswOperand> {
        match self.access_type() {
            CrAccessType::Lmsw if flag(self.0, 6) => Some(LmswOperand::Memory),
            CrAccessType::Lmsw => Some(LmswOperand::Register),
            _ => None,
        }
    }

    /// Bits 11:8 for MOV to/from CR: the general-purpose register operand; `None` for CLTS and
    /// LMSW.
    #[must_use]
    pub fn register(self) -> Option<Gpr> {
        match self.access_type() {
            CrAccessType::MovToCr | CrAccessType::MovFromCr => {
                Some(Gpr::from_index(u8_field(self.0, 8..12)))
            }
            CrAccessType::Clts | CrAccessType::Lmsw => None,
        }
    }

    /// Bits 31:16 for LMSW: the source data; `None` for the other access types.
    #[must_use]
    pub fn lmsw_source_data(self) -> Option<u16> {
        match self.access_type() {
            CrAccessType::Lmsw => Some(u16_field(self.0, 16..32)),
            _ => None,
        }
    }

    /// Bits 7, 15:12 and 63:32, reserved (cleared to 0).
    #[must_use]
    pub fn reserved_bits(self) -> u64 {
        self.0 & !0xFFFF_0F7F
    }
}

impl fmt::Debug for ControlRegisterAccessQualification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("ControlRegisterAccessQualification");
        s.field("access_type", &self.access_type());
        match self.access_type() {
            CrAccessType::MovToCr | CrAccessType::MovFromCr => {
                s.field("control_register", &self.control_register());
                s.field("register", &self.register());
            }
            CrAccessType::Clts => {}
            CrAccessType::Lmsw => {
                s.field("lmsw_operand", &self.lmsw_operand());
                s.field("lmsw_source_data", &self.lmsw_source_data());
            }
        }
        s.finish()
    }
}

/// The direction of a MOV DR (exit-qualification bit 4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MovDrDirection {
    /// 0: MOV to DR.
    ToDr,
    /// 1: MOV from DR.
    FromDr,
}

/// Exit qualification for MOV DR (basic reason 29) (SDM Vol. 3C, 28.2.1, table "Exit
/// Qualification for MOV DR"): bits 2:0 the debug register, bit 4 the direction, bits 11:8 the
/// general-purpose register.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct MovDrQualification(pub u64);

impl MovDrQualification {
    /// Bits 2:0: the debug register number (0–7).
    #[must_use]
    pub fn debug_register(self) -> u8 {
        u8_field(self.0, 0..3)
    }

    /// Bit 4: the direction of access.
    #[must_use]
    pub fn direction(self) -> MovDrDirection {
        if flag(self.0, 4) {
            MovDrDirection::FromDr
        } else {
            MovDrDirection::ToDr
        }
    }

    /// Bits 11:8: the general-purpose register operand.
    #[must_use]
    pub fn register(self) -> Gpr {
        Gpr::from_index(u8_field(self.0, 8..12))
    }

    /// Bits 3, 7:5 and 63:12, reserved (cleared to 0).
    #[must_use]
    pub fn reserved_bits(self) -> u64 {
        self.0 & !0xF17
    }
}

impl fmt::Debug for MovDrQualification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MovDrQualification")
            .field("debug_register", &self.debug_register())
            .field("direction", &self.direction())
            .field("register", &self.register())
            .finish()
    }
}

/// The size of an I/O access (exit-qualification bits 2:0): 0 = 1 byte, 1 = 2 bytes, 3 = 4
/// bytes; other values are not used.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IoAccessSize {
    /// 0: one byte.
    Byte,
    /// 1: two bytes.
    Word,
    /// 3: four bytes.
    Dword,
    /// A value the SDM does not use, kept as data.
    Unused(u8),
}

impl IoAccessSize {
    /// The number of bytes accessed, or `None` for an unused encoding.
    #[must_use]
    pub const fn bytes(self) -> Option<u8> {
        match self {
            Self::Byte => Some(1),
            Self::Word => Some(2),
            Self::Dword => Some(4),
            Self::Unused(_) => None,
        }
    }
}

/// The direction of an I/O instruction (exit-qualification bit 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IoDirection {
    /// 0: OUT (or OUTS).
    Out,
    /// 1: IN (or INS).
    In,
}

/// How an I/O instruction named its port (exit-qualification bit 6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IoPortOperand {
    /// 0: the port is in DX.
    Dx,
    /// 1: the port is an immediate operand.
    Immediate,
}

/// Exit qualification for an I/O instruction (basic reason 30, and an I/O SMI, reason 5)
/// (SDM Vol. 3C, 28.2.1, table "Exit Qualification for I/O Instructions").
///
/// | Bits  | Content |
/// |-------|---------|
/// | 2:0   | size of access: 0 1 byte, 1 2 bytes, 3 4 bytes |
/// | 3     | direction: 0 OUT, 1 IN |
/// | 4     | string instruction |
/// | 5     | REP prefixed |
/// | 6     | operand encoding: 0 DX, 1 immediate |
/// | 31:16 | port number |
///
/// ```
/// use hvkit_vmx::exit::{IoAccessSize, IoDirection, IoInstructionQualification};
///
/// // out dx, al with DX = 0x3f8
/// let q = IoInstructionQualification(0x03F8_0000);
/// assert_eq!(q.port(), 0x3F8);
/// assert_eq!(q.size(), IoAccessSize::Byte);
/// assert_eq!(q.direction(), IoDirection::Out);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct IoInstructionQualification(pub u64);

impl IoInstructionQualification {
    /// Bits 2:0: the size of the access.
    #[must_use]
    pub fn size(self) -> IoAccessSize {
        match u8_field(self.0, 0..3) {
            0 => IoAccessSize::Byte,
            1 => IoAccessSize::Word,
            3 => IoAccessSize::Dword,
            other => IoAccessSize::Unused(other),
        }
    }

    /// Bit 3: the direction.
    #[must_use]
    pub fn direction(self) -> IoDirection {
        if flag(self.0, 3) {
            IoDirection::In
        } else {
            IoDirection::Out
        }
    }

    /// Bit 4: INS or OUTS (the guest-linear address field and, with IA32_VMX_BASIC bit 54, the
    /// instruction-information field describe the memory operand).
    #[must_use]
    pub fn is_string(self) -> bool {
        flag(self.0, 4)
    }

    /// Bit 5: the instruction had a REP prefix.
    #[must_use]
    pub fn is_rep(self) -> bool {
        flag(self.0, 5)
    }

    /// Bit 6: how the port was named.
    #[must_use]
    pub fn port_operand(self) -> IoPortOperand {
        if flag(self.0, 6) {
            IoPortOperand::Immediate
        } else {
            IoPortOperand::Dx
        }
    }

    /// Bits 31:16: the port number.
    #[must_use]
    pub fn port(self) -> u16 {
        u16_field(self.0, 16..32)
    }

    /// Bits 15:7 and 63:32, reserved (cleared to 0).
    #[must_use]
    pub fn reserved_bits(self) -> u64 {
        self.0 & !0xFFFF_007F
    }
}

impl fmt::Debug for IoInstructionQualification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IoInstructionQualification")
            .field("port", &format_args!("{:#x}", self.port()))
            .field("direction", &self.direction())
            .field("size", &self.size())
            .field("string", &self.is_string())
            .field("rep", &self.is_rep())
            .field("port_operand", &self.port_operand())
            .finish()
    }
}

/// Exit qualification for MWAIT (basic reason 36): 1 if address-range monitoring hardware was
/// armed, 0 otherwise (SDM Vol. 3C, 28.2.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MwaitQualification(pub u64);

impl MwaitQualification {
    /// Bit 0: address-range monitoring hardware was armed (by MONITOR).
    #[must_use]
    pub fn monitor_armed(self) -> bool {
        flag(self.0, 0)
    }
}

/// The kind of access that caused an APIC-access VM exit (exit-qualification bits 15:12).
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ApicAccessType {
    /// 0: linear access for a data read during instruction execution.
    LinearRead,
    /// 1: linear access for a data write during instruction execution.
    LinearWrite,
    /// 2: linear access for an instruction fetch.
    LinearFetch,
    /// 3: linear access (read or write) during event delivery.
    LinearEventDelivery,
    /// 10: guest-physical access during event delivery.
    GuestPhysicalEventDelivery,
    /// 15: guest-physical access for an instruction fetch or during instruction execution.
    GuestPhysicalInstruction,
    /// Any other value, not used by the SDM; kept as data.
    Unused(u8),
}

impl ApicAccessType {
    /// Whether this was a linear access (the offset in bits 11:0 is then defined).
    #[must_use]
    pub const fn is_linear(self) -> bool {
        matches!(
            self,
            Self::LinearRead | Self::LinearWrite | Self::LinearFetch | Self::LinearEventDelivery
        )
    }
}

/// Exit qualification for an APIC-access VM exit (basic reason 44) (SDM Vol. 3C, 28.2.1, table
/// "Exit Qualification for APIC-Access VM Exits from Linear Accesses and Guest-Physical
/// Accesses").
///
/// | Bits  | Content |
/// |-------|---------|
/// | 11:0  | for a linear access, the offset of the access within the APIC page |
/// | 15:12 | access type (see [`ApicAccessType`]) |
/// | 16    | the access was asynchronous to instruction execution and not part of event delivery (e.g. Intel PT trace output) |
///
/// If the access happened during execution of an instruction in enclave mode, bits 11:0 are
/// cleared.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ApicAccessQualification(pub u64);

impl ApicAccessQualification {
    /// Bits 15:12: the access type.
    #[must_use]
    pub fn access_type(self) -> ApicAccessType {
        match u8_field(self.0, 12..16) {
            0 => ApicAccessType::LinearRead,
            1 => ApicAccessType::LinearWrite,
            2 => ApicAccessType::LinearFetch,
            3 => ApicAccessType::LinearEventDelivery,
            10 => ApicAccessType::GuestPhysicalEventDelivery,
            15 => ApicAccessType::GuestPhysicalInstruction,
            other => ApicAccessType::Unused(other),
        }
    }

    /// Bits 11:0 for a linear access: the offset within the APIC-access page; `None` for a
    /// guest-physical access, where the field is undefined.
    #[must_use]
    pub fn offset(self) -> Option<u16> {
        if self.access_type().is_linear() {
            Some(u16_field(self.0, 0..12))
        } else {
            None
        }
    }

    /// Bit 16: the access was asynchronous to instruction execution and not part of event
    /// delivery.
    #[must_use]
    pub fn asynchronous(self) -> bool {
        flag(self.0, 16)
    }

    /// Bits 63:17, reserved (cleared to 0).
    #[must_use]
    pub fn reserved_bits(self) -> u64 {
        self.0 & !0x1_FFFF
    }
}

impl fmt::Debug for ApicAccessQualification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("ApicAccessQualification");
        s.field("access_type", &self.access_type());
        if let Some(offset) = self.offset() {
            s.field("offset", &format_args!("{offset:#x}"));
        }
        if self.asynchronous() {
            s.field("asynchronous", &true);
        }
        s.finish()
    }
}

/// Whether the guest-physical access of an EPT violation was the translation of a linear
/// address or part of a guest paging-structure walk (exit-qualification bit 8, defined when
/// bit 7 is 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EptAccessKind {
    /// Bit 8 = 1: the access was to the guest-physical address that the linear address
    /// translates to.
    TranslatedLinearAddress,
    /// Bit 8 = 0: the access was to a guest paging-structure entry during translation of the
    /// linear address (or during an update of its accessed or dirty flag).
    PagingStructureAccess,
}

/// The guest paging rights of the linear address behind an EPT violation, reported only when
/// the processor supports advanced VM-exit information for EPT violations
/// (IA32_VMX_EPT_VPID_CAP bit 22) and bits 7 and 8 are both 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LinearAddressRights {
    /// Bit 9: the linear address is a user-mode address (0: supervisor-mode).
    pub user_mode: bool,
    /// Bit 10: the linear address translates to a writable page (0: read-only).
    pub writable: bool,
    /// Bit 11: the linear address translates to an execute-disable page (0: executable).
    pub execute_disable: bool,
}

/// Exit qualification for an EPT violation (basic reason 48) (SDM Vol. 3C, 28.2.1, table "Exit
/// Qualification for EPT Violations"). The guest-physical address is in its own VM-exit
/// information field, and the guest linear address too when bit 7 is set.
///
/// | Bit | Content |
/// |-----|---------|
/// | 0   | the access was a data read |
/// | 1   | the access was a data write |
/// | 2   | the access was an instruction fetch |
/// | 3   | the guest-physical address was readable (AND of bit 0 of the EPT entries walked) |
/// | 4   | … writable (AND of bit 1) |
/// | 5   | … executable (AND of bit 2; supervisor-mode executable with mode-based execute control) |
/// | 6   | … user-mode executable (AND of bit 10, with mode-based execute control; else undefined) |
/// | 7   | the guest-linear-address field is valid |
/// | 8   | if bit 7: 1 = translation of the linear address, 0 = access to a paging-structure entry |
/// | 9   | advanced information: user-mode linear address |
/// | 10  | advanced information: the linear address is writable |
/// | 11  | advanced information: the linear address is execute-disable |
/// | 12  | NMI unblocking due to IRET |
/// | 13  | the access was a shadow-stack access |
/// | 14  | with the EPTP supervisor-shadow-stack control, bit 60 of the EPT entry mapping the page |
/// | 15  | the violation was caused by guest-paging verification |
/// | 16  | the access was asynchronous to instruction execution and not event delivery (Intel PT, PEBS, user-interrupt delivery) |
///
/// ```
/// use hvkit_vmx::exit::{EptAccessKind, EptViolationQualification};
///
/// // A write to a read-only guest page-table entry while the processor walked the guest's
/// // tables (e.g. setting an accessed bit): write, readable, linear address valid, bit 8 = 0.
/// let q = EptViolationQualification(0x8A);
/// assert!(q.write() && q.readable() && !q.writable());
/// assert_eq!(q.access_kind(), Some(EptAccessKind::PagingStructureAccess));
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct EptViolationQualification(pub u64);

impl EptViolationQualification {
    /// Bit 0: the access causing the violation was a data read.
    #[must_use]
    pub fn read(self) -> bool {
        flag(self.0, 0)
    }

    /// Bit 1: the access was a data write.
    #[must_use]
    pub fn write(self) -> bool {
        flag(self.0, 1)
    }

    /// Bit 2: the access was an instruction fetch.
    #[must_use]
    pub fn instruction_fetch(self) -> bool {
        flag(self.0, 2)
    }

    /// Bit 3: the guest-physical address was readable.
    #[must_use]
    pub fn readable(self) -> bool {
        flag(self.0, 3)
    }

    /// Bit 4: the guest-physical address was writable.
    #[must_use]
    pub fn writable(self) -> bool {
        flag(self.0, 4)
    }

    /// Bit 5: the guest-physical address was executable (for supervisor-mode linear addresses
    /// when "mode-based execute control for EPT" is 1).
    #[must_use]
    pub fn executable(self) -> bool {
        flag(self.0, 5)
    }

    /// Bit 6: the guest-physical address was executable for user-mode linear addresses
    /// (defined only when "mode-based execute control for EPT" is 1).
    #[must_use]
    pub fn user_mode_executable(self) -> bool {
        flag(self.0, 6)
    }

    /// Bit 7: the guest-linear-address field is valid. It is 0 only for accesses that have no
    /// linear address, such as loading the PDPTEs on MOV to CR3 in PAE paging.
    #[must_use]
    pub fn guest_linear_address_valid(self) -> bool {
        flag(self.0, 7)
    }

    /// Bit 8, when bit 7 is 1: what the guest-physical access was; `None` when there is no
    /// linear address.
    #[must_use]
    pub fn access_kind(self) -> Option<EptAccessKind> {
        if !self.guest_linear_address_valid() {
            None
        } else if flag(self.0, 8) {
            Some(EptAccessKind::TranslatedLinearAddress)
        } else {
            Some(EptAccessKind::PagingStructureAccess)
        }
    }

    /// Bits 11:9: the guest paging rights of the linear address. Returns `None` unless
    /// `advanced_info_supported` (IA32_VMX_EPT_VPID_CAP bit 22, "advanced VM-exit information
    /// for EPT violations") is true and bits 7 and 8 are both 1; otherwise the bits are
    /// reserved or undefined.
    #[must_use]
    pub fn linear_address_rights(
        self,
        advanced_info_supported: bool,
    ) -> Option<LinearAddressRights> {
        if advanced_info_supported
            && self.access_kind() == Some(EptAccessKind::TranslatedLinearAddress)
        {
            Some(LinearAddressRights {
                user_mode: flag(self.0, 9),
                writable: flag(self.0, 10),
                execute_disable: flag(self.0, 11),
            })
        } else {
            None
        }
    }

    /// Bit 12: NMI unblocking due to IRET (SDM Vol. 3C, 28.2.3 "Information About NMI Unblocking
    /// Due to IRET"): the violation happened during an IRET that unblocked NMIs; the VMM must
    /// set blocking by NMI again before resuming if it re-executes the IRET. Undefined when
    /// "NMI exiting" = 1 with "virtual NMIs" = 0, or when the IDT-vectoring information is
    /// valid.
    #[must_use]
    pub fn nmi_unblocking_due_to_iret(self) -> bool {
        flag(self.0, 12)
    }

    /// Bit 13: the access was a shadow-stack access.
    #[must_use]
    pub fn shadow_stack_access(self) -> bool {
        flag(self.0, 13)
    }

    /// Bit 14: when the EPTP enables the supervisor-shadow-stack control (EPTP bit 7), bit 60
    /// (supervisor shadow stack) of the EPT entry that maps the page; otherwise undefined.
    #[must_use]
    pub fn supervisor_shadow_stack(self) -> bool {
        flag(self.0, 14)
    }

    /// Bit 15: the violation was caused by guest-paging verification (HLAT).
    #[must_use]
    pub fn guest_paging_verification(self) -> bool {
        flag(self.0, 15)
    }

    /// Bit 16: the access was asynchronous to instruction execution and not the result of
    /// event delivery (Intel PT trace output, PEBS records, user-interrupt delivery).
    #[must_use]
    pub fn asynchronous(self) -> bool {
        flag(self.0, 16)
    }

    /// Bits 63:17, reserved (cleared to 0).
    #[must_use]
    pub fn reserved_bits(self) -> u64 {
        self.0 & !0x1_FFFF
    }
}

impl fmt::Debug for EptViolationQualification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("EptViolationQualification");
        let access = [
            (self.read(), 'r'),
            (self.write(), 'w'),
            (self.instruction_fetch(), 'x'),
        ];
        let allowed = [
            (self.readable(), 'r'),
            (self.writable(), 'w'),
            (self.executable(), 'x'),
            (self.user_mode_executable(), 'u'),
        ];
        struct Rights<const N: usize>([(bool, char); N]);
        impl<const N: usize> fmt::Debug for Rights<N> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                for (set, c) in self.0 {
                    write!(f, "{}", if set { c } else { '-' })?;
                }
                Ok(())
            }
        }
        s.field("access", &Rights(access));
        s.field("allowed", &Rights(allowed));
        s.field("access_kind", &self.access_kind());
        for (set, name) in [
            (flag(self.0, 9), "bit9_user_mode_linear"),
            (flag(self.0, 10), "bit10_writable_linear"),
            (flag(self.0, 11), "bit11_execute_disable_linear"),
            (
                self.nmi_unblocking_due_to_iret(),
                "nmi_unblocking_due_to_iret",
            ),
            (self.shadow_stack_access(), "shadow_stack_access"),
            (self.supervisor_shadow_stack(), "supervisor_shadow_stack"),
            (
                self.guest_paging_verification(),
                "guest_paging_verification",
            ),
            (self.asynchronous(), "asynchronous"),
        ] {
            if set {
                s.field(name, &true);
            }
        }
        if self.reserved_bits() != 0 {
            s.field(
                "reserved_bits",
                &format_args!("{:#x}", self.reserved_bits()),
            );
        }
        s.finish()
    }
}

/// Exit qualification for EOI virtualization (basic reason 45): bits 7:0 are the vector of the
/// virtualized EOI (SDM Vol. 3C, 28.2.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct VirtualizedEoiQualification(pub u64);

impl VirtualizedEoiQualification {
    /// Bits 7:0: the vector whose EOI was virtualized.
    #[must_use]
    pub fn vector(self) -> u8 {
        u8_field(self.0, 0..8)
    }
}

/// Exit qualification for an APIC write (basic reason 56): bits 11:0 are the offset of the
/// write on the virtual-APIC page (SDM Vol. 3C, 28.2.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ApicWriteQualification(pub u64);

impl ApicWriteQualification {
    /// Bits 11:0: the offset of the write within the virtual-APIC page (e.g. 0x300 for the
    /// ICR low word).
    #[must_use]
    pub fn offset(self) -> u16 {
        u16_field(self.0, 0..12)
    }
}

/// Exit qualification for a page-modification-log-full event (basic reason 62) (SDM Vol. 3C,
/// 28.2.1): bit 12 is NMI unblocking due to IRET; the other bits are undefined, except that
/// bit 16 is read as marking an access asynchronous to instruction execution, as for EPT
/// violations (older SDM revisions define only bit 12, and bit 16 was not verified against
/// 325462-086US; treat it as a hint).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PmlFullQualification(pub u64);

impl PmlFullQualification {
    /// Bit 12: NMI unblocking due to IRET (SDM Vol. 3C, 28.2.3).
    #[must_use]
    pub fn nmi_unblocking_due_to_iret(self) -> bool {
        flag(self.0, 12)
    }

    /// Bit 16: the access that needed logging was asynchronous to instruction execution.
    #[must_use]
    pub fn asynchronous(self) -> bool {
        flag(self.0, 16)
    }
}

/// The kind of SPP-related event (exit-qualification bit 11).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SppEventKind {
    /// Bit 11 = 0: an SPP misconfiguration (a misconfigured sub-page-permission-table entry).
    Misconfiguration,
    /// Bit 11 = 1: an SPP miss (a sub-page-permission-table entry was not present).
    Miss,
}

/// Exit qualification for an SPP-related event (basic reason 66) (SDM Vol. 3C, 28.2.1): bit 11
/// the kind of event, bit 12 NMI unblocking due to IRET. The guest-physical address field holds
/// the address whose sub-page permissions were looked up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SppQualification(pub u64);

impl SppQualification {
    /// Bit 11: miss or misconfiguration.
    #[must_use]
    pub fn kind(self) -> SppEventKind {
        if flag(self.0, 11) {
            SppEventKind::Miss
        } else {
            SppEventKind::Misconfiguration
        }
    }

    /// Bit 12: NMI unblocking due to IRET (SDM Vol. 3C, 28.2.3).
    #[must_use]
    pub fn nmi_unblocking_due_to_iret(self) -> bool {
        flag(self.0, 12)
    }
}

/// Exit qualification for an instruction-timeout VM exit (basic reason 75, formerly "notify
/// window") (SDM Vol. 3C, 28.2.1): bit 0 VM context invalid, bit 12 NMI unblocking due to IRET.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct InstructionTimeoutQualification(pub u64);

impl InstructionTimeoutQualification {
    /// Bit 0: the VM context is invalid (corrupted guest state); the VMM must not resume the
    /// guest.
    #[must_use]
    pub fn vm_context_invalid(self) -> bool {
        flag(self.0, 0)
    }

    /// Bit 12: NMI unblocking due to IRET (SDM Vol. 3C, 28.2.3).
    #[must_use]
    pub fn nmi_unblocking_due_to_iret(self) -> bool {
        flag(self.0, 12)
    }
}

/// Exit qualification of a VM-entry failure due to invalid guest state (basic reason 33, with
/// exit-reason bit 31 set) (SDM Vol. 3C, 27.8 "VM-Entry Failures During or After Loading Guest
/// State"). An open newtype: values the SDM does not list are kept as data.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct EntryFailureQualification(pub u64);

impl EntryFailureQualification {
    /// 0: no further information (the default).
    pub const NONE: Self = Self(0);
    /// 2: loading the PDPTEs failed.
    pub const PDPTE_LOADING: Self = Self(2);
    /// 3: an attempt to inject an NMI into a guest that blocks events by STI
    /// (implementation-specific).
    pub const NMI_INJECTION_BLOCKED_BY_STI: Self = Self(3);
    /// 4: the VMCS link pointer was invalid.
    pub const INVALID_VMCS_LINK_POINTER: Self = Self(4);

    /// The constant's name, or `None` for an unlisted value (1 is listed as "not used").
    #[must_use]
    pub const fn name(self) -> Option<&'static str> {
        match self.0 {
            0 => Some("NONE"),
            2 => Some("PDPTE_LOADING"),
            3 => Some("NMI_INJECTION_BLOCKED_BY_STI"),
            4 => Some("INVALID_VMCS_LINK_POINTER"),
            _ => None,
        }
    }
}

impl fmt::Debug for EntryFailureQualification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "EntryFailureQualification::{name}"),
            None => write!(f, "EntryFailureQualification({})", self.0),
        }
    }
}

/// Exit qualification of a VM-entry failure due to MSR loading (basic reason 34, with
/// exit-reason bit 31 set): the number of the VM-entry MSR-load-area entry that failed, counting
/// from 1 (SDM Vol. 3C, 27.8).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MsrLoadFailureQualification(pub u64);

impl MsrLoadFailureQualification {
    /// The failing entry, numbered from 1.
    #[must_use]
    pub fn entry_number(self) -> u64 {
        self.0
    }

    /// The failing entry as a 0-based index into the MSR-load area, or `None` if the field is 0.
    #[must_use]
    pub fn entry_index(self) -> Option<u64> {
        self.0.checked_sub(1)
    }
}

/// Exit qualification of the MSR-list, user-MSR and immediate-form MSR instructions
/// (RDMSRLIST, WRMSRLIST, URDMSR, UWRMSR, RDMSR and WRMSRNS with an immediate; basic reasons
/// 78–81, 84, 85): the address (index) of the MSR whose access caused the VM exit.
///
/// For reasons 84 and 85 this is how Linux KVM documents the Intel interface; for 80 and 81 it
/// is what Xen relies on; for 78 and 79 it is what Bochs (an emulator maintained at Intel)
/// stores. The SDM text was not re-read for this layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MsrAddressQualification(pub u64);

impl MsrAddressQualification {
    /// Bits 31:0: the MSR address.
    #[must_use]
    pub fn msr(self) -> u32 {
        u32_field(self.0, 0..32)
    }
}

/// The exit qualification, decoded according to the basic exit reason.
///
/// ```
/// use hvkit_vmx::exit::{BasicExitReason, DecodedQualification, ExitQualification};
///
/// let decoded = ExitQualification::decode(BasicExitReason::IO_INSTRUCTION, 0x03F8_0000);
/// let DecodedQualification::IoInstruction(io) = decoded else { unreachable!() };
/// assert_eq!(io.port(), 0x3F8);
/// ```
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DecodedQualification {
    /// The reason defines no exit qualification (the field is undefined or cleared).
    None,
    /// Reason 0: resolve it with the vector ([`ExceptionQualification::for_vector`]).
    ExceptionOrNmi(ExceptionQualification),
    /// Reason 4: the SIPI vector.
    Sipi(SipiQualification),
    /// Reason 5: the I/O instruction that retired just before the SMI.
    IoSmi(IoInstructionQualification),
    /// Reason 9.
    TaskSwitch(TaskSwitchQualification),
    /// Reason 14: the linear-address operand of INVLPG.
    Invlpg {
        /// The linear address INVLPG named.
        linear_address: u64,
    },
    /// Reasons 19, 21–23, 25, 27, 46, 47, 50, 53, 58, 63 and 64: the memory operand's
    /// displacement.
    Displacement(DisplacementQualification),
    /// Reason 28.
    ControlRegisterAccess(ControlRegisterAccessQualification),
    /// Reason 29.
    MovDr(MovDrQualification),
    /// Reason 30.
    IoInstruction(IoInstructionQualification),
    /// Reason 33 (VM-entry failure).
    EntryFailureInvalidGuestState(EntryFailureQualification),
    /// Reason 34 (VM-entry failure).
    EntryFailureMsrLoading(MsrLoadFailureQualification),
    /// Reason 36.
    Mwait(MwaitQualification),
    /// Reason 44.
    ApicAccess(ApicAccessQualification),
    /// Reason 45.
    VirtualizedEoi(VirtualizedEoiQualification),
    /// Reason 48.
    EptViolation(EptViolationQualification),
    /// Reason 49: no qualification is defined; the guest-physical address that met the
    /// misconfigured entry is in the guest-physical-address VM-exit information field.
    EptMisconfiguration,
    /// Reason 56.
    ApicWrite(ApicWriteQualification),
    /// Reason 62.
    PmlFull(PmlFullQualification),
    /// Reason 66.
    SppRelatedEvent(SppQualification),
    /// Reason 75.
    InstructionTimeout(InstructionTimeoutQualification),
    /// Reasons 78–81, 84 and 85: the MSR that caused the exit.
    MsrAddress(MsrAddressQualification),
    /// A known reason whose qualification (if it has one) this crate does not decode because
    /// its layout was not verified: reasons 6 (other SMI), 72 and 73 (ENQCMD/ENQCMDS PASID
    /// translation failures). The raw field is kept.
    NotDecoded(u64),
    /// A basic reason this crate does not know; the raw field is kept.
    UnknownReason(u64),
}

/// The raw 64-bit exit-qualification field (SDM Vol. 3C, 28.2.1 "Basic VM-Exit Information").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ExitQualification(pub u64);

impl ExitQualification {
    /// Decodes `raw` as the exit qualification of a VM exit (or VM-entry failure) with basic
    /// reason `reason`. Never fails: an unknown reason yields
    /// [`DecodedQualification::UnknownReason`] with the raw value.
    #[must_use]
    pub fn decode(reason: BasicExitReason, raw: u64) -> DecodedQualification {
        use DecodedQualification as D;
        match reason {
            BasicExitReason::EXCEPTION_OR_NMI => D::ExceptionOrNmi(ExceptionQualification(raw)),
            BasicExitReason::SIPI => D::Sipi(SipiQualification(raw)),
            BasicExitReason::IO_SMI => D::IoSmi(IoInstructionQualification(raw)),
            BasicExitReason::TASK_SWITCH => D::TaskSwitch(TaskSwitchQualification(raw)),
            BasicExitReason::INVLPG => D::Invlpg {
                linear_address: raw,
            },
            BasicExitReason::VMCLEAR
            | BasicExitReason::VMPTRLD
            | BasicExitReason::VMPTRST
            | BasicExitReason::VMREAD
            | BasicExitReason::VMWRITE
            | BasicExitReason::VMXON
            | BasicExitReason::GDTR_IDTR_ACCESS
            | BasicExitReason::LDTR_TR_ACCESS
            | BasicExitReason::INVEPT
            | BasicExitReason::INVVPID
            | BasicExitReason::INVPCID
            | BasicExitReason::XSAVES
            | BasicExitReason::XRSTORS => D::Displacement(DisplacementQualification(raw)),
            BasicExitReason::CONTROL_REGISTER_ACCESS => {
                D::ControlRegisterAccess(ControlRegisterAccessQualification(raw))
            }
            BasicExitReason::MOV_DR => D::MovDr(MovDrQualification(raw)),
            BasicExitReason::IO_INSTRUCTION => D::IoInstruction(IoInstructionQualification(raw)),
            BasicExitReason::ENTRY_FAILURE_INVALID_GUEST_STATE => {
                D::EntryFailureInvalidGuestState(EntryFailureQualification(raw))
            }
            BasicExitReason::ENTRY_FAILURE_MSR_LOADING => {
                D::EntryFailureMsrLoading(MsrLoadFailureQualification(raw))
            }
            BasicExitReason::MWAIT => D::Mwait(MwaitQualification(raw)),
            BasicExitReason::APIC_ACCESS => D::ApicAccess(ApicAccessQualification(raw)),
            BasicExitReason::VIRTUALIZED_EOI => D::VirtualizedEoi(VirtualizedEoiQualification(raw)),
            BasicExitReason::EPT_VIOLATION => D::EptViolation(EptViolationQualification(raw)),
            BasicExitReason::EPT_MISCONFIGURATION => D::EptMisconfiguration,
            BasicExitReason::APIC_WRITE => D::ApicWrite(ApicWriteQualification(raw)),
            BasicExitReason::PML_FULL => D::PmlFull(PmlFullQualification(raw)),
            BasicExitReason::SPP_RELATED_EVENT => D::SppRelatedEvent(SppQualification(raw)),
            BasicExitReason::INSTRUCTION_TIMEOUT => {
                D::InstructionTimeout(InstructionTimeoutQualification(raw))
            }
            BasicExitReason::RDMSRLIST
            | BasicExitReason::WRMSRLIST
            | BasicExitReason::URDMSR
            | BasicExitReason::UWRMSR
            | BasicExitReason::RDMSR_IMMEDIATE
            | BasicExitReason::WRMSRNS_IMMEDIATE => D::MsrAddress(MsrAddressQualification(raw)),
            BasicExitReason::OTHER_SMI
            | BasicExitReason::ENQCMD_PASID_TRANSLATION_FAILURE
            | BasicExitReason::ENQCMDS_PASID_TRANSLATION_FAILURE => D::NotDecoded(raw),
            other if other.name().is_some() => D::None,
            _ => D::UnknownReason(raw),
        }
    }

    /// Decodes this raw value for `reason`; see [`ExitQualification::decode`].
    #[must_use]
    pub fn decode_for(self, reason: BasicExitReason) -> DecodedQualification {
        Self::decode(reason, self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_exception_single_step_breakpoints_bd_and_rtm() {
        // Single step: DR6.BS.
        let bs = DebugExceptionQualification::decode(0x4000);
        assert_eq!(bs, DebugExceptionQualification::BS);
        assert_eq!(bs.breakpoints(), 0);
        // Breakpoint 1 hit and a general-detect (BD) condition.
        let b1_bd = DebugExceptionQualification::decode(0x2002);
        assert!(b1_bd.contains(DebugExceptionQualification::B1 | DebugExceptionQualification::BD));
        assert!(!b1_bd.contains(DebugExceptionQualification::B0));
        assert_eq!(b1_bd.breakpoints(), 0b0010);
        // All four breakpoints plus RTM.
        let all = DebugExceptionQualification::decode(0x1_000F);
        assert_eq!(all.breakpoints(), 0xF);
        assert!(all.contains(DebugExceptionQualification::RTM));
        assert_eq!(all.reserved_bits(), 0);
        // Reserved bits survive decoding.
        let odd = DebugExceptionQualification::decode(0x8000 | 0x10 | 0x1);
        assert_eq!(odd.reserved_bits(), 0x8010);
        assert!(odd.contains(DebugExceptionQualification::B0));
    }

    #[test]
    fn exception_qualification_needs_the_vector() {
        let q = ExceptionQualification(0xFFFF_8000_DEAD_B000);
        assert_eq!(
            q.for_vector(14),
            ExceptionDetail::PageFault {
                linear_address: 0xFFFF_8000_DEAD_B000
            }
        );
        assert_eq!(
            ExceptionQualification(0x4000).for_vector(1),
            ExceptionDetail::Debug(DebugExceptionQualification::BS)
        );
        assert_eq!(q.for_vector(13), ExceptionDetail::NotDefined);
        assert_eq!(q.for_vector(2), ExceptionDetail::NotDefined);
        assert_eq!(
            ExitQualification::decode(BasicExitReason::EXCEPTION_OR_NMI, 0x1234),
            DecodedQualification::ExceptionOrNmi(ExceptionQualification(0x1234))
        );
    }

    #[test]
    fn sipi_vector() {
        let q = SipiQualification(0x9A);
        assert_eq!(q.vector(), 0x9A);
        assert_eq!(q.start_address(), 0x9_A000);
        assert_eq!(q.reserved_bits(), 0);
        assert_eq!(SipiQualification(0x1FF).reserved_bits(), 0x100);
        assert_eq!(SipiQualification(0x1FF).vector(), 0xFF);
    }

    #[test]
    fn task_switch_every_source() {
        // A task gate in the IDT to selector 0x28.
        let gate = TaskSwitchQualification(0xC000_0028);
        assert_eq!(gate.tss_selector(), 0x28);
        assert_eq!(gate.source(), TaskSwitchSource::TaskGateInIdt);
        assert_eq!(gate.reserved_bits(), 0);
        assert_eq!(
            TaskSwitchQualification(0x0000_0030).source(),
            TaskSwitchSource::Call
        );
        assert_eq!(
            TaskSwitchQualification(0x4000_0030).source(),
            TaskSwitchSource::Iret
        );
        assert_eq!(
            TaskSwitchQualification(0x8000_FFF8).source(),
            TaskSwitchSource::Jmp
        );
        assert_eq!(TaskSwitchQualification(0x8000_FFF8).tss_selector(), 0xFFF8);
        assert_eq!(
            TaskSwitchQualification(0x1_0001_0000).reserved_bits(),
            0x1_0001_0000
        );
    }

    #[test]
    fn displacement_is_sign_extended() {
        assert_eq!(DisplacementQualification(0x10).displacement(), 16);
        assert_eq!(DisplacementQualification(u64::MAX - 7).displacement(), -8);
        assert_eq!(DisplacementQualification(0).displacement(), 0);
        let wide = DisplacementQualification(0xFFFF_FFFF_FFFF_FFF8);
        assert_eq!(wide.masked(AddressSize::Bits16), 0xFFF8);
        assert_eq!(wide.masked(AddressSize::Bits32), 0xFFFF_FFF8);
        assert_eq!(wide.masked(AddressSize::Bits64), 0xFFFF_FFFF_FFFF_FFF8);
        assert_eq!(wide.masked(AddressSize::Unused(3)), 0xFFFF_FFFF_FFFF_FFF8);
        for reason in [
            BasicExitReason::VMCLEAR,
            BasicExitReason::VMPTRLD,
            BasicExitReason::VMPTRST,
            BasicExitReason::VMREAD,
            BasicExitReason::VMWRITE,
            BasicExitReason::VMXON,
            BasicExitReason::GDTR_IDTR_ACCESS,
            BasicExitReason::LDTR_TR_ACCESS,
            BasicExitReason::INVEPT,
            BasicExitReason::INVVPID,
            BasicExitReason::INVPCID,
            BasicExitReason::XSAVES,
            BasicExitReason::XRSTORS,
        ] {
            assert_eq!(
                ExitQualification::decode(reason, 0xFFFF_FFFF_FFFF_FFF0),
                DecodedQualification::Displacement(DisplacementQualification(
                    0xFFFF_FFFF_FFFF_FFF0
                )),
                "{reason:?}"
            );
        }
        assert_eq!(
            ExitQualification::decode(BasicExitReason::INVLPG, 0x7FFF_1000),
            DecodedQualification::Invlpg {
                linear_address: 0x7FFF_1000
            }
        );
    }

    #[test]
    fn control_register_accesses() {
        // mov cr3, rax
        let mov_to_cr3 = ControlRegisterAccessQualification(0x3);
        assert_eq!(mov_to_cr3.control_register(), 3);
        assert_eq!(mov_to_cr3.access_type(), CrAccessType::MovToCr);
        assert_eq!(mov_to_cr3.register(), Some(Gpr::Rax));
        assert_eq!(mov_to_cr3.lmsw_operand(), None);
        assert_eq!(mov_to_cr3.lmsw_source_data(), None);
        // mov rbx, cr4: CR 4, type 1, GPR 3.
        let mov_from_cr4 = ControlRegisterAccessQualification(0x314);
        assert_eq!(mov_from_cr4.control_register(), 4);
        assert_eq!(mov_from_cr4.access_type(), CrAccessType::MovFromCr);
        assert_eq!(mov_from_cr4.register(), Some(Gpr::Rbx));
        // mov cr8, r15
        let mov_to_cr8 = ControlRegisterAccessQualification(0xF08);
        assert_eq!(mov_to_cr8.control_register(), 8);
        assert_eq!(mov_to_cr8.register(), Some(Gpr::R15));
        // clts
        let clts = ControlRegisterAccessQualification(0x20);
        assert_eq!(clts.access_type(), CrAccessType::Clts);
        assert_eq!(clts.register(), None);
        assert_eq!(clts.control_register(), 0);
        // lmsw word [mem] with source data 0x0001 (set PE).
        let lmsw = ControlRegisterAccessQualification(0x1_0070);
        assert_eq!(lmsw.access_type(), CrAccessType::Lmsw);
        assert_eq!(lmsw.lmsw_operand(), Some(LmswOperand::Memory));
        assert_eq!(lmsw.lmsw_source_data(), Some(1));
        assert_eq!(lmsw.register(), None);
        // lmsw ax with 0xFFFF
        let lmsw_reg = ControlRegisterAccessQualification(0xFFFF_0030);
        assert_eq!(lmsw_reg.lmsw_operand(), Some(LmswOperand::Register));
        assert_eq!(lmsw_reg.lmsw_source_data(), Some(0xFFFF));
        assert_eq!(lmsw_reg.reserved_bits(), 0);
        assert_eq!(
            ControlRegisterAccessQualification(0x1_0000_F083).reserved_bits(),
            0x1_0000_F080
        );
        let dbg = format!("{mov_from_cr4:?}");
        assert!(dbg.contains("MovFromCr") && dbg.contains("Rbx"), "{dbg}");
    }

    #[test]
    fn mov_dr() {
        // mov dr7, rcx
        let to_dr7 = MovDrQualification(0x107);
        assert_eq!(to_dr7.debug_register(), 7);
        assert_eq!(to_dr7.direction(), MovDrDirection::ToDr);
        assert_eq!(to_dr7.register(), Gpr::Rcx);
        assert_eq!(to_dr7.reserved_bits(), 0);
        // mov rdx, dr6
        let from_dr6 = MovDrQualification(0x216);
        assert_eq!(from_dr6.debug_register(), 6);
        assert_eq!(from_dr6.direction(), MovDrDirection::FromDr);
        assert_eq!(from_dr6.register(), Gpr::Rdx);
        // mov r12, dr0
        let from_dr0 = MovDrQualification(0xC10);
        assert_eq!(from_dr0.debug_register(), 0);
        assert_eq!(from_dr0.register(), Gpr::R12);
        assert_eq!(MovDrQualification(0x10E8).reserved_bits(), 0x10E8);
    }

    #[test]
    fn io_instructions() {
        // out dx, al with DX = 0x3f8 (COM1).
        let out = IoInstructionQualification(0x03F8_0000);
        assert_eq!(out.port(), 0x3F8);
        assert_eq!(out.size(), IoAccessSize::Byte);
        assert_eq!(out.size().bytes(), Some(1));
        assert_eq!(out.direction(), IoDirection::Out);
        assert!(!out.is_string() && !out.is_rep());
        assert_eq!(out.port_operand(), IoPortOperand::Dx);
        assert_eq!(out.reserved_bits(), 0);
        // in eax, 0x60
        let inb = IoInstructionQualification(0x0060_004B);
        assert_eq!(inb.port(), 0x60);
        assert_eq!(inb.size(), IoAccessSize::Dword);
        assert_eq!(inb.direction(), IoDirection::In);
        assert_eq!(inb.port_operand(), IoPortOperand::Immediate);
        // rep outsw to port 0x1F0.
        let rep_outs = IoInstructionQualification(0x01F0_0031);
        assert_eq!(rep_outs.size(), IoAccessSize::Word);
        assert!(rep_outs.is_string() && rep_outs.is_rep());
        assert_eq!(rep_outs.direction(), IoDirection::Out);
        // The unused size encoding 2 is data.
        assert_eq!(
            IoInstructionQualification(2).size(),
            IoAccessSize::Unused(2)
        );
        assert_eq!(IoInstructionQualification(2).size().bytes(), None);
        assert_eq!(IoInstructionQualification(0xFFFF).port(), 0);
        assert_eq!(IoInstructionQualification(0xFF80).reserved_bits(), 0xFF80);
        // An I/O SMI reuses the layout.
        assert_eq!(
            ExitQualification::decode(BasicExitReason::IO_SMI, 0x03F8_0000),
            DecodedQualification::IoSmi(out)
        );
    }

    #[test]
    fn mwait_armed() {
        assert!(MwaitQualification(1).monitor_armed());
        assert!(!MwaitQualification(0).monitor_armed());
    }

    #[test]
    fn apic_access_every_type() {
        // A linear write to the EOI register (offset 0xB0).
        let eoi_write = ApicAccessQualification(0x10B0);
        assert_eq!(eoi_write.access_type(), ApicAccessType::LinearWrite);
        assert_eq!(eoi_write.offset(), Some(0xB0));
        assert!(!eoi_write.asynchronous());
        assert_eq!(eoi_write.reserved_bits(), 0);
        let cases = [
            (0x0300, ApicAccessType::LinearRead, Some(0x300)),
            (0x2FF0, ApicAccessType::LinearFetch, Some(0xFF0)),
            (0x3020, ApicAccessType::LinearEventDelivery, Some(0x20)),
            (0xA123, ApicAccessType::GuestPhysicalEventDelivery, None),
            (0xF000, ApicAccessType::GuestPhysicalInstruction, None),
            (0x5000, ApicAccessType::Unused(5), None),
        ];
        for (raw, kind, offset) in cases {
            let q = ApicAccessQualification(raw);
            assert_eq!(q.access_type(), kind, "{raw:#x}");
            assert_eq!(q.offset(), offset, "{raw:#x}");
        }
        // Guest-physical access from Intel PT output: asynchronous.
        let pt = ApicAccessQualification(0x1_F000);
        assert!(pt.asynchronous());
        assert_eq!(pt.access_type(), ApicAccessType::GuestPhysicalInstruction);
        assert_eq!(ApicAccessQualification(0x2_0000).reserved_bits(), 0x2_0000);
    }

    #[test]
    fn ept_violation_write_to_read_only_page_during_guest_table_walk() {
        // Write access; readable but not writable or executable; linear address valid; bit 8 = 0:
        // the access was to a guest paging-structure entry (e.g. setting an A/D bit).
        let q = EptViolationQualification(0x8A);
        assert!(!q.read() && q.write() && !q.instruction_fetch());
        assert!(q.readable() && !q.writable() && !q.executable() && !q.user_mode_executable());
        assert!(q.guest_linear_address_valid());
        assert_eq!(q.access_kind(), Some(EptAccessKind::PagingStructureAccess));
        assert_eq!(
            q.linear_address_rights(true),
            None,
            "bit 8 = 0: no advanced info"
        );
        assert!(!q.nmi_unblocking_due_to_iret());
        assert_eq!(q.reserved_bits(), 0);
    }

    type Accessor = fn(EptViolationQualification) -> bool;

    #[test]
    fn ept_violation_every_bit() {
        // Instruction fetch from a non-present GPA by user code, with advanced information:
        // bits 2, 7, 8, 9 (user), 11 (XD).
        let fetch = EptViolationQualification(0xB84);
        assert!(fetch.instruction_fetch());
        assert!(!fetch.readable() && !fetch.writable() && !fetch.executable());
        assert_eq!(
            fetch.access_kind(),
            Some(EptAccessKind::TranslatedLinearAddress)
        );
        assert_eq!(
            fetch.linear_address_rights(true),
            Some(LinearAddressRights {
                user_mode: true,
                writable: false,
                execute_disable: true,
            })
        );
        assert_eq!(fetch.linear_address_rights(false), None);
        // No linear address (PDPTE load on MOV to CR3): bit 7 clear, a read.
        let pdpte = EptViolationQualification(0x1);
        assert!(pdpte.read());
        assert!(!pdpte.guest_linear_address_valid());
        assert_eq!(pdpte.access_kind(), None);
        assert_eq!(pdpte.linear_address_rights(true), None);

        let single_bits: [(u32, Accessor); 14] = [
            (0, EptViolationQualification::read),
            (1, EptViolationQualification::write),
            (2, EptViolationQualification::instruction_fetch),
            (3, EptViolationQualification::readable),
            (4, EptViolationQualification::writable),
            (5, EptViolationQualification::executable),
            (6, EptViolationQualification::user_mode_executable),
            (7, EptViolationQualification::guest_linear_address_valid),
            (12, EptViolationQualification::nmi_unblocking_due_to_iret),
            (13, EptViolationQualification::shadow_stack_access),
            (14, EptViolationQualification::supervisor_shadow_stack),
            (15, EptViolationQualification::guest_paging_verification),
            (16, EptViolationQualification::asynchronous),
            (8, |q| q.0 & (1 << 8) != 0),
        ];
        for (bit, accessor) in single_bits {
            let q = EptViolationQualification(1 << bit);
            assert!(accessor(q), "bit {bit}");
            for (other, other_accessor) in single_bits {
                if other != bit {
                    assert!(!other_accessor(q), "bit {bit} read as bit {other}");
                }
            }
            assert_eq!(q.reserved_bits(), 0);
        }
        // Advanced rights bits 9-11 each alone (with bits 7 and 8).
        let rw = EptViolationQualification(0x180 | (1 << 10));
        assert_eq!(
            rw.linear_address_rights(true),
            Some(LinearAddressRights {
                user_mode: false,
                writable: true,
                execute_disable: false,
            })
        );
        assert_eq!(EptViolationQualification(1 << 17).reserved_bits(), 1 << 17);
        // Shadow-stack write by the supervisor to a supervisor-shadow-stack page with NMI
        // unblocking: bits 1, 7, 8, 12, 13, 14.
        let sss = EptViolationQualification(0x7182);
        assert!(sss.write() && sss.shadow_stack_access() && sss.supervisor_shadow_stack());
        assert!(sss.nmi_unblocking_due_to_iret());
        let dbg = format!("{sss:?}");
        assert!(
            dbg.contains("-w-") && dbg.contains("shadow_stack_access"),
            "{dbg}"
        );
    }

    #[test]
    fn eoi_apic_write_pml_spp_timeout() {
        assert_eq!(VirtualizedEoiQualification(0x30).vector(), 0x30);
        assert_eq!(VirtualizedEoiQualification(0x1FF).vector(), 0xFF);
        assert_eq!(ApicWriteQualification(0x300).offset(), 0x300);
        assert_eq!(ApicWriteQualification(0x1_0FF0).offset(), 0xFF0);

        assert!(PmlFullQualification(0x1000).nmi_unblocking_due_to_iret());
        assert!(!PmlFullQualification(0x1000).asynchronous());
        assert!(PmlFullQualification(0x1_0000).asynchronous());

        assert_eq!(SppQualification(0x800).kind(), SppEventKind::Miss);
        assert_eq!(SppQualification(0).kind(), SppEventKind::Misconfiguration);
        assert!(SppQualification(0x1800).nmi_unblocking_due_to_iret());
        assert!(!SppQualification(0x800).nmi_unblocking_due_to_iret());

        assert!(InstructionTimeoutQualification(1).vm_context_invalid());
        assert!(!InstructionTimeoutQualification(0x1000).vm_context_invalid());
        assert!(InstructionTimeoutQualification(0x1000).nmi_unblocking_due_to_iret());
    }

    #[test]
    fn entry_failures_and_msr_addresses() {
        assert_eq!(
            ExitQualification::decode(BasicExitReason::ENTRY_FAILURE_INVALID_GUEST_STATE, 2),
            DecodedQualification::EntryFailureInvalidGuestState(
                EntryFailureQualification::PDPTE_LOADING
            )
        );
        assert_eq!(
            format!("{:?}", EntryFailureQualification(4)),
            "EntryFailureQualification::INVALID_VMCS_LINK_POINTER"
        );
        assert_eq!(EntryFailureQualification(1).name(), None);
        assert_eq!(
            format!("{:?}", EntryFailureQualification(9)),
            "EntryFailureQualification(9)"
        );
        assert_eq!(EntryFailureQualification::NMI_INJECTION_BLOCKED_BY_STI.0, 3);

        let msr = MsrLoadFailureQualification(3);
        assert_eq!(msr.entry_number(), 3);
        assert_eq!(msr.entry_index(), Some(2));
        assert_eq!(MsrLoadFailureQualification(0).entry_index(), None);

        assert_eq!(MsrAddressQualification(0xC000_0080).msr(), 0xC000_0080);
        assert_eq!(
            ExitQualification::decode(BasicExitReason::WRMSRLIST, 0x1B),
            DecodedQualification::MsrAddress(MsrAddressQualification(0x1B))
        );
    }

    #[test]
    fn decode_dispatches_every_known_reason_and_keeps_unknown_ones() {
        for &reason in BasicExitReason::ALL {
            let decoded = ExitQualification::decode(reason, 0x1234);
            assert!(
                !matches!(decoded, DecodedQualification::UnknownReason(_)),
                "{reason:?} decoded as unknown"
            );
        }
        let with_qualification = BasicExitReason::ALL
            .iter()
            .filter(|&&r| ExitQualification::decode(r, 0) != DecodedQualification::None)
            .count();
        // 0, 4, 5, 9, 14, 13 displacement reasons, 28, 29, 30, 33, 34, 36, 44, 45, 48, 49, 56,
        // 62, 66, 75, 78–81, 84 and 85, plus the three kept raw (6, 72, 73).
        assert_eq!(with_qualification, 41);
        assert_eq!(
            ExitQualification::decode(BasicExitReason::ENQCMD_PASID_TRANSLATION_FAILURE, 9),
            DecodedQualification::NotDecoded(9)
        );
        for reason in [
            BasicExitReason::CPUID,
            BasicExitReason::HLT,
            BasicExitReason::EXTERNAL_INTERRUPT,
            BasicExitReason::TRIPLE_FAULT,
            BasicExitReason::PREEMPTION_TIMER_EXPIRED,
            BasicExitReason::VMCALL,
            BasicExitReason::XSETBV,
        ] {
            assert_eq!(
                ExitQualification::decode(reason, 7),
                DecodedQualification::None
            );
        }
        assert_eq!(
            ExitQualification::decode(BasicExitReason::EPT_MISCONFIGURATION, 0xFFFF),
            DecodedQualification::EptMisconfiguration
        );
        assert_eq!(
            ExitQualification(0xABCD).decode_for(BasicExitReason(71)),
            DecodedQualification::UnknownReason(0xABCD)
        );
        assert_eq!(
            ExitQualification::decode(BasicExitReason(500), u64::MAX),
            DecodedQualification::UnknownReason(u64::MAX)
        );
        let DecodedQualification::EptViolation(ept) =
            ExitQualification::decode(BasicExitReason::EPT_VIOLATION, 0x8A)
        else {
            unreachable!("reason 48 decodes as an EPT violation");
        };
        assert!(ept.write());
    }
}
