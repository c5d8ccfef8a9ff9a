//! VMRUN consistency checks, done in software before VMRUN.
//!
//! Manual: AMD64 Architecture Programmer's Manual Volume 2: System Programming, Publication
//! No. 24593, Revision 3.42, March 2024 — Section 15.5.1 "Basic Operation", paragraph
//! "Canonicalization and Consistency Checks"; Section 15.20 "Event Injection" (illegal
//! EVENTINJ); Section 15.21.10 "NMI Virtualization"; Section 3.1 "System-Control Registers"
//! for the must-be-zero bits of CR3, CR4 and EFER (Figures 3-1 to 3-8).
//!
//! A VMCB that breaks any of these rules makes VMRUN exit at once with VMEXIT_INVALID on real
//! hardware. QEMU's TCG skips most of them (EMULATORS.md), so a VMCB that runs there proves
//! nothing: [`check_vmcb`] finds every violated rule, with its APM reference, without hardware.
//!
//! Reserved-bit checks use the architectural definition of each register (all bits the APM
//! names are allowed). A CPU that lacks a feature may reject more (e.g. EFER.LMSLE on
//! processors without it); such per-model checks are not made here.
//!
//! Segment bases are *canonicalized* by VMRUN, not checked (15.5.1 "VMRUN and #VMEXIT
//! canonicalize … all base addresses in the segment registers"), so a non-canonical base is not
//! a violation. A guest RIP outside CS limits or non-canonical is not illegal state either: it
//! raises #GP inside the guest.

use crate::event::{EventType, is_exception_vector};
use crate::features::HostCapabilities;
use crate::intercept::{MiscIntercepts1, MiscIntercepts2};
use crate::iopm::IOPM_SIZE;
use crate::msrpm::MSRPM_SIZE;
use crate::vmcb::{NestedControl, Vmcb};

/// CR0.PE, bit 0.
const CR0_PE: u64 = 1 << 0;
/// CR0.WP, bit 16.
const CR0_WP: u64 = 1 << 16;
/// CR0.NW, bit 29.
const CR0_NW: u64 = 1 << 29;
/// CR0.CD, bit 30.
const CR0_CD: u64 = 1 << 30;
/// CR0.PG, bit 31.
const CR0_PG: u64 = 1 << 31;
/// CR4.PAE, bit 5.
const CR4_PAE: u64 = 1 << 5;
/// CR4.CET, bit 23.
const CR4_CET: u64 = 1 << 23;
/// CR4 bits the APM defines (Figure 3-7): 12:0 (VME … LA57), 16 FSGSBASE, 17 PCIDE, 18 OSXSAVE,
/// 20 SMEP, 21 SMAP, 22 PKE, 23 CET.
const CR4_DEFINED: u64 = 0x1FFF | (0xF7 << 16);
/// EFER.LME, bit 8.
const EFER_LME: u64 = 1 << 8;
/// EFER.LMA, bit 10.
const EFER_LMA: u64 = 1 << 10;
/// EFER.SVME, bit 12.
const EFER_SVME: u64 = 1 << 12;
/// EFER bits the APM defines (Figure 3-8): 0 SCE, 8 LME, 10 LMA, 11 NXE, 12 SVME, 13 LMSLE,
/// 14 FFXSR, 15 TCE, 17 MCOMMIT, 18 INTWB, 20 UAIE, 21 AIBRSE.
const EFER_DEFINED: u64 = 1 | (1 << 8) | (0b11_1111 << 10) | (0b11 << 17) | (0b11 << 20);
/// S_CET bits 9:6, reserved (Section 18.2 "Shadow Stack" MSR layout).
const S_CET_RESERVED: u64 = 0b1111 << 6;

/// One VMRUN consistency rule. Open for extension: new rules may be added.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[non_exhaustive]
pub enum Rule {
    /// EFER.SVME is zero.
    EferSvmeClear,
    /// CR0.CD is zero and CR0.NW is set.
    Cr0NwWithoutCd,
    /// CR0\[63:32\] are not zero.
    Cr0HighBits,
    /// A must-be-zero bit of CR3 is set (above the physical address width in long mode, bits
    /// 63:32 otherwise).
    Cr3ReservedBits,
    /// A must-be-zero bit of CR4 is set.
    Cr4ReservedBits,
    /// DR6\[63:32\] are not zero.
    Dr6HighBits,
    /// DR7\[63:32\] are not zero.
    Dr7HighBits,
    /// A must-be-zero bit of EFER is set.
    EferReservedBits,
    /// EFER.LMA or EFER.LME is set and the processor does not support long mode.
    LongModeUnsupported,
    /// EFER.LME and CR0.PG are set and CR4.PAE is zero.
    LongModeWithoutPae,
    /// EFER.LME and CR0.PG are set and CR0.PE is zero.
    LongModeWithoutPe,
    /// EFER.LME, CR0.PG, CR4.PAE, CS.L and CS.D are all set.
    LongModeCsLAndD,
    /// The VMRUN intercept bit is clear.
    VmrunInterceptClear,
    /// The IOPM extends to a physical address ≥ the maximum supported physical address.
    IopmBeyondPhysicalLimit,
    /// The MSRPM extends to a physical address ≥ the maximum supported physical address.
    MsrpmBeyondPhysicalLimit,
    /// EVENTINJ has a reserved TYPE.
    EventInjectionReservedType,
    /// EVENTINJ has TYPE = 3 (exception) with a vector that is not an exception (2, or > 31).
    EventInjectionNotAnException,
    /// The guest ASID is zero.
    AsidZero,
    /// A reserved bit is set in S_CET.
    SCetReservedBits,
    /// CR4.CET = 1 while CR0.WP = 0.
    CetWithoutWriteProtect,
    /// V_NMI_ENABLE is set but the NMI intercept is clear.
    VirtualNmiWithoutNmiIntercept,
    /// Nested paging is enabled and a must-be-zero bit of N_CR3 is set (above the physical
    /// address width).
    NestedCr3ReservedBits,
    /// Nested paging is enabled and a G_PAT entry has an unsupported type or a reserved bit set.
    GuestPatInvalid,
    /// x2AVIC mode is enabled without AVIC.
    X2avicWithoutAvic,
    /// AVIC is enabled and AVIC_PHYSICAL_MAX_INDEX exceeds 255 (xAVIC) or 511 (x2AVIC without
    /// x2AVIC_EXT).
    AvicPhysicalMaxIndexTooLarge,
}

impl Rule {
    /// Every rule, in the order of [`Violations`] bits.
    pub const ALL: [Self; 25] = [
        Self::EferSvmeClear,
        Self::Cr0NwWithoutCd,
        Self::Cr0HighBits,
        Self::Cr3ReservedBits,
        Self::Cr4ReservedBits,
        Self::Dr6HighBits,
        Self::Dr7HighBits,
        Self::EferReservedBits,
        Self::LongModeUnsupported,
        Self::LongModeWithoutPae,
        Self::LongModeWithoutPe,
        Self::LongModeCsLAndD,
        Self::VmrunInterceptClear,
        Self::IopmBeyondPhysicalLimit,
        Self::MsrpmBeyondPhysicalLimit,
        Self::EventInjectionReservedType,
        Self::EventInjectionNotAnException,
        Self::AsidZero,
        Self::SCetReservedBits,
        Self::CetWithoutWriteProtect,
        Self::VirtualNmiWithoutNmiIntercept,
        Self::NestedCr3ReservedBits,
        Self::GuestPatInvalid,
        Self::X2avicWithoutAvic,
        Self::AvicPhysicalMaxIndexTooLarge,
    ];

    const fn index(self) -> u32 {
        self as u32
    }

    /// Where the APM states the rule (revision 3.42).
    #[must_use]
    pub const fn apm_reference(self) -> &'static str {
        match self {
            Self::EventInjectionReservedType | Self::EventInjectionNotAnException => {
                "APM Vol. 2 15.20 \"Event Injection\" (VMRUN exits with VMEXIT_INVALID if …)"
            }
            Self::VirtualNmiWithoutNmiIntercept => "APM Vol. 2 15.21.10 \"NMI Virtualization\"",
            Self::NestedCr3ReservedBits | Self::GuestPatInvalid => {
                "APM Vol. 2 15.25.4 \"Nested Paging and VMRUN/#VMEXIT\""
            }
            Self::X2avicWithoutAvic => {
                "APM Vol. 2 15.29.4.1 \"VMCB Virtual Interrupt Control Word\""
            }
            Self::AvicPhysicalMaxIndexTooLarge => {
                "APM Vol. 2 15.29.4.3 \"Physical Address Pointer Restrictions\""
            }
            Self::Cr3ReservedBits => {
                "APM Vol. 2 15.5.1 \"Canonicalization and Consistency Checks\"; 3.1.2 \"CR3 Register\""
            }
            Self::Cr4ReservedBits => {
                "APM Vol. 2 15.5.1 \"Canonicalization and Consistency Checks\"; 3.1.3 \"CR4 Register\""
            }
            Self::IopmBeyondPhysicalLimit => {
                "APM Vol. 2 15.5.1 \"Canonicalization and Consistency Checks\"; 15.10.1 \"I/O Permissions Map\""
            }
            Self::MsrpmBeyondPhysicalLimit => {
                "APM Vol. 2 15.5.1 \"Canonicalization and Consistency Checks\"; 15.11 \"MSR Intercepts\""
            }
            Self::EferReservedBits => {
                "APM Vol. 2 15.5.1 \"Canonicalization and Consistency Checks\"; 3.1.7 \"Extended Feature Enable Register (EFER)\""
            }
            _ => "APM Vol. 2 15.5.1 \"Canonicalization and Consistency Checks\"",
        }
    }

    /// The rule as the APM words it.
    #[must_use]
    pub const fn description(self) -> &'static str {
        match self {
            Self::EferSvmeClear => "EFER.SVME is zero",
            Self::Cr0NwWithoutCd => "CR0.CD is zero and CR0.NW is set",
            Self::Cr0HighBits => "CR0[63:32] are not zero",
            Self::Cr3ReservedBits => "any MBZ bit of CR3 is set",
            Self::Cr4ReservedBits => "any MBZ bit of CR4 is set",
            Self::Dr6HighBits => "DR6[63:32] are not zero",
            Self::Dr7HighBits => "DR7[63:32] are not zero",
            Self::EferReservedBits => "any MBZ bit of EFER is set",
            Self::LongModeUnsupported => {
                "EFER.LMA or EFER.LME is non-zero and this processor does not support long mode"
            }
            Self::LongModeWithoutPae => "EFER.LME and CR0.PG are both set and CR4.PAE is zero",
            Self::LongModeWithoutPe => "EFER.LME and CR0.PG are both non-zero and CR0.PE is zero",
            Self::LongModeCsLAndD => "EFER.LME, CR0.PG, CR4.PAE, CS.L, and CS.D are all non-zero",
            Self::VmrunInterceptClear => "the VMRUN intercept bit is clear",
            Self::IopmBeyondPhysicalLimit => {
                "the IOIO intercept table extends to a physical address >= the maximum supported"
            }
            Self::MsrpmBeyondPhysicalLimit => {
                "the MSR intercept table extends to a physical address >= the maximum supported"
            }
            Self::EventInjectionReservedType => "EVENTINJ specifies a reserved TYPE",
            Self::EventInjectionNotAnException => {
                "EVENTINJ TYPE = 3 with a vector that is not an exception (including vector 2)"
            }
            Self::AsidZero => "ASID is equal to zero",
            Self::SCetReservedBits => "any reserved bit is set in S_CET",
            Self::CetWithoutWriteProtect => "CR4.CET = 1 when CR0.WP = 0",
            Self::VirtualNmiWithoutNmiIntercept => "V_NMI_ENABLE is set without the NMI intercept",
            Self::NestedCr3ReservedBits => "nested paging is on and any MBZ bit of nCR3 is set",
            Self::GuestPatInvalid => {
                "nested paging is on and a G_PAT.PA field has an unsupported type or a reserved bit"
            }
            Self::X2avicWithoutAvic => "x2AVIC Mode Enable is set without AVIC Enable",
            Self::AvicPhysicalMaxIndexTooLarge => {
                "AVIC_PHYSICAL_MAX_INDEX > 255 in xAVIC mode or > 511 in x2AVIC mode without x2AVIC_EXT"
            }
        }
    }
}

impl core::fmt::Display for Rule {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{} ({})", self.description(), self.apm_reference())
    }
}

/// The set of rules a VMCB violates: a bit per [`Rule`], no allocation.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Violations(u32);

impl Violations {
    /// No violation.
    pub const NONE: Self = Self(0);

    /// Whether no rule is violated.
    #[must_use]
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Number of violated rules.
    #[must_use]
    pub const fn len(self) -> u32 {
        self.0.count_ones()
    }

    /// Whether `rule` is violated.
    #[must_use]
    pub const fn contains(self, rule: Rule) -> bool {
        self.0 & (1 << rule.index()) != 0
    }

    /// Adds `rule`.
    pub fn insert(&mut self, rule: Rule) {
        self.0 |= 1 << rule.index();
    }

    /// The violated rules, in [`Rule::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = Rule> {
        Rule::ALL.into_iter().filter(move |r| self.contains(*r))
    }

    /// A set of exactly `rule`.
    #[must_use]
    pub fn only(rule: Rule) -> Self {
        let mut v = Self::NONE;
        v.insert(rule);
        v
    }
}

impl core::fmt::Debug for Violations {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

/// Whether a table of `size` bytes at `base` (bits 11:0 ignored) reaches a physical address at
/// or above `2^bits`. Unknown widths (0) and widths above 52 are treated as 52.
fn beyond_physical_limit(base: u64, size: usize, caps: &HostCapabilities) -> bool {
    let bits = physical_bits(caps);
    let start = base & !0xFFF;
    let last = start.saturating_add(size as u64 - 1);
    last >> bits != 0
}

/// Checks `vmcb` against every VMRUN consistency rule this crate knows, for a host with `caps`.
/// Returns the violated rules; [`Violations::is_empty`] means VMRUN's checks pass.
#[must_use]
pub fn check_vmcb(vmcb: &Vmcb, caps: &HostCapabilities) -> Violations {
    let control = vmcb.control();
    let save = vmcb.save();
    let (cr0, cr3, cr4, efer) = (save.cr0(), save.cr3(), save.cr4(), save.efer());
    let mut v = Violations::NONE;
    let mut rule = |violated: bool, rule: Rule| {
        if violated {
            v.insert(rule);
        }
    };

    rule(efer & EFER_SVME == 0, Rule::EferSvmeClear);
    rule(cr0 & CR0_CD == 0 && cr0 & CR0_NW != 0, Rule::Cr0NwWithoutCd);
    rule(cr0 >> 32 != 0, Rule::Cr0HighBits);

    let long_mode = efer & EFER_LME != 0 && cr0 & CR0_PG != 0;
    let cr3_reserved = if long_mode {
        cr3 >> physical_bits(caps) != 0
    } else {
        cr3 >> 32 != 0
    };
    rule(cr3_reserved, Rule::Cr3ReservedBits);
    rule(cr4 & !CR4_DEFINED != 0, Rule::Cr4ReservedBits);
    rule(save.dr6() >> 32 != 0, Rule::Dr6HighBits);
    rule(save.dr7() >> 32 != 0, Rule::Dr7HighBits);
    rule(efer & !EFER_DEFINED != 0, Rule::EferReservedBits);
    rule(
        efer & (EFER_LME | EFER_LMA) != 0 && !caps.long_mode,
        Rule::LongModeUnsupported,
    );
    rule(long_mode && cr4 & CR4_PAE == 0, Rule::LongModeWithoutPae);
    rule(long_mode && cr0 & CR0_PE == 0, Rule::LongModeWithoutPe);
    let cs = save.cs().attributes;
    rule(
        long_mode && cr4 & CR4_PAE != 0 && cs.long() && cs.default_big(),
        Rule::LongModeCsLAndD,
    );
    rule(
        !control.intercept_misc2().contains(MiscIntercepts2::VMRUN),
        Rule::VmrunInterceptClear,
    );
    rule(
        beyond_physical_limit(control.iopm_base_pa().as_u64(), IOPM_SIZE, caps),
        Rule::IopmBeyondPhysicalLimit,
    );
    rule(
        beyond_physical_limit(control.msrpm_base_pa().as_u64(), MSRPM_SIZE, caps),
        Rule::MsrpmBeyondPhysicalLimit,
    );

    let event = control.event_injection();
    if event.valid() {
        let event_type = event.event_type();
        rule(!event_type.is_defined(), Rule::EventInjectionReservedType);
        rule(
            event_type == EventType::EXCEPTION && !is_exception_vector(event.vector()),
            Rule::EventInjectionNotAnException,
        );
    }

    rule(control.guest_asid() == 0, Rule::AsidZero);
    rule(save.s_cet() & S_CET_RESERVED != 0, Rule::SCetReservedBits);
    rule(
        cr4 & CR4_CET != 0 && cr0 & CR0_WP == 0,
        Rule::CetWithoutWriteProtect,
    );
    rule(
        control.virtual_interrupt().v_nmi_enable()
            && !control.intercept_misc1().contains(MiscIntercepts1::NMI),
        Rule::VirtualNmiWithoutNmiIntercept,
    );

    if control.nested_control().contains(NestedControl::NP_ENABLE) {
        rule(
            control.nested_cr3().as_u64() >> physical_bits(caps) != 0,
            Rule::NestedCr3ReservedBits,
        );
        rule(!is_valid_pat(save.g_pat()), Rule::GuestPatInvalid);
    }

    let vintr = control.virtual_interrupt();
    rule(
        vintr.x2avic_enable() && !vintr.avic_enable(),
        Rule::X2avicWithoutAvic,
    );
    if vintr.avic_enable() {
        let max_index = control.avic_physical_table() & 0xFFF;
        let limit = if !vintr.x2avic_enable() {
            255
        } else if caps.svm.x2avic_extended() {
            0xFFF
        } else {
            511
        };
        rule(max_index > limit, Rule::AvicPhysicalMaxIndexTooLarge);
    }
    v
}

/// The physical address width to check against: CPUID's value, or 52 when unknown (0) or
/// larger than the architectural maximum.
fn physical_bits(caps: &HostCapabilities) -> u8 {
    match caps.physical_address_bits {
        0 | 53.. => 52,
        b => b,
    }
}

/// Whether every PAT entry holds a supported type (UC 0, WC 1, WT 4, WP 5, WB 6, UC- 7) with
/// its reserved bits 7:3 clear (APM 7.8.1 "PAT Register").
fn is_valid_pat(pat: u64) -> bool {
    pat.to_le_bytes()
        .iter()
        .all(|&entry| matches!(entry, 0 | 1 | 4..=7))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventInjection;
    use crate::features::{SvmFeatureFlags, SvmFeatures};
    use crate::segment::{Segment, SegmentAttributes};
    use x86_64::PhysAddr;

    fn caps() -> HostCapabilities {
        HostCapabilities {
            svm: SvmFeatures {
                revision: 1,
                asid_count: 16,
                ecx: 0,
                flags: SvmFeatureFlags::NESTED_PAGING,
            },
            physical_address_bits: 40,
            long_mode: true,
            page_1g: true,
        }
    }

    /// A legal 64-bit guest: long mode, paging, VMRUN intercepted, ASID 1.
    fn good() -> Vmcb {
        let mut vmcb = Vmcb::new();
        vmcb.set_intercept_misc2(MiscIntercepts2::VMRUN | MiscIntercepts2::VMMCALL);
        vmcb.set_guest_asid(1);
        vmcb.set_efer(EFER_SVME | EFER_LME | EFER_LMA);
        vmcb.set_cr0(CR0_PE | CR0_PG | CR0_WP | (1 << 4) | (1 << 5));
        vmcb.set_cr3(0x0010_0000);
        vmcb.set_cr4(CR4_PAE);
        vmcb.set_dr6(0xFFFF_0FF0);
        vmcb.set_dr7(0x400);
        vmcb.set_cs(Segment::new(
            0x8,
            SegmentAttributes::code64(0),
            0xFFFF_FFFF,
            0,
        ));
        vmcb.set_iopm_base_pa(PhysAddr::new(0x20_0000));
        vmcb.set_msrpm_base_pa(PhysAddr::new(0x30_0000));
        vmcb.set_nested_control(NestedControl::NP_ENABLE);
        vmcb.set_nested_cr3(PhysAddr::new(0x40_0000));
        vmcb.set_g_pat(0x0007_0406_0007_0406);
        vmcb
    }

    #[test]
    fn good_vmcb_passes() {
        assert_eq!(check_vmcb(&good(), &caps()), Violations::NONE);
    }

    #[test]
    fn zeroed_vmcb_violates_the_basics() {
        let v = check_vmcb(&Vmcb::new(), &caps());
        assert!(v.contains(Rule::EferSvmeClear));
        assert!(v.contains(Rule::VmrunInterceptClear));
        assert!(v.contains(Rule::AsidZero));
        assert_eq!(v.len(), 3);
        assert_eq!(
            v.iter().collect::<Vec<_>>(),
            [
                Rule::EferSvmeClear,
                Rule::VmrunInterceptClear,
                Rule::AsidZero
            ]
        );
    }

    type Mutation = fn(&mut Vmcb, &mut HostCapabilities);

    /// For every rule: a change to the good VMCB that breaks exactly that rule, and a nearby
    /// change that does not.
    fn cases() -> Vec<(Rule, Mutation, Mutation)> {
        vec![
            (
                Rule::EferSvmeClear,
                |v, _| v.set_efer(EFER_LME | EFER_LMA),
                |v, _| v.set_efer(EFER_SVME | EFER_LME | EFER_LMA | 1),
            ),
            (
                Rule::Cr0NwWithoutCd,
                |v, _| v.set_cr0(v.save().cr0() | CR0_NW),
                |v, _| v.set_cr0(v.save().cr0() | CR0_NW | CR0_CD),
            ),
            (
                Rule::Cr0HighBits,
                |v, _| v.set_cr0(v.save().cr0() | (1 << 32)),
                |v, _| v.set_cr0(v.save().cr0() | (1 << 18)),
            ),
            (
                Rule::Cr3ReservedBits,
                |v, _| v.set_cr3(1 << 40),
                |v, _| v.set_cr3((1 << 39) | 0x18),
            ),
            (
                Rule::Cr4ReservedBits,
                |v, _| v.set_cr4(CR4_PAE | (1 << 13)),
                |v, _| v.set_cr4(CR4_PAE | (1 << 12) | (1 << 22)),
            ),
            (
                Rule::Dr6HighBits,
                |v, _| v.set_dr6(1 << 32),
                |v, _| v.set_dr6(0xFFFF_FFFF),
            ),
            (
                Rule::Dr7HighBits,
                |v, _| v.set_dr7(1 << 40),
                |v, _| v.set_dr7(0xFFFF_0400),
            ),
            (
                Rule::EferReservedBits,
                |v, _| v.set_efer(v.save().efer() | (1 << 9)),
                |v, _| v.set_efer(v.save().efer() | (1 << 11) | (1 << 21)),
            ),
            (
                Rule::LongModeUnsupported,
                |_, c| c.long_mode = false,
                |v, c| {
                    c.long_mode = false;
                    v.set_efer(EFER_SVME);
                    v.set_cr0(CR0_PE | CR0_PG | CR0_WP);
                },
            ),
            (
                Rule::LongModeWithoutPae,
                |v, _| v.set_cr4(0),
                |v, _| {
                    v.set_cr4(0);
                    v.set_efer(EFER_SVME);
                },
            ),
            (
                Rule::LongModeWithoutPe,
                |v, _| v.set_cr0(CR0_PG | CR0_WP),
                // Paged real mode (PE = 0, PG = 1) is legal outside long mode (15.19).
                |v, _| {
                    v.set_cr0(CR0_PG | CR0_WP);
                    v.set_efer(EFER_SVME);
                },
            ),
            (
                Rule::LongModeCsLAndD,
                |v, _| {
                    let attrs = SegmentAttributes::code64(0).with_default_big(true);
                    v.set_cs(Segment::new(8, attrs, 0xFFFF_FFFF, 0));
                },
                |v, _| {
                    v.set_cs(Segment::new(
                        8,
                        SegmentAttributes::code32(0),
                        0xFFFF_FFFF,
                        0,
                    ));
                },
            ),
            (
                Rule::VmrunInterceptClear,
                |v, _| v.set_intercept_misc2(MiscIntercepts2::VMMCALL),
                |v, _| v.set_intercept_misc2(MiscIntercepts2::VMRUN),
            ),
            (
                Rule::IopmBeyondPhysicalLimit,
                // 12 KiB at 2^40 − 8 KiB crosses the 40-bit limit.
                |v, _| v.set_iopm_base_pa(PhysAddr::new((1 << 40) - 0x2000)),
                |v, _| v.set_iopm_base_pa(PhysAddr::new((1 << 40) - 0x3000)),
            ),
            (
                Rule::MsrpmBeyondPhysicalLimit,
                |v, _| v.set_msrpm_base_pa(PhysAddr::new((1 << 40) - 0x1000)),
                |v, _| v.set_msrpm_base_pa(PhysAddr::new((1 << 40) - 0x2000)),
            ),
            (
                Rule::EventInjectionReservedType,
                |v, _| v.set_event_injection(EventInjection::from_bits(0x8000_0120)),
                // The same reserved type without V is no injection at all.
                |v, _| v.set_event_injection(EventInjection::from_bits(0x0000_0120)),
            ),
            (
                Rule::EventInjectionNotAnException,
                |v, _| v.set_event_injection(EventInjection::exception(2, None)),
                |v, _| v.set_event_injection(EventInjection::nmi()),
            ),
            (
                Rule::AsidZero,
                |v, _| v.set_guest_asid(0),
                |v, _| v.set_guest_asid(u32::MAX),
            ),
            (
                Rule::SCetReservedBits,
                |v, _| v.set_s_cet(1 << 6),
                |v, _| v.set_s_cet(0b11_1111 | (1 << 10) | (1 << 11)),
            ),
            (
                Rule::CetWithoutWriteProtect,
                |v, _| {
                    v.set_cr4(CR4_PAE | CR4_CET);
                    v.set_cr0(CR0_PE | CR0_PG);
                },
                |v, _| v.set_cr4(CR4_PAE | CR4_CET),
            ),
            (
                Rule::VirtualNmiWithoutNmiIntercept,
                |v, _| {
                    let vi = v.control().virtual_interrupt().with_v_nmi_enable(true);
                    v.set_virtual_interrupt(vi);
                },
                |v, _| {
                    let vi = v.control().virtual_interrupt().with_v_nmi_enable(true);
                    v.set_virtual_interrupt(vi);
                    v.set_intercept_misc1(MiscIntercepts1::NMI);
                },
            ),
            (
                Rule::NestedCr3ReservedBits,
                |v, _| v.set_nested_cr3(PhysAddr::new(1 << 40)),
                // Without nested paging N_CR3 is not used.
                |v, _| {
                    v.set_nested_cr3(PhysAddr::new(1 << 40));
                    v.set_nested_control(NestedControl::empty());
                },
            ),
            (
                Rule::GuestPatInvalid,
                // Type 2 is reserved.
                |v, _| v.set_g_pat(0x0007_0406_0007_0402),
                |v, _| v.set_g_pat(0x0706_0504_0100_0706),
            ),
            (
                Rule::X2avicWithoutAvic,
                |v, _| {
                    let vi = v.control().virtual_interrupt().with_x2avic_enable(true);
                    v.set_virtual_interrupt(vi);
                },
                |v, _| {
                    let vi = v.control().virtual_interrupt().with_x2avic_enable(true);
                    v.set_virtual_interrupt(vi.with_avic_enable(true));
                    v.set_avic_physical_table(0x50_0000 | 511);
                },
            ),
            (
                Rule::AvicPhysicalMaxIndexTooLarge,
                |v, _| {
                    let vi = v.control().virtual_interrupt().with_avic_enable(true);
                    v.set_virtual_interrupt(vi);
                    v.set_avic_physical_table(0x50_0000 | 256);
                },
                |v, _| {
                    let vi = v.control().virtual_interrupt().with_avic_enable(true);
                    v.set_virtual_interrupt(vi);
                    v.set_avic_physical_table(0x50_0000 | 255);
                },
            ),
        ]
    }

    #[test]
    fn every_rule_has_a_breaking_and_a_passing_case() {
        let cases = cases();
        assert_eq!(cases.len(), Rule::ALL.len());
        for (rule, _, _) in &cases {
            assert_eq!(cases.iter().filter(|c| c.0 == *rule).count(), 1, "{rule:?}");
        }
        for (rule, breaks, passes) in cases {
            let (mut vmcb, mut c) = (good(), caps());
            breaks(&mut vmcb, &mut c);
            assert_eq!(
                check_vmcb(&vmcb, &c),
                Violations::only(rule),
                "breaking {rule:?}"
            );

            let (mut vmcb, mut c) = (good(), caps());
            passes(&mut vmcb, &mut c);
            assert_eq!(
                check_vmcb(&vmcb, &c),
                Violations::NONE,
                "near miss of {rule:?}"
            );
        }
    }

    #[test]
    fn every_rule_has_a_reference_and_text() {
        for rule in Rule::ALL {
            assert!(
                rule.apm_reference().starts_with("APM Vol. 2 15."),
                "{rule:?}"
            );
            assert!(!rule.description().is_empty());
        }
        let shown = format!("{}", Rule::AsidZero);
        assert!(shown.contains("15.5.1"), "{shown}");
    }

    #[test]
    fn x2avic_limits_depend_on_x2avic_ext() {
        let mut vmcb = good();
        let vi = vmcb
            .control()
            .virtual_interrupt()
            .with_avic_enable(true)
            .with_x2avic_enable(true);
        vmcb.set_virtual_interrupt(vi);
        vmcb.set_avic_physical_table(0x50_0000 | 600);
        let mut c = caps();
        assert_eq!(
            check_vmcb(&vmcb, &c),
            Violations::only(Rule::AvicPhysicalMaxIndexTooLarge)
        );
        c.svm.ecx = crate::features::CPUID_SVM_ECX_X2AVIC_EXT;
        assert_eq!(check_vmcb(&vmcb, &c), Violations::NONE);
    }

    #[test]
    fn unknown_physical_width_uses_52_bits() {
        let mut c = caps();
        c.physical_address_bits = 0;
        let mut vmcb = good();
        vmcb.set_cr3(1 << 45);
        vmcb.set_iopm_base_pa(PhysAddr::new(1 << 45));
        assert_eq!(check_vmcb(&vmcb, &c), Violations::NONE);
        vmcb.set_iopm_base_pa(PhysAddr::new((1 << 52) - 0x1000));
        assert_eq!(
            check_vmcb(&vmcb, &c),
            Violations::only(Rule::IopmBeyondPhysicalLimit)
        );
    }

    #[test]
    fn several_violations_are_all_reported() {
        let mut vmcb = good();
        vmcb.set_guest_asid(0);
        vmcb.set_dr7(1 << 63);
        vmcb.set_event_injection(EventInjection::exception(40, None));
        let v = check_vmcb(&vmcb, &caps());
        assert_eq!(v.len(), 3);
        assert!(v.contains(Rule::AsidZero));
        assert!(v.contains(Rule::Dr7HighBits));
        assert!(v.contains(Rule::EventInjectionNotAnException));
        assert_eq!(
            format!("{v:?}"),
            "{Dr7HighBits, EventInjectionNotAnException, AsidZero}"
        );
    }
}
