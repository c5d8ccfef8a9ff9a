//! Decoding the guest instruction at RIP with `iced-x86`: its length (to skip it on CPUs without
//! NRIP save), the GPR of a MOV to/from CR (without decode assists) and the memory operand of
//! INVLPG.
//!
//! Manual: AMD64 Architecture Programmer's Manual Volume 2: System Programming, Publication No.
//! 24593, Revision 3.42, March 2024, 15.7.1 "State Saved on Exit" (nRIP is saved only with the
//! NRIP save feature, CPUID Fn8000_000A EDX\[3\]), 15.8 "Decode Assists" (what the processor
//! reports for CR accesses and INVLPG when it has them); Volume 3 (Publication No. 24594) for the
//! instruction encodings.
//!
//! `iced-x86` is used with `default-features = false, features = ["no_std", "decoder"]`: no
//! formatter, encoder or instruction-info tables. It builds its decoder tables on the heap on
//! first use, so a `no_std` binary that enables this crate's `decoder` feature needs a global
//! allocator.

use iced_x86::{Decoder, DecoderOptions, Instruction, Mnemonic, OpKind, Register};

/// The memory operand of an instruction: `segment base + base + index × scale + displacement`,
/// truncated to the address size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryOperand {
    /// The base GPR (encoding number; 4 is RSP).
    pub base: Option<u8>,
    /// The index GPR (encoding number).
    pub index: Option<u8>,
    /// The scale (1, 2, 4 or 8).
    pub scale: u8,
    /// The displacement (sign-extended; for RIP-relative operands, the absolute target).
    pub displacement: u64,
    /// RIP-relative: `displacement` already is the address.
    pub rip_relative: bool,
    /// The address size in bits (16, 32 or 64).
    pub address_bits: u32,
    /// The segment register (0 = ES, 1 = CS, 2 = SS, 3 = DS, 4 = FS, 5 = GS).
    pub segment: u8,
}

impl MemoryOperand {
    /// The linear address, given the GPRs (`gpr(n)` for encoding number `n`, RSP included) and
    /// the base of the segment.
    #[must_use]
    pub fn linear(&self, gpr: impl Fn(u8) -> u64, segment_base: u64) -> u64 {
        let offset = if self.rip_relative {
            self.displacement
        } else {
            let base = self.base.map_or(0, &gpr);
            let index = self.index.map_or(0, &gpr);
            base.wrapping_add(index.wrapping_mul(u64::from(self.scale)))
                .wrapping_add(self.displacement)
        };
        let offset = match self.address_bits {
            16 => offset & 0xffff,
            32 => offset & 0xffff_ffff,
            _ => offset,
        };
        segment_base.wrapping_add(offset)
    }
}

/// What a decoded instruction tells the exit path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decoded {
    /// The length in bytes (1–15).
    pub len: u8,
    /// What kind of instruction, as far as the exit path cares.
    pub kind: DecodedKind,
}

/// The instructions the exit path looks into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodedKind {
    /// MOV to CRn from a GPR.
    MovToCr {
        /// The control register.
        cr: u8,
        /// The source GPR's encoding number.
        gpr: u8,
    },
    /// MOV from CRn to a GPR.
    MovFromCr {
        /// The control register.
        cr: u8,
        /// The destination GPR's encoding number.
        gpr: u8,
    },
    /// LMSW from a GPR (`Some`) or memory (`None`).
    Lmsw {
        /// The source GPR's encoding number.
        gpr: Option<u8>,
    },
    /// SMSW to a GPR (`Some`) or memory (`None`).
    Smsw {
        /// The destination GPR's encoding number.
        gpr: Option<u8>,
    },
    /// CLTS.
    Clts,
    /// INVLPG of a memory operand.
    Invlpg(MemoryOperand),
    /// Anything else.
    Other,
}

/// Why the bytes did not decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the {len} byte(s) at RIP do not decode to an instruction")]
pub struct DecodeError {
    /// How many bytes were available.
    pub len: usize,
}

/// The encoding number (0 = RAX … 15 = R15) of a 16-, 32- or 64-bit GPR.
#[must_use]
pub fn gpr_number(reg: Register) -> Option<u8> {
    let v = reg as u32;
    for first in [Register::AX, Register::EAX, Register::RAX] {
        let first = first as u32;
        if (first..first + 16).contains(&v) {
            return u8::try_from(v - first).ok();
        }
    }
    None
}

fn cr_number(reg: Register) -> Option<u8> {
    let (v, first) = (reg as u32, Register::CR0 as u32);
    (first..first + 16)
        .contains(&v)
        .then(|| u8::try_from(v - first).ok())
        .flatten()
}

fn segment_number(reg: Register) -> u8 {
    match reg {
        Register::ES => 0,
        Register::CS => 1,
        Register::SS => 2,
        Register::FS => 4,
        Register::GS => 5,
        _ => 3,
    }
}

fn memory_operand(insn: &Instruction, bitness: u32) -> MemoryOperand {
    let rip_relative = insn.is_ip_rel_memory_operand();
    let address_bits = match insn.memory_base() {
        Register::EIP => 32,
        Register::RIP => 64,
        base => match gpr_width(base).or_else(|| gpr_width(insn.memory_index())) {
            Some(bits) => bits,
            None => bitness,
        },
    };
    MemoryOperand {
        base: gpr_number(insn.memory_base()),
        index: gpr_number(insn.memory_index()),
        scale: u8::try_from(insn.memory_index_scale()).unwrap_or(1),
        displacement: if rip_relative {
            insn.ip_rel_memory_address()
        } else {
            insn.memory_displacement64()
        },
        rip_relative,
        address_bits,
        segment: segment_number(insn.memory_segment()),
    }
}

fn gpr_width(reg: Register) -> Option<u32> {
    let v = reg as u32;
    [(Register::AX, 16), (Register::EAX, 32), (Register::RAX, 64)]
        .into_iter()
        .find(|(first, _)| (*first as u32..*first as u32 + 16).contains(&v))
        .map(|(_, bits)| bits)
}

/// Decodes the instruction in `bytes` (fetched at `rip`) for a code segment of `bitness` (16,
/// 32 or 64) bits.
///
/// # Errors
/// [`DecodeError`] when the bytes are not a whole valid instruction.
pub fn decode(bytes: &[u8], bitness: u32, rip: u64) -> Result<Decoded, DecodeError> {
    let bad = DecodeError { len: bytes.len() };
    let mut decoder =
        Decoder::try_with_ip(bitness, bytes, rip, DecoderOptions::NONE).map_err(|_| bad)?;
    let insn = decoder.decode();
    if insn.is_invalid() {
        return Err(bad);
    }
    let len = u8::try_from(insn.len()).map_err(|_| bad)?;
    let reg = |n: u32| (insn.op_kind(n) == OpKind::Register).then(|| insn.op_register(n));
    let kind = match insn.mnemonic() {
        Mnemonic::Mov => match (reg(0), reg(1)) {
            (Some(a), Some(b)) => {
                match (cr_number(a), cr_number(b), gpr_number(a), gpr_number(b)) {
                    (Some(cr), _, _, Some(gpr)) => DecodedKind::MovToCr { cr, gpr },
                    (_, Some(cr), Some(gpr), _) => DecodedKind::MovFromCr { cr, gpr },
                    _ => DecodedKind::Other,
                }
            }
            _ => DecodedKind::Other,
        },
        Mnemonic::Lmsw => DecodedKind::Lmsw {
            gpr: reg(0).and_then(gpr_number),
        },
        Mnemonic::Smsw => DecodedKind::Smsw {
            gpr: reg(0).and_then(gpr_number),
        },
        Mnemonic::Clts => DecodedKind::Clts,
        Mnemonic::Invlpg if insn.op_kind(0) == OpKind::Memory => {
            DecodedKind::Invlpg(memory_operand(&insn, bitness))
        }
        _ => DecodedKind::Other,
    };
    Ok(Decoded { len, kind })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_of_intercepted_instructions() {
        let cases: &[(&[u8], u32, u8)] = &[
            (&[0x0f, 0xa2], 64, 2),                   // CPUID
            (&[0xf4], 32, 1),                         // HLT
            (&[0x0f, 0x01, 0xd9], 64, 3),             // VMMCALL
            (&[0x0f, 0x32], 16, 2),                   // RDMSR
            (&[0x0f, 0x01, 0xd1], 64, 3),             // XSETBV
            (&[0x66, 0x2e, 0x0f, 0xa2, 0x90], 64, 4), // prefixes count
        ];
        for &(bytes, bits, len) in cases {
            assert_eq!(decode(bytes, bits, 0x1000).unwrap().len, len, "{bytes:x?}");
        }
        assert_eq!(decode(&[0x0f], 64, 0), Err(DecodeError { len: 1 }));
        assert!(
            decode(&[0x0f, 0x0b], 64, 0).is_ok(),
            "UD2 is a valid instruction"
        );
    }

    #[test]
    fn cr_moves_and_invlpg() {
        // mov cr4, r9 (44 0f 22 e1 with REX.R? no: 41 0f 22 e1 = mov cr4, r9).
        let d = decode(&[0x41, 0x0f, 0x22, 0xe1], 64, 0).unwrap();
        assert_eq!(d.kind, DecodedKind::MovToCr { cr: 4, gpr: 9 });
        // mov rbx, cr0.
        let d = decode(&[0x0f, 0x20, 0xc3], 64, 0).unwrap();
        assert_eq!(d.kind, DecodedKind::MovFromCr { cr: 0, gpr: 3 });
        // mov cr3, eax in 32-bit code.
        let d = decode(&[0x0f, 0x22, 0xd8], 32, 0).unwrap();
        assert_eq!(d.kind, DecodedKind::MovToCr { cr: 3, gpr: 0 });
        assert_eq!(
            decode(&[0x0f, 0x06], 64, 0).unwrap().kind,
            DecodedKind::Clts
        );
        // lmsw ax.
        let d = decode(&[0x0f, 0x01, 0xf0], 64, 0).unwrap();
        assert_eq!(d.kind, DecodedKind::Lmsw { gpr: Some(0) });
        // invlpg [rax + rcx*4 + 0x10].
        let d = decode(&[0x0f, 0x01, 0x7c, 0x88, 0x10], 64, 0).unwrap();
        let DecodedKind::Invlpg(m) = d.kind else {
            panic!("{d:?}");
        };
        assert_eq!(
            (m.base, m.index, m.scale, m.displacement),
            (Some(0), Some(1), 4, 0x10)
        );
        let regs = |n: u8| [0x1000u64, 0x20][usize::from(n)];
        assert_eq!(m.linear(regs, 0), 0x1000 + 0x80 + 0x10);
        // invlpg [rip + 0x100] at 0x5000 (7 bytes long).
        let d = decode(&[0x0f, 0x01, 0x3d, 0x00, 0x01, 0x00, 0x00], 64, 0x5000).unwrap();
        let DecodedKind::Invlpg(m) = d.kind else {
            panic!("{d:?}");
        };
        assert!(m.rip_relative);
        assert_eq!(m.linear(|_| 0, 0), 0x5107);
    }
}
