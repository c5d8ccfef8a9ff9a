//! The model-specific registers of VMX and the trait through which this crate reads them.
//!
//! Reference: Intel® 64 and IA-32 Architectures Software Developer's Manual, Order Number
//! 325462-086US (December 2024): Volume 4, Chapter 2 "Model-Specific Registers (MSRs)", Table 2-2
//! "IA-32 Architectural MSRs" (addresses); Volume 3C, Appendix A "VMX Capability Reporting
//! Facility" (meanings).

/// IA32_FEATURE_CONTROL (3AH): lock and VMXON enables (SDM Vol. 3C, 24.7 "Enabling and Entering
/// VMX Operation").
pub const IA32_FEATURE_CONTROL: u32 = 0x3A;
/// IA32_VMX_BASIC (480H): basic VMX information (SDM Vol. 3C, A.1 "Basic VMX Information").
pub const IA32_VMX_BASIC: u32 = 0x480;
/// IA32_VMX_PINBASED_CTLS (481H): pin-based controls (SDM A.3.1).
pub const IA32_VMX_PINBASED_CTLS: u32 = 0x481;
/// IA32_VMX_PROCBASED_CTLS (482H): primary processor-based controls (SDM A.3.2).
pub const IA32_VMX_PROCBASED_CTLS: u32 = 0x482;
/// IA32_VMX_EXIT_CTLS (483H): primary VM-exit controls (SDM A.4.1).
pub const IA32_VMX_EXIT_CTLS: u32 = 0x483;
/// IA32_VMX_ENTRY_CTLS (484H): VM-entry controls (SDM A.5).
pub const IA32_VMX_ENTRY_CTLS: u32 = 0x484;
/// IA32_VMX_MISC (485H): miscellaneous data (SDM A.6).
pub const IA32_VMX_MISC: u32 = 0x485;
/// IA32_VMX_CR0_FIXED0 (486H): CR0 bits fixed to 1 in VMX operation (SDM A.7).
pub const IA32_VMX_CR0_FIXED0: u32 = 0x486;
/// IA32_VMX_CR0_FIXED1 (487H): CR0 bits allowed to be 1 in VMX operation (SDM A.7).
pub const IA32_VMX_CR0_FIXED1: u32 = 0x487;
/// IA32_VMX_CR4_FIXED0 (488H): CR4 bits fixed to 1 in VMX operation (SDM A.8).
pub const IA32_VMX_CR4_FIXED0: u32 = 0x488;
/// IA32_VMX_CR4_FIXED1 (489H): CR4 bits allowed to be 1 in VMX operation (SDM A.8).
pub const IA32_VMX_CR4_FIXED1: u32 = 0x489;
/// IA32_VMX_VMCS_ENUM (48AH): highest VMCS field index (SDM A.9).
pub const IA32_VMX_VMCS_ENUM: u32 = 0x48A;
/// IA32_VMX_PROCBASED_CTLS2 (48BH): secondary processor-based controls (SDM A.3.3).
pub const IA32_VMX_PROCBASED_CTLS2: u32 = 0x48B;
/// IA32_VMX_EPT_VPID_CAP (48CH): EPT and VPID capabilities (SDM A.10).
pub const IA32_VMX_EPT_VPID_CAP: u32 = 0x48C;
/// IA32_VMX_TRUE_PINBASED_CTLS (48DH) (SDM A.3.1).
pub const IA32_VMX_TRUE_PINBASED_CTLS: u32 = 0x48D;
/// IA32_VMX_TRUE_PROCBASED_CTLS (48EH) (SDM A.3.2).
pub const IA32_VMX_TRUE_PROCBASED_CTLS: u32 = 0x48E;
/// IA32_VMX_TRUE_EXIT_CTLS (48FH) (SDM A.4.1).
pub const IA32_VMX_TRUE_EXIT_CTLS: u32 = 0x48F;
/// IA32_VMX_TRUE_ENTRY_CTLS (490H) (SDM A.5).
pub const IA32_VMX_TRUE_ENTRY_CTLS: u32 = 0x490;
/// IA32_VMX_VMFUNC (491H): VM functions (SDM A.11).
pub const IA32_VMX_VMFUNC: u32 = 0x491;
/// IA32_VMX_PROCBASED_CTLS3 (492H): tertiary processor-based controls (SDM A.3.4).
pub const IA32_VMX_PROCBASED_CTLS3: u32 = 0x492;
/// IA32_VMX_EXIT_CTLS2 (493H): secondary VM-exit controls (SDM A.4.2).
pub const IA32_VMX_EXIT_CTLS2: u32 = 0x493;

/// Reads model-specific registers.
///
/// The capability snapshot ([`crate::capabilities::VmxCapabilities::read`]) reads only the MSRs
/// whose existence the SDM lets it deduce, so a correct implementation never needs to handle a
/// non-existent MSR. Host tests implement this trait with fixed values.
pub trait MsrRead {
    /// Returns the value of MSR `msr` (RDMSR).
    fn read_msr(&self, msr: u32) -> u64;
}

impl<F: Fn(u32) -> u64> MsrRead for F {
    fn read_msr(&self, msr: u32) -> u64 {
        self(msr)
    }
}
