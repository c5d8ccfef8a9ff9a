//! The guest's general-purpose registers, as the world switch saves and restores them.
//!
//! Manuals: Intel® 64 and IA-32 Architectures Software Developer's Manual, Combined Volumes, Order
//! Number 325462-086US, December 2024, Vol. 3C 25.4.1 "Guest Register State" (RSP, RIP and RFLAGS
//! are in the VMCS; the other GPRs are not saved by VM exits); AMD64 Architecture Programmer's
//! Manual Volume 2: System Programming, Publication No. 24593, Revision 3.42, March 2024, 15.5.1
//! "Basic Operation" (VMRUN loads RAX, RSP and RIP from the VMCB).
//!
//! [`GuestRegisters`] is `#[repr(C)]`; the world-switch assembly reaches its fields through the
//! `OFFSET_*` constants, which are `offset_of!` values, never hand-written numbers. RSP is not
//! here: both vendors keep it in the VMCS/VMCB, and the vCPU reads it lazily.
//!
//! This is hvkit's one general register file, with the accessors by instruction-encoding number.
//! `hvkit_svm::regs::VmrunGprs` is only the save area of `hvkit_svm::instructions::vmrun`: it
//! leaves out RAX as well, because VMRUN loads and #VMEXIT stores RAX in the VMCB (APM 15.5.1),
//! whereas VMX saves no GPR but RSP, so this type carries RAX and the SVM backend copies it to
//! and from the VMCB around each VMRUN.

use core::mem::offset_of;

/// The guest GPRs that the world switch saves on exit and restores on entry (all but RSP).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct GuestRegisters {
    /// RAX.
    pub rax: u64,
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

impl GuestRegisters {
    /// Offset of [`rax`](Self::rax), for the world switch.
    pub const OFFSET_RAX: usize = offset_of!(Self, rax);
    /// Offset of [`rbx`](Self::rbx).
    pub const OFFSET_RBX: usize = offset_of!(Self, rbx);
    /// Offset of [`rcx`](Self::rcx).
    pub const OFFSET_RCX: usize = offset_of!(Self, rcx);
    /// Offset of [`rdx`](Self::rdx).
    pub const OFFSET_RDX: usize = offset_of!(Self, rdx);
    /// Offset of [`rsi`](Self::rsi).
    pub const OFFSET_RSI: usize = offset_of!(Self, rsi);
    /// Offset of [`rdi`](Self::rdi).
    pub const OFFSET_RDI: usize = offset_of!(Self, rdi);
    /// Offset of [`rbp`](Self::rbp).
    pub const OFFSET_RBP: usize = offset_of!(Self, rbp);
    /// Offset of [`r8`](Self::r8).
    pub const OFFSET_R8: usize = offset_of!(Self, r8);
    /// Offset of [`r9`](Self::r9).
    pub const OFFSET_R9: usize = offset_of!(Self, r9);
    /// Offset of [`r10`](Self::r10).
    pub const OFFSET_R10: usize = offset_of!(Self, r10);
    /// Offset of [`r11`](Self::r11).
    pub const OFFSET_R11: usize = offset_of!(Self, r11);
    /// Offset of [`r12`](Self::r12).
    pub const OFFSET_R12: usize = offset_of!(Self, r12);
    /// Offset of [`r13`](Self::r13).
    pub const OFFSET_R13: usize = offset_of!(Self, r13);
    /// Offset of [`r14`](Self::r14).
    pub const OFFSET_R14: usize = offset_of!(Self, r14);
    /// Offset of [`r15`](Self::r15).
    pub const OFFSET_R15: usize = offset_of!(Self, r15);

    /// The register with instruction-encoding number `n` (0 = RAX, 1 = RCX, 2 = RDX, 3 = RBX,
    /// 5 = RBP, 6 = RSI, 7 = RDI, 8–15 = R8–R15), as exit qualifications name them. RSP (4) is
    /// not here, and `n > 15` does not exist: both give `None`.
    #[must_use]
    pub const fn get(&self, n: u8) -> Option<u64> {
        Some(match n {
            0 => self.rax,
            1 => self.rcx,
            2 => self.rdx,
            3 => self.rbx,
            5 => self.rbp,
            6 => self.rsi,
            7 => self.rdi,
            8 => self.r8,
            9 => self.r9,
            10 => self.r10,
            11 => self.r11,
            12 => self.r12,
            13 => self.r13,
            14 => self.r14,
            15 => self.r15,
            _ => return None,
        })
    }

    /// Sets the register with encoding number `n` (see [`get`](Self::get)); returns false (and
    /// changes nothing) for RSP (4) and `n > 15`.
    pub const fn set(&mut self, n: u8, value: u64) -> bool {
        let slot = match n {
            0 => &mut self.rax,
            1 => &mut self.rcx,
            2 => &mut self.rdx,
            3 => &mut self.rbx,
            5 => &mut self.rbp,
            6 => &mut self.rsi,
            7 => &mut self.rdi,
            8 => &mut self.r8,
            9 => &mut self.r9,
            10 => &mut self.r10,
            11 => &mut self.r11,
            12 => &mut self.r12,
            13 => &mut self.r13,
            14 => &mut self.r14,
            15 => &mut self.r15,
            _ => return false,
        };
        *slot = value;
        true
    }
}

const _: () = assert!(size_of::<GuestRegisters>() == 15 * 8);
const _: () = assert!(GuestRegisters::OFFSET_RAX == 0 && GuestRegisters::OFFSET_R15 == 14 * 8);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_numbers_round_trip() {
        let mut r = GuestRegisters::default();
        for n in 0..16u8 {
            assert_eq!(r.set(n, u64::from(n) + 100), n != 4);
        }
        assert!(!r.set(16, 1));
        assert_eq!(r.get(4), None);
        assert_eq!(r.get(16), None);
        assert_eq!((r.rax, r.rcx, r.rdx, r.rbx), (100, 101, 102, 103));
        assert_eq!(
            (r.rbp, r.rsi, r.rdi, r.r8, r.r15),
            (105, 106, 107, 108, 115)
        );
        for n in (0..16u8).filter(|&n| n != 4) {
            assert_eq!(r.get(n), Some(u64::from(n) + 100));
        }
    }
}
