//! The SVM vCPU on the processor: EFER.SVME and the host save area, the VMCB built from the
//! typed guest state, permission maps, nested paging, and the run loop (CLGI, VMSAVE host,
//! VMLOAD guest, VMRUN, VMSAVE guest, VMLOAD host, STGI) with the extended-state switch.
//!
//! Manual: AMD64 Architecture Programmer's Manual Volume 2: System Programming, Publication No.
//! 24593, Revision 3.42, March 2024: 15.4 "Enabling SVM", 15.5 "VMRUN Instruction" (15.5.1
//! "Basic Operation": the host save area, VM_HSAVE_PA), 15.5.2 "VMSAVE and VMLOAD Instructions",
//! 15.17 "Global Interrupt Flag, STGI and CLGI Instructions", 15.25 "Nested Paging" (15.25.3
//! "Enabling Nested Paging", 15.25.5 "Nested Table Walk"), 15.16 "TLB Control" (ASIDs, TLB
//! flush on VMRUN), Appendix B "Layout of VMCB".
// UNSAFETY: enables SVM, hands VMCB frames to VMRUN/VMLOAD/VMSAVE and switches GIF; the vCPU's
// constructor carries the obligations.
#![expect(unsafe_code, reason = "SVM enable, VMRUN/VMLOAD/VMSAVE, CLGI/STGI")]

use core::ops::{Deref, DerefMut};
use core::ptr::NonNull;

use hvkit_paging::{Flush, GuestPhysAddr, HostPhysAddr, NptCapabilities};
use hvkit_svm::Vmcb;
use hvkit_svm::enable::{SvmMsrs, disable_svm, enable_svm};
use hvkit_svm::features::SvmFeatureFlags;
use hvkit_svm::instructions::{HardwareCpuid, HardwareSvmMsrs, clgi, stgi, vmload, vmrun, vmsave};
use hvkit_svm::intercept::{ExceptionIntercepts, MiscIntercepts1, MiscIntercepts2};
use hvkit_svm::segment::{Segment as SvmSegment, SegmentAttributes};
use hvkit_svm::vmcb::{NestedControl, TlbControl};
use raw_cpuid::native_cpuid::cpuid_count;
use x86_64::PhysAddr;

use super::core::SvmCore;
use crate::bitmap::Bitmap;
use crate::error::{Unsupported, VcpuError};
use crate::exit::Exit;
use crate::memory::{MemoryMap, NestedPaging};
use crate::platform::{OwnedFrames, Platform};
use crate::state::{EFER_SVME, GuestState, Segment};
use crate::vcpu::VcpuConfig;
use crate::xsave::{ExtendedState, Method};

/// The vCPU's VMCB in its platform frame.
///
/// Type invariant: `ptr` points at a zeroed-then-initialised 4 KiB, 4 KiB-aligned frame owned
/// by the vCPU for as long as this value lives; it is reached only through this value, and the
/// processor writes it only during VMRUN/VMSAVE, which take it by `&mut`.
#[derive(Debug)]
pub struct VmcbFrame {
    ptr: NonNull<Vmcb>,
}

impl Deref for VmcbFrame {
    type Target = Vmcb;
    fn deref(&self) -> &Vmcb {
        // SAFETY: the type invariant: a valid, exclusively owned VMCB.
        unsafe { self.ptr.as_ref() }
    }
}

impl DerefMut for VmcbFrame {
    fn deref_mut(&mut self) -> &mut Vmcb {
        // SAFETY: the type invariant, and `&mut self` makes this the only access.
        unsafe { self.ptr.as_mut() }
    }
}

fn svm_segment(s: &Segment) -> SvmSegment {
    SvmSegment::new(
        s.selector,
        SegmentAttributes::from_bits(s.access.svm_attributes()),
        s.limit,
        s.base,
    )
}

/// Writes `state` into the VMCB state-save area (EFER gets SVME, APM 15.5.1).
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
    vmcb.set_cpl(state.ss.access.dpl());
    vmcb.set_efer(state.efer | EFER_SVME);
    vmcb.set_cr0(state.cr0);
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

/// The intercepts every hvkit SVM guest has: VMRUN (required), the other SVM instructions
/// (#UD for the guest), VMMCALL (hypercalls), CPUID, HLT, IOIO and MSR through the maps,
/// XSETBV, SHUTDOWN, INIT and physical INTR/NMI when asked.
pub fn write_intercepts(vmcb: &mut Vmcb, external_interrupts: bool, exceptions: u32) {
    let mut misc1 = MiscIntercepts1::CPUID
        | MiscIntercepts1::HLT
        | MiscIntercepts1::IOIO_PROT
        | MiscIntercepts1::MSR_PROT
        | MiscIntercepts1::SHUTDOWN
        | MiscIntercepts1::INIT;
    if external_interrupts {
        misc1 |= MiscIntercepts1::INTR | MiscIntercepts1::NMI;
    }
    vmcb.set_intercept_misc1(misc1);
    vmcb.set_intercept_misc2(
        MiscIntercepts2::VMRUN
            | MiscIntercepts2::VMMCALL
            | MiscIntercepts2::VMLOAD
            | MiscIntercepts2::VMSAVE
            | MiscIntercepts2::STGI
            | MiscIntercepts2::CLGI
            | MiscIntercepts2::SKINIT
            | MiscIntercepts2::XSETBV,
    );
    vmcb.set_intercept_exceptions(ExceptionIntercepts::from_bits_retain(exceptions));
    if external_interrupts {
        vmcb.set_virtual_interrupt_masking(true);
    }
}

/// An SVM vCPU bound to the processor that created it.
#[derive(Debug)]
pub struct SvmVcpu<'p, P: Platform + ?Sized> {
    pub(crate) core: SvmCore<VmcbFrame>,
    pub(crate) io_bitmap: Bitmap<'p, P>,
    pub(crate) msr_bitmap: Bitmap<'p, P>,
    nested: Option<NestedPaging<'p, P>>,
    xstate: ExtendedState<'p, P>,
    enabled: bool,
    vmcb_frame: OwnedFrames<'p, P>,
    host_vmcb: OwnedFrames<'p, P>,
    host_save: OwnedFrames<'p, P>,
}

/// VM_CR (APM 15.30.1 "VM_CR MSR").
const VM_CR: u32 = 0xc001_0114;
/// VM_HSAVE_PA (APM 15.30.4 "VM_HSAVE_PA MSR").
const VM_HSAVE_PA: u32 = 0xc001_0117;
/// EFER.
const EFER: u32 = 0xc000_0080;

fn pa(addr: HostPhysAddr) -> PhysAddr {
    PhysAddr::new_truncate(addr.as_u64())
}

impl<'p, P: Platform + ?Sized> SvmVcpu<'p, P> {
    /// Enables SVM on this processor and builds the vCPU.
    ///
    /// # Safety
    /// The obligations of [`crate::Vcpu::new`].
    pub(crate) unsafe fn new(
        platform: &'p P,
        config: &VcpuConfig,
        map: &MemoryMap,
    ) -> Result<Self, VcpuError> {
        let host_save = OwnedFrames::allocate(platform, 1)?;
        let vmcb_frame = OwnedFrames::allocate(platform, 1)?;
        let host_vmcb = OwnedFrames::allocate(platform, 1)?;
        let mut io_bitmap = Bitmap::new(platform, 3)?;
        let mut msr_bitmap = Bitmap::new(platform, 2)?;
        // VM_CR and VM_HSAVE_PA are the host's (a guest write to VM_HSAVE_PA would point the
        // processor at guest memory): both exit, and the default answer is #GP. EFER writes exit
        // so that SVME stays set in the guest's EFER (VMRUN refuses a guest EFER without it).
        for (msr, read) in [(VM_CR, true), (VM_HSAVE_PA, true), (EFER, false)] {
            for (write, on) in [(false, read), (true, true)] {
                if let Some(bit) = crate::bitmap::svm_msr_bit(msr, write) {
                    msr_bitmap.set(bit, on);
                }
            }
        }
        let method = Method::detect();
        let xstate = ExtendedState::new(platform, method)?;
        // The IOPM's last bits cover port accesses that wrap past FFFFh: intercept them.
        for bit in 0x1_0000..0x1_0008 {
            io_bitmap.set(bit, true);
        }
        // SAFETY: CPL 0 (the caller's obligation).
        let mut msrs = unsafe { HardwareSvmMsrs::new() };
        let features = enable_svm(&HardwareCpuid, &mut msrs, pa(host_save.phys()))?;
        let fail = |msrs: &mut HardwareSvmMsrs, e: VcpuError| {
            let _ = disable_svm(msrs);
            Err(e)
        };
        if !features.has(SvmFeatureFlags::NESTED_PAGING) {
            return fail(&mut msrs, Unsupported::NoNestedPaging.into());
        }
        let cr4: u64;
        // SAFETY: reading CR4 at CPL 0 has no side effects.
        unsafe { core::arch::asm!("mov {}, cr4", out(reg) cr4, options(nostack, nomem)) };
        let caps = NptCapabilities {
            nested_paging: true,
            host_la57: cr4 & (1 << 12) != 0,
            pages_1g: cpuid_count(0x8000_0001, 0).edx & (1 << 26) != 0,
            phys_bits: (cpuid_count(0x8000_0008, 0).eax & 0xff) as u8,
        };
        let nested = match NestedPaging::npt(platform, map, &caps) {
            Ok(n) => n,
            Err(e) => return fail(&mut msrs, e.into()),
        };
        let ncr3 = match &nested {
            NestedPaging::Npt { ncr3, .. } => ncr3.0,
            NestedPaging::Ept { .. } => 0,
        };
        // SAFETY: the frame is owned by this vCPU, 4 KiB aligned, zeroed (a valid `Vmcb`: all
        // of its fields are plain integers), and reached only through `VmcbFrame` from now on.
        let frame = VmcbFrame {
            ptr: vmcb_frame.as_ptr().cast::<Vmcb>(),
        };
        let mut core = SvmCore::new(
            frame,
            features.has(SvmFeatureFlags::NRIP_SAVE),
            features.has(SvmFeatureFlags::DECODE_ASSISTS),
        );
        {
            let vmcb = core.vmcb_mut();
            write_state(vmcb, &config.state);
            write_intercepts(
                vmcb,
                config.external_interrupt_exiting,
                config.exception_bitmap,
            );
            vmcb.set_iopm_base_pa(pa(io_bitmap.phys()));
            vmcb.set_msrpm_base_pa(pa(msr_bitmap.phys()));
            vmcb.set_guest_asid(u32::from(config.vpid.max(1)));
            vmcb.set_tlb_control(TlbControl::FLUSH_ALL);
            vmcb.set_nested_control(NestedControl::NP_ENABLE);
            vmcb.set_nested_cr3(PhysAddr::new_truncate(ncr3));
            vmcb.set_tsc_offset(config.tsc_offset as u64);
        }
        core.regs = config.state.regs;
        core.xcr0_supported = method.supported_xcr0();
        platform.log(
            crate::LogLevel::Info,
            format_args!("hvkit-vcpu: SVM vCPU ready (nCR3 {ncr3:#x}, {features:?}, {method:?})"),
        );
        Ok(Self {
            core,
            io_bitmap,
            msr_bitmap,
            nested: Some(nested),
            xstate,
            enabled: true,
            vmcb_frame,
            host_vmcb,
            host_save,
        })
    }

    /// Enters the guest and returns its next exit.
    pub(crate) fn run(&mut self) -> Result<Exit, VcpuError> {
        self.core.prepare_entry();
        let mut regs = to_svm_regs(&self.core.regs);
        let xcr0 = self.core.xcr0;
        let vmcb_pa = pa(self.vmcb_frame.phys());
        let host_pa = pa(self.host_vmcb.phys());
        let mut host_ptr = self.host_vmcb.as_ptr().cast::<Vmcb>();
        // SAFETY: the host VMCB frame is owned by this vCPU, 4 KiB aligned, zero-initialised (a
        // valid `Vmcb`) and reached only through this reference while it lives.
        let host_vmcb = unsafe { host_ptr.as_mut() };
        // SAFETY: for this and the following blocks: SVM is enabled on this processor (the constructor,
        // whose caller keeps the vCPU on it); both VMCBs are owned 4 KiB frames passed with
        // their physical addresses; the guest VMCB was built from checked parts and its nested
        // tables map only guest RAM; GIF is clear from CLGI to STGI so that host interrupts wait
        // for complete host state; the extended state is switched inside that window, and
        // `xcr0` is valid (checked on XSETBV, or 1).
        unsafe { clgi() };
        // SAFETY: see above.
        unsafe { vmsave(host_vmcb, host_pa) };
        // SAFETY: see above.
        unsafe { vmload(self.core.vmcb_mut(), vmcb_pa) };
        // SAFETY: see above.
        unsafe { self.xstate.to_guest(xcr0) };
        // SAFETY: see above.
        unsafe { vmrun(self.core.vmcb_mut(), vmcb_pa, &mut regs) };
        // SAFETY: see above; XCR0 is still the guest's.
        unsafe { self.xstate.to_host(xcr0) };
        // SAFETY: see above.
        unsafe { vmsave(self.core.vmcb_mut(), vmcb_pa) };
        // SAFETY: see above.
        unsafe { vmload(host_vmcb, host_pa) };
        // SAFETY: see above.
        unsafe { stgi() };
        from_svm_regs(&regs, &mut self.core.regs);
        if self.core.vmcb().control().tlb_control() != TlbControl::DO_NOTHING {
            self.core.vmcb_mut().set_tlb_control(TlbControl::DO_NOTHING);
        }
        Ok(self.core.after_exit())
    }

    fn flush(&mut self, flush: Flush) {
        flush.ignore();
        self.core
            .vmcb_mut()
            .set_tlb_control(TlbControl::FLUSH_GUEST);
    }

    /// Maps RAM into the nested tables and flushes the guest's TLB at the next VMRUN.
    pub(crate) fn map_ram(
        &mut self,
        gpa: GuestPhysAddr,
        host: HostPhysAddr,
        len: u64,
    ) -> Result<(), VcpuError> {
        let Some(nested) = self.nested.as_mut() else {
            return Ok(());
        };
        let flush = nested.map_ram(gpa, host, len)?;
        self.flush(flush);
        Ok(())
    }

    /// Unmaps from the nested tables.
    pub(crate) fn unmap(&mut self, gpa: GuestPhysAddr, len: u64) -> Result<(), VcpuError> {
        let Some(nested) = self.nested.as_mut() else {
            return Ok(());
        };
        let flush = nested.unmap(gpa, len)?;
        self.flush(flush);
        Ok(())
    }
}

impl<P: Platform + ?Sized> Drop for SvmVcpu<'_, P> {
    fn drop(&mut self) {
        if let Some(nested) = self.nested.take() {
            nested.free();
        }
        if self.enabled {
            // SAFETY: CPL 0 on the processor that enabled SVM; no guest runs any more.
            let mut msrs = unsafe { HardwareSvmMsrs::new() };
            let _ = disable_svm(&mut msrs);
            let _ = msrs.efer();
        }
        let _ = (&self.host_save, &self.vmcb_frame);
    }
}

fn to_svm_regs(r: &crate::GuestRegisters) -> hvkit_svm::regs::GuestRegisters {
    hvkit_svm::regs::GuestRegisters {
        rbx: r.rbx,
        rcx: r.rcx,
        rdx: r.rdx,
        rsi: r.rsi,
        rdi: r.rdi,
        rbp: r.rbp,
        r8: r.r8,
        r9: r.r9,
        r10: r.r10,
        r11: r.r11,
        r12: r.r12,
        r13: r.r13,
        r14: r.r14,
        r15: r.r15,
    }
}

fn from_svm_regs(s: &hvkit_svm::regs::GuestRegisters, r: &mut crate::GuestRegisters) {
    r.rbx = s.rbx;
    r.rcx = s.rcx;
    r.rdx = s.rdx;
    r.rsi = s.rsi;
    r.rdi = s.rdi;
    r.rbp = s.rbp;
    r.r8 = s.r8;
    r.r9 = s.r9;
    r.r10 = s.r10;
    r.r11 = s.r11;
    r.r12 = s.r12;
    r.r13 = s.r13;
    r.r14 = s.r14;
    r.r15 = s.r15;
}
