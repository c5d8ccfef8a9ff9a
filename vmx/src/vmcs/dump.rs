//! Listing the fields of a VMCS by name, and the differences between two software VMCSs (SDM
//! Appendix B "Field Encoding in VMCS" for the names; SDM 325462-086US).

use core::fmt;

use super::{FieldState, SoftVmcs, VmcsError, VmcsRead};
use crate::fields::{self, FieldInfo};

/// Calls `f` with every field of `vmcs` that has a value, in the order of [`fields::ALL`].
///
/// Fields the VMCS does not support (error 12) and, for a [`SoftVmcs`], fields never written are
/// skipped. Each field costs one [`VmcsRead::read_raw`].
///
/// # Errors
/// Any other read failure stops the dump, for example VMfailInvalid when there is no current
/// VMCS.
pub fn dump<V: VmcsRead + ?Sized>(
    vmcs: &V,
    mut f: impl FnMut(&'static FieldInfo, u64),
) -> Result<(), VmcsError> {
    for info in fields::ALL {
        match vmcs.read_raw(info.encoding) {
            Ok(value) => f(info, value),
            Err(VmcsError::Unset(_)) => {}
            Err(e) if e.is_unsupported_component() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Displays every field of a VMCS with a value, one line per field:
/// `Guest CS selector (0x0802) guest::CS_SELECTOR = 0x10`.
///
/// A read failure other than "unsupported" or "unset" ends the listing with an `error:` line.
pub struct Dump<'a, V: VmcsRead + ?Sized>(pub &'a V);

impl<V: VmcsRead + ?Sized> fmt::Display for Dump<'_, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut result = Ok(());
        let outcome = dump(self.0, |info, value| {
            if result.is_ok() {
                result = writeln!(f, "{info} {} = {value:#x}", info.ident);
            }
        });
        result?;
        match outcome {
            Ok(()) => Ok(()),
            Err(e) => writeln!(f, "error: {e}"),
        }
    }
}

impl<V: VmcsRead + ?Sized> fmt::Debug for Dump<'_, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// One field that differs between two software VMCSs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FieldDiff {
    /// The field.
    pub field: &'static FieldInfo,
    /// Its state in the first VMCS.
    pub before: FieldState,
    /// Its state in the second VMCS.
    pub after: FieldState,
}

impl fmt::Display for FieldDiff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn state(f: &mut fmt::Formatter<'_>, s: FieldState) -> fmt::Result {
            match s {
                FieldState::Value(v) => write!(f, "{v:#x}"),
                FieldState::Unset => f.write_str("unset"),
                FieldState::Unsupported => f.write_str("unsupported"),
            }
        }
        write!(f, "{} {}: ", self.field, self.field.ident)?;
        state(f, self.before)?;
        f.write_str(" -> ")?;
        state(f, self.after)
    }
}

/// The fields whose state differs between `before` and `after`, in the order of
/// [`fields::ALL`].
pub fn diff<'a>(before: &'a SoftVmcs, after: &'a SoftVmcs) -> impl Iterator<Item = FieldDiff> + 'a {
    fields::ALL
        .iter()
        .enumerate()
        .filter_map(move |(index, field)| {
            let (b, a) = (before.state_at(index)?, after.state_at(index)?);
            (b != a).then_some(FieldDiff {
                field,
                before: b,
                after: a,
            })
        })
}

/// Displays [`diff`] one line per changed field:
/// `Guest RIP (0x681e) guest::RIP: 0x1000 -> 0x1003`.
#[derive(Clone, Copy)]
pub struct Diff<'a>(pub &'a SoftVmcs, pub &'a SoftVmcs);

impl fmt::Display for Diff<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for change in diff(self.0, self.1) {
            writeln!(f, "{change}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Diff<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::VmFail;
    use crate::fields::{FieldEncoding, control, exit_info, guest};
    use crate::vmcs::VmcsWrite;
    use std::string::ToString;
    use std::vec::Vec;

    #[test]
    fn dump_lists_set_fields_in_table_order() {
        let mut vmcs = SoftVmcs::new();
        vmcs.write(guest::RIP, 0x1000).unwrap();
        vmcs.write(guest::CS_SELECTOR, 0x10).unwrap();
        vmcs.set_exit_info(exit_info::EXIT_REASON, 30);
        vmcs.set_supported(control::HLAT_POINTER.encoding(), false)
            .unwrap();
        let mut seen = Vec::new();
        dump(&vmcs, |info, value| seen.push((info.ident, value))).unwrap();
        assert_eq!(
            seen,
            [
                ("guest::CS_SELECTOR", 0x10),
                ("exit_info::EXIT_REASON", 30),
                ("guest::RIP", 0x1000)
            ]
        );
        let text = Dump(&vmcs).to_string();
        assert_eq!(
            text,
            "Guest CS selector (0x0802) guest::CS_SELECTOR = 0x10\n\
             Exit reason (0x4402) exit_info::EXIT_REASON = 0x1e\n\
             Guest RIP (0x681e) guest::RIP = 0x1000\n"
        );
    }

    struct NoCurrentVmcs;

    impl VmcsRead for NoCurrentVmcs {
        fn read_raw(&self, encoding: FieldEncoding) -> Result<u64, VmcsError> {
            Err(VmcsError::Instruction {
                encoding,
                fail: VmFail::Invalid,
            })
        }
    }

    #[test]
    fn dump_stops_at_a_real_failure() {
        let mut calls = 0;
        let err = dump(&NoCurrentVmcs, |_, _| calls += 1).unwrap_err();
        assert_eq!(calls, 0);
        assert_eq!(err.encoding(), fields::ALL[0].encoding);
        let text = Dump(&NoCurrentVmcs).to_string();
        assert!(
            text.starts_with("error: ") && text.contains("VMfailInvalid"),
            "{text}"
        );
    }

    #[test]
    fn diff_reports_changed_added_removed_and_unsupported() {
        let mut before = SoftVmcs::new();
        before.write(guest::RIP, 0x1000).unwrap();
        before.write(guest::RSP, 0x8000).unwrap();
        before.write(guest::RFLAGS, 0x2).unwrap();
        let mut after = before.clone();
        assert_eq!(diff(&before, &after).count(), 0);
        after.write(guest::RIP, 0x1003).unwrap();
        after.unset(guest::RSP);
        after.set_exit_info(exit_info::VM_EXIT_INSTRUCTION_LENGTH, 3);
        after
            .set_supported(control::TSC_MULTIPLIER.encoding(), false)
            .unwrap();
        let changes: Vec<_> = diff(&before, &after).collect();
        assert_eq!(changes.len(), 4);
        assert_eq!(changes[0].field.ident, "control::TSC_MULTIPLIER");
        assert_eq!(changes[0].after, FieldState::Unsupported);
        assert_eq!(
            changes[1].field.ident,
            "exit_info::VM_EXIT_INSTRUCTION_LENGTH"
        );
        assert_eq!(changes[1].before, FieldState::Unset);
        assert_eq!(changes[2].field.ident, "guest::RSP");
        assert_eq!(
            (changes[2].before, changes[2].after),
            (FieldState::Value(0x8000), FieldState::Unset)
        );
        assert_eq!(changes[3].field.ident, "guest::RIP");
        let text = Diff(&before, &after).to_string();
        assert!(
            text.ends_with("Guest RIP (0x681e) guest::RIP: 0x1000 -> 0x1003\n"),
            "{text}"
        );
        assert!(text.contains("guest::RSP: 0x8000 -> unset"), "{text}");
        assert!(
            text.contains("control::TSC_MULTIPLIER: unset -> unsupported"),
            "{text}"
        );
    }
}
