//! The SVM exit path, generic over the VMCB (`V: DerefMut<Target = Vmcb>`) and the memory the
//! guest's code is fetched from (`M: PhysMemory`): exit decoding into the common [`Exit`],
//! instruction skipping, event injection, the `complete_*` answers, clean-bit accounting. It
//! runs on the processor over the vCPU's VMCB page and in host tests over a plain boxed
//! [`Vmcb`].
//!
//! Manual: AMD64 Architecture Programmer's Manual Volume 2: System Programming, Publication No.
//! 24593, Revision 3.42, March 2024: 15.5.1 "Basic Operation" (RAX, RSP, RIP in the VMCB),
//! 15.6 "#VMEXIT", 15.7.1 "State Saved on Exit" (nRIP), 15.7.2 "Intercepts During IDT Interrupt
//! Delivery" (EXITINTINFO), 15.8 "Decode Assists", 15.10.2 "IN and OUT Behavior" (EXITINFO2 is
//! the next RIP), 15.11 "MSR Intercepts", 15.12 "Exception Intercepts", 15.15.3 "VMCB Clean
//! Field", 15.20 "Event Injection", 15.21.4 "Injecting Virtual (INTR) Interrupts" (V_IRQ and the
//! VINTR intercept as an interrupt window), 15.21.5 "Interrupt Shadows", 15.25.6 "Nested versus
//! Guest Page Faults, Fault Ordering", Appendix C "SVM Intercept Exit Codes".
//!
//! # Clean bits
//! After every #VMEXIT [`SvmCore::decode_exit`] marks every VMCB clean bit set; every setter of
//! `hvkit-svm`'s [`Vmcb`] clears the bit of the group it writes. So the next VMRUN reloads only
//! what the exit handler changed. RIP, RSP, RAX, RFLAGS, EVENTINJ and the interrupt shadow are
//! not cached state: changing them leaves the VMCB clean. [`SvmCore::clean_stats`] counts the
//! re-entries with nothing to reload.
//!
//! # Skipping an instruction
//! The next RIP comes from EXITINFO2 for IOIO (on every SVM processor), from nRIP when the
//! processor has NRIP save, and otherwise from decoding the instruction at RIP (`iced-x86`
//! with feature `decoder`, else the allocation-free [`super::decode::decode_builtin`]), its
//! bytes fetched through `hvkit-paging`'s two-dimensional walker (the guest's paging mode from
//! the VMCB, then the nested tables). When the code cannot be fetched or decoded, the
//! [`fixed_length`] of the intercepted instruction is the fallback. Moving RIP clears the VMCB's INTERRUPT_SHADOW, as retiring the
//! instruction would (15.21.5). The decoder also names the GPR of a MOV to/from CR and the
//! address of INVLPG when the processor has no decode assists (15.8.1, 15.8.3).
//!
//! # Events
//! One pending slot per class ([`Event`]). Before each VMRUN, in order: the event an exit
//! interrupted (EXITINTINFO → EVENTINJ, 15.7.2), a pending exception (no error code in real
//! mode), an NMI unless the guest is in an interrupt shadow or still in its NMI handler (NMI
//! blocking is tracked by intercepting the handler's IRET, 15.21.10 — SVM has no NMI-window
//! exit), an external interrupt when RFLAGS.IF = 1 and no shadow. What cannot go in yet asks
//! for an interrupt window: V_IRQ with V_IGN_TPR and the VINTR intercept (15.21.4).
//!
//! # Example: a CPUID exit on a plain VMCB
//! ```
//! use hvkit_svm::features::HostCapabilities;
//! use hvkit_svm::vmcb::{CleanBits, TlbControl};
//! use hvkit_svm::{ExitCode, Vmcb};
//! use hvkit_vcpu::ExitKind;
//! use hvkit_vcpu::state::GuestState;
//! use hvkit_vcpu::svm::{Entry, NoMemory, SvmCore, VmcbLayout, write_vmcb};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let layout = VmcbLayout {
//!     iopm: 0x10_0000,
//!     msrpm: 0x10_4000,
//!     asid: 1,
//!     tlb_control: TlbControl::FLUSH_ALL,
//!     ncr3: Some(0x20_0000),
//!     exception_bitmap: 0,
//!     tsc_offset: 0,
//!     external_interrupt_exiting: false,
//! };
//! let mut vmcb = Box::new(Vmcb::new());
//! write_vmcb(&mut vmcb, &layout, &GuestState::long_mode_flat(0x1000, 0x40_0000, 0x8000));
//! // QEMU TCG's SVM: nested paging, no NRIP save (Fn8000_000A EDX = 1).
//! let caps = HostCapabilities::from_cpuid([1, 16, 0, 1], 40, 1 << 29);
//! let mut core = SvmCore::<_, NoMemory>::new(vmcb, caps);
//! assert_eq!(core.prepare_entry()?, Entry::Run); // check_vmcb passed
//!
//! // What the processor writes on #VMEXIT for CPUID.
//! core.vmcb_mut().set_exit_code(ExitCode::CPUID);
//! let exit = core.decode_exit()?;
//! assert_eq!(exit.kind, ExitKind::Cpuid { leaf: 0, subleaf: 0 });
//! core.complete_cpuid(|_, _| raw_cpuid::CpuIdResult { eax: 1, ebx: 2, ecx: 3, edx: 4 })?;
//! assert_eq!(core.prepare_entry()?, Entry::Run);
//! // RIP moved past `0F A2`, and nothing cached changed: the next VMRUN reloads nothing.
//! assert_eq!(core.vmcb().save().rip(), 0x40_0002);
//! assert_eq!(core.vmcb().clean_bits(), CleanBits::all());
//! assert_eq!(core.clean_stats().clean_per_mille(), 1000);
//! # Ok(())
//! # }
//! ```

use core::ops::DerefMut;

use hvkit_paging::{
    Access, GuestPagingState, GuestPhysAddr, GuestVirtAddr, HostPhysAddr, MemoryError, Nested,
    PhysMemory, Walker,
};
use hvkit_svm::check::{Violations, check_vmcb};
use hvkit_svm::event::{EventInjection, EventType};
use hvkit_svm::exit::{CrDrAccess, Exit as SvmExit, ExitCode, MsrAccess, NpfErrorCode};
use hvkit_svm::features::{HostCapabilities, SvmFeatureFlags};
use hvkit_svm::intercept::{CrIntercepts, ExceptionIntercepts, MiscIntercepts1};
use hvkit_svm::vmcb::{CleanBits, InterruptState, Vmcb};
use raw_cpuid::CpuIdResult;

use crate::common::{self, ExitCore, RegisterExit};
use crate::cpuid::{CpuidPolicy, Vendor};
use crate::error::{Unsupported, VcpuError};
use crate::event::{Event, Pending};
use crate::exit::{
    CrAccess, CrAccessKind, EntryFailure, ExceptionExit, Exit, ExitKind, IoDirection, MemoryAccess,
    NestedPageFault, RawExit,
};
use crate::regs::GuestRegisters;
use crate::state::{CR0_PE, CR0_PG, CR4_OSXSAVE, EFER_LMA, EFER_LME, EFER_SVME, RFLAGS_IF};

/// Exception vectors that push an error code (APM 8.2 "Vectors": #DF, #TS, #NP, #SS, #GP, #PF,
/// #AC, #CP; plus #VC and #SX).
const ERROR_CODE_VECTORS: u32 = (1 << 8)
    | (1 << 10)
    | (1 << 11)
    | (1 << 12)
    | (1 << 13)
    | (1 << 14)
    | (1 << 17)
    | (1 << 21)
    | (1 << 29)
    | (1 << 30);

/// The EFER MSR (APM 3.1.7 "Extended Feature Enable Register (EFER)").
pub const MSR_EFER: u32 = 0xc000_0080;
/// EFER bits a guest may write: SCE 0, LME 8, LMA 10, NXE 11, LMSLE 13, FFXSR 14, TCE 15. Not
/// SVME 12: the guest's CPUID shows no SVM, and on such a processor the bit is reserved (#GP).
const EFER_WRITABLE: u64 = 1 | (1 << 8) | (0x3 << 10) | (0x7 << 13);

/// Whether exception `vector` pushes an error code.
#[must_use]
pub fn has_error_code(vector: u8) -> bool {
    vector < 32 && ERROR_CODE_VECTORS & (1 << vector) != 0
}

/// The length of an intercepted instruction with a fixed encoding and no prefixes: CPUID
/// `0F A2`, HLT `F4`, VMMCALL `0F 01 D9`, RDMSR/WRMSR `0F 32`/`0F 30`, XSETBV `0F 01 D1`,
/// VMRUN/VMLOAD/VMSAVE/STGI/CLGI/SKINIT/INVLPGA `0F 01 D8`–`DF`, RDTSC `0F 31`, RDTSCP
/// `0F 01 F9` (APM Volume 3, Publication No. 24594, instruction pages). The fallback when the
/// guest's code cannot be decoded.
#[must_use]
pub fn fixed_length(code: ExitCode) -> Option<u8> {
    Some(match code {
        ExitCode::HLT => 1,
        ExitCode::CPUID | ExitCode::MSR | ExitCode::RDTSC => 2,
        ExitCode::VMMCALL
        | ExitCode::VMRUN
        | ExitCode::VMLOAD
        | ExitCode::VMSAVE
        | ExitCode::STGI
        | ExitCode::CLGI
        | ExitCode::SKINIT
        | ExitCode::INVLPGA
        | ExitCode::XSETBV
        | ExitCode::RDTSCP => 3,
        _ => return None,
    })
}

/// How many VMRUNs reloaded nothing from the VMCB (APM 15.15.3): the figure the e2e summary
/// prints as the share of clean re-entries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CleanStats {
    /// VMRUNs after the first (the first always loads everything).
    pub reentries: u64,
    /// Re-entries with every clean bit set.
    pub clean_reentries: u64,
    /// The groups the last VMRUN had to reload.
    pub last_dirty: CleanBits,
}

impl CleanStats {
    /// `clean_reentries / reentries` in per mille (1000 when there was no re-entry yet).
    #[must_use]
    pub fn clean_per_mille(&self) -> u64 {
        if self.reentries == 0 {
            return 1000;
        }
        self.clean_reentries * 1000 / self.reentries
    }
}

/// What [`SvmCore::prepare_entry`] decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum Entry {
    /// The VMCB is ready: run VMRUN.
    Run,
    /// `check_vmcb` found violations (see [`SvmCore::violations`]): do not run VMRUN; this is
    /// the exit to return instead.
    Refused(Exit),
}

/// Where the guest's code is fetched from: physical memory and the nested paging in force.
#[derive(Clone, Copy, Debug)]
pub struct CodeMemory<M> {
    /// Host-physical memory (guest RAM and the nested tables).
    pub memory: M,
    /// The nested paging the VMCB uses.
    pub nested: Nested,
}

/// No memory to fetch guest code from: a [`PhysMemory`] where every read fails. The `M` of an
/// [`SvmCore`] that never decodes guest instructions (then, without NRIP save, only IOIO and the
/// [`fixed_length`] instructions can be skipped).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NoMemory;

impl PhysMemory for NoMemory {
    fn read_u64(&self, addr: HostPhysAddr) -> Result<u64, MemoryError> {
        Err(MemoryError(addr))
    }
    fn write_u64(&self, addr: HostPhysAddr, _value: u64) -> Result<(), MemoryError> {
        Err(MemoryError(addr))
    }
}

/// The vendor-independent part of an SVM vCPU: the exit path over the VMCB `V`.
#[derive(Debug)]
pub struct SvmCore<V, M> {
    vmcb: V,
    /// The guest GPRs. RAX is copied from the VMCB after each exit and back before each entry.
    pub regs: GuestRegisters,
    /// What the guest sees for CPUID.
    pub cpuid: CpuidPolicy,
    /// The guest's XCR0 (XSETBV exits update it; the world switch loads it).
    pub xcr0: u64,
    /// The XCR0 bits the host supports.
    pub xcr0_supported: u64,
    caps: HostCapabilities,
    code: Option<CodeMemory<M>>,
    last: Option<ExitKind>,
    decoded: Option<Decoded>,
    reinject: Option<EventInjection>,
    pending: Pending,
    nmi_masked: bool,
    /// RIP of an intercepted IRET that has not retired yet (NMIs stay blocked until it has).
    iret_rip: Option<u64>,
    cr_masks: (u64, u64),
    violations: Violations,
    checked: bool,
    launched: bool,
    stats: CleanStats,
}

/// The part of a decoded instruction the exit path keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Decoded {
    len: u8,
    kind: super::decode::DecodedKind,
}

impl<V: DerefMut<Target = Vmcb>, M: PhysMemory> SvmCore<V, M> {
    /// A core over `vmcb` (already filled by [`super::setup::write_vmcb`]) for a processor with
    /// `caps` (its SVM features decide nRIP and decode-assist use; [`check_vmcb`] uses the rest).
    pub fn new(vmcb: V, caps: HostCapabilities) -> Self {
        Self {
            vmcb,
            regs: GuestRegisters::default(),
            cpuid: CpuidPolicy::default(),
            xcr0: 1,
            xcr0_supported: 1,
            caps,
            code: None,
            last: None,
            decoded: None,
            reinject: None,
            pending: Pending::default(),
            nmi_masked: false,
            iret_rip: None,
            cr_masks: (0, 0),
            violations: Violations::NONE,
            checked: false,
            launched: false,
            stats: CleanStats::default(),
        }
    }

    /// Where guest code is fetched from when an instruction must be decoded (no NRIP save, or no
    /// decode assists for a CR access or INVLPG).
    pub fn set_code_memory(&mut self, code: CodeMemory<M>) {
        self.code = Some(code);
    }

    /// The VMCB.
    pub fn vmcb(&self) -> &Vmcb {
        &self.vmcb
    }

    /// The VMCB, mutably (its setters keep the clean bits right).
    pub fn vmcb_mut(&mut self) -> &mut Vmcb {
        &mut self.vmcb
    }

    /// The VMCB container (for the world switch, which needs the frame's address).
    pub(crate) fn vmcb_container(&self) -> &V {
        &self.vmcb
    }

    /// The processor's capabilities this core works with.
    #[must_use]
    pub fn capabilities(&self) -> HostCapabilities {
        self.caps
    }

    fn has(&self, flag: SvmFeatureFlags) -> bool {
        self.caps.svm.has(flag)
    }

    /// EXITCODE of the last exit.
    #[must_use]
    pub fn exit_code(&self) -> ExitCode {
        self.vmcb.control().exit_code()
    }

    /// The VMRUN consistency rules the VMCB broke at the last check (before the first VMRUN, and
    /// after a VMRUN failed).
    #[must_use]
    pub fn violations(&self) -> Violations {
        self.violations
    }

    /// The clean-bit figures so far.
    #[must_use]
    pub fn clean_stats(&self) -> CleanStats {
        self.stats
    }

    /// Guest RIP.
    ///
    /// # Errors
    /// None on SVM (the VMCB is memory); `Result` for the common `Vcpu` API.
    pub fn rip(&mut self) -> Result<u64, VcpuError> {
        Ok(self.vmcb.save().rip())
    }
    /// Sets guest RIP (not cached state: the VMCB stays clean).
    pub fn set_rip(&mut self, rip: u64) {
        if self.vmcb.save().rip() != rip {
            self.vmcb.set_rip(rip);
        }
    }
    /// Guest RSP.
    ///
    /// # Errors
    /// None on SVM.
    pub fn rsp(&mut self) -> Result<u64, VcpuError> {
        Ok(self.vmcb.save().rsp())
    }
    /// Sets guest RSP.
    pub fn set_rsp(&mut self, rsp: u64) {
        if self.vmcb.save().rsp() != rsp {
            self.vmcb.set_rsp(rsp);
        }
    }
    /// Guest RFLAGS.
    ///
    /// # Errors
    /// None on SVM.
    pub fn rflags(&mut self) -> Result<u64, VcpuError> {
        Ok(self.vmcb.save().rflags())
    }
    /// Sets guest RFLAGS.
    pub fn set_rflags(&mut self, rflags: u64) {
        if self.vmcb.save().rflags() != rflags {
            self.vmcb.set_rflags(rflags);
        }
    }
    /// Guest CR0 (SVM has no read shadows: the guest sees the VMCB value).
    ///
    /// # Errors
    /// None on SVM.
    pub fn cr0(&mut self) -> Result<u64, VcpuError> {
        Ok(self.vmcb.save().cr0())
    }
    /// Guest CR3.
    ///
    /// # Errors
    /// None on SVM.
    pub fn cr3(&mut self) -> Result<u64, VcpuError> {
        Ok(self.vmcb.save().cr3())
    }
    /// Guest CR4.
    ///
    /// # Errors
    /// None on SVM.
    pub fn cr4(&mut self) -> Result<u64, VcpuError> {
        Ok(self.vmcb.save().cr4())
    }
    /// Guest EFER as the guest sees it: without the SVME bit VMRUN needs in the VMCB (APM
    /// 15.5.1).
    ///
    /// # Errors
    /// None on SVM.
    pub fn efer(&mut self) -> Result<u64, VcpuError> {
        Ok(self.vmcb.save().efer() & !EFER_SVME)
    }

    /// Sets CR0 as the guest asked (an emulated MOV to CR0): with EFER.LME, turning paging on or
    /// off sets or clears EFER.LMA (APM 14.6.1 "Activating Long Mode"). Clears the CRx clean bit
    /// only when something changes.
    ///
    /// # Errors
    /// None on SVM.
    pub fn set_cr0(&mut self, cr0: u64) -> Result<(), VcpuError> {
        let old = self.vmcb.save().cr0();
        if old == cr0 {
            return Ok(());
        }
        self.vmcb.set_cr0(cr0);
        let efer = self.vmcb.save().efer();
        if (old ^ cr0) & CR0_PG != 0 && efer & EFER_LME != 0 {
            let efer = if cr0 & CR0_PG != 0 {
                efer | EFER_LMA
            } else {
                efer & !EFER_LMA
            };
            self.vmcb.set_efer(efer);
        }
        Ok(())
    }

    /// Sets CR3.
    pub fn set_cr3(&mut self, cr3: u64) {
        if self.vmcb.save().cr3() != cr3 {
            self.vmcb.set_cr3(cr3);
        }
    }

    /// Sets CR4.
    ///
    /// # Errors
    /// None on SVM.
    pub fn set_cr4(&mut self, cr4: u64) -> Result<(), VcpuError> {
        if self.vmcb.save().cr4() != cr4 {
            self.vmcb.set_cr4(cr4);
        }
        Ok(())
    }

    /// Makes the host own CR0/CR4 bits, as far as SVM can: with write intercepts only. SVM has no
    /// guest/host masks and no read shadows (APM 15.9 "Instruction Intercepts", the CR read and
    /// write intercept vector at VMCB offset 000h, Appendix B Table B-1), so:
    ///
    /// - **which bits** does not matter to the processor: a non-zero `cr0` turns on the CR0
    ///   write intercept, a non-zero `cr4` the CR4 write intercept, 0 turns it off; the masks
    ///   themselves are only kept for [`cr_masks`](Self::cr_masks);
    /// - **writes**: *every* write of an intercepted register exits as [`ExitKind::CrAccess`],
    ///   also one that changes no owned bit (each costs an exit): MOV to CR0/CR4, and for CR0
    ///   also LMSW and CLTS ([`CrAccessKind::Lmsw`], [`CrAccessKind::Clts`]), which the APM
    ///   counts as CR0 writes. [`handle_default`](Self::handle_default) applies an intercepted
    ///   MOV to CR0/CR3/CR4 exactly as the guest asked (the VMCB gets the guest's value; nothing
    ///   keeps the host's owned bits; #GP for PG without PE or CR0 bits 63:32) and leaves LMSW
    ///   and CLTS to the caller;
    /// - **reads are not shadowed**: MOV from CR0/CR4 and SMSW do not exit and return the
    ///   VMCB's CR0/CR4, the values the guest runs with. A host that runs the guest with bits
    ///   other than the guest believes must also intercept the reads
    ///   ([`intercept_cr`](Self::intercept_cr)`(0 or 4, true, _)`, exits as
    ///   [`CrAccessKind::Read`]) and answer them itself:
    ///   [`handle_default`](Self::handle_default) answers an intercepted read with the VMCB's
    ///   value, not with a shadow.
    ///
    /// VMX differs: [`crate::vmx::VmxCore::set_cr_masks`] sets real guest/host masks and read
    /// shadows, so only writes that change an owned bit exit and reads see the shadow.
    ///
    /// # Errors
    /// None on SVM.
    pub fn set_cr_masks(&mut self, cr0: u64, cr4: u64) -> Result<(), VcpuError> {
        self.cr_masks = (cr0, cr4);
        let mut want = CrIntercepts::empty();
        if cr0 != 0 {
            want |= CrIntercepts::CR0_WRITE;
        }
        if cr4 != 0 {
            want |= CrIntercepts::CR4_WRITE;
        }
        let all = CrIntercepts::CR0_WRITE | CrIntercepts::CR4_WRITE;
        let old = self.vmcb.control().intercept_cr();
        let new = (old - all) | want;
        if new != old {
            self.vmcb.set_intercept_cr(new);
        }
        Ok(())
    }

    /// Intercepts reads and/or writes of control register `cr` (0–15) by MOV CR (APM 15.9
    /// "Instruction Intercepts", Table B-1 offset 000h); they exit as [`ExitKind::CrAccess`].
    /// Returns false (changing nothing) for `cr > 15`.
    pub fn intercept_cr(&mut self, cr: u8, read: bool, write: bool) -> bool {
        let (Some(r), Some(w)) = (CrIntercepts::read(cr), CrIntercepts::write(cr)) else {
            return false;
        };
        let old = self.vmcb.control().intercept_cr();
        let mut new = old;
        new.set(r, read);
        new.set(w, write);
        if new != old {
            self.vmcb.set_intercept_cr(new);
        }
        true
    }

    /// The exceptions that exit (bit n = vector n; APM 15.12).
    pub fn set_exception_bitmap(&mut self, bitmap: u32) {
        let new = ExceptionIntercepts::from_bits_retain(bitmap);
        if self.vmcb.control().intercept_exceptions() != new {
            self.vmcb.set_intercept_exceptions(new);
        }
    }

    /// The TSC offset (added to the guest's RDTSC/RDTSCP; APM 15.30.5 "TSC Offset" in the
    /// VMCB's TSC_OFFSET field).
    pub fn set_tsc_offset(&mut self, offset: i64) {
        let offset = offset as u64;
        if self.vmcb.control().tsc_offset() != offset {
            self.vmcb.set_tsc_offset(offset);
        }
    }

    fn set_misc1(&mut self, flag: MiscIntercepts1, on: bool) {
        let old = self.vmcb.control().intercept_misc1();
        let new = if on { old | flag } else { old - flag };
        if new != old {
            self.vmcb.set_intercept_misc1(new);
        }
    }

    /// Queues `event` for delivery at the next entry (or later, when the guest allows it).
    pub fn inject(&mut self, event: Event) {
        self.pending.push(event);
    }

    /// The paging registers of the guest, for the walker.
    fn paging_state(&self) -> GuestPagingState {
        let s = self.vmcb.save();
        GuestPagingState {
            cr0: s.cr0(),
            cr3: s.cr3(),
            cr4: s.cr4(),
            efer: s.efer(),
            pkru: 0,
            maxphyaddr: self.caps.physical_address_bits.clamp(36, 52),
            gbpages: true,
        }
    }

    /// The code segment's size in bits: 64 (CS.L in long mode), 32 (CS.D) or 16.
    fn code_bits(&self) -> u32 {
        let s = self.vmcb.save();
        let cs = s.cs().attributes;
        if s.efer() & EFER_LMA != 0 && cs.long() {
            64
        } else if s.cr0() & CR0_PE != 0 && cs.default_big() {
            32
        } else {
            16
        }
    }

    /// Fetches up to 15 bytes of guest code at CS:RIP through the two-dimensional walker.
    fn fetch_code(&self, buf: &mut [u8; 15]) -> Result<usize, VcpuError> {
        let s = self.vmcb.save();
        let rip = s.rip();
        let linear = if self.code_bits() == 64 {
            rip
        } else {
            s.cs().base.wrapping_add(rip) & 0xffff_ffff
        };
        let bad = VcpuError::Unsupported(Unsupported::InstructionLength);
        let Some(code) = &self.code else {
            return Err(bad);
        };
        let walker = Walker::new(&code.memory, code.nested);
        let paging = self.paging_state();
        let access = if s.cpl() == 3 {
            Access::execute().as_user()
        } else {
            Access::execute()
        };
        let mut got = 0;
        while got < buf.len() {
            let at = linear.wrapping_add(got as u64);
            let Ok(t) = walker.translate(&paging, GuestVirtAddr::new(at), access) else {
                break;
            };
            // Read the aligned word holding `at`, keep the bytes from `at` to the word's end.
            let phys = t.host_phys.as_u64();
            let word_at = HostPhysAddr::new_truncate(phys & !7);
            let Ok(word) = code.memory.read_u64(word_at) else {
                break;
            };
            let bytes = word.to_le_bytes();
            for &b in &bytes[(phys & 7) as usize..] {
                if got == buf.len() {
                    break;
                }
                buf[got] = b;
                got += 1;
            }
        }
        if got == 0 { Err(bad) } else { Ok(got) }
    }

    /// Decodes the instruction at RIP (once per exit).
    fn decode_at_rip(&mut self) -> Result<Decoded, VcpuError> {
        if let Some(d) = self.decoded {
            return Ok(d);
        }
        let mut buf = [0u8; 15];
        let len = self.fetch_code(&mut buf)?;
        let d = self.decode_bytes(&buf[..len])?;
        self.decoded = Some(d);
        Ok(d)
    }

    fn decode_bytes(&self, bytes: &[u8]) -> Result<Decoded, VcpuError> {
        let rip = self.vmcb.save().rip();
        match super::decode::decode(bytes, self.code_bits(), rip) {
            Ok(d) => Ok(Decoded {
                len: d.len,
                kind: d.kind,
            }),
            Err(_) => Err(Unsupported::InstructionLength.into()),
        }
    }

    /// The RIP of the instruction after the one that exited: EXITINFO2 for IOIO, nRIP with NRIP
    /// save, otherwise RIP plus the length decoded from the guest's code (feature `decoder`,
    /// with [`set_code_memory`](Self::set_code_memory)), or else the [`fixed_length`] of the
    /// intercepted instruction.
    ///
    /// # Errors
    /// [`Unsupported::InstructionLength`] when none of these gives the length (the code cannot
    /// be fetched or decoded, and the instruction has no fixed length).
    pub fn next_rip(&mut self) -> Result<u64, VcpuError> {
        let c = self.vmcb.control();
        let code = c.exit_code();
        if code == ExitCode::IOIO {
            return Ok(c.exit_info2());
        }
        if self.has(SvmFeatureFlags::NRIP_SAVE) && c.next_rip() != 0 {
            return Ok(c.next_rip());
        }
        let len = match self.decode_at_rip() {
            Ok(d) => d.len,
            Err(e) => fixed_length(code).ok_or(e)?,
        };
        let rip = self.vmcb.save().rip().wrapping_add(u64::from(len));
        Ok(match self.code_bits() {
            64 => rip,
            32 => rip & 0xffff_ffff,
            _ => rip & 0xffff,
        })
    }

    /// Moves RIP past the instruction that caused the exit and clears the interrupt shadow (APM
    /// 15.21.5), as retiring the instruction would.
    ///
    /// # Errors
    /// As [`next_rip`](Self::next_rip).
    pub fn skip_instruction(&mut self) -> Result<(), VcpuError> {
        let next = self.next_rip()?;
        self.vmcb.skip_instruction(next);
        Ok(())
    }

    /// Reads the exit that just happened and decodes it; call once after each #VMEXIT. Marks
    /// every clean bit set (the setters re-dirty what the handler changes), copies RAX from the
    /// VMCB, and records an event the exit interrupted for re-injection.
    ///
    /// Decoding never fails on guest behaviour: a malformed EXITINFO is [`ExitKind::Other`], a
    /// CR access whose instruction cannot be decoded has `gpr: None`, and such an INVLPG has
    /// address 0.
    ///
    /// # Errors
    /// None; `Result` for the common `Vcpu` API.
    pub fn decode_exit(&mut self) -> Result<Exit, VcpuError> {
        self.vmcb.mark_all_clean();
        self.launched = true;
        self.decoded = None;
        self.regs.rax = self.vmcb.save().rax();
        if self
            .iret_rip
            .is_some_and(|rip| rip != self.vmcb.save().rip())
        {
            // The guest moved on from its IRET: NMIs are open again.
            self.iret_rip = None;
        }
        let c = self.vmcb.control();
        let (code, info1, info2) = (c.exit_code(), c.exit_info1(), c.exit_info2());
        let exit_int_info = c.exit_int_info();
        let raw = RawExit::Svm {
            code,
            info1,
            info2,
            exit_int_info: exit_int_info.bits(),
        };
        // EVENTINJ was consumed by this VMRUN; a valid EXITINTINFO goes back in (15.7.2).
        if c.event_injection().valid() {
            self.vmcb.set_event_injection(EventInjection::NONE);
        }
        self.reinject = exit_int_info.valid().then_some(exit_int_info);
        if code.is_vmrun_failure() {
            self.violations = check_vmcb(&self.vmcb, &self.caps);
            self.reinject = None;
        }
        let kind = self.decode_kind(code, info1, info2);
        self.last = Some(kind);
        Ok(Exit { kind, raw })
    }

    fn cr_gpr(&mut self, access: CrDrAccess, write: bool) -> CrAccessKind {
        if self.has(SvmFeatureFlags::DECODE_ASSISTS) {
            if let CrDrAccess::Mov { gpr } = access {
                return if write {
                    CrAccessKind::Write { gpr: Some(gpr) }
                } else {
                    CrAccessKind::Read { gpr: Some(gpr) }
                };
            }
        }
        self.cr_from_decoder(write)
    }

    /// The CR access at RIP as the decoder sees it; `gpr: None` when the code cannot be fetched
    /// or decoded (the caller still gets the exit).
    fn cr_from_decoder(&mut self, write: bool) -> CrAccessKind {
        use super::decode::DecodedKind as K;
        let unknown = if write {
            CrAccessKind::Write { gpr: None }
        } else {
            CrAccessKind::Read { gpr: None }
        };
        let Ok(d) = self.decode_at_rip() else {
            return unknown;
        };
        match d.kind {
            K::MovToCr { gpr, .. } => CrAccessKind::Write { gpr: Some(gpr) },
            K::MovFromCr { gpr, .. } => CrAccessKind::Read { gpr: Some(gpr) },
            K::Clts => CrAccessKind::Clts,
            K::Lmsw { gpr } => CrAccessKind::Lmsw {
                value: gpr.and_then(|g| self.regs.get(g)).unwrap_or(0) as u16,
            },
            K::Smsw { gpr } => CrAccessKind::Read { gpr },
            _ => unknown,
        }
    }

    /// INVLPG's linear address: EXITINFO1 with decode assists, else from the decoded operand
    /// (0 when the code cannot be decoded).
    fn invlpg_address(&mut self, info1: u64) -> u64 {
        if self.has(SvmFeatureFlags::DECODE_ASSISTS) {
            return info1;
        }
        self.invlpg_from_decoder()
    }

    fn invlpg_from_decoder(&mut self) -> u64 {
        let Ok(d) = self.decode_at_rip() else {
            return 0;
        };
        let super::decode::DecodedKind::Invlpg(m) = d.kind else {
            return 0;
        };
        let s = self.vmcb.save();
        let segment = match m.segment {
            0 => s.es(),
            1 => s.cs(),
            2 => s.ss(),
            4 => s.fs(),
            5 => s.gs(),
            _ => s.ds(),
        };
        let base = if self.code_bits() == 64 && m.segment < 4 {
            0
        } else {
            segment.base
        };
        let rsp = s.rsp();
        let regs = self.regs;
        m.linear(|n| regs.get(n).unwrap_or(rsp), base)
    }

    fn decode_kind(&mut self, code: ExitCode, info1: u64, info2: u64) -> ExitKind {
        let r = self.regs;
        let Ok(exit) = SvmExit::decode(code, info1, info2) else {
            return ExitKind::Other;
        };
        match exit {
            SvmExit::VmrunFailed(code) => ExitKind::EntryFailure(EntryFailure::VmrunFailed(code)),
            SvmExit::CrRead { cr, access } => ExitKind::CrAccess(CrAccess {
                cr,
                kind: self.cr_gpr(access, false),
            }),
            SvmExit::CrWrite { cr, access } => ExitKind::CrAccess(CrAccess {
                cr,
                kind: self.cr_gpr(access, true),
            }),
            SvmExit::Exception {
                vector,
                info1,
                info2,
            } => ExitKind::Exception(ExceptionExit {
                vector,
                error_code: has_error_code(vector).then_some(info1 as u32),
                detail: (vector == 14).then_some(info2),
            }),
            SvmExit::Io(io) => {
                let direction = if io.is_in() {
                    IoDirection::In
                } else {
                    IoDirection::Out
                };
                let size = io.size().bytes();
                common::io_exit(io.port(), size, direction, io.is_string(), io.is_rep(), &r)
            }
            SvmExit::Msr(MsrAccess::Read) => RegisterExit::MsrRead.decode(&r),
            SvmExit::Msr(_) => RegisterExit::MsrWrite.decode(&r),
            SvmExit::NestedPageFault {
                error,
                guest_physical,
            } => {
                let write = error.contains(NpfErrorCode::WRITE);
                let execute = error.contains(NpfErrorCode::EXECUTE);
                ExitKind::NestedPageFault(NestedPageFault {
                    gpa: GuestPhysAddr::new_truncate(guest_physical),
                    access: MemoryAccess {
                        read: !write && !execute,
                        write,
                        execute,
                        present: error.contains(NpfErrorCode::PRESENT),
                    },
                    linear_address: None,
                    during_walk: error.contains(NpfErrorCode::PAGE_TABLE_WALK),
                    // A reserved bit in a nested entry: the NPT analogue of an EPT
                    // misconfiguration.
                    misconfiguration: error.contains(NpfErrorCode::RESERVED_BIT),
                })
            }
            SvmExit::Invlpg { linear_address } => ExitKind::Invlpg {
                linear_address: self.invlpg_address(linear_address),
            },
            _ => match code {
                ExitCode::CPUID => RegisterExit::Cpuid.decode(&r),
                ExitCode::HLT => ExitKind::Hlt,
                ExitCode::VMMCALL => RegisterExit::Hypercall.decode(&r),
                ExitCode::XSETBV => RegisterExit::Xsetbv.decode(&r),
                ExitCode::CR0_SEL_WRITE => ExitKind::CrAccess(CrAccess {
                    cr: 0,
                    kind: self.cr_from_decoder(true),
                }),
                ExitCode::INIT => ExitKind::Init,
                ExitCode::INTR | ExitCode::NMI | ExitCode::SMI => ExitKind::ExternalInterrupt,
                ExitCode::VINTR => ExitKind::InterruptWindow,
                ExitCode::IRET => {
                    // The guest leaves its NMI handler: NMIs are unblocked once this IRET
                    // retires, which the next exit at another RIP shows; a pending NMI waits
                    // for an interrupt window until then (see `deliver_events`).
                    self.nmi_masked = false;
                    self.iret_rip = Some(self.vmcb.save().rip());
                    self.set_misc1(MiscIntercepts1::IRET, false);
                    ExitKind::NmiWindow
                }
                ExitCode::SHUTDOWN => ExitKind::Shutdown,
                ExitCode::VMRUN
                | ExitCode::VMLOAD
                | ExitCode::VMSAVE
                | ExitCode::STGI
                | ExitCode::CLGI
                | ExitCode::SKINIT
                | ExitCode::INVLPGA => ExitKind::VirtualizationInstruction,
                _ => ExitKind::Other,
            },
        }
    }

    fn last_kind(&self) -> Option<ExitKind> {
        self.last
    }

    /// Answers a CPUID exit: `host` runs CPUID on the host processor, the [`CpuidPolicy`] turns
    /// its result into the guest's, EAX–EDX get it, RIP moves on.
    ///
    /// # Errors
    /// [`VcpuError::WrongExit`] unless the last exit was CPUID; skipping errors.
    pub fn complete_cpuid(
        &mut self,
        host: impl Fn(u32, u32) -> CpuIdResult,
    ) -> Result<(), VcpuError> {
        let Some(ExitKind::Cpuid { leaf, subleaf }) = self.last_kind() else {
            return Err(VcpuError::WrongExit("CPUID"));
        };
        let osxsave = self.cpuid.needs_guest_cr4(leaf) && self.vmcb.save().cr4() & CR4_OSXSAVE != 0;
        let mut r = self
            .cpuid
            .apply(leaf, subleaf, host(leaf, subleaf), osxsave, Vendor::Amd);
        // The host runs CPUID with its own XCR0 loaded: the size of the XSAVE area for the
        // enabled components (leaf 0Dh, subleaf 0, EBX) must follow the guest's XCR0 instead.
        if leaf == 0xd && subleaf == 0 {
            r.ebx = crate::cpuid::xsave_size(self.xcr0, &host);
        }
        common::set_cpuid_result(&mut self.regs, r);
        self.skip_instruction()
    }

    /// Answers a hypercall: RAX = `result`, RIP moves on.
    ///
    /// # Errors
    /// [`VcpuError::WrongExit`] unless the last exit was a hypercall; skipping errors.
    pub fn complete_hypercall(&mut self, result: u64) -> Result<(), VcpuError> {
        common::complete_hypercall(self, result)
    }

    /// Answers an IN (not INS): the low `size` bytes of RAX get `value`, RIP moves to EXITINFO2.
    /// For OUT, pass anything: only RIP moves.
    ///
    /// # Errors
    /// [`VcpuError::WrongExit`] unless the last exit was a non-string I/O instruction.
    pub fn complete_io(&mut self, value: u32) -> Result<(), VcpuError> {
        common::complete_io(self, value)
    }

    /// Answers RDMSR with `value` (EDX:EAX), or WRMSR (the value is ignored), and moves RIP on.
    ///
    /// # Errors
    /// [`VcpuError::WrongExit`] unless the last exit was RDMSR or WRMSR.
    pub fn complete_msr(&mut self, value: u64) -> Result<(), VcpuError> {
        common::complete_msr(self, value)
    }

    fn gpr_or_rsp(&self, gpr: u8) -> u64 {
        self.regs.get(gpr).unwrap_or(self.vmcb.save().rsp())
    }

    /// The architectural default for the last exit, where there is one: CPUID through the
    /// policy, hvkit's built-in hypercalls, XSETBV (checked against the host's XCR0 bits, else
    /// #GP), intercepted MOV to/from CR0/CR3/CR4 (applied; #GP for reserved CR0 combinations),
    /// #UD for virtualization instructions, #GP for intercepted MSRs, nothing for window exits.
    /// Returns whether it handled the exit.
    ///
    /// # Errors
    /// Skipping errors.
    pub fn handle_default(
        &mut self,
        host: impl Fn(u32, u32) -> CpuIdResult,
    ) -> Result<bool, VcpuError> {
        let Some(kind) = self.last_kind() else {
            return Ok(false);
        };
        match kind {
            ExitKind::Cpuid { .. } => self.complete_cpuid(host)?,
            ExitKind::CrAccess(CrAccess {
                cr: cr @ (0 | 3 | 4),
                kind: CrAccessKind::Write { gpr: Some(gpr) },
            }) => {
                let value = self.gpr_or_rsp(gpr);
                match cr {
                    0 if value >> 32 != 0 || (value & CR0_PG != 0 && value & CR0_PE == 0) => {
                        self.inject(Event::GP0);
                        return Ok(true);
                    }
                    0 => self.set_cr0(value)?,
                    3 => self.set_cr3(value),
                    _ => self.set_cr4(value)?,
                }
                self.skip_instruction()?;
            }
            ExitKind::CrAccess(CrAccess {
                cr: cr @ (0 | 3 | 4),
                kind: CrAccessKind::Read { gpr: Some(gpr) },
            }) => {
                let s = self.vmcb.save();
                let value = match cr {
                    0 => s.cr0(),
                    3 => s.cr3(),
                    _ => s.cr4(),
                };
                if !self.regs.set(gpr, value) {
                    self.set_rsp(value);
                }
                self.skip_instruction()?;
            }
            ExitKind::MsrWrite {
                msr: MSR_EFER,
                value,
            } => {
                // EFER writes exit so that SVME stays set (VMRUN refuses a guest EFER without
                // it, APM 15.5.1); LMA is the processor's to set. Bits outside SCE, LME, LMA,
                // NXE, LMSLE, FFXSR and TCE (APM 3.1.7) are #GP, SVME too (hidden SVM).
                if value & !EFER_WRITABLE != 0 {
                    self.inject(Event::GP0);
                } else {
                    let lma = self.vmcb.save().efer() & EFER_LMA;
                    let efer = (value & !EFER_LMA) | lma | EFER_SVME;
                    if efer != self.vmcb.save().efer() {
                        self.vmcb.set_efer(efer);
                    }
                    self.skip_instruction()?;
                }
            }
            ExitKind::MsrRead { msr: MSR_EFER } => {
                let efer = self.vmcb.save().efer() & !EFER_SVME;
                self.regs.rax = efer & 0xffff_ffff;
                self.regs.rdx = efer >> 32;
                self.skip_instruction()?;
            }
            _ => return common::handle_shared(self, kind),
        }
        Ok(true)
    }

    /// Writes back RAX, delivers pending events, keeps EFER.SVME set, checks the VMCB before the
    /// first VMRUN, and counts the clean bits; call right before VMRUN.
    ///
    /// # Errors
    /// [`VcpuError::InvalidEvent`] is never returned on SVM (bad vectors are checked by
    /// [`check_vmcb`] and become [`Entry::Refused`]); `Result` for symmetry with VMX.
    pub fn prepare_entry(&mut self) -> Result<Entry, VcpuError> {
        self.deliver_events();
        if self.vmcb.save().rax() != self.regs.rax {
            self.vmcb.set_rax(self.regs.rax);
        }
        // VMRUN requires EFER.SVME in the guest's EFER (15.5.1); a guest WRMSR may clear it.
        let efer = self.vmcb.save().efer();
        if efer & EFER_SVME == 0 {
            self.vmcb.set_efer(efer | EFER_SVME);
        }
        if !self.checked {
            self.violations = check_vmcb(&self.vmcb, &self.caps);
            if !self.violations.is_empty() {
                let code = ExitCode::INVALID;
                return Ok(Entry::Refused(Exit {
                    kind: ExitKind::EntryFailure(EntryFailure::VmrunFailed(code)),
                    raw: RawExit::Svm {
                        code,
                        info1: 0,
                        info2: 0,
                        exit_int_info: 0,
                    },
                }));
            }
            self.checked = true;
        }
        if self.launched {
            let dirty = CleanBits::all() - self.vmcb.clean_bits();
            self.stats.reentries += 1;
            self.stats.last_dirty = dirty;
            if dirty.is_empty() {
                self.stats.clean_reentries += 1;
            }
        } else {
            self.vmcb.mark_all_dirty();
        }
        self.last = None;
        Ok(Entry::Run)
    }

    /// Forgets that the VMCB ran: the next entry reloads every group (after moving to another
    /// processor or another VMCB page, APM 15.15.2).
    pub fn mark_relaunch(&mut self) {
        self.launched = false;
    }

    /// Asks for (or stops asking for) an exit as soon as the guest can take an interrupt: V_IRQ
    /// with the highest priority, ignoring V_TPR, and the VINTR intercept (15.21.4).
    fn set_interrupt_window(&mut self, on: bool) {
        let v = self.vmcb.control().virtual_interrupt();
        let want = if on {
            v.with_v_irq(true)
                .with_v_ign_tpr(true)
                .with_v_intr_prio(0xf)
        } else {
            v.with_v_irq(false)
        };
        if want != v {
            self.vmcb.set_virtual_interrupt(want);
        }
        self.set_misc1(MiscIntercepts1::VINTR, on);
    }

    fn put_event(&mut self, event: EventInjection) {
        self.vmcb.set_event_injection(event);
    }

    fn deliver_events(&mut self) {
        let nothing_pending = self.pending == Pending::default();
        if let Some(event) = self.reinject.take() {
            self.put_event(event);
            self.set_interrupt_window(!nothing_pending);
            return;
        }
        if nothing_pending {
            self.set_interrupt_window(false);
            return;
        }
        if let Some((vector, error_code)) = self.pending.exception.take() {
            // Real mode pushes no error codes.
            let protected = self.vmcb.save().cr0() & CR0_PE != 0;
            let code = error_code.filter(|_| protected && has_error_code(vector));
            self.put_event(EventInjection::new(EventType::EXCEPTION, vector, code));
            let more = self.pending != Pending::default();
            self.set_interrupt_window(more);
            return;
        }
        let shadow = self
            .vmcb
            .control()
            .interrupt_state()
            .contains(InterruptState::INTERRUPT_SHADOW);
        if self.pending.nmi {
            if !shadow && !self.nmi_masked && self.iret_rip.is_none() {
                self.pending.nmi = false;
                self.nmi_masked = true;
                self.put_event(EventInjection::nmi());
                // The guest's IRET ends NMI blocking: intercept it to know (15.21.10).
                self.set_misc1(MiscIntercepts1::IRET, true);
                self.set_interrupt_window(self.pending.interrupt.is_some());
            } else {
                if self.nmi_masked {
                    self.set_misc1(MiscIntercepts1::IRET, true);
                }
                self.set_interrupt_window(true);
            }
            return;
        }
        if let Some(vector) = self.pending.interrupt {
            let open = self.vmcb.save().rflags() & RFLAGS_IF != 0 && !shadow;
            if open {
                self.pending.interrupt = None;
                self.put_event(EventInjection::interrupt(vector));
            }
            self.set_interrupt_window(!open);
        }
    }

    /// The guest's view of CR0/CR4 ownership set by [`set_cr_masks`](Self::set_cr_masks).
    #[must_use]
    pub fn cr_masks(&self) -> (u64, u64) {
        self.cr_masks
    }
}

impl<V: DerefMut<Target = Vmcb>, M: PhysMemory> ExitCore for SvmCore<V, M> {
    fn last_kind(&self) -> Option<ExitKind> {
        self.last_kind()
    }
    fn regs_mut(&mut self) -> &mut GuestRegisters {
        &mut self.regs
    }
    fn xcr0_mut(&mut self) -> (&mut u64, u64) {
        (&mut self.xcr0, self.xcr0_supported)
    }
    fn skip_instruction(&mut self) -> Result<(), VcpuError> {
        self.skip_instruction()
    }
    fn inject(&mut self, event: Event) {
        self.inject(event);
    }
}
