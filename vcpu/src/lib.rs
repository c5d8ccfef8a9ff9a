//! hvkit-vcpu: one vCPU API over Intel VT-x and AMD-V.
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
pub use exit::{Exit, ExitKind, RawExit};
pub use platform::{LogLevel, Platform};
pub use regs::GuestRegisters;
pub mod bitmap;
#[cfg(target_arch = "x86_64")]
pub mod capture;
mod copy;
pub mod error;
pub mod event;
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
