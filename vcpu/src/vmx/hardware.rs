//! The VMX vCPU on the processor: VMXON, the VMCS, bitmaps, EPT, extended state and the run
//! loop around the world switch.
//!
//! Manual: Intel® 64 and IA-32 Architectures Software Developer's Manual, Combined Volumes, Order
//! Number 325462-086US, December 2024, Vol. 3C 24.7 "Enabling and Entering VMX Operation", 25.2
//! "Format of the VMCS Region" (revision identifier in the first 4 bytes), 25.11.3 "Initializing
//! a VMCS" (VMCLEAR, VMPTRLD), 29.4.3 "Invalidating Cached Translation Information" (INVEPT, and
//! INVVPID with INVEPT at creation: [`super::invalidate`]), 31.3 "VMX Instructions", Appendix
//! A.10 "VPID and EPT Capabilities".
// UNSAFETY: enables VMX, makes the VMCS current and enters the guest; the vCPU's constructor
// carries the obligations.
#![expect(
    unsafe_code,
    reason = "VMXON, VMCLEAR/VMPTRLD, the current VMCS and guest entry"
)]

use hvkit_paging::{EptCapabilities, Flush, GuestPhysAddr, HostPhysAddr};
use hvkit_vmx::capabilities::{EptVpidCap, VmxCapabilities};
use hvkit_vmx::enable::{self, HardwareCpu, SmxMode, VmxCpu, VmxOn, VmxonRegion};
use hvkit_vmx::exit::ExitReason;
use hvkit_vmx::fields::exit_info;
use hvkit_vmx::instructions::{self, InveptType, InvvpidType};
use hvkit_vmx::msr_bitmap::MsrIntercept;
use hvkit_vmx::vmcs::{CurrentVmcs, VmcsRead};
use hvkit_vmx::{IoBitmaps, MsrBitmap, VmFail, VmInstructionError};
use raw_cpuid::native_cpuid::cpuid_count;
use x86_64::PhysAddr;
use x86_64::structures::paging::PhysFrame;

use super::core::{CrPolicy, VmxCore};
use super::invalidate::{
    Invalidate, InvalidationError, UNSUPPORTED_TYPE, invalidate_new_vcpu, invept_supported,
    invept_type, invvpid_supported,
};
use super::setup::{VmcsLayout, VmxOptions, controls_request, write_vmcs};
use super::switch::{self, Switch, SwitchArea};
use crate::bitmap::Bitmap;
use crate::error::{Unsupported, VcpuError};
use crate::exit::{EntryFailure, Exit, ExitKind, RawExit};
use crate::memory::{MemoryMap, NestedPaging};
use crate::platform::{OwnedFrames, Platform};
use crate::vcpu::VcpuConfig;
use crate::xsave::{ExtendedState, Method};

fn frame(addr: HostPhysAddr) -> PhysFrame {
    PhysFrame::containing_address(PhysAddr::new_truncate(addr.as_u64()))
}

/// A VMX vCPU bound to the processor that created it.
#[derive(Debug)]
pub struct VmxVcpu<'p, P: Platform + ?Sized> {
    pub(crate) core: VmxCore<CurrentVmcs>,
    area: SwitchArea,
    on: Option<VmxOn>,
    io_bitmap: Bitmap<'p, P, IoBitmaps>,
    msr_bitmap: Bitmap<'p, P, MsrBitmap>,
    pub(crate) nested: Option<NestedPaging<'p, P>>,
    pub(crate) xstate: ExtendedState<'p, P>,
    /// IA32_VMX_EPT_VPID_CAP: which INVEPT/INVVPID types [`Self::flush`] may use.
    ept_vpid: EptVpidCap,
    /// A CR2 value to load before the next entry (VMX does not switch CR2).
    pub(crate) pending_cr2: Option<u64>,
    // Dropped last (after VMCLEAR and VMXOFF in `Drop`).
    vmcs_frame: OwnedFrames<'p, P>,
    vmxon_frame: OwnedFrames<'p, P>,
}

impl<'p, P: Platform + ?Sized> VmxVcpu<'p, P> {
    /// Enables VMX on this processor and builds the vCPU.
    ///
    /// # Safety
    /// The obligations of [`crate::Vcpu::new`].
    pub(crate) unsafe fn new(
        platform: &'p P,
        config: &VcpuConfig,
        map: &MemoryMap,
    ) -> Result<Self, VcpuError> {
        // SAFETY: CPL 0 in 64-bit mode (the caller's obligation).
        let mut cpu = unsafe { HardwareCpu::new() };
        let caps = VmxCapabilities::read(&|msr| cpu.read_msr(msr));
        let options = VmxOptions {
            external_interrupt_exiting: config.external_interrupt_exiting,
            vpid: config.vpid != 0,
        };
        let request = controls_request(&caps, &config.state, options)?;
        let controls = caps
            .adjust(&request)
            .map_err(|_| Unsupported::VmxControls)?;
        let ept_vpid = caps.ept_vpid.unwrap_or(EptVpidCap::empty());
        let ept_caps = EptCapabilities::from_msr(ept_vpid.bits());
        let phys_bits = (cpuid_count(0x8000_0008, 0).eax & 0xff) as u8;
        let nested = NestedPaging::ept(platform, map, &ept_caps, phys_bits.clamp(36, 52))?;
        let eptp = match &nested {
            NestedPaging::Ept { eptp, .. } => eptp.0,
            NestedPaging::Npt { .. } => 0,
        };
        let method = Method::detect();
        let built = (|| -> Result<_, VcpuError> {
            let vmxon_frame = OwnedFrames::allocate(platform, 1)?;
            let vmcs_frame = OwnedFrames::allocate(platform, 1)?;
            let io_bitmap = Bitmap::new(platform)?;
            let mut msr_bitmap = Bitmap::<_, MsrBitmap>::new(platform)?;
            // The VMX capability MSRs do not exist for a guest that sees no VMX.
            for msr in 0x480..=0x493 {
                // In the low range: never out of range.
                let _ = msr_bitmap.get_mut().set(msr, MsrIntercept::ReadWrite);
            }
            let xstate = ExtendedState::new(platform, method)?;
            Ok((vmxon_frame, vmcs_frame, io_bitmap, msr_bitmap, xstate))
        })();
        let (vmxon_frame, vmcs_frame, io_bitmap, msr_bitmap, xstate) = match built {
            Ok(parts) => parts,
            Err(e) => {
                nested.free();
                return Err(e);
            }
        };
        // SAFETY: the frame is 4 KiB, 4 KiB aligned, zeroed and owned by this vCPU until after
        // VMXOFF (`Drop`); `VmxonRegion` is a 4096-byte, 4096-aligned plain structure.
        let region = unsafe { &mut *vmxon_frame.as_ptr().as_ptr().cast::<VmxonRegion>() };
        // SAFETY: CPL 0, this processor's VMX is ours (the caller's obligation), and the region
        // stays untouched until `disable`.
        let on = match unsafe {
            enable::enable(
                &mut cpu,
                region,
                frame(vmxon_frame.phys()),
                SmxMode::Outside,
            )
        } {
            Ok(on) => on,
            Err(e) => {
                nested.free();
                return Err(e.into());
            }
        };
        let revision = on.basic().revision_id();
        // SAFETY: the VMCS frame is owned, 4 KiB, and reached only through this pointer now.
        unsafe {
            vmcs_frame
                .as_ptr()
                .as_ptr()
                .cast::<u32>()
                .write_volatile(revision)
        };
        let cr = CrPolicy {
            cr0_fixed: caps.cr0_fixed,
            cr4_fixed: caps.cr4_fixed,
            unrestricted: controls.secondary
                & hvkit_vmx::controls::SecondaryControls::UNRESTRICTED_GUEST.bits()
                != 0,
            ..CrPolicy::default()
        };
        let vmcs_phys = frame(vmcs_frame.phys());
        // SAFETY: VMX root operation; the frame is a VMCS region with the right revision.
        let cleared = unsafe { instructions::vmclear(vmcs_phys) };
        // SAFETY: as above; the region was just cleared.
        let loaded = cleared.and_then(|()| unsafe { instructions::vmptrld(vmcs_phys) });
        let mut me = Self {
            // SAFETY: VMX root operation with this vCPU's VMCS current (just loaded, checked
            // below); the vCPU stays on this processor (the caller's obligation).
            core: VmxCore::new(unsafe { CurrentVmcs::new() }, controls.primary, false, cr),
            area: SwitchArea::default(),
            on: Some(on),
            io_bitmap,
            msr_bitmap,
            nested: Some(nested),
            xstate,
            ept_vpid,
            pending_cr2: None,
            vmcs_frame,
            vmxon_frame,
        };
        loaded.map_err(|fail| {
            VcpuError::Vmcs(hvkit_vmx::vmcs::VmcsError::Instruction {
                encoding: exit_info::VM_INSTRUCTION_ERROR.encoding(),
                fail,
            })
        })?;
        let layout = VmcsLayout {
            controls,
            cr,
            io_bitmaps: me.io_bitmap.phys().as_u64(),
            msr_bitmap: me.msr_bitmap.phys().as_u64(),
            eptp,
            vpid: config.vpid,
            exception_bitmap: config.exception_bitmap,
            tsc_offset: config.tsc_offset as u64,
        };
        // SAFETY: CPL 0 and a readable GDT (the caller's obligations).
        let host = unsafe { crate::capture::host_state() };
        write_vmcs(me.core.vmcs_mut(), &layout, &config.state, &host)?;
        // Translations an earlier vCPU left under this VPID or EPTP (SDM 29.4.3.2): gone
        // before the first entry. Without "enable VPID" the VM entry flushes VPID 0000H.
        let vpid =
            if controls.secondary & hvkit_vmx::controls::SecondaryControls::ENABLE_VPID.bits() != 0
            {
                config.vpid
            } else {
                0
            };
        // VMX root operation at CPL 0 until `me` is dropped, and `ept_vpid` is this
        // processor's IA32_VMX_EPT_VPID_CAP: the invariant of `HardwareInvalidate`.
        let mut cpu = HardwareInvalidate { caps: ept_vpid };
        invalidate_new_vcpu(&mut cpu, vpid, eptp)?;
        me.core.regs = config.state.regs;
        me.core.xcr0_supported = method.supported_xcr0();
        me.core.xcr0 = 1;
        platform.log(
            crate::LogLevel::Info,
            format_args!(
                "hvkit-vcpu: VMX vCPU ready (EPTP {eptp:#x}, controls {controls:x?}, {method:?})"
            ),
        );
        Ok(me)
    }

    /// Enters the guest and returns its next exit.
    pub(crate) fn run(&mut self) -> Result<Exit, VcpuError> {
        self.core.prepare_entry()?;
        self.area.regs = self.core.regs;
        if let Some(cr2) = self.pending_cr2.take() {
            // SAFETY: CPL 0; CR2 only holds the last page-fault address, which the host does
            // not depend on between here and the VM entry (the guest sees it as its own CR2).
            unsafe { core::arch::asm!("mov cr2, {}", in(reg) cr2, options(nostack, nomem)) };
        }
        let xcr0 = self.core.xcr0;
        // SAFETY: CPL 0 (the constructor's obligation); `xcr0` passed `xcr0_valid` or is 1.
        unsafe { self.xstate.to_guest(xcr0) };
        let launching = self.area.launched == 0;
        // SAFETY: the VMCS is current and was filled by `new` from checked parts, the host state
        // is this processor's, every address it holds is owned by this vCPU; `launched` tracks
        // VMLAUNCH since the VMCLEAR in `new`.
        let outcome = unsafe { switch::enter(&mut self.area) };
        // SAFETY: right after the exit, XCR0 still the guest's.
        unsafe { self.xstate.to_host(xcr0) };
        self.core.regs = self.area.regs;
        self.core.forget_cached();
        match outcome {
            Switch::Exited => {
                let exit = self.core.decode_exit()?;
                if launching && matches!(exit.kind, ExitKind::EntryFailure(_)) {
                    // A VM entry that fails while loading guest state leaves the VMCS's launch
                    // state clear (measured under Bochs: VMRESUME then fails with error 5), so
                    // the next entry is a VMLAUNCH again.
                    self.area.launched = 0;
                }
                Ok(exit)
            }
            Switch::Failed { cf, zf } => {
                let fail = if cf || !zf {
                    VmFail::Invalid
                } else {
                    VmFail::Valid(VmInstructionError(
                        self.core.vmcs().read(exit_info::VM_INSTRUCTION_ERROR)?,
                    ))
                };
                Ok(Exit {
                    kind: ExitKind::EntryFailure(EntryFailure::VmFail(fail)),
                    raw: RawExit::VmxFail(fail),
                })
            }
        }
    }

    /// Applies a nested-table change: INVEPT of the type [`invept_type`] picks (single context
    /// when supported, else all), as at creation.
    ///
    /// # Errors
    /// [`VcpuError::Invalidation`] when INVEPT reports VMfail.
    pub(crate) fn flush(&mut self, flush: Flush) -> Result<(), VcpuError> {
        flush.ignore();
        let Some(NestedPaging::Ept { eptp, .. }) = &self.nested else {
            return Ok(());
        };
        let kind = invept_type(self.ept_vpid, eptp.0)?;
        // VMX root operation at CPL 0 while `self` lives, and `ept_vpid` is this processor's
        // IA32_VMX_EPT_VPID_CAP: the invariant of `HardwareInvalidate`.
        let mut cpu = HardwareInvalidate {
            caps: self.ept_vpid,
        };
        cpu.invept(kind)
            .map_err(|fail| InvalidationError::Invept { kind, fail })?;
        Ok(())
    }

    /// Maps RAM into the EPT and invalidates.
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
        self.flush(flush)
    }

    /// Unmaps from the EPT and invalidates.
    pub(crate) fn unmap(&mut self, gpa: GuestPhysAddr, len: u64) -> Result<(), VcpuError> {
        let Some(nested) = self.nested.as_mut() else {
            return Ok(());
        };
        let flush = nested.unmap(gpa, len)?;
        self.flush(flush)
    }

    /// Makes accesses to `port` exit (or pass through).
    pub(crate) fn intercept_io(&mut self, port: u16, on: bool) {
        self.io_bitmap.get_mut().set(port, on);
    }

    /// Makes RDMSR and/or WRMSR of `msr` exit (or pass through); false (nothing changed) for an
    /// MSR outside the bitmap's ranges, which always exits.
    pub(crate) fn intercept_msr(&mut self, msr: u32, read: bool, write: bool) -> bool {
        self.msr_bitmap
            .get_mut()
            .set(msr, MsrIntercept::from_bits(read, write))
            .is_ok()
    }

    /// The last exit reason (for logs).
    pub(crate) fn exit_reason(&self) -> Option<ExitReason> {
        self.core
            .vmcs()
            .read(exit_info::EXIT_REASON)
            .ok()
            .map(ExitReason)
    }
}

/// INVEPT and INVVPID on this processor, for [`invalidate_new_vcpu`].
///
/// Type invariant: the processor is in VMX root operation at CPL 0 while this value lives, and
/// `caps` is its IA32_VMX_EPT_VPID_CAP.
struct HardwareInvalidate {
    caps: EptVpidCap,
}

impl Invalidate for HardwareInvalidate {
    fn capabilities(&self) -> EptVpidCap {
        self.caps
    }

    fn invvpid(&mut self, kind: InvvpidType) -> Result<(), VmFail> {
        if !invvpid_supported(self.caps, kind) {
            return Err(UNSUPPORTED_TYPE);
        }
        // SAFETY: VMX root operation at CPL 0 (the type invariant); INVVPID exists (bit 32,
        // checked with the type's bit just above), so it cannot raise #UD.
        unsafe { instructions::invvpid(kind) }
    }

    fn invept(&mut self, kind: InveptType) -> Result<(), VmFail> {
        if !invept_supported(self.caps, kind) {
            return Err(UNSUPPORTED_TYPE);
        }
        // SAFETY: VMX root operation at CPL 0 (the type invariant); INVEPT exists (bit 20,
        // checked with the type's bit just above), so it cannot raise #UD.
        unsafe { instructions::invept(kind) }
    }
}

impl<P: Platform + ?Sized> Drop for VmxVcpu<'_, P> {
    fn drop(&mut self) {
        // SAFETY: VMX root operation on this processor (the vCPU never migrates); the VMCS is
        // this vCPU's, and after VMCLEAR nothing refers to it.
        let _ = unsafe { instructions::vmclear(frame(self.vmcs_frame.phys())) };
        if let Some(nested) = self.nested.take() {
            nested.free();
        }
        if let Some(on) = self.on.take() {
            // SAFETY: CPL 0; VMX was enabled by `new` with this vCPU's region.
            let mut cpu = unsafe { HardwareCpu::new() };
            // SAFETY: no VMCS is current any more; the region is freed only after this.
            let _ = unsafe { enable::disable(&mut cpu, on) };
        }
        let _ = &self.vmxon_frame;
    }
}
