//! Enabling and disabling SVM on the current CPU, written against access traits.
//!
//! Manual: AMD64 Architecture Programmer's Manual Volume 2: System Programming, Publication
//! No. 24593, Revision 3.42, March 2024 — Section 15.4 "Enabling SVM", Section 15.30.1 "VM_CR
//! MSR (C001_0114h)", Section 15.30.4 "VM_HSAVE_PA MSR (C001_0117h)" and Section 3.1.7
//! "Extended Feature Enable Register (EFER)".
//!
//! The procedure of 15.4: CPUID Fn8000_0001 ECX\[SVM\] must be 1; if VM_CR.SVMDIS is 0, SVM is
//! enabled by setting EFER.SVME; otherwise, if CPUID Fn8000_000A EDX\[SVML\] is 0, the firmware
//! disabled SVM and it cannot be unlocked, else it is disabled with a key (SVM_KEY). Before the
//! first VMRUN, VM_HSAVE_PA must hold the physical address of a 4 KiB host save area.
//!
//! [`enable_svm`] and [`disable_svm`] use [`Cpuid`] and [`SvmMsrs`], so every failure path is
//! unit-tested with `mockall` mocks; [`crate::instructions`] has the hardware implementations.

use crate::features::{
    CPUID_ADDRESS_SIZES, CPUID_EXT_FEATURES, CPUID_EXT_FEATURES_ECX_SVM, CPUID_SVM_FEATURES,
    HostCapabilities, SvmFeatureFlags, SvmFeatures,
};
use bitflags::bitflags;
use x86_64::PhysAddr;

/// MSR number of VM_CR (APM 15.30.1).
pub const MSR_VM_CR: u32 = 0xC001_0114;
/// MSR number of VM_HSAVE_PA (APM 15.30.4).
pub const MSR_VM_HSAVE_PA: u32 = 0xC001_0117;
/// MSR number of EFER (APM 3.1.7).
pub const MSR_EFER: u32 = 0xC000_0080;
/// EFER.SVME, bit 12 (APM 3.1.7).
pub const EFER_SVME: u64 = 1 << 12;

bitflags! {
    /// The VM_CR MSR, C001_0114h (APM 15.30.1).
    #[repr(transparent)]
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct VmCr: u64 {
        /// Bit 0, DPD: disable the external hardware debug port.
        const DPD = 1 << 0;
        /// Bit 1, R_INIT: convert non-intercepted INIT to #SX.
        const R_INIT = 1 << 1;
        /// Bit 2, DIS_A20M: disable A20 masking.
        const DIS_A20M = 1 << 2;
        /// Bit 3, LOCK: writes to LOCK and SVMDIS are ignored (unlock with SVM_KEY).
        const LOCK = 1 << 3;
        /// Bit 4, SVMDIS: EFER.SVME is must-be-zero.
        const SVMDIS = 1 << 4;
        const _ = !0;
    }
}

/// The four registers CPUID returns.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct CpuidResult {
    /// EAX.
    pub eax: u32,
    /// EBX.
    pub ebx: u32,
    /// ECX.
    pub ecx: u32,
    /// EDX.
    pub edx: u32,
}

/// Executes CPUID. Hardware: [`crate::instructions::HardwareCpuid`].
#[cfg_attr(test, mockall::automock)]
pub trait Cpuid {
    /// CPUID with EAX = `leaf`, ECX = `subleaf`.
    fn cpuid(&self, leaf: u32, subleaf: u32) -> CpuidResult;
}

/// The MSR accesses SVM set-up needs, and no others. Hardware:
/// [`crate::instructions::HardwareSvmMsrs`], whose constructor carries the safety contract.
#[cfg_attr(test, mockall::automock)]
pub trait SvmMsrs {
    /// Reads VM_CR (C001_0114h).
    fn vm_cr(&self) -> VmCr;
    /// Reads EFER (C000_0080h).
    fn efer(&self) -> u64;
    /// Sets or clears EFER.SVME, leaving the other EFER bits unchanged.
    fn set_efer_svme(&mut self, enable: bool);
    /// Reads VM_HSAVE_PA (C001_0117h).
    fn vm_hsave_pa(&self) -> u64;
    /// Writes VM_HSAVE_PA (C001_0117h).
    fn set_vm_hsave_pa(&mut self, pa: u64);
}

/// The 4 KiB host state-save area VMRUN writes host state to (APM 15.30.4). Its layout is
/// implementation specific: software must not read or change it.
#[repr(C, align(4096))]
#[derive(Clone)]
pub struct HostSaveArea([u8; 4096]);

const _: () = assert!(core::mem::size_of::<HostSaveArea>() == 4096);

impl HostSaveArea {
    /// A zeroed host save area.
    #[must_use]
    pub const fn new() -> Self {
        Self([0; 4096])
    }
}

impl Default for HostSaveArea {
    fn default() -> Self {
        Self::new()
    }
}

impl core::fmt::Debug for HostSaveArea {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("HostSaveArea(..)")
    }
}

/// Why SVM could not be enabled. Each failure of APM 15.4 has its own variant.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum EnableError {
    /// CPUID Fn8000_0000 EAX (the highest extended leaf) is below 8000_000Ah.
    #[error("CPUID extended leaves end at {0:#x}; SVM needs 0x8000000a")]
    NoSvmLeaf(u32),
    /// CPUID Fn8000_0001 ECX\[SVM\] (bit 2) is 0: the processor has no SVM.
    #[error("CPUID Fn8000_0001 ECX = {0:#x}: SVM bit 2 clear, the processor does not support SVM")]
    SvmNotSupported(u32),
    /// VM_CR.SVMDIS = 1, VM_CR.LOCK = 1 and CPUID Fn8000_000A EDX\[SVML\] = 0: the firmware
    /// disabled SVM and it cannot be unlocked ("SVM_DISABLED_AT_BIOS_NOT_UNLOCKABLE").
    #[error(
        "VM_CR = {0:#x}: SVM disabled and locked by firmware, not unlockable (enable it in the BIOS)"
    )]
    DisabledByFirmware(u64),
    /// VM_CR.SVMDIS = 1, VM_CR.LOCK = 1 and SVM lock is supported: SVM is disabled with a key
    /// ("SVM_DISABLED_WITH_KEY"); SVM_KEY can unlock it.
    #[error("VM_CR = {0:#x}: SVM disabled and locked with a key (unlock through SVM_KEY)")]
    DisabledWithKey(u64),
    /// VM_CR.SVMDIS = 1 but VM_CR.LOCK = 0: software disabled SVM and could clear SVMDIS; this
    /// crate does not override that choice.
    #[error("VM_CR = {0:#x}: SVMDIS set but not locked; clear VM_CR.SVMDIS first if intended")]
    DisabledUnlocked(u64),
    /// EFER.SVME was already set: another hypervisor may own SVM on this CPU.
    #[error("EFER.SVME already set (VM_HSAVE_PA = {hsave_pa:#x}): SVM is in use on this CPU")]
    AlreadyEnabled {
        /// The VM_HSAVE_PA value found.
        hsave_pa: u64,
    },
    /// The host save area address is not 4 KiB aligned (WRMSR would #GP, 15.30.4).
    #[error("host save area {0:#x} is not 4 KiB aligned")]
    HostSaveAreaMisaligned(u64),
    /// The host save area lies at or above the physical address width (WRMSR would #GP, 15.30.4).
    #[error("host save area {address:#x} is beyond the {bits}-bit physical address width")]
    HostSaveAreaBeyondPhysicalLimit {
        /// The address given.
        address: u64,
        /// CPUID Fn8000_0008 EAX\[7:0\].
        bits: u8,
    },
    /// EFER.SVME read back as 0 after setting it.
    #[error("EFER.SVME did not stick (EFER = {0:#x} after the write)")]
    SvmeDidNotStick(u64),
    /// VM_HSAVE_PA read back different from the value written.
    #[error("VM_HSAVE_PA reads {read:#x} after writing {written:#x}")]
    HostSaveAreaNotAccepted {
        /// The value written.
        written: u64,
        /// The value read back.
        read: u64,
    },
}

/// Why SVM could not be disabled.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum DisableError {
    /// EFER.SVME was already clear.
    #[error("EFER.SVME is not set (EFER = {0:#x})")]
    NotEnabled(u64),
    /// EFER.SVME read back as 1 after clearing it.
    #[error("EFER.SVME still set after clearing it (EFER = {0:#x})")]
    SvmeStillSet(u64),
}

/// Checks CPUID for SVM (APM 15.4) and returns the decoded Fn8000_000A.
///
/// # Errors
/// [`EnableError::NoSvmLeaf`] or [`EnableError::SvmNotSupported`].
pub fn detect_svm(cpuid: &impl Cpuid) -> Result<SvmFeatures, EnableError> {
    let max_ext = cpuid.cpuid(0x8000_0000, 0).eax;
    if max_ext < CPUID_SVM_FEATURES {
        return Err(EnableError::NoSvmLeaf(max_ext));
    }
    let ecx = cpuid.cpuid(CPUID_EXT_FEATURES, 0).ecx;
    if ecx & CPUID_EXT_FEATURES_ECX_SVM == 0 {
        return Err(EnableError::SvmNotSupported(ecx));
    }
    let leaf = cpuid.cpuid(CPUID_SVM_FEATURES, 0);
    Ok(SvmFeatures::from_cpuid(
        leaf.eax, leaf.ebx, leaf.ecx, leaf.edx,
    ))
}

/// Reads everything [`crate::check::check_vmcb`] needs from CPUID: Fn8000_000A, the physical
/// address width (Fn8000_0008 EAX\[7:0\]) and long-mode support (Fn8000_0001 EDX\[29\]).
///
/// # Errors
/// As [`detect_svm`].
pub fn host_capabilities(cpuid: &impl Cpuid) -> Result<HostCapabilities, EnableError> {
    let svm = detect_svm(cpuid)?;
    let mut caps = HostCapabilities::from_cpuid(
        [0; 4],
        cpuid.cpuid(CPUID_ADDRESS_SIZES, 0).eax,
        cpuid.cpuid(CPUID_EXT_FEATURES, 0).edx,
    );
    caps.svm = svm;
    Ok(caps)
}

/// Enables SVM on the current CPU following APM 15.4: checks CPUID and VM_CR, sets EFER.SVME
/// and writes VM_HSAVE_PA. Returns the CPU's SVM features.
///
/// `host_save_area` is the physical address of a [`HostSaveArea`] that stays reserved for this
/// CPU until [`disable_svm`].
///
/// # Errors
/// Every failure of the procedure is its own [`EnableError`] variant. Nothing is written unless
/// all checks pass.
pub fn enable_svm(
    cpuid: &impl Cpuid,
    msrs: &mut impl SvmMsrs,
    host_save_area: PhysAddr,
) -> Result<SvmFeatures, EnableError> {
    let caps = host_capabilities(cpuid)?;
    let features = caps.svm;
    if !host_save_area.is_aligned(4096u64) {
        return Err(EnableError::HostSaveAreaMisaligned(host_save_area.as_u64()));
    }
    let bits = caps.physical_address_bits;
    if (1..52).contains(&bits) && host_save_area.as_u64() >> bits != 0 {
        return Err(EnableError::HostSaveAreaBeyondPhysicalLimit {
            address: host_save_area.as_u64(),
            bits,
        });
    }
    if msrs.efer() & EFER_SVME != 0 {
        return Err(EnableError::AlreadyEnabled {
            hsave_pa: msrs.vm_hsave_pa(),
        });
    }
    let vm_cr = msrs.vm_cr();
    if vm_cr.contains(VmCr::SVMDIS) {
        return Err(if !vm_cr.contains(VmCr::LOCK) {
            EnableError::DisabledUnlocked(vm_cr.bits())
        } else if features.has(SvmFeatureFlags::SVM_LOCK) {
            EnableError::DisabledWithKey(vm_cr.bits())
        } else {
            EnableError::DisabledByFirmware(vm_cr.bits())
        });
    }
    msrs.set_efer_svme(true);
    let efer = msrs.efer();
    if efer & EFER_SVME == 0 {
        return Err(EnableError::SvmeDidNotStick(efer));
    }
    msrs.set_vm_hsave_pa(host_save_area.as_u64());
    let read = msrs.vm_hsave_pa();
    if read != host_save_area.as_u64() {
        msrs.set_efer_svme(false);
        return Err(EnableError::HostSaveAreaNotAccepted {
            written: host_save_area.as_u64(),
            read,
        });
    }
    Ok(features)
}

/// Disables SVM on the current CPU: clears EFER.SVME, then VM_HSAVE_PA. No guest may be running
/// or be resumed on this CPU afterwards.
///
/// # Errors
/// [`DisableError::NotEnabled`] if SVME was clear, [`DisableError::SvmeStillSet`] if clearing
/// it did not take.
pub fn disable_svm(msrs: &mut impl SvmMsrs) -> Result<(), DisableError> {
    let efer = msrs.efer();
    if efer & EFER_SVME == 0 {
        return Err(DisableError::NotEnabled(efer));
    }
    msrs.set_efer_svme(false);
    let efer = msrs.efer();
    if efer & EFER_SVME != 0 {
        return Err(DisableError::SvmeStillSet(efer));
    }
    msrs.set_vm_hsave_pa(0);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use mockall::predicate::eq;

    const HSAVE: u64 = 0x0012_3000;

    /// A CPUID mock of an SVM CPU with the given Fn8000_0001 ECX and Fn8000_000A EDX.
    fn cpuid(max_ext: u32, ext_ecx: u32, svm_edx: u32) -> MockCpuid {
        let mut mock = MockCpuid::new();
        mock.expect_cpuid().returning(move |leaf, _| match leaf {
            0x8000_0000 => CpuidResult {
                eax: max_ext,
                ..CpuidResult::default()
            },
            0x8000_0001 => CpuidResult {
                ecx: ext_ecx,
                edx: 1 << 29,
                ..CpuidResult::default()
            },
            0x8000_0008 => CpuidResult {
                eax: 0x3030,
                ..CpuidResult::default()
            },
            0x8000_000A => CpuidResult {
                eax: 1,
                ebx: 64,
                ecx: 0,
                edx: svm_edx,
            },
            _ => CpuidResult::default(),
        });
        mock
    }

    fn svm_cpu() -> MockCpuid {
        cpuid(0x8000_001F, CPUID_EXT_FEATURES_ECX_SVM, 0b1101)
    }

    /// MSRs that must not be written.
    fn msrs_read_only(efer: u64, vm_cr: u64) -> MockSvmMsrs {
        let mut msrs = MockSvmMsrs::new();
        msrs.expect_efer().return_const(efer);
        msrs.expect_vm_cr()
            .return_const(VmCr::from_bits_retain(vm_cr));
        msrs.expect_vm_hsave_pa().return_const(0xAAAA_0000u64);
        msrs.expect_set_efer_svme().never();
        msrs.expect_set_vm_hsave_pa().never();
        msrs
    }

    #[test]
    fn enables_on_a_good_cpu() {
        let mut msrs = MockSvmMsrs::new();
        let mut seq = mockall::Sequence::new();
        msrs.expect_efer()
            .times(1)
            .in_sequence(&mut seq)
            .return_const(0x0D01u64);
        msrs.expect_vm_cr()
            .times(1)
            .in_sequence(&mut seq)
            .return_const(VmCr::empty());
        msrs.expect_set_efer_svme()
            .with(eq(true))
            .times(1)
            .in_sequence(&mut seq)
            .return_const(());
        msrs.expect_efer()
            .times(1)
            .in_sequence(&mut seq)
            .return_const(0x1D01u64);
        msrs.expect_set_vm_hsave_pa()
            .with(eq(HSAVE))
            .times(1)
            .in_sequence(&mut seq)
            .return_const(());
        msrs.expect_vm_hsave_pa()
            .times(1)
            .in_sequence(&mut seq)
            .return_const(HSAVE);
        let features = enable_svm(&svm_cpu(), &mut msrs, PhysAddr::new(HSAVE)).unwrap();
        assert_eq!(features.asid_count, 64);
        assert!(features.has(SvmFeatureFlags::NESTED_PAGING));
        assert!(features.has(SvmFeatureFlags::NRIP_SAVE));
    }

    #[test]
    fn missing_leaf() {
        let mut msrs = msrs_read_only(0, 0);
        assert_eq!(
            enable_svm(&cpuid(0x8000_0008, 4, 0), &mut msrs, PhysAddr::new(HSAVE)),
            Err(EnableError::NoSvmLeaf(0x8000_0008))
        );
    }

    #[test]
    fn no_svm_bit() {
        let mut msrs = msrs_read_only(0, 0);
        assert_eq!(
            enable_svm(&cpuid(0x8000_001F, 0x1, 0), &mut msrs, PhysAddr::new(HSAVE)),
            Err(EnableError::SvmNotSupported(0x1))
        );
    }

    #[test]
    fn disabled_by_firmware_without_svm_lock() {
        let mut msrs = msrs_read_only(0x500, 0x18);
        let cpu = cpuid(0x8000_001F, CPUID_EXT_FEATURES_ECX_SVM, 0b1001);
        assert_eq!(
            enable_svm(&cpu, &mut msrs, PhysAddr::new(HSAVE)),
            Err(EnableError::DisabledByFirmware(0x18))
        );
    }

    #[test]
    fn disabled_with_key() {
        let mut msrs = msrs_read_only(0x500, 0x18);
        assert_eq!(
            enable_svm(&svm_cpu(), &mut msrs, PhysAddr::new(HSAVE)),
            Err(EnableError::DisabledWithKey(0x18))
        );
    }

    #[test]
    fn disabled_but_unlocked() {
        let mut msrs = msrs_read_only(0x500, 0x10);
        assert_eq!(
            enable_svm(&svm_cpu(), &mut msrs, PhysAddr::new(HSAVE)),
            Err(EnableError::DisabledUnlocked(0x10))
        );
    }

    #[test]
    fn already_enabled() {
        let mut msrs = msrs_read_only(0x1500, 0);
        assert_eq!(
            enable_svm(&svm_cpu(), &mut msrs, PhysAddr::new(HSAVE)),
            Err(EnableError::AlreadyEnabled {
                hsave_pa: 0xAAAA_0000
            })
        );
    }

    #[test]
    fn misaligned_host_save_area() {
        let mut msrs = msrs_read_only(0x500, 0);
        assert_eq!(
            enable_svm(&svm_cpu(), &mut msrs, PhysAddr::new(HSAVE + 8)),
            Err(EnableError::HostSaveAreaMisaligned(HSAVE + 8))
        );
    }

    #[test]
    fn host_save_area_beyond_physical_width() {
        let mut msrs = msrs_read_only(0x500, 0);
        assert_eq!(
            enable_svm(&svm_cpu(), &mut msrs, PhysAddr::new(1 << 48)),
            Err(EnableError::HostSaveAreaBeyondPhysicalLimit {
                address: 1 << 48,
                bits: 48
            })
        );
    }

    #[test]
    fn capabilities_from_cpuid() {
        let caps = host_capabilities(&svm_cpu()).unwrap();
        assert_eq!(caps.physical_address_bits, 48);
        assert!(caps.long_mode);
        assert_eq!(caps.svm.asid_count, 64);
        assert_eq!(
            host_capabilities(&cpuid(0x8000_0008, 0, 0)),
            Err(EnableError::NoSvmLeaf(0x8000_0008))
        );
    }

    #[test]
    fn svme_does_not_stick() {
        let mut msrs = MockSvmMsrs::new();
        msrs.expect_efer().return_const(0x500u64);
        msrs.expect_vm_cr().return_const(VmCr::empty());
        msrs.expect_set_efer_svme().times(1).return_const(());
        msrs.expect_set_vm_hsave_pa().never();
        assert_eq!(
            enable_svm(&svm_cpu(), &mut msrs, PhysAddr::new(HSAVE)),
            Err(EnableError::SvmeDidNotStick(0x500))
        );
    }

    #[test]
    fn host_save_area_not_accepted_rolls_back_svme() {
        let mut msrs = MockSvmMsrs::new();
        let mut efer_reads = 0;
        msrs.expect_efer().returning(move || {
            efer_reads += 1;
            if efer_reads == 1 { 0x500 } else { 0x1500 }
        });
        msrs.expect_vm_cr().return_const(VmCr::empty());
        msrs.expect_set_efer_svme()
            .with(eq(true))
            .times(1)
            .return_const(());
        msrs.expect_set_efer_svme()
            .with(eq(false))
            .times(1)
            .return_const(());
        msrs.expect_set_vm_hsave_pa().times(1).return_const(());
        msrs.expect_vm_hsave_pa().return_const(0u64);
        assert_eq!(
            enable_svm(&svm_cpu(), &mut msrs, PhysAddr::new(HSAVE)),
            Err(EnableError::HostSaveAreaNotAccepted {
                written: HSAVE,
                read: 0
            })
        );
    }

    #[test]
    fn disable_clears_svme_then_hsave() {
        let mut msrs = MockSvmMsrs::new();
        let mut seq = mockall::Sequence::new();
        msrs.expect_efer()
            .times(1)
            .in_sequence(&mut seq)
            .return_const(0x1D01u64);
        msrs.expect_set_efer_svme()
            .with(eq(false))
            .times(1)
            .in_sequence(&mut seq)
            .return_const(());
        msrs.expect_efer()
            .times(1)
            .in_sequence(&mut seq)
            .return_const(0x0D01u64);
        msrs.expect_set_vm_hsave_pa()
            .with(eq(0))
            .times(1)
            .in_sequence(&mut seq)
            .return_const(());
        assert_eq!(disable_svm(&mut msrs), Ok(()));
    }

    #[test]
    fn disable_when_not_enabled() {
        let mut msrs = msrs_read_only(0xD01, 0);
        assert_eq!(disable_svm(&mut msrs), Err(DisableError::NotEnabled(0xD01)));
    }

    #[test]
    fn disable_svme_still_set() {
        let mut msrs = MockSvmMsrs::new();
        msrs.expect_efer().return_const(0x1D01u64);
        msrs.expect_set_efer_svme().times(1).return_const(());
        msrs.expect_set_vm_hsave_pa().never();
        assert_eq!(
            disable_svm(&mut msrs),
            Err(DisableError::SvmeStillSet(0x1D01))
        );
    }

    #[test]
    fn detect_reports_features() {
        let f = detect_svm(&svm_cpu()).unwrap();
        assert_eq!(f.revision, 1);
        assert!(f.has(SvmFeatureFlags::SVM_LOCK));
    }
}
