//! Guest general-purpose registers that VMRUN does not save.
//!
//! Manual: AMD64 Architecture Programmer's Manual Volume 2: System Programming, Publication
//! No. 24593, Revision 3.42, March 2024 — Section 15.5.1 "Basic Operation" (VMRUN loads RAX, RSP
//! and RIP from the VMCB; the other GPRs keep whatever the host left in them) and Section 15.6
//! "#VMEXIT" (on exit they hold the guest's values).
//!
//! [`crate::instructions::vmrun`] loads these from a [`GuestRegisters`] before VMRUN and stores
//! them back after #VMEXIT. RAX and RSP live in the VMCB state save area.

/// The guest GPRs that the VMCB does not hold (everything but RAX and RSP).
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, Debug)]
pub struct GuestRegisters {
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
    /// Register `n` in instruction-encoding order (0 = RAX … 15 = R15), as decode assists report
    /// it; RAX (0) and RSP (4) are in the VMCB, so they return `None`, as does `n > 15`.
    #[must_use]
    pub fn get(&self, n: u8) -> Option<u64> {
        Some(match n {
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

    /// Writes register `n` (see [`GuestRegisters::get`]); returns `false` for RAX, RSP or
    /// `n > 15`, which it does not hold.
    pub fn set(&mut self, n: u8, value: u64) -> bool {
        let slot = match n {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_order() {
        let mut regs = GuestRegisters::default();
        assert!(regs.set(3, 0xB));
        assert!(regs.set(15, 0xF));
        assert!(!regs.set(0, 1));
        assert!(!regs.set(4, 1));
        assert!(!regs.set(16, 1));
        assert_eq!(regs.rbx, 0xB);
        assert_eq!(regs.get(15), Some(0xF));
        assert_eq!(regs.get(4), None);
    }
}
