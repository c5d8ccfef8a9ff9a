//! Ready-made guest states and intercept sets for common starting points.
//!
//! Manual: AMD64 Architecture Programmer's Manual Volume 2: System Programming, Publication
//! No. 24593, Revision 3.42, March 2024 — Section 14.1.3 "Processor Initialization State"
//! (Table 14-1, the reset state), Section 14.6 "Long-Mode Initialization Example" /
//! 14.8 "Enabling and Activating Long Mode", Section 15.5.1 "Basic Operation" (state VMRUN
//! loads) and Section 15.21.1 "Physical (INTR) Interrupt Masking in EFLAGS".
//!
//! Each preset writes the guest state through the tracked setters, so the clean bits stay right,
//! and leaves the control fields that only the hypervisor can choose (ASID, permission maps,
//! nested paging) alone. Every preset combined with [`Intercepts::baseline`] and a non-zero ASID
//! passes [`crate::check::check_vmcb`] (see the tests).

use crate::intercept::{MiscIntercepts1, MiscIntercepts2};
use crate::segment::{Segment, SegmentAttributes, SegmentType};
use crate::vmcb::{Intercepts, VirtualInterrupt, Vmcb};

/// EFER.SVME (bit 12), which VMRUN requires in the guest EFER.
const EFER_SVME: u64 = 1 << 12;
/// EFER.LME | EFER.LMA | EFER.NXE.
const EFER_LONG_MODE: u64 = (1 << 8) | (1 << 10) | (1 << 11);
/// CR0 of the reset state, 6000_0010h (CD, NW, ET; Table 14-1).
const CR0_RESET: u64 = 0x6000_0010;
/// CR0.PE | MP | ET | NE | WP | PG.
const CR0_LONG_MODE: u64 = 1 | (1 << 1) | (1 << 4) | (1 << 5) | (1 << 16) | (1 << 31);
/// CR4.PAE | PGE | OSFXSR | OSXMMEXCPT.
const CR4_LONG_MODE: u64 = (1 << 5) | (1 << 7) | (1 << 9) | (1 << 10);
/// DR6 reset value (Table 14-1).
const DR6_RESET: u64 = 0xFFFF_0FF0;
/// DR7 reset value (Table 14-1).
const DR7_RESET: u64 = 0x400;
/// RFLAGS reset value: only the always-one bit 1.
const RFLAGS_RESET: u64 = 0x2;
/// The PAT reset value, used for G_PAT (Section 7.8.1 "PAT Register").
pub const PAT_RESET: u64 = 0x0007_0406_0007_0406;

impl Intercepts {
    /// Only what VMRUN requires: the VMRUN intercept (15.5.1).
    #[must_use]
    pub fn required() -> Self {
        Self {
            misc2: MiscIntercepts2::VMRUN,
            ..Self::default()
        }
    }

    /// A sensible base for a run loop: VMRUN (required), VMMCALL (hypercalls; #UD otherwise),
    /// physical INTR and NMI (so host interrupts leave the guest instead of being taken by it),
    /// and SHUTDOWN (a guest triple fault exits instead of resetting the machine).
    #[must_use]
    pub fn baseline() -> Self {
        Self {
            misc1: MiscIntercepts1::INTR | MiscIntercepts1::NMI | MiscIntercepts1::SHUTDOWN,
            misc2: MiscIntercepts2::VMRUN | MiscIntercepts2::VMMCALL,
            ..Self::default()
        }
    }
}

/// Selectors, descriptor tables and entry point of a flat 64-bit guest (see
/// [`Vmcb::set_flat_long_mode`]).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct LongModeGuest {
    /// Guest CR3: root of the guest's 4-level page tables (guest physical address).
    pub cr3: u64,
    /// Entry point.
    pub rip: u64,
    /// Initial stack pointer.
    pub rsp: u64,
    /// CS selector (the guest's GDT should hold a matching 64-bit code descriptor).
    pub code_selector: u16,
    /// SS/DS/ES/FS/GS selector.
    pub data_selector: u16,
    /// GDTR ([`Segment::table`]): the GDT that holds the two descriptors above; the guest uses
    /// it as soon as it reloads a segment register or takes an interrupt.
    pub gdtr: Segment,
    /// IDTR ([`Segment::table`]): the guest's interrupt table. `Segment::table(0, 0)` is an
    /// empty table (any interrupt or exception then escalates to a triple fault).
    pub idtr: Segment,
}

impl Vmcb {
    /// Loads the x86 reset state (APM Table 14-1) as guest state: real mode at F000:FFF0 (linear
    /// FFFF_FFF0h), CR0 = 6000_0010h, EFER = SVME only. A guest firmware (or a real-mode test
    /// program) starts here. G_PAT gets the PAT reset value.
    pub fn set_reset_state(&mut self) {
        let data = SegmentAttributes::new(SegmentType::DATA_READ_WRITE_ACCESSED, true, 0);
        let code = SegmentAttributes::new(SegmentType::CODE_EXECUTE_READ_ACCESSED, true, 0);
        self.set_cs(Segment::new(0xF000, code, 0xFFFF, 0xFFFF_0000));
        for set in [Self::set_ds, Self::set_es, Self::set_ss] {
            set(self, Segment::new(0, data, 0xFFFF, 0));
        }
        self.set_fs(Segment::new(0, data, 0xFFFF, 0));
        self.set_gs(Segment::new(0, data, 0xFFFF, 0));
        self.set_gdtr(Segment::table(0, 0xFFFF));
        self.set_idtr(Segment::table(0, 0xFFFF));
        self.set_ldtr(Segment::new(0, SegmentAttributes::ldt(), 0xFFFF, 0));
        let tss16_busy = SegmentAttributes::new(SegmentType::TSS16_BUSY, false, 0);
        self.set_tr(Segment::new(0, tss16_busy, 0xFFFF, 0));
        self.set_cpl(0);
        self.set_efer(EFER_SVME);
        self.set_cr0(CR0_RESET);
        self.set_cr2(0);
        self.set_cr3(0);
        self.set_cr4(0);
        self.set_dr6(DR6_RESET);
        self.set_dr7(DR7_RESET);
        self.set_rflags(RFLAGS_RESET);
        self.set_rip(0xFFF0);
        self.set_rsp(0);
        self.set_rax(0);
        self.set_g_pat(PAT_RESET);
    }

    /// Loads a flat 64-bit guest state: long mode with paging (EFER.LME/LMA/NXE/SVME,
    /// CR0.PE/MP/ET/NE/WP/PG, CR4.PAE/PGE/OSFXSR/OSXMMEXCPT), CPL 0, a 64-bit code segment and
    /// flat data segments with base 0, the caller's GDTR and IDTR, RFLAGS = 2 and reset debug
    /// registers. TR is a busy 64-bit TSS with selector 0, base 0 and limit 67h and LDTR is
    /// null: a guest that changes privilege level or uses the IST loads its own TR.
    pub fn set_flat_long_mode(&mut self, guest: &LongModeGuest) {
        let data = Segment::new(
            guest.data_selector,
            SegmentAttributes::data(0),
            0xFFFF_FFFF,
            0,
        );
        self.set_cs(Segment::new(
            guest.code_selector,
            SegmentAttributes::code64(0),
            0xFFFF_FFFF,
            0,
        ));
        for set in [
            Self::set_ds,
            Self::set_es,
            Self::set_ss,
            Self::set_fs,
            Self::set_gs,
        ] {
            set(self, data);
        }
        self.set_gdtr(guest.gdtr);
        self.set_idtr(guest.idtr);
        self.set_ldtr(Segment::NULL);
        self.set_tr(Segment::new(0, SegmentAttributes::tss_busy(), 0x67, 0));
        self.set_cpl(0);
        self.set_efer(EFER_SVME | EFER_LONG_MODE);
        self.set_cr0(CR0_LONG_MODE);
        self.set_cr3(guest.cr3);
        self.set_cr4(CR4_LONG_MODE);
        self.set_dr6(DR6_RESET);
        self.set_dr7(DR7_RESET);
        self.set_rflags(RFLAGS_RESET);
        self.set_rip(guest.rip);
        self.set_rsp(guest.rsp);
        self.set_g_pat(PAT_RESET);
    }

    /// Sets V_INTR_MASKING (15.21.1): the guest's RFLAGS.IF and CR8 then control only virtual
    /// interrupts, and physical interrupts stay with the host. Pair it with the INTR intercept.
    pub fn set_virtual_interrupt_masking(&mut self, enable: bool) {
        let vintr: VirtualInterrupt = self.control().virtual_interrupt();
        self.set_virtual_interrupt(vintr.with_v_intr_masking(enable));
    }

    /// If the last #VMEXIT interrupted the delivery of an event (EXITINTINFO.V = 1), moves it to
    /// EVENTINJ so the next VMRUN delivers it again (15.7.2 "Intercepts During IDT Interrupt
    /// Delivery"), and returns `true`. Software interrupts and INT3/INTO need the guest RIP of
    /// the instruction (or nRIP) to be right; the caller owns that decision.
    pub fn reinject_interrupted_event(&mut self) -> bool {
        let event = self.control().exit_int_info();
        if event.valid() {
            self.set_event_injection(event);
        }
        event.valid()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::{Violations, check_vmcb};
    use crate::event::EventInjection;
    use crate::features::HostCapabilities;

    fn caps() -> HostCapabilities {
        HostCapabilities::from_cpuid([1, 16, 0, 1], 48, 1 << 29)
    }

    #[test]
    fn reset_state_passes_the_checks() {
        let mut vmcb = Vmcb::new();
        vmcb.set_reset_state();
        vmcb.set_intercepts(Intercepts::baseline());
        vmcb.set_guest_asid(1);
        assert_eq!(check_vmcb(&vmcb, &caps()), Violations::NONE);
        assert_eq!(vmcb.save().cs().base, 0xFFFF_0000);
        assert_eq!(vmcb.save().rip(), 0xFFF0);
        assert_eq!(vmcb.save().cr0(), 0x6000_0010);
        assert_eq!(vmcb.save().cs().attributes.bits(), 0x9B);
        assert_eq!(vmcb.save().ds().attributes.bits(), 0x93);
        assert_eq!(vmcb.save().tr().attributes.bits(), 0x83);
        assert_eq!(vmcb.save().ldtr().attributes.bits(), 0x82);
    }

    #[test]
    fn long_mode_passes_the_checks() {
        let mut vmcb = Vmcb::new();
        vmcb.set_flat_long_mode(&LongModeGuest {
            cr3: 0x1000,
            rip: 0x20_0000,
            rsp: 0x30_0000,
            code_selector: 0x08,
            data_selector: 0x10,
            gdtr: Segment::table(0x5000, 0x27),
            idtr: Segment::table(0x6000, 0xFFF),
        });
        vmcb.set_intercepts(Intercepts::required());
        assert!(!check_vmcb(&vmcb, &caps()).is_empty(), "ASID still 0");
        vmcb.set_guest_asid(1);
        assert_eq!(check_vmcb(&vmcb, &caps()), Violations::NONE);
        assert!(vmcb.save().cs().attributes.long());
        assert_eq!(vmcb.save().ss().selector, 0x10);
        assert_eq!(vmcb.save().tr().attributes.bits(), 0x8B);
        assert_eq!(vmcb.save().gdtr(), Segment::table(0x5000, 0x27));
        assert_eq!(vmcb.save().idtr(), Segment::table(0x6000, 0xFFF));
    }

    #[test]
    fn baseline_intercepts() {
        let i = Intercepts::baseline();
        assert!(
            i.misc2
                .contains(MiscIntercepts2::VMRUN | MiscIntercepts2::VMMCALL)
        );
        assert!(
            i.misc1
                .contains(MiscIntercepts1::INTR | MiscIntercepts1::SHUTDOWN)
        );
        assert_eq!(Intercepts::required().misc2, MiscIntercepts2::VMRUN);
    }

    #[test]
    fn reinjection_and_masking() {
        let mut vmcb = Vmcb::new();
        assert!(!vmcb.reinject_interrupted_event());
        assert_eq!(vmcb.control().event_injection(), EventInjection::NONE);
        let pf = EventInjection::exception(14, Some(2));
        vmcb.set_exit_int_info(pf);
        assert!(vmcb.reinject_interrupted_event());
        assert_eq!(vmcb.control().event_injection(), pf);
        vmcb.set_virtual_interrupt_masking(true);
        assert!(vmcb.control().virtual_interrupt().v_intr_masking());
    }
}
