//! hvkit-vmx: the typed Intel VT-x layer. Work in progress; see the README status table.
//!
//! Follows the Intel® 64 and IA-32 Architectures Software Developer's Manual, Order Number
//! 325462-086US (December 2024), Volume 3C, Chapters 24–32 and Appendices A–C.
#![cfg_attr(not(test), no_std)]

pub mod error;
#[cfg(target_arch = "x86_64")]
pub mod instructions;

pub use error::{VmFail, VmInstructionError};
pub mod capabilities;
pub mod controls;
pub mod enable;
pub mod msr;
pub mod fields;
pub mod vmcs;
