//! [`SoftVmcs`]: an in-memory VMCS that behaves like VMREAD/VMWRITE (SDM 31.3 "VMREAD—Read Field
//! from Virtual-Machine Control Structure", "VMWRITE—Write Field to Virtual-Machine Control
//! Structure"; SDM 325462-086US).

use core::fmt;

use super::{VmcsError, VmcsRead, VmcsWrite};
use crate::error::VmInstructionError;
use crate::fields::{self, Access, ExitInfoField, FieldEncoding, FieldInfo, VmcsField, Width};

/// What a [`SoftVmcs`] holds for one field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FieldState {
    /// The modelled processor does not have this field: accesses fail with error 12.
    Unsupported,
    /// Supported, never written: reads fail with [`VmcsError::Unset`].
    Unset,
    /// The field's value (already truncated to its width).
    Value(u64),
}

/// An in-memory VMCS keyed by encoding, for host tests, dumps, diffs and the VM-entry checker.
///
/// It holds one slot per row of [`fields::ALL`] (a fixed array, no allocation) and mirrors the
/// hardware's behaviour (SDM 31.3 "VMREAD" and "VMWRITE"):
///
/// - a full write to a 16-bit or 32-bit field keeps only the low 16 or 32 bits, and a read
///   returns them zero-extended;
/// - a HIGH access (encoding bit 0 set) reads or writes bits 63:32 of a 64-bit field and leaves
///   bits 31:0 alone;
/// - an encoding that is not well formed, unknown to [`fields::ALL`], or marked unsupported
///   fails with VM-instruction error 12;
/// - a raw write to a VM-exit information field fails with error 13, unless the VMCS models
///   IA32_VMX_MISC bit 29 ([`SoftVmcs::with_vmwrite_to_exit_info`]); tests fake exit information
///   with [`SoftVmcs::set_exit_info`].
///
/// Unlike hardware, a field that was never written is *unset* and reading it is an error, so a
/// test cannot silently depend on a value it did not provide.
#[derive(Clone, PartialEq, Eq)]
pub struct SoftVmcs {
    slots: [FieldState; fields::COUNT],
    vmwrite_to_exit_info: bool,
}

impl Default for SoftVmcs {
    fn default() -> Self {
        Self::new()
    }
}

impl SoftVmcs {
    /// A software VMCS that supports every field of [`fields::ALL`], all unset.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            slots: [FieldState::Unset; fields::COUNT],
            vmwrite_to_exit_info: false,
        }
    }

    /// Models a processor with IA32_VMX_MISC bit 29 set, where VMWRITE may write VM-exit
    /// information fields (SDM A.6 "Miscellaneous Data").
    #[must_use]
    pub const fn with_vmwrite_to_exit_info(mut self, allowed: bool) -> Self {
        self.vmwrite_to_exit_info = allowed;
        self
    }

    /// Captures every field of another VMCS (for example the current VMCS, for a dump or diff).
    ///
    /// Fields the source does not support (error 12) become [`FieldState::Unsupported`]; fields
    /// a [`SoftVmcs`] source has not set stay unset.
    ///
    /// # Errors
    /// Any other failure of the source, for example VMfailInvalid without a current VMCS.
    pub fn capture<V: VmcsRead + ?Sized>(source: &V) -> Result<Self, VmcsError> {
        let mut copy = Self::new();
        for (slot, info) in copy.slots.iter_mut().zip(fields::ALL) {
            *slot = match source.read_raw(info.encoding) {
                Ok(value) => FieldState::Value(value & info.width.mask()),
                Err(VmcsError::Unset(_)) => FieldState::Unset,
                Err(e) if e.is_unsupported_component() => FieldState::Unsupported,
                Err(e) => return Err(e),
            };
        }
        Ok(copy)
    }

    /// Writes every set, writable field into another VMCS, in the order of [`fields::ALL`].
    ///
    /// # Errors
    /// The first failed write.
    pub fn apply_to<V: VmcsWrite + ?Sized>(&self, target: &mut V) -> Result<(), VmcsError> {
        for (info, value) in self.iter() {
            if !info.is_read_only() {
                target.write_raw(info.encoding, value)?;
            }
        }
        Ok(())
    }

    /// The state of the field with this full-access encoding, or `None` if [`fields::ALL`] does
    /// not know it.
    #[must_use]
    pub fn state(&self, encoding: FieldEncoding) -> Option<FieldState> {
        fields::index_of(encoding).map(|index| self.slots[index])
    }

    /// The state of the field at position `index` of [`fields::ALL`].
    #[must_use]
    pub fn state_at(&self, index: usize) -> Option<FieldState> {
        self.slots.get(index).copied()
    }

    /// Marks a field supported (unset) or unsupported, to model a processor that lacks it.
    ///
    /// # Errors
    /// Error 12 if `encoding` is not the full encoding of a field in [`fields::ALL`].
    pub fn set_supported(
        &mut self,
        encoding: FieldEncoding,
        supported: bool,
    ) -> Result<(), VmcsError> {
        let index = fields::index_of(encoding).ok_or(unsupported(encoding))?;
        self.slots[index] = if supported {
            FieldState::Unset
        } else {
            FieldState::Unsupported
        };
        Ok(())
    }

    /// Forgets a field's value (it becomes unset, unless it is unsupported).
    pub fn unset<F: VmcsField>(&mut self, field: F) {
        if let Some(slot) = fields::index_of(field.encoding().full()).map(|i| &mut self.slots[i]) {
            if *slot != FieldState::Unsupported {
                *slot = FieldState::Unset;
            }
        }
    }

    /// Forgets every value (unsupported fields stay unsupported).
    pub fn clear(&mut self) {
        for slot in &mut self.slots {
            if *slot != FieldState::Unsupported {
                *slot = FieldState::Unset;
            }
        }
    }

    /// Sets a VM-exit information field, as a VM exit would (the way tests and the VM-entry
    /// checker fake exits). Does nothing if the field is marked unsupported or unknown.
    pub fn set_exit_info<F: ExitInfoField>(&mut self, field: F, value: F::Value) {
        // Read-only fields are always known and well formed; the store cannot fail for them
        // except when marked unsupported, which is the documented no-op.
        let _ = self.store(field.encoding(), value.into());
    }

    /// The set fields with their values, in the order of [`fields::ALL`].
    pub fn iter(&self) -> impl Iterator<Item = (&'static FieldInfo, u64)> + '_ {
        fields::ALL
            .iter()
            .zip(self.slots.iter())
            .filter_map(|(info, slot)| match slot {
                FieldState::Value(value) => Some((info, *value)),
                _ => None,
            })
    }

    /// The number of set fields.
    #[must_use]
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// True when no field is set.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Resolves an encoding to its slot index and access type, or error 12.
    fn resolve(
        &self,
        encoding: FieldEncoding,
    ) -> Result<(usize, &'static FieldInfo, Access), VmcsError> {
        let (info, access) = fields::lookup(encoding).ok_or(unsupported(encoding))?;
        let index = fields::index_of(info.encoding).ok_or(unsupported(encoding))?;
        if self.slots[index] == FieldState::Unsupported {
            return Err(unsupported(encoding));
        }
        Ok((index, info, access))
    }

    /// Stores a value like VMWRITE, without the read-only check.
    fn store(&mut self, encoding: FieldEncoding, value: u64) -> Result<(), VmcsError> {
        let (index, info, access) = self.resolve(encoding)?;
        let slot = &mut self.slots[index];
        *slot = match access {
            Access::Full => FieldState::Value(value & info.width.mask()),
            Access::High => {
                let low = match *slot {
                    FieldState::Value(old) => old & 0xffff_ffff,
                    _ => 0,
                };
                FieldState::Value(low | (value << 32))
            }
        };
        Ok(())
    }
}

const fn unsupported(encoding: FieldEncoding) -> VmcsError {
    VmcsError::valid(encoding, VmInstructionError::UNSUPPORTED_VMCS_COMPONENT)
}

impl VmcsRead for SoftVmcs {
    fn read_raw(&self, encoding: FieldEncoding) -> Result<u64, VmcsError> {
        let (index, info, access) = self.resolve(encoding)?;
        match self.slots[index] {
            FieldState::Value(value) => Ok(match access {
                Access::Full => value & info.width.mask(),
                Access::High => value >> 32,
            }),
            _ => Err(VmcsError::Unset(encoding)),
        }
    }
}

impl VmcsWrite for SoftVmcs {
    fn write_raw(&mut self, encoding: FieldEncoding, value: u64) -> Result<(), VmcsError> {
        let (_, info, _) = self.resolve(encoding)?;
        if info.is_read_only() && !self.vmwrite_to_exit_info {
            return Err(VmcsError::valid(
                encoding,
                VmInstructionError::VMWRITE_READ_ONLY_COMPONENT,
            ));
        }
        self.store(encoding, value)
    }
}

impl fmt::Debug for SoftVmcs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        for (info, value) in self.iter() {
            map.entry(&format_args!("{}", info.ident), &format_args!("{value:#x}"));
        }
        map.finish()
    }
}

/// The natural width of [`Width::Natural`] fields in this model: 64 bits, as on every processor
/// that supports Intel 64 (SDM 25.11.2).
const _: () = assert!(Width::Natural.bits() == 64);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::VmFail;
    use crate::fields::{control, exit_info, guest, host};
    use crate::vmcs::VmcsWrite;

    #[test]
    fn every_field_round_trips_at_its_width() {
        let mut vmcs = SoftVmcs::new().with_vmwrite_to_exit_info(true);
        for (n, info) in fields::ALL.iter().enumerate() {
            let pattern = 0xa5a5_5a5a_f00d_0000_u64 | n as u64;
            vmcs.write_raw(info.encoding, pattern).unwrap();
            let expected = pattern & info.width.mask();
            assert_eq!(vmcs.read_raw(info.encoding), Ok(expected), "{}", info.ident);
            if let Some(high) = info.high_encoding() {
                assert_eq!(vmcs.read_raw(high), Ok(pattern >> 32), "{}", info.ident);
            }
        }
        assert_eq!(vmcs.len(), fields::COUNT);
    }

    #[test]
    fn widths_truncate_like_vmwrite() {
        let mut vmcs = SoftVmcs::new();
        vmcs.write_raw(guest::CS_SELECTOR.encoding(), 0xdead_beef_1234_5678)
            .unwrap();
        assert_eq!(vmcs.read(guest::CS_SELECTOR), Ok(0x5678));
        assert_eq!(vmcs.read_raw(guest::CS_SELECTOR.encoding()), Ok(0x5678));
        vmcs.write_raw(guest::CS_LIMIT.encoding(), 0xdead_beef_1234_5678)
            .unwrap();
        assert_eq!(vmcs.read(guest::CS_LIMIT), Ok(0x1234_5678));
        vmcs.write(guest::RIP, u64::MAX).unwrap();
        assert_eq!(vmcs.read(guest::RIP), Ok(u64::MAX));
        vmcs.write(host::IA32_SYSENTER_CS, 0x10).unwrap();
        assert_eq!(vmcs.read_raw(host::IA32_SYSENTER_CS.encoding()), Ok(0x10));
    }

    #[test]
    fn high_access_touches_only_bits_63_32() {
        let mut vmcs = SoftVmcs::new();
        // A HIGH write to an unset field leaves bits 31:0 zero.
        vmcs.write(guest::IA32_EFER.high(), 0x1234_5678).unwrap();
        assert_eq!(vmcs.read(guest::IA32_EFER), Ok(0x1234_5678_0000_0000));
        vmcs.write(guest::IA32_EFER, 0x0000_0000_0000_0d01).unwrap();
        assert_eq!(vmcs.read(guest::IA32_EFER.high()), Ok(0));
        vmcs.write(guest::IA32_EFER.high(), 0xaaaa_bbbb).unwrap();
        assert_eq!(vmcs.read(guest::IA32_EFER), Ok(0xaaaa_bbbb_0000_0d01));
        // Raw HIGH writes ignore operand bits 63:32.
        vmcs.write_raw(guest::IA32_EFER.high().encoding(), 0xffff_ffff_0000_0001)
            .unwrap();
        assert_eq!(vmcs.read(guest::IA32_EFER), Ok(0x0000_0001_0000_0d01));
        // HIGH access to a field that is not 64-bit is an unsupported component.
        let err = vmcs.read_raw(FieldEncoding(0x681f)).unwrap_err();
        assert!(err.is_unsupported_component(), "{err:?}");
    }

    #[test]
    fn read_only_fields_are_refused_like_hardware() {
        let mut vmcs = SoftVmcs::new();
        for info in fields::ALL.iter().filter(|info| info.is_read_only()) {
            assert_eq!(
                vmcs.write_raw(info.encoding, 1),
                Err(VmcsError::Instruction {
                    encoding: info.encoding,
                    fail: VmFail::Valid(VmInstructionError::VMWRITE_READ_ONLY_COMPONENT),
                }),
                "{}",
                info.ident
            );
            if let Some(high) = info.high_encoding() {
                assert_eq!(
                    vmcs.write_raw(high, 1).unwrap_err().instruction_error(),
                    Some(VmInstructionError(13))
                );
            }
        }
        assert!(vmcs.is_empty());
        vmcs.set_exit_info(exit_info::EXIT_REASON, 48);
        vmcs.set_exit_info(exit_info::EXIT_QUALIFICATION, 0x181);
        vmcs.set_exit_info(exit_info::GUEST_PHYSICAL_ADDRESS.high(), 0x1);
        assert_eq!(vmcs.read(exit_info::EXIT_REASON), Ok(48));
        assert_eq!(vmcs.read(exit_info::EXIT_QUALIFICATION), Ok(0x181));
        assert_eq!(
            vmcs.read(exit_info::GUEST_PHYSICAL_ADDRESS),
            Ok(0x1_0000_0000)
        );
    }

    #[test]
    fn unknown_and_unsupported_encodings_fail_with_error_12() {
        let mut vmcs = SoftVmcs::new();
        for raw in [0x482c, 0x1000, 0x8000, 0x0801, 0xffff_ffff] {
            let e = FieldEncoding(raw);
            assert!(
                vmcs.read_raw(e).unwrap_err().is_unsupported_component(),
                "{raw:#x}"
            );
            assert!(
                vmcs.write_raw(e, 0).unwrap_err().is_unsupported_component(),
                "{raw:#x}"
            );
        }
        vmcs.set_supported(control::HLAT_POINTER.encoding(), false)
            .unwrap();
        assert!(
            vmcs.write(control::HLAT_POINTER, 0)
                .unwrap_err()
                .is_unsupported_component()
        );
        assert!(
            vmcs.read(control::HLAT_POINTER.high())
                .unwrap_err()
                .is_unsupported_component()
        );
        assert_eq!(
            vmcs.state(control::HLAT_POINTER.encoding()),
            Some(FieldState::Unsupported)
        );
        vmcs.set_exit_info(exit_info::EXIT_REASON, 1);
        vmcs.set_supported(exit_info::EXIT_REASON.encoding(), false)
            .unwrap();
        vmcs.set_exit_info(exit_info::EXIT_REASON, 1);
        assert_eq!(
            vmcs.state(exit_info::EXIT_REASON.encoding()),
            Some(FieldState::Unsupported)
        );
        assert!(vmcs.set_supported(FieldEncoding(0x482c), true).is_err());
        vmcs.set_supported(control::HLAT_POINTER.encoding(), true)
            .unwrap();
        assert_eq!(
            vmcs.read(control::HLAT_POINTER),
            Err(VmcsError::Unset(control::HLAT_POINTER.encoding()))
        );
    }

    #[test]
    fn unset_clear_capture_and_apply() {
        let mut a = SoftVmcs::new();
        a.write(guest::RIP, 0x1000).unwrap();
        a.write(guest::RSP, 0x2000).unwrap();
        a.set_exit_info(exit_info::EXIT_REASON, 12);
        a.set_supported(guest::IA32_PKRS.encoding(), false).unwrap();
        let b = SoftVmcs::capture(&a).unwrap();
        assert_eq!(a, b);
        let mut c = SoftVmcs::new();
        a.apply_to(&mut c).unwrap();
        assert_eq!(c.len(), 2, "the exit reason is not written back");
        a.unset(guest::RSP);
        a.unset(guest::IA32_PKRS);
        assert_eq!(
            a.state(guest::IA32_PKRS.encoding()),
            Some(FieldState::Unsupported)
        );
        assert_eq!(a.len(), 2);
        a.clear();
        assert!(a.is_empty());
        assert_eq!(
            a.state(guest::IA32_PKRS.encoding()),
            Some(FieldState::Unsupported)
        );
        assert_eq!(a.state_at(fields::COUNT), None);
        let text = std::format!("{c:?}");
        assert!(
            text.contains("guest::RIP") && text.contains("0x1000"),
            "{text}"
        );
    }
}
