//! The VMX exit path, generic over the VMCS access: decoding exits into the common form, lazy
//! guest state, instruction skipping, event injection. It runs on the processor with
//! `CurrentVmcs` and in host tests with `Counting<SoftVmcs>`, which is how the VMCS traffic of
//! each exit is measured.
//!
//! Manual: Intel® 64 and IA-32 Architectures Software Developer's Manual, Combined Volumes, Order
//! Number 325462-086US, December 2024, Vol. 3C: 25.4.2 "Guest Non-Register State"
//! (interruptibility: blocking by STI and by MOV SS), 25.6.6 "Guest/Host Masks and Read Shadows
//! for CR0 and CR4", 27.6 "Event Injection", 27.7.5 "Interrupt-Window Exiting and
//! Virtual-Interrupt Delivery", 27.7.6 "NMI-Window Exiting", 28.2 "Recording VM-Exit Information
//! and Updating VM-Entry Control Fields" (28.2.1 exit qualifications, 28.2.4 IDT-vectoring
//! information), 28.2.5 "Information for VM Exits Due to Instruction Execution" (VM-exit
//! instruction length), 27.8 "VM-Entry Failures During or After Loading Guest State", Appendix
//! C "VMX Basic Exit Reasons".
//!
//! # VMCS traffic
//! Nothing is read before it is needed: the exit reason is always read; the exit qualification
//! only for reasons that define one; the IDT-vectoring field only for exits that can interrupt
//! event delivery; RIP, RSP, RFLAGS, CR0/3/4 and the interruptibility state only when a handler
//! asks, and then once per exit. Writes happen at the next entry, and only for fields that
//! changed. A CPUID exit handled with [`VmxCore::complete_cpuid`] costs 4 VMREADs (reason,
//! instruction length, RIP, interruptibility) and 1 VMWRITE (RIP); the `vmcs_traffic`
//! benchmark (`cargo bench -p hvkit-vcpu --bench vmcs_traffic`) prints the figures of every
//! common exit, and the `vmcs_traffic` test holds them to their budgets.

use hvkit_paging::GuestPhysAddr;
use hvkit_vmx::capabilities::FixedBits;
use hvkit_vmx::controls::{EntryControls, PrimaryControls};
use hvkit_vmx::exit::{
    BasicExitReason as R, ControlRegisterAccessQualification, CrAccessType, EventInjection,
    ExitInterruptionInfo, ExitReason, IdtVectoringInfo, Interruptibility,
    IoInstructionQualification,
};
use hvkit_vmx::fields::{FieldEncoding, control, exit_info, guest};
use hvkit_vmx::vmcs::VmcsWrite;
use raw_cpuid::CpuIdResult;

pub use crate::common::xcr0_valid;
use crate::common::{self, ExitCore, RegisterExit};
use crate::cpuid::{CpuidPolicy, Vendor};
use crate::error::VcpuError;
use crate::event::{Event, Pending};
use crate::exit::{
    CrAccess, CrAccessKind, EntryFailure, ExceptionExit, Exit, ExitKind, IoDirection, MemoryAccess,
    NestedPageFault, RawExit,
};
use crate::regs::GuestRegisters;
use crate::state::{
    CR0_PE, CR0_PG, CR4_OSXSAVE, EFER_LMA, EFER_LME, RFLAGS_IF, Segment, SegmentName,
};

/// The guest fields kept lazily.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lazy {
    Rip = 0,
    Rsp,
    Rflags,
    Cr0,
    Cr3,
    Cr4,
    Interruptibility,
}

const LAZY_FIELDS: [FieldEncoding; 7] = [
    guest::RIP.encoding(),
    guest::RSP.encoding(),
    guest::RFLAGS.encoding(),
    guest::CR0.encoding(),
    guest::CR3.encoding(),
    guest::CR4.encoding(),
    guest::INTERRUPTIBILITY_STATE.encoding(),
];

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Slot {
    value: u64,
    valid: bool,
    dirty: bool,
}

/// The CR0/CR4 policy: bits the processor forces (IA32_VMX_CRx_FIXED0/1) are owned by the host
/// (guest/host mask) and hidden by the read shadow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CrPolicy {
    /// IA32_VMX_CR0_FIXED0/1.
    pub cr0_fixed: FixedBits,
    /// IA32_VMX_CR4_FIXED0/1.
    pub cr4_fixed: FixedBits,
    /// "Unrestricted guest" is on: CR0.PE and CR0.PG are free.
    pub unrestricted: bool,
    /// More CR0 bits the host owns (writes that change them exit; reads see the shadow).
    pub extra_cr0_mask: u64,
    /// More CR4 bits the host owns.
    pub extra_cr4_mask: u64,
}

impl CrPolicy {
    /// The CR0 guest/host mask: the fixed bits (PE and PG are free under unrestricted guest).
    #[must_use]
    pub fn cr0_mask(&self) -> u64 {
        let mut fixed = self.cr0_fixed.fixed0 | !self.cr0_fixed.fixed1;
        if self.unrestricted {
            fixed &= !(CR0_PE | CR0_PG);
        }
        (fixed | self.extra_cr0_mask) & 0xffff_ffff
    }

    /// The CR4 guest/host mask: the fixed bits (VMXE among them).
    #[must_use]
    pub fn cr4_mask(&self) -> u64 {
        (self.cr4_fixed.fixed0 | !self.cr4_fixed.fixed1 | self.extra_cr4_mask) & 0xffff_ffff
    }

    /// The value the processor runs with when the guest wants `cr0`.
    #[must_use]
    pub fn cr0_actual(&self, cr0: u64) -> u64 {
        let mut fixed0 = self.cr0_fixed.fixed0;
        if self.unrestricted {
            fixed0 &= !(CR0_PE | CR0_PG);
        }
        (cr0 | fixed0) & (self.cr0_fixed.fixed1 | CR0_PE | CR0_PG)
    }

    /// The value the processor runs with when the guest wants `cr4`.
    #[must_use]
    pub fn cr4_actual(&self, cr4: u64) -> u64 {
        (cr4 | self.cr4_fixed.fixed0) & self.cr4_fixed.fixed1
    }
}

/// What the last exit was, as far as the `complete_*` calls need it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct LastExit {
    kind: ExitKind,
    reason: ExitReason,
}

/// The vendor-independent part of a VMX vCPU: the exit path over any VMCS access `V`.
#[derive(Debug)]
pub struct VmxCore<V> {
    vmcs: V,
    /// The guest GPRs (saved by the world switch; RSP is in the VMCS).
    pub regs: GuestRegisters,
    slots: [Slot; 7],
    last: Option<LastExit>,
    reinject: Option<EventInjection>,
    pending: Pending,
    primary: u32,
    primary_written: u32,
    nmi_window: bool,
    cr: CrPolicy,
    /// What the guest sees for CPUID.
    pub cpuid: CpuidPolicy,
    /// The guest's XCR0 (XSETBV exits update it; the world switch loads it).
    pub xcr0: u64,
    /// The XCR0 bits the host supports (CPUID.(EAX=0DH,ECX=0):EDX:EAX).
    pub xcr0_supported: u64,
}

impl<V: VmcsWrite> VmxCore<V> {
    /// A core over `vmcs`, whose primary processor-based controls are `primary` (as written in
    /// the VMCS); `nmi_window` says whether "NMI-window exiting" may be set.
    pub fn new(vmcs: V, primary: u32, nmi_window: bool, cr: CrPolicy) -> Self {
        Self {
            vmcs,
            regs: GuestRegisters::default(),
            slots: [Slot::default(); 7],
            last: None,
            reinject: None,
            pending: Pending::default(),
            primary,
            primary_written: primary,
            nmi_window,
            cr,
            cpuid: CpuidPolicy::default(),
            xcr0: 1,
            xcr0_supported: 1,
        }
    }

    /// The VMCS access.
    pub fn vmcs(&self) -> &V {
        &self.vmcs
    }

    /// The VMCS access, mutably (writes through it bypass the lazy cache: call
    /// [`forget_cached`](Self::forget_cached) after writing a cached guest field).
    pub fn vmcs_mut(&mut self) -> &mut V {
        &mut self.vmcs
    }

    /// Drops every cached guest field (the next access reads the VMCS again). Called after each
    /// VM exit.
    pub fn forget_cached(&mut self) {
        self.slots = [Slot::default(); 7];
    }

    fn get(&mut self, which: Lazy) -> Result<u64, VcpuError> {
        let slot = &mut self.slots[which as usize];
        if !slot.valid {
            slot.value = self.vmcs.read_raw(LAZY_FIELDS[which as usize])?;
            slot.valid = true;
        }
        Ok(slot.value)
    }

    fn put(&mut self, which: Lazy, value: u64) {
        let slot = &mut self.slots[which as usize];
        if !(slot.valid && slot.value == value) {
            *slot = Slot {
                value,
                valid: true,
                dirty: true,
            };
        }
    }

    /// Guest RIP.
    ///
    /// # Errors
    /// [`VcpuError::Vmcs`] if VMREAD fails.
    pub fn rip(&mut self) -> Result<u64, VcpuError> {
        self.get(Lazy::Rip)
    }
    /// Sets guest RIP (written at the next entry).
    pub fn set_rip(&mut self, rip: u64) {
        self.put(Lazy::Rip, rip);
    }
    /// Guest RSP.
    ///
    /// # Errors
    /// [`VcpuError::Vmcs`].
    pub fn rsp(&mut self) -> Result<u64, VcpuError> {
        self.get(Lazy::Rsp)
    }
    /// Sets guest RSP.
    pub fn set_rsp(&mut self, rsp: u64) {
        self.put(Lazy::Rsp, rsp);
    }
    /// Guest RFLAGS.
    ///
    /// # Errors
    /// [`VcpuError::Vmcs`].
    pub fn rflags(&mut self) -> Result<u64, VcpuError> {
        self.get(Lazy::Rflags)
    }
    /// Sets guest RFLAGS.
    pub fn set_rflags(&mut self, rflags: u64) {
        self.put(Lazy::Rflags, rflags);
    }
    /// Guest CR3.
    ///
    /// # Errors
    /// [`VcpuError::Vmcs`].
    pub fn cr3(&mut self) -> Result<u64, VcpuError> {
        self.get(Lazy::Cr3)
    }
    /// Sets guest CR3.
    pub fn set_cr3(&mut self, cr3: u64) {
        self.put(Lazy::Cr3, cr3);
    }

    /// CR0 as the guest sees it: the read shadow for host-owned bits, the real value for the rest.
    ///
    /// # Errors
    /// [`VcpuError::Vmcs`].
    pub fn cr0(&mut self) -> Result<u64, VcpuError> {
        let actual = self.get(Lazy::Cr0)?;
        let mask = self.cr.cr0_mask();
        if mask == 0 {
            return Ok(actual);
        }
        let shadow = self.vmcs.read(control::CR0_READ_SHADOW)?;
        Ok((actual & !mask) | (shadow & mask))
    }

    /// CR4 as the guest sees it.
    ///
    /// # Errors
    /// [`VcpuError::Vmcs`].
    pub fn cr4(&mut self) -> Result<u64, VcpuError> {
        let actual = self.get(Lazy::Cr4)?;
        let mask = self.cr.cr4_mask();
        let shadow = self.vmcs.read(control::CR4_READ_SHADOW)?;
        Ok((actual & !mask) | (shadow & mask))
    }

    /// Sets CR0 as the guest wants it: the read shadow gets `cr0`, the processor runs with the
    /// fixed bits forced; with EFER.LME, turning paging on or off sets or clears EFER.LMA and
    /// the "IA-32e mode guest" entry control (SDM 10.8.5 "Initializing IA-32e Mode").
    ///
    /// # Errors
    /// [`VcpuError::Vmcs`].
    pub fn set_cr0(&mut self, cr0: u64) -> Result<(), VcpuError> {
        self.vmcs.write(control::CR0_READ_SHADOW, cr0)?;
        let old = self.get(Lazy::Cr0)?;
        self.put(Lazy::Cr0, self.cr.cr0_actual(cr0));
        if (old ^ cr0) & CR0_PG != 0 {
            let efer = self.vmcs.read(guest::IA32_EFER)?;
            if efer & EFER_LME != 0 {
                let lma = cr0 & CR0_PG != 0;
                let efer = if lma {
                    efer | EFER_LMA
                } else {
                    efer & !EFER_LMA
                };
                self.vmcs.write(guest::IA32_EFER, efer)?;
                let entry = self.vmcs.read(control::VM_ENTRY_CONTROLS)?;
                let bit = EntryControls::IA32E_MODE_GUEST.bits();
                let entry = if lma { entry | bit } else { entry & !bit };
                self.vmcs.write(control::VM_ENTRY_CONTROLS, entry)?;
            }
        }
        Ok(())
    }

    /// Sets CR4 as the guest wants it (read shadow `cr4`, fixed bits forced).
    ///
    /// # Errors
    /// [`VcpuError::Vmcs`].
    pub fn set_cr4(&mut self, cr4: u64) -> Result<(), VcpuError> {
        self.vmcs.write(control::CR4_READ_SHADOW, cr4)?;
        self.put(Lazy::Cr4, self.cr.cr4_actual(cr4));
        Ok(())
    }

    /// After an external-interrupt exit with "acknowledge interrupt on exit" (what
    /// [`crate::VcpuConfig::external_interrupt_exiting`] sets up): the vector the processor
    /// acknowledged (SDM 28.2.2, the VM-exit interruption-information field). The host owns it
    /// now (EOI, or re-inject it into the guest). `None` for other exits.
    ///
    /// # Errors
    /// [`VcpuError::Vmcs`].
    pub fn acknowledged_vector(&mut self) -> Result<Option<u8>, VcpuError> {
        if self.last_kind() != Some(ExitKind::ExternalInterrupt) {
            return Ok(None);
        }
        let info = ExitInterruptionInfo(self.vmcs.read(exit_info::VM_EXIT_INTERRUPTION_INFO)?);
        Ok(info.is_valid().then(|| info.vector()))
    }

    /// A segment register (4 VMREADs: selector, base, limit, access rights).
    ///
    /// # Errors
    /// [`VcpuError::Vmcs`].
    pub fn segment(&mut self, which: SegmentName) -> Result<Segment, VcpuError> {
        let [sel, base, limit, access] = segment_fields(which);
        Ok(Segment {
            selector: self.vmcs.read_raw(sel)? as u16,
            base: self.vmcs.read_raw(base)?,
            limit: self.vmcs.read_raw(limit)? as u32,
            access: crate::state::SegmentAccess(self.vmcs.read_raw(access)? as u32),
        })
    }

    /// Writes a segment register (4 VMWRITEs).
    ///
    /// # Errors
    /// [`VcpuError::Vmcs`].
    pub fn set_segment(&mut self, which: SegmentName, segment: &Segment) -> Result<(), VcpuError> {
        let [sel, base, limit, access] = segment_fields(which);
        self.vmcs.write_raw(sel, u64::from(segment.selector))?;
        self.vmcs.write_raw(base, segment.base)?;
        self.vmcs.write_raw(limit, u64::from(segment.limit))?;
        self.vmcs.write_raw(access, u64::from(segment.access.0))?;
        Ok(())
    }

    /// Makes the host own more CR0/CR4 bits, on top of the ones VMX itself fixes
    /// (IA32_VMX_CR0/CR4_FIXED0/1, CR4.VMXE; see [`CrPolicy`]). Writes the CR0 and CR4
    /// guest/host masks and sets the read shadows to the guest's current view (4 VMWRITEs; SDM
    /// Vol. 3C 25.6.6 "Guest/Host Masks and Read Shadows for CR0 and CR4"). Then:
    ///
    /// - **writes**: MOV to CR0/CR4 exits as [`ExitKind::CrAccess`] only if it would give an
    ///   owned bit a value other than its read shadow; CLTS exits only if CR0.TS is owned and its
    ///   shadow is 1; LMSW only if it would change an owned bit among CR0\[3:0\] (SDM 26.1.3
    ///   "Instructions That Cause VM Exits Conditionally"). Other writes complete in the guest
    ///   without an exit and change only the guest-owned bits.
    ///   [`handle_default`](Self::handle_default) applies an intercepted MOV to CR0/CR3/CR4
    ///   (the shadow gets the guest's value, the processor runs with the fixed bits forced) and
    ///   leaves LMSW and CLTS to the caller;
    /// - **reads**: MOV from CR0/CR4 and SMSW do not exit; they return the read shadow for owned
    ///   bits and the real value for the others (SDM 26.3 "Changes to Instruction Behavior in
    ///   VMX Non-Root Operation").
    ///
    /// SVM differs: [`crate::svm::SvmCore::set_cr_masks`] can only intercept every write of the
    /// register, and keeps no read shadow.
    ///
    /// # Errors
    /// [`VcpuError::Vmcs`].
    pub fn set_cr_masks(&mut self, extra_cr0: u64, extra_cr4: u64) -> Result<(), VcpuError> {
        let (cr0, cr4) = (self.cr0()?, self.cr4()?);
        self.cr.extra_cr0_mask = extra_cr0;
        self.cr.extra_cr4_mask = extra_cr4;
        self.vmcs
            .write(control::CR0_GUEST_HOST_MASK, self.cr.cr0_mask())?;
        self.vmcs
            .write(control::CR4_GUEST_HOST_MASK, self.cr.cr4_mask())?;
        self.vmcs.write(control::CR0_READ_SHADOW, cr0)?;
        self.vmcs.write(control::CR4_READ_SHADOW, cr4)?;
        Ok(())
    }

    /// The CR0/CR4 policy.
    #[must_use]
    pub fn cr_policy(&self) -> CrPolicy {
        self.cr
    }

    /// Turns HLT exiting on or off (primary processor-based control bit 7, SDM Vol. 3C 25.6.2
    /// "Processor-Based VM-Execution Controls"); written before the next entry.
    pub fn set_hlt_exiting(&mut self, on: bool) {
        self.set_window(PrimaryControls::HLT_EXITING, on);
    }

    /// Guest IA32_EFER (read each time; not cached).
    ///
    /// # Errors
    /// [`VcpuError::Vmcs`].
    pub fn efer(&mut self) -> Result<u64, VcpuError> {
        Ok(self.vmcs.read(guest::IA32_EFER)?)
    }

    /// The guest's interruptibility state.
    ///
    /// # Errors
    /// [`VcpuError::Vmcs`].
    pub fn interruptibility(&mut self) -> Result<Interruptibility, VcpuError> {
        Ok(Interruptibility::from_bits_retain(
            self.get(Lazy::Interruptibility)? as u32,
        ))
    }

    fn set_interruptibility(&mut self, value: Interruptibility) {
        self.put(Lazy::Interruptibility, u64::from(value.bits()));
    }

    /// The memory operand of the INS/OUTS that just exited and the guest's paging registers, for
    /// [`crate::string_io::emulate`]: the VM-exit instruction information (address size, segment;
    /// SDM 28.2.5, table "Format of the VM-Exit Instruction-Information Field as Used for INS and
    /// OUTS"), the segment base, RFLAGS.DF, SS.DPL and CR0/CR3/CR4/EFER.
    ///
    /// # Errors
    /// [`VcpuError::Vmcs`].
    pub fn string_operand(
        &mut self,
        direction: IoDirection,
    ) -> Result<
        (
            crate::string_io::StringOperand,
            hvkit_paging::GuestPagingState,
        ),
        VcpuError,
    > {
        use hvkit_vmx::exit::{AddressSize, InsOutsInstructionInfo, SegmentRegister};
        let info = InsOutsInstructionInfo(self.vmcs.read(exit_info::VM_EXIT_INSTRUCTION_INFO)?);
        let address_bits = match info.address_size() {
            AddressSize::Bits16 => 16,
            AddressSize::Bits32 => 32,
            _ => 64,
        };
        let segment = match direction {
            IoDirection::In => SegmentRegister::Es,
            IoDirection::Out => info.segment(),
        };
        let base_field = match segment {
            SegmentRegister::Es => guest::ES_BASE,
            SegmentRegister::Cs => guest::CS_BASE,
            SegmentRegister::Ss => guest::SS_BASE,
            SegmentRegister::Fs => guest::FS_BASE,
            SegmentRegister::Gs => guest::GS_BASE,
            _ => guest::DS_BASE,
        };
        let flat =
            address_bits == 64 && !matches!(segment, SegmentRegister::Fs | SegmentRegister::Gs);
        let segment_base = if flat { 0 } else { self.vmcs.read(base_field)? };
        let ss = crate::state::SegmentAccess(self.vmcs.read(guest::SS_ACCESS_RIGHTS)?);
        let operand = crate::string_io::StringOperand {
            segment_base,
            address_bits,
            direction_flag: self.rflags()? & (1 << 10) != 0,
            user: ss.dpl() == 3,
        };
        let paging = hvkit_paging::GuestPagingState {
            cr0: self.get(Lazy::Cr0)?,
            cr3: self.cr3()?,
            cr4: self.get(Lazy::Cr4)?,
            efer: self.efer()?,
            ..hvkit_paging::GuestPagingState::real_mode()
        };
        Ok((operand, paging))
    }

    /// Moves RIP past the instruction that caused the exit (VM-exit instruction length) and
    /// ends an STI or MOV SS interrupt shadow, as retiring the instruction would (SDM 25.4.2).
    ///
    /// # Errors
    /// [`VcpuError::Vmcs`].
    pub fn skip_instruction(&mut self) -> Result<(), VcpuError> {
        let length = self.vmcs.read(exit_info::VM_EXIT_INSTRUCTION_LENGTH)?;
        let rip = self.rip()?;
        self.set_rip(rip.wrapping_add(u64::from(length)));
        let shadow = Interruptibility::BLOCKING_BY_STI | Interruptibility::BLOCKING_BY_MOV_SS;
        let state = self.interruptibility()?;
        if state.intersects(shadow) {
            self.set_interruptibility(state - shadow);
        }
        Ok(())
    }

    /// Queues `event` for delivery at the next entry (or later, when the guest allows it).
    pub fn inject(&mut self, event: Event) {
        self.pending.push(event);
    }

    /// Reads the exit that just happened and decodes it. Call once after each VM exit (after
    /// [`forget_cached`](Self::forget_cached)).
    ///
    /// # Errors
    /// [`VcpuError::Vmcs`].
    pub fn decode_exit(&mut self) -> Result<Exit, VcpuError> {
        let reason = ExitReason(self.vmcs.read(exit_info::EXIT_REASON)?);
        let basic = reason.basic();
        let has_qualification = matches!(
            basic,
            R::EXCEPTION_OR_NMI
                | R::SIPI
                | R::INVLPG
                | R::CONTROL_REGISTER_ACCESS
                | R::IO_INSTRUCTION
                | R::EPT_VIOLATION
                | R::TASK_SWITCH
                | R::MOV_DR
                | R::APIC_ACCESS
        ) || reason.is_entry_failure();
        let qualification = if has_qualification {
            self.vmcs.read(exit_info::EXIT_QUALIFICATION)?
        } else {
            0
        };
        let raw = RawExit::Vmx {
            reason,
            qualification,
        };
        let kind = if reason.is_entry_failure() {
            ExitKind::EntryFailure(match basic {
                R::ENTRY_FAILURE_INVALID_GUEST_STATE => {
                    EntryFailure::InvalidGuestState { qualification }
                }
                R::ENTRY_FAILURE_MSR_LOADING => EntryFailure::MsrLoading {
                    entry: qualification,
                },
                _ => EntryFailure::MachineCheck,
            })
        } else {
            self.record_vectoring(basic)?;
            self.decode_kind(basic, qualification)?
        };
        self.last = Some(LastExit { kind, reason });
        Ok(Exit { kind, raw })
    }

    /// Exits that can happen while the processor delivers an event (SDM 28.2.4) carry it in the
    /// IDT-vectoring field; it is re-injected at the next entry.
    fn record_vectoring(&mut self, basic: R) -> Result<(), VcpuError> {
        if !matches!(
            basic,
            R::EXCEPTION_OR_NMI
                | R::EXTERNAL_INTERRUPT
                | R::TASK_SWITCH
                | R::APIC_ACCESS
                | R::EPT_VIOLATION
                | R::EPT_MISCONFIGURATION
                | R::PML_FULL
                | R::SPP_RELATED_EVENT
        ) {
            return Ok(());
        }
        let info = IdtVectoringInfo(self.vmcs.read(exit_info::IDT_VECTORING_INFO)?);
        if !info.is_valid() {
            return Ok(());
        }
        let error_code = if info.error_code_valid() {
            self.vmcs.read(exit_info::IDT_VECTORING_ERROR_CODE)?
        } else {
            0
        };
        let length = if info.interruption_type().uses_instruction_length() {
            self.vmcs.read(exit_info::VM_EXIT_INSTRUCTION_LENGTH)?
        } else {
            0
        };
        self.reinject = info.reinjection(error_code, length)?;
        Ok(())
    }

    fn decode_kind(&mut self, basic: R, qualification: u64) -> Result<ExitKind, VcpuError> {
        let r = &self.regs;
        Ok(match basic {
            R::CPUID => RegisterExit::Cpuid.decode(r),
            R::HLT => ExitKind::Hlt,
            R::VMCALL => RegisterExit::Hypercall.decode(r),
            R::RDMSR => RegisterExit::MsrRead.decode(r),
            R::WRMSR => RegisterExit::MsrWrite.decode(r),
            R::XSETBV => RegisterExit::Xsetbv.decode(r),
            R::IO_INSTRUCTION => {
                let q = IoInstructionQualification(qualification);
                let direction = match q.direction() {
                    hvkit_vmx::exit::IoDirection::In => IoDirection::In,
                    hvkit_vmx::exit::IoDirection::Out => IoDirection::Out,
                };
                let size = q.size().bytes().unwrap_or(1);
                common::io_exit(q.port(), size, direction, q.is_string(), q.is_rep(), r)
            }
            R::EPT_VIOLATION => {
                let q = hvkit_vmx::exit::EptViolationQualification(qualification);
                let gpa = self.vmcs.read(exit_info::GUEST_PHYSICAL_ADDRESS)?;
                let linear_address = if q.guest_linear_address_valid() {
                    Some(self.vmcs.read(exit_info::GUEST_LINEAR_ADDRESS)?)
                } else {
                    None
                };
                ExitKind::NestedPageFault(NestedPageFault {
                    gpa: GuestPhysAddr::new_truncate(gpa),
                    access: MemoryAccess {
                        read: q.read(),
                        write: q.write(),
                        execute: q.instruction_fetch(),
                        present: q.readable() || q.writable() || q.executable(),
                    },
                    linear_address,
                    during_walk: q.guest_linear_address_valid() && qualification & (1 << 8) == 0,
                    misconfiguration: false,
                })
            }
            R::EPT_MISCONFIGURATION => {
                let gpa = self.vmcs.read(exit_info::GUEST_PHYSICAL_ADDRESS)?;
                ExitKind::NestedPageFault(NestedPageFault {
                    gpa: GuestPhysAddr::new_truncate(gpa),
                    access: MemoryAccess::default(),
                    linear_address: None,
                    during_walk: false,
                    misconfiguration: true,
                })
            }
            R::EXCEPTION_OR_NMI => {
                let info =
                    ExitInterruptionInfo(self.vmcs.read(exit_info::VM_EXIT_INTERRUPTION_INFO)?);
                let error_code = if info.error_code_valid() {
                    Some(self.vmcs.read(exit_info::VM_EXIT_INTERRUPTION_ERROR_CODE)?)
                } else {
                    None
                };
                let vector = info.vector();
                ExitKind::Exception(ExceptionExit {
                    vector,
                    error_code,
                    detail: matches!(vector, 1 | 14).then_some(qualification),
                })
            }
            R::CONTROL_REGISTER_ACCESS => {
                let q = ControlRegisterAccessQualification(qualification);
                let gpr = q.register().map(|g| g.index());
                let kind = match q.access_type() {
                    CrAccessType::MovToCr => CrAccessKind::Write { gpr },
                    CrAccessType::MovFromCr => CrAccessKind::Read { gpr },
                    CrAccessType::Clts => CrAccessKind::Clts,
                    CrAccessType::Lmsw => CrAccessKind::Lmsw {
                        value: q.lmsw_source_data().unwrap_or(0),
                    },
                };
                ExitKind::CrAccess(CrAccess {
                    cr: q.control_register(),
                    kind,
                })
            }
            R::INVLPG => ExitKind::Invlpg {
                linear_address: qualification,
            },
            R::INIT_SIGNAL => ExitKind::Init,
            R::SIPI => ExitKind::Sipi {
                vector: qualification as u8,
            },
            R::EXTERNAL_INTERRUPT => ExitKind::ExternalInterrupt,
            R::INTERRUPT_WINDOW => ExitKind::InterruptWindow,
            R::NMI_WINDOW => ExitKind::NmiWindow,
            R::TRIPLE_FAULT => ExitKind::Shutdown,
            R::VMCLEAR
            | R::VMLAUNCH
            | R::VMPTRLD
            | R::VMPTRST
            | R::VMREAD
            | R::VMRESUME
            | R::VMWRITE
            | R::VMXOFF
            | R::VMXON
            | R::INVEPT
            | R::INVVPID
            | R::VMFUNC
            | R::GETSEC => ExitKind::VirtualizationInstruction,
            _ => ExitKind::Other,
        })
    }

    fn last_kind(&self) -> Option<ExitKind> {
        self.last.map(|l| l.kind)
    }

    /// Answers a CPUID exit: `host` runs CPUID on the host processor, the [`CpuidPolicy`] turns
    /// its result into the guest's (reading CR4 only for leaf 1; leaf 0DH's XSAVE size follows
    /// the guest's XCR0), EAX–EDX get it, RIP moves on.
    ///
    /// # Errors
    /// [`VcpuError::WrongExit`] unless the last exit was CPUID; [`VcpuError::Vmcs`].
    pub fn complete_cpuid(
        &mut self,
        host: impl Fn(u32, u32) -> CpuIdResult,
    ) -> Result<(), VcpuError> {
        let Some(ExitKind::Cpuid { leaf, subleaf }) = self.last_kind() else {
            return Err(VcpuError::WrongExit("CPUID"));
        };
        let osxsave = if !self.cpuid.needs_guest_cr4(leaf) {
            false
        } else if self.cr.cr4_mask() & CR4_OSXSAVE == 0 {
            // The guest owns CR4.OSXSAVE: the real CR4 has its value (one VMREAD, no shadow).
            self.get(Lazy::Cr4)? & CR4_OSXSAVE != 0
        } else {
            self.cr4()? & CR4_OSXSAVE != 0
        };
        let mut r = self
            .cpuid
            .apply(leaf, subleaf, host(leaf, subleaf), osxsave, Vendor::Intel);
        if leaf == 0xd && subleaf == 0 {
            r.ebx = crate::cpuid::xsave_size(self.xcr0, &host);
        }
        common::set_cpuid_result(&mut self.regs, r);
        self.skip_instruction()
    }

    /// Answers a hypercall: RAX = `result`, RIP moves on.
    ///
    /// # Errors
    /// [`VcpuError::WrongExit`] unless the last exit was a hypercall; [`VcpuError::Vmcs`].
    pub fn complete_hypercall(&mut self, result: u64) -> Result<(), VcpuError> {
        common::complete_hypercall(self, result)
    }

    /// Answers an IN (not INS): the low `size` bytes of RAX get `value`, RIP moves on. For OUT,
    /// pass anything: only RIP moves.
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

    /// The architectural default for the last exit, where there is one: CPUID through the
    /// policy (with `host` as the host's CPUID), hvkit's built-in hypercalls, XSETBV (checked
    /// against the host's XCR0 bits, else #GP), MOV to CR0/CR4 of host-owned bits and MOV
    /// to/from CR3, #UD for virtualization instructions, #GP for intercepted MSRs, INVD/WBINVD
    /// skipped. Returns whether it handled the
    /// exit; the rest (I/O, HLT, nested-page faults, …) is the caller's.
    ///
    /// # Errors
    /// [`VcpuError::Vmcs`].
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
                cr: cr @ (0 | 4),
                kind: CrAccessKind::Write { gpr: Some(gpr) },
            }) => {
                let value = match self.regs.get(gpr) {
                    Some(v) => v,
                    None => self.rsp()?,
                };
                if cr == 0 {
                    if value >> 32 != 0 || (value & CR0_PG != 0 && value & CR0_PE == 0) {
                        self.inject(Event::GP0);
                        return Ok(true);
                    }
                    self.set_cr0(value)?;
                } else {
                    let allowed = self.cr.cr4_fixed.fixed1 & !crate::state::CR4_VMXE;
                    if value & !allowed != 0 {
                        self.inject(Event::GP0);
                        return Ok(true);
                    }
                    self.set_cr4(value)?;
                }
                self.skip_instruction()?;
            }
            ExitKind::CrAccess(CrAccess {
                cr: 3,
                kind: CrAccessKind::Write { gpr: Some(gpr) } | CrAccessKind::Read { gpr: Some(gpr) },
            }) => {
                if let Some(ExitKind::CrAccess(CrAccess {
                    kind: CrAccessKind::Write { .. },
                    ..
                })) = self.last_kind()
                {
                    let value = match self.regs.get(gpr) {
                        Some(v) => v,
                        None => self.rsp()?,
                    };
                    self.set_cr3(value);
                } else {
                    let value = self.cr3()?;
                    if !self.regs.set(gpr, value) {
                        self.set_rsp(value);
                    }
                }
                self.skip_instruction()?;
            }
            // INVD and WBINVD (which exit unconditionally or with "WBINVD exiting"): caches are
            // the host's business; the instruction is done.
            ExitKind::Other
                if matches!(
                    self.last.map(|l| l.reason.basic()),
                    Some(R::INVD | R::WBINVD)
                ) =>
            {
                self.skip_instruction()?;
            }
            _ => return common::handle_shared(self, kind),
        }
        Ok(true)
    }

    /// Writes back what changed and delivers pending events; call right before VM entry.
    ///
    /// # Errors
    /// [`VcpuError::Vmcs`], [`VcpuError::InvalidEvent`] for an event the VMCS cannot carry.
    pub fn prepare_entry(&mut self) -> Result<(), VcpuError> {
        self.deliver_events()?;
        if self.primary != self.primary_written {
            self.vmcs
                .write(control::PRIMARY_PROC_BASED_VM_EXEC_CONTROL, self.primary)?;
            self.primary_written = self.primary;
        }
        for (i, slot) in self.slots.iter_mut().enumerate() {
            if slot.dirty {
                self.vmcs.write_raw(LAZY_FIELDS[i], slot.value)?;
                slot.dirty = false;
            }
        }
        self.last = None;
        Ok(())
    }

    fn set_window(&mut self, control: PrimaryControls, on: bool) {
        if on {
            self.primary |= control.bits();
        } else {
            self.primary &= !control.bits();
        }
    }

    fn write_injection(&mut self, injection: EventInjection) -> Result<(), VcpuError> {
        if let Some(code) = injection.error_code() {
            self.vmcs
                .write(control::VM_ENTRY_EXCEPTION_ERROR_CODE, code)?;
        }
        if let Some(length) = injection.instruction_length() {
            self.vmcs
                .write(control::VM_ENTRY_INSTRUCTION_LENGTH, u32::from(length))?;
        }
        self.vmcs.write(
            control::VM_ENTRY_INTERRUPTION_INFO,
            injection.interruption_info().0,
        )?;
        Ok(())
    }

    fn deliver_events(&mut self) -> Result<(), VcpuError> {
        let nothing_pending = self.pending == Pending::default();
        if self.reinject.is_none() && nothing_pending {
            // Nothing to do; clear windows left from earlier requests.
            self.set_window(PrimaryControls::INTERRUPT_WINDOW_EXITING, false);
            self.set_window(PrimaryControls::NMI_WINDOW_EXITING, false);
            return Ok(());
        }
        if let Some(injection) = self.reinject.take() {
            self.write_injection(injection)?;
            self.set_window(PrimaryControls::INTERRUPT_WINDOW_EXITING, !nothing_pending);
            return Ok(());
        }
        if let Some((vector, error_code)) = self.pending.exception.take() {
            let injection = match error_code {
                Some(_) if self.cr0()? & CR0_PE == 0 => {
                    EventInjection::real_mode_hardware_exception(vector)?
                }
                _ => EventInjection::hardware_exception(vector, error_code)?,
            };
            self.write_injection(injection)?;
            let more = self.pending != Pending::default();
            self.set_window(PrimaryControls::INTERRUPT_WINDOW_EXITING, more);
            return Ok(());
        }
        let state = self.interruptibility()?;
        let shadow = state
            .intersects(Interruptibility::BLOCKING_BY_STI | Interruptibility::BLOCKING_BY_MOV_SS);
        if self.pending.nmi {
            let nmi_blocked = state.contains(Interruptibility::BLOCKING_BY_NMI);
            let open = !shadow && !nmi_blocked;
            if open {
                self.pending.nmi = false;
                self.write_injection(EventInjection::nmi())?;
            }
            // Without NMI-window exiting, an interrupt window is a fair proxy only for the end
            // of an STI/MOV SS shadow (with IF = 1); blocking by NMI lasts until the guest's
            // IRET, which nothing here sees, so the NMI then waits for a later exit instead of
            // spinning on window exits.
            let nmi_window = !open && self.nmi_window;
            let proxy =
                !open && !self.nmi_window && !nmi_blocked && self.rflags()? & RFLAGS_IF != 0;
            let interrupt_window = self.pending.interrupt.is_some() || proxy;
            self.set_window(PrimaryControls::NMI_WINDOW_EXITING, nmi_window);
            self.set_window(PrimaryControls::INTERRUPT_WINDOW_EXITING, interrupt_window);
            return Ok(());
        }
        if let Some(vector) = self.pending.interrupt {
            let open = self.rflags()? & RFLAGS_IF != 0 && !shadow;
            if open {
                self.pending.interrupt = None;
                self.write_injection(EventInjection::external_interrupt(vector))?;
            }
            self.set_window(PrimaryControls::INTERRUPT_WINDOW_EXITING, !open);
        }
        Ok(())
    }
}

impl<V: VmcsWrite> ExitCore for VmxCore<V> {
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

fn segment_fields(which: SegmentName) -> [FieldEncoding; 4] {
    use guest as g;
    let (s, b, l, a) = match which {
        SegmentName::Es => (g::ES_SELECTOR, g::ES_BASE, g::ES_LIMIT, g::ES_ACCESS_RIGHTS),
        SegmentName::Cs => (g::CS_SELECTOR, g::CS_BASE, g::CS_LIMIT, g::CS_ACCESS_RIGHTS),
        SegmentName::Ss => (g::SS_SELECTOR, g::SS_BASE, g::SS_LIMIT, g::SS_ACCESS_RIGHTS),
        SegmentName::Ds => (g::DS_SELECTOR, g::DS_BASE, g::DS_LIMIT, g::DS_ACCESS_RIGHTS),
        SegmentName::Fs => (g::FS_SELECTOR, g::FS_BASE, g::FS_LIMIT, g::FS_ACCESS_RIGHTS),
        SegmentName::Gs => (g::GS_SELECTOR, g::GS_BASE, g::GS_LIMIT, g::GS_ACCESS_RIGHTS),
        SegmentName::Tr => (g::TR_SELECTOR, g::TR_BASE, g::TR_LIMIT, g::TR_ACCESS_RIGHTS),
        SegmentName::Ldtr => (
            g::LDTR_SELECTOR,
            g::LDTR_BASE,
            g::LDTR_LIMIT,
            g::LDTR_ACCESS_RIGHTS,
        ),
    };
    [s.encoding(), b.encoding(), l.encoding(), a.encoding()]
}
