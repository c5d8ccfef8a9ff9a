//! Clearing the translations a new vCPU could inherit: INVVPID for its VPID and INVEPT for its
//! EPTP, before its first VM entry.
//!
//! Manual: Intel® 64 and IA-32 Architectures Software Developer's Manual, Combined Volumes, Order
//! Number 325462-086US, December 2024, Vol. 3C 29.4.1 "Information That May Be Cached" (linear
//! mappings tagged with a VPID, guest-physical mappings with an EP4TA, combined mappings with
//! both), 29.4.3 "Invalidating Cached Translation Information" (29.4.3.1 "Operations that
//! Invalidate Cached Mappings", 29.4.3.2 "Operations that Need Not Invalidate Cached Mappings",
//! 29.4.3.3 "Guidelines for Use of the INVVPID Instruction", 29.4.3.4 "Guidelines for Use of the
//! INVEPT Instruction"), 31.3 "VMX Instructions" (INVEPT, INVVPID), Appendix A.10 "VPID and EPT
//! Capabilities".
//!
//! Why at creation: VMXON, VMXOFF and VMX transitions need not invalidate EPT-tagged mappings,
//! and with "enable VPID" VMX transitions need not invalidate VPID-tagged or combined mappings
//! either (29.4.3.2). A new vCPU reuses VPID 1 (the default) and frames of a platform pool,
//! so its EPT root may sit where an earlier vCPU's did, and the processor may still hold that
//! vCPU's translations under the same tags. So before the first entry:
//! - with a VPID: INVVPID single-context for it (type 1), or all-context (type 2) when
//!   IA32_VMX_EPT_VPID_CAP lacks single-context (bit 41, bit 42 for all-context); without a
//!   VPID nothing (every VM entry and exit invalidates VPID 0000H's mappings, 29.4.3.1);
//! - INVEPT single-context for the new EPTP (type 1, bit 25), or global (type 2, bit 26).
//!
//! INVVPID need not invalidate guest-physical mappings and INVEPT need not invalidate linear
//! ones (29.4.3.2), so both run. The instructions sit behind [`Invalidate`], so the choice and
//! order are host-tested with a mock; `hardware` implements it with the instructions.

use hvkit_vmx::capabilities::EptVpidCap;
use hvkit_vmx::instructions::{InveptType, InvvpidType};
use hvkit_vmx::{VmFail, VmInstructionError};

/// INVEPT and INVVPID, for [`invalidate_new_vcpu`] (the processor's in `hardware`, a mock in
/// the host tests).
#[cfg_attr(test, mockall::automock)]
pub trait Invalidate {
    /// IA32_VMX_EPT_VPID_CAP of the processor (SDM A.10).
    fn capabilities(&self) -> EptVpidCap;
    /// Executes INVVPID of `kind` (SDM 31.3 "INVVPID—Invalidate Translations Based on VPID").
    ///
    /// # Errors
    /// The VMfail the instruction reported.
    fn invvpid(&mut self, kind: InvvpidType) -> Result<(), VmFail>;
    /// Executes INVEPT of `kind` (SDM 31.3 "INVEPT—Invalidate Translations Derived from EPT").
    ///
    /// # Errors
    /// The VMfail the instruction reported.
    fn invept(&mut self, kind: InveptType) -> Result<(), VmFail>;
}

/// Why the invalidation at vCPU creation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidationError {
    /// INVVPID reported VMfail.
    #[error("INVVPID {kind:?} failed: {fail}")]
    Invvpid {
        /// The type and VPID that failed.
        kind: InvvpidType,
        /// What the processor reported.
        fail: VmFail,
    },
    /// INVEPT reported VMfail.
    #[error("INVEPT {kind:?} failed: {fail}")]
    Invept {
        /// The type and EPTP that failed.
        kind: InveptType,
        /// What the processor reported.
        fail: VmFail,
    },
    /// The vCPU uses a VPID but IA32_VMX_EPT_VPID_CAP reports neither single-context nor
    /// all-context INVVPID (bits 41 and 42, or INVVPID itself, bit 32).
    #[error("the processor has VPIDs but neither single- nor all-context INVVPID")]
    NoInvvpid,
    /// The vCPU uses EPT but IA32_VMX_EPT_VPID_CAP reports neither single-context nor
    /// all-context INVEPT (bits 25 and 26, or INVEPT itself, bit 20).
    #[error("the processor has EPT but neither single- nor all-context INVEPT")]
    NoInvept,
}

/// The INVVPID type that clears every mapping of `vpid`: single-context if the processor has it,
/// else all-context; `None` without a VPID (`vpid` 0: VMX transitions flush VPID 0000H).
///
/// # Errors
/// [`InvalidationError::NoInvvpid`] when the processor has neither type.
pub fn invvpid_type(caps: EptVpidCap, vpid: u16) -> Result<Option<InvvpidType>, InvalidationError> {
    if vpid == 0 {
        return Ok(None);
    }
    if !caps.contains(EptVpidCap::INVVPID) {
        return Err(InvalidationError::NoInvvpid);
    }
    if caps.contains(EptVpidCap::INVVPID_SINGLE_CONTEXT) {
        Ok(Some(InvvpidType::SingleContext { vpid }))
    } else if caps.contains(EptVpidCap::INVVPID_ALL_CONTEXT) {
        Ok(Some(InvvpidType::AllContexts))
    } else {
        Err(InvalidationError::NoInvvpid)
    }
}

/// The INVEPT type that clears every mapping of `eptp`: single-context if the processor has it,
/// else all-context (global).
///
/// # Errors
/// [`InvalidationError::NoInvept`] when the processor has neither type.
pub fn invept_type(caps: EptVpidCap, eptp: u64) -> Result<InveptType, InvalidationError> {
    if !caps.contains(EptVpidCap::INVEPT) {
        return Err(InvalidationError::NoInvept);
    }
    if caps.contains(EptVpidCap::INVEPT_SINGLE_CONTEXT) {
        Ok(InveptType::SingleContext { eptp })
    } else if caps.contains(EptVpidCap::INVEPT_ALL_CONTEXT) {
        Ok(InveptType::AllContexts)
    } else {
        Err(InvalidationError::NoInvept)
    }
}

/// Invalidates what a new vCPU could inherit (see the module documentation): INVVPID for `vpid`
/// when it is not 0 (pass 0 when "enable VPID" is off), then INVEPT for `eptp`.
///
/// # Errors
/// [`InvalidationError::NoInvvpid`] / [`InvalidationError::NoInvept`] when the processor has no
/// usable type (nothing is executed then), or the instruction that reported VMfail (a failed
/// INVVPID stops before INVEPT).
pub fn invalidate_new_vcpu(
    cpu: &mut impl Invalidate,
    vpid: u16,
    eptp: u64,
) -> Result<(), InvalidationError> {
    let caps = cpu.capabilities();
    let invvpid = invvpid_type(caps, vpid)?;
    let invept = invept_type(caps, eptp)?;
    if let Some(kind) = invvpid {
        cpu.invvpid(kind)
            .map_err(|fail| InvalidationError::Invvpid { kind, fail })?;
    }
    cpu.invept(invept)
        .map_err(|fail| InvalidationError::Invept { kind: invept, fail })
}

/// The refusal of an INVEPT or INVVPID type the capability MSR does not report, as the processor
/// gives it when it has the instruction: VMfailValid with error 28, "invalid operand to
/// INVEPT/INVVPID" (SDM 31.3). `hardware` returns it instead of executing an instruction that
/// could raise #UD.
pub(crate) const UNSUPPORTED_TYPE: VmFail =
    VmFail::Valid(VmInstructionError::INVALID_INVEPT_INVVPID_OPERAND);

/// Whether IA32_VMX_EPT_VPID_CAP reports INVVPID of `kind`'s type (bits 32, 40–43).
#[must_use]
pub fn invvpid_supported(caps: EptVpidCap, kind: InvvpidType) -> bool {
    let ty = match kind {
        InvvpidType::IndividualAddress { .. } => EptVpidCap::INVVPID_INDIVIDUAL_ADDRESS,
        InvvpidType::SingleContext { .. } => EptVpidCap::INVVPID_SINGLE_CONTEXT,
        InvvpidType::AllContexts => EptVpidCap::INVVPID_ALL_CONTEXT,
        InvvpidType::SingleContextRetainingGlobals { .. } => {
            EptVpidCap::INVVPID_SINGLE_CONTEXT_RETAINING_GLOBALS
        }
        _ => return false,
    };
    caps.contains(EptVpidCap::INVVPID | ty)
}

/// Whether IA32_VMX_EPT_VPID_CAP reports INVEPT of `kind`'s type (bits 20, 25, 26).
#[must_use]
pub fn invept_supported(caps: EptVpidCap, kind: InveptType) -> bool {
    let ty = match kind {
        InveptType::SingleContext { .. } => EptVpidCap::INVEPT_SINGLE_CONTEXT,
        InveptType::AllContexts => EptVpidCap::INVEPT_ALL_CONTEXT,
        _ => return false,
    };
    caps.contains(EptVpidCap::INVEPT | ty)
}

#[cfg(test)]
mod tests {
    use mockall::Sequence;
    use mockall::predicate::eq;

    use super::*;
    use crate::error::VcpuError;

    /// IA32_VMX_EPT_VPID_CAP of Bochs' Skylake-X model: every INVEPT and INVVPID type.
    const SKYLAKE_X: u64 = 0x0f01_0673_4141;
    const EPTP: u64 = 0x20_001e;

    fn mock(caps: EptVpidCap) -> MockInvalidate {
        let mut m = MockInvalidate::new();
        m.expect_capabilities().return_const(caps);
        m
    }

    #[test]
    fn single_context_invvpid_then_invept_when_the_processor_has_them() {
        let caps = EptVpidCap::from_bits_retain(SKYLAKE_X);
        let mut m = mock(caps);
        let mut seq = Sequence::new();
        m.expect_invvpid()
            .with(eq(InvvpidType::SingleContext { vpid: 1 }))
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_| Ok(()));
        m.expect_invept()
            .with(eq(InveptType::SingleContext { eptp: EPTP }))
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_| Ok(()));
        assert_eq!(invalidate_new_vcpu(&mut m, 1, EPTP), Ok(()));
        // Another VPID is invalidated as itself.
        let mut m = mock(caps);
        m.expect_invvpid()
            .with(eq(InvvpidType::SingleContext { vpid: 0x1234 }))
            .times(1)
            .returning(|_| Ok(()));
        m.expect_invept().times(1).returning(|_| Ok(()));
        assert_eq!(invalidate_new_vcpu(&mut m, 0x1234, EPTP), Ok(()));
    }

    #[test]
    fn all_context_when_single_context_is_missing() {
        let caps = EptVpidCap::INVVPID
            | EptVpidCap::INVVPID_ALL_CONTEXT
            | EptVpidCap::INVVPID_INDIVIDUAL_ADDRESS
            | EptVpidCap::INVEPT
            | EptVpidCap::INVEPT_ALL_CONTEXT;
        let mut m = mock(caps);
        let mut seq = Sequence::new();
        m.expect_invvpid()
            .with(eq(InvvpidType::AllContexts))
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_| Ok(()));
        m.expect_invept()
            .with(eq(InveptType::AllContexts))
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_| Ok(()));
        assert_eq!(invalidate_new_vcpu(&mut m, 1, EPTP), Ok(()));
    }

    #[test]
    fn no_invvpid_without_a_vpid() {
        let mut m = mock(EptVpidCap::from_bits_retain(SKYLAKE_X));
        m.expect_invvpid().times(0);
        m.expect_invept()
            .with(eq(InveptType::SingleContext { eptp: EPTP }))
            .times(1)
            .returning(|_| Ok(()));
        assert_eq!(invalidate_new_vcpu(&mut m, 0, EPTP), Ok(()));
        // Without VPID, INVVPID capabilities do not matter.
        let mut m = mock(EptVpidCap::INVEPT | EptVpidCap::INVEPT_SINGLE_CONTEXT);
        m.expect_invvpid().times(0);
        m.expect_invept().times(1).returning(|_| Ok(()));
        assert_eq!(invalidate_new_vcpu(&mut m, 0, EPTP), Ok(()));
    }

    #[test]
    fn vmfail_is_a_typed_error_and_stops() {
        let error = VmFail::Valid(VmInstructionError::INVALID_INVEPT_INVVPID_OPERAND);
        let mut m = mock(EptVpidCap::from_bits_retain(SKYLAKE_X));
        m.expect_invvpid().times(1).returning(move |_| Err(error));
        m.expect_invept().times(0);
        let e = invalidate_new_vcpu(&mut m, 1, EPTP);
        assert_eq!(
            e,
            Err(InvalidationError::Invvpid {
                kind: InvvpidType::SingleContext { vpid: 1 },
                fail: error
            })
        );
        let mut m = mock(EptVpidCap::from_bits_retain(SKYLAKE_X));
        m.expect_invvpid().times(1).returning(|_| Ok(()));
        m.expect_invept()
            .times(1)
            .returning(|_| Err(VmFail::Invalid));
        let e = invalidate_new_vcpu(&mut m, 1, EPTP);
        assert_eq!(
            e,
            Err(InvalidationError::Invept {
                kind: InveptType::SingleContext { eptp: EPTP },
                fail: VmFail::Invalid
            })
        );
        let e = VcpuError::from(e.unwrap_err());
        assert!(matches!(
            e,
            VcpuError::Invalidation(InvalidationError::Invept { .. })
        ));
        assert!(std::format!("{e}").contains("INVEPT"));
    }

    #[test]
    fn no_usable_type_executes_nothing() {
        // VPID in use, INVVPID without single- or all-context (or missing altogether).
        for caps in [
            EptVpidCap::INVEPT | EptVpidCap::INVEPT_SINGLE_CONTEXT,
            EptVpidCap::INVEPT
                | EptVpidCap::INVEPT_SINGLE_CONTEXT
                | EptVpidCap::INVVPID
                | EptVpidCap::INVVPID_INDIVIDUAL_ADDRESS,
            // The type bits without the instruction bit are not trusted.
            EptVpidCap::INVEPT
                | EptVpidCap::INVEPT_SINGLE_CONTEXT
                | EptVpidCap::INVVPID_SINGLE_CONTEXT,
        ] {
            let mut m = mock(caps);
            m.expect_invvpid().times(0);
            m.expect_invept().times(0);
            assert_eq!(
                invalidate_new_vcpu(&mut m, 1, EPTP),
                Err(InvalidationError::NoInvvpid),
                "{caps:?}"
            );
        }
        for caps in [
            EptVpidCap::empty(),
            EptVpidCap::INVEPT,
            EptVpidCap::INVEPT_SINGLE_CONTEXT,
        ] {
            let mut m = mock(caps);
            m.expect_invvpid().times(0);
            m.expect_invept().times(0);
            assert_eq!(
                invalidate_new_vcpu(&mut m, 0, EPTP),
                Err(InvalidationError::NoInvept),
                "{caps:?}"
            );
        }
    }

    #[test]
    fn supported_types_follow_the_capability_bits() {
        let all = EptVpidCap::from_bits_retain(SKYLAKE_X);
        for kind in [
            InvvpidType::IndividualAddress {
                vpid: 1,
                address: 0,
            },
            InvvpidType::SingleContext { vpid: 1 },
            InvvpidType::AllContexts,
            InvvpidType::SingleContextRetainingGlobals { vpid: 1 },
        ] {
            assert!(invvpid_supported(all, kind), "{kind:?}");
            assert!(!invvpid_supported(all - EptVpidCap::INVVPID, kind));
        }
        let single = InveptType::SingleContext { eptp: EPTP };
        assert!(invept_supported(all, single) && invept_supported(all, InveptType::AllContexts));
        assert!(!invept_supported(
            all - EptVpidCap::INVEPT_SINGLE_CONTEXT,
            single
        ));
        assert!(!invept_supported(
            all - EptVpidCap::INVEPT,
            InveptType::AllContexts
        ));
        assert!(!invvpid_supported(
            all - EptVpidCap::INVVPID_SINGLE_CONTEXT,
            InvvpidType::SingleContext { vpid: 1 }
        ));
        assert_eq!(
            UNSUPPORTED_TYPE,
            VmFail::Valid(VmInstructionError::INVALID_INVEPT_INVVPID_OPERAND)
        );
    }
}
