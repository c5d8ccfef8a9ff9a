//! Host tests of hvkit-svm's feature decoding against the CPUID values QEMU TCG (`-cpu max`) and
//! Bochs (`trinity_apu`) reported in the svm smoke runs (`tests/fixtures/*.cpuid`; those runs
//! check the fixtures still match the emulators). The two differ where a hypervisor must check a
//! capability instead of assuming it: NRIP save.
#![expect(
    clippy::unwrap_used,
    reason = "test code: a malformed fixture should fail loudly"
)]

use hvkit_svm::features::{HostCapabilities, SvmFeatureFlags};

/// `cpuid leaf eax ebx ecx edx` lines of a fixture, as (leaf, [eax, ebx, ecx, edx]).
fn leaves(text: &str) -> Vec<(u32, [u32; 4])> {
    let hex = |s: &str| u32::from_str_radix(s.trim_start_matches("0x"), 16).unwrap();
    text.lines()
        .filter_map(|l| l.strip_prefix("cpuid "))
        .map(|l| {
            let v: Vec<u32> = l.split_whitespace().map(hex).collect();
            (v[0], [v[1], v[2], v[3], v[4]])
        })
        .collect()
}

fn capabilities(text: &str) -> HostCapabilities {
    let leaves = leaves(text);
    let leaf = |n: u32| leaves.iter().find(|(l, _)| *l == n).unwrap().1;
    HostCapabilities::from_cpuid(
        leaf(0x8000_000A),
        leaf(0x8000_0008)[0],
        leaf(0x8000_0001)[3],
    )
}

#[test]
fn qemu_tcg_max() {
    let caps = capabilities(include_str!("../fixtures/qemu-tcg-max.cpuid"));
    assert!(caps.long_mode);
    assert_eq!(caps.physical_address_bits, 40);
    assert_eq!(caps.svm.revision, 1);
    assert_eq!(caps.svm.asid_count, 16);
    assert!(caps.svm.has(SvmFeatureFlags::NESTED_PAGING));
    assert!(caps.svm.has(SvmFeatureFlags::VGIF));
    // EMULATORS.md: TCG lacks NRIP save, decode assists, clean bits, pause filter, TSC scaling.
    for missing in [
        SvmFeatureFlags::NRIP_SAVE,
        SvmFeatureFlags::DECODE_ASSISTS,
        SvmFeatureFlags::VMCB_CLEAN,
        SvmFeatureFlags::PAUSE_FILTER,
        SvmFeatureFlags::TSC_RATE_MSR,
    ] {
        assert!(!caps.svm.has(missing), "{missing:?}");
    }
}

#[test]
fn bochs_trinity_apu() {
    let caps = capabilities(include_str!("../fixtures/bochs-trinity_apu.cpuid"));
    assert!(caps.long_mode);
    assert_eq!(caps.physical_address_bits, 40);
    assert_eq!(caps.svm.asid_count, 64);
    for present in [
        SvmFeatureFlags::NESTED_PAGING,
        SvmFeatureFlags::NRIP_SAVE,
        SvmFeatureFlags::FLUSH_BY_ASID,
        SvmFeatureFlags::PAUSE_FILTER,
    ] {
        assert!(caps.svm.has(present), "{present:?}");
    }
    assert!(!caps.svm.has(SvmFeatureFlags::VMCB_CLEAN));
    assert!(!caps.svm.has(SvmFeatureFlags::DECODE_ASSISTS));
}

#[test]
fn qemu_tcg_qemu64_with_svm_has_no_nested_paging() {
    let caps = capabilities(include_str!("../fixtures/qemu-tcg-qemu64-svm.cpuid"));
    assert!(caps.long_mode);
    assert_eq!(caps.svm.asid_count, 16);
    assert!(caps.svm.flags.is_empty(), "{:?}", caps.svm.flags);
}
