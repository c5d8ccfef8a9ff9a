//! SVM instructions and the hardware implementations of the access traits.
//!
//! Manual: AMD64 Architecture Programmer's Manual Volume 2: System Programming, Publication
//! No. 24593, Revision 3.42, March 2024 — Section 15.5 "VMRUN Instruction", 15.5.2 "VMSAVE and
//! VMLOAD Instructions", 15.16.2 "Invalidate Page, Alternate ASID" (INVLPGA), 15.17 "Global
//! Interrupt Flag, STGI and CLGI Instructions", 15.18 "VMMCALL Instruction"; Volume 3 for the
//! instruction pages.
//!
//! None of these instructions reports failure in RFLAGS: misuse raises #UD (EFER.SVME clear) or
//! #GP (CPL > 0, bad address), and a VMRUN whose guest state is illegal returns with EXITCODE =
//! VMEXIT_INVALID. So the wrappers return `()` and their `# Safety` sections carry the
//! obligations; read the outcome of VMRUN from the VMCB.
//!
//! This is the crate's only module with `unsafe` code.

// UNSAFETY: this module executes privileged instructions (VMRUN, VMLOAD, VMSAVE, STGI, CLGI,
// INVLPGA, VMMCALL, RDMSR, WRMSR) and volatile VMCB accesses; everything else in the crate is
// safe code on top of it.
#![expect(
    unsafe_code,
    reason = "SVM instructions and MSR access need inline assembly"
)]

use crate::enable::{
    Cpuid, CpuidResult, EFER_SVME, MSR_EFER, MSR_VM_CR, MSR_VM_HSAVE_PA, SvmMsrs, VmCr,
};
use crate::event::EventInjection;
use crate::exit::ExitCode;
use crate::regs::VmrunGprs;
use crate::vmcb::Vmcb;
use core::arch::asm;
use core::mem::offset_of;
use core::ptr::NonNull;
use x86_64::PhysAddr;

/// Runs the guest described by `vmcb` until the next #VMEXIT (APM 15.5 "VMRUN Instruction").
///
/// Loads the guest GPRs from `regs`, executes `VMRUN` with RAX = `vmcb_pa`, and after #VMEXIT
/// stores the guest GPRs back to `regs`. Guest RAX, RSP, RIP and the exit information are in
/// `vmcb` afterwards (e.g. [`crate::vmcb::ControlArea::exit_code`]); an illegal VMCB shows up
/// as [`ExitCode::INVALID`], not as an error here.
///
/// # Safety
/// - SVM is enabled on this CPU (EFER.SVME = 1), VM_HSAVE_PA points to a host save area reserved
///   for this CPU, and the caller runs at CPL 0.
/// - `vmcb_pa` is the physical address of `*vmcb`, which is 4 KiB aligned (the type guarantees
///   the alignment); no other CPU runs or accesses this VMCB concurrently.
/// - The IOPM, MSRPM, nested page tables and every other physical address in the VMCB point to
///   memory that stays valid and reserved for that purpose while the guest runs; nested page
///   tables (or, without NP, the guest's CR3) only map memory the guest may own.
/// - GIF handling is the caller's: normally CLGI before and STGI after, so that host interrupts
///   are taken only after host state is complete (VMRUN sets GIF; #VMEXIT clears it).
/// - Host state that VMRUN does not restore (FS, GS, TR, LDTR, KernelGsBase, STAR/LSTAR/CSTAR/
///   SFMASK, SYSENTER MSRs — use [`vmsave`]/[`vmload`] — and x87/SSE/AVX state, DR0–DR3, XCR0)
///   is saved and restored by the caller. The guest may change all of it.
#[doc(alias = "VMRUN")]
#[inline]
pub unsafe fn vmrun(vmcb: &mut Vmcb, vmcb_pa: PhysAddr, regs: &mut VmrunGprs) {
    let vmcb_ptr: *mut Vmcb = vmcb;
    let regs_ptr: *mut VmrunGprs = regs;
    // SAFETY: the caller upholds the contract above. The asm saves and restores RBX and RBP (which
    // cannot be operands) on the stack, declares every other GPR and all caller-saved vector
    // registers clobbered, and passes `vmcb_ptr` so the compiler treats the VMCB as read and
    // written by the block. `regs_ptr` is valid for reads and writes for the whole block.
    unsafe {
        asm!(
            "push rbp",
            "push rbx",
            "push rdi",
            "mov rbx, [rdi + {rbx}]",
            "mov rcx, [rdi + {rcx}]",
            "mov rdx, [rdi + {rdx}]",
            "mov rsi, [rdi + {rsi}]",
            "mov rbp, [rdi + {rbp}]",
            "mov r8, [rdi + {r8}]",
            "mov r9, [rdi + {r9}]",
            "mov r10, [rdi + {r10}]",
            "mov r11, [rdi + {r11}]",
            "mov r12, [rdi + {r12}]",
            "mov r13, [rdi + {r13}]",
            "mov r14, [rdi + {r14}]",
            "mov r15, [rdi + {r15}]",
            "mov rdi, [rdi + {rdi}]",
            "vmrun rax",
            "push rdi",
            "mov rdi, [rsp + 8]",
            "mov [rdi + {rbx}], rbx",
            "mov [rdi + {rcx}], rcx",
            "mov [rdi + {rdx}], rdx",
            "mov [rdi + {rsi}], rsi",
            "mov [rdi + {rbp}], rbp",
            "mov [rdi + {r8}], r8",
            "mov [rdi + {r9}], r9",
            "mov [rdi + {r10}], r10",
            "mov [rdi + {r11}], r11",
            "mov [rdi + {r12}], r12",
            "mov [rdi + {r13}], r13",
            "mov [rdi + {r14}], r14",
            "mov [rdi + {r15}], r15",
            "pop qword ptr [rdi + {rdi}]",
            "add rsp, 8",
            "pop rbx",
            "pop rbp",
            rbx = const offset_of!(VmrunGprs, rbx),
            rcx = const offset_of!(VmrunGprs, rcx),
            rdx = const offset_of!(VmrunGprs, rdx),
            rsi = const offset_of!(VmrunGprs, rsi),
            rdi = const offset_of!(VmrunGprs, rdi),
            rbp = const offset_of!(VmrunGprs, rbp),
            r8 = const offset_of!(VmrunGprs, r8),
            r9 = const offset_of!(VmrunGprs, r9),
            r10 = const offset_of!(VmrunGprs, r10),
            r11 = const offset_of!(VmrunGprs, r11),
            r12 = const offset_of!(VmrunGprs, r12),
            r13 = const offset_of!(VmrunGprs, r13),
            r14 = const offset_of!(VmrunGprs, r14),
            r15 = const offset_of!(VmrunGprs, r15),
            inout("rax") vmcb_pa.as_u64() => _,
            inout("rdi") regs_ptr => _,
            inout("rsi") vmcb_ptr => _,
            out("rcx") _,
            out("rdx") _,
            out("r8") _,
            out("r9") _,
            out("r10") _,
            out("r11") _,
            out("r12") _,
            out("r13") _,
            out("r14") _,
            out("r15") _,
            clobber_abi("C"),
        );
    }
}

/// Loads FS, GS, TR, LDTR (with hidden state), KernelGsBase, STAR, LSTAR, CSTAR, SFMASK and the
/// SYSENTER MSRs from the VMCB at `vmcb_pa` (APM 15.5.2 "VMSAVE and VMLOAD Instructions").
///
/// # Safety
/// - SVM is enabled, CPL 0, and `vmcb_pa` is the physical address of `*vmcb`.
/// - The loaded state is valid for the code that runs next (e.g. the guest's state right before
///   VMRUN, or the host's state right after #VMEXIT); loading a bad TR/LDTR/FS/GS or syscall MSR
///   breaks the running code.
#[doc(alias = "VMLOAD")]
#[inline]
pub unsafe fn vmload(vmcb: &Vmcb, vmcb_pa: PhysAddr) {
    let vmcb_ptr: *const Vmcb = vmcb;
    // SAFETY: the caller upholds the contract; `vmcb_ptr` is passed so the compiler sees the
    // VMCB as read by the block.
    unsafe {
        asm!(
            "vmload rax",
            in("rax") vmcb_pa.as_u64(),
            in("rdi") vmcb_ptr,
            options(nostack, preserves_flags, readonly),
        );
    }
}

/// Stores FS, GS, TR, LDTR, KernelGsBase, STAR, LSTAR, CSTAR, SFMASK and the SYSENTER MSRs into
/// the VMCB at `vmcb_pa` (APM 15.5.2).
///
/// # Safety
/// - SVM is enabled, CPL 0, and `vmcb_pa` is the physical address of `*vmcb`.
#[doc(alias = "VMSAVE")]
#[inline]
pub unsafe fn vmsave(vmcb: &mut Vmcb, vmcb_pa: PhysAddr) {
    let vmcb_ptr: *mut Vmcb = vmcb;
    // SAFETY: the caller upholds the contract; `vmcb_ptr` is passed so the compiler sees the
    // VMCB as written by the block.
    unsafe {
        asm!(
            "vmsave rax",
            in("rax") vmcb_pa.as_u64(),
            in("rdi") vmcb_ptr,
            options(nostack, preserves_flags),
        );
    }
}

/// Sets the global interrupt flag (APM 15.17).
///
/// # Safety
/// - SVM is enabled (or SKINIT is supported) and CPL 0.
/// - Pending interrupts, NMIs and SMIs may be taken right after; host state (IDT, stack, TR)
///   must be ready for them.
#[doc(alias = "STGI")]
#[inline]
pub unsafe fn stgi() {
    // SAFETY: the caller upholds the contract.
    unsafe { asm!("stgi", options(nomem, nostack, preserves_flags)) };
}

/// Clears the global interrupt flag (APM 15.17): interrupts, NMIs and SMIs are held pending.
///
/// # Safety
/// - SVM is enabled and CPL 0.
/// - The caller sets GIF again (STGI or VMRUN) in bounded time; while GIF = 0 even NMIs wait.
#[doc(alias = "CLGI")]
#[inline]
pub unsafe fn clgi() {
    // SAFETY: the caller upholds the contract.
    unsafe { asm!("clgi", options(nomem, nostack, preserves_flags)) };
}

/// Invalidates the TLB mapping of guest-virtual `address` in `asid` (APM 15.16.2).
///
/// # Safety
/// - SVM is enabled and CPL 0. (INVLPGA cannot break memory safety on its own, but it is a
///   privileged instruction that faults otherwise.)
#[doc(alias = "INVLPGA")]
#[inline]
pub unsafe fn invlpga(address: u64, asid: u32) {
    // SAFETY: the caller upholds the contract.
    unsafe {
        asm!(
            "invlpga rax, ecx",
            in("rax") address,
            in("ecx") asid,
            options(nostack, preserves_flags),
        );
    }
}

/// The general-purpose registers of a hypercall through [`vmmcall`]: a hypercall ABI such as
/// hvkit's passes the number in RAX and arguments in RBX, RCX, RDX and RSI, and returns the
/// result in RAX; RDI is carried too, for ABIs that use it. The hypervisor may change all six.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, Debug)]
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
    /// RDI.
    pub rdi: u64,
}

/// Calls the hypervisor from a guest (APM 15.18 "VMMCALL Instruction"). Raises #UD if the
/// hypervisor does not intercept VMMCALL.
///
/// # Safety
/// - Runs inside a guest whose hypervisor intercepts VMMCALL, and the register values follow
///   that hypervisor's ABI; the hypervisor may change any guest state.
#[doc(alias = "VMMCALL")]
#[doc(alias = "hypercall")]
#[inline]
pub unsafe fn vmmcall(regs: &mut HypercallRegisters) {
    // SAFETY: the caller upholds the contract; all six registers are inout. RBX is reserved by
    // the compiler, so its value is exchanged with a scratch register around the instruction.
    unsafe {
        asm!(
            "xchg {b}, rbx",
            "vmmcall",
            "xchg {b}, rbx",
            b = inout(reg) regs.rbx,
            inout("rax") regs.rax,
            inout("rcx") regs.rcx,
            inout("rdx") regs.rdx,
            inout("rsi") regs.rsi,
            inout("rdi") regs.rdi,
        );
    }
}

/// Reads an MSR.
///
/// # Safety
/// CPL 0 and `msr` exists on this CPU (otherwise #GP).
unsafe fn rdmsr(msr: u32) -> u64 {
    let (low, high): (u32, u32);
    // SAFETY: the caller upholds the contract.
    unsafe {
        asm!(
            "rdmsr",
            in("ecx") msr,
            out("eax") low,
            out("edx") high,
            options(nomem, nostack, preserves_flags),
        );
    }
    (u64::from(high) << 32) | u64::from(low)
}

/// Writes an MSR.
///
/// # Safety
/// CPL 0, `msr` exists, and `value` is legal for it and keeps the running code's assumptions.
unsafe fn wrmsr(msr: u32, value: u64) {
    let low = value & 0xFFFF_FFFF;
    let high = value >> 32;
    // SAFETY: the caller upholds the contract.
    unsafe {
        asm!(
            "wrmsr",
            in("ecx") msr,
            in("rax") low,
            in("rdx") high,
            options(nostack, preserves_flags),
        );
    }
}

/// CPUID on the current CPU.
#[derive(Clone, Copy, Debug, Default)]
pub struct HardwareCpuid;

impl Cpuid for HardwareCpuid {
    fn cpuid(&self, leaf: u32, subleaf: u32) -> CpuidResult {
        let (eax, ebx, ecx, edx): (u32, u64, u32, u32);
        // SAFETY: CPUID is unprivileged and has no side effects on memory. RBX cannot be an asm
        // operand, so it is saved in a scratch register and swapped back.
        unsafe {
            asm!(
                "mov {rbx_copy}, rbx",
                "cpuid",
                "xchg {rbx_copy}, rbx",
                rbx_copy = out(reg) ebx,
                inout("eax") leaf => eax,
                inout("ecx") subleaf => ecx,
                out("edx") edx,
                options(nomem, nostack, preserves_flags),
            );
        }
        CpuidResult {
            eax,
            ebx: (ebx & 0xFFFF_FFFF) as u32,
            ecx,
            edx,
        }
    }
}

/// VM_CR, EFER.SVME and VM_HSAVE_PA of the current CPU.
#[derive(Debug)]
pub struct HardwareSvmMsrs {
    _not_send: core::marker::PhantomData<*const ()>,
}

impl HardwareSvmMsrs {
    /// A handle to this CPU's SVM MSRs.
    ///
    /// # Safety
    /// - The caller runs at CPL 0 on an AMD64 CPU that implements VM_CR and VM_HSAVE_PA (CPUID
    ///   reports SVM), and stays on this CPU while it uses the handle (it is `!Send`).
    /// - The caller owns SVM on this CPU: no other code enables, disables or uses SVM on it
    ///   concurrently, and VM_HSAVE_PA is only set to a host save area that stays reserved
    ///   while SVM is enabled.
    #[must_use]
    pub unsafe fn new() -> Self {
        Self {
            _not_send: core::marker::PhantomData,
        }
    }
}

impl SvmMsrs for HardwareSvmMsrs {
    fn vm_cr(&self) -> VmCr {
        // SAFETY: `new`'s contract: CPL 0 and VM_CR exists.
        VmCr::from_bits_retain(unsafe { rdmsr(MSR_VM_CR) })
    }

    fn efer(&self) -> u64 {
        // SAFETY: `new`'s contract: CPL 0; EFER always exists in long mode.
        unsafe { rdmsr(MSR_EFER) }
    }

    fn set_efer_svme(&mut self, enable: bool) {
        let efer = self.efer();
        let value = if enable {
            efer | EFER_SVME
        } else {
            efer & !EFER_SVME
        };
        // SAFETY: `new`'s contract: this CPU's SVM is ours; only SVME changes, which does not
        // affect running code (SVM instructions are the caller's `unsafe` business).
        unsafe { wrmsr(MSR_EFER, value) };
    }

    fn vm_hsave_pa(&self) -> u64 {
        // SAFETY: `new`'s contract: CPL 0 and VM_HSAVE_PA exists.
        unsafe { rdmsr(MSR_VM_HSAVE_PA) }
    }

    fn set_vm_hsave_pa(&mut self, pa: u64) {
        // SAFETY: `new`'s contract: VM_HSAVE_PA exists and only takes effect at VMRUN, whose
        // own contract requires a valid host save area.
        unsafe { wrmsr(MSR_VM_HSAVE_PA, pa) };
    }
}

/// A VMCB that other agents may write while this code looks at it, accessed with volatile
/// reads and writes (e.g. a VMCB shared with another CPU's run loop, or inspected from an NMI
/// handler). The usual single-owner run loop uses `&mut Vmcb` instead.
#[derive(Debug)]
pub struct VmcbPtr {
    ptr: NonNull<Vmcb>,
}

impl VmcbPtr {
    /// Wraps a pointer to a live VMCB.
    ///
    /// # Safety
    /// - `ptr` points to a mapped, 4 KiB-aligned VMCB that stays valid for the lifetime of the
    ///   `VmcbPtr`.
    /// - No Rust reference (`&Vmcb` / `&mut Vmcb`) to it is used while this `VmcbPtr` exists.
    #[must_use]
    pub unsafe fn new(ptr: NonNull<Vmcb>) -> Self {
        Self { ptr }
    }

    /// The raw pointer.
    #[must_use]
    pub fn as_ptr(&self) -> *mut Vmcb {
        self.ptr.as_ptr()
    }

    /// Reads EXITCODE with a volatile load.
    #[must_use]
    pub fn exit_code(&self) -> ExitCode {
        let field = self.field::<u64>(0x070);
        // SAFETY: `new`'s contract makes the VMCB valid; 070h is EXITCODE, an aligned u64
        // (pinned in `vmcb::CONTROL_AREA_OFFSETS`).
        ExitCode(unsafe { field.read_volatile() })
    }

    /// Reads EXITINFO1 and EXITINFO2 with volatile loads.
    #[must_use]
    pub fn exit_info(&self) -> (u64, u64) {
        let info1 = self.field::<u64>(0x078);
        let info2 = self.field::<u64>(0x080);
        // SAFETY: as in `exit_code`; 078h/080h are aligned u64 fields.
        let first = unsafe { info1.read_volatile() };
        // SAFETY: as above.
        let second = unsafe { info2.read_volatile() };
        (first, second)
    }

    /// Reads EXITINTINFO with a volatile load.
    #[must_use]
    pub fn exit_int_info(&self) -> EventInjection {
        let field = self.field::<u64>(0x088);
        // SAFETY: as in `exit_code`; 088h is an aligned u64 field.
        EventInjection::from_bits(unsafe { field.read_volatile() })
    }

    /// Writes the VMCB clean bits with a volatile store.
    pub fn set_clean_bits(&mut self, bits: crate::vmcb::CleanBits) {
        let field = self.field::<u32>(0x0C0);
        // SAFETY: as in `exit_code`; 0C0h is an aligned u32 field; `&mut self` excludes other
        // writers through this handle.
        unsafe { field.write_volatile(bits.bits()) };
    }

    /// Reads guest RIP (400h + 178h) with a volatile load.
    #[must_use]
    pub fn rip(&self) -> u64 {
        let field = self.field::<u64>(0x578);
        // SAFETY: as in `exit_code`; 578h is RIP, an aligned u64 (asserted in `vmcb`).
        unsafe { field.read_volatile() }
    }

    /// A pointer to the field at byte `offset` of the VMCB.
    fn field<T>(&self, offset: usize) -> *mut T {
        self.ptr
            .as_ptr()
            .cast::<u8>()
            .wrapping_add(offset)
            .cast::<T>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `VmcbPtr` reads the same fields the safe accessors do (host test: plain memory).
    #[test]
    fn vmcb_ptr_reads_the_pinned_offsets() {
        let mut vmcb = Vmcb::new();
        vmcb.set_exit_code(ExitCode::CPUID);
        vmcb.set_exit_info1(11);
        vmcb.set_exit_info2(22);
        vmcb.set_exit_int_info(EventInjection::exception(14, Some(2)));
        vmcb.set_rip(0xFFFF_8000_0000_1000);
        {
            let ptr = NonNull::from(&mut vmcb);
            // SAFETY: `vmcb` outlives `live` and is not touched through a reference meanwhile.
            let mut live = unsafe { VmcbPtr::new(ptr) };
            assert_eq!(live.exit_code(), ExitCode::CPUID);
            assert_eq!(live.exit_info(), (11, 22));
            assert_eq!(live.exit_int_info(), EventInjection::exception(14, Some(2)));
            assert_eq!(live.rip(), 0xFFFF_8000_0000_1000);
            live.set_clean_bits(crate::vmcb::CleanBits::all());
        }
        assert_eq!(vmcb.clean_bits(), crate::vmcb::CleanBits::all());
    }

    #[test]
    fn hardware_cpuid_reports_a_vendor() {
        let leaf0 = HardwareCpuid.cpuid(0, 0);
        assert!(leaf0.eax >= 1);
    }
}
