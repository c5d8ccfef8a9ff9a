//! The common VM exit: what [`crate::Vcpu::run`] returns on both vendors.
//!
//! Manuals: Intel® 64 and IA-32 Architectures Software Developer's Manual, Combined Volumes, Order
//! Number 325462-086US, December 2024, Vol. 3C 28.2 "Recording VM-Exit Information and Updating
//! VM-Entry Control Fields", Appendix C "VMX Basic Exit Reasons"; AMD64 Architecture Programmer's
//! Manual Volume 2: System Programming, Publication No. 24593, Revision 3.42, March 2024, 15.6
//! "#VMEXIT", Appendix C "SVM Intercept Exit Codes".
//!
//! An [`Exit`] is an [`ExitKind`] (decoded where the vendors agree) plus the [`RawExit`] (the
//! vendor's own exit, for whatever the common form does not cover). Decoding never fails: an
//! exit the common form does not know is [`ExitKind::Other`].

use hvkit_paging::GuestPhysAddr;
use hvkit_svm::ExitCode;
use hvkit_vmx::VmFail;
use hvkit_vmx::exit::ExitReason;

/// One VM exit: its common meaning and the vendor's raw record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exit {
    /// What happened, vendor-neutral.
    pub kind: ExitKind,
    /// The vendor's exit as the hardware reported it.
    pub raw: RawExit,
}

/// The common exits (SDM Appendix C; APM Appendix C).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExitKind {
    /// CPUID with leaf EAX and subleaf ECX. Answer with [`crate::Vcpu::complete_cpuid`] (or
    /// [`crate::Vcpu::handle_default`], which applies the vCPU's [`crate::CpuidPolicy`]).
    Cpuid {
        /// EAX.
        leaf: u32,
        /// ECX.
        subleaf: u32,
    },
    /// IN, OUT, INS or OUTS.
    Io(IoExit),
    /// RDMSR of ECX.
    MsrRead {
        /// The MSR index (ECX).
        msr: u32,
    },
    /// WRMSR of EDX:EAX to ECX.
    MsrWrite {
        /// The MSR index (ECX).
        msr: u32,
        /// The value (EDX:EAX).
        value: u64,
    },
    /// HLT.
    Hlt,
    /// VMCALL (Intel) or VMMCALL (AMD): a hypercall under the [`crate::hypercall`] ABI.
    Hypercall(crate::hypercall::Hypercall),
    /// An access to a guest-physical address that the nested tables (EPT/NPT) do not allow: an
    /// unmapped page (MMIO, reserved, or RAM not mapped yet) or a permission violation.
    NestedPageFault(NestedPageFault),
    /// An exception the exception bitmap intercepts (or an NMI).
    Exception(ExceptionExit),
    /// An intercepted control-register access.
    CrAccess(CrAccess),
    /// INVLPG of a linear address.
    Invlpg {
        /// The linear address operand.
        linear_address: u64,
    },
    /// XSETBV: write `value` (EDX:EAX) to extended control register `xcr` (ECX).
    Xsetbv {
        /// ECX.
        xcr: u32,
        /// EDX:EAX.
        value: u64,
    },
    /// An INIT signal.
    Init,
    /// A start-up IPI in the wait-for-SIPI state.
    Sipi {
        /// The SIPI vector (start address = vector × 4096).
        vector: u8,
    },
    /// A physical interrupt arrived while the guest ran (the host should take it).
    ExternalInterrupt,
    /// The guest can take an external interrupt now (interrupt-window exiting, VINTR).
    InterruptWindow,
    /// The guest can take an NMI now (NMI-window exiting).
    NmiWindow,
    /// A triple fault or shutdown: the guest is dead unless reset.
    Shutdown,
    /// The guest executed a virtualization instruction (VMXON, VMLAUNCH, VMRUN, …). The
    /// architectural answer, which [`crate::Vcpu::handle_default`] gives, is #UD.
    VirtualizationInstruction,
    /// The VM entry failed; the guest did not run.
    EntryFailure(EntryFailure),
    /// An exit the common form does not decode: see [`Exit::raw`].
    Other,
}

impl ExitKind {
    /// A short name for summaries and logs ("cpuid", "io", "npf", …).
    #[must_use]
    pub const fn name(&self) -> &'static str {
        match self {
            Self::Cpuid { .. } => "cpuid",
            Self::Io(_) => "io",
            Self::MsrRead { .. } => "rdmsr",
            Self::MsrWrite { .. } => "wrmsr",
            Self::Hlt => "hlt",
            Self::Hypercall(_) => "hypercall",
            Self::NestedPageFault(_) => "npf",
            Self::Exception(_) => "exception",
            Self::CrAccess(_) => "cr",
            Self::Invlpg { .. } => "invlpg",
            Self::Xsetbv { .. } => "xsetbv",
            Self::Init => "init",
            Self::Sipi { .. } => "sipi",
            Self::ExternalInterrupt => "interrupt",
            Self::InterruptWindow => "interrupt-window",
            Self::NmiWindow => "nmi-window",
            Self::Shutdown => "shutdown",
            Self::VirtualizationInstruction => "virtualization-instruction",
            Self::EntryFailure(_) => "entry-failure",
            Self::Other => "other",
        }
    }

    /// Every name [`name`](Self::name) returns, in a fixed order (for per-kind counters: index
    /// with [`index`](Self::index)).
    pub const NAMES: [&'static str; 20] = [
        "cpuid",
        "io",
        "rdmsr",
        "wrmsr",
        "hlt",
        "hypercall",
        "npf",
        "exception",
        "cr",
        "invlpg",
        "xsetbv",
        "init",
        "sipi",
        "interrupt",
        "interrupt-window",
        "nmi-window",
        "shutdown",
        "virtualization-instruction",
        "entry-failure",
        "other",
    ];

    /// The position of this kind's name in [`NAMES`](Self::NAMES).
    #[must_use]
    pub fn index(&self) -> usize {
        let name = self.name();
        Self::NAMES
            .iter()
            .position(|n| *n == name)
            .unwrap_or(Self::NAMES.len() - 1)
    }
}

/// Exits counted by kind, for run summaries (`Display`: `total 1007: cpuid 1002, io 2, …`,
/// kinds that never happened left out).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExitCounts {
    counts: [u64; ExitKind::NAMES.len()],
}

impl ExitCounts {
    /// No exits yet.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            counts: [0; ExitKind::NAMES.len()],
        }
    }

    /// Counts one exit of `kind`.
    pub fn record(&mut self, kind: &ExitKind) {
        let slot = &mut self.counts[kind.index()];
        *slot = slot.saturating_add(1);
    }

    /// Exits of the kind named `name` (one of [`ExitKind::NAMES`]; 0 for other names).
    #[must_use]
    pub fn get(&self, name: &str) -> u64 {
        ExitKind::NAMES
            .iter()
            .position(|n| *n == name)
            .map_or(0, |i| self.counts[i])
    }

    /// All exits.
    #[must_use]
    pub fn total(&self) -> u64 {
        self.counts.iter().fold(0, |a, b| a.saturating_add(*b))
    }

    /// (name, count) for every kind that happened.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        ExitKind::NAMES
            .iter()
            .zip(self.counts)
            .filter(|(_, n)| *n != 0)
            .map(|(name, n)| (*name, n))
    }
}

impl core::fmt::Display for ExitCounts {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "total {}", self.total())?;
        for (i, (name, n)) in self.iter().enumerate() {
            write!(f, "{}{name} {n}", if i == 0 { ": " } else { ", " })?;
        }
        Ok(())
    }
}

/// Direction of an I/O instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IoDirection {
    /// IN / INS: the guest reads the port.
    In,
    /// OUT / OUTS: the guest writes the port.
    Out,
}

/// An I/O instruction exit (SDM 28.2.1, table "Exit Qualification for I/O Instructions"; APM
/// 15.10.2 "IN and OUT Behavior", Figure 15-2 "EXITINFO1 for IOIO Intercept").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IoExit {
    /// The port.
    pub port: u16,
    /// The access size in bytes (1, 2 or 4).
    pub size: u8,
    /// In or out.
    pub direction: IoDirection,
    /// INS/OUTS.
    pub string: bool,
    /// With a REP prefix.
    pub rep: bool,
    /// For OUT (not OUTS): the value written, AL/AX/EAX masked to `size`.
    pub data: Option<u32>,
}

/// What kind of access faulted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[expect(
    clippy::struct_excessive_bools,
    reason = "one flag per access type, as both manuals report them"
)]
pub struct MemoryAccess {
    /// A data read.
    pub read: bool,
    /// A data write.
    pub write: bool,
    /// An instruction fetch.
    pub execute: bool,
    /// The page was present in the nested tables (a permission fault rather than a missing page).
    pub present: bool,
}

/// A nested-page fault: EPT violation or misconfiguration (SDM 29.3.3 "EPT-Induced VM Exits"),
/// or #VMEXIT(NPF) (APM 15.25.6 "Nested versus Guest Page Faults, Fault Ordering").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NestedPageFault {
    /// The guest-physical address.
    pub gpa: GuestPhysAddr,
    /// The access.
    pub access: MemoryAccess,
    /// The guest-linear address, when the processor reports it.
    pub linear_address: Option<u64>,
    /// The fault came from the guest's own page-table walk (not the final access).
    pub during_walk: bool,
    /// VMX: an EPT misconfiguration (a malformed entry) rather than a violation.
    pub misconfiguration: bool,
}

/// An intercepted exception (SDM 28.2.2; APM 15.12 "Exception Intercepts").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ExceptionExit {
    /// The vector (2 for an NMI).
    pub vector: u8,
    /// The error code, for exceptions that push one.
    pub error_code: Option<u32>,
    /// #PF: the faulting linear address (CR2 to be); #DB: the pending debug bits (VMX).
    pub detail: Option<u64>,
}

/// A control-register access (SDM 28.2.1, table "Exit Qualification for Control-Register
/// Accesses"; APM 15.8.1 "MOV CRx Instructions").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CrAccess {
    /// The control register (0, 3, 4 or 8).
    pub cr: u8,
    /// The operation.
    pub kind: CrAccessKind,
}

/// The operation of a [`CrAccess`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CrAccessKind {
    /// MOV to CR from the GPR with this encoding number (`None` when the vendor did not say:
    /// SVM without decode assists).
    Write {
        /// The source GPR (0 = RAX … 15 = R15).
        gpr: Option<u8>,
    },
    /// MOV from CR into the GPR with this encoding number.
    Read {
        /// The destination GPR.
        gpr: Option<u8>,
    },
    /// CLTS.
    Clts,
    /// LMSW with this source value.
    Lmsw {
        /// The 16-bit operand.
        value: u16,
    },
}

/// Why a VM entry failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EntryFailure {
    /// VMX: VMLAUNCH/VMRESUME failed its checks of controls or host state (VMfail; the error
    /// number names the check: 7 invalid control field, 8 invalid host state, …).
    VmFail(VmFail),
    /// VMX exit reason 33 with bit 31: the guest state failed its checks (the exit
    /// qualification's value; 0 = none, 2 = PDPTE loading, 3 = NMI injection, 4 = VMCS link).
    InvalidGuestState {
        /// The exit qualification.
        qualification: u64,
    },
    /// VMX exit reason 34 with bit 31: loading MSR entry `entry` (1-based) failed.
    MsrLoading {
        /// The exit qualification: the failing entry's number.
        entry: u64,
    },
    /// VMX exit reason 41 with bit 31: a machine check during VM entry.
    MachineCheck,
    /// SVM: VMRUN failed its consistency checks (VMEXIT_INVALID), or was refused
    /// (`VMEXIT_BUSY`, `VMEXIT_IDLE_REQUIRED`, `VMEXIT_INVALID_PMC`): the exit code says which.
    /// Run `hvkit_svm::check::check_vmcb` to name the check.
    VmrunFailed(ExitCode),
}

/// The vendor's raw exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RawExit {
    /// A VMX exit: the exit-reason field and, for reasons that define one, the exit
    /// qualification (0 otherwise; read lazily, so reasons without one cost no VMREAD).
    Vmx {
        /// The exit-reason field.
        reason: ExitReason,
        /// The exit qualification (0 for reasons without one).
        qualification: u64,
    },
    /// VMLAUNCH/VMRESUME failed (no VM exit happened).
    VmxFail(VmFail),
    /// An SVM #VMEXIT: EXITCODE, EXITINFO1, EXITINFO2 and EXITINTINFO (APM Table B-1).
    Svm {
        /// EXITCODE.
        code: ExitCode,
        /// EXITINFO1.
        info1: u64,
        /// EXITINFO2.
        info2: u64,
        /// EXITINTINFO (raw).
        exit_int_info: u64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_indices_agree() {
        let kinds = [
            ExitKind::Cpuid {
                leaf: 0,
                subleaf: 0,
            },
            ExitKind::Hlt,
            ExitKind::Shutdown,
            ExitKind::Other,
            ExitKind::EntryFailure(EntryFailure::MachineCheck),
            ExitKind::Xsetbv { xcr: 0, value: 1 },
        ];
        for kind in kinds {
            assert_eq!(ExitKind::NAMES[kind.index()], kind.name());
        }
        assert_eq!(ExitKind::Hlt.index(), 4);
        let mut counts = ExitCounts::new();
        counts.record(&ExitKind::Hlt);
        counts.record(&ExitKind::Cpuid {
            leaf: 0,
            subleaf: 0,
        });
        counts.record(&ExitKind::Cpuid {
            leaf: 1,
            subleaf: 0,
        });
        assert_eq!(
            (counts.total(), counts.get("cpuid"), counts.get("nope")),
            (3, 2, 0)
        );
        assert_eq!(format!("{counts}"), "total 3: cpuid 2, hlt 1");
        assert_eq!(format!("{}", ExitCounts::default()), "total 0");
        let mut names = ExitKind::NAMES.to_vec();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ExitKind::NAMES.len());
    }
}
