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
pub mod error;
pub mod event;
pub mod vmx;

pub use error::{Unsupported, VcpuError};
pub use event::Event;
