//! hvkit-vmx: the typed, checked Intel VT-x layer.
//!
//! Everything here follows the Intel® 64 and IA-32 Architectures Software Developer's Manual,
//! Combined Volumes, Order Number 325462-086US (December 2024), Volume 3C, Chapters 24–31 ("Intel
//! VMX" through "VMX Instruction Reference") and Appendices A ("VMX Capability Reporting
//! Facility"), B ("Field Encoding in VMCS") and C ("VMX Basic Exit Reasons"). Each module names
//! the sections it implements.
//!
//! The crate is `no_std`, builds on any host, and keeps hardware access behind traits so that
//! everything but the instructions themselves runs in host tests:
//!
//! | layer | modules |
//! |---|---|
//! | definitions (no `unsafe`) | [`fields`] (every VMCS field, typed by area and width), [`controls`], [`exit`], [`error`], [`msr`] |
//! | intercept bitmaps (no `unsafe`) | [`io_bitmap::IoBitmaps`] (I/O bitmaps A and B), [`msr_bitmap::MsrBitmap`], page-aligned structures the processor reads |
//! | access traits | [`vmcs::VmcsRead`] / [`vmcs::VmcsWrite`] with [`vmcs::SoftVmcs`] (in memory) and `vmcs::CurrentVmcs` (VMREAD/VMWRITE); [`msr::MsrRead`]; [`enable::VmxCpu`] |
//! | instructions (the only `unsafe`) | `instructions`: VMXON … VMFUNC as thin `unsafe fn`s returning [`VmFail`] |
//! | procedures | [`capabilities::VmxCapabilities`] (snapshot and control adjustment), [`enable::enable`] / [`enable::disable`] |
//!
//! # Walkthrough: enable VMX, fill a VMCS, launch
//!
//! The same code fills a [`vmcs::SoftVmcs`] in a host test and the current VMCS on hardware,
//! because both implement [`vmcs::VmcsWrite`]:
//!
//! ```
//! use hvkit_vmx::capabilities::{AdjustedControls, ControlsRequest, VmxCapabilities};
//! use hvkit_vmx::controls::*;
//! use hvkit_vmx::fields::{control, guest, host};
//! use hvkit_vmx::vmcs::{VmcsError, VmcsWrite};
//!
//! /// Writes the control fields and a flat 64-bit guest that starts at `rip`.
//! fn fill(vmcs: &mut impl VmcsWrite, c: &AdjustedControls, rip: u64) -> Result<(), VmcsError> {
//!     vmcs.write(control::PIN_BASED_VM_EXEC_CONTROL, c.pin_based)?;
//!     vmcs.write(control::PRIMARY_PROC_BASED_VM_EXEC_CONTROL, c.primary)?;
//!     vmcs.write(control::SECONDARY_PROC_BASED_VM_EXEC_CONTROL, c.secondary)?;
//!     vmcs.write(control::PRIMARY_VM_EXIT_CONTROLS, c.exit)?;
//!     vmcs.write(control::VM_ENTRY_CONTROLS, c.entry)?;
//!     vmcs.write(guest::RIP, rip)?;
//!     vmcs.write(guest::RFLAGS, 0x2)?;
//!     vmcs.write(guest::CS_SELECTOR, 0x08)?;
//!     vmcs.write(guest::CS_ACCESS_RIGHTS, 0xa09b)?; // 64-bit code, present, DPL 0
//!     vmcs.write(guest::VMCS_LINK_POINTER, u64::MAX)?;
//!     vmcs.write(host::CS_SELECTOR, 0x08)?;
//!     Ok(())
//! }
//!
//! // On the host: capabilities from a recorded snapshot, the VMCS in memory.
//! # use hvkit_vmx::msr::*;
//! let recorded = |msr: u32| match msr {
//!     IA32_VMX_BASIC => 0x00da_0400_0000_0004,
//!     IA32_VMX_PINBASED_CTLS | IA32_VMX_TRUE_PINBASED_CTLS => 0x0000_007f_0000_0016,
//!     IA32_VMX_PROCBASED_CTLS => 0xfff9_fffe_0401_e172,
//!     IA32_VMX_TRUE_PROCBASED_CTLS => 0xfff9_fffe_0400_6172,
//!     IA32_VMX_PROCBASED_CTLS2 => 0x0053_7dff_0000_0000,
//!     IA32_VMX_EXIT_CTLS | IA32_VMX_TRUE_EXIT_CTLS => 0x01ff_ffff_0003_6dfb,
//!     IA32_VMX_ENTRY_CTLS | IA32_VMX_TRUE_ENTRY_CTLS => 0x0003_ffff_0000_11fb,
//!     _ => 0,
//! };
//! let caps = VmxCapabilities::read(&recorded);
//! let controls = caps
//!     .adjust(&ControlsRequest {
//!         primary: PrimaryControls::HLT_EXITING,
//!         secondary: SecondaryControls::ENABLE_EPT | SecondaryControls::UNRESTRICTED_GUEST,
//!         exit: ExitControls::HOST_ADDRESS_SPACE_SIZE,
//!         entry: EntryControls::IA32E_MODE_GUEST,
//!         ..ControlsRequest::default()
//!     })
//!     .expect("the recorded CPU supports these controls");
//! let mut soft = hvkit_vmx::vmcs::SoftVmcs::new();
//! fill(&mut soft, &controls, 0x10_0000)?;
//! print!("{}", hvkit_vmx::vmcs::Dump(&soft));
//! # Ok::<(), VmcsError>(())
//! ```
//!
//! On the processor, the same `fill` runs against the current VMCS between
//! [`enable::enable`] and `instructions::vmlaunch` (a sketch; the host-state fields, EPT and
//! bitmaps a real guest needs are omitted):
//!
//! ```no_run
//! # #[cfg(target_arch = "x86_64")]
//! # fn on_hardware(
//! #     region: &mut hvkit_vmx::enable::VmxonRegion,
//! #     region_phys: x86_64::structures::paging::PhysFrame,
//! #     vmcs_phys: x86_64::structures::paging::PhysFrame,
//! #     fill: impl Fn(&mut hvkit_vmx::vmcs::CurrentVmcs) -> Result<(), hvkit_vmx::vmcs::VmcsError>,
//! # ) -> Result<(), Box<dyn core::error::Error>> {
//! use hvkit_vmx::enable::{self, HardwareCpu, SmxMode};
//! use hvkit_vmx::instructions;
//! use hvkit_vmx::vmcs::CurrentVmcs;
//!
//! // SAFETY: CPL 0; this code owns the processor's VMX state; `region_phys` is `region`'s
//! // address and the region stays untouched until `disable`.
//! let mut cpu = unsafe { HardwareCpu::new() };
//! let on = unsafe { enable::enable(&mut cpu, region, region_phys, SmxMode::Outside) }?;
//! // SAFETY: in VMX root operation; `vmcs_phys` is a VMCS region with the revision identifier
//! // from `on.basic()`.
//! unsafe { instructions::vmclear(vmcs_phys)? };
//! unsafe { instructions::vmptrld(vmcs_phys)? };
//! // SAFETY: a VMCS is current until this value is dropped.
//! let mut vmcs = unsafe { CurrentVmcs::new() };
//! fill(&mut vmcs)?;
//! // SAFETY: the VMCS describes a valid guest and host (see `vmlaunch`'s `# Safety`). It returns
//! // only if the launch fails; the guest's VM exits arrive at the host RIP written above.
//! let failure = unsafe { instructions::vmlaunch() };
//! println!("VMLAUNCH failed: {failure}");
//! unsafe { enable::disable(&mut cpu, on) }?;
//! # Ok(())
//! # }
//! ```
//!
//! Bad input gives typed errors, never panics: a control the CPU lacks is named in
//! [`capabilities::UnsupportedControls`], a refused enabling step in [`enable::EnableError`], a
//! failed VMX instruction in [`VmFail`] with the decoded [`VmInstructionError`], and an unknown exit
//! reason or error number is kept as data.
#![cfg_attr(not(test), no_std)]

pub mod error;
#[cfg(target_arch = "x86_64")]
pub mod instructions;

pub use error::{VmFail, VmInstructionError};
pub use io_bitmap::IoBitmaps;
pub use msr_bitmap::MsrBitmap;
pub mod capabilities;
pub mod controls;
pub mod enable;
pub mod exit;
pub mod fields;
pub mod io_bitmap;
pub mod msr;
pub mod msr_bitmap;
pub mod vmcs;
