//! Typed initial guest state: real mode, 32-bit protected mode, 64-bit long mode, or the state
//! of the running CPU (for "blue-pill" use, see [`crate::capture`]).
//!
//! Manuals: Intel® 64 and IA-32 Architectures Software Developer's Manual, Combined Volumes, Order
//! Number 325462-086US, December 2024: Vol. 3A 3.4.5 "Segment Descriptors" (the type, S, DPL, P,
//! AVL, L, D/B and G bits), 9.1.1 "Processor State After Reset", 2.5 "Control Registers"; Vol. 3C
//! 25.4.1 "Guest Register State" (Table 25-2 "Format of Access Rights", bit 16 "segment
//! unusable"), 27.3.1.2 "Checks on Guest Segment Registers". AMD64 Architecture Programmer's
//! Manual Volume 2: System Programming, Publication No. 24593, Revision 3.42, March 2024,
//! Appendix B "Layout of VMCB" (Table B-2: the 12-bit segment attribute format) and 15.5.1 "Basic
//! Operation".
//!
//! [`SegmentAccess`] is kept in the VMX access-rights layout; [`SegmentAccess::svm_attributes`]
//! converts it to the VMCB's compressed attribute format.

use bit_field::BitField;

use crate::regs::GuestRegisters;

/// Segment access rights in the VMX layout (SDM Vol. 3C 25.4.1, Table 25-2 "Format of Access
/// Rights"): the descriptor's type (3:0), S (4), DPL (6:5), P (7), AVL (12), L (13), D/B (14),
/// G (15), plus bit 16 "segment unusable" (a null selector was loaded).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SegmentAccess(pub u32);

impl core::fmt::Debug for SegmentAccess {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        if self.unusable() {
            return write!(f, "SegmentAccess(unusable)");
        }
        write!(
            f,
            "SegmentAccess(type {:#x}, s {}, dpl {}, p {}, l {}, db {}, g {})",
            self.segment_type(),
            u8::from(self.code_or_data()),
            self.dpl(),
            u8::from(self.present()),
            u8::from(self.long()),
            u8::from(self.default_big()),
            u8::from(self.granularity())
        )
    }
}

impl SegmentAccess {
    /// An unusable segment (bit 16 set): what a null selector gives.
    pub const UNUSABLE: Self = Self(1 << 16);

    const fn build(segment_type: u32, s: bool, long: bool, big: bool, granularity: bool) -> Self {
        Self(
            segment_type
                | ((s as u32) << 4)
                | (1 << 7)
                | ((long as u32) << 13)
                | ((big as u32) << 14)
                | ((granularity as u32) << 15),
        )
    }

    /// 64-bit code, execute/read, accessed, DPL 0 (L = 1, G = 1).
    pub const CODE64: Self = Self::build(0xb, true, true, false, true);
    /// 32-bit code, execute/read, accessed, DPL 0, 4 GiB (D = 1, G = 1).
    pub const CODE32: Self = Self::build(0xb, true, false, true, true);
    /// 32-bit data, read/write, accessed, DPL 0, 4 GiB (B = 1, G = 1).
    pub const DATA32: Self = Self::build(0x3, true, false, true, true);
    /// Real-mode code: execute/read, accessed, 16-bit, byte granular (SDM 9.1.1, Table 9-1).
    pub const REAL_CODE: Self = Self::build(0xb, true, false, false, false);
    /// Real-mode data: read/write, accessed, 16-bit, byte granular.
    pub const REAL_DATA: Self = Self::build(0x3, true, false, false, false);
    /// A busy 32/64-bit TSS (system type 11).
    pub const TSS_BUSY: Self = Self::build(0xb, false, false, false, false);
    /// A busy 16-bit TSS (system type 3), which VMX accepts for TR outside IA-32e mode.
    pub const TSS16_BUSY: Self = Self::build(0x3, false, false, false, false);
    /// An LDT (system type 2).
    pub const LDT: Self = Self::build(0x2, false, false, false, false);

    /// Bits 3:0: the segment type.
    #[must_use]
    pub fn segment_type(self) -> u8 {
        self.0.get_bits(0..4) as u8
    }
    /// Bit 4: code or data (1) rather than system (0).
    #[must_use]
    pub fn code_or_data(self) -> bool {
        self.0.get_bit(4)
    }
    /// Bits 6:5: the descriptor privilege level.
    #[must_use]
    pub fn dpl(self) -> u8 {
        self.0.get_bits(5..7) as u8
    }
    /// Bit 7: present.
    #[must_use]
    pub fn present(self) -> bool {
        self.0.get_bit(7)
    }
    /// Bit 13: 64-bit code segment.
    #[must_use]
    pub fn long(self) -> bool {
        self.0.get_bit(13)
    }
    /// Bit 14: default operation size / big.
    #[must_use]
    pub fn default_big(self) -> bool {
        self.0.get_bit(14)
    }
    /// Bit 15: granularity (limit in 4 KiB units).
    #[must_use]
    pub fn granularity(self) -> bool {
        self.0.get_bit(15)
    }
    /// Bit 16: unusable.
    #[must_use]
    pub fn unusable(self) -> bool {
        self.0.get_bit(16)
    }
    /// With DPL `dpl` (0–3; higher bits are dropped).
    #[must_use]
    pub fn with_dpl(mut self, dpl: u8) -> Self {
        self.0.set_bits(5..7, u32::from(dpl & 3));
        self
    }

    /// The access rights of a descriptor's high dword bits 8–23 (SDM Vol. 3A 3.4.5): type, S,
    /// DPL, P in 15:8 and AVL, L, D/B, G in 23:20.
    #[must_use]
    pub fn from_descriptor(descriptor: u64) -> Self {
        Self(((descriptor >> 40) as u32) & 0xf0ff)
    }

    /// The VMCB attribute format (APM Table B-2): bits 7:0 of these rights, then bits 15:12 in
    /// 11:8. An unusable segment has attributes 0 (not present).
    #[must_use]
    pub fn svm_attributes(self) -> u16 {
        if self.unusable() {
            return 0;
        }
        ((self.0 & 0xff) | ((self.0 >> 4) & 0xf00)) as u16
    }

    /// From the VMCB attribute format (a non-present segment other than CS becomes unusable).
    #[must_use]
    pub fn from_svm_attributes(attributes: u16) -> Self {
        let a = u32::from(attributes);
        let rights = Self((a & 0xff) | ((a & 0xf00) << 4));
        if rights.present() {
            rights
        } else {
            Self::UNUSABLE
        }
    }
}

/// A segment register with its hidden part.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Segment {
    /// The visible selector.
    pub selector: u16,
    /// The base address.
    pub base: u64,
    /// The limit in bytes (already scaled by the granularity bit).
    pub limit: u32,
    /// The access rights.
    pub access: SegmentAccess,
}

impl Segment {
    /// An unusable (null) segment.
    pub const NULL: Self = Self {
        selector: 0,
        base: 0,
        limit: 0,
        access: SegmentAccess::UNUSABLE,
    };

    /// A flat segment (base 0, limit 4 GiB − 1).
    #[must_use]
    pub const fn flat(selector: u16, access: SegmentAccess) -> Self {
        Self {
            selector,
            base: 0,
            limit: 0xffff_ffff,
            access,
        }
    }

    /// A real-mode segment: base = selector × 16, limit 64 KiB − 1.
    #[must_use]
    pub const fn real_mode(selector: u16, access: SegmentAccess) -> Self {
        Self {
            selector,
            base: (selector as u64) << 4,
            limit: 0xffff,
            access,
        }
    }
}

/// The segment registers, by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SegmentName {
    /// ES.
    Es,
    /// CS.
    Cs,
    /// SS.
    Ss,
    /// DS.
    Ds,
    /// FS.
    Fs,
    /// GS.
    Gs,
    /// TR.
    Tr,
    /// LDTR.
    Ldtr,
}

/// A descriptor-table register (GDTR or IDTR).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct DescriptorTable {
    /// The linear base address.
    pub base: u64,
    /// The limit (size − 1).
    pub limit: u16,
}

/// CR0.PE (bit 0) (SDM Vol. 3A 2.5 "Control Registers").
pub const CR0_PE: u64 = 1 << 0;
/// CR0.MP (bit 1).
pub const CR0_MP: u64 = 1 << 1;
/// CR0.ET (bit 4).
pub const CR0_ET: u64 = 1 << 4;
/// CR0.NE (bit 5).
pub const CR0_NE: u64 = 1 << 5;
/// CR0.WP (bit 16).
pub const CR0_WP: u64 = 1 << 16;
/// CR0.PG (bit 31).
pub const CR0_PG: u64 = 1 << 31;
/// CR4.PAE (bit 5).
pub const CR4_PAE: u64 = 1 << 5;
/// CR4.OSFXSR (bit 9).
pub const CR4_OSFXSR: u64 = 1 << 9;
/// CR4.OSXMMEXCPT (bit 10).
pub const CR4_OSXMMEXCPT: u64 = 1 << 10;
/// CR4.VMXE (bit 13).
pub const CR4_VMXE: u64 = 1 << 13;
/// CR4.OSXSAVE (bit 18).
pub const CR4_OSXSAVE: u64 = 1 << 18;
/// IA32_EFER.LME (bit 8) (SDM Vol. 4, Table 2-2, MSR C000_0080H).
pub const EFER_LME: u64 = 1 << 8;
/// IA32_EFER.LMA (bit 10).
pub const EFER_LMA: u64 = 1 << 10;
/// IA32_EFER.NXE (bit 11).
pub const EFER_NXE: u64 = 1 << 11;
/// IA32_EFER.SVME (bit 12) (APM 15.4 "Enabling SVM").
pub const EFER_SVME: u64 = 1 << 12;
/// RFLAGS bit 1, always 1.
pub const RFLAGS_FIXED: u64 = 1 << 1;
/// RFLAGS.TF (bit 8).
pub const RFLAGS_TF: u64 = 1 << 8;
/// RFLAGS.IF (bit 9).
pub const RFLAGS_IF: u64 = 1 << 9;
/// The reset value of IA32_PAT (SDM Vol. 3A 13.12.4 "Programming the PAT").
pub const PAT_RESET: u64 = 0x0007_0406_0007_0406;

/// The guest's initial register state, vendor-neutral. The backends turn it into VMCS fields or
/// VMCB state; the CR0/CR4 bits VMX forces on (IA32_VMX_CR0/CR4_FIXED0) are added there and
/// hidden from the guest by read shadows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GuestState {
    /// The GPRs other than RSP.
    pub regs: GuestRegisters,
    /// RIP.
    pub rip: u64,
    /// RSP.
    pub rsp: u64,
    /// RFLAGS.
    pub rflags: u64,
    /// CR0.
    pub cr0: u64,
    /// CR3.
    pub cr3: u64,
    /// CR4.
    pub cr4: u64,
    /// IA32_EFER.
    pub efer: u64,
    /// DR7.
    pub dr7: u64,
    /// IA32_PAT.
    pub pat: u64,
    /// CS.
    pub cs: Segment,
    /// SS.
    pub ss: Segment,
    /// DS.
    pub ds: Segment,
    /// ES.
    pub es: Segment,
    /// FS.
    pub fs: Segment,
    /// GS.
    pub gs: Segment,
    /// TR.
    pub tr: Segment,
    /// LDTR.
    pub ldtr: Segment,
    /// GDTR.
    pub gdtr: DescriptorTable,
    /// IDTR.
    pub idtr: DescriptorTable,
    /// IA32_SYSENTER_CS.
    pub sysenter_cs: u32,
    /// IA32_SYSENTER_ESP.
    pub sysenter_esp: u64,
    /// IA32_SYSENTER_EIP.
    pub sysenter_eip: u64,
}

impl GuestState {
    fn base(cr0: u64, rip: u64, rsp: u64) -> Self {
        Self {
            regs: GuestRegisters::default(),
            rip,
            rsp,
            rflags: RFLAGS_FIXED,
            cr0,
            cr3: 0,
            cr4: 0,
            efer: 0,
            dr7: 0x400,
            pat: PAT_RESET,
            cs: Segment::NULL,
            ss: Segment::NULL,
            ds: Segment::NULL,
            es: Segment::NULL,
            fs: Segment::NULL,
            gs: Segment::NULL,
            tr: Segment {
                selector: 0,
                base: 0,
                limit: 0xffff,
                access: SegmentAccess::TSS16_BUSY,
            },
            ldtr: Segment::NULL,
            gdtr: DescriptorTable {
                base: 0,
                limit: 0xffff,
            },
            idtr: DescriptorTable {
                base: 0,
                limit: 0xffff,
            },
            sysenter_cs: 0,
            sysenter_esp: 0,
            sysenter_eip: 0,
        }
    }

    /// Real mode at `cs:ip` with the stack at `ss:sp` = `0:sp` (SDM 9.1.1: paging and protection
    /// off, 64 KiB segments). On VMX this needs "unrestricted guest"; the backend reports
    /// [`crate::VcpuError::Unsupported`] without it.
    #[must_use]
    pub fn real_mode(cs: u16, ip: u16, sp: u16) -> Self {
        let data = Segment::real_mode(0, SegmentAccess::REAL_DATA);
        let mut s = Self::base(CR0_ET, u64::from(ip), u64::from(sp));
        s.cs = Segment::real_mode(cs, SegmentAccess::REAL_CODE);
        s.ss = data;
        s.ds = data;
        s.es = data;
        s.fs = data;
        s.gs = data;
        s.ldtr = Segment {
            access: SegmentAccess::LDT,
            limit: 0xffff,
            ..Segment::NULL
        };
        s
    }

    /// 32-bit protected mode without paging, flat 4 GiB segments (CS selector 0x08, data 0x10),
    /// at `eip` with the stack at `esp`. The guest must load its own GDT before reloading a
    /// segment register or taking an interrupt (GDTR and IDTR are empty).
    #[must_use]
    pub fn protected_mode_flat(eip: u32, esp: u32) -> Self {
        let mut s = Self::base(CR0_PE | CR0_ET | CR0_NE, u64::from(eip), u64::from(esp));
        let data = Segment::flat(0x10, SegmentAccess::DATA32);
        s.cs = Segment::flat(0x08, SegmentAccess::CODE32);
        s.ss = data;
        s.ds = data;
        s.es = data;
        s.fs = data;
        s.gs = data;
        s.tr = Segment {
            selector: 0x18,
            base: 0,
            limit: 0x67,
            access: SegmentAccess::TSS_BUSY,
        };
        s.gdtr.limit = 0;
        s.idtr.limit = 0;
        s
    }

    /// 64-bit long mode with 4-level paging rooted at guest-physical `cr3`, flat segments (CS
    /// 0x08, data 0x10, TR 0x18), SSE enabled, NX enabled, at `rip` with the stack at `rsp`.
    /// As in [`protected_mode_flat`](Self::protected_mode_flat), GDTR and IDTR are empty: the
    /// guest loads its own tables before reloading a segment register or taking an interrupt
    /// or exception (or the caller sets [`gdtr`](Self::gdtr) and [`idtr`](Self::idtr)).
    #[must_use]
    pub fn long_mode_flat(cr3: u64, rip: u64, rsp: u64) -> Self {
        let mut s = Self::base(
            CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_PG,
            rip,
            rsp,
        );
        s.cr3 = cr3;
        s.cr4 = CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT;
        s.efer = EFER_LME | EFER_LMA | EFER_NXE;
        let data = Segment::flat(0x10, SegmentAccess::DATA32);
        s.cs = Segment::flat(0x08, SegmentAccess::CODE64);
        s.ss = data;
        s.ds = data;
        s.es = data;
        s.fs = data;
        s.gs = data;
        s.tr = Segment {
            selector: 0x18,
            base: 0,
            limit: 0x67,
            access: SegmentAccess::TSS_BUSY,
        };
        s.gdtr.limit = 0;
        s.idtr.limit = 0;
        s
    }

    /// Whether the state is in IA-32e mode (EFER.LMA).
    #[must_use]
    pub fn long_mode(&self) -> bool {
        self.efer & EFER_LMA != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_rights_match_the_manual_layouts() {
        assert_eq!(SegmentAccess::CODE64.0, 0xa09b);
        assert_eq!(SegmentAccess::CODE32.0, 0xc09b);
        assert_eq!(SegmentAccess::DATA32.0, 0xc093);
        assert_eq!(SegmentAccess::REAL_CODE.0, 0x9b);
        assert_eq!(SegmentAccess::TSS_BUSY.0, 0x8b);
        assert_eq!(SegmentAccess::CODE64.svm_attributes(), 0xa9b);
        assert_eq!(
            SegmentAccess::from_svm_attributes(0xc93),
            SegmentAccess::DATA32
        );
        assert_eq!(
            SegmentAccess::from_svm_attributes(0),
            SegmentAccess::UNUSABLE
        );
        assert_eq!(SegmentAccess::UNUSABLE.svm_attributes(), 0);
        // A 64-bit code descriptor 0x00af_9b00_0000_ffff.
        let d = SegmentAccess::from_descriptor(0x00af_9b00_0000_ffff);
        assert!(d.long() && d.present() && d.granularity() && d.code_or_data());
        assert_eq!(d.with_dpl(3).dpl(), 3);
        assert!(format!("{:?}", SegmentAccess::UNUSABLE).contains("unusable"));
    }

    #[test]
    fn presets() {
        let r = GuestState::real_mode(0xf000, 0xfff0, 0x7c00);
        assert_eq!(r.cs.base, 0xf_0000);
        assert_eq!(r.cr0 & CR0_PE, 0);
        assert!(!r.long_mode());
        let p = GuestState::protected_mode_flat(0x10_0000, 0x8000);
        assert_eq!(
            (p.rip, p.cs.limit, p.cr0 & CR0_PE),
            (0x10_0000, 0xffff_ffff, 1)
        );
        let l = GuestState::long_mode_flat(0x1000, 0x20_0000, 0x30_0000);
        assert!(l.long_mode() && l.cs.access.long());
        assert_eq!(l.cr0 & CR0_PG, CR0_PG);
    }
}
