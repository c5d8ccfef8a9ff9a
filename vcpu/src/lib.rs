//! hvkit-vcpu: one vCPU API over Intel VT-x and AMD-V.
//!
//! A [`Vcpu`] picks VMX or SVM from CPUID when it is created, builds the VMCS or VMCB from a
//! typed [`state::GuestState`], maps the guest's RAM with EPT or nested paging from a
//! [`memory::MemoryMap`], and [`Vcpu::run`] enters the guest and returns the next [`Exit`]: a
//! common [`ExitKind`] (CPUID, I/O, MSR, HLT, hypercall, nested-page fault, exception, CR
//! access, INVLPG, XSETBV, INIT/SIPI, external interrupt, interrupt window, shutdown, entry
//! failure, …) plus the vendor's [`RawExit`]. Everything the vCPU needs from its environment —
//! frames, address translation, CPUs, logging — comes from a [`Platform`].
//!
//! Manuals followed: Intel® 64 and IA-32 Architectures Software Developer's Manual, Combined
//! Volumes, Order Number 325462-086US, December 2024 (Vol. 3C Chapters 25–29 and Appendix C);
//! AMD64 Architecture Programmer's Manual Volume 2: System Programming, Publication No. 24593,
//! Revision 3.42, March 2024 (Chapter 15). Each module names its sections.
//!
//! | module | what |
//! |---|---|
//! | [`platform`] | the `unsafe trait` [`Platform`], owned frame runs, the adapter to `hvkit-paging` |
//! | `host` (feature `host`) | `HostPlatform`: a heap-backed platform for tests that catches leaks |
//! | [`state`], [`regs`] | the typed initial guest state (real, protected, long mode) and the GPRs of the world switch |
//! | `capture` (x86-64) | the running CPU's state: host state for the VMCS, "blue-pill" guest state |
//! | [`exit`] | [`Exit`], [`ExitKind`], [`RawExit`] |
//! | [`event`] | [`Event`]: exceptions with error codes, NMIs, interrupts; windows and re-injection |
//! | [`cpuid`] | [`CpuidPolicy`]: hypervisor bit, VMX/SVM hidden, the hvkit leaves |
//! | [`hypercall`] | the VMCALL/VMMCALL ABI and the guest side ([`hypercall::guest`]) |
//! | [`memory`] | [`memory::MemoryMap`] (RAM, MMIO, reserved) and [`memory::NestedPaging`] (EPT/NPT) |
//! | [`bitmap`] | the vendor crates' I/O and MSR intercept bitmaps (`hvkit_vmx::IoBitmaps`/`MsrBitmap`, `hvkit_svm::Iopm`/`Msrpm`) in frames the vCPU owns |
//! | [`vmx`] | the VT-x backend: [`vmx::VmxCore`] (exit path over any `VmcsRead + VmcsWrite`), VMCS set-up, world switch, hardware vCPU |
//! | [`svm`] | the AMD-V backend: [`svm::SvmCore`] (exit path over any VMCB), VMCB set-up, run loop |
//! | `xsave` (x86-64) | guest/host x87/SSE/AVX state and XCR0 kept apart |
//! | [`string_io`] | INS/OUTS emulation through the 2-D walker |
//!
//! # A run loop (on the processor)
//!
//! ```no_run
//! # #[cfg(target_arch = "x86_64")]
//! # mod demo {
//! use hvkit_paging::GuestPhysAddr;
//! use hvkit_vcpu::exit::IoDirection;
//! use hvkit_vcpu::state::GuestState;
//! use hvkit_vcpu::{Event, ExitKind, Platform, Vcpu, VcpuConfig, VcpuError};
//!
//! /// Runs a flat 32-bit guest image at 1 MiB until it writes the debug-exit port 0xf4.
//! pub fn run_guest<P: Platform>(platform: &P, image: &[u8]) -> Result<u32, VcpuError> {
//!     let config = VcpuConfig::new(GuestState::protected_mode_flat(0x10_0000, 0x9_0000));
//!     // SAFETY: ring 0 on the processor that runs the guest, nothing else uses VT-x/AMD-V
//!     // here, the host's GDT/CR/MSR state stays put, and the guest may use every I/O port.
//!     let mut vcpu = unsafe { Vcpu::new(platform, &config) }?;
//!     vcpu.add_ram(GuestPhysAddr::ZERO, 16 << 20)?;
//!     vcpu.write_guest(GuestPhysAddr::new_truncate(0x10_0000), image)?;
//!     vcpu.intercept_io(0xf4..=0xf4, true);
//!     loop {
//!         let exit = vcpu.run()?;
//!         // CPUID, hvkit's hypercalls, XSETBV, #UD for VMXON/VMRUN, #GP for intercepted MSRs.
//!         if vcpu.handle_default()? {
//!             continue;
//!         }
//!         match exit.kind {
//!             ExitKind::Io(io) if io.port == 0xf4 && io.direction == IoDirection::Out => {
//!                 return Ok(io.data.unwrap_or(0));
//!             }
//!             ExitKind::Io(_) => vcpu.complete_io(u32::MAX)?,
//!             ExitKind::Hlt => vcpu.skip_instruction()?,
//!             ExitKind::Hypercall(_) => vcpu.complete_hypercall(hvkit_vcpu::hypercall::UNKNOWN)?,
//!             ExitKind::NestedPageFault(fault) => {
//!                 // Map on demand (the guest retries the access), or give up.
//!                 let page = GuestPhysAddr::new_truncate(fault.gpa.as_u64() & !0xfff);
//!                 vcpu.add_ram(page, 4096)?;
//!             }
//!             ExitKind::Shutdown | ExitKind::EntryFailure(_) => return Ok(u32::MAX),
//!             _ => vcpu.inject(Event::UD),
//!         }
//!     }
//! }
//! # }
//! ```
//!
//! # The same exit path in a host test
//!
//! The exit handling is generic over the VMCS access (`VmcsRead + VmcsWrite`) and over the VMCB,
//! so it runs on the host with `hvkit-vmx`'s `SoftVmcs`, and with `Counting` it measures the VMCS
//! traffic of an exit. A CPUID exit handled and resumed costs 4 VMREADs and 1 VMWRITE:
//!
//! ```
//! use hvkit_vcpu::vmx::{CrPolicy, VmxCore};
//! use hvkit_vcpu::ExitKind;
//! use hvkit_vmx::fields::{exit_info, guest};
//! use hvkit_vmx::vmcs::{Counting, SoftVmcs, VmcsWrite};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut soft = SoftVmcs::new();
//! soft.write(guest::RIP, 0x1000)?;
//! soft.write(guest::INTERRUPTIBILITY_STATE, 0)?;
//! // What the processor stores on a VM exit for CPUID (reason 10, 2 bytes long).
//! soft.set_exit_info(exit_info::EXIT_REASON, 10);
//! soft.set_exit_info(exit_info::VM_EXIT_INSTRUCTION_LENGTH, 2);
//!
//! let mut core = VmxCore::new(Counting::new(soft), 0, false, CrPolicy::default());
//! core.regs.rax = 0x4000_0000; // the hvkit signature leaf
//! let exit = core.decode_exit()?;
//! assert_eq!(exit.kind, ExitKind::Cpuid { leaf: 0x4000_0000, subleaf: 0 });
//! core.complete_cpuid(|_, _| raw_cpuid::CpuIdResult { eax: 0, ebx: 0, ecx: 0, edx: 0 })?;
//! core.prepare_entry()?;
//! assert_eq!(core.regs.rbx.to_le_bytes()[..4], *b"hvki");
//! let traffic = core.vmcs().counts();
//! assert_eq!((traffic.reads, traffic.writes), (4, 1));
//! # Ok(())
//! # }
//! ```
//!
//! `cargo bench -p hvkit-vcpu --bench vmcs_traffic` prints the figures of every common exit:
//! VMREADs and VMWRITEs on VMX, and the VMCB areas left clean for the next VMRUN on SVM. The
//! host tests `vmcs_traffic` and `svm_clean_bits` hold them to their budgets.
//!
//! # Proven on emulated hardware
//! `cargo xtask e2e` (part of `cargo xtask test`) boots `examples/baremetal` under Bochs 2.7
//! (`corei7_skylake_x`: VMX with EPT; `trinity_apu`: SVM with NRIP save) and QEMU 7.2 TCG
//! (`-cpu max`: SVM with NPT, no NRIP save), and runs each guest of `examples/guests` through
//! this crate's [`Vcpu`], the same host code on both vendors, on vmx/bochs, svm/qemu and
//! svm/bochs (the case names are those of `tests/tests/e2e.rs`; `cargo xtask e2e <case>` runs
//! one):
//! - `cpuid`, `io`, `msr`, `hlt`, `hypercall`: the hvkit CPUID leaves; IN/OUT of every size and
//!   the string forms through [`Vcpu::complete_string_io`]; intercepted and passed-through MSRs
//!   and #GP for the MSRs hvkit keeps; HLT; PING, user and unknown hypercalls (VMCALL or VMMCALL
//!   as leaf 0x4000_0001 says);
//! - `npf`: reads and writes of unmapped memory answered by [`Vcpu::add_ram`] on demand;
//! - `exception`: #DE, #GP with an error code and #PF with CR2 injected by the host
//!   ([`Vcpu::set_cr2`], [`Vcpu::inject`]) and taken by the guest's IDT; an interrupt queued
//!   while IF = 0 and delivered at the interrupt window after STI and its shadow;
//! - `realmode`, `paging`: a real-mode guest (unrestricted guest on VMX) and a guest that builds
//!   its own 4-level tables, enters long mode and switches CR3;
//! - `bluepill`: the guest is the host's own state from `capture::current_state`, running the
//!   host's code through an identity EPT/NPT; Rust code in the guest finds hvkit and calls PING
//!   with [`hypercall::guest`];
//! - `hostile`, `hostile-loop-*`, `entryfail`: a write outside the guest's memory (a nested-page
//!   fault to the caller, the host frame at that address intact), VMXON or VMRUN (#UD), a triple
//!   fault ([`ExitKind::Shutdown`]), then another guest on the same host; a long CPUID loop with
//!   no frame allocated per exit and no slowdown; a guest state the processor refuses
//!   ([`ExitKind::EntryFailure`], twice);
//! - `extint`, `fpu`, `fpu-legacy`: external-interrupt exiting
//!   ([`VcpuConfig::external_interrupt_exiting`]); guest and host XMM registers and XCR0 kept
//!   apart across exits, with and without the guest using XSAVE;
//! - `exitcost`: CPUID round trips timed with the guest's TSC, printed on the e2e line (a
//!   relative figure: 800–1100 cycles under Bochs, 60 000–160 000 under QEMU TCG depending on
//!   the host's load; emulators, not hardware).
//!
//! Bochs 2.7's SVM model does not turn a guest triple fault into #VMEXIT(SHUTDOWN) (it panics, or
//! resets the machine with `reset_on_triple_fault=1`), so the `hostile` run skips that step there
//! (the runner passes `caps=no-shutdown-exit`); Bochs' SVM also does not load CR2 from the VMCB, which
//! [`Vcpu::set_cr2`] works around. The Linux kernel module (`examples/linux-module`, `cargo xtask
//! linux-module`) runs the same API as a blue pill under every CPU of a running Linux kernel.
//!
//! # Guarantees and limits
//! - Guest behaviour never panics the host: unknown exits are [`ExitKind::Other`], malformed
//!   values are data, and the architectural answer (#UD, #GP) is one call away
//!   ([`Vcpu::handle_default`]). VMX and SVM instructions in the guest exit and get #UD; the
//!   VMX capability MSRs, VM_CR and VM_HSAVE_PA are intercepted.
//! - One vCPU per processor: [`Vcpu::new`] turns VMX or SVM on (VMXON, EFER.SVME) and dropping
//!   the vCPU turns it off. The vCPU is bound to its processor.
//! - Only EPT / nested paging: a processor without them gets [`Unsupported::NoEpt`] /
//!   [`Unsupported::NoNestedPaging`]; shadow paging is not implemented here.
//! - On SVM without NRIP save (QEMU TCG) the next RIP comes from EXITINFO2 for IOIO and
//!   otherwise from decoding the guest instruction (fetched through the 2-D walker): with the
//!   default feature `decoder` by `iced-x86`, which builds its tables on the heap, so a `no_std`
//!   binary with that feature needs a `#[global_allocator]`; with `default-features = false` by
//!   the allocation-free decoder of the intercepted instructions in `svm::decode`.
//! - The guest's DR0–DR3 and syscall MSRs (STAR/LSTAR/…) are not switched on VMX (the host must
//!   not depend on them while it runs guests); CR2 is the processor's own and is loaded on
//!   request ([`Vcpu::set_cr2`]). x87/SSE/AVX state and XCR0 are switched on every entry/exit.
//! - Skipping an instruction ends an STI/MOV SS shadow but does not raise a pending single-step
//!   trap for RFLAGS.TF (that would cost another VMREAD on every exit).
//! - External interrupts go straight to the guest unless
//!   [`VcpuConfig::external_interrupt_exiting`] is set: a host that leaves its PIC or APIC
//!   unmasked gives its timer interrupts to the guest.
#![cfg_attr(not(test), no_std)]

#[cfg(feature = "host")]
extern crate std;

pub mod cpuid;
pub mod exit;
#[cfg(any(test, feature = "host"))]
pub mod host;
pub mod hypercall;
pub mod memory;
pub mod platform;
pub mod regs;
pub mod state;

pub use cpuid::CpuidPolicy;
pub use exit::{Exit, ExitCounts, ExitKind, RawExit};
pub use platform::{LogLevel, Platform};
pub use regs::GuestRegisters;
pub mod bitmap;
#[cfg(target_arch = "x86_64")]
pub mod capture;
mod common;
mod copy;
pub mod error;
pub mod event;
pub mod string_io;
pub mod svm;
#[cfg(target_arch = "x86_64")]
mod vcpu;
pub mod vmx;
#[cfg(target_arch = "x86_64")]
pub mod xsave;

pub use error::{Unsupported, VcpuError};
pub use event::Event;
#[cfg(target_arch = "x86_64")]
pub use vcpu::{MAX_OWNED_RAM, Vcpu, VcpuConfig, detect_vendor};
