//! #VMEXIT codes and decoded EXITINFO1/EXITINFO2.
//!
//! Manual: AMD64 Architecture Programmer's Manual Volume 2: System Programming, Publication
//! No. 24593, Revision 3.42, March 2024 — Appendix C "SVM Intercept Exit Codes" (Table C-1),
//! Section 15.6 "#VMEXIT", 15.7 "Intercept Operation", 15.10.2 "IN and OUT Behavior" (IOIO
//! EXITINFO1, Figure 15-2), 15.11 "MSR Intercepts", 15.12 "Exception Intercepts", 15.14.1
//! "Task Switch Intercept", 15.25.6 "Nested versus Guest Page Faults, Fault Ordering" and 15.8
//! "Decode Assists" (15.8.1 "MOV CRx/DRx Intercepts", 15.8.2 "INTn Intercepts", 15.8.3 "INVLPG
//! and INVLPGA Intercepts").
//!
//! EXITINFO fields that only decode assists fill (CPUID Fn8000_000A EDX\[7\]) are decoded
//! anyway; on a CPU without them (QEMU TCG) those values are meaningless.
//!
//! [`ExitCode`] is open: a code this crate does not know is still a value, printed in hex.
//!
//! VMEXIT_INVALID is −1, but QEMU's TCG writes it as `0x0000_0000_FFFF_FFFF` (only the low 32
//! bits), so [`ExitCode::is_invalid`] and the other negative codes compare the low 32 bits.

use bit_field::BitField;

/// A #VMEXIT code as written to EXITCODE (control-area offset 070h; APM Table C-1).
///
/// `repr(transparent)`: it is the VMCB's EXITCODE field, so its layout must be the `u64`'s.
#[repr(transparent)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ExitCode(pub u64);

macro_rules! exit_codes {
    ($( $(#[$doc:meta])* $name:ident = $value:expr; )*) => {
        impl ExitCode {
            $( $(#[$doc])* pub const $name: Self = Self($value); )*

            /// Every exit code this crate names, in Table C-1 order.
            pub const ALL: &'static [Self] = &[$(Self::$name),*];

            /// The APM name (without the `VMEXIT_` prefix) of a known code. Negative codes also
            /// match when only their low 32 bits were written (QEMU TCG).
            #[must_use]
            pub fn name(self) -> Option<&'static str> {
                let code = self.normalized();
                $( if code.0 == $value { return Some(stringify!($name)); } )*
                None
            }
        }
    };
}

exit_codes! {
    /// 00h: read of CR0.
    CR0_READ = 0x00;
    /// 01h: read of CR1.
    CR1_READ = 0x01;
    /// 02h: read of CR2.
    CR2_READ = 0x02;
    /// 03h: read of CR3.
    CR3_READ = 0x03;
    /// 04h: read of CR4.
    CR4_READ = 0x04;
    /// 05h: read of CR5.
    CR5_READ = 0x05;
    /// 06h: read of CR6.
    CR6_READ = 0x06;
    /// 07h: read of CR7.
    CR7_READ = 0x07;
    /// 08h: read of CR8.
    CR8_READ = 0x08;
    /// 09h: read of CR9.
    CR9_READ = 0x09;
    /// 0Ah: read of CR10.
    CR10_READ = 0x0A;
    /// 0Bh: read of CR11.
    CR11_READ = 0x0B;
    /// 0Ch: read of CR12.
    CR12_READ = 0x0C;
    /// 0Dh: read of CR13.
    CR13_READ = 0x0D;
    /// 0Eh: read of CR14.
    CR14_READ = 0x0E;
    /// 0Fh: read of CR15.
    CR15_READ = 0x0F;
    /// 10h: write of CR0.
    CR0_WRITE = 0x10;
    /// 11h: write of CR1.
    CR1_WRITE = 0x11;
    /// 12h: write of CR2.
    CR2_WRITE = 0x12;
    /// 13h: write of CR3.
    CR3_WRITE = 0x13;
    /// 14h: write of CR4.
    CR4_WRITE = 0x14;
    /// 15h: write of CR5.
    CR5_WRITE = 0x15;
    /// 16h: write of CR6.
    CR6_WRITE = 0x16;
    /// 17h: write of CR7.
    CR7_WRITE = 0x17;
    /// 18h: write of CR8.
    CR8_WRITE = 0x18;
    /// 19h: write of CR9.
    CR9_WRITE = 0x19;
    /// 1Ah: write of CR10.
    CR10_WRITE = 0x1A;
    /// 1Bh: write of CR11.
    CR11_WRITE = 0x1B;
    /// 1Ch: write of CR12.
    CR12_WRITE = 0x1C;
    /// 1Dh: write of CR13.
    CR13_WRITE = 0x1D;
    /// 1Eh: write of CR14.
    CR14_WRITE = 0x1E;
    /// 1Fh: write of CR15.
    CR15_WRITE = 0x1F;
    /// 20h: read of DR0.
    DR0_READ = 0x20;
    /// 21h: read of DR1.
    DR1_READ = 0x21;
    /// 22h: read of DR2.
    DR2_READ = 0x22;
    /// 23h: read of DR3.
    DR3_READ = 0x23;
    /// 24h: read of DR4.
    DR4_READ = 0x24;
    /// 25h: read of DR5.
    DR5_READ = 0x25;
    /// 26h: read of DR6.
    DR6_READ = 0x26;
    /// 27h: read of DR7.
    DR7_READ = 0x27;
    /// 28h: read of DR8.
    DR8_READ = 0x28;
    /// 29h: read of DR9.
    DR9_READ = 0x29;
    /// 2Ah: read of DR10.
    DR10_READ = 0x2A;
    /// 2Bh: read of DR11.
    DR11_READ = 0x2B;
    /// 2Ch: read of DR12.
    DR12_READ = 0x2C;
    /// 2Dh: read of DR13.
    DR13_READ = 0x2D;
    /// 2Eh: read of DR14.
    DR14_READ = 0x2E;
    /// 2Fh: read of DR15.
    DR15_READ = 0x2F;
    /// 30h: write of DR0.
    DR0_WRITE = 0x30;
    /// 31h: write of DR1.
    DR1_WRITE = 0x31;
    /// 32h: write of DR2.
    DR2_WRITE = 0x32;
    /// 33h: write of DR3.
    DR3_WRITE = 0x33;
    /// 34h: write of DR4.
    DR4_WRITE = 0x34;
    /// 35h: write of DR5.
    DR5_WRITE = 0x35;
    /// 36h: write of DR6.
    DR6_WRITE = 0x36;
    /// 37h: write of DR7.
    DR7_WRITE = 0x37;
    /// 38h: write of DR8.
    DR8_WRITE = 0x38;
    /// 39h: write of DR9.
    DR9_WRITE = 0x39;
    /// 3Ah: write of DR10.
    DR10_WRITE = 0x3A;
    /// 3Bh: write of DR11.
    DR11_WRITE = 0x3B;
    /// 3Ch: write of DR12.
    DR12_WRITE = 0x3C;
    /// 3Dh: write of DR13.
    DR13_WRITE = 0x3D;
    /// 3Eh: write of DR14.
    DR14_WRITE = 0x3E;
    /// 3Fh: write of DR15.
    DR15_WRITE = 0x3F;
    /// 40h: exception vector 0, #DE.
    EXCP_DE = 0x40;
    /// 41h: exception vector 1, #DB.
    EXCP_DB = 0x41;
    /// 42h: exception vector 2 (NMI vector).
    EXCP_NMI = 0x42;
    /// 43h: exception vector 3, #BP.
    EXCP_BP = 0x43;
    /// 44h: exception vector 4, #OF.
    EXCP_OF = 0x44;
    /// 45h: exception vector 5, #BR.
    EXCP_BR = 0x45;
    /// 46h: exception vector 6, #UD.
    EXCP_UD = 0x46;
    /// 47h: exception vector 7, #NM.
    EXCP_NM = 0x47;
    /// 48h: exception vector 8, #DF.
    EXCP_DF = 0x48;
    /// 49h: exception vector 9 (reserved).
    EXCP_9 = 0x49;
    /// 4Ah: exception vector 10, #TS.
    EXCP_TS = 0x4A;
    /// 4Bh: exception vector 11, #NP.
    EXCP_NP = 0x4B;
    /// 4Ch: exception vector 12, #SS.
    EXCP_SS = 0x4C;
    /// 4Dh: exception vector 13, #GP.
    EXCP_GP = 0x4D;
    /// 4Eh: exception vector 14, #PF.
    EXCP_PF = 0x4E;
    /// 4Fh: exception vector 15 (reserved).
    EXCP_15 = 0x4F;
    /// 50h: exception vector 16, #MF.
    EXCP_MF = 0x50;
    /// 51h: exception vector 17, #AC.
    EXCP_AC = 0x51;
    /// 52h: exception vector 18, #MC.
    EXCP_MC = 0x52;
    /// 53h: exception vector 19, #XF.
    EXCP_XF = 0x53;
    /// 54h: exception vector 20.
    EXCP_20 = 0x54;
    /// 55h: exception vector 21, #CP.
    EXCP_CP = 0x55;
    /// 56h: exception vector 22.
    EXCP_22 = 0x56;
    /// 57h: exception vector 23.
    EXCP_23 = 0x57;
    /// 58h: exception vector 24.
    EXCP_24 = 0x58;
    /// 59h: exception vector 25.
    EXCP_25 = 0x59;
    /// 5Ah: exception vector 26.
    EXCP_26 = 0x5A;
    /// 5Bh: exception vector 27.
    EXCP_27 = 0x5B;
    /// 5Ch: exception vector 28, #HV.
    EXCP_HV = 0x5C;
    /// 5Dh: exception vector 29, #VC.
    EXCP_VC = 0x5D;
    /// 5Eh: exception vector 30, #SX.
    EXCP_SX = 0x5E;
    /// 5Fh: exception vector 31.
    EXCP_31 = 0x5F;
    /// 60h: physical INTR.
    INTR = 0x60;
    /// 61h: physical NMI.
    NMI = 0x61;
    /// 62h: physical SMI (EXITINFO1 bit 0 = 1 for an I/O SMI…).
    SMI = 0x62;
    /// 63h: physical INIT.
    INIT = 0x63;
    /// 64h: virtual INTR.
    VINTR = 0x64;
    /// 65h: write of CR0 that changed bits other than TS or MP.
    CR0_SEL_WRITE = 0x65;
    /// 66h: read of IDTR.
    IDTR_READ = 0x66;
    /// 67h: read of GDTR.
    GDTR_READ = 0x67;
    /// 68h: read of LDTR.
    LDTR_READ = 0x68;
    /// 69h: read of TR.
    TR_READ = 0x69;
    /// 6Ah: write of IDTR.
    IDTR_WRITE = 0x6A;
    /// 6Bh: write of GDTR.
    GDTR_WRITE = 0x6B;
    /// 6Ch: write of LDTR.
    LDTR_WRITE = 0x6C;
    /// 6Dh: write of TR.
    TR_WRITE = 0x6D;
    /// 6Eh: RDTSC.
    RDTSC = 0x6E;
    /// 6Fh: RDPMC.
    RDPMC = 0x6F;
    /// 70h: PUSHF.
    PUSHF = 0x70;
    /// 71h: POPF.
    POPF = 0x71;
    /// 72h: CPUID.
    CPUID = 0x72;
    /// 73h: RSM.
    RSM = 0x73;
    /// 74h: IRET.
    IRET = 0x74;
    /// 75h: software interrupt (INTn).
    SWINT = 0x75;
    /// 76h: INVD.
    INVD = 0x76;
    /// 77h: PAUSE.
    PAUSE = 0x77;
    /// 78h: HLT.
    HLT = 0x78;
    /// 79h: INVLPG.
    INVLPG = 0x79;
    /// 7Ah: INVLPGA.
    INVLPGA = 0x7A;
    /// 7Bh: IN or OUT accessing protected port (EXITINFO1 per Figure 15-2, EXITINFO2 = next RIP).
    IOIO = 0x7B;
    /// 7Ch: RDMSR or WRMSR of a protected MSR (EXITINFO1 = 0 read, 1 write).
    MSR = 0x7C;
    /// 7Dh: task switch.
    TASK_SWITCH = 0x7D;
    /// 7Eh: FP error freeze.
    FERR_FREEZE = 0x7E;
    /// 7Fh: shutdown (triple fault).
    SHUTDOWN = 0x7F;
    /// 80h: VMRUN.
    VMRUN = 0x80;
    /// 81h: VMMCALL.
    VMMCALL = 0x81;
    /// 82h: VMLOAD.
    VMLOAD = 0x82;
    /// 83h: VMSAVE.
    VMSAVE = 0x83;
    /// 84h: STGI.
    STGI = 0x84;
    /// 85h: CLGI.
    CLGI = 0x85;
    /// 86h: SKINIT.
    SKINIT = 0x86;
    /// 87h: RDTSCP.
    RDTSCP = 0x87;
    /// 88h: ICEBP.
    ICEBP = 0x88;
    /// 89h: WBINVD or WBNOINVD.
    WBINVD = 0x89;
    /// 8Ah: MONITOR or MONITORX.
    MONITOR = 0x8A;
    /// 8Bh: MWAIT or MWAITX unconditionally.
    MWAIT = 0x8B;
    /// 8Ch: MWAIT or MWAITX with the monitor hardware armed.
    MWAIT_CONDITIONAL = 0x8C;
    /// 8Dh: XSETBV.
    XSETBV = 0x8D;
    /// 8Eh: RDPRU.
    RDPRU = 0x8E;
    /// 8Fh: write of EFER, after the guest instruction completed (EXITINFO1 = new value).
    EFER_WRITE_TRAP = 0x8F;
    /// 90h: write of CR0 (trap; EXITINFO1 = new value).
    CR0_WRITE_TRAP = 0x90;
    /// 91h: write of CR1 (trap).
    CR1_WRITE_TRAP = 0x91;
    /// 92h: write of CR2 (trap).
    CR2_WRITE_TRAP = 0x92;
    /// 93h: write of CR3 (trap).
    CR3_WRITE_TRAP = 0x93;
    /// 94h: write of CR4 (trap).
    CR4_WRITE_TRAP = 0x94;
    /// 95h: write of CR5 (trap).
    CR5_WRITE_TRAP = 0x95;
    /// 96h: write of CR6 (trap).
    CR6_WRITE_TRAP = 0x96;
    /// 97h: write of CR7 (trap).
    CR7_WRITE_TRAP = 0x97;
    /// 98h: write of CR8 (trap).
    CR8_WRITE_TRAP = 0x98;
    /// 99h: write of CR9 (trap).
    CR9_WRITE_TRAP = 0x99;
    /// 9Ah: write of CR10 (trap).
    CR10_WRITE_TRAP = 0x9A;
    /// 9Bh: write of CR11 (trap).
    CR11_WRITE_TRAP = 0x9B;
    /// 9Ch: write of CR12 (trap).
    CR12_WRITE_TRAP = 0x9C;
    /// 9Dh: write of CR13 (trap).
    CR13_WRITE_TRAP = 0x9D;
    /// 9Eh: write of CR14 (trap).
    CR14_WRITE_TRAP = 0x9E;
    /// 9Fh: write of CR15 (trap).
    CR15_WRITE_TRAP = 0x9F;
    /// A0h: INVLPGB.
    INVLPGB = 0xA0;
    /// A1h: illegally specified INVLPGB.
    INVLPGB_ILLEGAL = 0xA1;
    /// A2h: INVPCID.
    INVPCID = 0xA2;
    /// A3h: MCOMMIT.
    MCOMMIT = 0xA3;
    /// A4h: TLBSYNC.
    TLBSYNC = 0xA4;
    /// A5h: bus lock while the Bus Lock Threshold Counter was 0.
    BUSLOCK = 0xA5;
    /// A6h: HLT while no virtual interrupt was pending.
    IDLE_HLT = 0xA6;
    /// 400h: nested page fault (EXITINFO1 = error code, EXITINFO2 = guest physical address).
    NPF = 0x400;
    /// 401h: AVIC, virtual IPI delivery not completed.
    AVIC_INCOMPLETE_IPI = 0x401;
    /// 402h: AVIC, guest access to a vAPIC register not handled by AVIC hardware.
    AVIC_NOACCEL = 0x402;
    /// 403h: VMGEXIT (SEV-ES).
    VMGEXIT = 0x403;
    /// −1: invalid guest state in the VMCB (a VMRUN consistency check failed).
    INVALID = 0xFFFF_FFFF_FFFF_FFFF;
    /// −2: the BUSY bit was set in the VMSA (SEV-ES).
    BUSY = 0xFFFF_FFFF_FFFF_FFFE;
    /// −3: the sibling thread is not in an idle state.
    IDLE_REQUIRED = 0xFFFF_FFFF_FFFF_FFFD;
    /// −4: invalid PMC state.
    INVALID_PMC = 0xFFFF_FFFF_FFFF_FFFC;
}

impl ExitCode {
    /// The code with a QEMU-style 32-bit negative value (`0x0000_0000_FFFF_FFFx`) sign-extended
    /// to the APM's 64-bit value; other codes unchanged.
    #[must_use]
    pub const fn normalized(self) -> Self {
        let low = self.0 & 0xFFFF_FFFF;
        if self.0 >> 32 == 0 && low >= 0xFFFF_FFFC {
            Self(low | 0xFFFF_FFFF_0000_0000)
        } else {
            self
        }
    }

    /// Whether this is VMEXIT_INVALID (−1), comparing only the low 32 bits: QEMU TCG writes
    /// `0x0000_0000_FFFF_FFFF` (EMULATORS.md).
    #[must_use]
    pub const fn is_invalid(self) -> bool {
        self.0 & 0xFFFF_FFFF == 0xFFFF_FFFF
    }

    /// Whether this is one of the negative VMRUN-failure codes (INVALID, BUSY, IDLE_REQUIRED,
    /// INVALID_PMC): the guest did not run.
    #[must_use]
    pub const fn is_vmrun_failure(self) -> bool {
        self.normalized().0 >= Self::INVALID_PMC.0
    }

    /// For CR read/write and CR write-trap codes: the control register number.
    #[must_use]
    pub const fn cr_number(self) -> Option<u8> {
        match self.0 {
            0x00..=0x1F | 0x90..=0x9F => Some((self.0 & 0xF) as u8),
            _ => None,
        }
    }

    /// For DR read/write codes: the debug register number.
    #[must_use]
    pub const fn dr_number(self) -> Option<u8> {
        match self.0 {
            0x20..=0x3F => Some((self.0 & 0xF) as u8),
            _ => None,
        }
    }

    /// For exception codes 40h–5Fh: the exception vector.
    #[must_use]
    #[expect(clippy::cast_possible_truncation, reason = "range is 0..32")]
    pub const fn exception_vector(self) -> Option<u8> {
        match self.0 {
            0x40..=0x5F => Some((self.0 - 0x40) as u8),
            _ => None,
        }
    }

    /// The exit code of exception `vector` (0–31), or `None` above 31.
    #[must_use]
    pub const fn exception(vector: u8) -> Option<Self> {
        if vector < 32 {
            Some(Self(0x40 + vector as u64))
        } else {
            None
        }
    }
}

impl core::fmt::Debug for ExitCode {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.name() {
            Some(name) => write!(f, "ExitCode::{name}({:#x})", self.0),
            None => write!(f, "ExitCode({:#x})", self.0),
        }
    }
}

impl core::fmt::Display for ExitCode {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.name() {
            Some(name) => write!(f, "VMEXIT_{name}"),
            None => write!(f, "unknown #VMEXIT code {:#x}", self.0),
        }
    }
}

/// Operand/access size of an I/O instruction (IOIO EXITINFO1 SZ8/SZ16/SZ32, one-hot).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[non_exhaustive]
pub enum IoSize {
    /// 8-bit access.
    Byte,
    /// 16-bit access.
    Word,
    /// 32-bit access.
    Dword,
}

impl IoSize {
    /// The size in bytes.
    #[must_use]
    pub const fn bytes(self) -> u8 {
        match self {
            Self::Byte => 1,
            Self::Word => 2,
            Self::Dword => 4,
        }
    }
}

/// Address size of a string I/O instruction (IOIO EXITINFO1 A16/A32/A64, one-hot).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[non_exhaustive]
pub enum AddressSize {
    /// 16-bit addressing.
    A16,
    /// 32-bit addressing.
    A32,
    /// 64-bit addressing.
    A64,
}

/// EXITINFO1 of a VMEXIT_IOIO (APM 15.10.2 "IN and OUT Behavior", Figure 15-2 "EXITINFO1 for IOIO
/// Intercept"), plus the next RIP from EXITINFO2.
///
/// Bits: 0 TYPE (1 = IN), 2 STR, 3 REP, 4 SZ8, 5 SZ16, 6 SZ32, 7 A16, 8 A32, 9 A64, 12:10 SEG
/// (effective segment, with decode assists), 31:16 PORT.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct IoioInfo {
    raw: u64,
    next_rip: u64,
}

/// A malformed IOIO EXITINFO1: the size or address-size field is not one-hot.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum IoioError {
    /// SZ8/SZ16/SZ32 (bits 6:4) is not exactly one bit.
    #[error("IOIO EXITINFO1 {0:#x}: size bits 6:4 are not one-hot")]
    BadSize(u64),
    /// More than one of A16/A32/A64 (bits 9:7) is set.
    #[error("IOIO EXITINFO1 {0:#x}: more than one address-size bit (9:7) set")]
    BadAddressSize(u64),
}

impl IoioInfo {
    /// Decodes EXITINFO1 and EXITINFO2 of a VMEXIT_IOIO.
    ///
    /// # Errors
    /// [`IoioError`] if the size bits are not one-hot or more than one address-size bit is set.
    /// No address-size bit at all is accepted: QEMU's TCG sets none for non-string IN/OUT.
    pub fn new(exit_info1: u64, exit_info2: u64) -> Result<Self, IoioError> {
        let info = Self {
            raw: exit_info1,
            next_rip: exit_info2,
        };
        match exit_info1.get_bits(4..7) {
            1 | 2 | 4 => {}
            _ => return Err(IoioError::BadSize(exit_info1)),
        }
        match exit_info1.get_bits(7..10) {
            0 | 1 | 2 | 4 => {}
            _ => return Err(IoioError::BadAddressSize(exit_info1)),
        }
        Ok(info)
    }

    /// The raw EXITINFO1.
    #[must_use]
    pub const fn raw(self) -> u64 {
        self.raw
    }

    /// PORT, bits 31:16.
    #[must_use]
    #[expect(clippy::cast_possible_truncation, reason = "a 16-bit field")]
    pub fn port(self) -> u16 {
        self.raw.get_bits(16..32) as u16
    }

    /// TYPE, bit 0: `true` for IN (read from the port), `false` for OUT.
    #[must_use]
    pub fn is_in(self) -> bool {
        self.raw.get_bit(0)
    }

    /// STR, bit 2: INS/OUTS.
    #[must_use]
    pub fn is_string(self) -> bool {
        self.raw.get_bit(2)
    }

    /// REP, bit 3: repeated string operation.
    #[must_use]
    pub fn is_rep(self) -> bool {
        self.raw.get_bit(3)
    }

    /// SZ8/SZ16/SZ32, bits 6:4.
    #[must_use]
    pub fn size(self) -> IoSize {
        match self.raw.get_bits(4..7) {
            1 => IoSize::Byte,
            2 => IoSize::Word,
            _ => IoSize::Dword,
        }
    }

    /// A16/A32/A64, bits 9:7; `None` when no bit is set (QEMU TCG leaves them clear for
    /// non-string IN/OUT, where the address size does not matter).
    #[must_use]
    pub fn address_size(self) -> Option<AddressSize> {
        match self.raw.get_bits(7..10) {
            1 => Some(AddressSize::A16),
            2 => Some(AddressSize::A32),
            4 => Some(AddressSize::A64),
            _ => None,
        }
    }

    /// SEG, bits 12:10: effective segment of a string instruction (0 = ES … 5 = GS), valid only
    /// with decode assists (CPUID Fn8000_000A EDX\[7\]).
    #[must_use]
    #[expect(clippy::cast_possible_truncation, reason = "a 3-bit field")]
    pub fn segment(self) -> u8 {
        self.raw.get_bits(10..13) as u8
    }

    /// EXITINFO2: RIP of the instruction after the IN/OUT (also on CPUs without NRIP save).
    #[must_use]
    pub const fn next_rip(self) -> u64 {
        self.next_rip
    }
}

impl core::fmt::Debug for IoioInfo {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("IoioInfo")
            .field("port", &format_args!("{:#x}", self.port()))
            .field("in", &self.is_in())
            .field("size", &self.size())
            .field("string", &self.is_string())
            .field("rep", &self.is_rep())
            .field("address_size", &self.address_size())
            .field("segment", &self.segment())
            .field("next_rip", &format_args!("{:#x}", self.next_rip))
            .finish()
    }
}

/// Direction of an intercepted MSR access (VMEXIT_MSR EXITINFO1; APM 15.11 "MSR Intercepts").
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[non_exhaustive]
pub enum MsrAccess {
    /// EXITINFO1 = 0: RDMSR (the MSR number is in the guest's ECX).
    Read,
    /// EXITINFO1 = 1: WRMSR (value in the guest's EDX:EAX).
    Write,
}

impl MsrAccess {
    /// Decodes EXITINFO1 of a VMEXIT_MSR; `None` for any value other than 0 or 1.
    #[must_use]
    pub const fn from_exit_info1(exit_info1: u64) -> Option<Self> {
        match exit_info1 {
            0 => Some(Self::Read),
            1 => Some(Self::Write),
            _ => None,
        }
    }
}

bitflags::bitflags! {
    /// EXITINFO1 of a VMEXIT_NPF: a page-fault error code plus nested-paging bits (APM 15.25.6
    /// "Nested versus Guest Page Faults, Fault Ordering"). EXITINFO2 holds the faulting guest
    /// physical address.
    #[repr(transparent)]
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct NpfErrorCode: u64 {
        /// Bit 0: the nested page was present (protection violation).
        const PRESENT = 1 << 0;
        /// Bit 1: the access was a write.
        const WRITE = 1 << 1;
        /// Bit 2: the access was a user-mode access (always 1 for guest table walks).
        const USER = 1 << 2;
        /// Bit 3: a reserved bit was set in a nested page-table entry.
        const RESERVED_BIT = 1 << 3;
        /// Bit 4: the access was an instruction fetch.
        const EXECUTE = 1 << 4;
        /// Bit 6: the access was a shadow-stack access.
        const SHADOW_STACK = 1 << 6;
        /// Bit 32: the fault happened on the final guest physical address translation.
        const FINAL_TRANSLATION = 1 << 32;
        /// Bit 33: the fault happened while translating a guest page-table access (during the
        /// guest table walk).
        const PAGE_TABLE_WALK = 1 << 33;
        /// Bit 37: the page is a supervisor shadow-stack page in the nested leaf entry and the
        /// shadow-stack check (VMCB 090h bit 4) is enabled.
        const SUPERVISOR_SHADOW_STACK = 1 << 37;
        const _ = !0;
    }
}

/// Decoded EXITINFO1 of a CR access intercept with decode assists (APM 15.8.1 "MOV CRx/DRx
/// Intercepts", Table 15-2): bit 63 = 1 for a MOV CRx instruction, bits 3:0 = its GPR operand.
/// (For DR accesses, Table 15-3 has only the GPR number: see [`Exit::DrRead`].)
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[non_exhaustive]
pub enum CrDrAccess {
    /// A MOV to/from CRn with this general-purpose register (0 = RAX … 15 = R15).
    Mov {
        /// GPR number (bits 3:0).
        gpr: u8,
    },
    /// A CR0 access by another instruction (LMSW, CLTS, SMSW): bit 63 clear.
    Other,
}

impl CrDrAccess {
    /// Decodes EXITINFO1 of a CR read or write intercept. Only meaningful when the CPU has
    /// decode assists (CPUID Fn8000_000A EDX\[7\]); QEMU TCG has none.
    #[must_use]
    #[expect(clippy::cast_possible_truncation, reason = "a 4-bit field")]
    pub fn from_exit_info1(exit_info1: u64) -> Self {
        if exit_info1.get_bit(63) {
            Self::Mov {
                gpr: exit_info1.get_bits(0..4) as u8,
            }
        } else {
            Self::Other
        }
    }
}

/// Decoded EXITINFO1/EXITINFO2 of a VMEXIT_TASK_SWITCH (APM 15.14.1 "Task Switch Intercept"):
/// EXITINFO1 bits 15:0 hold the incoming TSS selector; EXITINFO2 bit 36 IRET, bit 38 far JMP,
/// bit 44 error code valid, bit 48 EFLAGS.RF, bits 31:0 the error code.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct TaskSwitchInfo {
    /// Target TSS selector (EXITINFO1 bits 15:0).
    pub tss_selector: u16,
    /// The task switch is caused by IRET (EXITINFO2 bit 36).
    pub iret: bool,
    /// The task switch is caused by a far JMP (EXITINFO2 bit 38).
    pub jmp: bool,
    /// Error code to push in the new task, if bit 44 is set.
    pub error_code: Option<u32>,
    /// EXITINFO2 bit 48: the EFLAGS.RF value the outgoing TSS would have received.
    pub resume_flag: bool,
}

impl TaskSwitchInfo {
    /// Decodes EXITINFO1/EXITINFO2 of a task-switch intercept. A switch that is neither IRET nor
    /// JMP came from CALL, INTn or an exception (see EXITINTINFO).
    #[must_use]
    #[expect(clippy::cast_possible_truncation, reason = "16- and 32-bit fields")]
    pub fn new(exit_info1: u64, exit_info2: u64) -> Self {
        Self {
            tss_selector: exit_info1.get_bits(0..16) as u16,
            iret: exit_info2.get_bit(36),
            jmp: exit_info2.get_bit(38),
            error_code: exit_info2
                .get_bit(44)
                .then(|| exit_info2.get_bits(0..32) as u32),
            resume_flag: exit_info2.get_bit(48),
        }
    }
}

/// A #VMEXIT decoded from EXITCODE, EXITINFO1 and EXITINFO2 (control-area offsets 070h, 078h,
/// 080h).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum Exit {
    /// VMRUN failed before the guest ran (INVALID, BUSY, IDLE_REQUIRED, INVALID_PMC).
    VmrunFailed(ExitCode),
    /// CR read intercept.
    CrRead {
        /// Control register.
        cr: u8,
        /// Decoded EXITINFO1 (decode assists).
        access: CrDrAccess,
    },
    /// CR write intercept (before the write).
    CrWrite {
        /// Control register.
        cr: u8,
        /// Decoded EXITINFO1 (decode assists).
        access: CrDrAccess,
    },
    /// CR write trap (after the write); EXITINFO1 holds the new value.
    CrWriteTrap {
        /// Control register.
        cr: u8,
        /// The value written.
        value: u64,
    },
    /// EFER write trap; EXITINFO1 holds the new value.
    EferWriteTrap {
        /// The value written.
        value: u64,
    },
    /// DR read intercept (MOV from DRn).
    DrRead {
        /// Debug register.
        dr: u8,
        /// GPR operand, EXITINFO1 bits 3:0 (decode assists, Table 15-3).
        gpr: u8,
    },
    /// DR write intercept (MOV to DRn).
    DrWrite {
        /// Debug register.
        dr: u8,
        /// GPR operand, EXITINFO1 bits 3:0 (decode assists, Table 15-3).
        gpr: u8,
    },
    /// Exception intercept (APM 15.12). For #PF, `info2` is the faulting address; for exceptions
    /// with an error code, `info1` holds it.
    Exception {
        /// Exception vector.
        vector: u8,
        /// EXITINFO1 (error code where the exception has one).
        info1: u64,
        /// EXITINFO2 (#PF: the faulting linear address).
        info2: u64,
    },
    /// IN/OUT intercept.
    Io(IoioInfo),
    /// RDMSR/WRMSR intercept.
    Msr(MsrAccess),
    /// Nested page fault.
    NestedPageFault {
        /// Error code (EXITINFO1).
        error: NpfErrorCode,
        /// Faulting guest physical address (EXITINFO2).
        guest_physical: u64,
    },
    /// INVLPG intercept; with decode assists, EXITINFO1 is the linear address (15.8.3).
    Invlpg {
        /// EXITINFO1.
        linear_address: u64,
    },
    /// Software interrupt (INTn); RIP points at the INTn instruction.
    SoftwareInterrupt {
        /// The interrupt number, EXITINFO1 bits 7:0 (decode assists, 15.8.2 Table 15-4).
        vector: u8,
    },
    /// Task switch intercept.
    TaskSwitch(TaskSwitchInfo),
    /// Any other exit: code and both EXITINFO fields, undecoded.
    Other {
        /// The exit code.
        code: ExitCode,
        /// EXITINFO1.
        info1: u64,
        /// EXITINFO2.
        info2: u64,
    },
}

/// Why an exit could not be decoded.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum ExitDecodeError {
    /// VMEXIT_IOIO with malformed EXITINFO1.
    #[error(transparent)]
    Ioio(#[from] IoioError),
    /// VMEXIT_MSR with EXITINFO1 other than 0 or 1.
    #[error("VMEXIT_MSR with EXITINFO1 {0:#x} (expected 0 or 1)")]
    MsrDirection(u64),
}

/// The low `bits` (≤ 8) bits of `value`.
#[expect(clippy::cast_possible_truncation, reason = "at most 8 bits are kept")]
fn low_bits(value: u64, bits: usize) -> u8 {
    value.get_bits(0..bits.min(8)) as u8
}

impl Exit {
    /// Decodes an exit from EXITCODE, EXITINFO1 and EXITINFO2.
    ///
    /// # Errors
    /// [`ExitDecodeError`] when the EXITINFO fields of an IOIO or MSR exit are malformed.
    pub fn decode(code: ExitCode, info1: u64, info2: u64) -> Result<Self, ExitDecodeError> {
        if code.is_vmrun_failure() {
            return Ok(Self::VmrunFailed(code.normalized()));
        }
        if let Some(cr) = code.cr_number() {
            return Ok(match code.0 {
                0x00..=0x0F => Self::CrRead {
                    cr,
                    access: CrDrAccess::from_exit_info1(info1),
                },
                0x10..=0x1F => Self::CrWrite {
                    cr,
                    access: CrDrAccess::from_exit_info1(info1),
                },
                _ => Self::CrWriteTrap { cr, value: info1 },
            });
        }
        if let Some(dr) = code.dr_number() {
            let gpr = low_bits(info1, 4);
            return Ok(if code.0 < 0x30 {
                Self::DrRead { dr, gpr }
            } else {
                Self::DrWrite { dr, gpr }
            });
        }
        if let Some(vector) = code.exception_vector() {
            return Ok(Self::Exception {
                vector,
                info1,
                info2,
            });
        }
        Ok(match code {
            ExitCode::IOIO => Self::Io(IoioInfo::new(info1, info2)?),
            ExitCode::MSR => Self::Msr(
                MsrAccess::from_exit_info1(info1).ok_or(ExitDecodeError::MsrDirection(info1))?,
            ),
            ExitCode::NPF => Self::NestedPageFault {
                error: NpfErrorCode::from_bits_retain(info1),
                guest_physical: info2,
            },
            ExitCode::INVLPG => Self::Invlpg {
                linear_address: info1,
            },
            ExitCode::SWINT => Self::SoftwareInterrupt {
                vector: low_bits(info1, 8),
            },
            ExitCode::TASK_SWITCH => Self::TaskSwitch(TaskSwitchInfo::new(info1, info2)),
            ExitCode::EFER_WRITE_TRAP => Self::EferWriteTrap { value: info1 },
            _ => Self::Other { code, info1, info2 },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_c1_values() {
        assert_eq!(ExitCode::CPUID.0, 0x72);
        assert_eq!(ExitCode::IOIO.0, 0x7B);
        assert_eq!(ExitCode::MSR.0, 0x7C);
        assert_eq!(ExitCode::SHUTDOWN.0, 0x7F);
        assert_eq!(ExitCode::VMMCALL.0, 0x81);
        assert_eq!(ExitCode::XSETBV.0, 0x8D);
        assert_eq!(ExitCode::CR15_WRITE_TRAP.0, 0x9F);
        assert_eq!(ExitCode::IDLE_HLT.0, 0xA6);
        assert_eq!(ExitCode::NPF.0, 0x400);
        assert_eq!(ExitCode::VMGEXIT.0, 0x403);
        assert_eq!(ExitCode::INVALID.0, u64::MAX);
        assert_eq!(ExitCode::exception(14), Some(ExitCode::EXCP_PF));
        // Every named code has a distinct value and a name that round-trips.
        for (i, a) in ExitCode::ALL.iter().enumerate() {
            assert!(a.name().is_some(), "{a:?}");
            for b in &ExitCode::ALL[i + 1..] {
                assert_ne!(a.0, b.0);
            }
        }
        assert_eq!(ExitCode::ALL.len(), 175);
    }

    #[test]
    fn invalid_compares_low_32_bits() {
        let qemu = ExitCode(0x0000_0000_FFFF_FFFF);
        assert!(qemu.is_invalid());
        assert!(qemu.is_vmrun_failure());
        assert_eq!(qemu.name(), Some("INVALID"));
        assert_eq!(qemu.normalized(), ExitCode::INVALID);
        assert!(ExitCode::INVALID.is_invalid());
        assert!(!ExitCode::CPUID.is_invalid());
        assert_eq!(ExitCode(0xFFFF_FFFE).name(), Some("BUSY"));
        assert!(!ExitCode::NPF.is_vmrun_failure());
        assert!(matches!(
            Exit::decode(qemu, 0, 0),
            Ok(Exit::VmrunFailed(ExitCode::INVALID))
        ));
    }

    #[test]
    fn unknown_codes_are_data() {
        let code = ExitCode(0x1234);
        assert_eq!(code.name(), None);
        assert_eq!(format!("{code:?}"), "ExitCode(0x1234)");
        assert_eq!(format!("{:?}", ExitCode::HLT), "ExitCode::HLT(0x78)");
        assert_eq!(format!("{}", ExitCode::HLT), "VMEXIT_HLT");
        assert!(matches!(
            Exit::decode(code, 1, 2),
            Ok(Exit::Other {
                info1: 1,
                info2: 2,
                ..
            })
        ));
    }

    #[test]
    fn ioio_decodes_figure_15_2() {
        // IN AL, 0x60: port 0x60, TYPE=1, SZ8, A64.
        let info = IoioInfo::new(0x0060_0211, 0x1002).unwrap();
        assert_eq!(info.port(), 0x60);
        assert!(info.is_in());
        assert_eq!(info.size(), IoSize::Byte);
        assert_eq!(info.address_size(), Some(AddressSize::A64));
        assert!(!info.is_string() && !info.is_rep());
        assert_eq!(info.next_rip(), 0x1002);
        // REP OUTSW to 0x3F8 through DS (seg 3), A32.
        let info =
            IoioInfo::new(0x03F8_0000 | (3 << 10) | (1 << 8) | (1 << 5) | 0b1100, 7).unwrap();
        assert_eq!(info.port(), 0x3F8);
        assert!(!info.is_in());
        assert!(info.is_string() && info.is_rep());
        assert_eq!(info.size(), IoSize::Word);
        assert_eq!(info.size().bytes(), 2);
        assert_eq!(info.address_size(), Some(AddressSize::A32));
        assert_eq!(info.segment(), 3);
        assert_eq!(IoioInfo::new(0x30, 0), Err(IoioError::BadSize(0x30)));
        // QEMU TCG: OUT 80h, AL reports SZ8 and no address size (measured).
        let qemu = IoioInfo::new(0x0080_0010, 0x1000).unwrap();
        assert_eq!(
            (qemu.port(), qemu.size(), qemu.address_size()),
            (0x80, IoSize::Byte, None)
        );
        assert_eq!(
            IoioInfo::new(0x190, 0),
            Err(IoioError::BadAddressSize(0x190))
        );
    }

    #[test]
    fn msr_direction() {
        assert_eq!(
            Exit::decode(ExitCode::MSR, 1, 0),
            Ok(Exit::Msr(MsrAccess::Write))
        );
        assert_eq!(
            Exit::decode(ExitCode::MSR, 0, 0),
            Ok(Exit::Msr(MsrAccess::Read))
        );
        assert_eq!(
            Exit::decode(ExitCode::MSR, 2, 0),
            Err(ExitDecodeError::MsrDirection(2))
        );
    }

    #[test]
    fn npf_bits_32_33() {
        let exit = Exit::decode(ExitCode::NPF, (1 << 32) | 0b10110, 0xFEE0_0000).unwrap();
        let Exit::NestedPageFault {
            error,
            guest_physical,
        } = exit
        else {
            panic!("not an NPF: {exit:?}");
        };
        assert!(error.contains(NpfErrorCode::FINAL_TRANSLATION));
        assert!(!error.contains(NpfErrorCode::PAGE_TABLE_WALK));
        assert!(error.contains(NpfErrorCode::WRITE | NpfErrorCode::USER | NpfErrorCode::EXECUTE));
        assert!(!error.contains(NpfErrorCode::PRESENT));
        assert_eq!(guest_physical, 0xFEE0_0000);
        // Measured under QEMU 7.2 TCG: read of an unmapped guest-physical page.
        let qemu = Exit::decode(ExitCode::NPF, 0x1_0000_0004, 0xC000_0000);
        assert_eq!(
            qemu,
            Ok(Exit::NestedPageFault {
                error: NpfErrorCode::USER | NpfErrorCode::FINAL_TRANSLATION,
                guest_physical: 0xC000_0000
            })
        );
        let walk = NpfErrorCode::from_bits_retain(1 << 33 | 1);
        assert!(walk.contains(NpfErrorCode::PAGE_TABLE_WALK | NpfErrorCode::PRESENT));
    }

    #[test]
    fn cr_dr_decode_assists() {
        assert_eq!(
            Exit::decode(ExitCode::CR3_WRITE, (1 << 63) | 5, 0),
            Ok(Exit::CrWrite {
                cr: 3,
                access: CrDrAccess::Mov { gpr: 5 }
            })
        );
        assert_eq!(
            Exit::decode(ExitCode::CR0_READ, 0, 0),
            Ok(Exit::CrRead {
                cr: 0,
                access: CrDrAccess::Other
            })
        );
        assert_eq!(
            Exit::decode(ExitCode::CR4_WRITE_TRAP, 0x20, 0),
            Ok(Exit::CrWriteTrap { cr: 4, value: 0x20 })
        );
        assert_eq!(
            Exit::decode(ExitCode::DR7_WRITE, 1, 0),
            Ok(Exit::DrWrite { dr: 7, gpr: 1 })
        );
        assert_eq!(
            Exit::decode(ExitCode::DR6_READ, 0xF, 0),
            Ok(Exit::DrRead { dr: 6, gpr: 15 })
        );
        assert_eq!(
            Exit::decode(ExitCode::SWINT, 0x80, 0),
            Ok(Exit::SoftwareInterrupt { vector: 0x80 })
        );
    }

    #[test]
    fn exceptions_invlpg_task_switch() {
        assert_eq!(
            Exit::decode(ExitCode::EXCP_PF, 2, 0xdead_b000),
            Ok(Exit::Exception {
                vector: 14,
                info1: 2,
                info2: 0xdead_b000
            })
        );
        assert_eq!(
            Exit::decode(ExitCode::INVLPG, 0x7000, 0),
            Ok(Exit::Invlpg {
                linear_address: 0x7000
            })
        );
        let ts = Exit::decode(ExitCode::TASK_SWITCH, 0x28, (1 << 44) | (1 << 36) | 0x10);
        assert_eq!(
            ts,
            Ok(Exit::TaskSwitch(TaskSwitchInfo {
                tss_selector: 0x28,
                iret: true,
                jmp: false,
                error_code: Some(0x10),
                resume_flag: false,
            }))
        );
        assert_eq!(
            Exit::decode(ExitCode::EFER_WRITE_TRAP, 0x1500, 0),
            Ok(Exit::EferWriteTrap { value: 0x1500 })
        );
    }
}
