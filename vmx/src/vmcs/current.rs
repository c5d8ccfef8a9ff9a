//! [`CurrentVmcs`]: the current VMCS of this logical processor, through VMREAD and VMWRITE (SDM
//! 31.3 "VMREAD—Read Field from Virtual-Machine Control Structure" and "VMWRITE—Write Field to
//! Virtual-Machine Control Structure"; SDM 325462-086US).
// UNSAFETY: VMREAD and VMWRITE are `unsafe fn`s (they need VMX root operation); this module holds
// the type invariant that makes calling them sound and nothing else.
#![expect(
    unsafe_code,
    reason = "VMREAD/VMWRITE need VMX root operation with a current VMCS"
)]

use core::marker::PhantomData;

use super::{VmcsError, VmcsRead, VmcsWrite};
use crate::fields::FieldEncoding;
use crate::instructions::{vmread, vmwrite};

/// The current VMCS of the logical processor this value lives on, accessed with VMREAD and
/// VMWRITE.
///
/// Type invariant: while a `CurrentVmcs` exists, the processor is in VMX root operation at CPL 0
/// and has a current VMCS (the obligations of [`CurrentVmcs::new`]). The value is neither `Send`
/// nor `Sync`: the current VMCS belongs to one logical processor.
///
/// A failed VMREAD is reported as [`VmcsError::Instruction`], never as a zero.
///
/// Writes are safe functions because nothing a VMWRITE stores takes effect before a VM entry,
/// and VM entry ([`crate::instructions::vmlaunch`], [`crate::instructions::vmresume`]) is
/// `unsafe`, with the obligation that every address and host-state value in the VMCS be valid.
///
/// It cannot move to another thread (and so, in a kernel, to another processor's context):
///
/// ```compile_fail,E0277
/// fn needs_send<T: Send>() {}
/// needs_send::<hvkit_vmx::vmcs::CurrentVmcs>();
/// ```
///
/// A typical exit handler reads the exit information through it:
///
/// ```no_run
/// use hvkit_vmx::fields::{exit_info, guest};
/// use hvkit_vmx::vmcs::{CurrentVmcs, VmcsError, VmcsRead, VmcsWrite};
///
/// fn skip_instruction(vmcs: &mut impl VmcsWrite) -> Result<(), VmcsError> {
///     let length = vmcs.read(exit_info::VM_EXIT_INSTRUCTION_LENGTH)?;
///     let rip = vmcs.read(guest::RIP)?;
///     vmcs.write(guest::RIP, rip.wrapping_add(u64::from(length)))
/// }
///
/// // SAFETY: (in a real hypervisor) VMX root operation with a current VMCS on this processor.
/// let mut vmcs = unsafe { CurrentVmcs::new() };
/// skip_instruction(&mut vmcs)?;
/// # Ok::<(), VmcsError>(())
/// ```
#[derive(Debug)]
pub struct CurrentVmcs {
    /// Neither `Send` nor `Sync`.
    _this_cpu_only: PhantomData<*mut ()>,
}

impl CurrentVmcs {
    /// Access to the current VMCS.
    ///
    /// # Safety
    /// For as long as the returned value (and anything derived from it) lives:
    /// - this logical processor is in VMX root operation at CPL 0 (after a successful VMXON and
    ///   before VMXOFF), so VMREAD and VMWRITE do not raise #UD or #GP and do not cause VM exits;
    /// - it has a current VMCS (loaded by VMPTRLD), and no code other than through this value
    ///   replaces or clears it (VMPTRLD, VMCLEAR, VMXOFF) behind its back: otherwise accesses
    ///   would go to a different VMCS than the one the caller set up, or fail;
    /// - the value is used only on this logical processor (the type is `!Send`, so keep it
    ///   that way, for example in per-CPU data).
    #[must_use]
    pub const unsafe fn new() -> Self {
        Self {
            _this_cpu_only: PhantomData,
        }
    }
}

impl VmcsRead for CurrentVmcs {
    fn read_raw(&self, encoding: FieldEncoding) -> Result<u64, VmcsError> {
        // SAFETY: the type invariant guarantees VMX root operation at CPL 0 on this processor.
        unsafe { vmread(encoding.0) }.map_err(|fail| VmcsError::Instruction { encoding, fail })
    }
}

impl VmcsWrite for CurrentVmcs {
    fn write_raw(&mut self, encoding: FieldEncoding, value: u64) -> Result<(), VmcsError> {
        // SAFETY: the type invariant guarantees VMX root operation at CPL 0. The value cannot
        // affect memory safety before a VM entry, whose wrappers are `unsafe` and require the
        // whole VMCS to be valid (see the type's documentation).
        unsafe { vmwrite(encoding.0, value) }
            .map_err(|fail| VmcsError::Instruction { encoding, fail })
    }
}
