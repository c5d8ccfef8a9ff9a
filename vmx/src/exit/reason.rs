//! The exit-reason field: the basic exit reason (bits 15:0) and the flag bits above it.
//!
//! Reference: Intel® 64 and IA-32 Architectures Software Developer's Manual, Order Number
//! 325462-086US (December 2024): Volume 3C, 28.2.1 "Basic VM-Exit Information" (table "Format of
//! Exit Reason") and Volume 3D, Appendix C "VMX Basic Exit Reasons" (Table C-1 "Basic Exit
//! Reasons").

use core::fmt;

use super::bits::{flag, u16_field, u32_field};

/// A basic exit reason: bits 15:0 of the exit-reason field (SDM Vol. 3D, Appendix C "VMX Basic
/// Exit Reasons", Table C-1).
///
/// This is an open newtype: the processor keeps adding reasons, so a number that this crate does
/// not know is kept as data (its [`name`](Self::name) is `None`), never a panic. [`Debug`] prints
/// the constant's name when there is one.
///
/// ```
/// use hvkit_vmx::exit::BasicExitReason;
///
/// assert_eq!(BasicExitReason(48), BasicExitReason::EPT_VIOLATION);
/// assert_eq!(BasicExitReason::EPT_VIOLATION.name(), Some("EPT_VIOLATION"));
/// assert_eq!(format!("{:?}", BasicExitReason(48)), "BasicExitReason::EPT_VIOLATION");
/// assert_eq!(format!("{:?}", BasicExitReason(200)), "BasicExitReason(200)");
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BasicExitReason(pub u16);

macro_rules! basic_exit_reasons {
    ($($(#[$doc:meta])* $name:ident = $value:literal, $text:literal;)*) => {
        impl BasicExitReason {
            $($(#[$doc])* pub const $name: Self = Self($value);)*

            /// Every basic exit reason this crate defines, in ascending order.
            pub const ALL: &'static [Self] = &[$(Self::$name),*];

            /// The name of the associated constant for this reason, or `None` for a number this
            /// crate does not define (a reserved number, or one newer than the SDM revision
            /// followed).
            #[must_use]
            pub const fn name(self) -> Option<&'static str> {
                match self.0 {
                    $($value => Some(stringify!($name)),)*
                    _ => None,
                }
            }

            /// A short description after the SDM's Table C-1, or `None` for a number this crate
            /// does not define.
            #[must_use]
            pub const fn description(self) -> Option<&'static str> {
                match self.0 {
                    $($value => Some($text),)*
                    _ => None,
                }
            }
        }
    };
}

basic_exit_reasons! {
    /// 0: an exception whose exception-bitmap bit is 1, or an NMI with "NMI exiting" = 1.
    EXCEPTION_OR_NMI = 0, "Exception or non-maskable interrupt (NMI)";
    /// 1: an external interrupt arrived and "external-interrupt exiting" was 1.
    EXTERNAL_INTERRUPT = 1, "External interrupt";
    /// 2: an exception while calling the double-fault handler that did not itself cause a VM
    /// exit.
    TRIPLE_FAULT = 2, "Triple fault";
    /// 3: an INIT signal arrived.
    INIT_SIGNAL = 3, "INIT signal";
    /// 4: a start-up IPI arrived while the processor was in the wait-for-SIPI state.
    SIPI = 4, "Start-up IPI (SIPI)";
    /// 5: an SMI arrived immediately after retirement of an I/O instruction and caused an SMM VM
    /// exit.
    IO_SMI = 5, "I/O system-management interrupt (SMI)";
    /// 6: an SMI arrived and caused an SMM VM exit, not immediately after an I/O instruction.
    OTHER_SMI = 6, "Other SMI";
    /// 7: RFLAGS.IF = 1, no blocking by STI or MOV SS, and "interrupt-window exiting" = 1.
    INTERRUPT_WINDOW = 7, "Interrupt window";
    /// 8: no virtual-NMI blocking and "NMI-window exiting" = 1.
    NMI_WINDOW = 8, "NMI window";
    /// 9: guest software attempted a task switch.
    TASK_SWITCH = 9, "Task switch";
    /// 10: guest software attempted to execute CPUID.
    CPUID = 10, "CPUID";
    /// 11: guest software attempted to execute GETSEC.
    GETSEC = 11, "GETSEC";
    /// 12: HLT with "HLT exiting" = 1.
    HLT = 12, "HLT";
    /// 13: guest software attempted to execute INVD.
    INVD = 13, "INVD";
    /// 14: INVLPG with "INVLPG exiting" = 1.
    INVLPG = 14, "INVLPG";
    /// 15: RDPMC with "RDPMC exiting" = 1.
    RDPMC = 15, "RDPMC";
    /// 16: RDTSC with "RDTSC exiting" = 1.
    RDTSC = 16, "RDTSC";
    /// 17: guest software attempted to execute RSM in SMM.
    RSM = 17, "RSM";
    /// 18: VMCALL by guest software, or by the executive monitor (SMM VM exit).
    VMCALL = 18, "VMCALL";
    /// 19: guest software attempted to execute VMCLEAR.
    VMCLEAR = 19, "VMCLEAR";
    /// 20: guest software attempted to execute VMLAUNCH.
    VMLAUNCH = 20, "VMLAUNCH";
    /// 21: guest software attempted to execute VMPTRLD.
    VMPTRLD = 21, "VMPTRLD";
    /// 22: guest software attempted to execute VMPTRST.
    VMPTRST = 22, "VMPTRST";
    /// 23: guest software attempted to execute VMREAD.
    VMREAD = 23, "VMREAD";
    /// 24: guest software attempted to execute VMRESUME.
    VMRESUME = 24, "VMRESUME";
    /// 25: guest software attempted to execute VMWRITE.
    VMWRITE = 25, "VMWRITE";
    /// 26: guest software attempted to execute VMXOFF.
    VMXOFF = 26, "VMXOFF";
    /// 27: guest software attempted to execute VMXON.
    VMXON = 27, "VMXON";
    /// 28: CLTS, LMSW or MOV CR access to CR0, CR3, CR4 or CR8 that the controls intercept.
    CONTROL_REGISTER_ACCESS = 28, "Control-register accesses";
    /// 29: MOV to or from a debug register with "MOV-DR exiting" = 1.
    MOV_DR = 29, "MOV DR";
    /// 30: an I/O instruction intercepted by the I/O bitmaps or "unconditional I/O exiting".
    IO_INSTRUCTION = 30, "I/O instruction";
    /// 31: RDMSR intercepted by the MSR bitmaps (or without MSR bitmaps).
    RDMSR = 31, "RDMSR";
    /// 32: WRMSR intercepted by the MSR bitmaps (or without MSR bitmaps).
    WRMSR = 32, "WRMSR";
    /// 33: VM-entry failure: a check on the guest-state area failed.
    ENTRY_FAILURE_INVALID_GUEST_STATE = 33, "VM-entry failure due to invalid guest state";
    /// 34: VM-entry failure: loading an MSR from the VM-entry MSR-load area failed.
    ENTRY_FAILURE_MSR_LOADING = 34, "VM-entry failure due to MSR loading";
    /// 36: MWAIT with "MWAIT exiting" = 1.
    MWAIT = 36, "MWAIT";
    /// 37: a monitor-trap-flag VM exit (the 1-setting of "monitor trap flag", or an MTF VM
    /// exit injected by VM entry).
    MONITOR_TRAP_FLAG = 37, "Monitor trap flag";
    /// 39: MONITOR with "MONITOR exiting" = 1.
    MONITOR = 39, "MONITOR";
    /// 40: PAUSE with "PAUSE exiting" = 1, or a PAUSE loop with "PAUSE-loop exiting" = 1.
    PAUSE = 40, "PAUSE";
    /// 41: VM-entry failure: a machine-check event during VM entry.
    ENTRY_FAILURE_MACHINE_CHECK = 41, "VM-entry failure due to machine-check event";
    /// 43: the TPR shadow dropped below the TPR threshold (trap-like).
    TPR_BELOW_THRESHOLD = 43, "TPR below threshold";
    /// 44: an access to the APIC-access page with "virtualize APIC accesses" = 1.
    APIC_ACCESS = 44, "APIC access";
    /// 45: EOI virtualization for a vector whose EOI-exit bitmap bit is 1 (trap-like).
    VIRTUALIZED_EOI = 45, "Virtualized EOI";
    /// 46: LGDT, LIDT, SGDT or SIDT with "descriptor-table exiting" = 1.
    GDTR_IDTR_ACCESS = 46, "Access to GDTR or IDTR";
    /// 47: LLDT, LTR, SLDT or STR with "descriptor-table exiting" = 1.
    LDTR_TR_ACCESS = 47, "Access to LDTR or TR";
    /// 48: an access with a guest-physical address that the EPT paging structures disallow.
    EPT_VIOLATION = 48, "EPT violation";
    /// 49: an access with a guest-physical address that met a misconfigured EPT entry.
    EPT_MISCONFIGURATION = 49, "EPT misconfiguration";
    /// 50: guest software attempted to execute INVEPT.
    INVEPT = 50, "INVEPT";
    /// 51: RDTSCP with "enable RDTSCP" and "RDTSC exiting" both 1.
    RDTSCP = 51, "RDTSCP";
    /// 52: the VMX-preemption timer counted down to zero.
    PREEMPTION_TIMER_EXPIRED = 52, "VMX-preemption timer expired";
    /// 53: guest software attempted to execute INVVPID.
    INVVPID = 53, "INVVPID";
    /// 54: WBINVD or WBNOINVD with "WBINVD exiting" = 1.
    WBINVD = 54, "WBINVD or WBNOINVD";
    /// 55: guest software attempted to execute XSETBV.
    XSETBV = 55, "XSETBV";
    /// 56: a write to the virtual-APIC page that the VMM must virtualize (trap-like).
    APIC_WRITE = 56, "APIC write";
    /// 57: RDRAND with "RDRAND exiting" = 1.
    RDRAND = 57, "RDRAND";
    /// 58: INVPCID with "enable INVPCID" and "INVLPG exiting" both 1.
    INVPCID = 58, "INVPCID";
    /// 59: VMFUNC with a disabled VM function or a function-specific VM-exit condition.
    VMFUNC = 59, "VMFUNC";
    /// 60: ENCLS with "enable ENCLS exiting" = 1 and the leaf's ENCLS-exiting bitmap bit set.
    ENCLS = 60, "ENCLS";
    /// 61: RDSEED with "RDSEED exiting" = 1.
    RDSEED = 61, "RDSEED";
    /// 62: the page-modification log was full when the processor needed to log a GPA.
    PML_FULL = 62, "Page-modification log full";
    /// 63: XSAVES with "enable XSAVES/XRSTORS" = 1 and an XSS-exiting bitmap match.
    XSAVES = 63, "XSAVES";
    /// 64: XRSTORS with "enable XSAVES/XRSTORS" = 1 and an XSS-exiting bitmap match.
    XRSTORS = 64, "XRSTORS";
    /// 65: PCONFIG with "enable PCONFIG" = 1 and the leaf's PCONFIG-exiting bitmap bit set.
    PCONFIG = 65, "PCONFIG";
    /// 66: an SPP-related event (a sub-page-permission-table miss or misconfiguration).
    SPP_RELATED_EVENT = 66, "SPP-related event";
    /// 67: UMWAIT with "enable user wait and pause" and "RDTSC exiting" both 1.
    UMWAIT = 67, "UMWAIT";
    /// 68: TPAUSE with "enable user wait and pause" and "RDTSC exiting" both 1.
    TPAUSE = 68, "TPAUSE";
    /// 69: LOADIWKEY with "LOADIWKEY exiting" = 1.
    LOADIWKEY = 69, "LOADIWKEY";
    /// 70: ENCLV with "enable ENCLV exiting" = 1 and the leaf's ENCLV-exiting bitmap bit set.
    ENCLV = 70, "ENCLV";
    /// 72: ENQCMD with "PASID translation" = 1 and a failed PASID translation.
    ENQCMD_PASID_TRANSLATION_FAILURE = 72, "ENQCMD PASID translation failure";
    /// 73: ENQCMDS with "PASID translation" = 1 and a failed PASID translation.
    ENQCMDS_PASID_TRANSLATION_FAILURE = 73, "ENQCMDS PASID translation failure";
    /// 74: an instruction acquired a bus lock with "VMM bus-lock detection" = 1 (trap-like).
    BUS_LOCK = 74, "Bus lock";
    /// 75: no event window opened within the instruction-timeout period ("instruction timeout",
    /// earlier called "notify window").
    INSTRUCTION_TIMEOUT = 75, "Instruction timeout";
    /// 76: guest software attempted to execute SEAMCALL.
    SEAMCALL = 76, "SEAMCALL";
    /// 77: guest software attempted to execute TDCALL.
    TDCALL = 77, "TDCALL";
    /// 78: RDMSRLIST accessed an MSR that the MSR bitmaps intercept.
    RDMSRLIST = 78, "RDMSRLIST";
    /// 79: WRMSRLIST accessed an MSR that the MSR bitmaps intercept.
    WRMSRLIST = 79, "WRMSRLIST";
    /// 80: URDMSR accessed an MSR that the MSR bitmaps intercept. Defined in the Intel
    /// Architecture Instruction Set Extensions reference (order number 319433, user-MSR
    /// chapter); its presence in SDM 325462-086US was not verified.
    URDMSR = 80, "URDMSR";
    /// 81: UWRMSR accessed an MSR that the MSR bitmaps intercept. Same source as
    /// [`URDMSR`](Self::URDMSR).
    UWRMSR = 81, "UWRMSR";
    /// 84: the immediate form of RDMSR accessed an MSR that the MSR bitmaps intercept. Defined
    /// after 325462-086US (Intel Architecture Instruction Set Extensions reference, MSR_IMM;
    /// as implemented by Linux KVM); kept so that newer processors' exits are named.
    RDMSR_IMMEDIATE = 84, "RDMSR with immediate operand";
    /// 85: the immediate form of WRMSRNS accessed an MSR that the MSR bitmaps intercept. Same
    /// source as [`RDMSR_IMMEDIATE`](Self::RDMSR_IMMEDIATE).
    WRMSRNS_IMMEDIATE = 85, "WRMSRNS with immediate operand";
}

impl BasicExitReason {
    /// Whether this basic reason is one the processor reports only with the VM-entry-failure
    /// bit (bit 31) set: 33, 34 and 41 (SDM Vol. 3C, 27.8 "VM-Entry Failures During or After
    /// Loading Guest State").
    #[must_use]
    pub const fn is_entry_failure_reason(self) -> bool {
        matches!(self.0, 33 | 34 | 41)
    }
}

impl fmt::Debug for BasicExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "BasicExitReason::{name}"),
            None => write!(f, "BasicExitReason({})", self.0),
        }
    }
}

impl fmt::Display for BasicExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.description() {
            Some(text) => write!(f, "{text} (basic exit reason {})", self.0),
            None => write!(
                f,
                "basic exit reason {} (not defined by this crate)",
                self.0
            ),
        }
    }
}

/// The full 32-bit exit-reason field (SDM Vol. 3C, 28.2.1 "Basic VM-Exit Information", table
/// "Format of Exit Reason").
///
/// | Bits  | Content |
/// |-------|---------|
/// | 15:0  | basic exit reason ([`BasicExitReason`]) |
/// | 16    | always cleared to 0 |
/// | 24:17 | not currently defined |
/// | 25    | a shadow stack became prematurely busy (with the "prematurely busy shadow stack" secondary VM-exit control) |
/// | 26    | a bus lock was asserted while a higher-priority VM exit was delivered ("VMM bus-lock detection") |
/// | 27    | the VM exit was incident to enclave mode |
/// | 28    | pending MTF VM exit (set only by SMM VM exits) |
/// | 29    | VM exit from VMX root operation (SMM VM exits only) |
/// | 30    | not currently defined |
/// | 31    | VM-entry failure (0 = true VM exit) |
///
/// Any value is accepted; the undefined bits are reported by
/// [`undefined_bits`](Self::undefined_bits) rather than rejected.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ExitReason(pub u32);

impl ExitReason {
    /// Bits that the SDM does not define (16, 24:17 and 30).
    pub const UNDEFINED_MASK: u32 = 0x41FF_0000;

    /// Bits 15:0: the basic exit reason.
    #[must_use]
    pub fn basic(self) -> BasicExitReason {
        BasicExitReason(u16_field(u64::from(self.0), 0..16))
    }

    /// Bit 25: the VM exit caused a shadow stack to become prematurely busy (reported only when
    /// the "prematurely busy shadow stack" secondary VM-exit control is 1).
    #[must_use]
    pub fn shadow_stack_prematurely_busy(self) -> bool {
        flag(u64::from(self.0), 25)
    }

    /// Bit 26: a bus lock was asserted by an instruction (with "VMM bus-lock detection" = 1)
    /// whose VM exit was replaced by this higher-priority one.
    #[must_use]
    pub fn bus_lock_detected(self) -> bool {
        flag(u64::from(self.0), 26)
    }

    /// Bit 27: the VM exit was incident to enclave mode (SGX).
    #[must_use]
    pub fn enclave_mode(self) -> bool {
        flag(u64::from(self.0), 27)
    }

    /// Bit 28: an SMM VM exit took priority over an MTF VM exit that would otherwise have
    /// occurred.
    #[must_use]
    pub fn pending_mtf_vm_exit(self) -> bool {
        flag(u64::from(self.0), 28)
    }

    /// Bit 29: the processor was in VMX root operation when the (SMM) VM exit occurred.
    #[must_use]
    pub fn vm_exit_from_vmx_root_operation(self) -> bool {
        flag(u64::from(self.0), 29)
    }

    /// Bit 31: this is a VM-entry failure, not a true VM exit (SDM Vol. 3C, 27.8 "VM-Entry
    /// Failures During or After Loading Guest State").
    #[must_use]
    pub fn is_entry_failure(self) -> bool {
        flag(u64::from(self.0), 31)
    }

    /// The bits the SDM does not define (bit 16, bits 24:17 and bit 30), as found in the field;
    /// 0 on every processor that follows the SDM revision this crate follows.
    #[must_use]
    pub fn undefined_bits(self) -> u32 {
        u32_field(u64::from(self.0), 0..32) & Self::UNDEFINED_MASK
    }
}

impl From<ExitReason> for BasicExitReason {
    fn from(reason: ExitReason) -> Self {
        reason.basic()
    }
}

impl fmt::Debug for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("ExitReason");
        s.field("basic", &self.basic());
        for (set, name) in [
            (self.is_entry_failure(), "entry_failure"),
            (
                self.shadow_stack_prematurely_busy(),
                "shadow_stack_prematurely_busy",
            ),
            (self.bus_lock_detected(), "bus_lock_detected"),
            (self.enclave_mode(), "enclave_mode"),
            (self.pending_mtf_vm_exit(), "pending_mtf_vm_exit"),
            (
                self.vm_exit_from_vmx_root_operation(),
                "vm_exit_from_vmx_root_operation",
            ),
        ] {
            if set {
                s.field(name, &true);
            }
        }
        if self.undefined_bits() != 0 {
            s.field(
                "undefined_bits",
                &format_args!("{:#x}", self.undefined_bits()),
            );
        }
        s.finish()
    }
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_entry_failure() {
            write!(f, "VM-entry failure: {}", self.basic())
        } else {
            write!(f, "{}", self.basic())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_constant_round_trips_through_name_and_is_sorted_and_unique() {
        let mut previous = None;
        for &reason in BasicExitReason::ALL {
            assert!(
                previous < Some(reason.0),
                "ALL is not strictly ascending at {reason:?}"
            );
            previous = Some(reason.0);
            let name = reason.name().unwrap_or_default();
            assert!(!name.is_empty(), "{} has no name", reason.0);
            assert!(reason.description().is_some());
            assert_eq!(format!("{reason:?}"), format!("BasicExitReason::{name}"));
        }
        // 76 reasons from Table C-1 (0–34, 36, 37, 39–41, 43–70, 72–79) plus the four
        // MSR-instruction reasons documented outside it (80, 81, 84, 85).
        assert_eq!(BasicExitReason::ALL.len(), 80);
    }

    #[test]
    fn reserved_and_unknown_numbers_are_data() {
        for n in [35u16, 38, 42, 71, 82, 83, 86, 1000, u16::MAX] {
            let reason = BasicExitReason(n);
            assert_eq!(reason.name(), None);
            assert_eq!(reason.description(), None);
            assert_eq!(format!("{reason:?}"), format!("BasicExitReason({n})"));
            assert!(format!("{reason}").contains("not defined"));
        }
    }

    #[test]
    fn well_known_numbers() {
        assert_eq!(BasicExitReason::EXCEPTION_OR_NMI.0, 0);
        assert_eq!(BasicExitReason::TRIPLE_FAULT.0, 2);
        assert_eq!(BasicExitReason::CPUID.0, 10);
        assert_eq!(BasicExitReason::HLT.0, 12);
        assert_eq!(BasicExitReason::VMCALL.0, 18);
        assert_eq!(BasicExitReason::CONTROL_REGISTER_ACCESS.0, 28);
        assert_eq!(BasicExitReason::IO_INSTRUCTION.0, 30);
        assert_eq!(BasicExitReason::ENTRY_FAILURE_INVALID_GUEST_STATE.0, 33);
        assert_eq!(BasicExitReason::EPT_VIOLATION.0, 48);
        assert_eq!(BasicExitReason::EPT_MISCONFIGURATION.0, 49);
        assert_eq!(BasicExitReason::XSETBV.0, 55);
        assert_eq!(BasicExitReason::PML_FULL.0, 62);
        assert_eq!(BasicExitReason::LOADIWKEY.0, 69);
        assert_eq!(BasicExitReason::ENQCMD_PASID_TRANSLATION_FAILURE.0, 72);
        assert_eq!(BasicExitReason::BUS_LOCK.0, 74);
        assert_eq!(BasicExitReason::INSTRUCTION_TIMEOUT.0, 75);
        assert_eq!(BasicExitReason::WRMSRLIST.0, 79);
    }

    #[test]
    fn exit_reason_flags() {
        let plain = ExitReason(48);
        assert_eq!(plain.basic(), BasicExitReason::EPT_VIOLATION);
        assert!(!plain.is_entry_failure());
        assert!(!plain.enclave_mode());
        assert_eq!(plain.undefined_bits(), 0);
        assert_eq!(format!("{plain}"), "EPT violation (basic exit reason 48)");

        // VM-entry failure due to invalid guest state: 0x8000_0021.
        let failure = ExitReason(0x8000_0021);
        assert!(failure.is_entry_failure());
        assert_eq!(
            failure.basic(),
            BasicExitReason::ENTRY_FAILURE_INVALID_GUEST_STATE
        );
        assert!(failure.basic().is_entry_failure_reason());
        assert!(format!("{failure}").starts_with("VM-entry failure: "));

        let each = [
            (
                25,
                ExitReason::shadow_stack_prematurely_busy as fn(ExitReason) -> bool,
            ),
            (26, ExitReason::bus_lock_detected),
            (27, ExitReason::enclave_mode),
            (28, ExitReason::pending_mtf_vm_exit),
            (29, ExitReason::vm_exit_from_vmx_root_operation),
            (31, ExitReason::is_entry_failure),
        ];
        for (bit, accessor) in each {
            let reason = ExitReason((1 << bit) | 12);
            assert!(accessor(reason), "bit {bit}");
            assert_eq!(reason.basic(), BasicExitReason::HLT);
            for (other, other_accessor) in each {
                if other != bit {
                    assert!(!other_accessor(reason), "bit {bit} also set bit {other}");
                }
            }
        }

        // An SMM VM exit from VMX root with a pending MTF VM exit, I/O SMI: 0x3000_0005.
        let smm = ExitReason(0x3000_0005);
        assert!(smm.pending_mtf_vm_exit() && smm.vm_exit_from_vmx_root_operation());
        assert_eq!(smm.basic(), BasicExitReason::IO_SMI);
        let debug = format!("{smm:?}");
        assert!(debug.contains("IO_SMI") && debug.contains("pending_mtf_vm_exit"));
    }

    #[test]
    fn undefined_bits_are_reported_not_rejected() {
        let odd = ExitReason(0x4001_0000 | 0x0002_0000 | 7);
        assert_eq!(odd.undefined_bits(), 0x4003_0000);
        assert_eq!(odd.basic(), BasicExitReason::INTERRUPT_WINDOW);
        assert!(format!("{odd:?}").contains("undefined_bits"));
        assert_eq!(
            ExitReason(u32::MAX).undefined_bits(),
            ExitReason::UNDEFINED_MASK
        );
        assert_eq!(
            BasicExitReason::from(ExitReason(0xFFFF_FFFF)),
            BasicExitReason(0xFFFF)
        );
    }
}
