//! The hvkit hypercall ABI (paravirtualization) and its guest side.
//!
//! Manuals: Intel® 64 and IA-32 Architectures Software Developer's Manual, Combined Volumes, Order
//! Number 325462-086US, December 2024, Vol. 3C 31.3 "VMCALL—Call to VM Monitor" and 26.1.2
//! "Instructions That Cause VM Exits Unconditionally"; AMD64 Architecture Programmer's Manual
//! Volume 2: System Programming, Publication No. 24593, Revision 3.42, March 2024, 15.18
//! "VMMCALL Instruction" (an intercepted VMMCALL exits; otherwise #UD).
//!
//! # The ABI
//! | register | in | out |
//! |---|---|---|
//! | RAX | hypercall number | result |
//! | RBX, RCX, RDX, RSI | arguments 0–3 | preserved |
//!
//! The instruction is VMCALL on Intel and VMMCALL on AMD. A guest finds hvkit with CPUID leaf
//! [`LEAF_SIGNATURE`] (`0x4000_0000`): EBX, ECX, EDX spell [`SIGNATURE`] (`"hvkitHVKIThv"`) and EAX
//! is the highest hvkit leaf; leaf [`LEAF_INTERFACE`] (`0x4000_0001`) gives the ABI version in EAX
//! and the instruction to use in EBX ([`INSTRUCTION_VMCALL`] or [`INSTRUCTION_VMMCALL`]).
//!
//! Numbers below [`FIRST_USER`] are hvkit's own ([`PING`]); the rest are the embedding
//! hypervisor's. The host answers an unknown number with [`UNKNOWN`].
//!
//! On the host side the exit is [`crate::ExitKind::Hypercall`] carrying a [`Hypercall`]; answer it
//! with [`crate::Vcpu::complete_hypercall`], which sets RAX and moves past the instruction.

#[cfg(target_arch = "x86_64")]
pub mod guest;

/// CPUID leaf with the hvkit signature and the highest hvkit leaf (Intel and AMD reserve
/// 0x4000_0000–0x4000_00FF for hypervisors: SDM Vol. 2A CPUID, "Hypervisor" leaves; APM Vol. 3
/// Appendix E.1).
pub const LEAF_SIGNATURE: u32 = 0x4000_0000;
/// CPUID leaf with the ABI version (EAX) and the hypercall instruction (EBX).
pub const LEAF_INTERFACE: u32 = 0x4000_0001;
/// The signature in EBX, ECX, EDX of leaf [`LEAF_SIGNATURE`].
pub const SIGNATURE: &[u8; 12] = b"hvkitHVKIThv";
/// The ABI version reported in leaf [`LEAF_INTERFACE`] EAX.
pub const ABI_VERSION: u32 = 1;
/// EBX of leaf [`LEAF_INTERFACE`]: use VMCALL.
pub const INSTRUCTION_VMCALL: u32 = 1;
/// EBX of leaf [`LEAF_INTERFACE`]: use VMMCALL.
pub const INSTRUCTION_VMMCALL: u32 = 2;

/// Hypercall 0: returns [`PING_REPLY`] plus argument 0.
pub const PING: u64 = 0;
/// The base of [`PING`]'s reply.
pub const PING_REPLY: u64 = 0x6876_6b69_7400_0000;
/// The first hypercall number left to the embedding hypervisor.
pub const FIRST_USER: u64 = 0x100;
/// The result for a hypercall number the host does not know.
pub const UNKNOWN: u64 = u64::MAX;

/// The signature as the three CPUID registers (EBX, ECX, EDX), little-endian.
#[must_use]
pub const fn signature_registers() -> [u32; 3] {
    let s = SIGNATURE;
    [
        u32::from_le_bytes([s[0], s[1], s[2], s[3]]),
        u32::from_le_bytes([s[4], s[5], s[6], s[7]]),
        u32::from_le_bytes([s[8], s[9], s[10], s[11]]),
    ]
}

/// A hypercall as the host sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Hypercall {
    /// RAX.
    pub number: u64,
    /// RBX, RCX, RDX, RSI.
    pub args: [u64; 4],
}

impl Hypercall {
    /// The hypercall in `regs`.
    #[must_use]
    pub const fn from_registers(regs: &crate::GuestRegisters) -> Self {
        Self {
            number: regs.rax,
            args: [regs.rbx, regs.rcx, regs.rdx, regs.rsi],
        }
    }

    /// The result hvkit itself gives: [`PING`] answers, any other number below
    /// [`FIRST_USER`] gets [`UNKNOWN`]; `None` for user numbers (the embedder decides).
    #[must_use]
    pub const fn builtin_result(&self) -> Option<u64> {
        match self.number {
            PING => Some(PING_REPLY.wrapping_add(self.args[0])),
            n if n < FIRST_USER => Some(UNKNOWN),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_and_builtins() {
        let [b, c, d] = signature_registers();
        let mut bytes = [0u8; 12];
        bytes[0..4].copy_from_slice(&b.to_le_bytes());
        bytes[4..8].copy_from_slice(&c.to_le_bytes());
        bytes[8..12].copy_from_slice(&d.to_le_bytes());
        assert_eq!(&bytes, SIGNATURE);
        let regs = crate::GuestRegisters {
            rax: PING,
            rbx: 5,
            rcx: 6,
            rdx: 7,
            rsi: 8,
            ..Default::default()
        };
        let call = Hypercall::from_registers(&regs);
        assert_eq!(call.args, [5, 6, 7, 8]);
        assert_eq!(call.builtin_result(), Some(PING_REPLY + 5));
        assert_eq!(
            Hypercall {
                number: 3,
                args: [0; 4]
            }
            .builtin_result(),
            Some(UNKNOWN)
        );
        assert_eq!(
            Hypercall {
                number: FIRST_USER,
                args: [0; 4]
            }
            .builtin_result(),
            None
        );
    }
}
