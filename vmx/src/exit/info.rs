//! All VM-exit information fields of one VM exit, as plain data, with the decoders applied.
//!
//! Reference: Intel® 64 and IA-32 Architectures Software Developer's Manual, Order Number
//! 325462-086US (December 2024), Volume 3C, 25.9 "VM-Exit Information Fields" (25.9.1 "Basic
//! VM-Exit Information", 25.9.2 "Information for VM Exits Due to Vectored Events", 25.9.3
//! "Information for VM Exits That Occur During Event Delivery", 25.9.4 "Information for VM
//! Exits Due to Instruction Execution") and 28.2 "Recording VM-Exit Information and Updating
//! VM-Entry Control Fields".

use super::instruction_info::{DecodedInstructionInfo, InstructionInfo};
use super::interruption::{
    EventInjection, EventInjectionError, ExitInterruptionInfo, IdtVectoringInfo,
};
use super::qualification::{DecodedQualification, ExceptionDetail, ExitQualification};
use super::reason::{BasicExitReason, ExitReason};

/// The read-only VM-exit information fields of one VM exit, as read from the VMCS.
///
/// Filling it is the caller's job (read the fields that the exit needs, or all of them for a
/// dump); this type only interprets the values. Fields that do not apply to an exit hold
/// whatever the processor left there (the SDM calls them undefined).
///
/// ```
/// use hvkit_vmx::exit::{DecodedQualification, ExceptionDetail, ExitInformation, ExitReason};
///
/// // A #PF (vector 14, error code 2) at linear address 0xdead_b000 while delivering INT 0x80.
/// let info = ExitInformation {
///     reason: ExitReason(0),
///     qualification: 0xDEAD_B000,
///     interruption_info: 0x8000_0B0E,
///     interruption_error_code: 2,
///     idt_vectoring_info: 0x8000_0480,
///     instruction_length: 2,
///     ..ExitInformation::default()
/// };
/// assert_eq!(
///     info.exception(),
///     Some(ExceptionDetail::PageFault { linear_address: 0xDEAD_B000 })
/// );
/// let again = info.reinjection().unwrap().unwrap();
/// assert_eq!(again.vector(), 0x80);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ExitInformation {
    /// Exit reason (encoding 0x4402).
    pub reason: ExitReason,
    /// Exit qualification (encoding 0x6400).
    pub qualification: u64,
    /// Guest-linear address (encoding 0x640A).
    pub guest_linear_address: u64,
    /// Guest-physical address (encoding 0x2400).
    pub guest_physical_address: u64,
    /// VM-exit interruption information (encoding 0x4404).
    pub interruption_info: u32,
    /// VM-exit interruption error code (encoding 0x4406).
    pub interruption_error_code: u32,
    /// IDT-vectoring information (encoding 0x4408).
    pub idt_vectoring_info: u32,
    /// IDT-vectoring error code (encoding 0x440A).
    pub idt_vectoring_error_code: u32,
    /// VM-exit instruction length (encoding 0x440C).
    pub instruction_length: u32,
    /// VM-exit instruction information (encoding 0x440E).
    pub instruction_info: u32,
}

impl ExitInformation {
    /// The basic exit reason.
    #[must_use]
    pub fn basic_reason(&self) -> BasicExitReason {
        self.reason.basic()
    }

    /// The exit qualification decoded for this exit's reason.
    #[must_use]
    pub fn decoded_qualification(&self) -> DecodedQualification {
        ExitQualification::decode(self.basic_reason(), self.qualification)
    }

    /// The instruction information decoded for this exit's reason.
    #[must_use]
    pub fn decoded_instruction_info(&self) -> DecodedInstructionInfo {
        InstructionInfo::decode(self.basic_reason(), self.instruction_info)
    }

    /// The VM-exit interruption-information field.
    #[must_use]
    pub fn exit_interruption(&self) -> ExitInterruptionInfo {
        ExitInterruptionInfo(self.interruption_info)
    }

    /// The IDT-vectoring information field.
    #[must_use]
    pub fn idt_vectoring(&self) -> IdtVectoringInfo {
        IdtVectoringInfo(self.idt_vectoring_info)
    }

    /// For an exception-or-NMI exit with a valid interruption-information field, the exit
    /// qualification resolved with the vector; `None` for other exits.
    #[must_use]
    pub fn exception(&self) -> Option<ExceptionDetail> {
        match self.decoded_qualification() {
            DecodedQualification::ExceptionOrNmi(q) if self.exit_interruption().is_valid() => {
                Some(q.for_vector(self.exit_interruption().vector()))
            }
            _ => None,
        }
    }

    /// The injection that re-delivers the event whose delivery this exit interrupted (from the
    /// IDT-vectoring fields), or `None` when the exit did not happen during event delivery.
    ///
    /// # Errors
    ///
    /// As [`IdtVectoringInfo::reinjection`].
    pub fn reinjection(&self) -> Result<Option<EventInjection>, EventInjectionError> {
        self.idt_vectoring()
            .reinjection(self.idt_vectoring_error_code, self.instruction_length)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit::{DebugExceptionQualification, IoDirection};

    /// Every reason (known or not) with many bit patterns: decoding and formatting never
    /// panic, and the raw values stay available.
    #[test]
    fn every_reason_and_pattern_decodes_without_panicking() {
        let patterns = [
            0,
            u64::MAX,
            0x5555_5555_5555_5555,
            0xAAAA_AAAA_AAAA_AAAA,
            0x8000_0000_0000_0000,
            0x0001_FFFF,
        ];
        for basic in (0..=90u32).chain([0x7FFF, 0xFFFF]) {
            for &pattern in &patterns {
                for flags in [0u32, 0xFFFF_0000] {
                    let truncated = u32::try_from(pattern & 0xFFFF_FFFF).unwrap();
                    let info = ExitInformation {
                        reason: ExitReason(basic | flags),
                        qualification: pattern,
                        guest_linear_address: pattern,
                        guest_physical_address: pattern,
                        interruption_info: truncated,
                        interruption_error_code: truncated,
                        idt_vectoring_info: truncated,
                        idt_vectoring_error_code: truncated,
                        instruction_length: truncated,
                        instruction_info: truncated,
                    };
                    let text = format!(
                        "{:?} {} {:?} {:?} {:?} {:?} {:?} {:?}",
                        info.reason,
                        info.reason,
                        info.decoded_qualification(),
                        info.decoded_instruction_info(),
                        info.exit_interruption(),
                        info.idt_vectoring(),
                        info.exception(),
                        info.reinjection(),
                    );
                    assert!(!text.is_empty());
                    if info.basic_reason().name().is_none() {
                        assert_eq!(
                            info.decoded_qualification(),
                            DecodedQualification::UnknownReason(pattern)
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn io_exit() {
        let info = ExitInformation {
            reason: ExitReason(30),
            qualification: 0x03F8_0000,
            instruction_length: 1,
            ..ExitInformation::default()
        };
        let DecodedQualification::IoInstruction(io) = info.decoded_qualification() else {
            panic!(
                "not an I/O qualification: {:?}",
                info.decoded_qualification()
            );
        };
        assert_eq!(io.port(), 0x3F8);
        assert_eq!(io.direction(), IoDirection::Out);
        assert_eq!(info.exception(), None);
        assert_eq!(info.reinjection(), Ok(None));
        assert!(matches!(
            info.decoded_instruction_info(),
            DecodedInstructionInfo::InsOuts(_)
        ));
    }

    #[test]
    fn exception_needs_a_valid_interruption_field() {
        let db = ExitInformation {
            reason: ExitReason(0),
            qualification: 0x4000,
            interruption_info: 0x8000_0301,
            ..ExitInformation::default()
        };
        assert_eq!(
            db.exception(),
            Some(ExceptionDetail::Debug(DebugExceptionQualification::BS))
        );
        let invalid = ExitInformation {
            interruption_info: 0x0000_0301,
            ..db
        };
        assert_eq!(invalid.exception(), None);
    }

    #[test]
    fn reinjection_of_a_hardware_exception_with_error_code() {
        // An EPT violation while delivering #GP(0x10).
        let info = ExitInformation {
            reason: ExitReason(48),
            qualification: 0x181,
            idt_vectoring_info: 0x8000_0B0D,
            idt_vectoring_error_code: 0x10,
            ..ExitInformation::default()
        };
        assert_eq!(
            info.reinjection(),
            Ok(Some(
                EventInjection::hardware_exception(13, Some(0x10)).unwrap()
            ))
        );
        assert!(info.idt_vectoring().is_valid());
        assert_eq!(info.basic_reason(), BasicExitReason::EPT_VIOLATION);
    }
}
