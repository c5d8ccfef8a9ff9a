//! The SVM world switch: host callee-saved GPRs on the stack, VMSAVE of the host's hidden state
//! into the host VMCB, VMLOAD of the guest's, the guest GPRs (all but RAX and RSP, which VMRUN
//! takes from the VMCB) loaded from a [`GuestRegisters`], VMRUN, and on #VMEXIT the guest GPRs
//! stored back, VMSAVE of the guest's hidden state and VMLOAD of the host's.
//!
//! Manual: AMD64 Architecture Programmer's Manual Volume 2: System Programming, Publication No.
//! 24593, Revision 3.42, March 2024: 15.5 "VMRUN Instruction" (15.5.1 "Basic Operation": VMRUN
//! saves the host's RIP, RSP, RAX, RFLAGS, CS/SS/DS/ES, GDTR/IDTR, CR0/CR3/CR4 and EFER in the
//! host save area of VM_HSAVE_PA and loads the guest's RAX, RSP, RIP from the VMCB), 15.5.2
//! "VMSAVE and VMLOAD Instructions" (FS, GS, TR, LDTR with their hidden state, KernelGsBase,
//! STAR, LSTAR, CSTAR, SFMASK, SYSENTER_CS/ESP/EIP), 15.6 "#VMEXIT" (the host state comes back
//! from the host save area; the other GPRs hold the guest's values), 15.17 "Global Interrupt
//! Flag, STGI and CLGI Instructions" (the caller brackets this routine with CLGI and STGI).
//!
//! The switch is one `asm!` block inside an ordinary (never inlined) Rust function, so the
//! compiler writes the prologue and epilogue: the function returns the way the rest of the
//! program does (with `-Zfunction-return=thunk-extern`, through the kernel's return thunk, which
//! Linux's objtool requires of a RETHUNK build). RBX and RBP cannot be operands of `asm!`: the
//! block pushes and pops them itself.
//!
//! Every offset the assembly uses is an `offset_of!` constant passed as a `const` operand.
// UNSAFETY: the world switch is assembly that hands the processor to the guest and back.
#![expect(unsafe_code, reason = "the VMSAVE/VMLOAD/VMRUN world switch")]

use core::arch::asm;
use core::mem::offset_of;
use core::ptr::NonNull;

use hvkit_svm::Vmcb;

use crate::regs::GuestRegisters;

/// What the assembly reads and writes: the guest GPRs and the two VMCBs' physical addresses.
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct SwitchArea {
    /// The guest GPRs (RAX is ignored: VMRUN takes it from the VMCB).
    pub(crate) regs: GuestRegisters,
    /// Physical address of the guest's VMCB.
    pub(crate) guest_vmcb: u64,
    /// Physical address of the VMCB that holds the host's VMSAVE state.
    pub(crate) host_vmcb: u64,
}

/// Enters the guest of the VMCB at `area.guest_vmcb` and returns at its next #VMEXIT (or at
/// once, with EXITCODE = VMEXIT_INVALID, when VMRUN's consistency checks fail).
///
/// # Safety
/// - SVM is enabled on this processor (EFER.SVME) with VM_HSAVE_PA pointing at a host save area
///   reserved for it, at CPL 0, and GIF is clear (CLGI) so that no interrupt sees half-switched
///   state; the caller sets GIF again (STGI) afterwards;
/// - `area.guest_vmcb` and `area.host_vmcb` are the physical addresses of two distinct 4 KiB
///   VMCB frames that this vCPU owns, which nothing else touches while this runs, and `vmcb`
///   points at the guest VMCB (no reference to it is alive during the call); the guest
///   VMCB's permission maps, nested tables and every other address in it are valid and map
///   only memory the guest may own — the obligations of VMRUN, VMLOAD and VMSAVE;
/// - the caller keeps the rest of the host state VMRUN does not restore (x87/SSE/AVX, XCR0,
///   DR0–DR3, CR2) as it needs it.
#[inline(never)]
pub(crate) unsafe fn enter(area: &mut SwitchArea, vmcb: NonNull<Vmcb>) {
    // SAFETY: the caller meets VMRUN/VMLOAD/VMSAVE's obligations. The block keeps RSP balanced
    // (#VMEXIT restores the RSP VMRUN ran with, the area pointer, RBX and RBP pushed above it),
    // restores RBX and RBP, declares every other register it or the guest changes
    // (`clobber_abi` makes the compiler keep nothing in vector registers across it; the guest's
    // x87/SSE state is the caller's to switch), and writes only `area`, the two VMCBs (the
    // guest VMCB's pointer is an operand, so the compiler sees it change) and its own stack.
    // The host's FS, GS, TR, LDTR and syscall MSRs are VMSAVEd before and VMLOADed after.
    unsafe {
        asm!(
            "push rbp",
            "push rbx",
            // The area pointer stays at [rsp] while the guest runs (#VMEXIT restores this RSP).
            "push rdi",
            "mov rax, [rdi + {host_vmcb}]",
            "vmsave rax",
            "mov rax, [rdi + {guest_vmcb}]",
            "vmload rax",
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
            // #VMEXIT: host RSP is back, so [rsp] is the area pointer; the GPRs are the guest's.
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
            "mov rax, [rdi + {guest_vmcb}]",
            "vmsave rax",
            "mov rax, [rdi + {host_vmcb}]",
            "vmload rax",
            "add rsp, 8",
            "pop rbx",
            "pop rbp",
            guest_vmcb = const offset_of!(SwitchArea, guest_vmcb),
            host_vmcb = const offset_of!(SwitchArea, host_vmcb),
            rbx = const offset_of!(SwitchArea, regs) + GuestRegisters::OFFSET_RBX,
            rcx = const offset_of!(SwitchArea, regs) + GuestRegisters::OFFSET_RCX,
            rdx = const offset_of!(SwitchArea, regs) + GuestRegisters::OFFSET_RDX,
            rsi = const offset_of!(SwitchArea, regs) + GuestRegisters::OFFSET_RSI,
            rdi = const offset_of!(SwitchArea, regs) + GuestRegisters::OFFSET_RDI,
            rbp = const offset_of!(SwitchArea, regs) + GuestRegisters::OFFSET_RBP,
            r8 = const offset_of!(SwitchArea, regs) + GuestRegisters::OFFSET_R8,
            r9 = const offset_of!(SwitchArea, regs) + GuestRegisters::OFFSET_R9,
            r10 = const offset_of!(SwitchArea, regs) + GuestRegisters::OFFSET_R10,
            r11 = const offset_of!(SwitchArea, regs) + GuestRegisters::OFFSET_R11,
            r12 = const offset_of!(SwitchArea, regs) + GuestRegisters::OFFSET_R12,
            r13 = const offset_of!(SwitchArea, regs) + GuestRegisters::OFFSET_R13,
            r14 = const offset_of!(SwitchArea, regs) + GuestRegisters::OFFSET_R14,
            r15 = const offset_of!(SwitchArea, regs) + GuestRegisters::OFFSET_R15,
            inout("rdi") core::ptr::from_mut(area) => _,
            inout("rsi") vmcb.as_ptr() => _,
            out("r12") _,
            out("r13") _,
            out("r14") _,
            out("r15") _,
            clobber_abi("C"),
        );
    }
}
