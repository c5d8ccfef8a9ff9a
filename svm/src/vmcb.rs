//! The Virtual Machine Control Block: control area, state save area, clean-bit tracking.
//!
//! Manual: AMD64 Architecture Programmer's Manual Volume 2: System Programming, Publication
//! No. 24593, Revision 3.42, March 2024 — Appendix B "Layout of VMCB" (Table B-1 "VMCB Layout,
//! Control Area", Table B-2 "VMCB Layout, State Save Area"), Section 15.5 "VMRUN Instruction",
//! Section 15.15 "VMCB State Caching" (15.15.3 "VMCB Clean Field", Figure 15-4) and Section 15.16
//! "TLB Control" (Table 15-9).
//!
//! # Layout
//! [`Vmcb`] is one 4 KiB page: [`ControlArea`] (1 KiB at offset 000h) then [`StateSaveArea`]
//! (3 KiB at offset 400h). Every offset Table B-1 and Table B-2 give is pinned by a `const`
//! assertion (see [`CONTROL_AREA_OFFSETS`] and [`STATE_SAVE_AREA_OFFSETS`]), as are the sizes.
//!
//! # Clean bits done right
//! VMRUN may load state from its VMCB cache for every group whose clean bit is set (15.15). The
//! fields are private: reads go through getters on [`ControlArea`] / [`StateSaveArea`], writes
//! through setters on [`Vmcb`], and each setter of a cached field clears that field's clean bit.
//! A run loop can therefore call [`Vmcb::mark_all_clean`] after every #VMEXIT and stay correct:
//! whatever it changes before the next VMRUN is reloaded. [`Vmcb::mark_all_clean`] sets only
//! the bits Figure 15-4 defines (12:0); the reserved bits stay zero, which 15.15.3 requires once
//! any field outside the defined groups has been modified. Use [`Vmcb::mark_all_dirty`] the first
//! time a guest runs, after moving it to another CPU or after moving the VMCB page.
//!
//! # A VMCB the CPU writes
//! The CPU writes the VMCB only during VMRUN (guest state and exit information on #VMEXIT) and
//! VMSAVE. The wrappers in [`crate::instructions`] take `&mut Vmcb` for exactly that reason, so
//! the compiler never caches a field across them. A VMCB that some other agent may write while
//! Rust code looks at it (another CPU, SMM, a debugger) must be reached through
//! [`crate::instructions::VmcbPtr`], which uses volatile accesses.

use crate::event::EventInjection;
use crate::exit::ExitCode;
use crate::intercept::{
    CrIntercepts, DrIntercepts, ExceptionIntercepts, MiscIntercepts1, MiscIntercepts2,
    MiscIntercepts3,
};
use crate::segment::Segment;
use bit_field::BitField;
use bitflags::bitflags;
use core::mem::{offset_of, size_of};
use x86_64::PhysAddr;

bitflags! {
    /// The VMCB Clean field (control-area offset 0C0h, bits 31:0; APM 15.15.3 Figure 15-4).
    ///
    /// A set bit lets VMRUN use its cached copy of that group; a clear bit forces a reload.
    #[repr(transparent)]
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct CleanBits: u32 {
        /// Bit 0, I: all intercept vectors, TSC offset, pause filter count/threshold.
        const INTERCEPTS = 1 << 0;
        /// Bit 1, IOPM: IOPM_BASE, MSRPM_BASE.
        const IOPM = 1 << 1;
        /// Bit 2, ASID.
        const ASID = 1 << 2;
        /// Bit 3, TPR: V_TPR, V_IRQ, V_INTR_PRIO, V_IGN_TPR, V_INTR_MASKING, V_INTR_VECTOR
        /// (offset 60h–67h).
        const TPR = 1 << 3;
        /// Bit 4, NP: nested paging, N_CR3, G_PAT.
        const NP = 1 << 4;
        /// Bit 5, CRx: CR0, CR3, CR4, EFER.
        const CRX = 1 << 5;
        /// Bit 6, DRx: DR6, DR7.
        const DRX = 1 << 6;
        /// Bit 7, DT: GDT/IDT limit and base.
        const DT = 1 << 7;
        /// Bit 8, SEG: CS/DS/SS/ES selector/base/limit/attributes, CPL.
        const SEG = 1 << 8;
        /// Bit 9, CR2.
        const CR2 = 1 << 9;
        /// Bit 10, LBR: DebugCtl, br_from/to, lastint_from/to.
        const LBR = 1 << 10;
        /// Bit 11, AVIC: APIC_BAR, APIC backing page, physical and logical table pointers.
        const AVIC = 1 << 11;
        /// Bit 12, CET: S_CET, SSP, ISST_ADDR.
        const CET = 1 << 12;
    }
}

/// The TLB_CONTROL byte (control-area offset 058h bits 39:32; APM 15.16.1 Table 15-9). Open:
/// other encodings are reserved but still data.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(transparent)]
pub struct TlbControl(pub u8);

impl TlbControl {
    /// 00h: do not flush.
    pub const DO_NOTHING: Self = Self(0x00);
    /// 01h: flush the entire TLB (all entries, all ASIDs); for legacy hardware.
    pub const FLUSH_ALL: Self = Self(0x01);
    /// 03h: flush this guest's TLB entries (needs FlushByAsid).
    pub const FLUSH_GUEST: Self = Self(0x03);
    /// 07h: flush this guest's non-global TLB entries (needs FlushByAsid).
    pub const FLUSH_GUEST_NON_GLOBAL: Self = Self(0x07);

    /// The APM meaning of a defined encoding.
    #[must_use]
    pub const fn name(self) -> Option<&'static str> {
        match self.0 {
            0x00 => Some("DO_NOTHING"),
            0x01 => Some("FLUSH_ALL"),
            0x03 => Some("FLUSH_GUEST"),
            0x07 => Some("FLUSH_GUEST_NON_GLOBAL"),
            _ => None,
        }
    }
}

impl core::fmt::Debug for TlbControl {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.name() {
            Some(name) => write!(f, "TlbControl::{name}"),
            None => write!(f, "TlbControl({:#x})", self.0),
        }
    }
}

/// Virtual interrupt control, control-area offset 060h (APM Table B-1; Sections 15.21.4
/// "Injecting Virtual (INTR) Interrupts", 15.21.10 "NMI Virtualization", 15.29 "AVIC").
///
/// Bits: 7:0 V_TPR, 8 V_IRQ, 9 VGIF, 11 V_NMI, 12 V_NMI_MASK, 19:16 V_INTR_PRIO, 20 V_IGN_TPR,
/// 24 V_INTR_MASKING, 25 V_GIF_ENABLE, 26 V_NMI_ENABLE, 30 x2AVIC enable, 31 AVIC enable,
/// 39:32 V_INTR_VECTOR.
#[repr(transparent)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, Debug)]
pub struct VirtualInterrupt(u64);

macro_rules! vintr_bit {
    ($(#[$doc:meta])* $get:ident, $with:ident, $bit:expr) => {
        $(#[$doc])*
        #[must_use]
        pub fn $get(self) -> bool {
            self.0.get_bit($bit)
        }
        #[doc = concat!("Returns a copy with `", stringify!($get), "` set to `value`.")]
        #[must_use]
        pub fn $with(mut self, value: bool) -> Self {
            self.0.set_bit($bit, value);
            self
        }
    };
}

impl VirtualInterrupt {
    /// Wraps the raw 64-bit field.
    #[must_use]
    pub const fn from_bits(bits: u64) -> Self {
        Self(bits)
    }

    /// The raw 64-bit field.
    #[must_use]
    pub const fn bits(self) -> u64 {
        self.0
    }

    /// V_TPR, bits 7:0 (bits 3:0 used; written back on #VMEXIT).
    #[must_use]
    #[expect(clippy::cast_possible_truncation, reason = "an 8-bit field")]
    pub fn v_tpr(self) -> u8 {
        self.0.get_bits(0..8) as u8
    }

    /// Returns a copy with V_TPR = `tpr & 0xF`.
    #[must_use]
    pub fn with_v_tpr(mut self, tpr: u8) -> Self {
        self.0.set_bits(0..8, u64::from(tpr & 0xF));
        self
    }

    vintr_bit!(
        /// V_IRQ, bit 8: a virtual INTR is pending (written back on #VMEXIT).
        v_irq, with_v_irq, 8
    );
    vintr_bit!(
        /// VGIF, bit 9: value of the virtual GIF.
        vgif, with_vgif, 9
    );
    vintr_bit!(
        /// V_NMI, bit 11: a virtual NMI is pending.
        v_nmi, with_v_nmi, 11
    );
    vintr_bit!(
        /// V_NMI_MASK, bit 12: virtual NMIs are masked.
        v_nmi_mask, with_v_nmi_mask, 12
    );
    vintr_bit!(
        /// V_IGN_TPR, bit 20: the pending virtual interrupt ignores V_TPR.
        v_ign_tpr, with_v_ign_tpr, 20
    );
    vintr_bit!(
        /// V_INTR_MASKING, bit 24: virtualize INTR masking (15.21.1).
        v_intr_masking, with_v_intr_masking, 24
    );
    vintr_bit!(
        /// Bit 25: virtual GIF enabled for this guest.
        vgif_enable, with_vgif_enable, 25
    );
    vintr_bit!(
        /// V_NMI_ENABLE, bit 26: NMI virtualization (requires the NMI intercept, 15.21.10).
        v_nmi_enable, with_v_nmi_enable, 26
    );
    vintr_bit!(
        /// Bit 30: x2AVIC enable.
        x2avic_enable, with_x2avic_enable, 30
    );
    vintr_bit!(
        /// Bit 31: AVIC enable.
        avic_enable, with_avic_enable, 31
    );

    /// V_INTR_PRIO, bits 19:16.
    #[must_use]
    #[expect(clippy::cast_possible_truncation, reason = "a 4-bit field")]
    pub fn v_intr_prio(self) -> u8 {
        self.0.get_bits(16..20) as u8
    }

    /// Returns a copy with V_INTR_PRIO = `prio & 0xF`.
    #[must_use]
    pub fn with_v_intr_prio(mut self, prio: u8) -> Self {
        self.0.set_bits(16..20, u64::from(prio & 0xF));
        self
    }

    /// V_INTR_VECTOR, bits 39:32.
    #[must_use]
    #[expect(clippy::cast_possible_truncation, reason = "an 8-bit field")]
    pub fn v_intr_vector(self) -> u8 {
        self.0.get_bits(32..40) as u8
    }

    /// Returns a copy with V_INTR_VECTOR = `vector`.
    #[must_use]
    pub fn with_v_intr_vector(mut self, vector: u8) -> Self {
        self.0.set_bits(32..40, u64::from(vector));
        self
    }
}

bitflags! {
    /// Control-area offset 068h: interrupt shadow state (APM Table B-1; 15.21.5 "Interrupt
    /// Shadows"). Not covered by a clean bit.
    #[repr(transparent)]
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct InterruptState: u64 {
        /// Bit 0, INTERRUPT_SHADOW: the guest is in an interrupt shadow.
        const INTERRUPT_SHADOW = 1 << 0;
        /// Bit 1, GUEST_INTERRUPT_MASK: RFLAGS.IF of an SEV-ES guest (written on #VMEXIT).
        const GUEST_INTERRUPT_MASK = 1 << 1;
    }
}

bitflags! {
    /// Control-area offset 090h: nested paging and SEV enables (APM Table B-1; 15.25.3
    /// "Enabling Nested Paging", 15.34 "Secure Encrypted Virtualization").
    #[repr(transparent)]
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct NestedControl: u64 {
        /// Bit 0, NP_ENABLE: enable nested paging.
        const NP_ENABLE = 1 << 0;
        /// Bit 1: enable Secure Encrypted Virtualization.
        const SEV_ENABLE = 1 << 1;
        /// Bit 2: enable encrypted state (SEV-ES).
        const SEV_ES_ENABLE = 1 << 2;
        /// Bit 3: guest mode execute trap (GMET).
        const GMET_ENABLE = 1 << 3;
        /// Bit 4, SSSCheckEn: supervisor shadow stack restrictions in nested page tables.
        const SSS_CHECK_ENABLE = 1 << 4;
        /// Bit 5: virtual transparent encryption.
        const VIRTUAL_TRANSPARENT_ENCRYPTION = 1 << 5;
        /// Bit 6: read-only guest page tables.
        const READ_ONLY_GUEST_PAGE_TABLES = 1 << 6;
        /// Bit 7: INVLPGB/TLBSYNC may execute in the guest.
        const INVLPGB_TLBSYNC_ENABLE = 1 << 7;
    }
}

bitflags! {
    /// Control-area offset 0B8h: LBR, VMSAVE/VMLOAD, IBS and PMC virtualization enables (APM
    /// Table B-1; 15.23 "Last Branch Record Virtualization", 15.33.1 "VMSAVE and VMLOAD
    /// Virtualization").
    #[repr(transparent)]
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct VirtualizationExtensions: u64 {
        /// Bit 0: LBR virtualization.
        const LBR_VIRTUALIZATION = 1 << 0;
        /// Bit 1: virtualized VMSAVE/VMLOAD.
        const VMSAVE_VMLOAD_VIRTUALIZATION = 1 << 1;
        /// Bit 2: IBS virtualization.
        const IBS_VIRTUALIZATION = 1 << 2;
        /// Bit 3: PMC virtualization.
        const PMC_VIRTUALIZATION = 1 << 3;
    }
}

/// The VMCB control area: 1 KiB at offset 000h (APM Table B-1). Read it through the getters;
/// write it through the setters on [`Vmcb`], which keep the clean bits right.
#[repr(C)]
#[derive(Clone)]
pub struct ControlArea {
    intercept_cr: CrIntercepts,
    intercept_dr: DrIntercepts,
    intercept_exceptions: ExceptionIntercepts,
    intercept_misc1: MiscIntercepts1,
    intercept_misc2: MiscIntercepts2,
    intercept_misc3: MiscIntercepts3,
    reserved_018: [u8; 0x24],
    pause_filter_threshold: u16,
    pause_filter_count: u16,
    iopm_base_pa: PhysAddr,
    msrpm_base_pa: PhysAddr,
    tsc_offset: u64,
    guest_asid: u32,
    tlb_control: TlbControl,
    reserved_05d: [u8; 3],
    virtual_interrupt: VirtualInterrupt,
    interrupt_state: InterruptState,
    exit_code: ExitCode,
    exit_info1: u64,
    exit_info2: u64,
    exit_int_info: EventInjection,
    nested_control: NestedControl,
    avic_apic_bar: u64,
    ghcb_gpa: u64,
    event_injection: EventInjection,
    nested_cr3: PhysAddr,
    virtualization_extensions: VirtualizationExtensions,
    clean_bits: CleanBits,
    reserved_0c4: u32,
    next_rip: u64,
    guest_instruction_length: u8,
    guest_instruction_bytes: [u8; 15],
    avic_backing_page: u64,
    reserved_0e8: u64,
    avic_logical_table: u64,
    avic_physical_table: u64,
    reserved_100: u64,
    vmsa_pointer: u64,
    vmgexit_rax: u64,
    vmgexit_cpl: u8,
    reserved_119: [u8; 7],
    bus_lock_counter: u16,
    reserved_122: [u8; 0x12],
    update_irr: u32,
    allowed_sev_features: u64,
    guest_sev_features: u64,
    reserved_148: u64,
    requested_irr: [u64; 4],
    reserved_170: [u8; 0x270],
    host_reserved: [u8; 0x20],
}

/// The VMCB state save area: 3 KiB at offset 400h (APM Table B-2; Table B-2 offsets are
/// relative to the start of this area).
#[repr(C)]
#[derive(Clone)]
pub struct StateSaveArea {
    es: Segment,
    cs: Segment,
    ss: Segment,
    ds: Segment,
    fs: Segment,
    gs: Segment,
    gdtr: Segment,
    ldtr: Segment,
    idtr: Segment,
    tr: Segment,
    reserved_0a0: [u8; 0x2B],
    cpl: u8,
    reserved_0cc: u32,
    efer: u64,
    reserved_0d8: u64,
    perf_ctl_ctr: [u64; 12],
    reserved_140: u64,
    cr4: u64,
    cr3: u64,
    cr0: u64,
    dr7: u64,
    dr6: u64,
    rflags: u64,
    rip: u64,
    reserved_180: [u8; 0x40],
    instr_retired_ctr: u64,
    perf_ctr_global_sts: u64,
    perf_ctr_global_ctl: u32,
    reserved_1d4: u32,
    rsp: u64,
    s_cet: u64,
    ssp: u64,
    isst_addr: u64,
    rax: u64,
    star: u64,
    lstar: u64,
    cstar: u64,
    sfmask: u64,
    kernel_gs_base: u64,
    sysenter_cs: u64,
    sysenter_esp: u64,
    sysenter_eip: u64,
    cr2: u64,
    reserved_248: [u8; 0x20],
    g_pat: u64,
    dbgctl: u64,
    br_from: u64,
    br_to: u64,
    last_excp_from: u64,
    last_excp_to: u64,
    dbgextncfg: u64,
    reserved_2a0: [u8; 0x40],
    spec_ctrl: u64,
    reserved_2e8: [u8; 0x388],
    lbr_stack: [u64; 32],
    lbr_select: u64,
    ibs_fetch_ctl: u64,
    ibs_fetch_linaddr: u64,
    ibs_op_ctl: u64,
    ibs_op_rip: u64,
    ibs_op_data: u64,
    ibs_op_data2: u64,
    ibs_op_data3: u64,
    ibs_dc_linaddr: u64,
    bp_ibstgt_rip: u64,
    ic_ibs_extd_ctl: u64,
    reserved_7c8: [u8; 0x438],
}

/// A Virtual Machine Control Block: one 4 KiB-aligned page (APM Appendix B).
///
/// `Vmcb::new()` is all zeros, as 15.5.1 recommends for a new VMCB ("All unused bytes must be
/// zero"). Hand VMRUN its physical address; see the crate-level walkthrough.
#[repr(C, align(4096))]
#[derive(Clone, Debug)]
pub struct Vmcb {
    control: ControlArea,
    save: StateSaveArea,
}

/// Offset pins for [`ControlArea`]: (APM field name, `offset_of!`, Table B-1 offset). A `const`
/// assertion checks every row; the unit tests check the table itself.
pub const CONTROL_AREA_OFFSETS: &[(&str, usize, usize)] = &[
    (
        "intercept CR (vector 0)",
        offset_of!(ControlArea, intercept_cr),
        0x000,
    ),
    (
        "intercept DR (vector 1)",
        offset_of!(ControlArea, intercept_dr),
        0x004,
    ),
    (
        "intercept exceptions (vector 2)",
        offset_of!(ControlArea, intercept_exceptions),
        0x008,
    ),
    (
        "intercept vector 3",
        offset_of!(ControlArea, intercept_misc1),
        0x00C,
    ),
    (
        "intercept vector 4",
        offset_of!(ControlArea, intercept_misc2),
        0x010,
    ),
    (
        "intercept vector 5",
        offset_of!(ControlArea, intercept_misc3),
        0x014,
    ),
    (
        "PAUSE filter threshold",
        offset_of!(ControlArea, pause_filter_threshold),
        0x03C,
    ),
    (
        "PAUSE filter count",
        offset_of!(ControlArea, pause_filter_count),
        0x03E,
    ),
    ("IOPM_BASE_PA", offset_of!(ControlArea, iopm_base_pa), 0x040),
    (
        "MSRPM_BASE_PA",
        offset_of!(ControlArea, msrpm_base_pa),
        0x048,
    ),
    ("TSC_OFFSET", offset_of!(ControlArea, tsc_offset), 0x050),
    ("guest ASID", offset_of!(ControlArea, guest_asid), 0x058),
    ("TLB_CONTROL", offset_of!(ControlArea, tlb_control), 0x05C),
    (
        "V_TPR..V_INTR_VECTOR",
        offset_of!(ControlArea, virtual_interrupt),
        0x060,
    ),
    (
        "INTERRUPT_SHADOW",
        offset_of!(ControlArea, interrupt_state),
        0x068,
    ),
    ("EXITCODE", offset_of!(ControlArea, exit_code), 0x070),
    ("EXITINFO1", offset_of!(ControlArea, exit_info1), 0x078),
    ("EXITINFO2", offset_of!(ControlArea, exit_info2), 0x080),
    ("EXITINTINFO", offset_of!(ControlArea, exit_int_info), 0x088),
    (
        "NP_ENABLE/SEV enables",
        offset_of!(ControlArea, nested_control),
        0x090,
    ),
    (
        "AVIC APIC_BAR",
        offset_of!(ControlArea, avic_apic_bar),
        0x098,
    ),
    (
        "GHCB guest physical address",
        offset_of!(ControlArea, ghcb_gpa),
        0x0A0,
    ),
    ("EVENTINJ", offset_of!(ControlArea, event_injection), 0x0A8),
    ("N_CR3", offset_of!(ControlArea, nested_cr3), 0x0B0),
    (
        "LBR/VMSAVE-VMLOAD virtualization",
        offset_of!(ControlArea, virtualization_extensions),
        0x0B8,
    ),
    (
        "VMCB clean bits",
        offset_of!(ControlArea, clean_bits),
        0x0C0,
    ),
    ("nRIP", offset_of!(ControlArea, next_rip), 0x0C8),
    (
        "number of bytes fetched",
        offset_of!(ControlArea, guest_instruction_length),
        0x0D0,
    ),
    (
        "guest instruction bytes",
        offset_of!(ControlArea, guest_instruction_bytes),
        0x0D1,
    ),
    (
        "AVIC APIC_BACKING_PAGE pointer",
        offset_of!(ControlArea, avic_backing_page),
        0x0E0,
    ),
    (
        "AVIC_LOGICAL_TABLE pointer",
        offset_of!(ControlArea, avic_logical_table),
        0x0F0,
    ),
    (
        "AVIC_PHYSICAL_TABLE pointer",
        offset_of!(ControlArea, avic_physical_table),
        0x0F8,
    ),
    ("VMSA pointer", offset_of!(ControlArea, vmsa_pointer), 0x108),
    ("VMGEXIT_RAX", offset_of!(ControlArea, vmgexit_rax), 0x110),
    ("VMGEXIT_CPL", offset_of!(ControlArea, vmgexit_cpl), 0x118),
    (
        "bus lock threshold counter",
        offset_of!(ControlArea, bus_lock_counter),
        0x120,
    ),
    ("UPDATE_IRR", offset_of!(ControlArea, update_irr), 0x134),
    (
        "ALLOWED_SEV_FEATURES",
        offset_of!(ControlArea, allowed_sev_features),
        0x138,
    ),
    (
        "GUEST_SEV_FEATURES",
        offset_of!(ControlArea, guest_sev_features),
        0x140,
    ),
    (
        "REQUESTED_IRR",
        offset_of!(ControlArea, requested_irr),
        0x150,
    ),
    (
        "reserved for host usage",
        offset_of!(ControlArea, host_reserved),
        0x3E0,
    ),
];

/// Offset pins for [`StateSaveArea`]: (APM field name, `offset_of!`, Table B-2 offset relative
/// to the state save area). Add 400h for the offset within the VMCB.
pub const STATE_SAVE_AREA_OFFSETS: &[(&str, usize, usize)] = &[
    ("ES", offset_of!(StateSaveArea, es), 0x000),
    ("CS", offset_of!(StateSaveArea, cs), 0x010),
    ("SS", offset_of!(StateSaveArea, ss), 0x020),
    ("DS", offset_of!(StateSaveArea, ds), 0x030),
    ("FS", offset_of!(StateSaveArea, fs), 0x040),
    ("GS", offset_of!(StateSaveArea, gs), 0x050),
    ("GDTR", offset_of!(StateSaveArea, gdtr), 0x060),
    ("LDTR", offset_of!(StateSaveArea, ldtr), 0x070),
    ("IDTR", offset_of!(StateSaveArea, idtr), 0x080),
    ("TR", offset_of!(StateSaveArea, tr), 0x090),
    ("CPL", offset_of!(StateSaveArea, cpl), 0x0CB),
    ("EFER", offset_of!(StateSaveArea, efer), 0x0D0),
    ("PERF_CTL0", offset_of!(StateSaveArea, perf_ctl_ctr), 0x0E0),
    ("CR4", offset_of!(StateSaveArea, cr4), 0x148),
    ("CR3", offset_of!(StateSaveArea, cr3), 0x150),
    ("CR0", offset_of!(StateSaveArea, cr0), 0x158),
    ("DR7", offset_of!(StateSaveArea, dr7), 0x160),
    ("DR6", offset_of!(StateSaveArea, dr6), 0x168),
    ("RFLAGS", offset_of!(StateSaveArea, rflags), 0x170),
    ("RIP", offset_of!(StateSaveArea, rip), 0x178),
    (
        "INSTR_RETIRED_CTR",
        offset_of!(StateSaveArea, instr_retired_ctr),
        0x1C0,
    ),
    (
        "PERF_CTR_GLOBAL_STS",
        offset_of!(StateSaveArea, perf_ctr_global_sts),
        0x1C8,
    ),
    (
        "PERF_CTR_GLOBAL_CTL",
        offset_of!(StateSaveArea, perf_ctr_global_ctl),
        0x1D0,
    ),
    ("RSP", offset_of!(StateSaveArea, rsp), 0x1D8),
    ("S_CET", offset_of!(StateSaveArea, s_cet), 0x1E0),
    ("SSP", offset_of!(StateSaveArea, ssp), 0x1E8),
    ("ISST_ADDR", offset_of!(StateSaveArea, isst_addr), 0x1F0),
    ("RAX", offset_of!(StateSaveArea, rax), 0x1F8),
    ("STAR", offset_of!(StateSaveArea, star), 0x200),
    ("LSTAR", offset_of!(StateSaveArea, lstar), 0x208),
    ("CSTAR", offset_of!(StateSaveArea, cstar), 0x210),
    ("SFMASK", offset_of!(StateSaveArea, sfmask), 0x218),
    (
        "KernelGsBase",
        offset_of!(StateSaveArea, kernel_gs_base),
        0x220,
    ),
    ("SYSENTER_CS", offset_of!(StateSaveArea, sysenter_cs), 0x228),
    (
        "SYSENTER_ESP",
        offset_of!(StateSaveArea, sysenter_esp),
        0x230,
    ),
    (
        "SYSENTER_EIP",
        offset_of!(StateSaveArea, sysenter_eip),
        0x238,
    ),
    ("CR2", offset_of!(StateSaveArea, cr2), 0x240),
    ("G_PAT", offset_of!(StateSaveArea, g_pat), 0x268),
    ("DBGCTL", offset_of!(StateSaveArea, dbgctl), 0x270),
    ("BR_FROM", offset_of!(StateSaveArea, br_from), 0x278),
    ("BR_TO", offset_of!(StateSaveArea, br_to), 0x280),
    (
        "LASTEXCPFROM",
        offset_of!(StateSaveArea, last_excp_from),
        0x288,
    ),
    ("LASTEXCPTO", offset_of!(StateSaveArea, last_excp_to), 0x290),
    ("DBGEXTNCFG", offset_of!(StateSaveArea, dbgextncfg), 0x298),
    ("SPEC_CTRL", offset_of!(StateSaveArea, spec_ctrl), 0x2E0),
    (
        "LBR_STACK_FROM/TO",
        offset_of!(StateSaveArea, lbr_stack),
        0x670,
    ),
    ("LBR_SELECT", offset_of!(StateSaveArea, lbr_select), 0x770),
    (
        "IBS_FETCH_CTL",
        offset_of!(StateSaveArea, ibs_fetch_ctl),
        0x778,
    ),
    (
        "IBS_FETCH_LINADDR",
        offset_of!(StateSaveArea, ibs_fetch_linaddr),
        0x780,
    ),
    ("IBS_OP_CTL", offset_of!(StateSaveArea, ibs_op_ctl), 0x788),
    ("IBS_OP_RIP", offset_of!(StateSaveArea, ibs_op_rip), 0x790),
    ("IBS_OP_DATA", offset_of!(StateSaveArea, ibs_op_data), 0x798),
    (
        "IBS_OP_DATA2",
        offset_of!(StateSaveArea, ibs_op_data2),
        0x7A0,
    ),
    (
        "IBS_OP_DATA3",
        offset_of!(StateSaveArea, ibs_op_data3),
        0x7A8,
    ),
    (
        "IBS_DC_LINADDR",
        offset_of!(StateSaveArea, ibs_dc_linaddr),
        0x7B0,
    ),
    (
        "BP_IBSTGT_RIP",
        offset_of!(StateSaveArea, bp_ibstgt_rip),
        0x7B8,
    ),
    (
        "IC_IBS_EXTD_CTL",
        offset_of!(StateSaveArea, ic_ibs_extd_ctl),
        0x7C0,
    ),
];

const _: () = {
    let mut i = 0;
    while i < CONTROL_AREA_OFFSETS.len() {
        assert!(CONTROL_AREA_OFFSETS[i].1 == CONTROL_AREA_OFFSETS[i].2);
        i += 1;
    }
    let mut i = 0;
    while i < STATE_SAVE_AREA_OFFSETS.len() {
        assert!(STATE_SAVE_AREA_OFFSETS[i].1 == STATE_SAVE_AREA_OFFSETS[i].2);
        i += 1;
    }
    assert!(size_of::<ControlArea>() == 0x400);
    assert!(size_of::<StateSaveArea>() == 0xC00);
    assert!(size_of::<Vmcb>() == 0x1000);
    assert!(core::mem::align_of::<Vmcb>() == 0x1000);
    assert!(offset_of!(Vmcb, control) == 0x000);
    assert!(offset_of!(Vmcb, save) == 0x400);
    // Two spot checks of absolute VMCB offsets (state save area + 400h).
    assert!(offset_of!(Vmcb, save) + offset_of!(StateSaveArea, rip) == 0x578);
    assert!(offset_of!(Vmcb, save) + offset_of!(StateSaveArea, rax) == 0x5F8);
};

impl ControlArea {
    const ZERO: Self = Self {
        intercept_cr: CrIntercepts::empty(),
        intercept_dr: DrIntercepts::empty(),
        intercept_exceptions: ExceptionIntercepts::empty(),
        intercept_misc1: MiscIntercepts1::empty(),
        intercept_misc2: MiscIntercepts2::empty(),
        intercept_misc3: MiscIntercepts3::empty(),
        reserved_018: [0; 0x24],
        pause_filter_threshold: 0,
        pause_filter_count: 0,
        iopm_base_pa: PhysAddr::zero(),
        msrpm_base_pa: PhysAddr::zero(),
        tsc_offset: 0,
        guest_asid: 0,
        tlb_control: TlbControl::DO_NOTHING,
        reserved_05d: [0; 3],
        virtual_interrupt: VirtualInterrupt(0),
        interrupt_state: InterruptState::empty(),
        exit_code: ExitCode(0),
        exit_info1: 0,
        exit_info2: 0,
        exit_int_info: EventInjection::NONE,
        nested_control: NestedControl::empty(),
        avic_apic_bar: 0,
        ghcb_gpa: 0,
        event_injection: EventInjection::NONE,
        nested_cr3: PhysAddr::zero(),
        virtualization_extensions: VirtualizationExtensions::empty(),
        clean_bits: CleanBits::empty(),
        reserved_0c4: 0,
        next_rip: 0,
        guest_instruction_length: 0,
        guest_instruction_bytes: [0; 15],
        avic_backing_page: 0,
        reserved_0e8: 0,
        avic_logical_table: 0,
        avic_physical_table: 0,
        reserved_100: 0,
        vmsa_pointer: 0,
        vmgexit_rax: 0,
        vmgexit_cpl: 0,
        reserved_119: [0; 7],
        bus_lock_counter: 0,
        reserved_122: [0; 0x12],
        update_irr: 0,
        allowed_sev_features: 0,
        guest_sev_features: 0,
        reserved_148: 0,
        requested_irr: [0; 4],
        reserved_170: [0; 0x270],
        host_reserved: [0; 0x20],
    };

    /// EXITINFO1 and EXITINFO2 together (offsets 078h, 080h).
    #[must_use]
    pub fn exit_info(&self) -> (u64, u64) {
        (self.exit_info1, self.exit_info2)
    }

    /// The guest instruction bytes fetched for a #NPF or #PF intercept (decode assists; APM
    /// 15.8.4 "Nested and Intercepted #PF", Table 15-6): the first `number of bytes fetched`
    /// (0D0h bits 3:0) of the 15 bytes at 0D1h. Empty without decode assists.
    #[must_use]
    pub fn guest_instruction_bytes(&self) -> &[u8] {
        let len = usize::from(self.guest_instruction_length & 0xF).min(15);
        &self.guest_instruction_bytes[..len]
    }

    /// Decodes the last #VMEXIT from EXITCODE/EXITINFO1/EXITINFO2.
    ///
    /// # Errors
    /// See [`crate::exit::Exit::decode`].
    pub fn decode_exit(&self) -> Result<crate::exit::Exit, crate::exit::ExitDecodeError> {
        crate::exit::Exit::decode(self.exit_code, self.exit_info1, self.exit_info2)
    }

    /// All six intercept vectors.
    #[must_use]
    pub fn intercepts(&self) -> Intercepts {
        Intercepts {
            cr: self.intercept_cr,
            dr: self.intercept_dr,
            exceptions: self.intercept_exceptions,
            misc1: self.intercept_misc1,
            misc2: self.intercept_misc2,
            misc3: self.intercept_misc3,
        }
    }
}

/// All six intercept vectors of a VMCB (offsets 000h–014h) as one value.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, Debug)]
pub struct Intercepts {
    /// Vector 0: CR reads/writes.
    pub cr: CrIntercepts,
    /// Vector 1: DR reads/writes.
    pub dr: DrIntercepts,
    /// Vector 2: exceptions.
    pub exceptions: ExceptionIntercepts,
    /// Vector 3.
    pub misc1: MiscIntercepts1,
    /// Vector 4 (must contain VMRUN).
    pub misc2: MiscIntercepts2,
    /// Vector 5.
    pub misc3: MiscIntercepts3,
}

impl StateSaveArea {
    const ZERO: Self = Self {
        es: Segment::NULL,
        cs: Segment::NULL,
        ss: Segment::NULL,
        ds: Segment::NULL,
        fs: Segment::NULL,
        gs: Segment::NULL,
        gdtr: Segment::NULL,
        ldtr: Segment::NULL,
        idtr: Segment::NULL,
        tr: Segment::NULL,
        reserved_0a0: [0; 0x2B],
        cpl: 0,
        reserved_0cc: 0,
        efer: 0,
        reserved_0d8: 0,
        perf_ctl_ctr: [0; 12],
        reserved_140: 0,
        cr4: 0,
        cr3: 0,
        cr0: 0,
        dr7: 0,
        dr6: 0,
        rflags: 0,
        rip: 0,
        reserved_180: [0; 0x40],
        instr_retired_ctr: 0,
        perf_ctr_global_sts: 0,
        perf_ctr_global_ctl: 0,
        reserved_1d4: 0,
        rsp: 0,
        s_cet: 0,
        ssp: 0,
        isst_addr: 0,
        rax: 0,
        star: 0,
        lstar: 0,
        cstar: 0,
        sfmask: 0,
        kernel_gs_base: 0,
        sysenter_cs: 0,
        sysenter_esp: 0,
        sysenter_eip: 0,
        cr2: 0,
        reserved_248: [0; 0x20],
        g_pat: 0,
        dbgctl: 0,
        br_from: 0,
        br_to: 0,
        last_excp_from: 0,
        last_excp_to: 0,
        dbgextncfg: 0,
        reserved_2a0: [0; 0x40],
        spec_ctrl: 0,
        reserved_2e8: [0; 0x388],
        lbr_stack: [0; 32],
        lbr_select: 0,
        ibs_fetch_ctl: 0,
        ibs_fetch_linaddr: 0,
        ibs_op_ctl: 0,
        ibs_op_rip: 0,
        ibs_op_data: 0,
        ibs_op_data2: 0,
        ibs_op_data3: 0,
        ibs_dc_linaddr: 0,
        bp_ibstgt_rip: 0,
        ic_ibs_extd_ctl: 0,
        reserved_7c8: [0; 0x438],
    };

    /// PERF_CTLn (n = 0–5; offsets 0E0h + 10h·n), `None` for n > 5.
    #[must_use]
    pub fn perf_ctl(&self, n: usize) -> Option<u64> {
        (n < 6).then(|| self.perf_ctl_ctr[2 * n])
    }

    /// PERF_CTRn (n = 0–5; offsets 0E8h + 10h·n), `None` for n > 5.
    #[must_use]
    pub fn perf_ctr(&self, n: usize) -> Option<u64> {
        (n < 6).then(|| self.perf_ctl_ctr[2 * n + 1])
    }

    /// The LBR stack (670h–76Fh): guest LastBranchStackFromIp/ToIp MSRs in MSR address order.
    #[must_use]
    pub fn lbr_stack(&self) -> &[u64; 32] {
        &self.lbr_stack
    }
}

/// Generates getters on an area and setters on [`Vmcb`] that clear the field's clean bit.
macro_rules! fields {
    ($area:ident : $areaty:ty {
        $( $(#[$doc:meta])* $field:ident / $set:ident : $ty:ty => $clean:expr; )*
    }) => {
        impl $areaty {
            $(
                $(#[$doc])*
                #[must_use]
                #[inline]
                pub fn $field(&self) -> $ty {
                    self.$field
                }
            )*
        }
        impl core::fmt::Debug for $areaty {
            /// Every named field (reserved bytes are left out).
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                f.debug_struct(stringify!($areaty))
                    $( .field(stringify!($field), &self.$field) )*
                    .finish_non_exhaustive()
            }
        }
        impl Vmcb {
            $(
                #[doc = concat!(
                    "Writes `", stringify!($field), "` (see [`", stringify!($areaty), "::",
                    stringify!($field), "`]) and clears its clean bit, if it has one ",
                    "(APM 15.15.3 \"VMCB Clean Field\")."
                )]
                #[inline]
                pub fn $set(&mut self, value: $ty) {
                    self.$area.$field = value;
                    self.control.clean_bits.remove($clean);
                }
            )*
        }
    };
}

const UNCACHED: CleanBits = CleanBits::empty();

fields!(control: ControlArea {
    /// Vector 0 (000h): CR read/write intercepts.
    intercept_cr / set_intercept_cr: CrIntercepts => CleanBits::INTERCEPTS;
    /// Vector 1 (004h): DR read/write intercepts.
    intercept_dr / set_intercept_dr: DrIntercepts => CleanBits::INTERCEPTS;
    /// Vector 2 (008h): exception intercepts.
    intercept_exceptions / set_intercept_exceptions: ExceptionIntercepts => CleanBits::INTERCEPTS;
    /// Vector 3 (00Ch): INTR … shutdown.
    intercept_misc1 / set_intercept_misc1: MiscIntercepts1 => CleanBits::INTERCEPTS;
    /// Vector 4 (010h): VMRUN … CR write traps.
    intercept_misc2 / set_intercept_misc2: MiscIntercepts2 => CleanBits::INTERCEPTS;
    /// Vector 5 (014h): INVLPGB … idle HLT.
    intercept_misc3 / set_intercept_misc3: MiscIntercepts3 => CleanBits::INTERCEPTS;
    /// PAUSE filter threshold (03Ch; APM 15.14.4 "Pause Intercept Filtering").
    pause_filter_threshold / set_pause_filter_threshold: u16 => CleanBits::INTERCEPTS;
    /// PAUSE filter count (03Eh).
    pause_filter_count / set_pause_filter_count: u16 => CleanBits::INTERCEPTS;
    /// IOPM_BASE_PA (040h): physical base of the 12 KiB I/O permission map (bits 11:0 ignored).
    iopm_base_pa / set_iopm_base_pa: PhysAddr => CleanBits::IOPM;
    /// MSRPM_BASE_PA (048h): physical base of the 8 KiB MSR permission map (bits 11:0 ignored).
    msrpm_base_pa / set_msrpm_base_pa: PhysAddr => CleanBits::IOPM;
    /// TSC_OFFSET (050h): added to the TSC for RDTSC/RDTSCP in the guest.
    tsc_offset / set_tsc_offset: u64 => CleanBits::INTERCEPTS;
    /// Guest ASID (058h bits 31:0); must not be 0 (15.5.1).
    guest_asid / set_guest_asid: u32 => CleanBits::ASID;
    /// TLB_CONTROL (058h bits 39:32; Table 15-9). Not cached; VMRUN does not clear it, so reset
    /// it to [`TlbControl::DO_NOTHING`] after the flush you asked for.
    tlb_control / set_tlb_control: TlbControl => UNCACHED;
    /// Virtual interrupt control (060h).
    virtual_interrupt / set_virtual_interrupt: VirtualInterrupt => CleanBits::TPR;
    /// Interrupt shadow (068h). Not cached.
    interrupt_state / set_interrupt_state: InterruptState => UNCACHED;
    /// EXITCODE (070h), written by #VMEXIT.
    exit_code / set_exit_code: ExitCode => UNCACHED;
    /// EXITINFO1 (078h), written by #VMEXIT.
    exit_info1 / set_exit_info1: u64 => UNCACHED;
    /// EXITINFO2 (080h), written by #VMEXIT.
    exit_info2 / set_exit_info2: u64 => UNCACHED;
    /// EXITINTINFO (088h): the event being delivered when the #VMEXIT happened (15.7.2).
    exit_int_info / set_exit_int_info: EventInjection => UNCACHED;
    /// Nested paging / SEV enables (090h).
    nested_control / set_nested_control: NestedControl => CleanBits::NP;
    /// AVIC APIC_BAR (098h bits 51:0).
    avic_apic_bar / set_avic_apic_bar: u64 => CleanBits::AVIC;
    /// Guest physical address of the GHCB (0A0h; SEV-ES).
    ghcb_gpa / set_ghcb_gpa: u64 => UNCACHED;
    /// EVENTINJ (0A8h; 15.20). Not cached.
    event_injection / set_event_injection: EventInjection => UNCACHED;
    /// N_CR3 (0B0h): nested page table root for nested paging.
    nested_cr3 / set_nested_cr3: PhysAddr => CleanBits::NP;
    /// LBR / VMSAVE-VMLOAD / IBS / PMC virtualization enables (0B8h).
    virtualization_extensions / set_virtualization_extensions: VirtualizationExtensions => UNCACHED;
    /// nRIP (0C8h): next sequential RIP, written on instruction intercepts when NRIP save is
    /// supported (CPUID Fn8000_000A EDX\[3\]). QEMU TCG leaves it 0.
    next_rip / set_next_rip: u64 => UNCACHED;
    /// Number of guest instruction bytes fetched (0D0h bits 7:0; decode assists).
    guest_instruction_length / set_guest_instruction_length: u8 => UNCACHED;
    /// AVIC APIC_BACKING_PAGE pointer (0E0h bits 51:0).
    avic_backing_page / set_avic_backing_page: u64 => CleanBits::AVIC;
    /// AVIC_LOGICAL_TABLE pointer (0F0h bits 51:12).
    avic_logical_table / set_avic_logical_table: u64 => CleanBits::AVIC;
    /// AVIC_PHYSICAL_TABLE pointer (0F8h bits 51:12) and AVIC_PHYSICAL_MAX_INDEX (bits 11:0).
    avic_physical_table / set_avic_physical_table: u64 => CleanBits::AVIC;
    /// VMSA pointer (108h bits 51:12; SEV-ES).
    vmsa_pointer / set_vmsa_pointer: u64 => UNCACHED;
    /// VMGEXIT_RAX (110h; SEV-ES).
    vmgexit_rax / set_vmgexit_rax: u64 => UNCACHED;
    /// VMGEXIT_CPL (118h bits 7:0; SEV-ES).
    vmgexit_cpl / set_vmgexit_cpl: u8 => UNCACHED;
    /// Bus lock threshold counter (120h bits 15:0; 15.14.5 "Bus Lock Threshold").
    bus_lock_counter / set_bus_lock_counter: u16 => UNCACHED;
    /// UPDATE_IRR (134h bit 0).
    update_irr / set_update_irr: u32 => UNCACHED;
    /// ALLOWED_SEV_FEATURES (138h; bit 63 enable, 61:0 mask).
    allowed_sev_features / set_allowed_sev_features: u64 => UNCACHED;
    /// GUEST_SEV_FEATURES (140h bits 61:0).
    guest_sev_features / set_guest_sev_features: u64 => UNCACHED;
    /// REQUESTED_IRR (150h, 256 bits).
    requested_irr / set_requested_irr: [u64; 4] => UNCACHED;
    /// Bytes 3E0h–3FFh, reserved for host (hypervisor) use; the CPU does not touch them.
    host_reserved / set_host_reserved: [u8; 0x20] => UNCACHED;
});

fields!(save: StateSaveArea {
    /// ES (000h).
    es / set_es: Segment => CleanBits::SEG;
    /// CS (010h).
    cs / set_cs: Segment => CleanBits::SEG;
    /// SS (020h).
    ss / set_ss: Segment => CleanBits::SEG;
    /// DS (030h).
    ds / set_ds: Segment => CleanBits::SEG;
    /// FS (040h; VMLOAD/VMSAVE state).
    fs / set_fs: Segment => UNCACHED;
    /// GS (050h; VMLOAD/VMSAVE state).
    gs / set_gs: Segment => UNCACHED;
    /// GDTR (060h; base and limit only).
    gdtr / set_gdtr: Segment => CleanBits::DT;
    /// LDTR (070h; VMLOAD/VMSAVE state).
    ldtr / set_ldtr: Segment => UNCACHED;
    /// IDTR (080h; base and limit only).
    idtr / set_idtr: Segment => CleanBits::DT;
    /// TR (090h; VMLOAD/VMSAVE state).
    tr / set_tr: Segment => UNCACHED;
    /// CPL (0CBh); forced to 0 in real mode and 3 in virtual-8086 mode.
    cpl / set_cpl: u8 => CleanBits::SEG;
    /// EFER (0D0h); EFER.SVME must be set (15.5.1).
    efer / set_efer: u64 => CleanBits::CRX;
    /// CR4 (148h).
    cr4 / set_cr4: u64 => CleanBits::CRX;
    /// CR3 (150h).
    cr3 / set_cr3: u64 => CleanBits::CRX;
    /// CR0 (158h).
    cr0 / set_cr0: u64 => CleanBits::CRX;
    /// DR7 (160h).
    dr7 / set_dr7: u64 => CleanBits::DRX;
    /// DR6 (168h).
    dr6 / set_dr6: u64 => CleanBits::DRX;
    /// RFLAGS (170h). Not cached.
    rflags / set_rflags: u64 => UNCACHED;
    /// RIP (178h). Not cached.
    rip / set_rip: u64 => UNCACHED;
    /// INSTR_RETIRED_CTR (1C0h; PMC virtualization).
    instr_retired_ctr / set_instr_retired_ctr: u64 => UNCACHED;
    /// PERF_CTR_GLOBAL_STS (1C8h; PMC virtualization).
    perf_ctr_global_sts / set_perf_ctr_global_sts: u64 => UNCACHED;
    /// PERF_CTR_GLOBAL_CTL (1D0h; PMC virtualization).
    perf_ctr_global_ctl / set_perf_ctr_global_ctl: u32 => UNCACHED;
    /// RSP (1D8h). Not cached.
    rsp / set_rsp: u64 => UNCACHED;
    /// S_CET (1E0h).
    s_cet / set_s_cet: u64 => CleanBits::CET;
    /// SSP (1E8h).
    ssp / set_ssp: u64 => CleanBits::CET;
    /// ISST_ADDR (1F0h).
    isst_addr / set_isst_addr: u64 => CleanBits::CET;
    /// RAX (1F8h). Not cached.
    rax / set_rax: u64 => UNCACHED;
    /// STAR (200h; VMLOAD/VMSAVE state).
    star / set_star: u64 => UNCACHED;
    /// LSTAR (208h; VMLOAD/VMSAVE state).
    lstar / set_lstar: u64 => UNCACHED;
    /// CSTAR (210h; VMLOAD/VMSAVE state).
    cstar / set_cstar: u64 => UNCACHED;
    /// SFMASK (218h; VMLOAD/VMSAVE state).
    sfmask / set_sfmask: u64 => UNCACHED;
    /// KernelGsBase (220h; VMLOAD/VMSAVE state).
    kernel_gs_base / set_kernel_gs_base: u64 => UNCACHED;
    /// SYSENTER_CS (228h; VMLOAD/VMSAVE state).
    sysenter_cs / set_sysenter_cs: u64 => UNCACHED;
    /// SYSENTER_ESP (230h; VMLOAD/VMSAVE state).
    sysenter_esp / set_sysenter_esp: u64 => UNCACHED;
    /// SYSENTER_EIP (238h; VMLOAD/VMSAVE state).
    sysenter_eip / set_sysenter_eip: u64 => UNCACHED;
    /// CR2 (240h).
    cr2 / set_cr2: u64 => CleanBits::CR2;
    /// G_PAT (268h): guest PAT, used only with nested paging.
    g_pat / set_g_pat: u64 => CleanBits::NP;
    /// DBGCTL (270h; LBR virtualization).
    dbgctl / set_dbgctl: u64 => CleanBits::LBR;
    /// BR_FROM (278h; LBR virtualization).
    br_from / set_br_from: u64 => CleanBits::LBR;
    /// BR_TO (280h; LBR virtualization).
    br_to / set_br_to: u64 => CleanBits::LBR;
    /// LASTEXCPFROM (288h; LBR virtualization).
    last_excp_from / set_last_excp_from: u64 => CleanBits::LBR;
    /// LASTEXCPTO (290h; LBR virtualization).
    last_excp_to / set_last_excp_to: u64 => CleanBits::LBR;
    /// DBGEXTNCFG (298h; LBR stack virtualization).
    dbgextncfg / set_dbgextncfg: u64 => CleanBits::LBR;
    /// SPEC_CTRL (2E0h): guest SPEC_CTRL, swapped when SPEC_CTRL virtualization is supported.
    spec_ctrl / set_spec_ctrl: u64 => UNCACHED;
    /// LBR_SELECT (770h; LBR stack virtualization).
    lbr_select / set_lbr_select: u64 => UNCACHED;
    /// IBS_FETCH_CTL (778h; IBS virtualization).
    ibs_fetch_ctl / set_ibs_fetch_ctl: u64 => UNCACHED;
    /// IBS_FETCH_LINADDR (780h).
    ibs_fetch_linaddr / set_ibs_fetch_linaddr: u64 => UNCACHED;
    /// IBS_OP_CTL (788h).
    ibs_op_ctl / set_ibs_op_ctl: u64 => UNCACHED;
    /// IBS_OP_RIP (790h).
    ibs_op_rip / set_ibs_op_rip: u64 => UNCACHED;
    /// IBS_OP_DATA (798h).
    ibs_op_data / set_ibs_op_data: u64 => UNCACHED;
    /// IBS_OP_DATA2 (7A0h).
    ibs_op_data2 / set_ibs_op_data2: u64 => UNCACHED;
    /// IBS_OP_DATA3 (7A8h).
    ibs_op_data3 / set_ibs_op_data3: u64 => UNCACHED;
    /// IBS_DC_LINADDR (7B0h).
    ibs_dc_linaddr / set_ibs_dc_linaddr: u64 => UNCACHED;
    /// BP_IBSTGT_RIP (7B8h).
    bp_ibstgt_rip / set_bp_ibstgt_rip: u64 => UNCACHED;
    /// IC_IBS_EXTD_CTL (7C0h).
    ic_ibs_extd_ctl / set_ic_ibs_extd_ctl: u64 => UNCACHED;
});

impl Default for Vmcb {
    fn default() -> Self {
        Self::new()
    }
}

impl Vmcb {
    /// An all-zero VMCB (APM Appendix B: "It is recommended that software zero out any newly
    /// allocated VMCB"). Its clean bits are all clear.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            control: ControlArea::ZERO,
            save: StateSaveArea::ZERO,
        }
    }

    /// The control area (read-only; use the `set_*` methods of `Vmcb` to write).
    #[must_use]
    pub fn control(&self) -> &ControlArea {
        &self.control
    }

    /// The state save area (read-only; use the `set_*` methods of `Vmcb` to write).
    #[must_use]
    pub fn save(&self) -> &StateSaveArea {
        &self.save
    }

    /// The current VMCB Clean field (0C0h).
    #[must_use]
    pub fn clean_bits(&self) -> CleanBits {
        self.control.clean_bits
    }

    /// Sets every clean bit Figure 15-4 defines (12:0), leaving the reserved bits 31:13 zero.
    /// Call after each #VMEXIT; the setters clear the bits of whatever you change afterwards.
    pub fn mark_all_clean(&mut self) {
        self.control.clean_bits = CleanBits::all();
    }

    /// Clears every clean bit: required the first time a guest runs, after running it on a
    /// different CPU, and after moving the VMCB to another physical page (15.15.2).
    pub fn mark_all_dirty(&mut self) {
        self.control.clean_bits = CleanBits::empty();
    }

    /// Clears the given clean bits (marks those groups modified) without writing a field.
    pub fn mark_dirty(&mut self, bits: CleanBits) {
        self.control.clean_bits.remove(bits);
    }

    /// Writes all six intercept vectors (clears the I clean bit).
    pub fn set_intercepts(&mut self, intercepts: Intercepts) {
        self.control.intercept_cr = intercepts.cr;
        self.control.intercept_dr = intercepts.dr;
        self.control.intercept_exceptions = intercepts.exceptions;
        self.control.intercept_misc1 = intercepts.misc1;
        self.control.intercept_misc2 = intercepts.misc2;
        self.control.intercept_misc3 = intercepts.misc3;
        self.control.clean_bits.remove(CleanBits::INTERCEPTS);
    }

    /// Changes the intercept vectors through a closure (clears the I clean bit).
    pub fn update_intercepts(&mut self, f: impl FnOnce(&mut Intercepts)) {
        let mut intercepts = self.control.intercepts();
        f(&mut intercepts);
        self.set_intercepts(intercepts);
    }

    /// Writes PERF_CTLn (n = 0–5). Returns `false` (and writes nothing) for n > 5.
    pub fn set_perf_ctl(&mut self, n: usize, value: u64) -> bool {
        if n < 6 {
            self.save.perf_ctl_ctr[2 * n] = value;
        }
        n < 6
    }

    /// Writes PERF_CTRn (n = 0–5). Returns `false` (and writes nothing) for n > 5.
    pub fn set_perf_ctr(&mut self, n: usize, value: u64) -> bool {
        if n < 6 {
            self.save.perf_ctl_ctr[2 * n + 1] = value;
        }
        n < 6
    }

    /// Writes the LBR stack (670h–76Fh).
    pub fn set_lbr_stack(&mut self, values: [u64; 32]) {
        self.save.lbr_stack = values;
    }

    /// Writes the guest instruction bytes field (0D1h–0DFh).
    pub fn set_guest_instruction_bytes(&mut self, bytes: [u8; 15]) {
        self.control.guest_instruction_bytes = bytes;
    }

    /// Advances the guest past an intercepted instruction: RIP ← `next_rip` (use nRIP when the
    /// CPU saves it, otherwise the instruction length you decoded), and clears the interrupt
    /// shadow, as completing an instruction does.
    pub fn skip_instruction(&mut self, next_rip: u64) {
        self.save.rip = next_rip;
        self.control
            .interrupt_state
            .remove(InterruptState::INTERRUPT_SHADOW);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segment::SegmentAttributes;

    #[test]
    fn offset_tables_are_complete_and_ordered() {
        assert_eq!(CONTROL_AREA_OFFSETS.len(), 41);
        assert_eq!(STATE_SAVE_AREA_OFFSETS.len(), 57);
        for table in [CONTROL_AREA_OFFSETS, STATE_SAVE_AREA_OFFSETS] {
            for row in table {
                assert_eq!(
                    row.1, row.2,
                    "{} is at {:#x}, APM says {:#x}",
                    row.0, row.1, row.2
                );
            }
            for pair in table.windows(2) {
                assert!(pair[0].2 < pair[1].2, "{} / {}", pair[0].0, pair[1].0);
            }
        }
    }

    #[test]
    fn new_is_zero_and_dirty() {
        let vmcb = Vmcb::new();
        assert_eq!(vmcb.clean_bits(), CleanBits::empty());
        assert_eq!(vmcb.control().exit_code(), ExitCode(0));
        assert_eq!(vmcb.save().rip(), 0);
        assert_eq!(vmcb.control().guest_instruction_bytes(), &[] as &[u8]);
    }

    #[test]
    fn mark_all_clean_sets_only_defined_bits() {
        let mut vmcb = Vmcb::new();
        vmcb.mark_all_clean();
        assert_eq!(vmcb.clean_bits().bits(), 0x1FFF);
        vmcb.mark_all_dirty();
        assert_eq!(vmcb.clean_bits().bits(), 0);
    }

    /// Each cached group: writing one of its fields clears exactly that group's bit.
    #[test]
    fn setters_clear_exactly_their_clean_bit() {
        type Setter = fn(&mut Vmcb);
        let cases: &[(&str, Setter, CleanBits)] = &[
            (
                "intercepts",
                |v| v.set_intercept_misc1(MiscIntercepts1::CPUID),
                CleanBits::INTERCEPTS,
            ),
            ("tsc offset", |v| v.set_tsc_offset(5), CleanBits::INTERCEPTS),
            (
                "pause count",
                |v| v.set_pause_filter_count(5),
                CleanBits::INTERCEPTS,
            ),
            (
                "iopm",
                |v| v.set_iopm_base_pa(PhysAddr::new(0x1000)),
                CleanBits::IOPM,
            ),
            (
                "msrpm",
                |v| v.set_msrpm_base_pa(PhysAddr::new(0x4000)),
                CleanBits::IOPM,
            ),
            ("asid", |v| v.set_guest_asid(3), CleanBits::ASID),
            (
                "vintr",
                |v| v.set_virtual_interrupt(VirtualInterrupt::default().with_v_irq(true)),
                CleanBits::TPR,
            ),
            (
                "np",
                |v| v.set_nested_control(NestedControl::NP_ENABLE),
                CleanBits::NP,
            ),
            (
                "ncr3",
                |v| v.set_nested_cr3(PhysAddr::new(0x8000)),
                CleanBits::NP,
            ),
            (
                "gpat",
                |v| v.set_g_pat(0x0007_0406_0007_0406),
                CleanBits::NP,
            ),
            ("cr0", |v| v.set_cr0(0x8000_0011), CleanBits::CRX),
            ("cr3", |v| v.set_cr3(0x1000), CleanBits::CRX),
            ("cr4", |v| v.set_cr4(0x20), CleanBits::CRX),
            ("efer", |v| v.set_efer(0x1500), CleanBits::CRX),
            ("dr6", |v| v.set_dr6(0xFFFF_0FF0), CleanBits::DRX),
            ("dr7", |v| v.set_dr7(0x400), CleanBits::DRX),
            (
                "gdtr",
                |v| v.set_gdtr(Segment::table(0x5000, 0x27)),
                CleanBits::DT,
            ),
            (
                "idtr",
                |v| v.set_idtr(Segment::table(0x6000, 0xFFF)),
                CleanBits::DT,
            ),
            (
                "cs",
                |v| {
                    v.set_cs(Segment::new(
                        8,
                        SegmentAttributes::code64(0),
                        0xFFFF_FFFF,
                        0,
                    ))
                },
                CleanBits::SEG,
            ),
            ("ss", |v| v.set_ss(Segment::NULL), CleanBits::SEG),
            ("ds", |v| v.set_ds(Segment::NULL), CleanBits::SEG),
            ("es", |v| v.set_es(Segment::NULL), CleanBits::SEG),
            ("cpl", |v| v.set_cpl(3), CleanBits::SEG),
            ("cr2", |v| v.set_cr2(0xdead_0000), CleanBits::CR2),
            ("dbgctl", |v| v.set_dbgctl(1), CleanBits::LBR),
            ("br_from", |v| v.set_br_from(1), CleanBits::LBR),
            ("lastexcpto", |v| v.set_last_excp_to(1), CleanBits::LBR),
            (
                "avic bar",
                |v| v.set_avic_apic_bar(0xFEE0_0000),
                CleanBits::AVIC,
            ),
            (
                "avic backing",
                |v| v.set_avic_backing_page(0x9000),
                CleanBits::AVIC,
            ),
            (
                "avic logical",
                |v| v.set_avic_logical_table(0xA000),
                CleanBits::AVIC,
            ),
            (
                "avic physical",
                |v| v.set_avic_physical_table(0xB000),
                CleanBits::AVIC,
            ),
            ("s_cet", |v| v.set_s_cet(1), CleanBits::CET),
            ("ssp", |v| v.set_ssp(0x7000), CleanBits::CET),
            ("isst", |v| v.set_isst_addr(0x7000), CleanBits::CET),
            ("rip", |v| v.set_rip(0x1000), CleanBits::empty()),
            ("rsp", |v| v.set_rsp(0x1000), CleanBits::empty()),
            ("rax", |v| v.set_rax(1), CleanBits::empty()),
            ("rflags", |v| v.set_rflags(2), CleanBits::empty()),
            (
                "eventinj",
                |v| v.set_event_injection(EventInjection::nmi()),
                CleanBits::empty(),
            ),
            (
                "tlb",
                |v| v.set_tlb_control(TlbControl::FLUSH_GUEST),
                CleanBits::empty(),
            ),
            ("fs", |v| v.set_fs(Segment::NULL), CleanBits::empty()),
            ("lstar", |v| v.set_lstar(1), CleanBits::empty()),
        ];
        for (name, set, bit) in cases {
            let mut vmcb = Vmcb::new();
            vmcb.mark_all_clean();
            set(&mut vmcb);
            assert_eq!(vmcb.clean_bits(), CleanBits::all() - *bit, "{name}");
        }
    }

    /// The run-loop pattern: mark clean after an exit, change a few things, and exactly the
    /// touched groups are reloaded on the next VMRUN.
    #[test]
    fn run_loop_pattern() {
        let mut vmcb = Vmcb::new();
        vmcb.set_guest_asid(1);
        vmcb.mark_all_clean();
        // Exit handling: skip an instruction, inject #GP, change CR0, add an intercept.
        vmcb.skip_instruction(0x1002);
        vmcb.set_event_injection(EventInjection::exception(13, Some(0)));
        vmcb.set_cr0(0x8001_0033);
        vmcb.update_intercepts(|i| i.misc1 |= MiscIntercepts1::HLT);
        assert_eq!(
            vmcb.clean_bits(),
            CleanBits::all() - CleanBits::CRX - CleanBits::INTERCEPTS
        );
        assert!(
            vmcb.control()
                .intercept_misc1()
                .contains(MiscIntercepts1::HLT)
        );
        assert_eq!(vmcb.save().rip(), 0x1002);
        vmcb.mark_all_clean();
        assert_eq!(vmcb.clean_bits(), CleanBits::all());
    }

    #[test]
    fn virtual_interrupt_bits() {
        let v = VirtualInterrupt::default()
            .with_v_tpr(0x1F)
            .with_v_irq(true)
            .with_v_intr_prio(0xF)
            .with_v_ign_tpr(true)
            .with_v_intr_masking(true)
            .with_v_intr_vector(0x30)
            .with_v_nmi_enable(true)
            .with_avic_enable(true);
        assert_eq!(
            v.bits(),
            0x30_8500_0000 | (1 << 20) | (0xF << 16) | (1 << 8) | 0xF
        );
        assert_eq!(v.v_tpr(), 0xF);
        assert!(v.v_irq() && v.v_ign_tpr() && v.v_intr_masking() && v.v_nmi_enable());
        assert!(v.avic_enable() && !v.x2avic_enable() && !v.vgif() && !v.v_nmi());
        assert_eq!(v.v_intr_prio(), 0xF);
        assert_eq!(v.v_intr_vector(), 0x30);
    }

    #[test]
    fn debug_shows_named_fields_only() {
        let mut vmcb = Vmcb::new();
        vmcb.set_exit_code(ExitCode::HLT);
        let text = format!("{vmcb:?}");
        assert!(text.contains("exit_code: ExitCode::HLT(0x78)"), "{text}");
        assert!(text.contains("rip: 0"));
        assert!(!text.contains("reserved_"), "{text}");
    }

    #[test]
    fn perf_counters_and_names() {
        let mut vmcb = Vmcb::new();
        assert!(vmcb.set_perf_ctl(5, 7));
        assert!(vmcb.set_perf_ctr(0, 9));
        assert!(!vmcb.set_perf_ctr(6, 9));
        assert_eq!(vmcb.save().perf_ctl(5), Some(7));
        assert_eq!(vmcb.save().perf_ctr(0), Some(9));
        assert_eq!(vmcb.save().perf_ctr(6), None);
        assert_eq!(TlbControl(7).name(), Some("FLUSH_GUEST_NON_GLOBAL"));
        assert_eq!(format!("{:?}", TlbControl(2)), "TlbControl(0x2)");
    }
}
