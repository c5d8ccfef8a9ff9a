//! The Intel VT-x backend.
//!
//! - [`core`]: the exit path over any `VmcsRead + VmcsWrite` (lazy state, exit decoding,
//!   instruction skipping, event injection), host-tested with `Counting<SoftVmcs>`;
//! - [`setup`]: the VMCS from the typed guest state, the host state and the intercepts;
//! - [`invalidate`]: INVVPID and INVEPT for a new vCPU's VPID and EPTP;
//! - `switch` (x86-64): the world switch.

pub mod core;
#[cfg(target_arch = "x86_64")]
pub mod hardware;
pub mod invalidate;
pub mod setup;
#[cfg(target_arch = "x86_64")]
pub(crate) mod switch;
#[cfg(test)]
mod tests;

pub use self::core::{CrPolicy, VmxCore, xcr0_valid};
pub use invalidate::{Invalidate, InvalidationError, invalidate_new_vcpu};
pub use setup::{HostState, HostStateSource, VmcsLayout, VmxOptions, controls_request, write_vmcs};
