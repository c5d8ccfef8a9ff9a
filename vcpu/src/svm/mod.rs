//! The AMD-V (SVM) backend.
//!
//! - [`core`]: the exit path over any `DerefMut<Target = Vmcb>` (exit decoding into the common
//!   [`crate::Exit`], instruction skipping with nRIP, the IOIO next RIP or the decoded guest
//!   instruction, events with the V_IRQ window and EXITINTINFO re-injection, the VMCB clean
//!   bits), host-tested over a boxed `Vmcb`;
//! - [`setup`]: the VMCB from the typed [`crate::state::GuestState`], the intercepts, the
//!   permission maps;
//! - [`decode`]: the guest instruction at RIP, decoded with `iced-x86` (feature `decoder`) or a
//!   small allocation-free decoder of what SVM intercepts;
//! - [`guest_memory`]: physical memory through the [`crate::Platform`], for the 2-D walker that
//!   fetches guest code;
//! - `switch` (x86-64): the world switch (VMSAVE/VMLOAD/VMRUN, GPRs by `offset_of!`);
//! - `hardware` (x86-64): enabling SVM, the VMCB frame, ASID, nested paging, the run loop.
//!
//! Manual: AMD64 Architecture Programmer's Manual Volume 2: System Programming, Publication No.
//! 24593, Revision 3.42, March 2024, Chapter 15 "Secure Virtual Machine".
//!
//! # Run on the emulators
//! The e2e runs (`cargo xtask e2e`, the svm/qemu and svm/bochs cases of `tests/tests/e2e.rs`)
//! drive this backend through [`crate::Vcpu`] on QEMU 7.2 TCG (`-cpu max`: nested paging, no
//! NRIP save, no decode assists, no clean bits) and on Bochs 2.7 (`trinity_apu`: NRIP save and
//! FlushByAsid, no decode assists). `examples/baremetal` builds hvkit-vcpu with
//! `default-features = false`, so those runs use the built-in decoder (no allocator); the
//! `iced-x86` decoder is covered by this crate's host tests, and when it was added it also
//! passed these guests on both emulators with a bump allocator (its tables took 359 KiB of
//! heap). The cases that exercise this backend's own paths:
//! - `cpuid`, `io`, `hypercall`, `hlt`, `npf`: instructions skipped by their decoded length
//!   without NRIP save (QEMU), OUT/IN through the IOPM (next RIP from EXITINFO2), VMMCALL PING,
//!   a write to an unmapped GPA served by mapping on demand;
//! - `realmode`, `paging`: real mode and 64-bit long mode with the guest's own 4-level tables
//!   (decoding through the 2-D walker);
//! - `exception`: #DE, #GP(18h) and #PF injected into the guest's handlers, an interrupt held
//!   back while RFLAGS.IF = 0 and delivered at the VINTR window;
//! - `hostile`, `entryfail`: VMRUN in the guest → #UD → triple fault →
//!   [`crate::ExitKind::Shutdown`] (QEMU); a state with CR0.NW without CD refused before VMRUN
//!   with the rule named.
//!
//! Without [`crate::VcpuConfig::external_interrupt_exiting`], physical interrupts go to the guest
//! (no INTR intercept): on these emulators the BIOS leaves the PIT running through the PIC at
//! vector 8, so a guest that sets RFLAGS.IF receives the host's timer ticks unless the host
//! masks the PIC or asks for interrupt exits.

pub mod core;
pub mod decode;
pub mod guest_memory;
#[cfg(target_arch = "x86_64")]
pub mod hardware;
pub mod setup;
#[cfg(target_arch = "x86_64")]
pub(crate) mod switch;
#[cfg(test)]
mod tests;

pub use self::core::{CleanStats, CodeMemory, Entry, NoMemory, SvmCore, fixed_length};
pub use self::guest_memory::PlatformMemory;
pub use self::setup::{
    AsidError, VmcbLayout, base_intercepts, guest_asid, write_state, write_vmcb,
};
