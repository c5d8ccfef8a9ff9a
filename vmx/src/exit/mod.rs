//! VM exits: exit reasons, exit qualifications, VM-exit instruction information, interruption
//! and IDT-vectoring information, event injection, and the guest's interruptibility and
//! activity states.
//!
//! Everything here is a pure definition over raw integers: read the fields with whatever VMCS
//! access you use, then decode them here. Nothing in this module touches hardware, so it runs
//! in host tests, under Miri and in fuzzers.
//!
//! - [`ExitReason`] / [`BasicExitReason`]: the exit-reason field; every basic reason of
//!   Appendix C is a named constant of an open newtype.
//! - [`ExitQualification::decode`] → [`DecodedQualification`]: one typed decoder per reason
//!   that has a qualification.
//! - [`InstructionInfo::decode`] → [`DecodedInstructionInfo`]: the instruction-information
//!   layouts (memory operands, registers).
//! - [`ExitInterruptionInfo`], [`IdtVectoringInfo`], [`EntryInterruptionInfo`] and the checked
//!   [`EventInjection`] builder.
//! - [`Interruptibility`], [`ActivityState`], [`PendingDebugExceptions`]: guest non-register
//!   state.
//! - [`ExitInformation`]: all VM-exit information fields of one exit, for run loops and dumps.
//!
//! Reference: Intel® 64 and IA-32 Architectures Software Developer's Manual, Combined Volumes,
//! Order Number 325462-086US (December 2024): Volume 3C, 25.4.2 "Guest Non-Register State",
//! 25.8.3 "VM-Entry Controls for Event Injection", 25.9 "VM-Exit Information Fields", 28.2
//! "Recording VM-Exit Information and Updating VM-Entry Control Fields" (28.2.1 "Basic VM-Exit
//! Information", 28.2.2 "Information for VM Exits Due to Vectored Events", 28.2.3 "Information
//! About NMI Unblocking Due to IRET", 28.2.4 "Information for VM Exits That Occur During Event
//! Delivery", 28.2.5 "Information for VM Exits Due to Instruction Execution"), 27.2.1.3 "Checks
//! on VM-Entry Control Fields", 27.8 "VM-Entry Failures During or After Loading Guest State";
//! Volume 3D, Appendix C "VMX Basic Exit Reasons".
//!
//! # A run-loop sketch
//!
//! ```
//! use hvkit_vmx::exit::{
//!     BasicExitReason, DecodedQualification, EventInjection, ExitQualification, ExitReason,
//! };
//!
//! // Values as read from the VMCS after a VM exit: an EPT violation (a write).
//! let reason = ExitReason(48);
//! let qualification = 0x182;
//!
//! assert!(!reason.is_entry_failure());
//! match ExitQualification::decode(reason.basic(), qualification) {
//!     DecodedQualification::EptViolation(ept) => {
//!         assert!(ept.write() && !ept.writable());
//!         // ... map the page, or reflect a fault into the guest:
//!         let gp = EventInjection::hardware_exception(13, Some(0)).unwrap();
//!         assert_eq!(gp.interruption_info().0, 0x8000_0B0D);
//!     }
//!     other => panic!("unexpected {other:?}"),
//! }
//! assert_eq!(reason.basic(), BasicExitReason::EPT_VIOLATION);
//! ```

mod bits;
mod guest_state;
mod info;
mod instruction_info;
mod interruption;
mod operand;
mod qualification;
mod reason;

pub use guest_state::{ActivityState, Interruptibility, PendingDebugExceptions};
pub use info::ExitInformation;
pub use instruction_info::{
    DecodedInstructionInfo, DescriptorTableInstruction, DescriptorTableInstructionInfo,
    InsOutsInstructionInfo, InstructionInfo, InvalidationInstructionInfo, LdtrTrInstruction,
    LdtrTrInstructionInfo, LoadIwkeyInstructionInfo, MemoryOperand, MsrRegisterInstructionInfo,
    Operand, RdrandOperandSize, RdrandRdseedInstructionInfo, VmreadVmwriteInstructionInfo,
    VmxMemoryInstructionInfo, WaitInstructionInfo,
};
pub use interruption::{
    EntryInterruptionInfo, EventInjection, EventInjectionError, ExitInterruptionInfo,
    IdtVectoringInfo, InterruptionType,
};
pub use operand::{AddressSize, Gpr, SegmentRegister, XmmRegister};
pub use qualification::{
    ApicAccessQualification, ApicAccessType, ApicWriteQualification,
    ControlRegisterAccessQualification, CrAccessType, DebugExceptionQualification,
    DecodedQualification, DisplacementQualification, EntryFailureQualification, EptAccessKind,
    EptViolationQualification, ExceptionDetail, ExceptionQualification, ExitQualification,
    InstructionTimeoutQualification, IoAccessSize, IoDirection, IoInstructionQualification,
    IoPortOperand, LinearAddressRights, LmswOperand, MovDrDirection, MovDrQualification,
    MsrAddressQualification, MsrLoadFailureQualification, MwaitQualification, PmlFullQualification,
    SipiQualification, SppEventKind, SppQualification, TaskSwitchQualification, TaskSwitchSource,
    VirtualizedEoiQualification,
};
pub use reason::{BasicExitReason, ExitReason};
