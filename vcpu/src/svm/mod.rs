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
