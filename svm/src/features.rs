//! SVM features from CPUID Fn8000_000A ("SVM Revision and Feature Identification").
//!
//! Manual: AMD64 Architecture Programmer's Manual Volume 2: System Programming, Publication
//! No. 24593, Revision 3.42, March 2024 — Section 15.4 "Enabling SVM" and Section 15.5.1 (number
//! of ASIDs); the bit list is in Volume 3 Appendix E.4.9 "Function 8000_000Ah—SVM Features" and
//! is cited throughout Volume 2 Chapter 15.
//!
//! [`SvmFeatures::from_cpuid`] takes the raw EAX/EBX/ECX/EDX values, so decoding is testable on any
//! host; [`crate::enable::Cpuid`] supplies them on hardware.

use bitflags::bitflags;

/// CPUID leaf of the SVM feature identification.
pub const CPUID_SVM_FEATURES: u32 = 0x8000_000A;
/// CPUID leaf whose ECX bit 2 reports SVM.
pub const CPUID_EXT_FEATURES: u32 = 0x8000_0001;
/// CPUID Fn8000_0001 ECX bit 2: SVM supported.
pub const CPUID_EXT_FEATURES_ECX_SVM: u32 = 1 << 2;
/// CPUID Fn8000_0001 EDX bit 29: long mode (LM).
pub const CPUID_EXT_FEATURES_EDX_LM: u32 = 1 << 29;
/// CPUID Fn8000_0001 EDX bit 26: 1-GByte pages (Page1GB), which nested page tables may use
/// too (APM Vol. 3, Appendix E.4.2 "Function 8000_0001h"; APM Vol. 2, 15.25 "Nested Paging").
pub const CPUID_EXT_FEATURES_EDX_PAGE1GB: u32 = 1 << 26;
/// CPUID leaf reporting the physical address width in EAX bits 7:0.
pub const CPUID_ADDRESS_SIZES: u32 = 0x8000_0008;

bitflags! {
    /// CPUID Fn8000_000A EDX: optional SVM features.
    #[repr(transparent)]
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct SvmFeatureFlags: u32 {
        /// Bit 0, NP: nested paging.
        const NESTED_PAGING = 1 << 0;
        /// Bit 1, LbrVirt: LBR virtualization.
        const LBR_VIRTUALIZATION = 1 << 1;
        /// Bit 2, SVML: SVM lock (VM_CR.LOCK can be unlocked with SVM_KEY).
        const SVM_LOCK = 1 << 2;
        /// Bit 3, NRIPS: NRIP save on #VMEXIT.
        const NRIP_SAVE = 1 << 3;
        /// Bit 4, TscRateMsr: MSR-based TSC rate control.
        const TSC_RATE_MSR = 1 << 4;
        /// Bit 5, VmcbClean: VMCB clean bits.
        const VMCB_CLEAN = 1 << 5;
        /// Bit 6, FlushByAsid: TLB_CONTROL 03h/07h.
        const FLUSH_BY_ASID = 1 << 6;
        /// Bit 7, DecodeAssists: decode assists.
        const DECODE_ASSISTS = 1 << 7;
        /// Bit 8, PmcVirt: PMC virtualization.
        const PMC_VIRTUALIZATION = 1 << 8;
        /// Bit 10, PauseFilter: PAUSE intercept filter.
        const PAUSE_FILTER = 1 << 10;
        /// Bit 12, PauseFilterThreshold: PAUSE filter threshold.
        const PAUSE_FILTER_THRESHOLD = 1 << 12;
        /// Bit 13, AVIC: advanced virtual interrupt controller.
        const AVIC = 1 << 13;
        /// Bit 15, VMSAVEvirt: VMSAVE/VMLOAD virtualization.
        const VMSAVE_VIRTUALIZATION = 1 << 15;
        /// Bit 16, VGIF: virtualized global interrupt flag.
        const VGIF = 1 << 16;
        /// Bit 17, GMET: guest mode execute trap.
        const GMET = 1 << 17;
        /// Bit 18, x2AVIC: AVIC for x2APIC mode.
        const X2AVIC = 1 << 18;
        /// Bit 19, SSSCheck: supervisor shadow stack restrictions.
        const SSS_CHECK = 1 << 19;
        /// Bit 20, SpecCtrl: SPEC_CTRL virtualization.
        const SPEC_CTRL = 1 << 20;
        /// Bit 21, ROGPT: read-only guest page tables.
        const READ_ONLY_GUEST_PAGE_TABLES = 1 << 21;
        /// Bit 23, HOST_MCE_OVERRIDE: guest #MC with host CR4.MCE=1, guest CR4.MCE=0 is
        /// intercepted instead of shutting down.
        const HOST_MCE_OVERRIDE = 1 << 23;
        /// Bit 24, TlbiCtl: INVLPGB/TLBSYNC enable in the VMCB and TLBSYNC intercept.
        const TLBI_CONTROL = 1 << 24;
        /// Bit 25, VNMI: NMI virtualization.
        const VNMI = 1 << 25;
        /// Bit 26, IbsVirt: IBS virtualization.
        const IBS_VIRTUALIZATION = 1 << 26;
        /// Bit 27, ExtLvtAvicAccessChg: extended LVT AVIC access changes.
        const EXT_LVT_AVIC_ACCESS_CHANGE = 1 << 27;
        /// Bit 28, NestedVirtVmcbAddrChk: guest VMCB address check.
        const NESTED_VIRT_VMCB_ADDR_CHECK = 1 << 28;
        /// Bit 29, BusLockThreshold: bus lock threshold.
        const BUS_LOCK_THRESHOLD = 1 << 29;
        /// Bit 30, IdleHltIntercept: idle HLT intercept.
        const IDLE_HLT_INTERCEPT = 1 << 30;
        const _ = !0;
    }
}

/// CPUID Fn8000_000A ECX bit 6, x2AVIC_EXT: the physical APIC ID table may span up to eight
/// pages (APM 15.29.5.2 "Physical APIC ID Table").
pub const CPUID_SVM_ECX_X2AVIC_EXT: u32 = 1 << 6;

/// The decoded CPUID Fn8000_000A.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct SvmFeatures {
    /// EAX\[7:0\], SvmRev: SVM revision number.
    pub revision: u8,
    /// EBX, NASID: number of address space identifiers (ASIDs 1 … NASID−1 are usable).
    pub asid_count: u32,
    /// ECX, raw (bit 6: x2AVIC_EXT, see [`SvmFeatures::x2avic_extended`]).
    pub ecx: u32,
    /// EDX feature flags.
    pub flags: SvmFeatureFlags,
}

impl SvmFeatures {
    /// Decodes the raw EAX, EBX, ECX and EDX of CPUID Fn8000_000A.
    #[must_use]
    pub const fn from_cpuid(eax: u32, ebx: u32, ecx: u32, edx: u32) -> Self {
        Self {
            revision: (eax & 0xFF) as u8,
            asid_count: ebx,
            ecx,
            flags: SvmFeatureFlags::from_bits_retain(edx),
        }
    }

    /// ECX\[6\], x2AVIC_EXT: AVIC_PHYSICAL_MAX_INDEX may exceed 511 in x2AVIC mode.
    #[must_use]
    pub const fn x2avic_extended(self) -> bool {
        self.ecx & CPUID_SVM_ECX_X2AVIC_EXT != 0
    }

    /// Whether the CPU reports `flag`.
    #[must_use]
    pub const fn has(self, flag: SvmFeatureFlags) -> bool {
        self.flags.contains(flag)
    }
}

/// Host facts that VMRUN checks against but that are not in Fn8000_000A: the consistency
/// checker ([`crate::check`]) needs them.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct HostCapabilities {
    /// CPUID Fn8000_000A.
    pub svm: SvmFeatures,
    /// Physical address width (CPUID Fn8000_0008 EAX\[7:0\]).
    pub physical_address_bits: u8,
    /// Long mode supported (CPUID Fn8000_0001 EDX\[29\]).
    pub long_mode: bool,
    /// 1-GByte pages supported (CPUID Fn8000_0001 EDX\[26\]), in guest and nested page tables.
    pub page_1g: bool,
}

impl HostCapabilities {
    /// Builds the capabilities from raw CPUID values: Fn8000_000A (EAX, EBX, ECX, EDX),
    /// Fn8000_0008 EAX and Fn8000_0001 EDX.
    #[must_use]
    pub const fn from_cpuid(svm: [u32; 4], address_sizes_eax: u32, ext_features_edx: u32) -> Self {
        Self {
            svm: SvmFeatures::from_cpuid(svm[0], svm[1], svm[2], svm[3]),
            physical_address_bits: (address_sizes_eax & 0xFF) as u8,
            long_mode: ext_features_edx & CPUID_EXT_FEATURES_EDX_LM != 0,
            page_1g: ext_features_edx & CPUID_EXT_FEATURES_EDX_PAGE1GB != 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_capabilities_from_cpuid() {
        let caps = HostCapabilities::from_cpuid([1, 16, 0, 1], 48, (1 << 29) | (1 << 26));
        assert!(caps.long_mode && caps.page_1g);
        assert_eq!(caps.physical_address_bits, 48);
        // QEMU's qemu64 model: long mode without 1-GByte pages.
        let caps = HostCapabilities::from_cpuid([1, 16, 0, 0], 40, 1 << 29);
        assert!(caps.long_mode && !caps.page_1g);
    }

    #[test]
    fn decodes_edx_bits() {
        // A Zen 3-like EDX: NP, LbrVirt, SVML, NRIPS, TscRate, VmcbClean, FlushByAsid,
        // DecodeAssists, PauseFilter, PFThreshold, AVIC, VMSAVEvirt, VGIF, SpecCtrl.
        let f = SvmFeatures::from_cpuid(0x0000_0001, 0x8000, 0, 0x0011_B4FF | (1 << 20));
        assert_eq!(f.revision, 1);
        assert_eq!(f.asid_count, 0x8000);
        for flag in [
            SvmFeatureFlags::NESTED_PAGING,
            SvmFeatureFlags::NRIP_SAVE,
            SvmFeatureFlags::VMCB_CLEAN,
            SvmFeatureFlags::FLUSH_BY_ASID,
            SvmFeatureFlags::DECODE_ASSISTS,
            SvmFeatureFlags::PAUSE_FILTER,
            SvmFeatureFlags::AVIC,
            SvmFeatureFlags::VGIF,
            SvmFeatureFlags::SPEC_CTRL,
        ] {
            assert!(f.has(flag), "{flag:?}");
        }
        assert!(!f.has(SvmFeatureFlags::VNMI));
        assert!(!f.has(SvmFeatureFlags::X2AVIC));
    }

    #[test]
    fn qemu_tcg_like_features() {
        // QEMU TCG with -cpu max: NP but no NRIPS, no clean bits, no decode assists.
        let f = SvmFeatures::from_cpuid(1, 16, 0, 1);
        assert!(f.has(SvmFeatureFlags::NESTED_PAGING));
        assert!(!f.has(SvmFeatureFlags::NRIP_SAVE));
        assert!(!f.has(SvmFeatureFlags::VMCB_CLEAN));
        assert_eq!(f.asid_count, 16);
    }

    #[test]
    fn host_capabilities() {
        let caps = HostCapabilities::from_cpuid([1, 8, 0, 1], 0x3028, 1 << 29);
        assert_eq!(caps.physical_address_bits, 0x28);
        assert!(caps.long_mode);
        assert!(!HostCapabilities::from_cpuid([1, 8, 0, 1], 0x24, 0).long_mode);
        assert!(SvmFeatures::from_cpuid(1, 8, 1 << 6, 0).x2avic_extended());
    }
}
