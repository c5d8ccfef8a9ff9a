//! The SVM exit path over any `DerefMut<Target = Vmcb>`: exit decoding into the common form,
//! instruction skipping (nRIP, the IOIO next RIP, or the fixed length of the intercepted
//! instruction), event injection with the virtual-interrupt window, EXITINTINFO re-injection,
//! and VMCB clean bits. It runs on the processor over the vCPU's VMCB frame and in host tests
//! over a boxed `Vmcb`.
//!
//! Manual: AMD64 Architecture Programmer's Manual Volume 2: System Programming, Publication No.
//! 24593, Revision 3.42, March 2024: 15.6 "#VMEXIT", 15.7.1 "State Saved on Exit" (nRIP),
//! 15.7.2 "Intercepts During IDT Interrupt Delivery" (EXITINTINFO), 15.8 "Decode Assists",
//! 15.10.2 "IN and OUT Behavior" (EXITINFO2 = next RIP), 15.11 "MSR Intercepts", 15.12
//! "Exception Intercepts", 15.15.3 "VMCB Clean Field", 15.20 "Event Injection", 15.21.4
//! "Interrupt Shadows", 15.21.2 "Virtual Interrupt Intercept" (V_IRQ and VINTR), 15.25.6
//! "Nested versus Guest Page Faults, Fault Ordering", Appendix C "SVM Intercept Exit Codes".
//!
//! # Instruction lengths without nRIP
//! QEMU's TCG has no NRIP save. Then the IOIO exit's EXITINFO2 gives the next RIP, and the other
//! instructions this path completes have fixed encodings (CPUID `0F A2`, HLT `F4`, VMMCALL
//! `0F 01 D9`, RDMSR/WRMSR `0F 32`/`0F 30`, XSETBV `0F 01 D1`, VMRUN/VMLOAD/VMSAVE/STGI/CLGI/
//! SKINIT/INVLPGA `0F 01 D8`–`DF`, RDTSC `0F 31`, RDTSCP `0F 01 F9`). An instruction with
//! redundant prefixes would be longer; decoding guest bytes through the 2-D walker is not
//! implemented, so such an instruction (and MOV CR/INVLPG, whose length depends on the operand)
//! is reported as [`Unsupported::InstructionLength`] without nRIP.

use core::ops::DerefMut;

use hvkit_paging::GuestPhysAddr;
use hvkit_svm::exit::{IoioInfo, NpfErrorCode};
use hvkit_svm::intercept::{CrIntercepts, ExceptionIntercepts, MiscIntercepts1};
use hvkit_svm::vmcb::{CleanBits, InterruptState};
use hvkit_svm::{EventInjection, ExitCode, Vmcb};
use raw_cpuid::CpuIdResult;

use crate::cpuid::{CpuidPolicy, Vendor};
use crate::error::{Unsupported, VcpuError};
use crate::event::{Event, Pending};
use crate::exit::{
    CrAccess, CrAccessKind, EntryFailure, ExceptionExit, Exit, ExitKind, IoDirection, IoExit,
    MemoryAccess, NestedPageFault, RawExit,
};
use crate::hypercall::Hypercall;
use crate::regs::GuestRegisters;
use crate::state::{CR0_PE, CR0_PG, CR4_OSXSAVE, EFER_LMA, EFER_LME, RFLAGS_IF};
use crate::vmx::xcr0_valid;

/// The length of an intercepted instruction with a fixed encoding (see the module docs).
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

/// Counters of VMRUNs and how many re-entered with every VMCB area clean.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CleanStats {
    /// VMRUNs prepared.
    pub entries: u64,
    /// Of those, with all clean bits set (nothing but uncached fields changed).
    pub all_clean: u64,
}

/// The vendor-independent part of an SVM vCPU.
#[derive(Debug)]
pub struct SvmCore<B> {
    vmcb: B,
    /// The guest GPRs (RAX is copied to and from the VMCB around VMRUN).
    pub regs: GuestRegisters,
    last: Option<(ExitKind, ExitCode, u64, u64)>,
    pending: Pending,
    /// What the guest sees for CPUID.
    pub cpuid: CpuidPolicy,
    /// The guest's XCR0.
    pub xcr0: u64,
    /// The XCR0 bits the host supports.
    pub xcr0_supported: u64,
    nrip: bool,
    decode_assists: bool,
    window: bool,
    first_run: bool,
    stats: CleanStats,
}

impl<B: DerefMut<Target = Vmcb>> SvmCore<B> {
    /// A core over `vmcb`; `nrip` and `decode_assists` say what the processor saves on exits
    /// (CPUID Fn8000_000A_EDX bits 3 and 7).
    pub fn new(vmcb: B, nrip: bool, decode_assists: bool) -> Self {
        Self {
            vmcb,
            regs: GuestRegisters::default(),
            last: None,
            pending: Pending::default(),
            cpuid: CpuidPolicy::default(),
            xcr0: 1,
            xcr0_supported: 1,
            nrip,
            decode_assists,
            window: false,
            first_run: true,
            stats: CleanStats::default(),
        }
    }

    /// The VMCB.
    pub fn vmcb(&self) -> &Vmcb {
        &self.vmcb
    }

    /// The VMCB, mutably (its setters keep the clean bits right).
    pub fn vmcb_mut(&mut self) -> &mut Vmcb {
        &mut self.vmcb
    }

    /// Clean-bit statistics.
    #[must_use]
    pub fn clean_stats(&self) -> CleanStats {
        self.stats
    }

    /// Guest RIP.
    ///
    /// # Errors
    /// Never (the signature matches the VMX core's).
    pub fn rip(&mut self) -> Result<u64, VcpuError> {
        Ok(self.vmcb.save().rip())
    }
    /// Sets guest RIP.
    pub fn set_rip(&mut self, rip: u64) {
        self.vmcb.set_rip(rip);
    }
    /// Guest RSP.
    ///
    /// # Errors
    /// Never.
    pub fn rsp(&mut self) -> Result<u64, VcpuError> {
        Ok(self.vmcb.save().rsp())
    }
    /// Sets guest RSP.
    pub fn set_rsp(&mut self, rsp: u64) {
        self.vmcb.set_rsp(rsp);
    }
    /// Guest RFLAGS.
    ///
    /// # Errors
    /// Never.
    pub fn rflags(&mut self) -> Result<u64, VcpuError> {
        Ok(self.vmcb.save().rflags())
    }
    /// Sets guest RFLAGS.
    pub fn set_rflags(&mut self, rflags: u64) {
        self.vmcb.set_rflags(rflags);
    }
    /// Guest CR0.
    ///
    /// # Errors
    /// Never.
    pub fn cr0(&mut self) -> Result<u64, VcpuError> {
        Ok(self.vmcb.save().cr0())
    }
    /// Guest CR3.
    ///
    /// # Errors
    /// Never.
    pub fn cr3(&mut self) -> Result<u64, VcpuError> {
        Ok(self.vmcb.save().cr3())
    }
    /// Guest CR4.
    ///
    /// # Errors
    /// Never.
    pub fn cr4(&mut self) -> Result<u64, VcpuError> {
        Ok(self.vmcb.save().cr4())
    }
    /// Guest EFER (without the SVME bit the hypervisor sets).
    ///
    /// # Errors
    /// Never.
    pub fn efer(&mut self) -> Result<u64, VcpuError> {
        Ok(self.vmcb.save().efer() & !crate::state::EFER_SVME)
    }

    /// Sets CR0 (with EFER.LME, a change of CR0.PG sets or clears EFER.LMA, APM 14.6.1
    /// "Activating Long Mode").
    pub fn set_cr0(&mut self, cr0: u64) {
        let old = self.vmcb.save().cr0();
        let efer = self.vmcb.save().efer();
        if (old ^ cr0) & CR0_PG != 0 && efer & EFER_LME != 0 {
            let efer = if cr0 & CR0_PG != 0 {
                efer | EFER_LMA
            } else {
                efer & !EFER_LMA
            };
            self.vmcb.set_efer(efer);
        }
        self.vmcb.set_cr0(cr0);
    }

    /// Sets CR4.
    pub fn set_cr4(&mut self, cr4: u64) {
        self.vmcb.set_cr4(cr4);
    }

    /// Intercepts CR0 writes if `extra_cr0` is non-zero and CR4 writes if `extra_cr4` is
    /// (SVM intercepts whole registers, not bits).
    ///
    /// # Errors
    /// Never.
    pub fn set_cr_masks(&mut self, extra_cr0: u64, extra_cr4: u64) -> Result<(), VcpuError> {
        let mut cr = self.vmcb.control().intercept_cr();
        cr.set(CrIntercepts::CR0_WRITE, extra_cr0 != 0);
        cr.set(CrIntercepts::CR4_WRITE, extra_cr4 != 0);
        self.vmcb.set_intercept_cr(cr);
        Ok(())
    }

    /// Sets the exception intercepts.
    pub fn set_exception_bitmap(&mut self, bitmap: u32) {
        self.vmcb
            .set_intercept_exceptions(ExceptionIntercepts::from_bits_retain(bitmap));
    }

    /// Sets the TSC offset.
    pub fn set_tsc_offset(&mut self, offset: i64) {
        self.vmcb.set_tsc_offset(offset as u64);
    }

    /// The last exit code.
    #[must_use]
    pub fn exit_code(&self) -> ExitCode {
        self.vmcb.control().exit_code()
    }

    /// Moves RIP past the intercepted instruction and ends an interrupt shadow: nRIP when the
    /// processor saves it, EXITINFO2 for IOIO, else the instruction's fixed length.
    ///
    /// # Errors
    /// [`Unsupported::InstructionLength`] when none of these gives the length.
    pub fn skip_instruction(&mut self) -> Result<(), VcpuError> {
        let control = self.vmcb.control();
        let code = control.exit_code();
        let next_rip = control.next_rip();
        let next = if code == ExitCode::IOIO {
            control.exit_info2()
        } else if self.nrip && next_rip != 0 {
            next_rip
        } else {
            let length = fixed_length(code).ok_or(Unsupported::InstructionLength)?;
            self.vmcb.save().rip().wrapping_add(u64::from(length))
        };
        self.vmcb.set_rip(next);
        let state = self.vmcb.control().interrupt_state();
        if state.contains(InterruptState::INTERRUPT_SHADOW) {
            self.vmcb
                .set_interrupt_state(state - InterruptState::INTERRUPT_SHADOW);
        }
        Ok(())
    }

    /// Queues `event`.
    pub fn inject(&mut self, event: Event) {
        self.pending.push(event);
    }

    /// After a #VMEXIT: RAX from the VMCB, all clean bits set (every setter from here on clears
    /// its own), and the exit decoded.
    pub fn after_exit(&mut self) -> Exit {
        self.regs.rax = self.vmcb.save().rax();
        self.vmcb.mark_all_clean();
        // The injected event (if any) was delivered or is in EXITINTINFO now.
        self.vmcb.set_event_injection(EventInjection::from_bits(0));
        self.decode_exit()
    }

    /// Decodes the exit in the VMCB (call after VMRUN returns; [`after_exit`](Self::after_exit)
    /// does).
    pub fn decode_exit(&mut self) -> Exit {
        let control = self.vmcb.control();
        let code = control.exit_code();
        let (info1, info2) = (control.exit_info1(), control.exit_info2());
        let raw = RawExit::Svm {
            code,
            info1,
            info2,
            exit_int_info: control.exit_int_info().bits(),
        };
        let r = &self.regs;
        let gpr = |info1: u64| {
            (self.decode_assists && info1 & (1 << 63) != 0).then_some((info1 & 0xf) as u8)
        };
        let kind = if code.is_vmrun_failure() {
            ExitKind::EntryFailure(EntryFailure::VmrunFailed(code.normalized()))
        } else if let Some(vector) = code.exception_vector() {
            let error_code = hvkit_vmx::exit::EventInjection::exception_has_error_code(vector)
                .then_some(info1 as u32);
            ExitKind::Exception(ExceptionExit {
                vector,
                error_code,
                detail: (vector == 14).then_some(info2),
            })
        } else if let Some(cr) = code.cr_number() {
            let kind = if code.0 >= ExitCode::CR0_WRITE.0 {
                CrAccessKind::Write { gpr: gpr(info1) }
            } else {
                CrAccessKind::Read { gpr: gpr(info1) }
            };
            ExitKind::CrAccess(CrAccess { cr, kind })
        } else {
            match code {
                ExitCode::CPUID => ExitKind::Cpuid {
                    leaf: r.rax as u32,
                    subleaf: r.rcx as u32,
                },
                ExitCode::HLT => ExitKind::Hlt,
                ExitCode::VMMCALL => ExitKind::Hypercall(Hypercall::from_registers(r)),
                ExitCode::MSR if info1 == 1 => ExitKind::MsrWrite {
                    msr: r.rcx as u32,
                    value: (r.rdx << 32) | (r.rax & 0xffff_ffff),
                },
                ExitCode::MSR => ExitKind::MsrRead { msr: r.rcx as u32 },
                ExitCode::XSETBV => ExitKind::Xsetbv {
                    xcr: r.rcx as u32,
                    value: (r.rdx << 32) | (r.rax & 0xffff_ffff),
                },
                ExitCode::IOIO => match IoioInfo::new(info1, info2) {
                    Ok(io) => {
                        let size = io.size().bytes();
                        let direction = if io.is_in() {
                            IoDirection::In
                        } else {
                            IoDirection::Out
                        };
                        let data = (direction == IoDirection::Out && !io.is_string())
                            .then(|| (r.rax & size_mask(size)) as u32);
                        ExitKind::Io(IoExit {
                            port: io.port(),
                            size,
                            direction,
                            string: io.is_string(),
                            rep: io.is_rep(),
                            data,
                        })
                    }
                    Err(_) => ExitKind::Other,
                },
                ExitCode::NPF => {
                    let e = NpfErrorCode::from_bits_retain(info1);
                    let execute = e.contains(NpfErrorCode::EXECUTE);
                    let write = e.contains(NpfErrorCode::WRITE);
                    ExitKind::NestedPageFault(NestedPageFault {
                        gpa: GuestPhysAddr::new_truncate(info2),
                        access: MemoryAccess {
                            read: !write && !execute,
                            write,
                            execute,
                            present: e.contains(NpfErrorCode::PRESENT),
                        },
                        linear_address: None,
                        during_walk: e.contains(NpfErrorCode::PAGE_TABLE_WALK),
                        misconfiguration: e.contains(NpfErrorCode::RESERVED_BIT),
                    })
                }
                ExitCode::INVLPG => ExitKind::Invlpg {
                    linear_address: if self.decode_assists { info1 } else { 0 },
                },
                ExitCode::INIT => ExitKind::Init,
                ExitCode::INTR => ExitKind::ExternalInterrupt,
                ExitCode::VINTR => ExitKind::InterruptWindow,
                ExitCode::SHUTDOWN => ExitKind::Shutdown,
                ExitCode::VMRUN
                | ExitCode::VMLOAD
                | ExitCode::VMSAVE
                | ExitCode::STGI
                | ExitCode::CLGI
                | ExitCode::SKINIT
                | ExitCode::INVLPGA => ExitKind::VirtualizationInstruction,
                _ => ExitKind::Other,
            }
        };
        self.last = Some((kind, code, info1, info2));
        Exit { kind, raw }
    }

    fn last_kind(&self) -> Option<ExitKind> {
        self.last.map(|l| l.0)
    }

    /// Answers CPUID through the policy (`host` runs the host's CPUID) and moves on.
    ///
    /// # Errors
    /// [`VcpuError::WrongExit`].
    pub fn complete_cpuid(
        &mut self,
        host: impl FnOnce(u32, u32) -> CpuIdResult,
    ) -> Result<(), VcpuError> {
        let Some(ExitKind::Cpuid { leaf, subleaf }) = self.last_kind() else {
            return Err(VcpuError::WrongExit("CPUID"));
        };
        let osxsave = self.vmcb.save().cr4() & CR4_OSXSAVE != 0;
        let r = self
            .cpuid
            .apply(leaf, subleaf, host(leaf, subleaf), osxsave, Vendor::Amd);
        self.regs.rax = u64::from(r.eax);
        self.regs.rbx = u64::from(r.ebx);
        self.regs.rcx = u64::from(r.ecx);
        self.regs.rdx = u64::from(r.edx);
        self.skip_instruction()
    }

    /// Answers a hypercall with `result` in RAX and moves on.
    ///
    /// # Errors
    /// [`VcpuError::WrongExit`].
    pub fn complete_hypercall(&mut self, result: u64) -> Result<(), VcpuError> {
        if !matches!(self.last_kind(), Some(ExitKind::Hypercall(_))) {
            return Err(VcpuError::WrongExit("a hypercall"));
        }
        self.regs.rax = result;
        self.skip_instruction()
    }

    /// Answers IN with `value` (or completes OUT) and moves on (to EXITINFO2).
    ///
    /// # Errors
    /// [`VcpuError::WrongExit`] (also for INS/OUTS).
    pub fn complete_io(&mut self, value: u32) -> Result<(), VcpuError> {
        let Some(ExitKind::Io(io)) = self.last_kind() else {
            return Err(VcpuError::WrongExit("IN or OUT"));
        };
        if io.string {
            return Err(VcpuError::WrongExit("IN or OUT (not INS/OUTS)"));
        }
        if io.direction == IoDirection::In {
            let mask = size_mask(io.size);
            self.regs.rax = (self.regs.rax & !mask) | (u64::from(value) & mask);
        }
        self.skip_instruction()
    }

    /// Answers RDMSR with `value` (or completes WRMSR) and moves on.
    ///
    /// # Errors
    /// [`VcpuError::WrongExit`].
    pub fn complete_msr(&mut self, value: u64) -> Result<(), VcpuError> {
        match self.last_kind() {
            Some(ExitKind::MsrRead { .. }) => {
                self.regs.rax = value & 0xffff_ffff;
                self.regs.rdx = value >> 32;
            }
            Some(ExitKind::MsrWrite { .. }) => {}
            _ => return Err(VcpuError::WrongExit("RDMSR or WRMSR")),
        }
        self.skip_instruction()
    }

    /// The architectural default for the last exit (as on VMX); returns whether it handled it.
    ///
    /// # Errors
    /// [`Unsupported::InstructionLength`] when the instruction cannot be skipped.
    pub fn handle_default(
        &mut self,
        host: impl FnOnce(u32, u32) -> CpuIdResult,
    ) -> Result<bool, VcpuError> {
        let Some(kind) = self.last_kind() else {
            return Ok(false);
        };
        match kind {
            ExitKind::Cpuid { .. } => self.complete_cpuid(host)?,
            ExitKind::Hypercall(call) => match call.builtin_result() {
                Some(result) => self.complete_hypercall(result)?,
                None => return Ok(false),
            },
            ExitKind::Xsetbv { xcr, value } => {
                if xcr == 0 && xcr0_valid(value, self.xcr0_supported) {
                    self.xcr0 = value;
                    self.skip_instruction()?;
                } else {
                    self.inject(Event::GP0);
                }
            }
            ExitKind::CrAccess(CrAccess {
                cr: cr @ (0 | 4),
                kind: CrAccessKind::Write { gpr: Some(gpr) },
            }) => {
                let value = match self.regs.get(gpr) {
                    Some(v) => v,
                    None => self.vmcb.save().rsp(),
                };
                if cr == 0 {
                    if value >> 32 != 0 || (value & CR0_PG != 0 && value & CR0_PE == 0) {
                        self.inject(Event::GP0);
                        return Ok(true);
                    }
                    self.set_cr0(value);
                } else {
                    self.set_cr4(value);
                }
                // MOV CR is 3 bytes (0F 22 /r) plus an optional REX prefix: only nRIP says.
                self.skip_instruction()?;
            }
            ExitKind::VirtualizationInstruction => self.inject(Event::UD),
            ExitKind::MsrWrite {
                msr: 0xc000_0080,
                value,
            } => {
                // EFER: SCE 0, LME 8, LMA 10, NXE 11, SVME 12, LMSLE 13, FFXSR 14, TCE 15 and
                // the later bits the processor checks itself; keep SVME set (APM 15.5.1).
                if value & !0xff01 != 0 {
                    self.inject(Event::GP0);
                } else {
                    let lma = self.vmcb.save().efer() & EFER_LMA;
                    let efer = (value & !EFER_LMA) | lma | crate::state::EFER_SVME;
                    self.vmcb.set_efer(efer);
                    self.skip_instruction()?;
                }
            }
            ExitKind::MsrRead { .. } | ExitKind::MsrWrite { .. } => self.inject(Event::GP0),
            ExitKind::InterruptWindow => {}
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Delivers pending events (EVENTINJ, or the V_IRQ window) and RAX; call right before VMRUN.
    pub fn prepare_entry(&mut self) {
        if !self.vmcb.reinject_interrupted_event() {
            self.deliver_events();
        }
        self.vmcb.set_rax(self.regs.rax);
        if self.first_run {
            self.vmcb.mark_all_dirty();
            self.first_run = false;
        }
        self.stats.entries += 1;
        if self.vmcb.clean_bits().contains(CleanBits::all()) {
            self.stats.all_clean += 1;
        }
        self.last = None;
    }

    fn set_window(&mut self, on: bool) {
        if self.window == on {
            return;
        }
        self.window = on;
        let vintr = self.vmcb.control().virtual_interrupt();
        self.vmcb
            .set_virtual_interrupt(vintr.with_v_irq(on).with_v_ign_tpr(on));
        let mut misc = self.vmcb.control().intercept_misc1();
        misc.set(MiscIntercepts1::VINTR, on);
        self.vmcb.set_intercept_misc1(misc);
    }

    fn deliver_events(&mut self) {
        if let Some((vector, error_code)) = self.pending.exception.take() {
            let error_code = error_code.filter(|_| self.vmcb.save().cr0() & CR0_PE != 0);
            self.vmcb
                .set_event_injection(EventInjection::exception(vector, error_code));
        } else if self.pending.nmi {
            self.pending.nmi = false;
            self.vmcb.set_event_injection(EventInjection::nmi());
        } else if let Some(vector) = self.pending.interrupt {
            let shadow = self
                .vmcb
                .control()
                .interrupt_state()
                .contains(InterruptState::INTERRUPT_SHADOW);
            if self.vmcb.save().rflags() & RFLAGS_IF != 0 && !shadow {
                self.pending.interrupt = None;
                self.vmcb
                    .set_event_injection(EventInjection::interrupt(vector));
            }
        }
        let waiting = self.pending != crate::event::Pending::default();
        self.set_window(waiting);
    }
}

const fn size_mask(size: u8) -> u64 {
    match size {
        1 => 0xff,
        2 => 0xffff,
        _ => 0xffff_ffff,
    }
}
