//! The vCPU's error type.

use hvkit_vmx::vmcs::VmcsError;

use crate::memory::{MemoryMapError, NestedPagingError};
use crate::platform::OutOfMemory;

/// What the processor or configuration lacks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum Unsupported {
    /// The processor has neither VMX nor SVM (CPUID.1:ECX\[5\], CPUID Fn8000_0001_ECX\[2\]).
    #[error("the processor supports neither VT-x nor AMD-V")]
    NoVirtualization,
    /// AMD-V was found but this crate's SVM backend is not implemented yet.
    #[error("the AMD-V (SVM) backend is not implemented yet")]
    SvmBackend,
    /// VMX without EPT (shadow paging is not implemented).
    #[error("VT-x without EPT")]
    NoEpt,
    /// A real-mode or unpaged protected-mode guest needs "unrestricted guest".
    #[error("the guest state needs \"unrestricted guest\", which this processor lacks")]
    NoUnrestrictedGuest,
    /// The processor refused a VM-execution control this crate needs.
    #[error("the processor lacks a required VMX control")]
    VmxControls,
    /// SVM without NRIP save: the length of the intercepted instruction is not fixed (MOV CR,
    /// INVLPG, prefixed forms) and guest-instruction decoding is not implemented.
    #[error("cannot tell the length of the intercepted instruction without NRIP save")]
    InstructionLength,
    /// SVM without nested paging (shadow paging is not implemented).
    #[error("AMD-V without nested paging")]
    NoNestedPaging,
    /// The operation is not available on this target (not x86-64).
    #[error("not available on this target")]
    Target,
}

/// Why a vCPU operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VcpuError {
    /// A VMREAD or VMWRITE failed.
    #[error(transparent)]
    Vmcs(#[from] VmcsError),
    /// The platform ran out of frames.
    #[error(transparent)]
    OutOfMemory(#[from] OutOfMemory),
    /// The memory map refused a region.
    #[error(transparent)]
    MemoryMap(#[from] MemoryMapError),
    /// Building or changing the nested page tables failed.
    #[error(transparent)]
    NestedPaging(#[from] NestedPagingError),
    /// The processor or target lacks something.
    #[error(transparent)]
    Unsupported(#[from] Unsupported),
    /// Enabling VMX failed.
    #[error(transparent)]
    EnableVmx(#[from] hvkit_vmx::enable::EnableError),
    /// Enabling SVM failed.
    #[error(transparent)]
    EnableSvm(#[from] hvkit_svm::enable::EnableError),
    /// A `complete_*` call did not match the last exit.
    #[error("the last exit was not {0}")]
    WrongExit(&'static str),
    /// The event cannot be injected (bad vector or error code).
    #[error("invalid event: {0}")]
    InvalidEvent(#[from] hvkit_vmx::exit::EventInjectionError),
    /// INS/OUTS emulation stopped at a memory operand that does not translate.
    #[error(transparent)]
    StringIo(#[from] crate::string_io::StringIoError),
    /// The configured ASID is not a guest ASID of this processor (SVM).
    #[error(transparent)]
    Asid(#[from] crate::svm::AsidError),
    /// INVVPID or INVEPT for a new vCPU's VPID or EPTP failed (VMX).
    #[error(transparent)]
    Invalidation(#[from] crate::vmx::InvalidationError),
    /// A guest-physical range is not RAM of this guest.
    #[error("guest-physical {0:#x} is not RAM of this guest")]
    NotRam(u64),
}
