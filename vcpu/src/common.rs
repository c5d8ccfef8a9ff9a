//! The exit handling that is the same on both vendors: exits whose operands are general-purpose
//! registers (CPUID, RDMSR/WRMSR, XSETBV, the hypercall, the data of OUT), the answers that
//! write those registers back (`complete_*`), and the architectural defaults both vendors give
//! the same way. [`crate::vmx::VmxCore`] and [`crate::svm::SvmCore`] implement [`ExitCore`]
//! and keep only what differs: reading the exit from the VMCS or VMCB, skipping the
//! instruction, control registers, events.
//!
//! Manuals: Intel® 64 and IA-32 Architectures Software Developer's Manual, Combined Volumes, Order
//! Number 325462-086US, December 2024, Vol. 2 instruction pages (CPUID: EAX/ECX in, EAX–EDX
//! out; RDMSR/WRMSR: ECX and EDX:EAX; XSETBV: ECX and EDX:EAX; IN/OUT: AL/AX/EAX) and Vol. 1
//! 13.3 "Enabling the XSAVE Feature Set and XSAVE-Enabled Features" (valid XCR0 values); AMD64
//! Architecture Programmer's Manual Volume 2: System Programming, Publication No. 24593,
//! Revision 3.42, March 2024, 15.9 "Instruction Intercepts" and 15.11 "MSR Intercepts" (the same
//! registers on the AMD side).

use raw_cpuid::CpuIdResult;

use crate::error::VcpuError;
use crate::event::Event;
use crate::exit::{ExitKind, IoDirection, IoExit};
use crate::hypercall::Hypercall;
use crate::regs::GuestRegisters;

/// The vendor core's side of the shared exit handling.
pub(crate) trait ExitCore {
    /// The kind of the last exit (`None` before the first exit and after the next entry).
    fn last_kind(&self) -> Option<ExitKind>;
    /// The guest GPRs.
    fn regs_mut(&mut self) -> &mut GuestRegisters;
    /// The guest's XCR0 and the XCR0 bits the host supports.
    fn xcr0_mut(&mut self) -> (&mut u64, u64);
    /// Moves RIP past the instruction that exited.
    fn skip_instruction(&mut self) -> Result<(), VcpuError>;
    /// Queues `event` for the next entry.
    fn inject(&mut self, event: Event);
}

/// The exits whose operands both vendors leave in the same general-purpose registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RegisterExit {
    /// CPUID: leaf in EAX, subleaf in ECX.
    Cpuid,
    /// VMCALL/VMMCALL: the hvkit ABI ([`Hypercall::from_registers`]).
    Hypercall,
    /// RDMSR: the MSR in ECX.
    MsrRead,
    /// WRMSR: the MSR in ECX, the value in EDX:EAX.
    MsrWrite,
    /// XSETBV: the XCR in ECX, the value in EDX:EAX.
    Xsetbv,
}

impl RegisterExit {
    /// The common exit, read from the guest's registers.
    pub(crate) const fn decode(self, r: &GuestRegisters) -> ExitKind {
        match self {
            Self::Cpuid => ExitKind::Cpuid {
                leaf: r.rax as u32,
                subleaf: r.rcx as u32,
            },
            Self::Hypercall => ExitKind::Hypercall(Hypercall::from_registers(r)),
            Self::MsrRead => ExitKind::MsrRead { msr: r.rcx as u32 },
            Self::MsrWrite => ExitKind::MsrWrite {
                msr: r.rcx as u32,
                value: edx_eax(r),
            },
            Self::Xsetbv => ExitKind::Xsetbv {
                xcr: r.rcx as u32,
                value: edx_eax(r),
            },
        }
    }
}

/// EDX:EAX as one 64-bit value.
const fn edx_eax(r: &GuestRegisters) -> u64 {
    (r.rdx << 32) | (r.rax & 0xffff_ffff)
}

/// The mask of an I/O access of `size` bytes (1, 2, else 4) in RAX.
const fn size_mask(size: u8) -> u64 {
    match size {
        1 => 0xff,
        2 => 0xffff,
        _ => 0xffff_ffff,
    }
}

/// An I/O exit; for OUT (not OUTS) the data is AL/AX/EAX masked to `size`.
pub(crate) fn io_exit(
    port: u16,
    size: u8,
    direction: IoDirection,
    string: bool,
    rep: bool,
    r: &GuestRegisters,
) -> ExitKind {
    let data = (direction == IoDirection::Out && !string).then(|| (r.rax & size_mask(size)) as u32);
    ExitKind::Io(IoExit {
        port,
        size,
        direction,
        string,
        rep,
        data,
    })
}

/// XCR0 rules (SDM Vol. 1 13.3 "Enabling the XSAVE Feature Set and XSAVE-Enabled Features"):
/// bit 0 set, only supported bits, AVX (bit 2) needs SSE (bit 1), the AVX-512 bits (7:5) all or
/// none and only with AVX, BNDREGS and BNDCSR (bits 4:3) together.
#[must_use]
pub fn xcr0_valid(value: u64, supported: u64) -> bool {
    value & 1 != 0
        && value & !supported == 0
        && !(value & 4 != 0 && value & 2 == 0)
        && matches!((value >> 5) & 7, 0 | 7)
        && ((value >> 5) & 7 == 0 || value & 4 != 0)
        && matches!((value >> 3) & 3, 0 | 3)
}

/// Writes a CPUID answer to EAX–EDX (the caller then skips the instruction).
pub(crate) fn set_cpuid_result(regs: &mut GuestRegisters, r: CpuIdResult) {
    regs.rax = u64::from(r.eax);
    regs.rbx = u64::from(r.ebx);
    regs.rcx = u64::from(r.ecx);
    regs.rdx = u64::from(r.edx);
}

/// Answers a hypercall: RAX = `result`, RIP moves on.
pub(crate) fn complete_hypercall(core: &mut impl ExitCore, result: u64) -> Result<(), VcpuError> {
    if !matches!(core.last_kind(), Some(ExitKind::Hypercall(_))) {
        return Err(VcpuError::WrongExit("a hypercall"));
    }
    core.regs_mut().rax = result;
    core.skip_instruction()
}

/// Answers an IN (not INS): the low `size` bytes of RAX get `value`; for OUT only RIP moves.
pub(crate) fn complete_io(core: &mut impl ExitCore, value: u32) -> Result<(), VcpuError> {
    let Some(ExitKind::Io(io)) = core.last_kind() else {
        return Err(VcpuError::WrongExit("IN or OUT"));
    };
    if io.string {
        return Err(VcpuError::WrongExit("IN or OUT (not INS/OUTS)"));
    }
    if io.direction == IoDirection::In {
        let mask = size_mask(io.size);
        let regs = core.regs_mut();
        regs.rax = (regs.rax & !mask) | (u64::from(value) & mask);
    }
    core.skip_instruction()
}

/// Answers RDMSR with `value` (EDX:EAX), or WRMSR (the value is ignored), and moves RIP on.
pub(crate) fn complete_msr(core: &mut impl ExitCore, value: u64) -> Result<(), VcpuError> {
    match core.last_kind() {
        Some(ExitKind::MsrRead { .. }) => {
            let regs = core.regs_mut();
            regs.rax = value & 0xffff_ffff;
            regs.rdx = value >> 32;
        }
        Some(ExitKind::MsrWrite { .. }) => {}
        _ => return Err(VcpuError::WrongExit("RDMSR or WRMSR")),
    }
    core.skip_instruction()
}

/// The defaults both vendors give `kind` the same way: hvkit's built-in hypercalls, XSETBV
/// (checked against the host's XCR0 bits, else #GP), #UD for virtualization instructions, #GP
/// for intercepted MSRs, nothing for window exits. Returns whether it handled the exit (false for
/// user hypercalls and every other kind, which the vendor handles or leaves to the caller).
pub(crate) fn handle_shared(core: &mut impl ExitCore, kind: ExitKind) -> Result<bool, VcpuError> {
    match kind {
        ExitKind::Hypercall(call) => match call.builtin_result() {
            Some(result) => complete_hypercall(core, result)?,
            None => return Ok(false),
        },
        ExitKind::Xsetbv { xcr, value } => {
            let (xcr0, supported) = core.xcr0_mut();
            if xcr == 0 && xcr0_valid(value, supported) {
                *xcr0 = value;
                core.skip_instruction()?;
            } else {
                core.inject(Event::GP0);
            }
        }
        ExitKind::VirtualizationInstruction => core.inject(Event::UD),
        ExitKind::MsrRead { .. } | ExitKind::MsrWrite { .. } => core.inject(Event::GP0),
        ExitKind::InterruptWindow | ExitKind::NmiWindow => {}
        _ => return Ok(false),
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_exits_and_io_data() {
        let r = GuestRegisters {
            rax: 0xdead_beef_1234_5678,
            rcx: 0xffff_ffff_c000_0080,
            rdx: 0x0000_0000_0000_0001,
            ..GuestRegisters::default()
        };
        assert_eq!(
            RegisterExit::MsrWrite.decode(&r),
            ExitKind::MsrWrite {
                msr: 0xc000_0080,
                value: 0x1_1234_5678
            }
        );
        assert_eq!(
            RegisterExit::Cpuid.decode(&r),
            ExitKind::Cpuid {
                leaf: 0x1234_5678,
                subleaf: 0xc000_0080
            }
        );
        let ExitKind::Io(io) = io_exit(0x80, 2, IoDirection::Out, false, false, &r) else {
            unreachable!()
        };
        assert_eq!(io.data, Some(0x5678));
        let ExitKind::Io(io) = io_exit(0x80, 4, IoDirection::Out, true, true, &r) else {
            unreachable!()
        };
        assert_eq!(io.data, None);
        let ExitKind::Io(io) = io_exit(0x80, 1, IoDirection::In, false, false, &r) else {
            unreachable!()
        };
        assert_eq!(io.data, None);
    }
}
