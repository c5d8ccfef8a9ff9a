//! Intercept vectors of the VMCB control area.
//!
//! Manual: AMD64 Architecture Programmer's Manual Volume 2: System Programming, Publication
//! No. 24593, Revision 3.42, March 2024 — Appendix B "Layout of VMCB", Table B-1 "VMCB Layout,
//! Control Area" (offsets 000h–014h), and Section 15.7 "Intercept Operation" / 15.8–15.14 for
//! what each intercept does.
//!
//! The six 32-bit words at offsets 000h, 004h, 008h, 00Ch, 010h and 014h are called vectors 0–5
//! in Table B-1. Each is a `bitflags` type here; every bit the APM defines has its own flag, and
//! `from_bits_retain` keeps bits a newer CPU defines.

use bitflags::bitflags;

bitflags! {
    /// Vector 0 (offset 000h): intercept reads (bits 15:0) and writes (bits 31:16) of CR0–CR15.
    ///
    /// APM Table B-1 "VMCB Layout, Control Area", offset 000h; Section 15.9 "Instruction
    /// Intercepts" (CR reads and writes). Use [`CrIntercepts::read`] / [`CrIntercepts::write`] for a
    /// computed register number.
    #[repr(transparent)]
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct CrIntercepts: u32 {
        /// Intercept reads of CR0.
        const CR0_READ = 1 << 0;
        /// Intercept reads of CR2.
        const CR2_READ = 1 << 2;
        /// Intercept reads of CR3.
        const CR3_READ = 1 << 3;
        /// Intercept reads of CR4.
        const CR4_READ = 1 << 4;
        /// Intercept reads of CR8 (the TPR).
        const CR8_READ = 1 << 8;
        /// Intercept writes of CR0 (all writes; see also the selective CR0 write intercept).
        const CR0_WRITE = 1 << 16;
        /// Intercept writes of CR2.
        const CR2_WRITE = 1 << 18;
        /// Intercept writes of CR3.
        const CR3_WRITE = 1 << 19;
        /// Intercept writes of CR4.
        const CR4_WRITE = 1 << 20;
        /// Intercept writes of CR8 (the TPR).
        const CR8_WRITE = 1 << 24;
        // Bits for CR1, CR5–CR7, CR9–CR15 are architecturally present in the vector but the
        // registers do not exist; `read`/`write` reach them.
        const _ = !0;
    }
}

impl CrIntercepts {
    /// The read-intercept bit of control register `cr` (0–15), or `None` for `cr > 15`.
    #[must_use]
    pub const fn read(cr: u8) -> Option<Self> {
        if cr < 16 {
            Some(Self::from_bits_retain(1 << cr))
        } else {
            None
        }
    }

    /// The write-intercept bit of control register `cr` (0–15), or `None` for `cr > 15`.
    #[must_use]
    pub const fn write(cr: u8) -> Option<Self> {
        if cr < 16 {
            Some(Self::from_bits_retain(1 << (16 + cr)))
        } else {
            None
        }
    }
}

bitflags! {
    /// Vector 1 (offset 004h): intercept reads (bits 15:0) and writes (bits 31:16) of DR0–DR15.
    ///
    /// APM Table B-1, offset 004h; Section 15.9 "Instruction Intercepts" (debug registers).
    #[repr(transparent)]
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct DrIntercepts: u32 {
        /// Intercept reads of DR0.
        const DR0_READ = 1 << 0;
        /// Intercept reads of DR1.
        const DR1_READ = 1 << 1;
        /// Intercept reads of DR2.
        const DR2_READ = 1 << 2;
        /// Intercept reads of DR3.
        const DR3_READ = 1 << 3;
        /// Intercept reads of DR4 (aliases DR6 when CR4.DE = 0).
        const DR4_READ = 1 << 4;
        /// Intercept reads of DR5 (aliases DR7 when CR4.DE = 0).
        const DR5_READ = 1 << 5;
        /// Intercept reads of DR6.
        const DR6_READ = 1 << 6;
        /// Intercept reads of DR7.
        const DR7_READ = 1 << 7;
        /// Intercept writes of DR0.
        const DR0_WRITE = 1 << 16;
        /// Intercept writes of DR1.
        const DR1_WRITE = 1 << 17;
        /// Intercept writes of DR2.
        const DR2_WRITE = 1 << 18;
        /// Intercept writes of DR3.
        const DR3_WRITE = 1 << 19;
        /// Intercept writes of DR4.
        const DR4_WRITE = 1 << 20;
        /// Intercept writes of DR5.
        const DR5_WRITE = 1 << 21;
        /// Intercept writes of DR6.
        const DR6_WRITE = 1 << 22;
        /// Intercept writes of DR7.
        const DR7_WRITE = 1 << 23;
        const _ = !0;
    }
}

impl DrIntercepts {
    /// The read-intercept bit of debug register `dr` (0–15), or `None` for `dr > 15`.
    #[must_use]
    pub const fn read(dr: u8) -> Option<Self> {
        if dr < 16 {
            Some(Self::from_bits_retain(1 << dr))
        } else {
            None
        }
    }

    /// The write-intercept bit of debug register `dr` (0–15), or `None` for `dr > 15`.
    #[must_use]
    pub const fn write(dr: u8) -> Option<Self> {
        if dr < 16 {
            Some(Self::from_bits_retain(1 << (16 + dr)))
        } else {
            None
        }
    }
}

bitflags! {
    /// Vector 2 (offset 008h): intercept exception vectors 0–31 (bit *n* = vector *n*).
    ///
    /// APM Table B-1, offset 008h; Section 15.12 "Exception Intercepts".
    #[repr(transparent)]
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct ExceptionIntercepts: u32 {
        /// #DE, divide error (vector 0).
        const DE = 1 << 0;
        /// #DB, debug (vector 1).
        const DB = 1 << 1;
        /// NMI vector (2); intercepting it has no effect, NMIs use the NMI intercept.
        const NMI = 1 << 2;
        /// #BP, breakpoint (vector 3).
        const BP = 1 << 3;
        /// #OF, overflow (vector 4).
        const OF = 1 << 4;
        /// #BR, bound range (vector 5).
        const BR = 1 << 5;
        /// #UD, invalid opcode (vector 6).
        const UD = 1 << 6;
        /// #NM, device not available (vector 7).
        const NM = 1 << 7;
        /// #DF, double fault (vector 8).
        const DF = 1 << 8;
        /// #TS, invalid TSS (vector 10).
        const TS = 1 << 10;
        /// #NP, segment not present (vector 11).
        const NP = 1 << 11;
        /// #SS, stack fault (vector 12).
        const SS = 1 << 12;
        /// #GP, general protection (vector 13).
        const GP = 1 << 13;
        /// #PF, page fault (vector 14).
        const PF = 1 << 14;
        /// #MF, x87 floating-point (vector 16).
        const MF = 1 << 16;
        /// #AC, alignment check (vector 17).
        const AC = 1 << 17;
        /// #MC, machine check (vector 18).
        const MC = 1 << 18;
        /// #XF, SIMD floating-point (vector 19).
        const XF = 1 << 19;
        /// #CP, control protection (vector 21).
        const CP = 1 << 21;
        /// #HV, hypervisor injection (vector 28).
        const HV = 1 << 28;
        /// #VC, VMM communication (vector 29, SEV-ES).
        const VC = 1 << 29;
        /// #SX, security exception (vector 30).
        const SX = 1 << 30;
        const _ = !0;
    }
}

impl ExceptionIntercepts {
    /// The intercept bit of exception `vector` (0–31), or `None` for `vector > 31`.
    #[must_use]
    pub const fn vector(vector: u8) -> Option<Self> {
        if vector < 32 {
            Some(Self::from_bits_retain(1 << vector))
        } else {
            None
        }
    }
}

bitflags! {
    /// Vector 3 (offset 00Ch): the first miscellaneous intercept vector.
    ///
    /// APM Table B-1, offset 00Ch; Sections 15.9–15.14.
    #[repr(transparent)]
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct MiscIntercepts1: u32 {
        /// Bit 0: physical maskable interrupt (INTR).
        const INTR = 1 << 0;
        /// Bit 1: NMI.
        const NMI = 1 << 1;
        /// Bit 2: SMI.
        const SMI = 1 << 2;
        /// Bit 3: INIT.
        const INIT = 1 << 3;
        /// Bit 4: virtual maskable interrupt (VINTR).
        const VINTR = 1 << 4;
        /// Bit 5: CR0 writes that change bits other than CR0.TS or CR0.MP.
        const CR0_SELECTIVE_WRITE = 1 << 5;
        /// Bit 6: reads of IDTR.
        const IDTR_READ = 1 << 6;
        /// Bit 7: reads of GDTR.
        const GDTR_READ = 1 << 7;
        /// Bit 8: reads of LDTR.
        const LDTR_READ = 1 << 8;
        /// Bit 9: reads of TR.
        const TR_READ = 1 << 9;
        /// Bit 10: writes of IDTR.
        const IDTR_WRITE = 1 << 10;
        /// Bit 11: writes of GDTR.
        const GDTR_WRITE = 1 << 11;
        /// Bit 12: writes of LDTR.
        const LDTR_WRITE = 1 << 12;
        /// Bit 13: writes of TR.
        const TR_WRITE = 1 << 13;
        /// Bit 14: RDTSC.
        const RDTSC = 1 << 14;
        /// Bit 15: RDPMC.
        const RDPMC = 1 << 15;
        /// Bit 16: PUSHF.
        const PUSHF = 1 << 16;
        /// Bit 17: POPF.
        const POPF = 1 << 17;
        /// Bit 18: CPUID.
        const CPUID = 1 << 18;
        /// Bit 19: RSM.
        const RSM = 1 << 19;
        /// Bit 20: IRET.
        const IRET = 1 << 20;
        /// Bit 21: INTn (software interrupt).
        const INTN = 1 << 21;
        /// Bit 22: INVD.
        const INVD = 1 << 22;
        /// Bit 23: PAUSE (subject to the pause filter).
        const PAUSE = 1 << 23;
        /// Bit 24: HLT.
        const HLT = 1 << 24;
        /// Bit 25: INVLPG.
        const INVLPG = 1 << 25;
        /// Bit 26: INVLPGA.
        const INVLPGA = 1 << 26;
        /// Bit 27: IOIO_PROT, IN/OUT to ports selected in the IOPM.
        const IOIO_PROT = 1 << 27;
        /// Bit 28: MSR_PROT, RDMSR/WRMSR of MSRs selected in the MSRPM.
        const MSR_PROT = 1 << 28;
        /// Bit 29: task switches.
        const TASK_SWITCH = 1 << 29;
        /// Bit 30: FERR_FREEZE, processor "freezing" during legacy FERR handling.
        const FERR_FREEZE = 1 << 30;
        /// Bit 31: shutdown events.
        const SHUTDOWN = 1 << 31;
    }
}

bitflags! {
    /// Vector 4 (offset 010h): the second miscellaneous intercept vector.
    ///
    /// APM Table B-1, offset 010h. Bits 31:16 are the CR0–CR15 write *traps* (taken after the
    /// guest instruction finishes; EXITINFO1 holds the new value); see
    /// [`MiscIntercepts2::cr_write_trap`].
    #[repr(transparent)]
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct MiscIntercepts2: u32 {
        /// Bit 0: VMRUN. Must be set: VMRUN fails with VMEXIT_INVALID otherwise (15.5.1).
        const VMRUN = 1 << 0;
        /// Bit 1: VMMCALL (raises #UD in the guest if not intercepted, 15.18).
        const VMMCALL = 1 << 1;
        /// Bit 2: VMLOAD.
        const VMLOAD = 1 << 2;
        /// Bit 3: VMSAVE.
        const VMSAVE = 1 << 3;
        /// Bit 4: STGI.
        const STGI = 1 << 4;
        /// Bit 5: CLGI.
        const CLGI = 1 << 5;
        /// Bit 6: SKINIT.
        const SKINIT = 1 << 6;
        /// Bit 7: RDTSCP.
        const RDTSCP = 1 << 7;
        /// Bit 8: ICEBP (INT1).
        const ICEBP = 1 << 8;
        /// Bit 9: WBINVD and WBNOINVD.
        const WBINVD = 1 << 9;
        /// Bit 10: MONITOR/MONITORX.
        const MONITOR = 1 << 10;
        /// Bit 11: MWAIT/MWAITX unconditionally.
        const MWAIT = 1 << 11;
        /// Bit 12: MWAIT/MWAITX only if the monitor hardware is armed.
        const MWAIT_CONDITIONAL = 1 << 12;
        /// Bit 13: XSETBV.
        const XSETBV = 1 << 13;
        /// Bit 14: RDPRU.
        const RDPRU = 1 << 14;
        /// Bit 15: writes of EFER (trap, after the guest instruction finishes).
        const EFER_WRITE_TRAP = 1 << 15;
        /// Bit 16: writes of CR0 (trap).
        const CR0_WRITE_TRAP = 1 << 16;
        /// Bit 19: writes of CR3 (trap).
        const CR3_WRITE_TRAP = 1 << 19;
        /// Bit 20: writes of CR4 (trap).
        const CR4_WRITE_TRAP = 1 << 20;
        /// Bit 24: writes of CR8 (trap).
        const CR8_WRITE_TRAP = 1 << 24;
        const _ = !0;
    }
}

impl MiscIntercepts2 {
    /// The write-trap bit of control register `cr` (0–15), or `None` for `cr > 15`.
    #[must_use]
    pub const fn cr_write_trap(cr: u8) -> Option<Self> {
        if cr < 16 {
            Some(Self::from_bits_retain(1 << (16 + cr)))
        } else {
            None
        }
    }
}

bitflags! {
    /// Vector 5 (offset 014h): the third miscellaneous intercept vector.
    ///
    /// APM Table B-1, offset 014h. Bits 31:7 are reserved, SBZ.
    #[repr(transparent)]
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct MiscIntercepts3: u32 {
        /// Bit 0: all INVLPGB instructions.
        const INVLPGB = 1 << 0;
        /// Bit 1: only illegally specified INVLPGB instructions.
        const INVLPGB_ILLEGAL = 1 << 1;
        /// Bit 2: INVPCID.
        const INVPCID = 1 << 2;
        /// Bit 3: MCOMMIT.
        const MCOMMIT = 1 << 3;
        /// Bit 4: TLBSYNC (present when CPUID Fn8000_000A EDX\[24\] = 1).
        const TLBSYNC = 1 << 4;
        /// Bit 5: bus lock operations when the Bus Lock Threshold Counter is 0 (15.14.5).
        const BUS_LOCK = 1 << 5;
        /// Bit 6: HLT if a virtual interrupt is not pending (idle HLT).
        const IDLE_HLT = 1 << 6;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bit positions against APM Table B-1.
    #[test]
    fn bit_positions_match_table_b1() {
        assert_eq!(CrIntercepts::CR8_WRITE.bits(), 1 << 24);
        assert_eq!(CrIntercepts::write(3), Some(CrIntercepts::CR3_WRITE));
        assert_eq!(CrIntercepts::read(16), None);
        assert_eq!(DrIntercepts::write(7), Some(DrIntercepts::DR7_WRITE));
        assert_eq!(
            ExceptionIntercepts::vector(14),
            Some(ExceptionIntercepts::PF)
        );
        assert_eq!(ExceptionIntercepts::vector(32), None);
        assert_eq!(MiscIntercepts1::CPUID.bits(), 1 << 18);
        assert_eq!(MiscIntercepts1::IOIO_PROT.bits(), 1 << 27);
        assert_eq!(MiscIntercepts1::SHUTDOWN.bits(), 1 << 31);
        assert_eq!(MiscIntercepts2::XSETBV.bits(), 1 << 13);
        assert_eq!(MiscIntercepts2::RDPRU.bits(), 1 << 14);
        assert_eq!(
            MiscIntercepts2::cr_write_trap(4),
            Some(MiscIntercepts2::CR4_WRITE_TRAP)
        );
        assert_eq!(MiscIntercepts3::TLBSYNC.bits(), 1 << 4);
        assert_eq!(MiscIntercepts3::IDLE_HLT.bits(), 1 << 6);
    }

    #[test]
    fn unknown_bits_survive() {
        let v = MiscIntercepts3::from_bits_retain(1 << 20);
        assert_eq!(v.bits(), 1 << 20);
    }
}
