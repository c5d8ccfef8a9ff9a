//! The AMD-V (SVM) backend.
//!
//! - [`core`]: the exit path over any `DerefMut<Target = Vmcb>` (exit decoding, instruction
//!   skipping, events, clean bits), host-tested with a boxed VMCB;
//! - `hardware` (x86-64): enabling SVM, the VMCB from the typed guest state, the run loop.

pub mod core;
#[cfg(target_arch = "x86_64")]
pub mod hardware;
#[cfg(test)]
mod tests;

pub use self::core::{CleanStats, SvmCore, fixed_length};
