//! The VMX world switch: host GPRs saved on the stack, HOST_RSP and HOST_RIP written from inside
//! the assembly, guest GPRs loaded from a [`GuestRegisters`], VMLAUNCH the first time and
//! VMRESUME after, and on the VM exit the guest GPRs stored back and the host's restored.
//!
//! The switch is one `asm!` block inside an ordinary (never inlined) Rust function, so the
//! compiler writes the prologue and epilogue: the function returns the way the rest of the
//! program does (with `-Zfunction-return=thunk-extern`, through the kernel's return thunk, which
//! Linux's objtool requires of a RETHUNK build), and saves the callee-saved registers the block
//! declares as clobbered. RBX and RBP cannot be operands of `asm!`: the block pushes and pops
//! them itself. The block writes HOST_RSP and HOST_RIP (the address of its exit label) whenever
//! either differs from the values it last wrote, so a copy of the block the compiler might make
//! still returns to itself.
//!
//! Manual: Intel® 64 and IA-32 Architectures Software Developer's Manual, Combined Volumes, Order
//! Number 325462-086US, December 2024, Vol. 3C 31.3 "VMLAUNCH/VMRESUME—Launch/Resume Virtual
//! Machine" and "VMWRITE", 31.2 "Conventions" (VMfailInvalid sets CF, VMfailValid sets ZF),
//! 28.5 "Loading Host State" (RSP and RIP come from the host-state area; RFLAGS is cleared but
//! for bit 1; the GPRs other than RSP keep the guest's values), 27.8 "VM-Entry Failures During
//! or After Loading Guest State" (they arrive at host RIP like exits).
//!
//! Every offset the assembly uses is an `offset_of!` constant passed as a `const` operand.
// UNSAFETY: the world switch is assembly that hands the processor to the guest and back.
#![expect(unsafe_code, reason = "the VMLAUNCH/VMRESUME world switch")]

use core::arch::asm;
use core::mem::offset_of;

use hvkit_vmx::fields::host;

use crate::regs::GuestRegisters;

/// What the assembly reads and writes: the guest GPRs, the HOST_RSP and HOST_RIP last written,
/// and whether the VMCS was launched.
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct SwitchArea {
    /// The guest GPRs (not RSP).
    pub(crate) regs: GuestRegisters,
    /// The HOST_RSP value last written (0: none yet).
    pub(crate) host_rsp: u64,
    /// The HOST_RIP value last written (0: none yet).
    pub(crate) host_rip: u64,
    /// Non-zero once VMLAUNCH succeeded (use VMRESUME).
    pub(crate) launched: u64,
}

/// The outcome of one world switch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Switch {
    /// The guest ran and a VM exit (or a late VM-entry failure) happened.
    Exited,
    /// VMLAUNCH, VMRESUME or a VMWRITE of the host RSP/RIP failed: CF (VMfailInvalid) and ZF
    /// (VMfailValid) as the instruction left them.
    Failed {
        /// CF.
        cf: bool,
        /// ZF.
        zf: bool,
    },
}

/// Enters the guest of the current VMCS and returns at its next VM exit (or VMfail).
///
/// # Safety
/// - VMX root operation at CPL 0 on this processor, with the vCPU's VMCS current, and every
///   field of it valid for entry (host state of this processor and address space, guest state,
///   controls, and the memory they reference) — the obligations of VMLAUNCH/VMRESUME;
/// - `area.launched` is 0 exactly when the VMCS has not been launched since its VMCLEAR, and
///   `area.host_rsp`/`area.host_rip` are 0 or the values last written to this VMCS;
/// - interrupts are handled as the caller intends (an exit restores host RFLAGS to 0x2, IF = 0).
#[inline(never)]
pub(crate) unsafe fn enter(area: &mut SwitchArea) -> Switch {
    let flags: u64;
    // SAFETY: the caller meets VMLAUNCH/VMRESUME's obligations. The block keeps RSP balanced
    // (the exit resumes at label 3 with RSP = HOST_RSP, the value it had at the VMWRITE, with
    // the area pointer, RBX and RBP pushed above it), restores RBX and RBP, declares every other
    // register it or the guest changes (the guest's x87/SSE state is the caller's to switch;
    // `clobber_abi` makes the compiler keep nothing in vector registers across it), leaves
    // RFLAGS.DF clear (a VM exit sets RFLAGS to 2) and writes only `area` and its own stack.
    unsafe {
        asm!(
            "push rbp",
            "push rbx",
            // The area pointer stays at [rsp] while the guest runs: HOST_RSP points at it.
            "push rdi",
            "lea rdx, [rip + 3f]",
            "cmp rsp, [rdi + {host_rsp}]",
            "jne 5f",
            "cmp rdx, [rdi + {host_rip}]",
            "je 2f",
            "5:",
            "mov rax, {host_rsp_field}",
            "vmwrite rax, rsp",
            "jbe 9f",
            "mov rax, {host_rip_field}",
            "vmwrite rax, rdx",
            "jbe 9f",
            // Remember them only once both writes succeeded.
            "mov [rdi + {host_rsp}], rsp",
            "mov [rdi + {host_rip}], rdx",
            "2:",
            "cmp qword ptr [rdi + {launched}], 0",
            // MOV does not change the flags: the comparison survives the loads.
            "mov rax, [rdi + {rax}]",
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
            "jne 4f",
            "vmlaunch",
            "jmp 9f",
            "4:",
            "vmresume",
            // VMfail sets CF or ZF. A successful entry never executes the next instruction but
            // continues at label 3 after the exit, with this RSP: the jump says so to tools
            // that follow the control flow (Linux's objtool would call label 3 unreachable).
            "jbe 9f",
            "jmp 3f",
            // VMfail: report RFLAGS (never 0: bit 1 is always set).
            "9:",
            "pushfq",
            "pop rax",
            "add rsp, 8",
            "jmp 8f",
            // The VM exit: RSP = HOST_RSP, so [rsp] is the area pointer.
            "3:",
            "push rdi",
            "mov rdi, [rsp + 8]",
            "mov [rdi + {rax}], rax",
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
            "pop rax",
            "mov [rdi + {rdi}], rax",
            "mov qword ptr [rdi + {launched}], 1",
            "add rsp, 8",
            "xor eax, eax",
            "8:",
            "pop rbx",
            "pop rbp",
            host_rsp = const offset_of!(SwitchArea, host_rsp),
            host_rip = const offset_of!(SwitchArea, host_rip),
            launched = const offset_of!(SwitchArea, launched),
            host_rsp_field = const host::RSP.encoding().0,
            host_rip_field = const host::RIP.encoding().0,
            rax = const offset_of!(SwitchArea, regs) + GuestRegisters::OFFSET_RAX,
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
            lateout("rax") flags,
            out("r12") _,
            out("r13") _,
            out("r14") _,
            out("r15") _,
            clobber_abi("C"),
        );
    }
    if flags == 0 {
        Switch::Exited
    } else {
        Switch::Failed {
            cf: flags & 1 != 0,
            zf: flags & (1 << 6) != 0,
        }
    }
}
