//! [`Vcpu`]: one virtual CPU on Intel VT-x or AMD-V, picked from CPUID at run time.
//!
//! Manuals: Intel® 64 and IA-32 Architectures Software Developer's Manual, Combined Volumes, Order
//! Number 325462-086US, December 2024, Vol. 2A "CPUID" (vendor string in leaf 0, VMX in
//! CPUID.1:ECX\[5\]); AMD64 Architecture Programmer's Manual Volume 2: System Programming,
//! Publication No. 24593, Revision 3.42, March 2024, 15.4 "Enabling SVM" (CPUID
//! Fn8000_0001_ECX\[SVM\]).
// UNSAFETY: `Vcpu::new`, `Vcpu::map_ram_at` and `Vcpu::load_native_state` are `unsafe fn`s that
// pass their obligations on to the backends or to `capture`; VMLOAD for the latter.
#![expect(
    unsafe_code,
    reason = "declares the unsafe constructor, RAM mapping and native-state loading and forwards their obligations"
)]

use hvkit_paging::{GuestPhysAddr, HostPhysAddr};
use raw_cpuid::CpuIdResult;
use raw_cpuid::native_cpuid::cpuid_count;

use crate::cpuid::{CpuidPolicy, Vendor};
use crate::error::{Unsupported, VcpuError};
use crate::event::Event;
use crate::exit::Exit;
use crate::memory::{MemoryMap, Region, RegionKind};
use crate::platform::{OwnedFrames, Platform};
use crate::regs::GuestRegisters;
use crate::state::{GuestState, Segment, SegmentName};
use crate::vmx::hardware::VmxVcpu;

/// How many RAM runs [`Vcpu::add_ram`] keeps.
pub const MAX_OWNED_RAM: usize = 8;

/// How to build a vCPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VcpuConfig {
    /// The initial register state.
    pub state: GuestState,
    /// Guest-physical regions known at creation (more RAM: [`Vcpu::add_ram`]).
    pub memory: MemoryMap,
    /// The VPID (VMX) or ASID (SVM) of this vCPU, used as given (the caller picks it; nothing
    /// hands them out).
    ///
    /// On VMX, 0 means no VPID (every VM entry and exit flushes the linear and combined
    /// translations); any other value is used when the processor has "enable VPID", and
    /// [`Vcpu::new`] invalidates its translations (INVVPID) before the first entry (SDM Vol. 3C
    /// 29.1 "Virtual Processor Identifiers (VPIDs)", 29.4.3.3 "Guidelines for Use of the INVVPID
    /// Instruction").
    ///
    /// On SVM it is the guest ASID and must be between 1 and the processor's ASID count minus 1
    /// (CPUID Fn8000_000A_EBX): 0 is the host's. [`Vcpu::new`] refuses anything else with
    /// [`VcpuError::Asid`] ([`crate::svm::AsidError`]); the first VMRUN flushes the whole TLB
    /// (APM 15.16 "TLB Control"). A caller that wants ASIDs handed out and recycled per
    /// processor uses [`hvkit_svm::asid::AsidAllocator`] and passes the ASID it assigns.
    pub vpid: u16,
    /// Take external interrupts as exits ([`crate::ExitKind::ExternalInterrupt`]) instead of
    /// delivering them straight to the guest. Off by default: then the host's device
    /// interrupts (a BIOS-programmed PIT on IRQ 0 = vector 8, say) reach the guest's IDT as
    /// soon as it sets IF, so a host that does not want that masks them (PIC/APIC) or turns
    /// this on. On VMX the exit acknowledges the interrupt ([`Vcpu::acknowledged_vector`]), and
    /// works with the host's IF = 0 (measured under Bochs). On SVM the interrupt stays pending
    /// until the host takes it, and with V_INTR_MASKING the processor recognizes it in the guest
    /// only if the host's RFLAGS.IF was 1 at VMRUN (APM 15.21.1 "Physical (INTR) Interrupt
    /// Masking in EFLAGS"): a host that runs with IF = 0 never sees the exit (measured under
    /// QEMU TCG: the guest ran on), so such a host masks the interrupts at the PIC/APIC
    /// instead, or runs with IF = 1 and a handler that takes them after STGI.
    pub external_interrupt_exiting: bool,
    /// Exceptions that exit (bit n = vector n).
    pub exception_bitmap: u32,
    /// Added to the guest's TSC reads.
    pub tsc_offset: i64,
}

impl VcpuConfig {
    /// A configuration for `state` with no memory, VPID/ASID 1, no intercepted exceptions.
    #[must_use]
    pub fn new(state: GuestState) -> Self {
        Self {
            state,
            memory: MemoryMap::new(),
            vpid: 1,
            external_interrupt_exiting: false,
            exception_bitmap: 0,
            tsc_offset: 0,
        }
    }
}

/// The virtualization extension this processor has.
#[must_use]
pub fn detect_vendor() -> Option<Vendor> {
    let leaf0 = cpuid_count(0, 0);
    let vendor = [leaf0.ebx, leaf0.edx, leaf0.ecx];
    let intel = vendor == [0x756e_6547, 0x4965_6e69, 0x6c65_746e]; // "GenuineIntel"
    let amd = vendor == [0x6874_7541, 0x6974_6e65, 0x444d_4163]; // "AuthenticAMD"
    if intel && cpuid_count(1, 0).ecx & (1 << 5) != 0 {
        return Some(Vendor::Intel);
    }
    let ext_max = cpuid_count(0x8000_0000, 0).eax;
    if amd && ext_max >= 0x8000_0001 && cpuid_count(0x8000_0001, 0).ecx & (1 << 2) != 0 {
        return Some(Vendor::Amd);
    }
    None
}

#[derive(Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "one backend per vCPU, built once; no allocator to box it in"
)]
enum Backend<'p, P: Platform + ?Sized> {
    Vmx(VmxVcpu<'p, P>),
    Svm(crate::svm::hardware::SvmVcpu<'p, P>),
}

/// A virtual CPU. See the crate documentation for the run loop.
///
/// It is bound to the processor that created it (not `Send`): VMX keeps the VMCS current on that
/// processor, SVM its host save area.
#[derive(Debug)]
pub struct Vcpu<'p, P: Platform + ?Sized> {
    platform: &'p P,
    map: MemoryMap,
    backend: Backend<'p, P>,
    ram: [Option<OwnedFrames<'p, P>>; MAX_OWNED_RAM],
    exits: u64,
    last: Option<Exit>,
}

macro_rules! dispatch {
    ($self:ident, $b:ident => $e:expr) => {
        match &mut $self.backend {
            Backend::Vmx($b) => $e,
            Backend::Svm($b) => $e,
        }
    };
}

impl<'p, P: Platform + ?Sized> Vcpu<'p, P> {
    /// Enables VMX or SVM on this processor and builds a vCPU for `config`, with EPT or nested
    /// paging mapping the RAM regions of `config.memory`.
    ///
    /// # Errors
    /// [`VcpuError::Unsupported`] without VT-x/AMD-V (or EPT/NPT, or unrestricted guest for an
    /// unpaged state), the enabling step that failed, [`VcpuError::OutOfMemory`];
    /// [`VcpuError::Asid`] on SVM for an ASID ([`VcpuConfig::vpid`]) of 0 or not below the
    /// processor's ASID count; [`VcpuError::Invalidation`] on VMX when the INVVPID or INVEPT
    /// that clears stale translations of the VPID or EPTP fails.
    ///
    /// # Safety
    /// - CPL 0 in 64-bit mode, on the processor that will run this vCPU, which the caller does
    ///   not leave while the vCPU lives (it is dropped there too);
    /// - nothing else uses VMX or SVM on this processor, and only one vCPU exists per processor;
    /// - the host's GDT is readable at its linear address, and the host's segment, descriptor
    ///   table, CR and MSR state at the time of this call stays the same while the vCPU lives
    ///   (VM exits restore it from what was captured here);
    /// - the guest may use every I/O port and MSR that is not intercepted (by default, all but
    ///   the VMX capability MSRs): the caller accepts what the guest can do with the devices
    ///   (including DMA into host memory) and MSRs it reaches.
    pub unsafe fn new(platform: &'p P, config: &VcpuConfig) -> Result<Self, VcpuError> {
        let backend = match detect_vendor() {
            Some(Vendor::Intel) => {
                // SAFETY: the caller's obligations are those of the backends.
                let vmx = unsafe { VmxVcpu::new(platform, config, &config.memory) }?;
                Backend::Vmx(vmx)
            }
            // SAFETY: as above.
            Some(Vendor::Amd) => Backend::Svm(unsafe {
                crate::svm::hardware::SvmVcpu::new(platform, config, &config.memory)
            }?),
            None => return Err(Unsupported::NoVirtualization.into()),
        };
        Ok(Self {
            platform,
            map: config.memory,
            backend,
            ram: [const { None }; MAX_OWNED_RAM],
            exits: 0,
            last: None,
        })
    }

    /// Intel or AMD.
    #[must_use]
    pub fn vendor(&self) -> Vendor {
        match self.backend {
            Backend::Vmx(_) => Vendor::Intel,
            Backend::Svm(_) => Vendor::Amd,
        }
    }

    /// Runs the guest until its next exit.
    ///
    /// # Errors
    /// [`VcpuError::Vmcs`] if the VMCS cannot be accessed, [`VcpuError::InvalidEvent`] for a
    /// queued event the hardware cannot carry. A failed VM entry is not an error: it is the exit
    /// [`crate::ExitKind::EntryFailure`].
    pub fn run(&mut self) -> Result<Exit, VcpuError> {
        self.exits += 1;
        self.last = None;
        let exit = dispatch!(self, b => b.run())?;
        self.last = Some(exit);
        Ok(exit)
    }

    /// The exit [`run`](Self::run) returned last.
    #[must_use]
    pub fn last_exit(&self) -> Option<Exit> {
        self.last
    }

    /// Emulates the INS/OUTS (REP or not) of the last exit: `port` produces (IN) or consumes
    /// (OUT) each element; guest memory is reached through the guest's page tables and the
    /// nested tables ([`crate::string_io`]). RSI/RDI/RCX are updated; RIP moves past the
    /// instruction when it is complete (a long REP exits again).
    ///
    /// # Errors
    /// [`VcpuError::WrongExit`] unless the last exit was INS/OUTS, [`VcpuError::StringIo`] when
    /// the guest's memory operand does not translate (the caller usually injects #GP or #PF),
    /// [`VcpuError::Vmcs`].
    pub fn complete_string_io(
        &mut self,
        port: impl FnMut(u16, crate::exit::IoDirection, &mut [u8]),
    ) -> Result<(), VcpuError> {
        use hvkit_paging::{Nested, NestedCr3, Walker};

        use crate::exit::ExitKind;
        use crate::svm::PlatformMemory;

        let Some(Exit {
            kind: ExitKind::Io(io),
            ..
        }) = self.last
        else {
            return Err(VcpuError::WrongExit("INS or OUTS"));
        };
        if !io.string {
            return Err(VcpuError::WrongExit("INS or OUTS"));
        }
        let memory = PlatformMemory(self.platform);
        let done = match &mut self.backend {
            Backend::Vmx(b) => {
                let (operand, paging) = b.core.string_operand(io.direction)?;
                let eptp = match &b.nested {
                    Some(crate::memory::NestedPaging::Ept { eptp, .. }) => *eptp,
                    _ => return Err(Unsupported::NoEpt.into()),
                };
                let walker = Walker::new(
                    memory,
                    Nested::Ept {
                        eptp,
                        mode_based_execute: false,
                    },
                );
                crate::string_io::emulate(&io, &operand, &mut b.core.regs, &walker, &paging, port)?
            }
            Backend::Svm(b) => {
                let (operand, paging, ncr3) = svm_string_operand(b.core.vmcb(), io.direction);
                let walker = Walker::new(
                    memory,
                    Nested::Npt {
                        ncr3: NestedCr3(ncr3),
                        levels: host_paging_levels(),
                        nxe: true,
                    },
                );
                crate::string_io::emulate(&io, &operand, &mut b.core.regs, &walker, &paging, port)?
            }
        };
        if done {
            self.skip_instruction()?;
        }
        Ok(())
    }

    /// Exits so far (calls to [`run`](Self::run)).
    #[must_use]
    pub fn exit_count(&self) -> u64 {
        self.exits
    }

    /// The guest GPRs (RSP: [`rsp`](Self::rsp)).
    pub fn regs(&mut self) -> &mut GuestRegisters {
        dispatch!(self, b => &mut b.core.regs)
    }

    /// The CPUID policy (what the guest sees).
    pub fn cpuid_policy(&mut self) -> &mut CpuidPolicy {
        dispatch!(self, b => &mut b.core.cpuid)
    }

    /// Guest RIP.
    ///
    /// # Errors
    /// [`VcpuError::Vmcs`].
    pub fn rip(&mut self) -> Result<u64, VcpuError> {
        dispatch!(self, b => b.core.rip())
    }

    /// Sets guest RIP.
    pub fn set_rip(&mut self, rip: u64) {
        dispatch!(self, b => b.core.set_rip(rip));
    }

    /// Guest RSP.
    ///
    /// # Errors
    /// [`VcpuError::Vmcs`].
    pub fn rsp(&mut self) -> Result<u64, VcpuError> {
        dispatch!(self, b => b.core.rsp())
    }

    /// Sets guest RSP.
    pub fn set_rsp(&mut self, rsp: u64) {
        dispatch!(self, b => b.core.set_rsp(rsp));
    }

    /// Guest RFLAGS.
    ///
    /// # Errors
    /// [`VcpuError::Vmcs`].
    pub fn rflags(&mut self) -> Result<u64, VcpuError> {
        dispatch!(self, b => b.core.rflags())
    }

    /// Sets guest RFLAGS.
    pub fn set_rflags(&mut self, rflags: u64) {
        dispatch!(self, b => b.core.set_rflags(rflags));
    }

    /// Guest CR0 as the guest sees it.
    ///
    /// # Errors
    /// [`VcpuError::Vmcs`].
    pub fn cr0(&mut self) -> Result<u64, VcpuError> {
        dispatch!(self, b => b.core.cr0())
    }

    /// Guest CR3.
    ///
    /// # Errors
    /// [`VcpuError::Vmcs`].
    pub fn cr3(&mut self) -> Result<u64, VcpuError> {
        dispatch!(self, b => b.core.cr3())
    }

    /// Guest CR4 as the guest sees it.
    ///
    /// # Errors
    /// [`VcpuError::Vmcs`].
    pub fn cr4(&mut self) -> Result<u64, VcpuError> {
        dispatch!(self, b => b.core.cr4())
    }

    /// Guest EFER.
    ///
    /// # Errors
    /// [`VcpuError::Vmcs`].
    pub fn efer(&mut self) -> Result<u64, VcpuError> {
        dispatch!(self, b => b.core.efer())
    }

    /// A guest segment register.
    ///
    /// # Errors
    /// [`VcpuError::Vmcs`].
    pub fn segment(&mut self, which: SegmentName) -> Result<Segment, VcpuError> {
        match &mut self.backend {
            Backend::Vmx(b) => b.core.segment(which),
            Backend::Svm(b) => {
                let save = b.core.vmcb().save();
                let s = match which {
                    SegmentName::Es => save.es(),
                    SegmentName::Cs => save.cs(),
                    SegmentName::Ss => save.ss(),
                    SegmentName::Ds => save.ds(),
                    SegmentName::Fs => save.fs(),
                    SegmentName::Gs => save.gs(),
                    SegmentName::Tr => save.tr(),
                    _ => save.ldtr(),
                };
                Ok(Segment {
                    selector: s.selector,
                    base: s.base,
                    limit: s.limit,
                    access: crate::state::SegmentAccess::from_svm_attributes(s.attributes.bits()),
                })
            }
        }
    }

    /// After [`crate::ExitKind::ExternalInterrupt`] on VMX with
    /// [`VcpuConfig::external_interrupt_exiting`]: the vector the processor acknowledged on the
    /// exit (the host must EOI it or inject it into the guest). SVM does not acknowledge
    /// (the interrupt stays pending until the host sets GIF and IF): `None`.
    ///
    /// # Errors
    /// [`VcpuError::Vmcs`].
    pub fn acknowledged_vector(&mut self) -> Result<Option<u8>, VcpuError> {
        match &mut self.backend {
            Backend::Vmx(b) => b.core.acknowledged_vector(),
            Backend::Svm(_) => Ok(None),
        }
    }

    /// Sets the guest CR2 for the next entry (before injecting a #PF): VMX does not keep CR2 in
    /// the VMCS, so it is loaded into the processor's CR2 right before VM entry; SVM keeps it in
    /// the VMCB (APM Table B-2, offset 640h), and the processor's CR2 gets it too, because Bochs
    /// 2.7's SVM does not load CR2 from the VMCB on VMRUN (measured with `trinity_apu`: the
    /// guest read 0; QEMU TCG loads it).
    pub fn set_cr2(&mut self, cr2: u64) {
        match &mut self.backend {
            Backend::Vmx(b) => b.pending_cr2 = Some(cr2),
            Backend::Svm(b) => {
                b.core.vmcb_mut().set_cr2(cr2);
                // SAFETY: CPL 0 (`Vcpu::new`); CR2 only records page-fault addresses, and the
                // host takes no page fault before the VMRUN that follows.
                unsafe { core::arch::asm!("mov cr2, {}", in(reg) cr2, options(nostack, nomem)) };
            }
        }
    }

    /// Moves RIP past the instruction that exited (ending an STI/MOV SS shadow).
    ///
    /// # Errors
    /// [`VcpuError::Vmcs`].
    pub fn skip_instruction(&mut self) -> Result<(), VcpuError> {
        dispatch!(self, b => b.core.skip_instruction())
    }

    /// Queues an event for the guest (delivered when the guest allows it).
    pub fn inject(&mut self, event: Event) {
        dispatch!(self, b => b.core.inject(event));
    }

    /// Answers a CPUID exit through the policy with this processor's CPUID.
    ///
    /// # Errors
    /// [`VcpuError::WrongExit`], [`VcpuError::Vmcs`].
    pub fn complete_cpuid(&mut self) -> Result<(), VcpuError> {
        dispatch!(self, b => b.core.complete_cpuid(host_cpuid))
    }

    /// Answers a hypercall with `result` in RAX.
    ///
    /// # Errors
    /// [`VcpuError::WrongExit`], [`VcpuError::Vmcs`].
    pub fn complete_hypercall(&mut self, result: u64) -> Result<(), VcpuError> {
        dispatch!(self, b => b.core.complete_hypercall(result))
    }

    /// Answers IN with `value` (or completes OUT) and moves past the instruction.
    ///
    /// # Errors
    /// [`VcpuError::WrongExit`] (also for INS/OUTS), [`VcpuError::Vmcs`].
    pub fn complete_io(&mut self, value: u32) -> Result<(), VcpuError> {
        dispatch!(self, b => b.core.complete_io(value))
    }

    /// Answers RDMSR with `value` (or completes WRMSR) and moves past the instruction.
    ///
    /// # Errors
    /// [`VcpuError::WrongExit`], [`VcpuError::Vmcs`].
    pub fn complete_msr(&mut self, value: u64) -> Result<(), VcpuError> {
        dispatch!(self, b => b.core.complete_msr(value))
    }

    /// The architectural default for the last exit (CPUID through the policy, built-in
    /// hypercalls, XSETBV, host-owned CR bits, #UD for virtualization instructions, #GP for
    /// intercepted MSRs); returns whether it handled it.
    ///
    /// # Errors
    /// [`VcpuError::Vmcs`].
    pub fn handle_default(&mut self) -> Result<bool, VcpuError> {
        dispatch!(self, b => b.core.handle_default(host_cpuid))
    }

    /// Intercepts (or passes through) the I/O ports `ports`.
    pub fn intercept_io(&mut self, ports: core::ops::RangeInclusive<u16>, on: bool) {
        for port in ports {
            dispatch!(self, b => b.intercept_io(port, on));
        }
    }

    /// Intercepts (or passes through) reads and/or writes of `msr`. MSRs outside the bitmap
    /// ranges always exit; this returns false for them.
    pub fn intercept_msr(&mut self, msr: u32, read: bool, write: bool) -> bool {
        dispatch!(self, b => b.intercept_msr(msr, read, write))
    }

    /// Sets the exception bitmap (bit n: vector n exits).
    ///
    /// # Errors
    /// [`VcpuError::Vmcs`].
    pub fn set_exception_bitmap(&mut self, bitmap: u32) -> Result<(), VcpuError> {
        match &mut self.backend {
            Backend::Vmx(b) => {
                use hvkit_vmx::vmcs::VmcsWrite;
                b.core
                    .vmcs_mut()
                    .write(hvkit_vmx::fields::control::EXCEPTION_BITMAP, bitmap)?;
            }
            Backend::Svm(b) => b.core.set_exception_bitmap(bitmap),
        }
        Ok(())
    }

    /// Sets the TSC offset.
    ///
    /// # Errors
    /// [`VcpuError::Vmcs`].
    pub fn set_tsc_offset(&mut self, offset: i64) -> Result<(), VcpuError> {
        match &mut self.backend {
            Backend::Vmx(b) => {
                use hvkit_vmx::vmcs::VmcsWrite;
                b.core
                    .vmcs_mut()
                    .write(hvkit_vmx::fields::control::TSC_OFFSET, offset as u64)?;
            }
            Backend::Svm(b) => b.core.set_tsc_offset(offset),
        }
        Ok(())
    }

    /// Makes the host own more CR0/CR4 bits. What that means differs by vendor:
    ///
    /// - VMX (guest/host masks and read shadows, SDM Vol. 3C 25.6.6): only a write that changes
    ///   an owned bit exits as [`crate::ExitKind::CrAccess`]; reads do not exit and see the read
    ///   shadow for owned bits. Details: [`crate::vmx::VmxCore::set_cr_masks`].
    /// - SVM (no masks, no shadows, APM 15.9): a non-zero mask intercepts *every* write of that
    ///   register (MOV to CR0/CR4; LMSW and CLTS for CR0), whatever bits it changes; reads are
    ///   not shadowed: they do not exit and return the value the guest runs with (the read
    ///   intercepts of [`crate::svm::SvmCore::intercept_cr`] could make them exit, but `Vcpu`
    ///   does not offer them). Details: [`crate::svm::SvmCore::set_cr_masks`].
    ///
    /// # Errors
    /// [`VcpuError::Vmcs`].
    pub fn set_cr_masks(&mut self, cr0: u64, cr4: u64) -> Result<(), VcpuError> {
        dispatch!(self, b => b.core.set_cr_masks(cr0, cr4))
    }

    /// Whether the guest's HLT exits ([`crate::ExitKind::Hlt`]; on by default). A guest that
    /// owns the processor's interrupts (a "blue-pill" kernel, whose idle loop halts until the
    /// next interrupt) should halt for real: with the intercept on, a host that merely skips
    /// the instruction turns its idle loop into a busy loop of exits. SVM: the HLT intercept
    /// (APM 15.9 "Instruction Intercepts", VMCB offset 00Ch bit 24). VMX: the "HLT exiting"
    /// primary processor-based control (SDM Vol. 3C 25.6.2 "Processor-Based VM-Execution
    /// Controls", bit 7), written before the next entry. Returns `true` (both vendors can).
    pub fn set_hlt_exiting(&mut self, on: bool) -> bool {
        match &mut self.backend {
            Backend::Vmx(b) => {
                b.core.set_hlt_exiting(on);
                true
            }
            Backend::Svm(b) => {
                let vmcb = b.core.vmcb_mut();
                let old = vmcb.control().intercept_misc1();
                let hlt = hvkit_svm::intercept::MiscIntercepts1::HLT;
                let new = if on { old | hlt } else { old - hlt };
                if new != old {
                    vmcb.set_intercept_misc1(new);
                }
                true
            }
        }
    }

    /// Gives the guest `msrs` (KernelGsBase, STAR, LSTAR, CSTAR, SFMASK), for a guest that
    /// continues the current processor state ("blue pill", with
    /// [`SyscallMsrs::current`](crate::capture::SyscallMsrs::current)): a [`GuestState`] does not
    /// describe them. SVM keeps them in the VMCB, which VMLOAD loads at every entry (APM 15.5.2
    /// "VMSAVE and VMLOAD Instructions"): they are written there. VMX does not switch them (the
    /// guest sees the processor's values): returns `false` and changes nothing unless they
    /// already are the processor's.
    pub fn set_syscall_msrs(&mut self, msrs: &crate::capture::SyscallMsrs) -> bool {
        match &mut self.backend {
            Backend::Vmx(_) => {
                // SAFETY: CPL 0 in 64-bit mode on this vCPU's processor (`Vcpu::new`).
                let current = unsafe { crate::capture::SyscallMsrs::current() };
                current == *msrs
            }
            Backend::Svm(b) => {
                let vmcb = b.core.vmcb_mut();
                vmcb.set_kernel_gs_base(msrs.kernel_gs_base);
                vmcb.set_star(msrs.star);
                vmcb.set_lstar(msrs.lstar);
                vmcb.set_cstar(msrs.cstar);
                vmcb.set_sfmask(msrs.sfmask);
                true
            }
        }
    }

    /// Gives the guest this processor's current extended state (x87, SSE, AVX, PKRU… as the
    /// current XCR0 enables them: SDM Vol. 1 13.4 "XSAVE Area") instead of the reset state, for
    /// a guest that continues the current processor state ("blue pill"). Call after
    /// [`set_xcr0`](Self::set_xcr0) with the processor's XCR0 and before the first
    /// [`run`](Self::run). Returns `false` (and changes nothing) when the guest's XCR0 is not the
    /// processor's.
    pub fn capture_extended_state(&mut self) -> bool {
        dispatch!(self, b => {
            let same_xcr0 = match b.xstate.method() {
                crate::xsave::Method::Xsave { host_xcr0, .. } => b.core.xcr0 == host_xcr0,
                crate::xsave::Method::Fxsave => true,
            };
            if same_xcr0 {
                // SAFETY: CPL 0 on this vCPU's processor (`Vcpu::new`), whose XCR0 is still the
                // host's (the world switch puts it back after every run) and equals the guest's.
                unsafe { b.xstate.capture_current() };
            }
            same_xcr0
        })
    }

    /// Loads into this processor the guest's values of the state that the world switch keeps in
    /// the VMCB or VMCS instead (after the last exit, before the vCPU is dropped), so that a
    /// "blue-pill" guest can continue natively where it left off:
    /// - SVM: VMLOAD of the guest VMCB, which the world switch VMSAVEd at the exit: FS, GS, TR
    ///   and LDTR with their hidden state, KernelGsBase, STAR, LSTAR, CSTAR, SFMASK and the
    ///   SYSENTER MSRs (APM 15.5.2 "VMSAVE and VMLOAD Instructions"; the host's VMLOAD had
    ///   replaced them); and the guest's GDTR and IDTR (#VMEXIT loaded the host's, APM 15.6
    ///   "#VMEXIT").
    /// - VMX: what the VM exit replaced (SDM Vol. 3C 28.5 "Loading Host State"): FS and GS
    ///   bases, GDTR and IDTR base and limit (the exit sets both limits to FFFFH), the SYSENTER
    ///   MSRs, EFER and PAT (written only when they differ) and LDTR (unusable after an exit).
    ///   KernelGsBase and the SYSCALL MSRs are never switched. TR's limit (67H after an exit)
    ///   is left to the caller, who reloads TR when it needs the full limit (Linux:
    ///   `invalidate_tss_limit()`).
    ///
    /// Both: the guest's extended state (x87, SSE, AVX, PKRU…) and XCR0, which the world switch
    /// replaced with the host's at the exit (`crate::xsave`). GPRs, RIP, RSP, RFLAGS, CR3 and
    /// CR4 are the caller's to load (with its own jump).
    ///
    /// # Errors
    /// [`VcpuError::Vmcs`] when a guest field cannot be read (nothing was loaded then).
    ///
    /// # Safety
    /// - Called on this vCPU's processor after [`run`](Self::run) returned, and the code that
    ///   runs afterwards is the guest's own (the same kernel: it uses the guest's GDT, IDT, GS
    ///   base and SYSCALL entry points); the vCPU is not run again.
    pub unsafe fn load_native_state(&mut self) -> Result<(), VcpuError> {
        match &mut self.backend {
            Backend::Vmx(b) => {
                use hvkit_vmx::fields::guest;
                use hvkit_vmx::vmcs::VmcsRead;
                let v = b.core.vmcs();
                let native = crate::capture::VmxNativeState {
                    fs_base: v.read(guest::FS_BASE)?,
                    gs_base: v.read(guest::GS_BASE)?,
                    gdtr: crate::state::DescriptorTable {
                        base: v.read(guest::GDTR_BASE)?,
                        limit: v.read(guest::GDTR_LIMIT)? as u16,
                    },
                    idtr: crate::state::DescriptorTable {
                        base: v.read(guest::IDTR_BASE)?,
                        limit: v.read(guest::IDTR_LIMIT)? as u16,
                    },
                    sysenter_cs: u64::from(v.read(guest::IA32_SYSENTER_CS)?),
                    sysenter_esp: v.read(guest::IA32_SYSENTER_ESP)?,
                    sysenter_eip: v.read(guest::IA32_SYSENTER_EIP)?,
                    ldtr: v.read(guest::LDTR_SELECTOR)?,
                    efer: v.read(guest::IA32_EFER)?,
                    pat: v.read(guest::IA32_PAT)?,
                };
                // SAFETY: VMX exited on this processor and the guest's code runs next (the
                // caller's obligations); the values are the guest's, which passed VM entry's
                // checks, and its LDTR selector names an LDT descriptor of its GDT or is 0.
                unsafe { native.load() };
                // SAFETY: CPL 0, right after an exit (XCR0 and x87/SSE state are the host's);
                // the guest's XCR0 passed `xcr0_valid`; the code that runs next is the guest's,
                // which is what may use the loaded state (no `to_host` follows).
                unsafe { b.xstate.to_guest(b.core.xcr0) };
                Ok(())
            }
            Backend::Svm(b) => {
                let pa = b.guest_vmcb_phys();
                let vmcb = b.core.vmcb();
                let (gdtr, idtr) = (vmcb.save().gdtr(), vmcb.save().idtr());
                // SAFETY: SVM is still enabled at CPL 0 on this processor (`Vcpu::new`, not yet
                // dropped), `pa` is the guest VMCB's address, and the state it holds is the
                // guest's from the last #VMEXIT's VMSAVE, valid for the guest's code that runs
                // next (the caller's obligation).
                unsafe {
                    hvkit_svm::instructions::vmload(vmcb, x86_64::PhysAddr::new_truncate(pa));
                }
                // SAFETY: CPL 0; the guest's own descriptor tables, for the guest's code.
                unsafe {
                    crate::capture::load_descriptor_tables(
                        crate::state::DescriptorTable {
                            base: gdtr.base,
                            limit: gdtr.limit as u16,
                        },
                        crate::state::DescriptorTable {
                            base: idtr.base,
                            limit: idtr.limit as u16,
                        },
                    );
                }
                // SAFETY: as for VMX above.
                unsafe { b.xstate.to_guest(b.core.xcr0) };
                Ok(())
            }
        }
    }

    /// The guest-physical memory map.
    #[must_use]
    pub fn memory_map(&self) -> &MemoryMap {
        &self.map
    }

    /// The memory type the EPT gives the page that maps `gpa` (SDM Vol. 3C 29.3.7.2 "Memory Type
    /// Used for Translated Guest-Physical Addresses"): the region's
    /// [`RegionKind::Ram`] `memory_type`. `None` when `gpa` is unmapped, and on SVM, whose nested
    /// entries are write-back and combine with the host's MTRRs (APM 15.25.8 "Combining Memory
    /// Types, MTRRs").
    #[must_use]
    pub fn nested_memory_type(&self, gpa: GuestPhysAddr) -> Option<hvkit_paging::MemoryType> {
        match &self.backend {
            Backend::Vmx(b) => b.nested.as_ref().and_then(|n| n.memory_type(gpa)),
            Backend::Svm(_) => None,
        }
    }

    /// Allocates `len` bytes (a multiple of 4 KiB) of zeroed RAM from the platform, maps it at
    /// `gpa` and keeps it until the vCPU is dropped. Returns its host-physical address.
    ///
    /// # Errors
    /// [`VcpuError::MemoryMap`] for a bad or overlapping range, [`VcpuError::OutOfMemory`] (also
    /// when [`MAX_OWNED_RAM`] runs are held), [`VcpuError::NestedPaging`].
    pub fn add_ram(&mut self, gpa: GuestPhysAddr, len: u64) -> Result<HostPhysAddr, VcpuError> {
        let frames = usize::try_from(len.div_ceil(4096)).unwrap_or(usize::MAX);
        let slot = self
            .ram
            .iter()
            .position(Option::is_none)
            .ok_or(crate::platform::OutOfMemory(frames))?;
        let run = OwnedFrames::allocate(self.platform, frames)?;
        let host = run.phys();
        // SAFETY: the run is owned by this vCPU (kept in `self.ram` until drop, which happens
        // after the backend, and so the guest, is gone) and mapped contiguously by the platform.
        unsafe { self.map_ram_at(gpa, host, len) }?;
        self.ram[slot] = Some(run);
        Ok(host)
    }

    /// Maps the caller's host-physical range `host .. host + len` as write-back RAM at `gpa`.
    ///
    /// # Errors
    /// As [`add_ram`](Self::add_ram).
    ///
    /// # Safety
    /// - The range is memory the caller owns and gives to the guest for as long as the vCPU
    ///   lives (the guest reads and writes it freely);
    /// - the platform maps it contiguously (`phys_to_virt`), for [`write_guest`](Self::write_guest).
    pub unsafe fn map_ram_at(
        &mut self,
        gpa: GuestPhysAddr,
        host: HostPhysAddr,
        len: u64,
    ) -> Result<(), VcpuError> {
        let region = Region {
            start: gpa,
            len,
            kind: RegionKind::Ram {
                host,
                memory_type: hvkit_paging::MemoryType::WRITE_BACK,
            },
        };
        let mut map = self.map;
        map.add(region)?;
        dispatch!(self, b => b.map_ram(gpa, host, len))?;
        self.map = map;
        Ok(())
    }

    /// Removes the RAM region that starts at `start` from the map and the nested tables (later
    /// accesses exit as nested-page faults). RAM from [`add_ram`](Self::add_ram) stays allocated
    /// until the vCPU is dropped.
    ///
    /// # Errors
    /// [`VcpuError::NotRam`] if no RAM region starts there, [`VcpuError::NestedPaging`].
    pub fn remove_ram(&mut self, start: GuestPhysAddr) -> Result<(), VcpuError> {
        let Some(region) = self.map.lookup(start).filter(|r| r.start == start) else {
            return Err(VcpuError::NotRam(start.as_u64()));
        };
        if !matches!(region.kind, RegionKind::Ram { .. }) {
            return Err(VcpuError::NotRam(start.as_u64()));
        }
        dispatch!(self, b => b.unmap(start, region.len))?;
        self.map.remove(start);
        Ok(())
    }

    /// Adds a region that is never mapped (MMIO or reserved): accesses exit as nested-page
    /// faults, and [`MemoryMap::lookup`] names the region.
    ///
    /// # Errors
    /// [`VcpuError::MemoryMap`].
    pub fn add_unmapped(&mut self, region: Region) -> Result<(), VcpuError> {
        if matches!(region.kind, RegionKind::Ram { .. }) {
            return Err(VcpuError::NotRam(region.start.as_u64()));
        }
        self.map.add(region)?;
        Ok(())
    }

    /// Copies `bytes` into guest RAM at `gpa` (within one RAM region).
    ///
    /// # Errors
    /// [`VcpuError::NotRam`].
    pub fn write_guest(&mut self, gpa: GuestPhysAddr, bytes: &[u8]) -> Result<(), VcpuError> {
        crate::copy::write(self.platform, &self.map, gpa, bytes)
    }

    /// Copies guest RAM at `gpa` into `bytes`.
    ///
    /// # Errors
    /// [`VcpuError::NotRam`].
    pub fn read_guest(&mut self, gpa: GuestPhysAddr, bytes: &mut [u8]) -> Result<(), VcpuError> {
        crate::copy::read(self.platform, &self.map, gpa, bytes)
    }

    /// On SVM, how many VMRUNs re-entered with every VMCB clean bit set
    /// ([`crate::svm::CleanStats`], APM 15.15.3 "VMCB Clean Field"); `None` on VMX.
    #[must_use]
    pub fn svm_clean_stats(&self) -> Option<crate::svm::CleanStats> {
        match &self.backend {
            Backend::Vmx(_) => None,
            Backend::Svm(b) => Some(b.clean_stats()),
        }
    }

    /// Sets the guest's XCR0 as XSETBV would (the same validity rules: bit 0, only supported
    /// components, AVX with SSE, …); returns whether it was accepted. A "blue-pill" guest, which
    /// continues the host's own execution, needs the host's XCR0 from its first instruction: its
    /// XSETBV ran before it became a guest (and QEMU 7.2 TCG does not intercept XSETBV, measured
    /// with the Linux module: the vCPU kept XCR0 = 1 and the guest's XRSTOR of AVX state faulted).
    pub fn set_xcr0(&mut self, xcr0: u64) -> bool {
        dispatch!(self, b => {
            let ok = crate::vmx::xcr0_valid(xcr0, b.core.xcr0_supported);
            if ok {
                b.core.xcr0 = xcr0;
            }
            ok
        })
    }

    /// The VMX exit reason or SVM exit code of the last exit, for logs.
    #[must_use]
    pub fn raw_exit_name(&self) -> Option<&'static str> {
        match &self.backend {
            Backend::Vmx(b) => b.exit_reason().and_then(|r| r.basic().name()),
            Backend::Svm(b) => b.core.exit_code().name(),
        }
    }
}

/// The depth of the host's (and so the nested tables') paging: 5 with CR4.LA57, else 4.
fn host_paging_levels() -> u8 {
    let cr4: u64;
    // SAFETY: reading CR4 has no side effects; `Vcpu` exists only at CPL 0 (`Vcpu::new`).
    unsafe { core::arch::asm!("mov {}, cr4", out(reg) cr4, options(nostack, nomem)) };
    if cr4 & (1 << 12) != 0 { 5 } else { 4 }
}

/// The INS/OUTS operand from the VMCB (APM 15.10.2, Figure 15-2 "EXITINFO1 for IOIO Intercept":
/// A16/A32/A64 in bits 9:7, the segment in bits 12:10). QEMU's TCG leaves the address-size bits
/// clear, so they are derived from CS.L/CS.D then; without a segment (decode assists) OUTS uses
/// DS.
fn svm_string_operand(
    vmcb: &hvkit_svm::Vmcb,
    direction: crate::exit::IoDirection,
) -> (
    crate::string_io::StringOperand,
    hvkit_paging::GuestPagingState,
    u64,
) {
    let save = vmcb.save();
    let info1 = vmcb.control().exit_info1();
    let cs = crate::state::SegmentAccess::from_svm_attributes(save.cs().attributes.bits());
    let long = save.efer() & crate::state::EFER_LMA != 0 && cs.long();
    let address_bits = match (info1 >> 7) & 7 {
        1 => 16,
        2 => 32,
        4 => 64,
        _ if long => 64,
        _ if cs.default_big() => 32,
        _ => 16,
    };
    let segment = match direction {
        crate::exit::IoDirection::In => 0,
        crate::exit::IoDirection::Out => match (info1 >> 10) & 7 {
            0 => 3,
            s => s,
        },
    };
    let segment_base = match segment {
        4 => save.fs().base,
        5 => save.gs().base,
        _ if address_bits == 64 => 0,
        0 => save.es().base,
        1 => save.cs().base,
        2 => save.ss().base,
        _ => save.ds().base,
    };
    let operand = crate::string_io::StringOperand {
        segment_base,
        address_bits,
        direction_flag: save.rflags() & (1 << 10) != 0,
        user: save.cpl() == 3,
    };
    let paging = hvkit_paging::GuestPagingState {
        cr0: save.cr0(),
        cr3: save.cr3(),
        cr4: save.cr4(),
        efer: save.efer(),
        ..hvkit_paging::GuestPagingState::real_mode()
    };
    (operand, paging, vmcb.control().nested_cr3().as_u64())
}

fn host_cpuid(leaf: u32, subleaf: u32) -> CpuIdResult {
    cpuid_count(leaf, subleaf)
}
