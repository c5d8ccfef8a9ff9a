//! The SVM vCPU on the processor: EFER.SVME and the host save area, the VMCB built from the
//! typed guest state, permission maps, an ASID, nested paging, and the run loop (CLGI, the
//! extended-state switch, the world switch, STGI).
//!
//! Manual: AMD64 Architecture Programmer's Manual Volume 2: System Programming, Publication No.
//! 24593, Revision 3.42, March 2024: 15.4 "Enabling SVM", 15.5 "VMRUN Instruction" (15.5.1
//! "Basic Operation": the host save area, VM_HSAVE_PA, the consistency checks), 15.5.2 "VMSAVE
//! and VMLOAD Instructions", 15.15 "VMCB State Caching", 15.16 "TLB Control" (ASIDs,
//! TLB_CONTROL), 15.17 "Global Interrupt Flag, STGI and CLGI Instructions", 15.25 "Nested
//! Paging" (15.25.3 "Enabling Nested Paging", 15.25.5 "Nested Table Walk"), Appendix B "Layout
//! of VMCB".
// UNSAFETY: enables SVM, turns the vCPU's VMCB frame into a `Vmcb`, switches GIF and enters the
// guest; the vCPU's constructor carries the obligations.
#![expect(
    unsafe_code,
    reason = "SVM enable, the VMCB frame, CLGI/STGI and the world switch"
)]

use core::ops::{Deref, DerefMut};
use core::ptr::NonNull;

use hvkit_paging::{Flush, GuestPhysAddr, HostPhysAddr, Nested, NptCapabilities};
use hvkit_svm::enable::{SvmMsrs, disable_svm, enable_svm, host_capabilities};
use hvkit_svm::features::SvmFeatureFlags;
use hvkit_svm::instructions::{HardwareCpuid, HardwareSvmMsrs, clgi, stgi};
use hvkit_svm::msrpm::MsrIntercept;
use hvkit_svm::vmcb::TlbControl;
use hvkit_svm::{Iopm, Msrpm, Vmcb};
use raw_cpuid::native_cpuid::cpuid_count;
use x86_64::PhysAddr;

use super::core::{CodeMemory, Entry, SvmCore};
use super::guest_memory::PlatformMemory;
use super::setup::{VmcbLayout, init_msrpm, write_vmcb};
use super::switch::{self, SwitchArea};
use crate::bitmap::Bitmap;
use crate::error::{Unsupported, VcpuError};
use crate::exit::Exit;
use crate::memory::{MemoryMap, NestedPaging};
use crate::platform::{OwnedFrames, Platform};
use crate::vcpu::VcpuConfig;
use crate::xsave::{ExtendedState, Method};

/// The vCPU's VMCB in its platform frame.
///
/// Type invariant: `ptr` points at a 4 KiB, 4 KiB-aligned frame that was zeroed (a valid `Vmcb`:
/// all of its fields are plain integers) and is owned by the vCPU for as long as this value
/// lives; Rust reaches it only through this value, and the processor writes it only inside the
/// world switch, while no reference from this value is alive.
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

impl VmcbFrame {
    /// The VMCB's address, for the world switch.
    pub(crate) fn as_ptr(&self) -> NonNull<Vmcb> {
        self.ptr
    }
}

impl DerefMut for VmcbFrame {
    fn deref_mut(&mut self) -> &mut Vmcb {
        // SAFETY: the type invariant, and `&mut self` makes this the only access.
        unsafe { self.ptr.as_mut() }
    }
}

/// An SVM vCPU bound to the processor that created it.
#[derive(Debug)]
pub struct SvmVcpu<'p, P: Platform + ?Sized> {
    pub(crate) core: SvmCore<VmcbFrame, PlatformMemory<'p, P>>,
    /// The I/O permission map (3 frames, APM 15.10.1).
    io_bitmap: Bitmap<'p, P, Iopm>,
    /// The MSR permission map (2 frames, APM 15.11).
    msr_bitmap: Bitmap<'p, P, Msrpm>,
    nested: Option<NestedPaging<'p, P>>,
    pub(crate) xstate: ExtendedState<'p, P>,
    enabled: bool,
    /// Three frames: the host save area, the guest VMCB, the host VMCB (in that order). Freed
    /// after SVM is off (`Drop` runs before the fields drop).
    frames: OwnedFrames<'p, P>,
}

/// Where the host save area, the guest VMCB and the host VMCB are in [`SvmVcpu::frames`].
const HOST_SAVE: u64 = 0;
const GUEST_VMCB: u64 = 4096;
const HOST_VMCB: u64 = 2 * 4096;

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
        let frames = OwnedFrames::allocate(platform, 3)?;
        let phys = |offset: u64| frames.phys().as_u64() + offset;
        let io_bitmap = Bitmap::new(platform)?;
        let mut msr_bitmap = Bitmap::new(platform)?;
        init_msrpm(msr_bitmap.get_mut());
        let method = Method::detect();
        let xstate = ExtendedState::new(platform, method)?;
        let caps = host_capabilities(&HardwareCpuid)?;
        if !caps.svm.has(SvmFeatureFlags::NESTED_PAGING) {
            return Err(Unsupported::NoNestedPaging.into());
        }
        // The configured ASID, if the processor has it (APM 15.16 "TLB Control").
        let asid = super::setup::guest_asid(config.vpid, caps.svm.asid_count)?;
        // SAFETY: CPL 0 (the caller's obligation).
        let mut msrs = unsafe { HardwareSvmMsrs::new() };
        enable_svm(
            &HardwareCpuid,
            &mut msrs,
            PhysAddr::new_truncate(phys(HOST_SAVE)),
        )?;
        let host_efer = msrs.efer();
        let fail = |msrs: &mut HardwareSvmMsrs, e: VcpuError| {
            let _ = disable_svm(msrs);
            Err(e)
        };
        let cr4: u64;
        // SAFETY: reading CR4 at CPL 0 has no side effects.
        unsafe { core::arch::asm!("mov {}, cr4", out(reg) cr4, options(nostack, nomem)) };
        let npt_caps = NptCapabilities {
            nested_paging: true,
            host_la57: cr4 & (1 << 12) != 0,
            pages_1g: cpuid_count(0x8000_0001, 0).edx & (1 << 26) != 0,
            phys_bits: caps.physical_address_bits,
        };
        let nested = match NestedPaging::npt(platform, map, &npt_caps) {
            Ok(n) => n,
            Err(e) => return fail(&mut msrs, e.into()),
        };
        let (ncr3, levels) = match &nested {
            NestedPaging::Npt { ncr3, table } => (*ncr3, table.config().levels),
            NestedPaging::Ept { .. } => (hvkit_paging::NestedCr3(0), 4),
        };
        // The first VMRUN flushes the whole TLB: the ASID may tag translations of an earlier
        // user of this processor.
        let tlb_control = TlbControl::FLUSH_ALL;
        // The guest VMCB frame is owned by this vCPU, 4 KiB aligned and zeroed, and reached only
        // through `VmcbFrame` from now on (the type invariant).
        let frame = VmcbFrame {
            ptr: frames
                .as_ptr()
                .map_addr(|a| a.saturating_add(GUEST_VMCB as usize))
                .cast::<Vmcb>(),
        };
        let mut core = SvmCore::new(frame, caps);
        let layout = VmcbLayout {
            iopm: io_bitmap.phys().as_u64(),
            msrpm: msr_bitmap.phys().as_u64(),
            asid,
            tlb_control,
            ncr3: Some(ncr3.0),
            exception_bitmap: config.exception_bitmap,
            tsc_offset: config.tsc_offset,
            external_interrupt_exiting: config.external_interrupt_exiting,
        };
        write_vmcb(core.vmcb_mut(), &layout, &config.state);
        core.set_code_memory(CodeMemory {
            memory: PlatformMemory(platform),
            nested: Nested::Npt {
                ncr3,
                levels,
                nxe: host_efer & crate::state::EFER_NXE != 0,
            },
        });
        core.regs = config.state.regs;
        core.xcr0_supported = method.supported_xcr0();
        platform.log(
            crate::LogLevel::Info,
            format_args!(
                "hvkit-vcpu: SVM vCPU ready (ASID {asid}, nCR3 {:#x}, {:?}, {method:?})",
                ncr3.0, caps.svm
            ),
        );
        Ok(Self {
            core,
            io_bitmap,
            msr_bitmap,
            nested: Some(nested),
            xstate,
            enabled: true,
            frames,
        })
    }

    /// The guest VMCB's physical address (for VMLOAD in `Vcpu::load_native_state`).
    pub(crate) fn guest_vmcb_phys(&self) -> u64 {
        self.frames.phys().as_u64() + GUEST_VMCB
    }

    /// Enters the guest and returns its next exit. A VMCB that fails
    /// `hvkit_svm::check::check_vmcb` before the first VMRUN is not run: the exit is an entry
    /// failure and [`SvmCore::violations`] names the rules.
    pub(crate) fn run(&mut self) -> Result<Exit, VcpuError> {
        if let Entry::Refused(exit) = self.core.prepare_entry()? {
            return Ok(exit);
        }
        let mut area = SwitchArea {
            regs: self.core.regs,
            guest_vmcb: self.frames.phys().as_u64() + GUEST_VMCB,
            host_vmcb: self.frames.phys().as_u64() + HOST_VMCB,
        };
        let xcr0 = self.core.xcr0;
        // SAFETY: SVM is on (the constructor) at CPL 0 on this processor (the caller of
        // `Vcpu::new` keeps the vCPU here).
        unsafe { clgi() };
        // SAFETY: CPL 0; `xcr0` passed `xcr0_valid` or is 1; GIF is clear, so nothing runs with
        // the guest's extended state loaded until `to_host`.
        unsafe { self.xstate.to_guest(xcr0) };
        // SAFETY: SVM is enabled with this processor's host save area; GIF is clear; the area
        // holds the physical addresses of this vCPU's two VMCB frames; the guest VMCB was built
        // by `write_vmcb` from checked parts (and passed `check_vmcb` before the first run), and
        // its permission maps and nested tables are owned by this vCPU and map only guest RAM.
        unsafe { switch::enter(&mut area, self.core.vmcb_container().as_ptr()) };
        // SAFETY: right after the #VMEXIT, XCR0 still the guest's.
        unsafe { self.xstate.to_host(xcr0) };
        // SAFETY: as for CLGI.
        unsafe { stgi() };
        let rax = self.core.regs.rax;
        self.core.regs = area.regs;
        self.core.regs.rax = rax;
        if self.core.vmcb().control().tlb_control() != TlbControl::DO_NOTHING {
            self.core.vmcb_mut().set_tlb_control(TlbControl::DO_NOTHING);
        }
        self.core.decode_exit()
    }

    /// The last clean-bit figures (see [`SvmCore::clean_stats`]).
    #[must_use]
    pub fn clean_stats(&self) -> super::CleanStats {
        self.core.clean_stats()
    }

    /// The VMRUN consistency rules the VMCB broke (see [`SvmCore::violations`]): what an
    /// [`crate::exit::EntryFailure::VmrunFailed`] exit means.
    #[must_use]
    pub fn violations(&self) -> hvkit_svm::Violations {
        self.core.violations()
    }

    /// Applies a nested-table change: the guest's TLB entries are flushed at the next VMRUN.
    fn flush(&mut self, flush: Flush) {
        flush.ignore();
        let flush_by_asid = self
            .core
            .capabilities()
            .svm
            .has(SvmFeatureFlags::FLUSH_BY_ASID);
        let control = if flush_by_asid {
            TlbControl::FLUSH_GUEST
        } else {
            TlbControl::FLUSH_ALL
        };
        self.core.vmcb_mut().set_tlb_control(control);
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

    /// Unmaps from the nested tables and flushes the guest's TLB at the next VMRUN.
    pub(crate) fn unmap(&mut self, gpa: GuestPhysAddr, len: u64) -> Result<(), VcpuError> {
        let Some(nested) = self.nested.as_mut() else {
            return Ok(());
        };
        let flush = nested.unmap(gpa, len)?;
        self.flush(flush);
        Ok(())
    }

    /// Makes accesses to `port` exit (or pass through).
    pub(crate) fn intercept_io(&mut self, port: u16, on: bool) {
        self.io_bitmap.get_mut().set(port, on);
    }

    /// Makes RDMSR and/or WRMSR of `msr` exit (or pass through); false (nothing changed) for an
    /// MSR outside the MSRPM's ranges, which always exits.
    pub(crate) fn intercept_msr(&mut self, msr: u32, read: bool, write: bool) -> bool {
        self.msr_bitmap
            .get_mut()
            .set(msr, MsrIntercept::from_bits(read, write))
            .is_ok()
    }
}

impl<P: Platform + ?Sized> Drop for SvmVcpu<'_, P> {
    fn drop(&mut self) {
        if self.enabled {
            // SAFETY: CPL 0 on the processor that enabled SVM; no guest runs any more.
            let mut msrs = unsafe { HardwareSvmMsrs::new() };
            let _ = disable_svm(&mut msrs);
            self.enabled = false;
        }
        if let Some(nested) = self.nested.take() {
            nested.free();
        }
        let _ = &self.frames;
    }
}
