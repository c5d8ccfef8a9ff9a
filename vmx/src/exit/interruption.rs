//! Interruption information: the VM-exit interruption-information field, the IDT-vectoring
//! information field, and the VM-entry interruption-information field with a checked builder
//! for event injection.
//!
//! Reference: Intel® 64 and IA-32 Architectures Software Developer's Manual, Order Number
//! 325462-086US (December 2024), Volume 3C: 25.8.3 "VM-Entry Controls for Event Injection"
//! (table "Format of the VM-Entry Interruption-Information Field"), 25.9.2 "Information for VM
//! Exits Due to Vectored Events" (table "Format of the VM-Exit Interruption-Information
//! Field"), 25.9.3 "Information for VM Exits That Occur During Event Delivery" (table "Format of
//! the IDT-Vectoring Information Field"), 28.2.2 "Information for VM Exits Due to Vectored
//! Events", 28.2.3 "Information About NMI Unblocking Due to IRET", 28.2.4 "Information for VM
//! Exits That Occur During Event Delivery" and 27.2.1.3 "Checks on VM-Entry Control Fields"
//! (event injection).

use core::fmt;

use super::bits::{flag, u8_field, u32_field};

/// The interruption type (bits 10:8 of the three interruption-information fields).
///
/// Not every field uses every type: the VM-exit interruption information reports 0, 2, 3, 5
/// and 6; IDT-vectoring information also 4; VM-entry injection accepts all but 1 (7 only with
/// the monitor trap flag).
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum InterruptionType {
    /// 0: external interrupt.
    ExternalInterrupt,
    /// 2: non-maskable interrupt (NMI).
    Nmi,
    /// 3: hardware exception (every exception except #BP and #OF raised by INT3/INTO, and
    /// #DB raised by INT1).
    HardwareException,
    /// 4: software interrupt (INT n).
    SoftwareInterrupt,
    /// 5: privileged software exception (#DB raised by INT1).
    PrivilegedSoftwareException,
    /// 6: software exception (#BP raised by INT3, #OF raised by INTO).
    SoftwareException,
    /// 7: other event; in VM-entry injection with vector 0, a pending MTF VM exit.
    OtherEvent,
    /// 1: not used (reserved), kept as data.
    Reserved(u8),
}

impl InterruptionType {
    /// Decodes a 3-bit type field.
    #[must_use]
    pub const fn from_bits(bits: u8) -> Self {
        match bits & 7 {
            0 => Self::ExternalInterrupt,
            2 => Self::Nmi,
            3 => Self::HardwareException,
            4 => Self::SoftwareInterrupt,
            5 => Self::PrivilegedSoftwareException,
            6 => Self::SoftwareException,
            7 => Self::OtherEvent,
            other => Self::Reserved(other),
        }
    }

    /// The 3-bit encoding.
    #[must_use]
    pub const fn bits(self) -> u8 {
        match self {
            Self::ExternalInterrupt => 0,
            Self::Nmi => 2,
            Self::HardwareException => 3,
            Self::SoftwareInterrupt => 4,
            Self::PrivilegedSoftwareException => 5,
            Self::SoftwareException => 6,
            Self::OtherEvent => 7,
            Self::Reserved(bits) => bits & 7,
        }
    }

    /// Whether VM entry takes an instruction length with this type (software interrupts and
    /// both kinds of software exception).
    #[must_use]
    pub const fn uses_instruction_length(self) -> bool {
        matches!(
            self,
            Self::SoftwareInterrupt | Self::PrivilegedSoftwareException | Self::SoftwareException
        )
    }
}

/// The VM-exit interruption-information field (SDM Vol. 3C, 25.9.2 "Information for VM Exits
/// Due to Vectored Events", and 28.2.2): valid after exits due to exceptions, NMIs and (with
/// "acknowledge interrupt on exit") external interrupts.
///
/// | Bits  | Content |
/// |-------|---------|
/// | 7:0   | vector |
/// | 10:8  | interruption type |
/// | 11    | error code valid (the VM-exit interruption error code field holds it) |
/// | 12    | NMI unblocking due to IRET |
/// | 30:13 | not used (cleared to 0) |
/// | 31    | valid |
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ExitInterruptionInfo(pub u32);

impl ExitInterruptionInfo {
    /// Bits 7:0: the vector.
    #[must_use]
    pub fn vector(self) -> u8 {
        u8_field(u64::from(self.0), 0..8)
    }

    /// Bits 10:8: the interruption type.
    #[must_use]
    pub fn interruption_type(self) -> InterruptionType {
        InterruptionType::from_bits(u8_field(u64::from(self.0), 8..11))
    }

    /// Bit 11: the VM-exit interruption error code field is valid.
    #[must_use]
    pub fn error_code_valid(self) -> bool {
        flag(u64::from(self.0), 11)
    }

    /// Bit 12: NMI unblocking due to IRET (SDM Vol. 3C, 28.2.3).
    #[must_use]
    pub fn nmi_unblocking_due_to_iret(self) -> bool {
        flag(u64::from(self.0), 12)
    }

    /// Bit 31: the field is valid.
    #[must_use]
    pub fn is_valid(self) -> bool {
        flag(u64::from(self.0), 31)
    }

    /// Bits 30:13 (cleared to 0 by the processor).
    #[must_use]
    pub fn reserved_bits(self) -> u32 {
        u32_field(u64::from(self.0), 13..31) << 13
    }
}

impl fmt::Debug for ExitInterruptionInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.is_valid() {
            return write!(f, "ExitInterruptionInfo(invalid, {:#x})", self.0);
        }
        f.debug_struct("ExitInterruptionInfo")
            .field("vector", &self.vector())
            .field("type", &self.interruption_type())
            .field("error_code_valid", &self.error_code_valid())
            .field(
                "nmi_unblocking_due_to_iret",
                &self.nmi_unblocking_due_to_iret(),
            )
            .finish()
    }
}

/// The IDT-vectoring information field (SDM Vol. 3C, 25.9.3 "Information for VM Exits That
/// Occur During Event Delivery", and 28.2.4): valid when the VM exit interrupted the delivery
/// of an event, which the VMM usually re-injects.
///
/// | Bits  | Content |
/// |-------|---------|
/// | 7:0   | vector |
/// | 10:8  | interruption type |
/// | 11    | error code valid (the IDT-vectoring error code field holds it) |
/// | 12    | undefined |
/// | 30:13 | not used (cleared to 0) |
/// | 31    | valid |
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct IdtVectoringInfo(pub u32);

impl IdtVectoringInfo {
    /// Bits 7:0: the vector of the event being delivered.
    #[must_use]
    pub fn vector(self) -> u8 {
        u8_field(u64::from(self.0), 0..8)
    }

    /// Bits 10:8: the interruption type.
    #[must_use]
    pub fn interruption_type(self) -> InterruptionType {
        InterruptionType::from_bits(u8_field(u64::from(self.0), 8..11))
    }

    /// Bit 11: the IDT-vectoring error code field is valid.
    #[must_use]
    pub fn error_code_valid(self) -> bool {
        flag(u64::from(self.0), 11)
    }

    /// Bit 31: the field is valid (the exit happened during event delivery).
    #[must_use]
    pub fn is_valid(self) -> bool {
        flag(u64::from(self.0), 31)
    }

    /// Bits 30:13 (cleared to 0 by the processor). Bit 12 is undefined and not reported.
    #[must_use]
    pub fn reserved_bits(self) -> u32 {
        u32_field(u64::from(self.0), 13..31) << 13
    }

    /// The injection that re-delivers this event on the next VM entry, with the IDT-vectoring
    /// error code and the VM-exit instruction length as the processor reported them; `None`
    /// when the field is not valid.
    ///
    /// # Errors
    ///
    /// The checks of [`EventInjection::from_fields`], which a valid IDT-vectoring field
    /// written by the processor always passes.
    pub fn reinjection(
        self,
        error_code: u32,
        instruction_length: u32,
    ) -> Result<Option<EventInjection>, EventInjectionError> {
        // Bit 12 is undefined here and reserved in the VM-entry field: drop it.
        EventInjection::from_fields(self.0 & !(1 << 12), error_code, instruction_length)
    }
}

impl fmt::Debug for IdtVectoringInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.is_valid() {
            return write!(f, "IdtVectoringInfo(invalid, {:#x})", self.0);
        }
        f.debug_struct("IdtVectoringInfo")
            .field("vector", &self.vector())
            .field("type", &self.interruption_type())
            .field("error_code_valid", &self.error_code_valid())
            .finish()
    }
}

/// The VM-entry interruption-information field as raw bits (SDM Vol. 3C, 25.8.3 "VM-Entry
/// Controls for Event Injection").
///
/// | Bits  | Content |
/// |-------|---------|
/// | 7:0   | vector |
/// | 10:8  | interruption type (1 reserved; 7 other event) |
/// | 11    | deliver error code |
/// | 30:12 | reserved (must be 0) |
/// | 31    | valid |
///
/// Build a valid value with [`EventInjection`].
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct EntryInterruptionInfo(pub u32);

impl EntryInterruptionInfo {
    /// Bits 30:12, which VM entry requires to be 0.
    pub const RESERVED_MASK: u32 = 0x7FFF_F000;

    /// Bits 7:0: the vector.
    #[must_use]
    pub fn vector(self) -> u8 {
        u8_field(u64::from(self.0), 0..8)
    }

    /// Bits 10:8: the interruption type.
    #[must_use]
    pub fn interruption_type(self) -> InterruptionType {
        InterruptionType::from_bits(u8_field(u64::from(self.0), 8..11))
    }

    /// Bit 11: deliver an error code (pushed from the VM-entry exception error code field).
    #[must_use]
    pub fn deliver_error_code(self) -> bool {
        flag(u64::from(self.0), 11)
    }

    /// Bit 31: inject an event on the next VM entry.
    #[must_use]
    pub fn is_valid(self) -> bool {
        flag(u64::from(self.0), 31)
    }

    /// Bits 30:12 as found in the field.
    #[must_use]
    pub fn reserved_bits(self) -> u32 {
        self.0 & Self::RESERVED_MASK
    }
}

impl fmt::Debug for EntryInterruptionInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.is_valid() {
            return write!(f, "EntryInterruptionInfo(invalid, {:#x})", self.0);
        }
        f.debug_struct("EntryInterruptionInfo")
            .field("vector", &self.vector())
            .field("type", &self.interruption_type())
            .field("deliver_error_code", &self.deliver_error_code())
            .finish()
    }
}

/// An event injection that [`EventInjection`] refused, with the offending value (SDM Vol. 3C,
/// 27.2.1.3 "Checks on VM-Entry Control Fields").
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum EventInjectionError {
    /// Exceptions use vectors 0–31.
    #[error("vector {0} is not an exception vector (exceptions use vectors 0-31)")]
    NotAnExceptionVector(u8),
    /// Vector 2 is the NMI; [`EventInjection::nmi`] injects it.
    #[error("vector 2 is the NMI: inject it with EventInjection::nmi(), not as an exception")]
    NmiAsException,
    /// The exception does not push an error code, but one was given.
    #[error("exception vector {vector} pushes no error code, but {error_code:#x} was given")]
    UnexpectedErrorCode {
        /// The exception vector.
        vector: u8,
        /// The error code that was given.
        error_code: u32,
    },
    /// The exception pushes an error code (#DF, #TS, #NP, #SS, #GP, #PF, #AC, #CP), but none
    /// was given.
    #[error("exception vector {0} pushes an error code, but none was given")]
    MissingErrorCode(u8),
    /// VM entry requires bits 31:16 of the error code to be 0.
    #[error("error code {0:#x} has bits 31:16 set; VM entry requires them to be 0")]
    ErrorCodeTooWide(u32),
    /// The instruction length must be 1–15 (0 only where IA32_VMX_MISC bit 30 allows it,
    /// accepted by [`EventInjection::from_fields`] only).
    #[error("instruction length {0} is not in 1-15")]
    InvalidInstructionLength(u32),
    /// An NMI must use vector 2.
    #[error("an NMI must use vector 2, not {0}")]
    NmiVector(u8),
    /// Type 7 (other event) must use vector 0 (pending MTF VM exit).
    #[error("interruption type 7 (other event) must use vector 0, not {0}")]
    OtherEventVector(u8),
    /// Interruption type 1 is reserved.
    #[error("interruption type 1 is reserved")]
    ReservedType,
    /// Bits 30:12 of the interruption-information field must be 0.
    #[error("reserved bits {0:#x} (bits 30:12) are set in the VM-entry interruption information")]
    ReservedBits(u32),
    /// Only hardware exceptions deliver an error code.
    #[error("deliver-error-code is set for {0:?}; only hardware exceptions deliver error codes")]
    ErrorCodeForNonException(InterruptionType),
}

/// A checked event to inject on the next VM entry: the values for the VM-entry
/// interruption-information, exception error code and instruction length fields (SDM Vol. 3C,
/// 25.8.3 "VM-Entry Controls for Event Injection").
///
/// The constructors reject what the SDM's entry checks (27.2.1.3) would reject, and what makes
/// no architectural sense (an error code for an exception that pushes none, and none for one
/// that does). Some checks depend on state this value cannot see, and stay with the caller:
///
/// - the error-code rule applies only when CR0.PE = 1 in the guest-state area (or
///   "unrestricted guest" is 0): for a real-mode guest use
///   [`real_mode_hardware_exception`](Self::real_mode_hardware_exception); on processors with
///   IA32_VMX_BASIC bit 56 = 1 any hardware exception may carry an error code or none, see
///   [`hardware_exception_any_error_code`](Self::hardware_exception_any_error_code);
/// - type 7 (a pending MTF VM exit) needs a processor that supports the monitor trap flag;
/// - an instruction length of 0 needs IA32_VMX_MISC bit 30.
///
/// ```
/// use hvkit_vmx::exit::{EventInjection, EventInjectionError, InterruptionType};
///
/// // #PF with error code 2 (write to a non-present page).
/// let pf = EventInjection::hardware_exception(14, Some(2))?;
/// assert_eq!(pf.interruption_info().0, 0x8000_0B0E);
/// assert_eq!(pf.error_code(), Some(2));
///
/// // #UD has no error code.
/// assert_eq!(
///     EventInjection::hardware_exception(6, Some(0)),
///     Err(EventInjectionError::UnexpectedErrorCode { vector: 6, error_code: 0 })
/// );
///
/// // INT 0x80, two bytes long.
/// let int80 = EventInjection::software_interrupt(0x80, 2)?;
/// assert_eq!(int80.interruption_type(), InterruptionType::SoftwareInterrupt);
/// assert_eq!(int80.instruction_length(), Some(2));
/// # Ok::<(), EventInjectionError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EventInjection {
    info: EntryInterruptionInfo,
    error_code: Option<u32>,
    instruction_length: Option<u8>,
}

const VALID: u32 = 1 << 31;
const DELIVER_ERROR_CODE: u32 = 1 << 11;

const fn compose(vector: u8, kind: InterruptionType, deliver_error_code: bool) -> u32 {
    let ec = if deliver_error_code {
        DELIVER_ERROR_CODE
    } else {
        0
    };
    VALID | ec | ((kind.bits() as u32) << 8) | vector as u32
}

impl EventInjection {
    /// The exception vectors that push an error code: #DF (8), #TS (10), #NP (11), #SS (12),
    /// #GP (13), #PF (14), #AC (17) and #CP (21) (SDM Vol. 3A, Chapter 6 "Interrupt and
    /// Exception Handling", table "Protected-Mode Exceptions and Interrupts", and Vol. 3C,
    /// 27.2.1.3).
    pub const ERROR_CODE_VECTORS: [u8; 8] = [8, 10, 11, 12, 13, 14, 17, 21];

    /// Whether exception `vector` pushes an error code in protected mode.
    #[must_use]
    pub const fn exception_has_error_code(vector: u8) -> bool {
        matches!(vector, 8 | 10..=14 | 17 | 21)
    }

    /// An external interrupt with `vector` (type 0).
    #[must_use]
    pub const fn external_interrupt(vector: u8) -> Self {
        Self {
            info: EntryInterruptionInfo(compose(
                vector,
                InterruptionType::ExternalInterrupt,
                false,
            )),
            error_code: None,
            instruction_length: None,
        }
    }

    /// A non-maskable interrupt (type 2, vector 2).
    #[must_use]
    pub const fn nmi() -> Self {
        Self {
            info: EntryInterruptionInfo(compose(2, InterruptionType::Nmi, false)),
            error_code: None,
            instruction_length: None,
        }
    }

    /// A pending MTF VM exit (type 7, vector 0): the processor takes an MTF VM exit right after
    /// VM entry. Requires a processor that supports the monitor trap flag.
    #[must_use]
    pub const fn pending_mtf() -> Self {
        Self {
            info: EntryInterruptionInfo(compose(0, InterruptionType::OtherEvent, false)),
            error_code: None,
            instruction_length: None,
        }
    }

    /// A hardware exception (type 3) for a guest in protected mode: `error_code` must be given
    /// exactly for the vectors in [`ERROR_CODE_VECTORS`](Self::ERROR_CODE_VECTORS).
    ///
    /// # Errors
    ///
    /// [`NotAnExceptionVector`](EventInjectionError::NotAnExceptionVector) for `vector` > 31,
    /// [`NmiAsException`](EventInjectionError::NmiAsException) for vector 2,
    /// [`UnexpectedErrorCode`](EventInjectionError::UnexpectedErrorCode) /
    /// [`MissingErrorCode`](EventInjectionError::MissingErrorCode) when the error code does not
    /// match the vector, [`ErrorCodeTooWide`](EventInjectionError::ErrorCodeTooWide) when bits
    /// 31:16 of the error code are set.
    pub fn hardware_exception(
        vector: u8,
        error_code: Option<u32>,
    ) -> Result<Self, EventInjectionError> {
        check_exception_vector(vector)?;
        match (Self::exception_has_error_code(vector), error_code) {
            (false, Some(error_code)) => {
                Err(EventInjectionError::UnexpectedErrorCode { vector, error_code })
            }
            (true, None) => Err(EventInjectionError::MissingErrorCode(vector)),
            _ => Self::hardware_exception_any_error_code(vector, error_code),
        }
    }

    /// A hardware exception (type 3) with or without an error code regardless of the vector,
    /// as VM entry accepts when IA32_VMX_BASIC bit 56 is 1 (SDM Vol. 3D, A.1 "Basic VMX
    /// Information").
    ///
    /// # Errors
    ///
    /// [`NotAnExceptionVector`](EventInjectionError::NotAnExceptionVector),
    /// [`NmiAsException`](EventInjectionError::NmiAsException) and
    /// [`ErrorCodeTooWide`](EventInjectionError::ErrorCodeTooWide) as for
    /// [`hardware_exception`](Self::hardware_exception).
    pub fn hardware_exception_any_error_code(
        vector: u8,
        error_code: Option<u32>,
    ) -> Result<Self, EventInjectionError> {
        check_exception_vector(vector)?;
        if let Some(code) = error_code {
            check_error_code_width(code)?;
        }
        Ok(Self {
            info: EntryInterruptionInfo(compose(
                vector,
                InterruptionType::HardwareException,
                error_code.is_some(),
            )),
            error_code,
            instruction_length: None,
        })
    }

    /// A hardware exception (type 3) for a guest with CR0.PE = 0 under "unrestricted guest":
    /// real-mode delivery pushes no error code, and VM entry requires deliver-error-code = 0.
    ///
    /// # Errors
    ///
    /// [`NotAnExceptionVector`](EventInjectionError::NotAnExceptionVector) and
    /// [`NmiAsException`](EventInjectionError::NmiAsException).
    pub fn real_mode_hardware_exception(vector: u8) -> Result<Self, EventInjectionError> {
        Self::hardware_exception_any_error_code(vector, None)
    }

    /// A software interrupt (type 4, INT n) with `vector`, whose instruction is
    /// `instruction_length` bytes long (1–15).
    ///
    /// # Errors
    ///
    /// [`InvalidInstructionLength`](EventInjectionError::InvalidInstructionLength).
    pub fn software_interrupt(
        vector: u8,
        instruction_length: u8,
    ) -> Result<Self, EventInjectionError> {
        Self::with_length(
            vector,
            InterruptionType::SoftwareInterrupt,
            instruction_length,
        )
    }

    /// A privileged software exception (type 5: #DB raised by INT1, vector 1 in practice).
    ///
    /// # Errors
    ///
    /// [`NotAnExceptionVector`](EventInjectionError::NotAnExceptionVector),
    /// [`NmiAsException`](EventInjectionError::NmiAsException),
    /// [`InvalidInstructionLength`](EventInjectionError::InvalidInstructionLength).
    pub fn privileged_software_exception(
        vector: u8,
        instruction_length: u8,
    ) -> Result<Self, EventInjectionError> {
        check_exception_vector(vector)?;
        Self::with_length(
            vector,
            InterruptionType::PrivilegedSoftwareException,
            instruction_length,
        )
    }

    /// A software exception (type 6: #BP raised by INT3, #OF raised by INTO).
    ///
    /// # Errors
    ///
    /// [`NotAnExceptionVector`](EventInjectionError::NotAnExceptionVector),
    /// [`NmiAsException`](EventInjectionError::NmiAsException),
    /// [`InvalidInstructionLength`](EventInjectionError::InvalidInstructionLength).
    pub fn software_exception(
        vector: u8,
        instruction_length: u8,
    ) -> Result<Self, EventInjectionError> {
        check_exception_vector(vector)?;
        Self::with_length(
            vector,
            InterruptionType::SoftwareException,
            instruction_length,
        )
    }

    fn with_length(
        vector: u8,
        kind: InterruptionType,
        instruction_length: u8,
    ) -> Result<Self, EventInjectionError> {
        if !(1..=15).contains(&instruction_length) {
            return Err(EventInjectionError::InvalidInstructionLength(u32::from(
                instruction_length,
            )));
        }
        Ok(Self {
            info: EntryInterruptionInfo(compose(vector, kind, false)),
            error_code: None,
            instruction_length: Some(instruction_length),
        })
    }

    /// Checks raw VM-entry event-injection fields as VM entry would, as far as the fields alone
    /// allow (SDM Vol. 3C, 27.2.1.3): `Ok(None)` when the valid bit is clear.
    ///
    /// Unlike the constructors, this accepts an instruction length of 0 (valid with
    /// IA32_VMX_MISC bit 30), a hardware exception with vector 2 (VM entry does not refuse
    /// it), and does not tie the error code to the vector (that rule depends on CR0.PE,
    /// "unrestricted guest" and IA32_VMX_BASIC bit 56).
    ///
    /// # Errors
    ///
    /// [`ReservedBits`](EventInjectionError::ReservedBits),
    /// [`ReservedType`](EventInjectionError::ReservedType),
    /// [`NmiVector`](EventInjectionError::NmiVector),
    /// [`NotAnExceptionVector`](EventInjectionError::NotAnExceptionVector) (hardware exception
    /// with vector > 31), [`OtherEventVector`](EventInjectionError::OtherEventVector),
    /// [`ErrorCodeForNonException`](EventInjectionError::ErrorCodeForNonException),
    /// [`ErrorCodeTooWide`](EventInjectionError::ErrorCodeTooWide) and
    /// [`InvalidInstructionLength`](EventInjectionError::InvalidInstructionLength) (> 15).
    pub fn from_fields(
        interruption_info: u32,
        error_code: u32,
        instruction_length: u32,
    ) -> Result<Option<Self>, EventInjectionError> {
        let info = EntryInterruptionInfo(interruption_info);
        if !info.is_valid() {
            return Ok(None);
        }
        if info.reserved_bits() != 0 {
            return Err(EventInjectionError::ReservedBits(info.reserved_bits()));
        }
        let kind = info.interruption_type();
        let vector = info.vector();
        match kind {
            InterruptionType::Reserved(_) => return Err(EventInjectionError::ReservedType),
            InterruptionType::Nmi if vector != 2 => {
                return Err(EventInjectionError::NmiVector(vector));
            }
            InterruptionType::HardwareException if vector > 31 => {
                return Err(EventInjectionError::NotAnExceptionVector(vector));
            }
            InterruptionType::OtherEvent if vector != 0 => {
                return Err(EventInjectionError::OtherEventVector(vector));
            }
            _ => {}
        }
        let error_code = if info.deliver_error_code() {
            if kind != InterruptionType::HardwareException {
                return Err(EventInjectionError::ErrorCodeForNonException(kind));
            }
            check_error_code_width(error_code)?;
            Some(error_code)
        } else {
            None
        };
        let instruction_length = if kind.uses_instruction_length() {
            let length = u8::try_from(instruction_length)
                .ok()
                .filter(|length| *length <= 15)
                .ok_or(EventInjectionError::InvalidInstructionLength(
                    instruction_length,
                ))?;
            Some(length)
        } else {
            None
        };
        Ok(Some(Self {
            info,
            error_code,
            instruction_length,
        }))
    }

    /// The value for the VM-entry interruption-information field (valid bit set).
    #[must_use]
    pub const fn interruption_info(&self) -> EntryInterruptionInfo {
        self.info
    }

    /// The value for the VM-entry exception error code field, if the event delivers one.
    #[must_use]
    pub const fn error_code(&self) -> Option<u32> {
        self.error_code
    }

    /// The value for the VM-entry instruction length field, for software interrupts and
    /// software exceptions.
    #[must_use]
    pub const fn instruction_length(&self) -> Option<u8> {
        self.instruction_length
    }

    /// The vector.
    #[must_use]
    pub fn vector(&self) -> u8 {
        self.info.vector()
    }

    /// The interruption type.
    #[must_use]
    pub fn interruption_type(&self) -> InterruptionType {
        self.info.interruption_type()
    }
}

fn check_exception_vector(vector: u8) -> Result<(), EventInjectionError> {
    match vector {
        2 => Err(EventInjectionError::NmiAsException),
        0..=31 => Ok(()),
        _ => Err(EventInjectionError::NotAnExceptionVector(vector)),
    }
}

fn check_error_code_width(error_code: u32) -> Result<(), EventInjectionError> {
    if error_code >> 16 == 0 {
        Ok(())
    } else {
        Err(EventInjectionError::ErrorCodeTooWide(error_code))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interruption_type_encodings() {
        for bits in 0..8 {
            assert_eq!(InterruptionType::from_bits(bits).bits(), bits);
        }
        assert_eq!(
            InterruptionType::from_bits(1),
            InterruptionType::Reserved(1)
        );
        assert_eq!(
            InterruptionType::from_bits(3),
            InterruptionType::HardwareException
        );
        assert!(InterruptionType::SoftwareInterrupt.uses_instruction_length());
        assert!(!InterruptionType::HardwareException.uses_instruction_length());
    }

    #[test]
    fn exit_interruption_info_page_fault_nmi_and_external_interrupt() {
        // #PF with error code, valid: 0x8000_0B0E.
        let pf = ExitInterruptionInfo(0x8000_0B0E);
        assert!(pf.is_valid());
        assert_eq!(pf.vector(), 14);
        assert_eq!(pf.interruption_type(), InterruptionType::HardwareException);
        assert!(pf.error_code_valid());
        assert!(!pf.nmi_unblocking_due_to_iret());
        assert_eq!(pf.reserved_bits(), 0);
        // NMI: 0x8000_0202.
        let nmi = ExitInterruptionInfo(0x8000_0202);
        assert_eq!(nmi.interruption_type(), InterruptionType::Nmi);
        assert_eq!(nmi.vector(), 2);
        assert!(!nmi.error_code_valid());
        // #GP during an IRET that unblocked NMIs: bit 12.
        let gp = ExitInterruptionInfo(0x8000_1B0D);
        assert!(gp.nmi_unblocking_due_to_iret() && gp.error_code_valid());
        // Acknowledged external interrupt vector 0xEC.
        let ext = ExitInterruptionInfo(0x8000_00EC);
        assert_eq!(ext.interruption_type(), InterruptionType::ExternalInterrupt);
        assert_eq!(ext.vector(), 0xEC);
        // #BP from INT3 is a software exception.
        assert_eq!(
            ExitInterruptionInfo(0x8000_0603).interruption_type(),
            InterruptionType::SoftwareException
        );
        // Not valid, and reserved bits kept.
        assert!(!ExitInterruptionInfo(0x0000_0B0E).is_valid());
        assert_eq!(
            ExitInterruptionInfo(0xFFFF_FFFF).reserved_bits(),
            0x7FFF_E000
        );
        assert!(format!("{:?}", ExitInterruptionInfo(0)).contains("invalid"));
        assert!(format!("{pf:?}").contains("HardwareException"));
    }

    #[test]
    fn idt_vectoring_info_and_reinjection() {
        // The exit interrupted delivery of INT 0x80 (software interrupt, type 4).
        let int80 = IdtVectoringInfo(0x8000_0480);
        assert!(int80.is_valid());
        assert_eq!(int80.vector(), 0x80);
        assert_eq!(
            int80.interruption_type(),
            InterruptionType::SoftwareInterrupt
        );
        assert!(!int80.error_code_valid());
        assert_eq!(
            int80.reinjection(0, 2),
            Ok(Some(EventInjection::software_interrupt(0x80, 2).unwrap()))
        );
        // #PF with error code; the undefined bit 12 is dropped for re-injection.
        let pf = IdtVectoringInfo(0x8000_1B0E);
        assert!(pf.error_code_valid());
        let again = pf.reinjection(0x6, 0).unwrap().unwrap();
        assert_eq!(
            again,
            EventInjection::hardware_exception(14, Some(6)).unwrap()
        );
        // Not valid: nothing to re-inject.
        assert_eq!(IdtVectoringInfo(0x0000_0B0E).reinjection(0, 0), Ok(None));
        assert_eq!(IdtVectoringInfo(0xC000_0000).reserved_bits(), 0x4000_0000);
    }

    #[test]
    fn entry_interruption_info_fields() {
        let info = EntryInterruptionInfo(0x8000_0B0D);
        assert!(info.is_valid() && info.deliver_error_code());
        assert_eq!(info.vector(), 13);
        assert_eq!(
            info.interruption_type(),
            InterruptionType::HardwareException
        );
        assert_eq!(info.reserved_bits(), 0);
        assert_eq!(EntryInterruptionInfo(0x8000_1000).reserved_bits(), 0x1000);
    }

    #[test]
    fn builders_produce_the_sdm_encodings() {
        assert_eq!(
            EventInjection::external_interrupt(0x20)
                .interruption_info()
                .0,
            0x8000_0020
        );
        assert_eq!(EventInjection::nmi().interruption_info().0, 0x8000_0202);
        assert_eq!(
            EventInjection::pending_mtf().interruption_info().0,
            0x8000_0700
        );
        let gp = EventInjection::hardware_exception(13, Some(0)).unwrap();
        assert_eq!(gp.interruption_info().0, 0x8000_0B0D);
        assert_eq!(gp.error_code(), Some(0));
        assert_eq!(gp.instruction_length(), None);
        let ud = EventInjection::hardware_exception(6, None).unwrap();
        assert_eq!(ud.interruption_info().0, 0x8000_0306);
        assert_eq!(ud.error_code(), None);
        let df = EventInjection::hardware_exception(8, Some(0)).unwrap();
        assert_eq!(df.interruption_info().0, 0x8000_0B08);
        let cp = EventInjection::hardware_exception(21, Some(3)).unwrap();
        assert_eq!(cp.interruption_info().0, 0x8000_0B15);
        let bp = EventInjection::software_exception(3, 1).unwrap();
        assert_eq!(bp.interruption_info().0, 0x8000_0603);
        assert_eq!(bp.instruction_length(), Some(1));
        let int1 = EventInjection::privileged_software_exception(1, 1).unwrap();
        assert_eq!(int1.interruption_info().0, 0x8000_0501);
        let int21 = EventInjection::software_interrupt(0x21, 2).unwrap();
        assert_eq!(int21.interruption_info().0, 0x8000_0421);
        assert_eq!(int21.vector(), 0x21);
        let real = EventInjection::real_mode_hardware_exception(13).unwrap();
        assert_eq!(real.interruption_info().0, 0x8000_030D);
        assert_eq!(real.error_code(), None);
        let any = EventInjection::hardware_exception_any_error_code(6, Some(0)).unwrap();
        assert_eq!(any.interruption_info().0, 0x8000_0B06);
    }

    #[test]
    fn builders_reject_invalid_combinations() {
        use EventInjectionError as E;
        assert_eq!(
            EventInjection::hardware_exception(32, None),
            Err(E::NotAnExceptionVector(32))
        );
        assert_eq!(
            EventInjection::hardware_exception(2, None),
            Err(E::NmiAsException)
        );
        assert_eq!(
            EventInjection::hardware_exception(3, Some(0)),
            Err(E::UnexpectedErrorCode {
                vector: 3,
                error_code: 0
            })
        );
        for vector in EventInjection::ERROR_CODE_VECTORS {
            assert_eq!(
                EventInjection::hardware_exception(vector, None),
                Err(E::MissingErrorCode(vector))
            );
            assert!(EventInjection::hardware_exception(vector, Some(0)).is_ok());
        }
        for vector in (0..32).filter(|v| !EventInjection::ERROR_CODE_VECTORS.contains(v)) {
            assert!(!EventInjection::exception_has_error_code(vector));
            if vector != 2 {
                assert!(EventInjection::hardware_exception(vector, None).is_ok());
            }
        }
        assert_eq!(
            EventInjection::hardware_exception(13, Some(0x1_0000)),
            Err(E::ErrorCodeTooWide(0x1_0000))
        );
        assert_eq!(
            EventInjection::hardware_exception_any_error_code(6, Some(0xFFFF_0000)),
            Err(E::ErrorCodeTooWide(0xFFFF_0000))
        );
        assert_eq!(
            EventInjection::real_mode_hardware_exception(40),
            Err(E::NotAnExceptionVector(40))
        );
        assert_eq!(
            EventInjection::software_interrupt(0x80, 0),
            Err(E::InvalidInstructionLength(0))
        );
        assert_eq!(
            EventInjection::software_interrupt(0x80, 16),
            Err(E::InvalidInstructionLength(16))
        );
        assert_eq!(
            EventInjection::software_exception(0x80, 1),
            Err(E::NotAnExceptionVector(0x80))
        );
        assert_eq!(
            EventInjection::privileged_software_exception(2, 1),
            Err(E::NmiAsException)
        );
        // The errors display their values.
        assert!(format!("{}", E::ErrorCodeTooWide(0x1_0000)).contains("0x10000"));
    }

    #[test]
    fn from_fields_checks_like_vm_entry() {
        use EventInjectionError as E;
        assert_eq!(EventInjection::from_fields(0x0000_0B0E, 0, 0), Ok(None));
        assert_eq!(
            EventInjection::from_fields(0x8000_1000, 0, 0),
            Err(E::ReservedBits(0x1000))
        );
        assert_eq!(
            EventInjection::from_fields(0x8000_0100, 0, 0),
            Err(E::ReservedType)
        );
        assert_eq!(
            EventInjection::from_fields(0x8000_0203, 0, 0),
            Err(E::NmiVector(3))
        );
        assert_eq!(
            EventInjection::from_fields(0x8000_0320, 0, 0),
            Err(E::NotAnExceptionVector(0x20))
        );
        assert_eq!(
            EventInjection::from_fields(0x8000_0701, 0, 0),
            Err(E::OtherEventVector(1))
        );
        assert_eq!(
            EventInjection::from_fields(0x8000_0820, 0, 0),
            Err(E::ErrorCodeForNonException(
                InterruptionType::ExternalInterrupt
            ))
        );
        assert_eq!(
            EventInjection::from_fields(0x8000_0B0D, 0x1_0000, 0),
            Err(E::ErrorCodeTooWide(0x1_0000))
        );
        assert_eq!(
            EventInjection::from_fields(0x8000_0480, 0, 16),
            Err(E::InvalidInstructionLength(16))
        );
        assert_eq!(
            EventInjection::from_fields(0x8000_0480, 0, u32::MAX),
            Err(E::InvalidInstructionLength(u32::MAX))
        );
        // Length 0 is accepted here (IA32_VMX_MISC bit 30), and ignored for other types.
        let zero = EventInjection::from_fields(0x8000_0480, 0, 0)
            .unwrap()
            .unwrap();
        assert_eq!(zero.instruction_length(), Some(0));
        let ext = EventInjection::from_fields(0x8000_0030, 0xDEAD, 99)
            .unwrap()
            .unwrap();
        assert_eq!(ext.error_code(), None);
        assert_eq!(ext.instruction_length(), None);
    }

    #[test]
    fn builders_round_trip_through_the_raw_fields() {
        let mut all = vec![
            EventInjection::external_interrupt(0x20),
            EventInjection::external_interrupt(0xFF),
            EventInjection::nmi(),
            EventInjection::pending_mtf(),
            EventInjection::software_interrupt(0x80, 2).unwrap(),
            EventInjection::software_exception(3, 1).unwrap(),
            EventInjection::software_exception(4, 1).unwrap(),
            EventInjection::privileged_software_exception(1, 1).unwrap(),
            EventInjection::real_mode_hardware_exception(13).unwrap(),
            EventInjection::hardware_exception_any_error_code(0, Some(0xFFFF)).unwrap(),
        ];
        for vector in (0..32).filter(|&v| v != 2) {
            let code = EventInjection::exception_has_error_code(vector).then_some(0x1A);
            all.push(EventInjection::hardware_exception(vector, code).unwrap());
        }
        for injection in all {
            let back = EventInjection::from_fields(
                injection.interruption_info().0,
                injection.error_code().unwrap_or(0),
                u32::from(injection.instruction_length().unwrap_or(0)),
            );
            assert_eq!(back, Ok(Some(injection)), "{injection:?}");
            assert!(injection.interruption_info().is_valid());
            assert_eq!(injection.interruption_info().reserved_bits(), 0);
        }
    }
}
