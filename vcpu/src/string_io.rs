//! Emulating INS and OUTS (with or without REP): the data moves between guest memory, reached
//! through the two-dimensional walker, and the caller's port handler.
//!
//! Manuals: Intel® 64 and IA-32 Architectures Software Developer's Manual, Combined Volumes, Order
//! Number 325462-086US, December 2024, Vol. 2B "INS/INSB/INSW/INSD—Input from Port to String",
//! "OUTS/OUTSB/OUTSW/OUTSD—Output String to Port", "REP/REPE/REPZ/REPNE/REPNZ—Repeat String
//! Operation Prefix" (RCX counts, RSI/RDI step by the size, down when RFLAGS.DF = 1; the
//! address size picks SI/ESI/RSI); Vol. 3A 3.4.2 "Segment Selectors" and 3.4.4 "Segment
//! Loading Instructions in IA-32e Mode" (only FS and GS bases apply in 64-bit mode); Vol. 3C
//! 28.2.5 "Information for VM Exits Due to Instruction Execution" (INS/OUTS instruction
//! information). AMD64 Architecture Programmer's Manual Volume 2: System Programming,
//! Publication No. 24593, Revision 3.42, March 2024, 15.10.2 "IN and OUT Behavior".
//!
//! One exit moves at most [`MAX_ELEMENTS`] elements: a longer REP leaves RCX, RSI/RDI updated
//! and RIP on the instruction, so the guest executes it again and exits again, as an
//! interrupted REP would.

use hvkit_paging::{
    Access, GuestPagingState, GuestVirtAddr, HostPhysAddr, PhysMemory, WalkFault, Walker,
};

use crate::exit::{IoDirection, IoExit};
use crate::regs::GuestRegisters;

/// The most elements one exit moves.
pub const MAX_ELEMENTS: u64 = 256;

/// Where a string I/O instruction's memory operand is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StringOperand {
    /// The segment base (DS or the override for OUTS, ES for INS; 0 in 64-bit mode except for
    /// FS and GS).
    pub segment_base: u64,
    /// The address size in bits: 16, 32 or 64.
    pub address_bits: u8,
    /// RFLAGS.DF: step downwards.
    pub direction_flag: bool,
    /// The guest's privilege level is 3 (user-mode page permissions apply).
    pub user: bool,
}

/// Why the emulation stopped short.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StringIoError {
    /// The exit is not INS/OUTS.
    #[error("not a string I/O exit")]
    NotStringIo,
    /// The guest's memory operand does not translate (a guest #PF, a nested fault, memory the
    /// platform does not map); the elements before it were moved.
    #[error("guest memory operand faulted: {0}")]
    Fault(WalkFault),
}

fn mask(bits: u8) -> u64 {
    match bits {
        16 => 0xffff,
        32 => 0xffff_ffff,
        _ => u64::MAX,
    }
}

fn translate<M: PhysMemory>(
    walker: &Walker<M>,
    paging: &GuestPagingState,
    linear: u64,
    write: bool,
    user: bool,
) -> Result<HostPhysAddr, StringIoError> {
    let mut access = if write {
        Access::write()
    } else {
        Access::read()
    };
    if user {
        access = access.as_user();
    }
    walker
        .translate(paging, GuestVirtAddr::new(linear), access)
        .map(|t| t.host_phys)
        .map_err(StringIoError::Fault)
}

fn read_byte<M: PhysMemory>(memory: &M, at: HostPhysAddr) -> Result<u8, StringIoError> {
    let word = HostPhysAddr::new_truncate(at.as_u64() & !7);
    let value = memory
        .read_u64(word)
        .map_err(|e| StringIoError::Fault(WalkFault::Memory(e)))?;
    Ok((value >> ((at.as_u64() & 7) * 8)) as u8)
}

fn write_byte<M: PhysMemory>(memory: &M, at: HostPhysAddr, byte: u8) -> Result<(), StringIoError> {
    let word = HostPhysAddr::new_truncate(at.as_u64() & !7);
    let shift = (at.as_u64() & 7) * 8;
    let old = memory
        .read_u64(word)
        .map_err(|e| StringIoError::Fault(WalkFault::Memory(e)))?;
    let new = (old & !(0xff << shift)) | (u64::from(byte) << shift);
    memory
        .write_u64(word, new)
        .map_err(|e| StringIoError::Fault(WalkFault::Memory(e)))
}

/// Emulates the INS/OUTS of `io`: for OUTS, `port` gets each element read from guest memory at
/// segment:RSI; for INS, `port` fills each element, which is written to ES:RDI. With REP, RCX
/// elements (at most [`MAX_ELEMENTS`] now). RSI/RDI and RCX are updated in `regs`. Returns true
/// when the instruction is complete (skip it), false when RCX is not exhausted yet (leave RIP:
/// the guest re-executes the REP).
///
/// # Errors
/// [`StringIoError`]: not INS/OUTS, or a memory operand that does not translate (the registers
/// reflect the elements moved before it).
pub fn emulate<M: PhysMemory>(
    io: &IoExit,
    operand: &StringOperand,
    regs: &mut GuestRegisters,
    walker: &Walker<M>,
    paging: &GuestPagingState,
    mut port: impl FnMut(u16, IoDirection, &mut [u8]),
) -> Result<bool, StringIoError> {
    if !io.string {
        return Err(StringIoError::NotStringIo);
    }
    let size = u64::from(io.size.clamp(1, 4));
    let amask = mask(operand.address_bits);
    let count = if io.rep { regs.rcx & amask } else { 1 };
    let now = count.min(MAX_ELEMENTS);
    let write_memory = io.direction == IoDirection::In;
    for _ in 0..now {
        let index = if write_memory { regs.rdi } else { regs.rsi };
        let offset = index & amask;
        let mut data = [0u8; 4];
        let element = &mut data[..size as usize];
        if write_memory {
            port(io.port, IoDirection::In, element);
        }
        for (i, byte) in element.iter_mut().enumerate() {
            let linear = operand
                .segment_base
                .wrapping_add(offset.wrapping_add(i as u64) & amask);
            let linear = if operand.address_bits == 64 {
                linear
            } else {
                linear & 0xffff_ffff
            };
            let at = translate(walker, paging, linear, write_memory, operand.user)?;
            if write_memory {
                write_byte(walker.memory(), at, *byte)?;
            } else {
                *byte = read_byte(walker.memory(), at)?;
            }
        }
        if !write_memory {
            port(io.port, IoDirection::Out, element);
        }
        let stepped = if operand.direction_flag {
            offset.wrapping_sub(size)
        } else {
            offset.wrapping_add(size)
        };
        let slot = if write_memory {
            &mut regs.rdi
        } else {
            &mut regs.rsi
        };
        *slot = (*slot & !amask) | (stepped & amask);
        if io.rep {
            regs.rcx = (regs.rcx & !amask) | (regs.rcx.wrapping_sub(1) & amask);
        }
    }
    Ok(!io.rep || regs.rcx & amask == 0)
}

#[cfg(test)]
mod tests {
    use std::vec::Vec;

    use hvkit_paging::Nested;

    use super::*;
    use crate::host::HostPlatform;
    use crate::platform::OwnedFrames;
    use crate::svm::PlatformMemory;

    fn io(direction: IoDirection, size: u8, rep: bool) -> IoExit {
        IoExit {
            port: 0x3f8,
            size,
            direction,
            string: true,
            rep,
            data: None,
        }
    }

    #[test]
    fn rep_outsb_and_insw_through_real_mode_memory() {
        let p = HostPlatform::new(4);
        let ram = OwnedFrames::allocate(&p, 1).unwrap();
        let walker = Walker::new(PlatformMemory(&p), Nested::None);
        let paging = GuestPagingState::real_mode();
        // Real mode: the segment base is the frame (an identity "guest" over host memory).
        let operand = StringOperand {
            segment_base: ram.phys().as_u64(),
            address_bits: 16,
            direction_flag: false,
            user: false,
        };
        let mut regs = GuestRegisters {
            rsi: 0x10,
            rdi: 0x100,
            rcx: 3,
            ..GuestRegisters::default()
        };
        // Put "abc" at DS:0x10 with INSB-like writes first: REP INSW of two words.
        let mut feed = [0x6261_u16, 0x0063].into_iter();
        regs.rdi = 0x10;
        regs.rcx = 2;
        let done = emulate(
            &io(IoDirection::In, 2, true),
            &operand,
            &mut regs,
            &walker,
            &paging,
            |_, _, bytes| bytes.copy_from_slice(&feed.next().unwrap().to_le_bytes()),
        )
        .unwrap();
        assert!(done);
        assert_eq!((regs.rdi, regs.rcx), (0x14, 0));
        // REP OUTSB of three bytes from DS:0x10.
        regs.rcx = 3;
        let mut out = Vec::new();
        let done = emulate(
            &io(IoDirection::Out, 1, true),
            &operand,
            &mut regs,
            &walker,
            &paging,
            |port, _, bytes| {
                assert_eq!(port, 0x3f8);
                out.extend_from_slice(bytes);
            },
        )
        .unwrap();
        assert!(done);
        assert_eq!(out, b"abc");
        assert_eq!((regs.rsi, regs.rcx), (0x13, 0));
        // DF = 1 steps down; a non-REP form moves one element and leaves RCX alone.
        let down = StringOperand {
            direction_flag: true,
            ..operand
        };
        regs.rsi = 0x12;
        regs.rcx = 99;
        out.clear();
        let done = emulate(
            &io(IoDirection::Out, 1, false),
            &down,
            &mut regs,
            &walker,
            &paging,
            |_, _, bytes| out.extend_from_slice(bytes),
        )
        .unwrap();
        assert!(done);
        assert_eq!((out.as_slice(), regs.rsi, regs.rcx), (&b"c"[..], 0x11, 99));
    }

    #[test]
    fn long_rep_is_split_and_faults_are_reported() {
        let p = HostPlatform::new(4);
        let ram = OwnedFrames::allocate(&p, 1).unwrap();
        let walker = Walker::new(PlatformMemory(&p), Nested::None);
        let paging = GuestPagingState::real_mode();
        let operand = StringOperand {
            segment_base: ram.phys().as_u64(),
            address_bits: 32,
            direction_flag: false,
            user: false,
        };
        let mut regs = GuestRegisters {
            rcx: 1000,
            ..GuestRegisters::default()
        };
        let mut n = 0;
        let done = emulate(
            &io(IoDirection::Out, 1, true),
            &operand,
            &mut regs,
            &walker,
            &paging,
            |_, _, _| n += 1,
        )
        .unwrap();
        assert!(!done);
        assert_eq!(
            (n, regs.rcx, regs.rsi),
            (MAX_ELEMENTS, 1000 - MAX_ELEMENTS, MAX_ELEMENTS)
        );
        // Memory the platform does not map: a fault, no panic.
        let outside = StringOperand {
            segment_base: 0x10_0000,
            ..operand
        };
        regs.rcx = 1;
        assert!(matches!(
            emulate(
                &io(IoDirection::In, 4, false),
                &outside,
                &mut regs,
                &walker,
                &paging,
                |_, _, _| {}
            ),
            Err(StringIoError::Fault(_))
        ));
        let not_string = IoExit {
            string: false,
            ..io(IoDirection::In, 1, false)
        };
        assert_eq!(
            emulate(
                &not_string,
                &operand,
                &mut regs,
                &walker,
                &paging,
                |_, _, _| {}
            ),
            Err(StringIoError::NotStringIo)
        );
    }
}
