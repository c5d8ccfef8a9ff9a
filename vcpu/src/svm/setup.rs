//! Building the VMCB: guest state from a [`GuestState`], the intercepts every hvkit guest has,
//! the permission maps, ASID, TSC offset and nested paging. Plain functions over `&mut Vmcb`, so
//! a host test fills a boxed `Vmcb` with exactly what the processor gets and checks it with
//! [`hvkit_svm::check::check_vmcb`].
//!
//! Manual: AMD64 Architecture Programmer's Manual Volume 2: System Programming, Publication No.
//! 24593, Revision 3.42, March 2024: Appendix B "Layout of VMCB" (Table B-1 control area,
//! Table B-2 state save area and its segment attribute format), 15.5.1 "Basic Operation" (the
//! consistency checks; EFER.SVME; CPL), 15.9 "Instruction Intercepts", 15.10.1 "I/O Permissions
//! Map", 15.11 "MSR Intercepts" (Table 15-6 "MSR Ranges Covered by MSRPM"), 15.12 "Exception
//! Intercepts", 15.16 "TLB Control" (ASID), 15.21.1 "Physical (INTR) Interrupt Masking in
//! EFLAGS" (V_INTR_MASKING), 15.25.3 "Enabling Nested Paging", 15.30.1 "VM_CR MSR" and 15.30.4
//! "VM_HSAVE_PA MSR".

use hvkit_svm::intercept::{ExceptionIntercepts, MiscIntercepts1, MiscIntercepts2};
use hvkit_svm::msrpm::{MsrIntercept, Msrpm};
use hvkit_svm::segment::{Segment as SvmSegment, SegmentAttributes};
use hvkit_svm::vmcb::{Intercepts, NestedControl, TlbControl, Vmcb};
use x86_64::PhysAddr;

use crate::state::{CR0_PE, EFER_SVME, GuestState, Segment};

/// VM_CR (APM 15.30.1 "VM_CR MSR").
pub const MSR_VM_CR: u32 = 0xc001_0114;
/// VM_HSAVE_PA (APM 15.30.4 "VM_HSAVE_PA MSR").
pub const MSR_VM_HSAVE_PA: u32 = 0xc001_0117;

/// The control-area choices [`write_vmcb`] writes besides the guest state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmcbLayout {
    /// Physical address of the 12 KiB I/O permission map.
    pub iopm: u64,
    /// Physical address of the 8 KiB MSR permission map.
    pub msrpm: u64,
    /// The guest ASID (never 0; checked by [`guest_asid`] against the processor's count).
    pub asid: u32,
    /// TLB_CONTROL for the first VMRUN (a new ASID generation flushes everything).
    pub tlb_control: TlbControl,
    /// N_CR3 (with NP_ENABLE), or `None` for no nested paging.
    pub ncr3: Option<u64>,
    /// Exceptions that exit (bit n = vector n).
    pub exception_bitmap: u32,
    /// Added to the guest's TSC.
    pub tsc_offset: i64,
    /// Physical INTR and NMI exit (with V_INTR_MASKING, so the guest's RFLAGS.IF masks only
    /// virtual interrupts); otherwise they go to the guest.
    pub external_interrupt_exiting: bool,
}

/// Why a configured ASID ([`crate::VcpuConfig::vpid`]) cannot be used (APM 15.16 "TLB
/// Control": ASID 0 is the host's; CPUID Fn8000_000A_EBX is the number of ASIDs, NASID, so the
/// guest ASIDs are 1 … NASID − 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum AsidError {
    /// ASID 0 belongs to the host; VMRUN refuses a guest with it (APM 15.5.1 "Basic
    /// Operation", the consistency checks).
    #[error("ASID 0 is the host's; a guest needs 1 or more")]
    Zero,
    /// The ASID is not below the processor's ASID count.
    #[error("ASID {asid} is not below the processor's ASID count {count} (CPUID Fn8000_000A_EBX)")]
    OutOfRange {
        /// The configured ASID.
        asid: u32,
        /// NASID, CPUID Fn8000_000A_EBX.
        count: u32,
    },
}

/// The guest ASID for a configured value: `configured` itself if it is a guest ASID of a
/// processor with `asid_count` ASIDs (CPUID Fn8000_000A_EBX), that is 1 ≤ `configured` <
/// `asid_count` (APM 15.16 "TLB Control").
///
/// The value is used as it is: which vCPU gets which ASID on a processor is the caller's
/// choice (the same ASID for two vCPUs that run on one processor shares their TLB entries; a
/// caller that wants ASIDs handed out and recycled uses [`hvkit_svm::asid::AsidAllocator`] and
/// passes what it assigns).
///
/// # Errors
/// [`AsidError::Zero`] for 0; [`AsidError::OutOfRange`] for an ASID ≥ `asid_count` (every ASID
/// when the processor reports fewer than 2).
pub const fn guest_asid(configured: u16, asid_count: u32) -> Result<u32, AsidError> {
    let asid = configured as u32;
    if asid == 0 {
        return Err(AsidError::Zero);
    }
    if asid >= asid_count {
        return Err(AsidError::OutOfRange {
            asid,
            count: asid_count,
        });
    }
    Ok(asid)
}

/// A segment register in the VMCB format (APM Table B-2: attributes are descriptor bits 47:40
/// and 55:52 packed into 12 bits; an unusable segment has attributes 0).
#[must_use]
pub fn svm_segment(s: &Segment) -> SvmSegment {
    SvmSegment::new(
        s.selector,
        SegmentAttributes::from_bits(s.access.svm_attributes()),
        s.limit,
        s.base,
    )
}

/// Writes `state` into the state save area: segments, descriptor tables, CPL (0 in real mode,
/// else SS.DPL), EFER with SVME (APM 15.5.1), CR0/CR3/CR4, DR6 at its reset value, DR7, RFLAGS,
/// RIP, RSP, RAX, G_PAT and the SYSENTER MSRs. Every setter clears its clean bit.
pub fn write_state(vmcb: &mut Vmcb, state: &GuestState) {
    vmcb.set_cs(svm_segment(&state.cs));
    vmcb.set_ss(svm_segment(&state.ss));
    vmcb.set_ds(svm_segment(&state.ds));
    vmcb.set_es(svm_segment(&state.es));
    vmcb.set_fs(svm_segment(&state.fs));
    vmcb.set_gs(svm_segment(&state.gs));
    vmcb.set_tr(svm_segment(&state.tr));
    vmcb.set_ldtr(svm_segment(&state.ldtr));
    vmcb.set_gdtr(SvmSegment::table(state.gdtr.base, state.gdtr.limit));
    vmcb.set_idtr(SvmSegment::table(state.idtr.base, state.idtr.limit));
    let cpl = if state.cr0 & CR0_PE == 0 {
        0
    } else {
        state.ss.access.dpl()
    };
    vmcb.set_cpl(cpl);
    vmcb.set_efer(state.efer | EFER_SVME);
    vmcb.set_cr0(state.cr0);
    vmcb.set_cr2(0);
    vmcb.set_cr3(state.cr3);
    vmcb.set_cr4(state.cr4);
    vmcb.set_dr6(0xffff_0ff0);
    vmcb.set_dr7(state.dr7);
    vmcb.set_rflags(state.rflags);
    vmcb.set_rip(state.rip);
    vmcb.set_rsp(state.rsp);
    vmcb.set_rax(state.regs.rax);
    vmcb.set_g_pat(state.pat);
    vmcb.set_sysenter_cs(u64::from(state.sysenter_cs));
    vmcb.set_sysenter_esp(state.sysenter_esp);
    vmcb.set_sysenter_eip(state.sysenter_eip);
}

/// The intercepts every hvkit SVM guest has: VMRUN (required by 15.5.1) and the other SVM
/// instructions (VMLOAD, VMSAVE, STGI, CLGI, SKINIT, INVLPGA: #UD for the guest), VMMCALL
/// (hypercalls), CPUID, HLT, IOIO and MSR through the permission maps, XSETBV (the vCPU tracks
/// the guest's XCR0), INIT and SHUTDOWN; physical INTR and NMI when asked; the exceptions of
/// `exception_bitmap`.
#[must_use]
pub fn base_intercepts(external_interrupt_exiting: bool, exception_bitmap: u32) -> Intercepts {
    let mut misc1 = MiscIntercepts1::CPUID
        | MiscIntercepts1::HLT
        | MiscIntercepts1::IOIO_PROT
        | MiscIntercepts1::MSR_PROT
        | MiscIntercepts1::INVLPGA
        | MiscIntercepts1::SHUTDOWN
        | MiscIntercepts1::INIT;
    if external_interrupt_exiting {
        misc1 |= MiscIntercepts1::INTR | MiscIntercepts1::NMI;
    }
    Intercepts {
        misc1,
        misc2: MiscIntercepts2::VMRUN
            | MiscIntercepts2::VMMCALL
            | MiscIntercepts2::VMLOAD
            | MiscIntercepts2::VMSAVE
            | MiscIntercepts2::STGI
            | MiscIntercepts2::CLGI
            | MiscIntercepts2::SKINIT
            | MiscIntercepts2::XSETBV,
        exceptions: ExceptionIntercepts::from_bits_retain(exception_bitmap),
        ..Intercepts::default()
    }
}

/// Fills a zeroed VMCB: the guest state ([`write_state`]), the intercepts
/// ([`base_intercepts`]), the permission maps, ASID and TLB control, nested paging with G_PAT,
/// the TSC offset and V_INTR_MASKING. Every clean bit ends up clear (the first VMRUN loads
/// everything).
pub fn write_vmcb(vmcb: &mut Vmcb, layout: &VmcbLayout, state: &GuestState) {
    write_state(vmcb, state);
    vmcb.set_intercepts(base_intercepts(
        layout.external_interrupt_exiting,
        layout.exception_bitmap,
    ));
    vmcb.set_iopm_base_pa(PhysAddr::new_truncate(layout.iopm));
    vmcb.set_msrpm_base_pa(PhysAddr::new_truncate(layout.msrpm));
    vmcb.set_guest_asid(layout.asid);
    vmcb.set_tlb_control(layout.tlb_control);
    if let Some(ncr3) = layout.ncr3 {
        vmcb.set_nested_control(NestedControl::NP_ENABLE);
        vmcb.set_nested_cr3(PhysAddr::new_truncate(ncr3));
    }
    vmcb.set_tsc_offset(layout.tsc_offset as u64);
    vmcb.set_virtual_interrupt_masking(layout.external_interrupt_exiting);
    vmcb.mark_all_dirty();
}

/// The MSR intercepts every hvkit SVM guest has: VM_CR and VM_HSAVE_PA read and write (the
/// host's; a guest VM_HSAVE_PA would point the processor at guest memory), EFER reads and writes
/// (SVME must stay set in the VMCB, and the guest, which sees no SVM in CPUID, must not see it).
/// The default answer to the first two is #GP; EFER writes are applied with SVME kept, and
/// reads return EFER without SVME. The I/O permission map needs nothing beyond
/// [`hvkit_svm::Iopm::set_all`]`(false)`, which keeps the bits past port FFFFh set (APM 15.10.1).
pub fn init_msrpm(msrpm: &mut Msrpm) {
    for msr in [MSR_VM_CR, MSR_VM_HSAVE_PA, super::core::MSR_EFER] {
        // All three lie in the MSRPM's ranges (Table 15-6): never out of range.
        let _ = msrpm.set(msr, MsrIntercept::ReadWrite);
    }
}
