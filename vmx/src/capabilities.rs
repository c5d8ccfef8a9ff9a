//! What the processor's VMX implementation supports, read once from the capability MSRs, and the
//! adjustment of requested controls against it.
//!
//! Reference: Intel® 64 and IA-32 Architectures Software Developer's Manual, Order Number
//! 325462-086US (December 2024), Volume 3C, Appendix A "VMX Capability Reporting Facility":
//! A.1 "Basic VMX Information", A.2 "Reserved Controls and Default Settings", A.3 "VM-Execution
//! Controls", A.4 "VM-Exit Controls", A.5 "VM-Entry Controls", A.6 "Miscellaneous Data", A.7/A.8
//! "VMX-Fixed Bits in CR0/CR4", A.9 "VMCS Enumeration", A.10 "VPID and EPT Capabilities",
//! A.11 "VM Functions"; and 24.7 "Enabling and Entering VMX Operation" for IA32_FEATURE_CONTROL.
//!
//! [`VmxCapabilities::read`] reads an MSR only where the SDM says it exists: the TRUE control MSRs
//! only when IA32_VMX_BASIC\[55\] is set, IA32_VMX_PROCBASED_CTLS2 only when the primary controls
//! allow "activate secondary controls", and so on, so a snapshot never causes a #GP.
//!
//! ```
//! use hvkit_vmx::capabilities::{ControlsRequest, VmxCapabilities};
//! use hvkit_vmx::controls::*;
//! use hvkit_vmx::msr::*;
//!
//! // A recorded snapshot (here: a Skylake-class processor) stands in for RDMSR.
//! let msrs = |msr: u32| match msr {
//!     IA32_VMX_BASIC => 0x00da_0400_0000_0004,
//!     IA32_VMX_PINBASED_CTLS | IA32_VMX_TRUE_PINBASED_CTLS => 0x0000_007f_0000_0016,
//!     IA32_VMX_PROCBASED_CTLS => 0xfff9_fffe_0401_e172,
//!     IA32_VMX_TRUE_PROCBASED_CTLS => 0xfff9_fffe_0400_6172,
//!     IA32_VMX_PROCBASED_CTLS2 => 0x0053_7dff_0000_0000,
//!     IA32_VMX_EXIT_CTLS => 0x01ff_ffff_0003_6dff,
//!     IA32_VMX_TRUE_EXIT_CTLS => 0x01ff_ffff_0003_6dfb,
//!     IA32_VMX_ENTRY_CTLS => 0x0003_ffff_0000_11ff,
//!     IA32_VMX_TRUE_ENTRY_CTLS => 0x0003_ffff_0000_11fb,
//!     _ => 0,
//! };
//! let caps = VmxCapabilities::read(&msrs);
//! assert_eq!(caps.basic.revision_id(), 4);
//! assert!(caps.basic.true_controls());
//!
//! let request = ControlsRequest {
//!     primary: PrimaryControls::HLT_EXITING | PrimaryControls::USE_MSR_BITMAPS,
//!     secondary: SecondaryControls::ENABLE_EPT | SecondaryControls::UNRESTRICTED_GUEST,
//!     exit: ExitControls::HOST_ADDRESS_SPACE_SIZE,
//!     ..ControlsRequest::default()
//! };
//! let values = caps.adjust(&request).expect("a Skylake can do all of that");
//! // The secondary controls were activated for us, and the default-1 bits are set.
//! assert_ne!(values.primary & (1 << 31), 0);
//! assert_eq!(values.pin_based, 0x16);
//! ```

use core::fmt;

use bit_field::BitField;
use bitflags::{Bits, Flags, bitflags};

use crate::controls::{
    EntryControls, ExitControls, PinBasedControls, PrimaryControls, SecondaryControls,
    SecondaryExitControls, TertiaryControls,
};
use crate::msr::{self, MsrRead};

bitflags! {
    /// IA32_FEATURE_CONTROL (MSR 3AH) (SDM Vol. 3C, 24.7 "Enabling and Entering VMX Operation";
    /// Vol. 4, Table 2-2).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct FeatureControl: u64 {
        /// Bit 0: the MSR is locked; writes raise #GP until reset.
        const LOCK = 1 << 0;
        /// Bit 1: VMXON is allowed inside SMX operation.
        const VMX_INSIDE_SMX = 1 << 1;
        /// Bit 2: VMXON is allowed outside SMX operation.
        const VMX_OUTSIDE_SMX = 1 << 2;
        /// Bits 14:8: SENTER local function enables.
        const SENTER_LOCAL_FUNCTIONS = 0x7f << 8;
        /// Bit 15: SENTER global enable.
        const SENTER_GLOBAL_ENABLE = 1 << 15;
        /// Bit 17: SGX launch control enable.
        const SGX_LAUNCH_CONTROL = 1 << 17;
        /// Bit 18: SGX global enable.
        const SGX_GLOBAL_ENABLE = 1 << 18;
        /// Bit 20: local machine-check exceptions enabled.
        const LMCE = 1 << 20;
        // Bits the SDM defines but this crate does not name are kept as read.
        const _ = !0;
    }
}

/// IA32_VMX_BASIC (MSR 480H) (SDM Vol. 3C, A.1 "Basic VMX Information").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct VmxBasic(pub u64);

impl VmxBasic {
    /// Bits 30:0: the VMCS revision identifier, written to the first 4 bytes of VMXON and VMCS
    /// regions.
    #[must_use]
    pub fn revision_id(self) -> u32 {
        self.0.get_bits(0..31) as u32
    }
    /// Bits 44:32: the number of bytes to allocate for VMXON and VMCS regions (at most 4096).
    #[must_use]
    pub fn region_size(self) -> u32 {
        self.0.get_bits(32..45) as u32
    }
    /// Bit 48: physical addresses of VMXON/VMCS regions and structures they reference are
    /// limited to 32 bits.
    #[must_use]
    pub fn physical_address_width_32(self) -> bool {
        self.0.get_bit(48)
    }
    /// Bit 49: the dual-monitor treatment of SMIs and SMM is supported.
    #[must_use]
    pub fn dual_monitor_smm(self) -> bool {
        self.0.get_bit(49)
    }
    /// Bits 53:50: the memory type the processor uses to access the VMCS and the structures
    /// it references (0 = uncacheable, 6 = write-back).
    #[must_use]
    pub fn memory_type(self) -> u8 {
        self.0.get_bits(50..54) as u8
    }
    /// Bit 54: VM exits due to INS and OUTS report VM-exit instruction information.
    #[must_use]
    pub fn ins_outs_reporting(self) -> bool {
        self.0.get_bit(54)
    }
    /// Bit 55: default-1 controls may be 0, as the IA32_VMX_TRUE_*_CTLS MSRs report.
    #[must_use]
    pub fn true_controls(self) -> bool {
        self.0.get_bit(55)
    }
    /// Bit 56: VM entry may deliver a hardware exception with or without an error code
    /// regardless of the vector.
    #[must_use]
    pub fn any_exception_error_code(self) -> bool {
        self.0.get_bit(56)
    }
    /// Bit 58: the processor supports nested exceptions ("VMX nested-exception support").
    #[must_use]
    pub fn nested_exception(self) -> bool {
        self.0.get_bit(58)
    }
}

/// The allowed settings of a 32-bit control word (SDM Vol. 3C, A.3.1, A.3.2, A.4.1, A.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct AllowedControls32 {
    /// Allowed 0-settings (bits 31:0 of the capability MSR in effect): a 1 here means the control
    /// bit must be 1. From the TRUE MSR when IA32_VMX_BASIC\[55\] is set.
    pub must_be_one: u32,
    /// Allowed 1-settings (bits 63:32): a 0 here means the control bit must be 0.
    pub may_be_one: u32,
    /// The default-1 bits as the original (non-TRUE) MSR reports them. Software should set any
    /// of these it does not know about (SDM A.2 "Reserved Controls and Default Settings").
    pub default_one: u32,
}

impl AllowedControls32 {
    /// Splits a capability MSR value: bits 31:0 allowed 0-settings, bits 63:32 allowed
    /// 1-settings. `legacy` is the non-TRUE MSR's value (the same as `value` without TRUE MSRs).
    #[must_use]
    pub fn from_msrs(value: u64, legacy: u64) -> Self {
        Self {
            must_be_one: value.get_bits(0..32) as u32,
            may_be_one: value.get_bits(32..64) as u32,
            default_one: legacy.get_bits(0..32) as u32,
        }
    }

    /// Whether the control bits in `mask` may all be set to 1.
    #[must_use]
    pub fn allows(&self, mask: u32) -> bool {
        mask & !self.may_be_one == 0
    }

    /// Adjusts a request: the bits the CPU cannot set, or the value to write with the required
    /// 1-bits and the unknown default-1 bits set (SDM A.2, algorithm 3).
    fn adjust<F: Flags<Bits = u32>>(&self, requested: F) -> Result<u32, u32> {
        let requested = requested.bits();
        let refused = requested & !self.may_be_one;
        if refused != 0 {
            return Err(refused);
        }
        let unknown_default_one = self.default_one & !F::all().bits();
        Ok((requested | self.must_be_one | unknown_default_one) & self.may_be_one)
    }
}

/// The allowed 1-settings of a 64-bit control word (tertiary processor-based and secondary VM-exit
/// controls), whose bits all default to 0 (SDM Vol. 3C, A.3.4, A.4.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct AllowedControls64 {
    /// A 1 bit means the control may be 1.
    pub may_be_one: u64,
}

/// IA32_VMX_MISC (MSR 485H) (SDM Vol. 3C, A.6 "Miscellaneous Data").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct VmxMisc(pub u64);

impl VmxMisc {
    /// Bits 4:0: the VMX-preemption timer counts down by 1 every time bit X of the TSC changes,
    /// where X is this value.
    #[must_use]
    pub fn preemption_timer_tsc_shift(self) -> u8 {
        self.0.get_bits(0..5) as u8
    }
    /// Bit 5: VM exits store EFER.LMA into the "IA-32e mode guest" VM-entry control.
    #[must_use]
    pub fn stores_lma_on_exit(self) -> bool {
        self.0.get_bit(5)
    }
    /// Bit 6: the HLT activity state is supported.
    #[must_use]
    pub fn activity_hlt(self) -> bool {
        self.0.get_bit(6)
    }
    /// Bit 7: the shutdown activity state is supported.
    #[must_use]
    pub fn activity_shutdown(self) -> bool {
        self.0.get_bit(7)
    }
    /// Bit 8: the wait-for-SIPI activity state is supported.
    #[must_use]
    pub fn activity_wait_for_sipi(self) -> bool {
        self.0.get_bit(8)
    }
    /// Bit 14: Intel PT may be used in VMX operation.
    #[must_use]
    pub fn intel_pt_in_vmx(self) -> bool {
        self.0.get_bit(14)
    }
    /// Bit 15: RDMSR can read IA32_SMBASE in SMM.
    #[must_use]
    pub fn rdmsr_smbase_in_smm(self) -> bool {
        self.0.get_bit(15)
    }
    /// Bits 24:16: the number of CR3-target values supported.
    #[must_use]
    pub fn cr3_target_count(self) -> u16 {
        self.0.get_bits(16..25) as u16
    }
    /// The recommended maximum number of MSRs in each MSR-load/store list:
    /// 512 × (bits 27:25 + 1).
    #[must_use]
    pub fn max_msr_list_entries(self) -> u32 {
        512 * (self.0.get_bits(25..28) as u32 + 1)
    }
    /// Bit 28: bit 2 of IA32_SMM_MONITOR_CTL can be set (SMI blocking in VMXOFF).
    #[must_use]
    pub fn smm_monitor_ctl_bit2(self) -> bool {
        self.0.get_bit(28)
    }
    /// Bit 29: VMWRITE can write any supported field, including VM-exit information fields.
    #[must_use]
    pub fn vmwrite_any_field(self) -> bool {
        self.0.get_bit(29)
    }
    /// Bit 30: VM entry allows injection of software interrupts, software exceptions and
    /// privileged software exceptions with an instruction length of 0.
    #[must_use]
    pub fn zero_length_injection(self) -> bool {
        self.0.get_bit(30)
    }
    /// Bits 63:32: the MSEG revision identifier.
    #[must_use]
    pub fn mseg_revision_id(self) -> u32 {
        self.0.get_bits(32..64) as u32
    }
}

bitflags! {
    /// IA32_VMX_EPT_VPID_CAP (MSR 48CH) (SDM Vol. 3C, A.10 "VPID and EPT Capabilities").
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct EptVpidCap: u64 {
        /// Bit 0: EPT entries may be execute-only.
        const EXECUTE_ONLY = 1 << 0;
        /// Bit 6: a page-walk length of 4 is supported.
        const PAGE_WALK_4 = 1 << 6;
        /// Bit 7: a page-walk length of 5 is supported.
        const PAGE_WALK_5 = 1 << 7;
        /// Bit 8: the EPT paging structures may be uncacheable (EPTP memory type 0).
        const MEMORY_TYPE_UC = 1 << 8;
        /// Bit 14: the EPT paging structures may be write-back (EPTP memory type 6).
        const MEMORY_TYPE_WB = 1 << 14;
        /// Bit 16: EPT PDEs may map 2-MByte pages.
        const PAGE_2M = 1 << 16;
        /// Bit 17: EPT PDPTEs may map 1-GByte pages.
        const PAGE_1G = 1 << 17;
        /// Bit 20: INVEPT is supported.
        const INVEPT = 1 << 20;
        /// Bit 21: accessed and dirty flags for EPT are supported.
        const ACCESSED_DIRTY = 1 << 21;
        /// Bit 22: EPT violations report advanced VM-exit information.
        const ADVANCED_EXIT_INFO = 1 << 22;
        /// Bit 23: supervisor shadow-stack control is supported.
        const SUPERVISOR_SHADOW_STACK = 1 << 23;
        /// Bit 25: single-context INVEPT is supported.
        const INVEPT_SINGLE_CONTEXT = 1 << 25;
        /// Bit 26: all-context INVEPT is supported.
        const INVEPT_ALL_CONTEXT = 1 << 26;
        /// Bit 32: INVVPID is supported.
        const INVVPID = 1 << 32;
        /// Bit 40: individual-address INVVPID is supported.
        const INVVPID_INDIVIDUAL_ADDRESS = 1 << 40;
        /// Bit 41: single-context INVVPID is supported.
        const INVVPID_SINGLE_CONTEXT = 1 << 41;
        /// Bit 42: all-context INVVPID is supported.
        const INVVPID_ALL_CONTEXT = 1 << 42;
        /// Bit 43: single-context-retaining-globals INVVPID is supported.
        const INVVPID_SINGLE_CONTEXT_RETAINING_GLOBALS = 1 << 43;
        /// Bits 53:48: the maximum HLAT prefix size (see [`EptVpidCap::max_hlat_prefix_size`]).
        const MAX_HLAT_PREFIX_SIZE = 0x3f << 48;
        const _ = !0;
    }
}

impl EptVpidCap {
    /// Bits 53:48: the maximum HLAT prefix size.
    #[must_use]
    pub fn max_hlat_prefix_size(self) -> u8 {
        self.bits().get_bits(48..54) as u8
    }
}

/// Fixed bits of a control register in VMX operation (SDM Vol. 3C, A.7 "VMX-Fixed Bits in CR0",
/// A.8 "VMX-Fixed Bits in CR4").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FixedBits {
    /// IA32_VMX_CRx_FIXED0: bits that must be 1.
    pub fixed0: u64,
    /// IA32_VMX_CRx_FIXED1: bits that may be 1 (a 0 here must be 0).
    pub fixed1: u64,
}

impl FixedBits {
    /// Bits of `value` that are 0 but must be 1.
    #[must_use]
    pub fn missing(&self, value: u64) -> u64 {
        self.fixed0 & !value
    }
    /// Bits of `value` that are 1 but must be 0.
    #[must_use]
    pub fn forbidden(&self, value: u64) -> u64 {
        value & !self.fixed1
    }
    /// Whether `value` satisfies both masks.
    #[must_use]
    pub fn accepts(&self, value: u64) -> bool {
        self.missing(value) == 0 && self.forbidden(value) == 0
    }
}

/// A snapshot of every VMX capability MSR (SDM Vol. 3C, Appendix A).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct VmxCapabilities {
    /// IA32_FEATURE_CONTROL.
    pub feature_control: FeatureControl,
    /// IA32_VMX_BASIC.
    pub basic: VmxBasic,
    /// Pin-based controls (TRUE MSR where IA32_VMX_BASIC\[55\] says so).
    pub pin_based: AllowedControls32,
    /// Primary processor-based controls (TRUE MSR where available).
    pub primary: AllowedControls32,
    /// Secondary processor-based controls, if "activate secondary controls" may be 1.
    pub secondary: Option<AllowedControls32>,
    /// Tertiary processor-based controls, if "activate tertiary controls" may be 1.
    pub tertiary: Option<AllowedControls64>,
    /// Primary VM-exit controls (TRUE MSR where available).
    pub exit: AllowedControls32,
    /// Secondary VM-exit controls, if "activate secondary controls" (exit bit 31) may be 1.
    pub secondary_exit: Option<AllowedControls64>,
    /// VM-entry controls (TRUE MSR where available).
    pub entry: AllowedControls32,
    /// IA32_VMX_MISC.
    pub misc: VmxMisc,
    /// IA32_VMX_CR0_FIXED0/1.
    pub cr0_fixed: FixedBits,
    /// IA32_VMX_CR4_FIXED0/1.
    pub cr4_fixed: FixedBits,
    /// IA32_VMX_VMCS_ENUM bits 9:1: the highest index value used in any VMCS encoding.
    pub vmcs_max_index: u16,
    /// IA32_VMX_EPT_VPID_CAP, if the secondary controls allow "enable EPT" or "enable VPID".
    pub ept_vpid: Option<EptVpidCap>,
    /// IA32_VMX_VMFUNC, if the secondary controls allow "enable VM functions": bit N set means
    /// VM function N may be enabled.
    pub vmfunc: Option<u64>,
}

impl VmxCapabilities {
    /// Reads every capability MSR that exists according to the rules of SDM Appendix A.
    ///
    /// Call only on a processor that supports VMX (CPUID.1:ECX.VMX\[5\] = 1); the IA32_VMX_*
    /// MSRs do not exist otherwise.
    pub fn read(msrs: &impl MsrRead) -> Self {
        let basic = VmxBasic(msrs.read_msr(msr::IA32_VMX_BASIC));
        let controls = |legacy: u32, true_msr: u32| {
            let legacy = msrs.read_msr(legacy);
            let value = if basic.true_controls() {
                msrs.read_msr(true_msr)
            } else {
                legacy
            };
            AllowedControls32::from_msrs(value, legacy)
        };
        let pin_based = controls(
            msr::IA32_VMX_PINBASED_CTLS,
            msr::IA32_VMX_TRUE_PINBASED_CTLS,
        );
        let primary = controls(
            msr::IA32_VMX_PROCBASED_CTLS,
            msr::IA32_VMX_TRUE_PROCBASED_CTLS,
        );
        let exit = controls(msr::IA32_VMX_EXIT_CTLS, msr::IA32_VMX_TRUE_EXIT_CTLS);
        let entry = controls(msr::IA32_VMX_ENTRY_CTLS, msr::IA32_VMX_TRUE_ENTRY_CTLS);

        let secondary = primary
            .allows(PrimaryControls::ACTIVATE_SECONDARY_CONTROLS.bits())
            .then(|| {
                let v = msrs.read_msr(msr::IA32_VMX_PROCBASED_CTLS2);
                AllowedControls32::from_msrs(v, v)
            });
        let tertiary = primary
            .allows(PrimaryControls::ACTIVATE_TERTIARY_CONTROLS.bits())
            .then(|| AllowedControls64 {
                may_be_one: msrs.read_msr(msr::IA32_VMX_PROCBASED_CTLS3),
            });
        let secondary_exit = exit
            .allows(ExitControls::ACTIVATE_SECONDARY_CONTROLS.bits())
            .then(|| AllowedControls64 {
                may_be_one: msrs.read_msr(msr::IA32_VMX_EXIT_CTLS2),
            });
        let secondary_allows =
            |bits: SecondaryControls| secondary.is_some_and(|s| s.allows(bits.bits()));
        let ept_vpid = (secondary_allows(SecondaryControls::ENABLE_EPT)
            || secondary_allows(SecondaryControls::ENABLE_VPID))
        .then(|| EptVpidCap::from_bits_retain(msrs.read_msr(msr::IA32_VMX_EPT_VPID_CAP)));
        let vmfunc = secondary_allows(SecondaryControls::ENABLE_VM_FUNCTIONS)
            .then(|| msrs.read_msr(msr::IA32_VMX_VMFUNC));

        Self {
            feature_control: FeatureControl::from_bits_retain(
                msrs.read_msr(msr::IA32_FEATURE_CONTROL),
            ),
            basic,
            pin_based,
            primary,
            secondary,
            tertiary,
            exit,
            secondary_exit,
            entry,
            misc: VmxMisc(msrs.read_msr(msr::IA32_VMX_MISC)),
            cr0_fixed: FixedBits {
                fixed0: msrs.read_msr(msr::IA32_VMX_CR0_FIXED0),
                fixed1: msrs.read_msr(msr::IA32_VMX_CR0_FIXED1),
            },
            cr4_fixed: FixedBits {
                fixed0: msrs.read_msr(msr::IA32_VMX_CR4_FIXED0),
                fixed1: msrs.read_msr(msr::IA32_VMX_CR4_FIXED1),
            },
            vmcs_max_index: msrs.read_msr(msr::IA32_VMX_VMCS_ENUM).get_bits(1..10) as u16,
            ept_vpid,
            vmfunc,
        }
    }

    /// Turns requested controls into the values to write to the VMCS control fields.
    ///
    /// The activation bits are derived from the request: a non-empty secondary (tertiary)
    /// request sets "activate secondary (tertiary) controls" in the primary controls, and a
    /// non-empty secondary VM-exit request sets "activate secondary controls" in the VM-exit
    /// controls. Each value has the bits the CPU requires set (SDM A.2, algorithm 3: the
    /// default-1 bits this crate does not name are set too) and nothing is dropped: a request the
    /// CPU cannot meet fails.
    ///
    /// # Errors
    /// [`UnsupportedControls`] naming every requested bit, in every control word, that the CPU
    /// cannot set to 1 (including whole control words the CPU lacks).
    pub fn adjust(
        &self,
        request: &ControlsRequest,
    ) -> Result<AdjustedControls, UnsupportedControls> {
        let mut primary = request.primary;
        primary.set(
            PrimaryControls::ACTIVATE_SECONDARY_CONTROLS,
            !request.secondary.is_empty(),
        );
        primary.set(
            PrimaryControls::ACTIVATE_TERTIARY_CONTROLS,
            !request.tertiary.is_empty(),
        );
        let mut exit = request.exit;
        exit.set(
            ExitControls::ACTIVATE_SECONDARY_CONTROLS,
            !request.secondary_exit.is_empty(),
        );
        // Keep explicitly requested activation bits even for empty words.
        primary |= request.primary
            & (PrimaryControls::ACTIVATE_SECONDARY_CONTROLS
                | PrimaryControls::ACTIVATE_TERTIARY_CONTROLS);
        exit |= request.exit & ExitControls::ACTIVATE_SECONDARY_CONTROLS;

        let mut refused = UnsupportedControls::default();
        let pin_based = self
            .pin_based
            .adjust(request.pin_based)
            .unwrap_or_else(|r| {
                refused.pin_based = PinBasedControls::from_bits_retain(r);
                0
            });
        let primary = self.primary.adjust(primary).unwrap_or_else(|r| {
            refused.primary = PrimaryControls::from_bits_retain(r);
            0
        });
        let exit = self.exit.adjust(exit).unwrap_or_else(|r| {
            refused.exit = ExitControls::from_bits_retain(r);
            0
        });
        let entry = self.entry.adjust(request.entry).unwrap_or_else(|r| {
            refused.entry = EntryControls::from_bits_retain(r);
            0
        });
        let secondary = match self.secondary {
            Some(allowed) => allowed.adjust(request.secondary).unwrap_or_else(|r| {
                refused.secondary = SecondaryControls::from_bits_retain(r);
                0
            }),
            None => {
                refused.secondary = request.secondary;
                0
            }
        };
        let adjust64 = |allowed: Option<AllowedControls64>, requested: u64| {
            let may = allowed.map_or(0, |a| a.may_be_one);
            if requested & !may == 0 {
                Ok(requested)
            } else {
                Err(requested & !may)
            }
        };
        let tertiary = adjust64(self.tertiary, request.tertiary.bits()).unwrap_or_else(|r| {
            refused.tertiary = TertiaryControls::from_bits_retain(r);
            0
        });
        let secondary_exit = adjust64(self.secondary_exit, request.secondary_exit.bits())
            .unwrap_or_else(|r| {
                refused.secondary_exit = SecondaryExitControls::from_bits_retain(r);
                0
            });
        if refused.is_empty() {
            Ok(AdjustedControls {
                pin_based,
                primary,
                secondary,
                tertiary,
                exit,
                secondary_exit,
                entry,
            })
        } else {
            Err(refused)
        }
    }
}

/// The controls a hypervisor asks for, before adjustment to the CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct ControlsRequest {
    /// Pin-based VM-execution controls.
    pub pin_based: PinBasedControls,
    /// Primary processor-based VM-execution controls (activation bits are derived).
    pub primary: PrimaryControls,
    /// Secondary processor-based VM-execution controls.
    pub secondary: SecondaryControls,
    /// Tertiary processor-based VM-execution controls.
    pub tertiary: TertiaryControls,
    /// Primary VM-exit controls (the activation bit is derived).
    pub exit: ExitControls,
    /// Secondary VM-exit controls.
    pub secondary_exit: SecondaryExitControls,
    /// VM-entry controls.
    pub entry: EntryControls,
}

/// Control values ready to be written to the VMCS (SDM Vol. 3C, 25.6–25.8).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct AdjustedControls {
    /// Pin-based VM-execution controls (encoding 4000H).
    pub pin_based: u32,
    /// Primary processor-based VM-execution controls (encoding 4002H).
    pub primary: u32,
    /// Secondary processor-based VM-execution controls (encoding 401EH).
    pub secondary: u32,
    /// Tertiary processor-based VM-execution controls (encoding 2034H).
    pub tertiary: u64,
    /// Primary VM-exit controls (encoding 400CH).
    pub exit: u32,
    /// Secondary VM-exit controls (encoding 2044H).
    pub secondary_exit: u64,
    /// VM-entry controls (encoding 4012H).
    pub entry: u32,
}

/// Requested control bits that the processor cannot set to 1, per control word.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct UnsupportedControls {
    /// Refused pin-based controls.
    pub pin_based: PinBasedControls,
    /// Refused primary processor-based controls.
    pub primary: PrimaryControls,
    /// Refused secondary processor-based controls.
    pub secondary: SecondaryControls,
    /// Refused tertiary processor-based controls.
    pub tertiary: TertiaryControls,
    /// Refused primary VM-exit controls.
    pub exit: ExitControls,
    /// Refused secondary VM-exit controls.
    pub secondary_exit: SecondaryExitControls,
    /// Refused VM-entry controls.
    pub entry: EntryControls,
}

impl UnsupportedControls {
    /// Whether nothing was refused.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.pin_based.is_empty()
            && self.primary.is_empty()
            && self.secondary.is_empty()
            && self.tertiary.is_empty()
            && self.exit.is_empty()
            && self.secondary_exit.is_empty()
            && self.entry.is_empty()
    }
}

fn write_word<F: Flags>(
    f: &mut fmt::Formatter<'_>,
    first: &mut bool,
    what: &str,
    flags: F,
) -> fmt::Result
where
    F::Bits: fmt::LowerHex,
{
    if flags.is_empty() {
        return Ok(());
    }
    write!(f, "{}{what}: ", if *first { "" } else { "; " })?;
    *first = false;
    let mut sep = "";
    for (name, _) in flags.iter_names() {
        write!(f, "{sep}{name}")?;
        sep = " | ";
    }
    let unnamed = flags.bits() & !F::from_bits_truncate(flags.bits()).bits();
    if unnamed != F::Bits::EMPTY {
        write!(f, "{sep}{unnamed:#x}")?;
    }
    Ok(())
}

impl fmt::Display for UnsupportedControls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the processor cannot set these VMX controls: ")?;
        let mut first = true;
        write_word(f, &mut first, "pin-based", self.pin_based)?;
        write_word(f, &mut first, "primary processor-based", self.primary)?;
        write_word(f, &mut first, "secondary processor-based", self.secondary)?;
        write_word(f, &mut first, "tertiary processor-based", self.tertiary)?;
        write_word(f, &mut first, "VM-exit", self.exit)?;
        write_word(f, &mut first, "secondary VM-exit", self.secondary_exit)?;
        write_word(f, &mut first, "VM-entry", self.entry)
    }
}

impl core::error::Error for UnsupportedControls {}

/// Recorded capability snapshots, for host tests and demonstrations of code that adjusts
/// controls: a [`recorded::RecordedMsrs`] is an [`MsrRead`] over a fixed table.
pub mod recorded {
    use crate::msr::*;

    /// IA32_VMX_* values of a Skylake-class client processor (Core i7-6700 class), as public MSR
    /// dumps show them: TRUE controls, no posted interrupts, no tertiary or secondary VM-exit
    /// controls, EPT with page-walk length 4, WB, 2 MiB/1 GiB pages and A/D flags, INVEPT and
    /// INVVPID of every type, VMFUNC 0 (EPTP switching).
    pub const SKYLAKE_CLIENT: RecordedMsrs = RecordedMsrs(&[
        (IA32_FEATURE_CONTROL, 0x5),
        (IA32_VMX_BASIC, 0x00da_0400_0000_0004),
        (IA32_VMX_PINBASED_CTLS, 0x0000_007f_0000_0016),
        (IA32_VMX_TRUE_PINBASED_CTLS, 0x0000_007f_0000_0016),
        (IA32_VMX_PROCBASED_CTLS, 0xfff9_fffe_0401_e172),
        (IA32_VMX_TRUE_PROCBASED_CTLS, 0xfff9_fffe_0400_6172),
        (IA32_VMX_EXIT_CTLS, 0x01ff_ffff_0003_6dff),
        (IA32_VMX_TRUE_EXIT_CTLS, 0x01ff_ffff_0003_6dfb),
        (IA32_VMX_ENTRY_CTLS, 0x0003_ffff_0000_11ff),
        (IA32_VMX_TRUE_ENTRY_CTLS, 0x0003_ffff_0000_11fb),
        (IA32_VMX_MISC, 0x0000_0000_7004_c1e7),
        (IA32_VMX_CR0_FIXED0, 0x8000_0021),
        (IA32_VMX_CR0_FIXED1, 0xffff_ffff),
        (IA32_VMX_CR4_FIXED0, 0x2000),
        (IA32_VMX_CR4_FIXED1, 0x0037_67ff),
        (IA32_VMX_VMCS_ENUM, 0x2e),
        (IA32_VMX_PROCBASED_CTLS2, 0x0053_7dff_0000_0000),
        (IA32_VMX_EPT_VPID_CAP, 0x0000_0f01_0673_4141),
        (IA32_VMX_VMFUNC, 0x1),
    ]);

    /// A table of MSR values standing in for RDMSR.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct RecordedMsrs(pub &'static [(u32, u64)]);

    impl RecordedMsrs {
        /// The recorded value of `msr`, or `None` if the recording does not have it.
        #[must_use]
        pub fn get(&self, msr: u32) -> Option<u64> {
            self.0.iter().find(|(m, _)| *m == msr).map(|(_, v)| *v)
        }
    }

    impl MsrRead for RecordedMsrs {
        /// The recorded value; 0 for an MSR the recording lacks (on hardware, reading an MSR
        /// that does not exist raises #GP; [`super::VmxCapabilities::read`] never does that).
        fn read_msr(&self, msr: u32) -> u64 {
            self.get(msr).unwrap_or(0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msr::*;

    /// The recorded Skylake-class snapshot; reading an MSR it lacks fails the test (on
    /// hardware that read would #GP).
    fn skylake(msr: u32) -> u64 {
        recorded::SKYLAKE_CLIENT
            .get(msr)
            .unwrap_or_else(|| panic!("the snapshot must not read MSR {msr:#x}"))
    }

    #[test]
    fn reads_a_skylake_snapshot() {
        let caps = VmxCapabilities::read(&skylake);
        assert_eq!(caps.basic.revision_id(), 4);
        assert_eq!(caps.basic.region_size(), 0x400);
        assert_eq!(caps.basic.memory_type(), 6);
        assert!(caps.basic.ins_outs_reporting() && caps.basic.true_controls());
        assert!(!caps.basic.physical_address_width_32());
        assert!(
            caps.feature_control
                .contains(FeatureControl::LOCK | FeatureControl::VMX_OUTSIDE_SMX)
        );
        // TRUE MSRs in effect: CR3-load/store exiting (bits 15, 16) may be 0.
        assert_eq!(caps.primary.must_be_one, 0x0400_6172);
        assert_eq!(caps.primary.default_one, 0x0401_e172);
        assert_eq!(
            caps.tertiary, None,
            "bit 17 of the primary allowed-1 settings is 0"
        );
        assert_eq!(
            caps.secondary_exit, None,
            "bit 31 of the exit allowed-1 settings is 0"
        );
        let ept = caps.ept_vpid.unwrap();
        assert!(ept.contains(EptVpidCap::PAGE_WALK_4 | EptVpidCap::MEMORY_TYPE_WB));
        assert!(
            ept.contains(EptVpidCap::PAGE_2M | EptVpidCap::PAGE_1G | EptVpidCap::ACCESSED_DIRTY)
        );
        assert!(!ept.contains(EptVpidCap::PAGE_WALK_5));
        assert!(ept.contains(EptVpidCap::INVVPID_SINGLE_CONTEXT_RETAINING_GLOBALS));
        assert_eq!(caps.vmfunc, Some(1));
        assert_eq!(caps.misc.preemption_timer_tsc_shift(), 7);
        assert!(caps.misc.activity_hlt() && caps.misc.activity_shutdown());
        assert!(caps.misc.activity_wait_for_sipi());
        assert_eq!(caps.misc.cr3_target_count(), 4);
        assert_eq!(caps.misc.max_msr_list_entries(), 512);
        assert!(caps.misc.vmwrite_any_field() && caps.misc.zero_length_injection());
        assert_eq!(caps.vmcs_max_index, 0x17);
        assert!(caps.cr0_fixed.accepts(0x8000_0031) && !caps.cr0_fixed.accepts(0x8000_0011));
        assert_eq!(caps.cr4_fixed.missing(0x20), 0x2000);
        assert_eq!(caps.cr4_fixed.forbidden(0x0040_2020), 0x0040_0000);
    }

    #[test]
    fn adjusts_a_typical_request_and_sets_required_bits() {
        let caps = VmxCapabilities::read(&skylake);
        let request = ControlsRequest {
            pin_based: PinBasedControls::EXTERNAL_INTERRUPT_EXITING | PinBasedControls::NMI_EXITING,
            primary: PrimaryControls::HLT_EXITING
                | PrimaryControls::USE_IO_BITMAPS
                | PrimaryControls::USE_MSR_BITMAPS,
            secondary: SecondaryControls::ENABLE_EPT
                | SecondaryControls::ENABLE_VPID
                | SecondaryControls::UNRESTRICTED_GUEST
                | SecondaryControls::ENABLE_RDTSCP,
            exit: ExitControls::HOST_ADDRESS_SPACE_SIZE | ExitControls::LOAD_IA32_EFER,
            entry: EntryControls::IA32E_MODE_GUEST | EntryControls::LOAD_IA32_EFER,
            ..ControlsRequest::default()
        };
        let v = caps.adjust(&request).unwrap();
        assert_eq!(v.pin_based, 0x16 | 0x1 | 0x8);
        // Required 1-bits of the TRUE MSR, the request, and "activate secondary controls"; CR3
        // load/store exiting stay 0 because the TRUE MSR allows it.
        assert_eq!(
            v.primary,
            0x0400_6172 | (1 << 7) | (1 << 25) | (1 << 28) | (1 << 31)
        );
        assert_eq!(v.primary & (3 << 15), 0);
        assert_eq!(v.secondary, 0x2 | 0x20 | 0x80 | 0x8);
        assert_eq!(v.exit, 0x0003_6dfb | (1 << 9) | (1 << 21));
        assert_eq!(v.entry, 0x11fb | (1 << 9) | (1 << 15));
        assert_eq!((v.tertiary, v.secondary_exit), (0, 0));
    }

    #[test]
    fn names_every_refused_bit_in_every_word() {
        let caps = VmxCapabilities::read(&skylake);
        let request = ControlsRequest {
            pin_based: PinBasedControls::PROCESS_POSTED_INTERRUPTS, // client parts lack it
            secondary: SecondaryControls::ENABLE_EPT
                | SecondaryControls::PASID_TRANSLATION // bit 21: not on this CPU
                | SecondaryControls::USE_TSC_SCALING, // bit 25: not on this CPU
            tertiary: TertiaryControls::IPI_VIRTUALIZATION,         // no tertiary controls at all
            secondary_exit: SecondaryExitControls::LOAD_IA32_FRED,  // no secondary exit controls
            entry: EntryControls::LOAD_CET_STATE,                   // bit 20: not on this CPU
            ..ControlsRequest::default()
        };
        let err = caps.adjust(&request).unwrap_err();
        assert_eq!(err.pin_based, PinBasedControls::PROCESS_POSTED_INTERRUPTS);
        assert_eq!(
            err.secondary,
            SecondaryControls::PASID_TRANSLATION | SecondaryControls::USE_TSC_SCALING
        );
        // The activation bits the request implied are refused too, with the words themselves.
        assert_eq!(err.primary, PrimaryControls::ACTIVATE_TERTIARY_CONTROLS);
        assert_eq!(err.tertiary, TertiaryControls::IPI_VIRTUALIZATION);
        assert_eq!(err.exit, ExitControls::ACTIVATE_SECONDARY_CONTROLS);
        assert_eq!(err.secondary_exit, SecondaryExitControls::LOAD_IA32_FRED);
        assert_eq!(err.entry, EntryControls::LOAD_CET_STATE);
        let text = err.to_string();
        for name in [
            "PASID_TRANSLATION",
            "USE_TSC_SCALING",
            "IPI_VIRTUALIZATION",
            "LOAD_IA32_FRED",
            "LOAD_CET_STATE",
            "ACTIVATE_TERTIARY_CONTROLS",
        ] {
            assert!(text.contains(name), "{name} missing from: {text}");
        }
    }

    #[test]
    fn without_true_msrs_default_one_bits_stay_set_and_true_msrs_are_not_read() {
        // A processor without IA32_VMX_BASIC[55] and without secondary controls (an early
        // Core 2): the TRUE MSRs do not exist and
        // reading one would #GP, which the snapshot closure turns into a test failure.
        let old = |msr: u32| match msr {
            IA32_VMX_BASIC => 0x005a_0400_0000_000d,
            IA32_VMX_TRUE_PINBASED_CTLS
            | IA32_VMX_TRUE_PROCBASED_CTLS
            | IA32_VMX_TRUE_EXIT_CTLS
            | IA32_VMX_TRUE_ENTRY_CTLS => panic!("TRUE MSR {msr:#x} read without BASIC[55]"),
            IA32_VMX_PINBASED_CTLS => 0x0000_003f_0000_0016,
            IA32_VMX_PROCBASED_CTLS => 0x77f9_fffe_0401_e172,
            IA32_VMX_EXIT_CTLS => 0x0003_6fff_0003_6dff,
            IA32_VMX_ENTRY_CTLS => 0x0000_f3ff_0000_11ff,
            IA32_VMX_PROCBASED_CTLS2 => panic!("CTLS2 read although bit 31 of allowed-1 is 0"),
            IA32_VMX_EPT_VPID_CAP | IA32_VMX_VMFUNC => panic!("EPT/VMFUNC read without CTLS2"),
            _ => 0,
        };
        let caps = VmxCapabilities::read(&old);
        assert!(!caps.basic.true_controls());
        assert_eq!(caps.secondary, None);
        assert_eq!(caps.ept_vpid, None);
        let v = caps.adjust(&ControlsRequest::default()).unwrap();
        // CR3-load/store exiting are default-1 here and must stay 1.
        assert_eq!(v.primary, 0x0401_e172);
        assert_eq!(v.exit, 0x0003_6dff);
        assert_eq!(v.entry, 0x11ff);
        let err = caps
            .adjust(&ControlsRequest {
                secondary: SecondaryControls::ENABLE_EPT,
                pin_based: PinBasedControls::PROCESS_POSTED_INTERRUPTS,
                ..ControlsRequest::default()
            })
            .unwrap_err();
        assert_eq!(err.secondary, SecondaryControls::ENABLE_EPT);
        assert_eq!(err.primary, PrimaryControls::ACTIVATE_SECONDARY_CONTROLS);
        assert_eq!(err.pin_based, PinBasedControls::PROCESS_POSTED_INTERRUPTS);
    }

    #[test]
    fn unknown_default_one_bits_are_set_known_ones_follow_the_true_msr() {
        let allowed = AllowedControls32 {
            must_be_one: 0x0000_0016,
            may_be_one: 0xffff_ffff,
            // Bit 9 is not a control this crate names; bit 3 (NMI exiting) is.
            default_one: 0x0000_0216 | 0x8,
        };
        assert_eq!(allowed.adjust(PinBasedControls::empty()), Ok(0x0216));
        assert_eq!(allowed.adjust(PinBasedControls::NMI_EXITING), Ok(0x021e));
    }

    #[test]
    fn tertiary_and_secondary_exit_controls_when_present() {
        let with_tertiary = |msr: u32| match msr {
            IA32_VMX_PROCBASED_CTLS => 0xfffb_fffe_0401_e172, // bit 17 (tertiary) allowed
            IA32_VMX_EXIT_CTLS => 0xffff_ffff_0003_6dff,      // bit 31 allowed
            IA32_VMX_PROCBASED_CTLS3 => 0x1f,
            IA32_VMX_EXIT_CTLS2 => 0x3,
            _ => skylake(msr) & !(1 << 55), // no TRUE MSRs for simplicity
        };
        let caps = VmxCapabilities::read(&with_tertiary);
        assert_eq!(caps.tertiary, Some(AllowedControls64 { may_be_one: 0x1f }));
        assert_eq!(
            caps.secondary_exit,
            Some(AllowedControls64 { may_be_one: 0x3 })
        );
        let v = caps
            .adjust(&ControlsRequest {
                tertiary: TertiaryControls::IPI_VIRTUALIZATION,
                secondary_exit: SecondaryExitControls::SAVE_IA32_FRED,
                ..ControlsRequest::default()
            })
            .unwrap();
        assert_eq!(v.tertiary, 1 << 4);
        assert_eq!(v.secondary_exit, 1);
        assert_ne!(v.primary & (1 << 17), 0);
        assert_ne!(v.exit & (1 << 31), 0);
        let err = caps
            .adjust(&ControlsRequest {
                tertiary: TertiaryControls::VIRTUALIZE_IA32_SPEC_CTRL,
                ..ControlsRequest::default()
            })
            .unwrap_err();
        assert_eq!(err.tertiary, TertiaryControls::VIRTUALIZE_IA32_SPEC_CTRL);
    }
}
