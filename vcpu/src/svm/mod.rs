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
//! A scratch bare-metal kernel drove this backend through [`crate::Vcpu`] on QEMU 7.2 TCG
//! (`-cpu max`: nested paging, no NRIP save, no decode assists, no clean bits) and on Bochs 2.7
//! (`trinity_apu`: NRIP save and FlushByAsid, no decode assists), with both decoders (the
//! built-in one without an allocator, `iced-x86` with a bump allocator; iced's tables took
//! 359 KiB of heap). Every guest passed on both:
//! - 32-bit protected mode: CPUID with a redundant CS prefix (skipped by its decoded length, 3),
//!   OUT/IN through the IOPM (next RIP from EXITINFO2), VMMCALL PING, MOV CR4 with a host-owned
//!   bit (GPR from the decoder), a write to an unmapped GPA served by mapping on demand, HLT;
//! - real mode at 0000:7C00 and 64-bit long mode with the guest's own 4-level tables (decoding
//!   through the 2-D walker);
//! - events: #UD and #GP(18h) injected into the guest's handlers, an interrupt (vector 40h) held
//!   back while RFLAGS.IF = 0 and delivered at the VINTR window;
//! - hostile: VMRUN in the guest → #UD → triple fault → [`crate::ExitKind::Shutdown`]; a state with
//!   CR0.NW without CD refused before VMRUN with the rule named.
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
pub use self::setup::{VmcbLayout, base_intercepts, write_state, write_vmcb};
