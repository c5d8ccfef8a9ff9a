//! The VMX instructions as thin `unsafe fn`s with typed results.
//!
//! Reference: Intel® 64 and IA-32 Architectures Software Developer's Manual, Order Number
//! 325462-086US (December 2024), Volume 3C, Chapter 31 "VMX Instruction Reference" (31.3, one
//! subsection per instruction) and 31.2 "Conventions" for the RFLAGS outcome.
//!
//! Each wrapper executes exactly one VMX instruction and reads CF and ZF with `setc`/`setz` in the
//! *same* `asm!` block, so nothing the compiler emits between the instruction and the flag read
//! can change them. On VMfailValid the wrapper then reads the VM-instruction error field
//! (encoding 0x4400) with VMREAD and returns it decoded as [`VmFail::Valid`].
//!
//! These functions are the only place where this crate executes VMX instructions. Safe APIs sit a
//! layer up ([`crate::vmcs::CurrentVmcs`], [`crate::enable`]) and rest on type invariants.
// UNSAFETY: executing VMX instructions needs inline assembly; every function here is an
// `unsafe fn` whose `# Safety` section states the hardware obligations.
#![expect(unsafe_code, reason = "VMX instructions are inline assembly")]

use core::arch::asm;

use x86_64::PhysAddr;
use x86_64::structures::paging::{PhysFrame, Size4KiB};

use crate::error::VmFail;

/// The VMCS encoding of the VM-instruction error field (SDM Vol. 3C, Appendix B, Table B-9
/// "Encodings for 32-Bit Read-Only Data Fields").
const VM_INSTRUCTION_ERROR: u32 = 0x4400;

/// Reads the VM-instruction error field after a VMfailValid.
///
/// # Safety
/// - The processor is in VMX operation and has a current VMCS (true right after VMfailValid).
unsafe fn read_error() -> Result<u32, VmFail> {
    // SAFETY: forwarded from this function's contract.
    let value = unsafe { vmread(VM_INSTRUCTION_ERROR) }?;
    // The field is 32 bits wide (SDM Table B-9); VMREAD zero-extends it.
    Ok(u32::try_from(value).unwrap_or(u32::MAX))
}

/// Turns the flags captured after an instruction into its result.
///
/// # Safety
/// - Same as [`read_error`], for the case that `zf` is set.
unsafe fn outcome(cf: u8, zf: u8) -> Result<(), VmFail> {
    VmFail::from_flags(cf != 0, zf != 0, || {
        // SAFETY: ZF = 1 (VMfailValid) means there is a current VMCS; see the caller's contract.
        unsafe { read_error() }
    })
}

/// VMXON: enters VMX root operation with the given VMXON region (SDM 31.3 "VMXON—Enter VMX
/// Operation").
///
/// # Errors
/// [`VmFail::Invalid`] if the region's address is invalid or its revision identifier is wrong,
/// or [`VmFail::Valid`] with error 15 if already in VMX root operation.
///
/// # Safety
/// - The processor runs at CPL 0 in 64-bit mode with CR4.VMXE = 1, CR0/CR4 satisfying the
///   IA32_VMX_CR0/CR4_FIXED MSRs and IA32_FEATURE_CONTROL enabling VMXON; otherwise the instruction
///   raises #UD or #GP.
/// - `region` is a 4 KiB frame owned exclusively by this processor's VMX operation until VMXOFF,
///   with the VMCS revision identifier from IA32_VMX_BASIC in its first 31 bits; the processor
///   may write to it at any time.
#[doc(alias = "VMXON")]
pub unsafe fn vmxon(region: PhysFrame<Size4KiB>) -> Result<(), VmFail> {
    let addr = region.start_address().as_u64();
    let (cf, zf): (u8, u8);
    // SAFETY: the caller meets the contract above; the operand is a valid 8-byte memory location.
    unsafe {
        asm!(
            "vmxon [{addr}]",
            "setc {cf}",
            "setz {zf}",
            addr = in(reg) &addr,
            cf = out(reg_byte) cf,
            zf = out(reg_byte) zf,
            options(nostack),
        );
    }
    // SAFETY: VMfailValid only occurs with a current VMCS.
    unsafe { outcome(cf, zf) }
}

/// VMXOFF: leaves VMX operation (SDM 31.3 "VMXOFF—Leave VMX Operation").
///
/// # Errors
/// [`VmFail::Valid`] with error 23 under the dual-monitor treatment of SMIs and SMM.
///
/// # Safety
/// - The processor is in VMX root operation at CPL 0 (otherwise #UD/#GP).
/// - No VMCS launched on this processor will be resumed without a new VMCLEAR/VMPTRLD, and the
///   memory of the VMXON region and of every VMCS may be reused only after this returns `Ok`.
#[doc(alias = "VMXOFF")]
pub unsafe fn vmxoff() -> Result<(), VmFail> {
    let (cf, zf): (u8, u8);
    // SAFETY: the caller meets the contract above.
    unsafe {
        asm!("vmxoff", "setc {cf}", "setz {zf}", cf = out(reg_byte) cf, zf = out(reg_byte) zf,
            options(nostack));
    }
    // SAFETY: VMfailValid only occurs with a current VMCS.
    unsafe { outcome(cf, zf) }
}

/// VMCLEAR: makes the VMCS at `vmcs` clear, inactive and not current, writing its cached data to
/// memory (SDM 31.3 "VMCLEAR—Clear Virtual-Machine Control Structure").
///
/// # Errors
/// [`VmFail::Valid`] with error 2 (invalid address) or 3 (the VMXON pointer), or
/// [`VmFail::Invalid`] when there is no current VMCS to hold the error.
///
/// # Safety
/// - The processor is in VMX root operation at CPL 0.
/// - `vmcs` is a 4 KiB frame used only as a VMCS (the processor writes to it).
#[doc(alias = "VMCLEAR")]
pub unsafe fn vmclear(vmcs: PhysFrame<Size4KiB>) -> Result<(), VmFail> {
    let addr = vmcs.start_address().as_u64();
    let (cf, zf): (u8, u8);
    // SAFETY: the caller meets the contract above; the operand is a valid 8-byte memory location.
    unsafe {
        asm!("vmclear [{addr}]", "setc {cf}", "setz {zf}", addr = in(reg) &addr,
            cf = out(reg_byte) cf, zf = out(reg_byte) zf, options(nostack));
    }
    // SAFETY: VMfailValid only occurs with a current VMCS.
    unsafe { outcome(cf, zf) }
}

/// VMPTRLD: makes the VMCS at `vmcs` current and active (SDM 31.3 "VMPTRLD—Load Pointer to
/// Virtual-Machine Control Structure").
///
/// # Errors
/// [`VmFail::Valid`] with error 9 (invalid address), 10 (the VMXON pointer) or 11 (wrong
/// revision identifier), or [`VmFail::Invalid`] when there is no current VMCS to hold the error.
///
/// # Safety
/// - The processor is in VMX root operation at CPL 0.
/// - `vmcs` is a 4 KiB frame holding a VMCS region (revision identifier from IA32_VMX_BASIC),
///   not active on any other processor, which the processor may write until it is cleared.
#[doc(alias = "VMPTRLD")]
pub unsafe fn vmptrld(vmcs: PhysFrame<Size4KiB>) -> Result<(), VmFail> {
    let addr = vmcs.start_address().as_u64();
    let (cf, zf): (u8, u8);
    // SAFETY: the caller meets the contract above; the operand is a valid 8-byte memory location.
    unsafe {
        asm!("vmptrld [{addr}]", "setc {cf}", "setz {zf}", addr = in(reg) &addr,
            cf = out(reg_byte) cf, zf = out(reg_byte) zf, options(nostack));
    }
    // SAFETY: VMfailValid only occurs with a current VMCS.
    unsafe { outcome(cf, zf) }
}

/// VMPTRST: the physical address of the current VMCS, or `None` when there is none (the
/// processor stores FFFFFFFF_FFFFFFFFH) (SDM 31.3 "VMPTRST—Store Pointer to Virtual-Machine
/// Control Structure").
///
/// VMPTRST has no VMfail outcome; its failures are #UD and #GP.
///
/// # Safety
/// - The processor is in VMX root operation at CPL 0.
#[doc(alias = "VMPTRST")]
#[must_use]
pub unsafe fn vmptrst() -> Option<PhysAddr> {
    let mut addr: u64 = 0;
    // SAFETY: the caller meets the contract above; the operand is a valid 8-byte memory location
    // that the instruction writes.
    unsafe {
        asm!("vmptrst [{addr}]", addr = in(reg) &mut addr, options(nostack));
    }
    if addr == u64::MAX {
        None
    } else {
        PhysAddr::try_new(addr).ok()
    }
}

/// VMREAD: reads a field of the current VMCS by its raw encoding (SDM 31.3 "VMREAD—Read Field
/// from Virtual-Machine Control Structure").
///
/// Prefer the typed access in [`crate::vmcs`]; this raw form serves dumps and the typed layer.
///
/// # Errors
/// [`VmFail::Invalid`] without a current VMCS; [`VmFail::Valid`] with error 12 for an encoding
/// the processor does not support.
///
/// # Safety
/// - The processor is in VMX root operation at CPL 0 (in VMX non-root operation VMREAD causes a
///   VM exit or reads the shadow VMCS).
#[doc(alias = "VMREAD")]
pub unsafe fn vmread(encoding: u32) -> Result<u64, VmFail> {
    let value: u64;
    let (cf, zf): (u8, u8);
    // SAFETY: the caller meets the contract above; VMREAD only writes the output register.
    unsafe {
        asm!("vmread {value}, {enc}", "setc {cf}", "setz {zf}", value = out(reg) value,
            enc = in(reg) u64::from(encoding), cf = out(reg_byte) cf, zf = out(reg_byte) zf,
            options(nostack));
    }
    // SAFETY: VMfailValid only occurs with a current VMCS.
    unsafe { outcome(cf, zf) }.map(|()| value)
}

/// VMWRITE: writes a field of the current VMCS by its raw encoding (SDM 31.3 "VMWRITE—Write Field
/// to Virtual-Machine Control Structure").
///
/// # Errors
/// [`VmFail::Invalid`] without a current VMCS; [`VmFail::Valid`] with error 12 (unsupported
/// component) or 13 (read-only component).
///
/// # Safety
/// - The processor is in VMX root operation at CPL 0.
/// - The value written must not let a later VM entry or VM exit break memory safety: host-state
///   fields, addresses of bitmaps, EPT pointers, MSR-load areas and the like must point at memory
///   that stays valid and owned as the SDM requires for as long as this VMCS can be entered.
#[doc(alias = "VMWRITE")]
pub unsafe fn vmwrite(encoding: u32, value: u64) -> Result<(), VmFail> {
    let (cf, zf): (u8, u8);
    // SAFETY: the caller meets the contract above.
    unsafe {
        asm!("vmwrite {enc}, {value}", "setc {cf}", "setz {zf}", enc = in(reg) u64::from(encoding),
            value = in(reg) value, cf = out(reg_byte) cf, zf = out(reg_byte) zf, options(nostack));
    }
    // SAFETY: VMfailValid only occurs with a current VMCS.
    unsafe { outcome(cf, zf) }
}

/// VMLAUNCH: launches the guest of the current (clear) VMCS (SDM 31.3 "VMLAUNCH/VMRESUME—Launch/
/// Resume Virtual Machine").
///
/// This wrapper **returns only when the launch fails** with VMfailInvalid or VMfailValid. A
/// successful VM entry runs the guest, and the next VM exit continues at the VMCS's host RIP with
/// its host RSP, not here. A VM entry that fails *after* the checks of the VMX controls and host
/// state (invalid guest state, MSR loading) is reported as a VM exit with bit 31 of the exit
/// reason set, also at host RIP. A run loop that needs the guest's registers uses a world-switch
/// routine instead of this wrapper.
///
/// # Safety
/// - The processor is in VMX root operation at CPL 0 with a current, clear VMCS.
/// - The host-state area describes a valid host context: host RIP is code that can handle a VM
///   exit with the host RSP, segment, CR and MSR state given there.
/// - Everything the VMCS references (EPT tables, bitmaps, MSR areas, guest memory) stays valid
///   for as long as the guest may run.
#[doc(alias = "VMLAUNCH")]
pub unsafe fn vmlaunch() -> VmFail {
    let (cf, zf): (u8, u8);
    // SAFETY: the caller meets the contract above. If the launch succeeds, execution continues at
    // host RIP, which the caller provided.
    unsafe {
        asm!("vmlaunch", "setc {cf}", "setz {zf}", cf = out(reg_byte) cf, zf = out(reg_byte) zf);
    }
    // SAFETY: VMfailValid only occurs with a current VMCS.
    match unsafe { outcome(cf, zf) } {
        Err(fail) => fail,
        // Falling through with CF = ZF = 0 does not happen; report it as "no current VMCS".
        Ok(()) => VmFail::Invalid,
    }
}

/// VMRESUME: resumes the guest of the current (launched) VMCS (SDM 31.3 "VMLAUNCH/VMRESUME—
/// Launch/Resume Virtual Machine").
///
/// Like [`vmlaunch`], this wrapper **returns only when the resume fails**.
///
/// # Safety
/// - The same obligations as [`vmlaunch`], with a current VMCS whose launch state is launched.
#[doc(alias = "VMRESUME")]
pub unsafe fn vmresume() -> VmFail {
    let (cf, zf): (u8, u8);
    // SAFETY: the caller meets the contract above.
    unsafe {
        asm!("vmresume", "setc {cf}", "setz {zf}", cf = out(reg_byte) cf, zf = out(reg_byte) zf);
    }
    // SAFETY: VMfailValid only occurs with a current VMCS.
    match unsafe { outcome(cf, zf) } {
        Err(fail) => fail,
        Ok(()) => VmFail::Invalid,
    }
}

/// The general-purpose registers of a hypercall through VMCALL ([`vmcall`],
/// [`vmcall_from_guest`]): the number in RAX and the arguments in RBX, RCX, RDX and RSI; the
/// VMM's result comes back in all five.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HypercallRegisters {
    /// RAX: the hypercall number in, the result out.
    pub rax: u64,
    /// RBX: first argument.
    pub rbx: u64,
    /// RCX: second argument.
    pub rcx: u64,
    /// RDX: third argument.
    pub rdx: u64,
    /// RSI: fourth argument.
    pub rsi: u64,
}

/// VMCALL: calls the VMM (SDM 31.3 "VMCALL—Call to VM Monitor").
///
/// In VMX non-root operation this causes a VM exit; the VMM reads and updates `regs` (RAX, RBX,
/// RCX, RDX, RSI) and resumes after the instruction. In VMX root operation it fails (error 1) or
/// activates the dual-monitor treatment of SMIs and SMM.
///
/// For a hypercall from a guest use [`vmcall_from_guest`]: in non-root operation the flags after
/// the instruction are whatever the VMM left in the guest's RFLAGS (hvkit-vcpu leaves them as
/// the guest had them), so this wrapper could see a spurious VMfail, and on VMfailValid its
/// VMREAD of the error field would itself exit to the VMM.
///
/// # Errors
/// The VMfail outcome as the flags show it after the instruction; the VM-instruction error
/// number is read from the current VMCS, which is only meaningful in VMX root operation.
///
/// # Safety
/// - In VMX non-root operation: the VMM's hypercall handler, given these registers, must not break
///   this program's memory safety.
/// - In VMX root operation: the processor is at CPL 0 with a current VMCS.
#[doc(alias = "VMCALL")]
pub unsafe fn vmcall(regs: &mut HypercallRegisters) -> Result<(), VmFail> {
    let (cf, zf): (u8, u8);
    // SAFETY: the caller meets the contract above. RBX is reserved by the compiler, so its value
    // is exchanged with a scratch register around the instruction (XCHG leaves the flags alone).
    unsafe {
        asm!(
            "xchg {b}, rbx",
            "vmcall",
            "setc {cf}",
            "setz {zf}",
            "xchg {b}, rbx",
            b = inout(reg) regs.rbx,
            cf = out(reg_byte) cf,
            zf = out(reg_byte) zf,
            inout("rax") regs.rax,
            inout("rcx") regs.rcx,
            inout("rdx") regs.rdx,
            inout("rsi") regs.rsi,
            options(nostack),
        );
    }
    // SAFETY: VMfailValid only occurs with a current VMCS.
    unsafe { outcome(cf, zf) }
}

/// VMCALL from a guest (SDM 31.3 "VMCALL—Call to VM Monitor"; 26.1.2 "Instructions That Cause VM
/// Exits Unconditionally"): in VMX non-root operation VMCALL always exits, and the VMM answers in
/// `regs` (RAX, RBX, RCX, RDX, RSI in and out; a hypercall ABI such as hvkit's passes the number
/// in RAX, arguments in RBX, RCX, RDX and RSI, and returns the result in RAX). The flags
/// afterwards are the VMM's and are not read, unlike [`vmcall`].
///
/// # Safety
/// - The processor is in VMX non-root operation under a VMM that handles VMCALL exits (elsewhere
///   VMCALL raises #UD, or fails in VMX root operation);
/// - the VMM's hypercall handler, given these registers, must not break this program's memory
///   safety (it may change any guest state).
#[doc(alias = "VMCALL")]
#[doc(alias = "hypercall")]
#[inline]
pub unsafe fn vmcall_from_guest(regs: &mut HypercallRegisters) {
    // SAFETY: the caller meets the contract above. RBX is reserved by the compiler, so its value
    // is exchanged with a scratch register around the instruction.
    unsafe {
        asm!(
            "xchg {b}, rbx",
            "vmcall",
            "xchg {b}, rbx",
            b = inout(reg) regs.rbx,
            inout("rax") regs.rax,
            inout("rcx") regs.rcx,
            inout("rdx") regs.rdx,
            inout("rsi") regs.rsi,
            options(nostack),
        );
    }
}

/// The INVEPT types (SDM 31.3 "INVEPT—Invalidate Translations Derived from EPT").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum InveptType {
    /// Type 1: invalidate mappings associated with one EPTP.
    SingleContext {
        /// The EPT pointer whose mappings are invalidated.
        eptp: u64,
    },
    /// Type 2: invalidate mappings associated with all EPTPs.
    AllContexts,
}

/// INVEPT: invalidates cached EPT-derived translations (SDM 31.3 "INVEPT—Invalidate Translations
/// Derived from EPT").
///
/// # Errors
/// [`VmFail::Valid`] with error 28 when the type is not supported (see IA32_VMX_EPT_VPID_CAP
/// bits 25 and 26) or the EPTP is invalid.
///
/// # Safety
/// - The processor is in VMX root operation at CPL 0 and supports INVEPT (IA32_VMX_EPT_VPID_CAP
///   bit 20), or the instruction raises #UD.
#[doc(alias = "INVEPT")]
pub unsafe fn invept(kind: InveptType) -> Result<(), VmFail> {
    let (ty, eptp): (u64, u64) = match kind {
        InveptType::SingleContext { eptp } => (1, eptp),
        InveptType::AllContexts => (2, 0),
    };
    let descriptor: [u64; 2] = [eptp, 0];
    let (cf, zf): (u8, u8);
    // SAFETY: the caller meets the contract above; the descriptor is a valid 16-byte location.
    unsafe {
        asm!("invept {ty}, [{desc}]", "setc {cf}", "setz {zf}", ty = in(reg) ty,
            desc = in(reg) &descriptor, cf = out(reg_byte) cf, zf = out(reg_byte) zf,
            options(nostack));
    }
    // SAFETY: VMfailValid only occurs with a current VMCS.
    unsafe { outcome(cf, zf) }
}

/// The INVVPID types (SDM 31.3 "INVVPID—Invalidate Translations Based on VPID").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum InvvpidType {
    /// Type 0: invalidate mappings for one linear address tagged with one VPID.
    IndividualAddress {
        /// The VPID (must not be 0).
        vpid: u16,
        /// The linear address (must be canonical).
        address: u64,
    },
    /// Type 1: invalidate all mappings tagged with one VPID.
    SingleContext {
        /// The VPID (must not be 0).
        vpid: u16,
    },
    /// Type 2: invalidate mappings tagged with all VPIDs except VPID 0000H.
    AllContexts,
    /// Type 3: like single-context, but keep global translations.
    SingleContextRetainingGlobals {
        /// The VPID (must not be 0).
        vpid: u16,
    },
}

impl InvvpidType {
    /// The type number and the 128-bit INVVPID descriptor (VPID in bits 15:0, linear address in
    /// bits 127:64; SDM 31.3 "INVVPID", Figure 31-2 "INVVPID Descriptor").
    #[must_use]
    pub const fn encode(self) -> (u64, [u64; 2]) {
        match self {
            Self::IndividualAddress { vpid, address } => (0, [vpid as u64, address]),
            Self::SingleContext { vpid } => (1, [vpid as u64, 0]),
            Self::AllContexts => (2, [0, 0]),
            Self::SingleContextRetainingGlobals { vpid } => (3, [vpid as u64, 0]),
        }
    }
}

/// INVVPID: invalidates cached translations by VPID (SDM 31.3 "INVVPID—Invalidate Translations
/// Based on VPID").
///
/// # Errors
/// [`VmFail::Valid`] with error 28 when the type is not supported (IA32_VMX_EPT_VPID_CAP bits
/// 40–43), the VPID is 0 for types 0, 1 and 3, or the address is not canonical for type 0.
///
/// # Safety
/// - The processor is in VMX root operation at CPL 0 and supports INVVPID (IA32_VMX_EPT_VPID_CAP
///   bit 32), or the instruction raises #UD.
#[doc(alias = "INVVPID")]
pub unsafe fn invvpid(kind: InvvpidType) -> Result<(), VmFail> {
    let (ty, descriptor) = kind.encode();
    let (cf, zf): (u8, u8);
    // SAFETY: the caller meets the contract above; the descriptor is a valid 16-byte location.
    unsafe {
        asm!("invvpid {ty}, [{desc}]", "setc {cf}", "setz {zf}", ty = in(reg) ty,
            desc = in(reg) &descriptor, cf = out(reg_byte) cf, zf = out(reg_byte) zf,
            options(nostack));
    }
    // SAFETY: VMfailValid only occurs with a current VMCS.
    unsafe { outcome(cf, zf) }
}

/// VMFUNC: invokes VM function `function` (EAX) with argument `argument` (ECX) from VMX non-root
/// operation (SDM 31.3 "VMFUNC—Invoke VM function"; function 0 is EPTP switching, ECX the index
/// into the EPTP list).
///
/// VMFUNC does not report VMfail: an unsupported or disabled function, or an invalid argument,
/// causes a VM exit (reason 59), and outside non-root operation the instruction raises #UD.
///
/// # Safety
/// - The processor is in VMX non-root operation and the VMM has enabled this VM function; for EPTP
///   switching, the guest must be prepared for its physical memory to change to the selected
///   EPT's view.
#[doc(alias = "VMFUNC")]
pub unsafe fn vmfunc(function: u32, argument: u32) {
    // SAFETY: the caller meets the contract above.
    unsafe {
        asm!("vmfunc", in("eax") function, in("ecx") argument, options(nostack));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invvpid_descriptors() {
        assert_eq!(
            InvvpidType::IndividualAddress {
                vpid: 7,
                address: 0xffff_8000_0000_1000
            }
            .encode(),
            (0, [7, 0xffff_8000_0000_1000])
        );
        assert_eq!(
            InvvpidType::SingleContext { vpid: 0xffff }.encode(),
            (1, [0xffff, 0])
        );
        assert_eq!(InvvpidType::AllContexts.encode(), (2, [0, 0]));
        assert_eq!(
            InvvpidType::SingleContextRetainingGlobals { vpid: 3 }.encode(),
            (3, [3, 0])
        );
    }
}
