//! Typed access to a VMCS: the [`VmcsRead`] and [`VmcsWrite`] traits and their implementations.
//!
//! Reference: Intel® 64 and IA-32 Architectures Software Developer's Manual, Combined Volumes,
//! Order Number 325462-086US, December 2024: Chapter 25 "Virtual Machine Control Structures"
//! (25.11.2 "VMREAD, VMWRITE, and Encodings of VMCS Fields"), Section 31.3 "VMREAD—Read Field
//! from Virtual-Machine Control Structure" and "VMWRITE—Write Field to Virtual-Machine Control
//! Structure", Section 31.4 "VM Instruction Error Numbers", Appendix B "Field Encoding in VMCS".
//!
//! - [`VmcsRead`] / [`VmcsWrite`]: typed reads and writes through the field types of
//!   [`crate::fields`] (only writable field types can be written, and only with a value of the
//!   field's width), plus raw forms by encoding for dumps and tools.
//! - [`CurrentVmcs`] (x86-64 only): the current VMCS of this logical processor, through VMREAD
//!   and VMWRITE. A failed VMREAD is an error, never a zero.
//! - [`SoftVmcs`]: an in-memory VMCS for host tests, dumps, diffs and the VM-entry checker. It
//!   behaves like VMREAD/VMWRITE: truncation to the field's width, HIGH access, error 12 for
//!   unsupported components and error 13 for writes to read-only fields.
//! - [`dump`], [`Dump`], [`diff`]: listing the fields of any VMCS and the differences between two
//!   software VMCSs.
//! - [`Counting`]: a wrapper that counts VMCS reads and writes.
//!
//! # Example
//!
//! ```
//! use hvkit_vmx::fields::{control, exit_info, guest};
//! use hvkit_vmx::vmcs::{Counting, SoftVmcs, VmcsError, VmcsRead, VmcsWrite};
//!
//! # fn main() -> Result<(), VmcsError> {
//! let mut vmcs = Counting::new(SoftVmcs::new());
//! vmcs.write(guest::CS_SELECTOR, 0x10)?; // u16, a 16-bit field
//! vmcs.write(guest::RIP, 0xffff_8000_0000_1000)?; // natural width: u64
//! vmcs.write(control::EXCEPTION_BITMAP, 1 << 14)?; // u32
//! vmcs.write(control::TSC_OFFSET.high(), 0xffff_ffff)?; // bits 63:32 of a 64-bit field
//! assert_eq!(vmcs.read(guest::CS_SELECTOR)?, 0x10);
//! assert_eq!(vmcs.read(control::TSC_OFFSET)?, 0xffff_ffff_0000_0000);
//!
//! // Read-only fields are refused like VMWRITE refuses them; tests fake them explicitly.
//! assert!(vmcs.write_raw(exit_info::EXIT_REASON.encoding(), 10).is_err());
//! vmcs.inner_mut().set_exit_info(exit_info::EXIT_REASON, 10);
//! assert_eq!(vmcs.read(exit_info::EXIT_REASON)?, 10);
//!
//! assert_eq!(vmcs.counts().writes, 5);
//! println!("{}", hvkit_vmx::vmcs::Dump(vmcs.inner()));
//! # Ok(())
//! # }
//! ```
//!
//! Writing a read-only field does not compile:
//!
//! ```compile_fail,E0277
//! use hvkit_vmx::fields::exit_info;
//! use hvkit_vmx::vmcs::{SoftVmcs, VmcsWrite};
//! let mut vmcs = SoftVmcs::new();
//! vmcs.write(exit_info::EXIT_REASON, 0);
//! ```
//!
//! Nor does writing a `u64` into a 16-bit field:
//!
//! ```compile_fail,E0308
//! use hvkit_vmx::fields::guest;
//! use hvkit_vmx::vmcs::{SoftVmcs, VmcsWrite};
//! let mut vmcs = SoftVmcs::new();
//! vmcs.write(guest::CS_SELECTOR, 0x10_u64);
//! ```

mod counting;
#[cfg(target_arch = "x86_64")]
mod current;
mod dump;
mod soft;

pub use counting::{Counting, VmcsCounts};
#[cfg(target_arch = "x86_64")]
pub use current::CurrentVmcs;
pub use dump::{Diff, Dump, FieldDiff, diff, dump};
pub use soft::{FieldState, SoftVmcs};

use crate::error::{VmFail, VmInstructionError};
use crate::fields::{FieldEncoding, VmcsField, WritableField};

/// Why a VMCS access failed (SDM 31.3 "VMREAD" / "VMWRITE", 31.4 "VM Instruction Error
/// Numbers").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum VmcsError {
    /// VMREAD or VMWRITE failed, or [`SoftVmcs`] refused the access the way they would:
    /// VMfailInvalid without a current VMCS, VMfailValid with error 12 (unsupported component)
    /// or 13 (VMWRITE to a read-only component).
    #[error("access to VMCS field {encoding} failed: {fail}")]
    Instruction {
        /// The encoding that was accessed.
        encoding: FieldEncoding,
        /// How the instruction failed.
        fail: VmFail,
    },
    /// [`SoftVmcs`]: the field is supported but was never written, so there is nothing to read.
    #[error("VMCS field {0} has not been written in this software VMCS")]
    Unset(FieldEncoding),
}

impl VmcsError {
    /// The error of a VMfailValid with this VM-instruction error number.
    #[must_use]
    pub const fn valid(encoding: FieldEncoding, error: VmInstructionError) -> Self {
        Self::Instruction {
            encoding,
            fail: VmFail::Valid(error),
        }
    }

    /// The encoding whose access failed.
    #[must_use]
    pub const fn encoding(&self) -> FieldEncoding {
        match *self {
            Self::Instruction { encoding, .. } | Self::Unset(encoding) => encoding,
        }
    }

    /// The VM-instruction error number, for a VMfailValid.
    #[must_use]
    pub const fn instruction_error(&self) -> Option<VmInstructionError> {
        match *self {
            Self::Instruction {
                fail: VmFail::Valid(error),
                ..
            } => Some(error),
            _ => None,
        }
    }

    /// True for error 12, "VMREAD/VMWRITE from/to unsupported VMCS component": the processor
    /// (or software VMCS) does not have this field.
    #[must_use]
    pub const fn is_unsupported_component(&self) -> bool {
        matches!(
            self.instruction_error(),
            Some(VmInstructionError::UNSUPPORTED_VMCS_COMPONENT)
        )
    }
}

/// Reads VMCS fields (SDM 31.3 "VMREAD—Read Field from Virtual-Machine Control Structure").
///
/// Implementors provide [`VmcsRead::read_raw`]; the typed [`VmcsRead::read`] returns the field's
/// value in the field's own type (`u16`, `u32` or `u64`).
pub trait VmcsRead {
    /// Reads the field with this encoding, zero-extended to 64 bits as VMREAD returns it (a
    /// 16-bit or 32-bit field in its low bits; a HIGH access gives bits 63:32 of the 64-bit field
    /// in bits 31:0).
    ///
    /// # Errors
    /// [`VmcsError::Instruction`] when VMREAD fails (no current VMCS; error 12 for a field the
    /// processor does not support); [`VmcsError::Unset`] from a [`SoftVmcs`] field never written.
    fn read_raw(&self, encoding: FieldEncoding) -> Result<u64, VmcsError>;

    /// Reads a typed field.
    ///
    /// # Errors
    /// As [`VmcsRead::read_raw`].
    fn read<F: VmcsField>(&self, field: F) -> Result<F::Value, VmcsError>
    where
        Self: Sized,
    {
        self.read_raw(field.encoding()).map(F::value_from_raw)
    }
}

/// Writes VMCS fields (SDM 31.3 "VMWRITE—Write Field to Virtual-Machine Control Structure").
///
/// The typed [`VmcsWrite::write`] accepts only [`WritableField`]s (control, guest-state and
/// host-state fields) and only a value of the field's own type, so a write to a read-only field
/// or of the wrong width does not compile. [`VmcsWrite::write_raw`] takes any encoding and fails
/// at run time like VMWRITE.
pub trait VmcsWrite: VmcsRead {
    /// Writes the field with this encoding. Bits above the field's width are ignored (a HIGH
    /// access writes the low 32 bits of `value` to bits 63:32 of the 64-bit field).
    ///
    /// # Errors
    /// [`VmcsError::Instruction`] when VMWRITE fails: no current VMCS, error 12 for an
    /// unsupported field, error 13 for a read-only field.
    fn write_raw(&mut self, encoding: FieldEncoding, value: u64) -> Result<(), VmcsError>;

    /// Writes a typed, writable field.
    ///
    /// # Errors
    /// As [`VmcsWrite::write_raw`] (error 12 when this processor lacks the field).
    fn write<F: WritableField>(&mut self, field: F, value: F::Value) -> Result<(), VmcsError>
    where
        Self: Sized,
    {
        self.write_raw(field.encoding(), value.into())
    }
}

impl<V: VmcsRead + ?Sized> VmcsRead for &V {
    fn read_raw(&self, encoding: FieldEncoding) -> Result<u64, VmcsError> {
        (**self).read_raw(encoding)
    }
}

impl<V: VmcsRead + ?Sized> VmcsRead for &mut V {
    fn read_raw(&self, encoding: FieldEncoding) -> Result<u64, VmcsError> {
        (**self).read_raw(encoding)
    }
}

impl<V: VmcsWrite + ?Sized> VmcsWrite for &mut V {
    fn write_raw(&mut self, encoding: FieldEncoding, value: u64) -> Result<(), VmcsError> {
        (**self).write_raw(encoding, value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fields::{control, exit_info, guest};

    #[test]
    fn error_accessors() {
        let e = VmcsError::valid(
            guest::CS_SELECTOR.encoding(),
            VmInstructionError::UNSUPPORTED_VMCS_COMPONENT,
        );
        assert!(e.is_unsupported_component());
        assert_eq!(e.encoding(), FieldEncoding(0x0802));
        let text = std::format!("{e}");
        assert!(
            text.contains("guest::CS_SELECTOR") && text.contains("12"),
            "{text}"
        );
        let invalid = VmcsError::Instruction {
            encoding: FieldEncoding(0x4400),
            fail: VmFail::Invalid,
        };
        assert_eq!(invalid.instruction_error(), None);
        assert!(!invalid.is_unsupported_component());
        assert!(!VmcsError::Unset(FieldEncoding(0)).is_unsupported_component());
    }

    #[test]
    fn traits_work_through_references_and_trait_objects() {
        let mut soft = SoftVmcs::new();
        {
            let by_ref = &mut soft;
            by_ref
                .write(control::EXCEPTION_BITMAP, 0xffff_ffff)
                .unwrap();
        }
        let object: &dyn VmcsRead = &soft;
        assert_eq!(
            (&object).read(control::EXCEPTION_BITMAP).unwrap(),
            0xffff_ffff
        );
        assert_eq!(
            object.read_raw(exit_info::EXIT_REASON.encoding()),
            Err(VmcsError::Unset(exit_info::EXIT_REASON.encoding()))
        );
    }
}
