//! hvkit-svm: the typed AMD-V (SVM) layer for `no_std` hypervisors.
//!
//! Everything here follows *AMD64 Architecture Programmer's Manual Volume 2: System
//! Programming*, Publication No. 24593, **Revision 3.42, March 2024** ("APM"), Chapter 15
//! "Secure Virtual Machine" and Appendices B "Layout of VMCB" and C "SVM Intercept Exit Codes".
//! Each module names the sections it implements.
//!
//! | module | what |
//! |---|---|
//! | [`vmcb`] | the VMCB (Tables B-1, B-2) with every offset pinned, typed getters, setters that keep the clean bits right |
//! | [`intercept`] | the six intercept vectors as `bitflags` |
//! | [`exit`] | open [`ExitCode`] (Table C-1), decoded EXITINFO ([`Exit`]) |
//! | [`event`] | EVENTINJ / EXITINTINFO |
//! | [`iopm`], [`msrpm`] | the I/O and MSR permission maps |
//! | [`asid`] | per-CPU ASID allocator with generations |
//! | [`features`] | CPUID Fn8000_000A |
//! | [`enable`] | enabling/disabling SVM against the [`enable::Cpuid`] and [`enable::SvmMsrs`] traits |
//! | [`check`] | the VMRUN consistency checks of 15.5.1 as a pure function |
//! | [`setup`] | reset-state and flat 64-bit guest presets, baseline intercepts, event re-injection |
//! | [`regs`], [`segment`] | guest GPRs around VMRUN; VMCB segment registers and attributes |
//! | `instructions` | VMRUN, VMLOAD, VMSAVE, STGI, CLGI, INVLPGA, VMMCALL (x86-64 only; the only `unsafe`) |
//!
//! # Walkthrough: a VMCB for a 64-bit guest
//! This part runs on any host: it builds the VMCB, the permission maps, and checks the result
//! the way VMRUN will.
//!
//! ```
//! use hvkit_svm::check::{check_vmcb, Rule};
//! use hvkit_svm::exit::{Exit, ExitCode};
//! use hvkit_svm::features::HostCapabilities;
//! use hvkit_svm::intercept::{MiscIntercepts1, MiscIntercepts2};
//! use hvkit_svm::iopm::Iopm;
//! use hvkit_svm::msrpm::{MsrIntercept, Msrpm};
//! use hvkit_svm::segment::{Segment, SegmentAttributes};
//! use hvkit_svm::vmcb::{CleanBits, NestedControl, Vmcb};
//! use x86_64::PhysAddr;
//!
//! // Physical addresses come from your frame allocator; these are examples.
//! let (iopm_pa, msrpm_pa, npt_root) = (0x20_0000, 0x20_3000, 0x30_0000);
//!
//! let mut iopm = Iopm::intercept_none();
//! iopm.set_range(0x3F8..=0x3FF, true)?; // COM1
//! let mut msrpm = Msrpm::intercept_none();
//! msrpm.set(0xC000_0080, MsrIntercept::Write)?; // EFER writes
//!
//! let mut vmcb = Vmcb::new();
//! vmcb.set_intercept_misc1(
//!     MiscIntercepts1::CPUID | MiscIntercepts1::HLT | MiscIntercepts1::IOIO_PROT
//!         | MiscIntercepts1::MSR_PROT | MiscIntercepts1::SHUTDOWN,
//! );
//! vmcb.set_intercept_misc2(MiscIntercepts2::VMRUN | MiscIntercepts2::VMMCALL);
//! vmcb.set_iopm_base_pa(PhysAddr::new(iopm_pa));
//! vmcb.set_msrpm_base_pa(PhysAddr::new(msrpm_pa));
//! vmcb.set_guest_asid(1);
//! vmcb.set_nested_control(NestedControl::NP_ENABLE);
//! vmcb.set_nested_cr3(PhysAddr::new(npt_root));
//! vmcb.set_g_pat(0x0007_0406_0007_0406);
//!
//! // 64-bit guest state: EFER.SVME|LMA|LME, CR0.PG|WP|PE, CR4.PAE, flat segments.
//! vmcb.set_efer((1 << 12) | (1 << 10) | (1 << 8));
//! vmcb.set_cr0((1 << 31) | (1 << 16) | (1 << 5) | (1 << 4) | 1);
//! vmcb.set_cr4(1 << 5);
//! vmcb.set_cr3(0x1000);
//! vmcb.set_cs(Segment::new(0x08, SegmentAttributes::code64(0), 0xFFFF_FFFF, 0));
//! let data = Segment::new(0x10, SegmentAttributes::data(0), 0xFFFF_FFFF, 0);
//! vmcb.set_ss(data);
//! vmcb.set_ds(data);
//! vmcb.set_es(data);
//! vmcb.set_tr(Segment::new(0x18, SegmentAttributes::tss_busy(), 0x67, 0));
//! vmcb.set_gdtr(Segment::table(0x5000, 0x1F));
//! vmcb.set_dr6(0xFFFF_0FF0);
//! vmcb.set_dr7(0x400);
//! vmcb.set_rflags(0x2);
//! vmcb.set_rip(0x10_0000);
//! vmcb.set_rsp(0x20_0000);
//!
//! // The checks VMRUN makes (QEMU's TCG skips most of them; real CPUs do not).
//! let caps = HostCapabilities::from_cpuid([1, 16, 0, 1], 40, 1 << 29); // raw CPUID values
//! assert!(check_vmcb(&vmcb, &caps).is_empty());
//! vmcb.set_guest_asid(0);
//! assert!(check_vmcb(&vmcb, &caps).contains(Rule::AsidZero));
//! vmcb.set_guest_asid(1);
//!
//! // After a #VMEXIT: mark everything clean, then every setter you call re-dirties its group.
//! vmcb.mark_all_clean();
//! vmcb.set_cr3(0x2000);
//! assert_eq!(vmcb.clean_bits(), CleanBits::all() - CleanBits::CRX);
//!
//! // Decoding an exit (here a fake IOIO exit: OUT DX, AL to port 3F8h).
//! vmcb.set_exit_code(ExitCode::IOIO);
//! vmcb.set_exit_info1(0x03F8_0000 | (1 << 9) | (1 << 4));
//! vmcb.set_exit_info2(0x10_0001);
//! match vmcb.control().decode_exit()? {
//!     Exit::Io(io) => {
//!         assert_eq!((io.port(), io.is_in(), io.size().bytes()), (0x3F8, false, 1));
//!         vmcb.skip_instruction(io.next_rip()); // EXITINFO2 = next RIP, even without NRIP save
//!     }
//!     other => panic!("unexpected {other:?}"),
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # What VMRUN does with it
//! On hardware (ring 0, x86-64 only) the run loop enables SVM once per CPU and then enters
//! the guest. `VMEXIT_INVALID` compares only its low 32 bits ([`ExitCode::is_invalid`]),
//! because QEMU writes it as `0x0000_0000_FFFF_FFFF`.
//!
//! ```no_run
//! # #[cfg(target_arch = "x86_64")]
//! # fn demo(host_save_pa: x86_64::PhysAddr, vmcb: &mut hvkit_svm::vmcb::Vmcb,
//! #         vmcb_pa: x86_64::PhysAddr, host_vmcb: &mut hvkit_svm::vmcb::Vmcb,
//! #         host_vmcb_pa: x86_64::PhysAddr) -> Result<(), hvkit_svm::enable::EnableError> {
//! use hvkit_svm::enable::enable_svm;
//! use hvkit_svm::exit::{Exit, ExitCode};
//! use hvkit_svm::instructions::{clgi, stgi, vmload, vmrun, vmsave, HardwareCpuid, HardwareSvmMsrs};
//! use hvkit_svm::regs::VmrunGprs;
//!
//! // SAFETY: ring 0, this code owns SVM on this CPU.
//! let mut msrs = unsafe { HardwareSvmMsrs::new() };
//! let features = enable_svm(&HardwareCpuid, &mut msrs, host_save_pa)?;
//! let mut regs = VmrunGprs::default();
//! vmcb.mark_all_dirty(); // first run on this CPU
//! loop {
//!     // SAFETY: SVM is enabled, the VMCB is checked and owned by this CPU, addresses match.
//!     unsafe {
//!         clgi();
//!         vmsave(host_vmcb, host_vmcb_pa);
//!         vmload(vmcb, vmcb_pa);
//!         vmrun(vmcb, vmcb_pa, &mut regs);
//!         vmsave(vmcb, vmcb_pa);
//!         vmload(host_vmcb, host_vmcb_pa);
//!         stgi();
//!     }
//!     vmcb.mark_all_clean();
//!     if vmcb.control().exit_code().is_invalid() {
//!         break; // run hvkit_svm::check::check_vmcb to see why
//!     }
//!     match vmcb.control().decode_exit() {
//!         Ok(Exit::Other { code: ExitCode::HLT, .. }) => break,
//!         _ => { /* handle, then set RIP to nRIP or the decoded next RIP */ }
//!     }
//! }
//! # let _ = features;
//! # Ok(())
//! # }
//! ```
//!
//! # Measured under QEMU 7.2 TCG (`-cpu max`)
//! The e2e case `smoke` (`examples/baremetal/src/svm_smoke.rs`; `cargo xtask e2e smoke` runs it
//! on svm/qemu, svm/qemu-nonpt and svm/bochs inside `cargo xtask test`) runs this crate's
//! walkthrough run loop: [`enable::enable_svm`], [`check::check_vmcb`], three VMCBs the processor
//! must refuse (ASID 0, EFER.SVME clear, CR0.NW without CD), [`instructions::vmrun`] with
//! VMLOAD/VMSAVE around it, and CPUID, IOIO, NPF (a page taken out of the nested table and
//! mapped again) and VMMCALL exits, with the guest GPRs round-tripping through
//! [`regs::VmrunGprs`]. What QEMU 7.2.22 TCG showed when the crate was written (the CPUID values
//! are the fixtures of `tests/tests/svm_capabilities.rs`; the 17-VMCB comparison was measured
//! once and is not repeated by the suite, which keeps the three above):
//! - CPUID Fn8000_000A: revision 1, 16 ASIDs, EDX = NP | VGIF | NestedVirtVmcbAddrChk (no NRIP
//!   save, no clean bits, no decode assists); nRIP reads 0 on every exit.
//! - IOIO EXITINFO1 for `OUT 80h, AL` is `0x0080_0010`: SZ8 but *no* address-size bit, so
//!   [`exit::IoioInfo::address_size`] is an `Option`. EXITINFO2 holds the next RIP.
//! - With nested paging (identity NPT of 0–3 GiB, 2 MiB pages), a guest read of 0xC000_0000
//!   gives VMEXIT_NPF with EXITINFO1 = `0x1_0000_0004` (US | final-translation bit 32, P = 0)
//!   and EXITINFO2 = the guest physical address; no guest instruction bytes.
//! - VMEXIT_INVALID arrives as `0x0000_0000_FFFF_FFFF`.
//! - For 17 VMCBs that [`check::check_vmcb`] rejects (ASID 0, VMRUN intercept clear, CR0\[32\],
//!   CR0.NW without CD, CR3 above the 40-bit physical width, CR4 bit 13, EFER bits 9 and 30,
//!   DR6/DR7 high bits, long mode without PAE or PE, CS.L with CS.D, IOPM past the physical
//!   width, EVENTINJ type 1 and exception vector 2, CR4 bit 24) QEMU also returned
//!   VMEXIT_INVALID, except for CR4 bit 24, which `-cpu max` accepts (QEMU derives reserved
//!   bits from the CPU model; `-cpu qemu64,+svm` rejects it) and the APM reserves.
//! - With `-cpu qemu64,+svm` (no NPT in CPUID) QEMU still honoured NP_ENABLE.
//!
//! # What is not here
//! SEV/SEV-ES/SEV-SNP (the VMSA layout of Table B-4, GHCB protocol), AVIC table formats, and
//! nested page tables (see `hvkit-paging`) are out of scope; their VMCB fields are present and
//! pinned so a hypervisor can still use them raw.
#![cfg_attr(not(test), no_std)]

pub mod asid;
pub mod check;
pub mod enable;
pub mod event;
pub mod exit;
pub mod features;
#[cfg(target_arch = "x86_64")]
pub mod instructions;
pub mod intercept;
pub mod iopm;
pub mod msrpm;
pub mod regs;
pub mod segment;
pub mod setup;
pub mod vmcb;

pub use check::{Rule, Violations, check_vmcb};
pub use event::EventInjection;
pub use exit::{Exit, ExitCode};
pub use features::{HostCapabilities, SvmFeatures};
pub use iopm::Iopm;
pub use msrpm::Msrpm;
pub use vmcb::{CleanBits, Vmcb};
