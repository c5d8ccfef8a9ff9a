//! VMX instruction failure: VMfailInvalid and VMfailValid with the VM-instruction error number.
//!
//! Reference: Intel® 64 and IA-32 Architectures Software Developer's Manual, Order Number
//! 325462-086US (December 2024), Volume 3C: Section 31.2 "Conventions" (how VMX instructions report
//! VMsucceed / VMfailInvalid / VMfailValid in RFLAGS) and Section 31.4 "VM Instruction Error
//! Numbers" (Table 31-1).

use core::fmt;

/// How a VMX instruction failed (SDM Vol. 3C, 31.2 "Conventions").
///
/// The instruction wrappers in [`crate::instructions`] read CF and ZF in the same `asm!` block as
/// the instruction, and on VMfailValid read the VM-instruction error field of the current VMCS.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum VmFail {
    /// VMfailInvalid (CF = 1): there is no current VMCS, so no error number was stored.
    #[error(
        "VMfailInvalid: the instruction failed and there is no current VMCS to hold an error number"
    )]
    Invalid,
    /// VMfailValid (ZF = 1): the error number stored in the VM-instruction error field
    /// (VMCS encoding 0x4400) of the current VMCS.
    #[error("VMfailValid: {0}")]
    Valid(VmInstructionError),
}

/// A VM-instruction error number (SDM Vol. 3C, 31.4 "VM Instruction Error Numbers", Table 31-1).
///
/// This is an open newtype: a number that this crate does not know (a newer processor's, or a
/// reserved one) is kept as data and displayed as such, never a panic.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VmInstructionError(pub u32);

macro_rules! instruction_errors {
    ($($(#[$doc:meta])* $name:ident = $value:literal, $text:literal;)*) => {
        impl VmInstructionError {
            $($(#[$doc])* pub const $name: Self = Self($value);)*

            /// Every error number that Table 31-1 defines, in ascending order.
            pub const ALL: &'static [Self] = &[$(Self::$name),*];

            /// The SDM's description of this error number, or `None` for a number that
            /// Table 31-1 does not define (numbers 14, 21 and 27 are reserved).
            #[must_use]
            pub const fn description(self) -> Option<&'static str> {
                match self.0 {
                    $($value => Some($text),)*
                    _ => None,
                }
            }

            /// The name of the associated constant for this number, if it has one.
            #[must_use]
            pub const fn name(self) -> Option<&'static str> {
                match self.0 {
                    $($value => Some(stringify!($name)),)*
                    _ => None,
                }
            }
        }
    };
}

instruction_errors! {
    /// 1: VMCALL executed in VMX root operation.
    VMCALL_IN_VMX_ROOT = 1, "VMCALL executed in VMX root operation";
    /// 2: VMCLEAR with invalid physical address.
    VMCLEAR_INVALID_ADDRESS = 2, "VMCLEAR with invalid physical address";
    /// 3: VMCLEAR with VMXON pointer.
    VMCLEAR_VMXON_POINTER = 3, "VMCLEAR with VMXON pointer";
    /// 4: VMLAUNCH with non-clear VMCS.
    VMLAUNCH_NON_CLEAR_VMCS = 4, "VMLAUNCH with non-clear VMCS";
    /// 5: VMRESUME with non-launched VMCS.
    VMRESUME_NON_LAUNCHED_VMCS = 5, "VMRESUME with non-launched VMCS";
    /// 6: VMRESUME after VMXOFF (VMXOFF and VMXON between VMLAUNCH and VMRESUME).
    VMRESUME_AFTER_VMXOFF = 6, "VMRESUME after VMXOFF (VMXOFF and VMXON between VMLAUNCH and VMRESUME)";
    /// 7: VM entry with invalid control field(s).
    ENTRY_INVALID_CONTROL_FIELD = 7, "VM entry with invalid control field(s)";
    /// 8: VM entry with invalid host-state field(s).
    ENTRY_INVALID_HOST_STATE_FIELD = 8, "VM entry with invalid host-state field(s)";
    /// 9: VMPTRLD with invalid physical address.
    VMPTRLD_INVALID_ADDRESS = 9, "VMPTRLD with invalid physical address";
    /// 10: VMPTRLD with VMXON pointer.
    VMPTRLD_VMXON_POINTER = 10, "VMPTRLD with VMXON pointer";
    /// 11: VMPTRLD with incorrect VMCS revision identifier.
    VMPTRLD_INCORRECT_REVISION = 11, "VMPTRLD with incorrect VMCS revision identifier";
    /// 12: VMREAD/VMWRITE from/to unsupported VMCS component.
    UNSUPPORTED_VMCS_COMPONENT = 12, "VMREAD/VMWRITE from/to unsupported VMCS component";
    /// 13: VMWRITE to read-only VMCS component.
    VMWRITE_READ_ONLY_COMPONENT = 13, "VMWRITE to read-only VMCS component";
    /// 15: VMXON executed in VMX root operation.
    VMXON_IN_VMX_ROOT = 15, "VMXON executed in VMX root operation";
    /// 16: VM entry with invalid executive-VMCS pointer.
    ENTRY_INVALID_EXECUTIVE_VMCS_POINTER = 16, "VM entry with invalid executive-VMCS pointer";
    /// 17: VM entry with non-launched executive VMCS.
    ENTRY_NON_LAUNCHED_EXECUTIVE_VMCS = 17, "VM entry with non-launched executive VMCS";
    /// 18: VM entry with executive-VMCS pointer not VMXON pointer (when attempting to deactivate
    /// the dual-monitor treatment of SMIs and SMM).
    ENTRY_EXECUTIVE_VMCS_NOT_VMXON_POINTER = 18, "VM entry with executive-VMCS pointer not VMXON pointer (when attempting to deactivate the dual-monitor treatment of SMIs and SMM)";
    /// 19: VMCALL with non-clear VMCS (when attempting to activate the dual-monitor treatment of
    /// SMIs and SMM).
    VMCALL_NON_CLEAR_VMCS = 19, "VMCALL with non-clear VMCS (when attempting to activate the dual-monitor treatment of SMIs and SMM)";
    /// 20: VMCALL with invalid VM-exit control fields.
    VMCALL_INVALID_EXIT_CONTROL_FIELDS = 20, "VMCALL with invalid VM-exit control fields";
    /// 22: VMCALL with incorrect MSEG revision identifier (when attempting to activate the
    /// dual-monitor treatment of SMIs and SMM).
    VMCALL_INCORRECT_MSEG_REVISION = 22, "VMCALL with incorrect MSEG revision identifier (when attempting to activate the dual-monitor treatment of SMIs and SMM)";
    /// 23: VMXOFF under dual-monitor treatment of SMIs and SMM.
    VMXOFF_UNDER_DUAL_MONITOR = 23, "VMXOFF under dual-monitor treatment of SMIs and SMM";
    /// 24: VMCALL with invalid SMM-monitor features (when attempting to activate the dual-monitor
    /// treatment of SMIs and SMM).
    VMCALL_INVALID_SMM_MONITOR_FEATURES = 24, "VMCALL with invalid SMM-monitor features (when attempting to activate the dual-monitor treatment of SMIs and SMM)";
    /// 25: VM entry with invalid VM-execution control fields in executive VMCS (when attempting
    /// to return from SMM).
    ENTRY_INVALID_EXECUTIVE_CONTROLS = 25, "VM entry with invalid VM-execution control fields in executive VMCS (when attempting to return from SMM)";
    /// 26: VM entry with events blocked by MOV SS.
    ENTRY_EVENTS_BLOCKED_BY_MOV_SS = 26, "VM entry with events blocked by MOV SS";
    /// 28: Invalid operand to INVEPT/INVVPID.
    INVALID_INVEPT_INVVPID_OPERAND = 28, "Invalid operand to INVEPT/INVVPID";
}

impl fmt::Debug for VmInstructionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "VmInstructionError::{name}"),
            None => write!(f, "VmInstructionError({})", self.0),
        }
    }
}

impl fmt::Display for VmInstructionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.description() {
            Some(text) => write!(f, "VM-instruction error {}: {text}", self.0),
            None => write!(
                f,
                "VM-instruction error {} (not defined by the SDM)",
                self.0
            ),
        }
    }
}

impl VmFail {
    /// Decodes the RFLAGS outcome of a VMX instruction (SDM Vol. 3C, 31.2 "Conventions").
    ///
    /// `cf` and `zf` are the carry and zero flags right after the instruction; `error` is called
    /// only on VMfailValid, to read the VM-instruction error field. `Ok(())` is VMsucceed.
    ///
    /// # Errors
    /// [`VmFail::Invalid`] when CF is set, [`VmFail::Valid`] with the error number when ZF is set.
    /// If reading the error number itself fails, the result is that read's failure.
    pub fn from_flags(
        cf: bool,
        zf: bool,
        error: impl FnOnce() -> Result<u32, VmFail>,
    ) -> Result<(), VmFail> {
        if cf {
            Err(VmFail::Invalid)
        } else if zf {
            Err(VmFail::Valid(VmInstructionError(error()?)))
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_defined_number_has_a_description_and_the_reserved_ones_do_not() {
        let defined: [u32; 25] = [
            1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 15, 16, 17, 18, 19, 20, 22, 23, 24, 25, 26,
            28,
        ];
        assert_eq!(VmInstructionError::ALL.len(), defined.len());
        for (err, n) in VmInstructionError::ALL.iter().zip(defined) {
            assert_eq!(err.0, n);
            assert!(err.description().is_some(), "{n} lacks a description");
        }
        for reserved in [0, 14, 21, 27, 29, 1000] {
            assert_eq!(VmInstructionError(reserved).description(), None);
            assert_eq!(VmInstructionError(reserved).name(), None);
        }
    }

    #[test]
    fn decodes_every_error_number_from_the_flags() {
        for err in VmInstructionError::ALL {
            let got = VmFail::from_flags(false, true, || Ok(err.0));
            assert_eq!(got, Err(VmFail::Valid(*err)));
        }
        assert_eq!(VmFail::from_flags(false, false, || Ok(7)), Ok(()));
        assert_eq!(
            VmFail::from_flags(true, false, || Ok(7)),
            Err(VmFail::Invalid)
        );
        // A failing read of the error field is reported, not turned into a number.
        assert_eq!(
            VmFail::from_flags(false, true, || Err(VmFail::Invalid)),
            Err(VmFail::Invalid)
        );
    }

    #[test]
    fn display_names_the_meaning() {
        use std::string::ToString;
        let text = VmFail::Valid(VmInstructionError::ENTRY_INVALID_HOST_STATE_FIELD).to_string();
        assert!(
            text.contains("8") && text.contains("invalid host-state"),
            "{text}"
        );
        let text = VmInstructionError(27).to_string();
        assert!(text.contains("not defined"), "{text}");
        assert_eq!(
            std::format!("{:?}", VmInstructionError(5)),
            "VmInstructionError::VMRESUME_NON_LAUNCHED_VMCS"
        );
    }
}
