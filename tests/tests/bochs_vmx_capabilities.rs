//! Host tests of hvkit-vmx's capability decoding against the values Bochs's Skylake-X and Core 2
//! Penryn models reported in the vmx/bochs smoke runs (`tests/fixtures/bochs-*.msrs`; those runs
//! check the fixtures still match the emulator).
#![expect(
    clippy::unwrap_used,
    reason = "test code: a malformed fixture should fail loudly"
)]

use hvkit_vmx::capabilities::{ControlsRequest, EptVpidCap, VmxCapabilities};
use hvkit_vmx::controls::{
    EntryControls, ExitControls, PrimaryControls, SecondaryControls, TertiaryControls,
};
use hvkit_vmx::fields::{self, FieldEncoding};
use hvkit_vmx::vmcs::{SoftVmcs, VmcsRead};

const SKYLAKE: &str = include_str!("../fixtures/bochs-corei7_skylake_x.msrs");
const PENRYN: &str = include_str!("../fixtures/bochs-core2_penryn_t9600.msrs");

fn fixture(text: &str) -> Vec<(u32, u64)> {
    text.lines()
        .filter_map(|l| l.strip_prefix("msr "))
        .map(|l| {
            let (msr, value) = l.split_once(' ').unwrap();
            let parse = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).unwrap();
            (u32::try_from(parse(msr)).unwrap(), parse(value))
        })
        .collect()
}

fn capabilities_of(text: &str) -> VmxCapabilities {
    let msrs = fixture(text);
    let read = |msr: u32| {
        msrs.iter()
            .find(|(m, _)| *m == msr)
            .map(|(_, v)| *v)
            .unwrap_or_else(|| unreachable!("MSR {msr:#x} was not read on Bochs"))
    };
    VmxCapabilities::read(&read)
}

fn capabilities() -> VmxCapabilities {
    capabilities_of(SKYLAKE)
}

#[test]
fn decodes_the_bochs_snapshot() {
    let caps = capabilities();
    assert_eq!(caps.basic.revision_id(), 0x2b);
    assert!(caps.basic.true_controls());
    assert_eq!(caps.basic.memory_type(), 6);
    assert_eq!(caps.pin_based.must_be_one, 0x16);
    assert_eq!(caps.primary.must_be_one, 0x0400_6172);
    assert!(caps.secondary.is_some());
    assert!(caps.tertiary.is_none(), "Bochs has no tertiary controls");
    assert!(caps.secondary_exit.is_none());
    assert!(caps.misc.vmwrite_any_field());
    assert!(caps.misc.activity_hlt());
    assert_eq!(caps.cr0_fixed.fixed0, 0x8000_0021);
    assert_eq!(caps.cr4_fixed.fixed0, 0x2000);
    assert_eq!(caps.vmcs_max_index, 0x1a);
    let ept = caps.ept_vpid.unwrap();
    assert!(ept.contains(
        EptVpidCap::PAGE_WALK_4
            | EptVpidCap::MEMORY_TYPE_WB
            | EptVpidCap::PAGE_1G
            | EptVpidCap::INVEPT_SINGLE_CONTEXT
            | EptVpidCap::INVVPID_SINGLE_CONTEXT
    ));
    assert!(!ept.contains(EptVpidCap::PAGE_WALK_5));
    assert_eq!(caps.vmfunc, Some(1));
}

#[test]
fn adjusts_the_smoke_case_controls() {
    let caps = capabilities();
    let request = ControlsRequest {
        secondary: SecondaryControls::ENABLE_EPT | SecondaryControls::ENABLE_VPID,
        exit: ExitControls::HOST_ADDRESS_SPACE_SIZE | ExitControls::LOAD_IA32_EFER,
        entry: EntryControls::IA32E_MODE_GUEST | EntryControls::LOAD_IA32_EFER,
        ..ControlsRequest::default()
    };
    let adjusted = caps.adjust(&request).unwrap();
    // The values the smoke run printed and entered the guest with.
    assert_eq!(adjusted.pin_based, 0x16);
    assert_eq!(adjusted.primary, 0x8400_6172);
    assert_eq!(adjusted.secondary, 0x22);
    assert_eq!(adjusted.exit, 0x0023_6ffb);
    assert_eq!(adjusted.entry, 0x93fb);
}

#[test]
fn refuses_what_bochs_lacks() {
    let caps = capabilities();
    let request = ControlsRequest {
        primary: PrimaryControls::HLT_EXITING,
        tertiary: TertiaryControls::LOADIWKEY_EXITING,
        secondary: SecondaryControls::ENABLE_PML
            | SecondaryControls::ENABLE_ENCLS_EXITING
            | SecondaryControls::MODE_BASED_EXECUTE_CONTROL,
        ..ControlsRequest::default()
    };
    let refused = caps.adjust(&request).unwrap_err();
    assert_eq!(refused.tertiary, TertiaryControls::LOADIWKEY_EXITING);
    assert_eq!(refused.primary, PrimaryControls::ACTIVATE_TERTIARY_CONTROLS);
    assert_eq!(
        refused.secondary,
        SecondaryControls::ENABLE_ENCLS_EXITING | SecondaryControls::MODE_BASED_EXECUTE_CONTROL
    );
}

#[test]
fn penryn_has_vmx_without_ept() {
    let caps = capabilities_of(PENRYN);
    assert_eq!(caps.basic.revision_id(), 0x2b);
    assert!(caps.basic.true_controls());
    let secondary = caps.secondary.unwrap();
    assert_eq!(secondary.may_be_one, 0x41);
    assert!(
        caps.ept_vpid.is_none(),
        "no EPT or VPID, so no EPT/VPID MSR"
    );
    assert!(caps.vmfunc.is_none());
    assert!(!caps.misc.vmwrite_any_field());
    let refused = caps
        .adjust(&ControlsRequest {
            secondary: SecondaryControls::ENABLE_EPT | SecondaryControls::UNRESTRICTED_GUEST,
            entry: EntryControls::LOAD_IA32_EFER,
            ..ControlsRequest::default()
        })
        .unwrap_err();
    assert_eq!(
        refused.secondary,
        SecondaryControls::ENABLE_EPT | SecondaryControls::UNRESTRICTED_GUEST
    );
    assert_eq!(refused.entry, EntryControls::LOAD_IA32_EFER);
    // What the smoke run entered the guest with on this model.
    let adjusted = caps
        .adjust(&ControlsRequest {
            exit: ExitControls::HOST_ADDRESS_SPACE_SIZE,
            entry: EntryControls::IA32E_MODE_GUEST,
            ..ControlsRequest::default()
        })
        .unwrap();
    assert_eq!(adjusted.secondary, 0);
    assert_eq!(
        adjusted.primary & PrimaryControls::ACTIVATE_SECONDARY_CONTROLS.bits(),
        0
    );
}

/// The fields Bochs lacks, from `tests/fixtures/bochs-<model>.vmcs-unsupported`.
fn unsupported_fields(text: &str) -> Vec<FieldEncoding> {
    text.lines()
        .filter_map(|l| l.strip_prefix("vmcs-unsupported "))
        .map(|l| {
            let encoding = l.split_whitespace().next().unwrap();
            FieldEncoding(u32::from_str_radix(encoding.trim_start_matches("0x"), 16).unwrap())
        })
        .collect()
}

/// A software VMCS that models Bochs's field set answers like the emulator did: error 12 for
/// exactly the fields the e2e sweep found missing.
#[test]
fn soft_vmcs_models_the_bochs_field_sets() {
    for (text, msrs, supported) in [
        (
            include_str!("../fixtures/bochs-corei7_skylake_x.vmcs-unsupported"),
            SKYLAKE,
            151,
        ),
        (
            include_str!("../fixtures/bochs-core2_penryn_t9600.vmcs-unsupported"),
            PENRYN,
            122,
        ),
    ] {
        let missing = unsupported_fields(text);
        assert_eq!(missing.len() + supported, fields::ALL.len());
        let mut soft = SoftVmcs::new();
        for encoding in &missing {
            soft.set_supported(*encoding, false).unwrap();
        }
        for info in fields::ALL {
            let result = soft.read_raw(info.encoding);
            if missing.contains(&info.encoding) {
                assert!(
                    result.unwrap_err().is_unsupported_component(),
                    "{}",
                    info.ident
                );
            } else {
                // Supported but never written: unset, not unsupported.
                assert!(!result.is_err_and(|e| e.is_unsupported_component()));
            }
        }
        // Bochs reports the highest index it uses; none of its fields go beyond it.
        let max = capabilities_of(msrs).vmcs_max_index;
        assert_eq!(max, 0x1a);
    }
}
