//! The guest general-purpose registers that VMRUN does not switch.
//!
//! Manual: AMD64 Architecture Programmer's Manual Volume 2: System Programming, Publication
//! No. 24593, Revision 3.42, March 2024 — Section 15.5.1 "Basic Operation" (VMRUN loads RAX, RSP
//! and RIP from the VMCB; the other GPRs keep whatever the host left in them) and Section 15.6
//! "#VMEXIT" (on exit they hold the guest's values).
//!
//! [`crate::instructions::vmrun`] loads these from a [`VmrunGprs`] before VMRUN and stores them
//! back after #VMEXIT. RAX and RSP live in the VMCB state save area
//! ([`crate::vmcb::StateSaveArea::rax`], [`crate::vmcb::StateSaveArea::rsp`]).
//!
//! This is a save area for that one wrapper, not a general register file: a vendor-neutral
//! `GuestRegisters` with RAX (which VMX does not save either) and the accessors by instruction
//! encoding number (as exit information and decode assists name registers) is hvkit-vcpu's,
//! whose world switches use it.

/// The guest GPRs that the VMCB does not hold (everything but RAX and RSP), in the order
/// [`crate::instructions::vmrun`] reaches them by `offset_of!`.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, Debug)]
pub struct VmrunGprs {
    /// RBX.
    pub rbx: u64,
    /// RCX.
    pub rcx: u64,
    /// RDX.
    pub rdx: u64,
    /// RSI.
    pub rsi: u64,
    /// RDI.
    pub rdi: u64,
    /// RBP.
    pub rbp: u64,
    /// R8.
    pub r8: u64,
    /// R9.
    pub r9: u64,
    /// R10.
    pub r10: u64,
    /// R11.
    pub r11: u64,
    /// R12.
    pub r12: u64,
    /// R13.
    pub r13: u64,
    /// R14.
    pub r14: u64,
    /// R15.
    pub r15: u64,
}

const _: () = assert!(size_of::<VmrunGprs>() == 14 * 8);
