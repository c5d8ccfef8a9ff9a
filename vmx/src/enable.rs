//! Entering and leaving VMX operation: CPUID, IA32_FEATURE_CONTROL, the CR0/CR4 fixed bits, the
//! VMXON region, VMXON and VMXOFF.
//!
//! Reference: Intel® 64 and IA-32 Architectures Software Developer's Manual, Order Number
//! 325462-086US (December 2024), Volume 3C: 24.6 "Discovering Support for VMX", 24.7 "Enabling
//! and Entering VMX Operation", 24.8 "Restrictions on VMX Operation", 25.11.5 "VMXON Region",
//! Appendix A.1 and A.7/A.8, and 31.3 "VMXON—Enter VMX Operation" / "VMXOFF—Leave VMX
//! Operation".
//!
//! The procedure runs against the [`VmxCpu`] trait, so every step and every failure is testable
//! on the host; [`HardwareCpu`] is the implementation for the processor this code runs on.
//!
//! ```no_run
//! # #[cfg(target_arch = "x86_64")] {
//! use hvkit_vmx::enable::{self, HardwareCpu, SmxMode, VmxonRegion};
//! use x86_64::structures::paging::PhysFrame;
//! use x86_64::PhysAddr;
//!
//! // A page the platform allocated, and its physical address.
//! let region: &'static mut VmxonRegion = unimplemented!("from the platform's frame allocator");
//! let region_phys = PhysFrame::containing_address(PhysAddr::new(0x1000));
//! // SAFETY: ring 0, this code owns this CPU's VMX state; `region_phys` is where `region` lives
//! // and the region is left alone until `disable` succeeds.
//! let mut cpu = unsafe { HardwareCpu::new() };
//! let on = unsafe { enable::enable(&mut cpu, region, region_phys, SmxMode::Outside) }?;
//! // ... VMCLEAR, VMPTRLD, fill the VMCS, VMLAUNCH ...
//! unsafe { enable::disable(&mut cpu, on) }?;
//! # }
//! # Ok::<(), Box<dyn core::error::Error>>(())
//! ```
// UNSAFETY: the procedure calls the `unsafe` methods of `VmxCpu` (MSR and control-register
// writes, VMXON, VMXOFF), whose obligations it states and meets step by step.
#![expect(
    unsafe_code,
    reason = "enabling VMX writes MSRs and control registers and runs VMXON"
)]

use raw_cpuid::{CpuId, CpuIdResult};
use x86_64::structures::paging::{PhysFrame, Size4KiB};

use crate::capabilities::{FeatureControl, FixedBits, VmxBasic};
use crate::error::VmFail;
use crate::msr;

/// CR0.NE (bit 5): the one CR0 bit this procedure sets itself when IA32_VMX_CR0_FIXED0 requires
/// it (SDM Vol. 3C, 24.8 "Restrictions on VMX Operation").
pub const CR0_NE: u64 = 1 << 5;
/// CR4.VMXE (bit 13): VMX enable (SDM Vol. 3A, 2.5 "Control Registers").
pub const CR4_VMXE: u64 = 1 << 13;

/// The processor state that enabling VMX reads and changes.
///
/// Implementations must perform exactly the named operation on the processor the caller runs
/// on (or, for a test double, model it); the procedures in this module rely on it.
#[cfg_attr(test, mockall::automock)]
pub trait VmxCpu {
    /// CPUID with EAX = `leaf` and ECX = `subleaf`.
    fn cpuid(&self, leaf: u32, subleaf: u32) -> CpuIdResult;
    /// RDMSR.
    fn read_msr(&self, msr: u32) -> u64;
    /// WRMSR.
    ///
    /// # Safety
    /// - `msr` exists and `value` is valid for it, and changing it does not break memory safety.
    unsafe fn write_msr(&mut self, msr: u32, value: u64);
    /// Reads CR0.
    fn cr0(&self) -> u64;
    /// Writes CR0.
    ///
    /// # Safety
    /// - `value` is a valid CR0 value that keeps the current paging and protection intact.
    unsafe fn write_cr0(&mut self, value: u64);
    /// Reads CR4.
    fn cr4(&self) -> u64;
    /// Writes CR4.
    ///
    /// # Safety
    /// - `value` is a valid CR4 value that keeps the current paging and protection intact.
    unsafe fn write_cr4(&mut self, value: u64);
    /// VMXON with the region at `region`.
    ///
    /// # Errors
    /// The instruction's VMfail outcome.
    ///
    /// # Safety
    /// - The obligations of [`crate::instructions::vmxon`].
    unsafe fn vmxon(&mut self, region: PhysFrame<Size4KiB>) -> Result<(), VmFail>;
    /// VMXOFF.
    ///
    /// # Errors
    /// The instruction's VMfail outcome.
    ///
    /// # Safety
    /// - The obligations of [`crate::instructions::vmxoff`].
    unsafe fn vmxoff(&mut self) -> Result<(), VmFail>;
}

/// Whether the caller runs inside SMX operation (after GETSEC\[SENTER\]), which decides the
/// IA32_FEATURE_CONTROL bit that must allow VMXON (SDM Vol. 3C, 24.7).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SmxMode {
    /// Ordinary operation: bit 2, "enable VMX outside SMX operation".
    Outside,
    /// SMX operation (a measured launch): bit 1, "enable VMX inside SMX operation".
    Inside,
}

/// A VMXON region: 4 KiB, 4 KiB-aligned, starting with the VMCS revision identifier (SDM Vol. 3C,
/// 25.11.5 "VMXON Region").
#[repr(C, align(4096))]
#[derive(Debug)]
pub struct VmxonRegion {
    /// Bits 30:0: the VMCS revision identifier; bit 31 must be 0.
    revision_id: u32,
    /// The rest of the region, used by the processor.
    data: [u8; 4092],
}

const _: () = assert!(size_of::<VmxonRegion>() == 4096);
const _: () = assert!(align_of::<VmxonRegion>() == 4096);

impl VmxonRegion {
    /// A zeroed region.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            revision_id: 0,
            data: [0; 4092],
        }
    }

    /// The revision identifier written in the region.
    #[must_use]
    pub fn revision_id(&self) -> u32 {
        self.revision_id
    }
}

impl Default for VmxonRegion {
    fn default() -> Self {
        Self::new()
    }
}

/// Why VMX could not be enabled. Each failure of the procedure has its own variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnableError {
    /// CPUID.1:ECX.VMX\[bit 5\] is 0: the processor does not support VMX (SDM 24.6).
    #[error("the processor does not support VMX (CPUID.1:ECX.VMX = 0)")]
    NotSupported,
    /// IA32_FEATURE_CONTROL is locked with VMXON disabled for the caller's SMX mode; only the
    /// firmware (a reset) can change it (SDM 24.7).
    #[error("VMX is disabled by the firmware: IA32_FEATURE_CONTROL is locked with VMXON disabled {} SMX operation ({:#x})", if *.smx == SmxMode::Inside { "inside" } else { "outside" }, .feature_control.bits())]
    DisabledByFirmware {
        /// The SMX mode the caller runs in.
        smx: SmxMode,
        /// The value of IA32_FEATURE_CONTROL.
        feature_control: FeatureControl,
    },
    /// SMX operation was requested but the processor has no SMX (CPUID.1:ECX.SMX\[bit 6\] = 0).
    #[error("SMX operation was requested, but the processor does not support SMX")]
    NoSmx,
    /// IA32_FEATURE_CONTROL did not take the value written to it (read back differently).
    #[error("IA32_FEATURE_CONTROL did not accept the write: wrote {wrote:#x}, read back {read:#x}")]
    FeatureControlNotUpdated {
        /// The value written.
        wrote: u64,
        /// The value read back.
        read: u64,
    },
    /// CR0 has bits that VMX operation forbids or lacks bits it requires, other than CR0.NE
    /// (which the procedure sets itself) (SDM 24.8, A.7).
    #[error(
        "CR0 {cr0:#x} does not satisfy the VMX fixed bits: missing {missing:#x}, forbidden {forbidden:#x}"
    )]
    Cr0Incompatible {
        /// CR0 at the time.
        cr0: u64,
        /// Bits that must be 1 and are 0.
        missing: u64,
        /// Bits that must be 0 and are 1.
        forbidden: u64,
    },
    /// CR4 (with VMXE set) does not satisfy the VMX fixed bits (SDM 24.8, A.8).
    #[error(
        "CR4 {cr4:#x} does not satisfy the VMX fixed bits: missing {missing:#x}, forbidden {forbidden:#x}"
    )]
    Cr4Incompatible {
        /// CR4 at the time, with VMXE set.
        cr4: u64,
        /// Bits that must be 1 and are 0.
        missing: u64,
        /// Bits that must be 0 and are 1.
        forbidden: u64,
    },
    /// IA32_VMX_BASIC reports a region size larger than the 4 KiB region (SDM A.1).
    #[error("the processor needs a {0}-byte VMXON region, larger than 4096 bytes")]
    RegionTooLarge(u32),
    /// IA32_VMX_BASIC\[48\] limits region addresses to 32 bits and the region lies above 4 GiB.
    #[error(
        "the VMXON region at {0:#x} is above 4 GiB, but IA32_VMX_BASIC[48] limits it to 32-bit addresses"
    )]
    RegionAbove4GiB(u64),
    /// VMXON failed; CR0 and CR4 were restored.
    #[error("VMXON failed: {0}")]
    Vmxon(VmFail),
}

/// Proof that this processor is in VMX root operation, and what [`disable`] must undo.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "VMX stays on until `disable` is called with this token"]
pub struct VmxOn {
    basic: VmxBasic,
    set_vmxe: bool,
    set_ne: bool,
}

impl VmxOn {
    /// IA32_VMX_BASIC as read while enabling: the revision identifier for VMCS regions.
    #[must_use]
    pub fn basic(&self) -> VmxBasic {
        self.basic
    }
}

/// Why VMX could not be disabled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DisableError {
    /// VMXOFF failed (under the dual-monitor treatment of SMIs and SMM); the processor is still
    /// in VMX operation and CR4 is unchanged.
    #[error("VMXOFF failed: {0}")]
    Vmxoff(VmFail),
}

/// Enables VMX and enters VMX root operation (SDM Vol. 3C, 24.7).
///
/// In order: checks CPUID.1:ECX.VMX (and SMX for [`SmxMode::Inside`]); if IA32_FEATURE_CONTROL
/// is unlocked, enables VMXON for the caller's SMX mode and locks it; checks CR0 against
/// IA32_VMX_CR0_FIXED0/1, setting CR0.NE if that is all that is missing; sets CR4.VMXE and checks
/// CR4 against IA32_VMX_CR4_FIXED0/1; writes the revision identifier to the region; VMXON.
/// On an error after CR0 or CR4 was changed, both are restored. IA32_FEATURE_CONTROL, once
/// locked, stays locked until reset (the SDM gives no way back).
///
/// # Errors
/// An [`EnableError`] naming the step that failed.
///
/// # Safety
/// - `cpu` acts on the processor this code runs on, at CPL 0 in 64-bit mode, and nothing else on
///   this processor uses VMX or changes CR0/CR4 concurrently.
/// - `region_phys` is the physical address of `region`, and `region` is neither accessed nor freed
///   until [`disable`] has returned `Ok` for the returned token.
pub unsafe fn enable(
    cpu: &mut impl VmxCpu,
    region: &mut VmxonRegion,
    region_phys: PhysFrame<Size4KiB>,
    smx: SmxMode,
) -> Result<VmxOn, EnableError> {
    let features = {
        let reader = |leaf: u32, subleaf: u32| cpu.cpuid(leaf, subleaf);
        CpuId::with_cpuid_reader(reader).get_feature_info()
    };
    let Some(features) = features.filter(|f| f.has_vmx()) else {
        return Err(EnableError::NotSupported);
    };
    if smx == SmxMode::Inside && !features.has_smx() {
        return Err(EnableError::NoSmx);
    }

    let needed = match smx {
        SmxMode::Outside => FeatureControl::VMX_OUTSIDE_SMX,
        SmxMode::Inside => FeatureControl::VMX_INSIDE_SMX,
    };
    let feature_control = FeatureControl::from_bits_retain(cpu.read_msr(msr::IA32_FEATURE_CONTROL));
    if feature_control.contains(FeatureControl::LOCK) {
        if !feature_control.contains(needed) {
            return Err(EnableError::DisabledByFirmware {
                smx,
                feature_control,
            });
        }
    } else {
        let wrote = (feature_control | needed | FeatureControl::LOCK).bits();
        // SAFETY: IA32_FEATURE_CONTROL exists on every VMX processor (SDM 24.7); setting the
        // VMXON enable and the lock bit affects no memory.
        unsafe { cpu.write_msr(msr::IA32_FEATURE_CONTROL, wrote) };
        let read = cpu.read_msr(msr::IA32_FEATURE_CONTROL);
        if read != wrote {
            return Err(EnableError::FeatureControlNotUpdated { wrote, read });
        }
    }

    let basic = VmxBasic(cpu.read_msr(msr::IA32_VMX_BASIC));
    if basic.region_size() > 4096 {
        return Err(EnableError::RegionTooLarge(basic.region_size()));
    }
    let region_addr = region_phys.start_address().as_u64();
    if basic.physical_address_width_32() && region_addr >= 1 << 32 {
        return Err(EnableError::RegionAbove4GiB(region_addr));
    }

    let cr0_fixed = FixedBits {
        fixed0: cpu.read_msr(msr::IA32_VMX_CR0_FIXED0),
        fixed1: cpu.read_msr(msr::IA32_VMX_CR0_FIXED1),
    };
    let cr4_fixed = FixedBits {
        fixed0: cpu.read_msr(msr::IA32_VMX_CR4_FIXED0),
        fixed1: cpu.read_msr(msr::IA32_VMX_CR4_FIXED1),
    };
    let cr0 = cpu.cr0();
    let new_cr0 = cr0 | (cr0_fixed.missing(cr0) & CR0_NE);
    if !cr0_fixed.accepts(new_cr0) {
        return Err(EnableError::Cr0Incompatible {
            cr0,
            missing: cr0_fixed.missing(new_cr0),
            forbidden: cr0_fixed.forbidden(new_cr0),
        });
    }
    let cr4 = cpu.cr4();
    let new_cr4 = cr4 | CR4_VMXE;
    if !cr4_fixed.accepts(new_cr4) {
        return Err(EnableError::Cr4Incompatible {
            cr4: new_cr4,
            missing: cr4_fixed.missing(new_cr4),
            forbidden: cr4_fixed.forbidden(new_cr4),
        });
    }
    let set_ne = new_cr0 != cr0;
    let set_vmxe = new_cr4 != cr4;
    if set_ne {
        // SAFETY: CR0.NE only selects native x87 error reporting; paging and protection stay.
        unsafe { cpu.write_cr0(new_cr0) };
    }
    if set_vmxe {
        // SAFETY: CR4.VMXE only permits VMXON; paging and protection stay.
        unsafe { cpu.write_cr4(new_cr4) };
    }

    region.revision_id = basic.revision_id();
    // SAFETY: the caller guarantees the CPU state and that `region_phys` is `region`, which stays
    // untouched until `disable`; CR0/CR4/FEATURE_CONTROL were just made to allow VMXON.
    if let Err(fail) = unsafe { cpu.vmxon(region_phys) } {
        if set_vmxe {
            // SAFETY: restores the value CR4 had on entry.
            unsafe { cpu.write_cr4(cr4) };
        }
        if set_ne {
            // SAFETY: restores the value CR0 had on entry.
            unsafe { cpu.write_cr0(cr0) };
        }
        return Err(EnableError::Vmxon(fail));
    }
    Ok(VmxOn {
        basic,
        set_vmxe,
        set_ne,
    })
}

/// Leaves VMX operation and undoes what [`enable`] changed in CR4 (VMXE) and CR0 (NE).
///
/// # Errors
/// [`DisableError::Vmxoff`] if VMXOFF fails; the token is then consumed but the processor stays in
/// VMX operation.
///
/// # Safety
/// - `cpu` acts on the processor that `on` was created on, and that processor is in VMX root
///   operation with no guest that will be resumed.
pub unsafe fn disable(cpu: &mut impl VmxCpu, on: VmxOn) -> Result<(), DisableError> {
    // SAFETY: the caller guarantees VMX root operation on this processor.
    unsafe { cpu.vmxoff() }.map_err(DisableError::Vmxoff)?;
    if on.set_vmxe {
        let cr4 = cpu.cr4() & !CR4_VMXE;
        // SAFETY: outside VMX operation CR4.VMXE may be cleared; nothing else changes.
        unsafe { cpu.write_cr4(cr4) };
    }
    if on.set_ne {
        let cr0 = cpu.cr0() & !CR0_NE;
        // SAFETY: outside VMX operation CR0.NE may be cleared again; nothing else changes.
        unsafe { cpu.write_cr0(cr0) };
    }
    Ok(())
}

#[cfg(target_arch = "x86_64")]
pub use hardware::HardwareCpu;

#[cfg(target_arch = "x86_64")]
mod hardware {
    //! The [`VmxCpu`] of the real processor: RDMSR, WRMSR, MOV to/from CR0 and CR4 as inline
    //! assembly (covered by the module-level `unsafe_code` expectation above).

    use core::arch::asm;

    use raw_cpuid::CpuIdResult;
    use x86_64::structures::paging::{PhysFrame, Size4KiB};

    use super::VmxCpu;
    use crate::error::VmFail;
    use crate::instructions;

    /// [`VmxCpu`] for the processor this code runs on.
    #[derive(Debug)]
    pub struct HardwareCpu {
        _private: (),
    }

    impl HardwareCpu {
        /// Access to this processor's MSRs, control registers and VMXON/VMXOFF.
        ///
        /// # Safety
        /// - The code runs at CPL 0 in 64-bit mode (RDMSR, MOV CR and VMXON raise #GP or #UD
        ///   otherwise).
        /// - Reads through it are only of MSRs the processor implements: the procedures in this
        ///   crate guarantee that for what they read.
        pub unsafe fn new() -> Self {
            Self { _private: () }
        }
    }

    impl VmxCpu for HardwareCpu {
        fn cpuid(&self, leaf: u32, subleaf: u32) -> CpuIdResult {
            raw_cpuid::native_cpuid::cpuid_count(leaf, subleaf)
        }

        fn read_msr(&self, msr: u32) -> u64 {
            let (low, high): (u32, u32);
            // SAFETY: `new`'s contract: CPL 0 and only implemented MSRs are read.
            unsafe {
                asm!("rdmsr", in("ecx") msr, out("eax") low, out("edx") high,
                    options(nostack, nomem, preserves_flags));
            }
            (u64::from(high) << 32) | u64::from(low)
        }

        unsafe fn write_msr(&mut self, msr: u32, value: u64) {
            // SAFETY: the caller guarantees `msr` exists and `value` is safe to write.
            unsafe {
                asm!("wrmsr", in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32,
                    options(nostack, preserves_flags));
            }
        }

        fn cr0(&self) -> u64 {
            let value: u64;
            // SAFETY: reading CR0 at CPL 0 has no side effects.
            unsafe {
                asm!("mov {}, cr0", out(reg) value, options(nostack, nomem, preserves_flags))
            };
            value
        }

        unsafe fn write_cr0(&mut self, value: u64) {
            // SAFETY: the caller guarantees the value keeps paging and protection intact.
            unsafe { asm!("mov cr0, {}", in(reg) value, options(nostack, preserves_flags)) };
        }

        fn cr4(&self) -> u64 {
            let value: u64;
            // SAFETY: reading CR4 at CPL 0 has no side effects.
            unsafe {
                asm!("mov {}, cr4", out(reg) value, options(nostack, nomem, preserves_flags))
            };
            value
        }

        unsafe fn write_cr4(&mut self, value: u64) {
            // SAFETY: the caller guarantees the value keeps paging and protection intact.
            unsafe { asm!("mov cr4, {}", in(reg) value, options(nostack, preserves_flags)) };
        }

        unsafe fn vmxon(&mut self, region: PhysFrame<Size4KiB>) -> Result<(), VmFail> {
            // SAFETY: forwarded to the caller.
            unsafe { instructions::vmxon(region) }
        }

        unsafe fn vmxoff(&mut self) -> Result<(), VmFail> {
            // SAFETY: forwarded to the caller.
            unsafe { instructions::vmxoff() }
        }
    }
}

#[cfg(test)]
mod tests {
    use mockall::Sequence;
    use mockall::predicate::eq;
    use x86_64::PhysAddr;

    use super::*;
    use crate::error::VmInstructionError;

    const VMX_BIT: u32 = 1 << 5;
    const SMX_BIT: u32 = 1 << 6;
    const CR0_PE_PG: u64 = 0x8000_0001;
    const CR4_PAE: u64 = 1 << 5;

    /// A processor as the mock presents it.
    #[derive(Clone, Copy)]
    struct Machine {
        ecx1: u32,
        feature_control: u64,
        basic: u64,
        cr0: u64,
        cr4: u64,
    }

    const GOOD: Machine = Machine {
        ecx1: VMX_BIT,
        feature_control: 0, // unlocked: the procedure enables and locks it
        basic: 0x00da_0400_0000_0004,
        cr0: CR0_PE_PG | 0x10, // NE clear, as firmware often leaves it
        cr4: CR4_PAE,
    };

    fn frame(addr: u64) -> PhysFrame<Size4KiB> {
        PhysFrame::containing_address(PhysAddr::new(addr))
    }

    /// A mock with the read-only behaviour of `m`; writes and VMXON are left to each test.
    fn mock(m: Machine) -> MockVmxCpu {
        let mut cpu = MockVmxCpu::new();
        cpu.expect_cpuid().returning(move |leaf, _| match leaf {
            0 => CpuIdResult {
                eax: 1,
                ebx: 0x756e_6547,
                ecx: 0x6c65_746e,
                edx: 0x4965_6e69,
            },
            1 => CpuIdResult {
                eax: 0x906e9,
                ebx: 0,
                ecx: m.ecx1,
                edx: 0,
            },
            _ => CpuIdResult {
                eax: 0,
                ebx: 0,
                ecx: 0,
                edx: 0,
            },
        });
        cpu.expect_read_msr().returning(move |msr| match msr {
            msr::IA32_FEATURE_CONTROL => m.feature_control,
            msr::IA32_VMX_BASIC => m.basic,
            msr::IA32_VMX_CR0_FIXED0 => 0x8000_0021,
            msr::IA32_VMX_CR0_FIXED1 => 0xffff_ffff,
            msr::IA32_VMX_CR4_FIXED0 => 0x2000,
            msr::IA32_VMX_CR4_FIXED1 => 0x0037_67ff,
            other => panic!("unexpected RDMSR {other:#x}"),
        });
        cpu.expect_cr0().return_const(m.cr0);
        cpu.expect_cr4().return_const(m.cr4);
        cpu
    }

    fn run(cpu: &mut MockVmxCpu, addr: u64, smx: SmxMode) -> (Result<VmxOn, EnableError>, u32) {
        let mut region = VmxonRegion::new();
        // SAFETY: the mock models the processor; nothing touches real hardware.
        let result = unsafe { enable(cpu, &mut region, frame(addr), smx) };
        (result, region.revision_id())
    }

    #[test]
    fn enables_locks_feature_control_sets_ne_and_vmxe_then_vmxon() {
        // FEATURE_CONTROL starts unlocked; the mock's MSR reflects the procedure's write.
        let mut cpu = MockVmxCpu::new();
        cpu.expect_cpuid().returning(|leaf, _| CpuIdResult {
            eax: 1,
            ebx: 0,
            ecx: if leaf == 1 { VMX_BIT } else { 0 },
            edx: 0,
        });
        let state = std::sync::Arc::new(std::sync::Mutex::new(0u64));
        let read_state = state.clone();
        cpu.expect_read_msr().returning(move |msr| match msr {
            msr::IA32_FEATURE_CONTROL => *read_state.lock().unwrap(),
            msr::IA32_VMX_BASIC => GOOD.basic,
            msr::IA32_VMX_CR0_FIXED0 => 0x8000_0021,
            msr::IA32_VMX_CR0_FIXED1 => 0xffff_ffff,
            msr::IA32_VMX_CR4_FIXED0 => 0x2000,
            msr::IA32_VMX_CR4_FIXED1 => 0x0037_67ff,
            other => panic!("unexpected RDMSR {other:#x}"),
        });
        let write_state = state.clone();
        let mut seq = Sequence::new();
        cpu.expect_write_msr()
            .with(eq(msr::IA32_FEATURE_CONTROL), eq(0x5))
            .times(1)
            .in_sequence(&mut seq)
            .returning(move |_, v| *write_state.lock().unwrap() = v);
        cpu.expect_cr0().return_const(GOOD.cr0);
        cpu.expect_cr4().return_const(GOOD.cr4);
        cpu.expect_write_cr0()
            .with(eq(GOOD.cr0 | CR0_NE))
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_| ());
        cpu.expect_write_cr4()
            .with(eq(GOOD.cr4 | CR4_VMXE))
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_| ());
        cpu.expect_vmxon()
            .with(eq(frame(0x7000)))
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_| Ok(()));
        let (result, revision) = run(&mut cpu, 0x7000, SmxMode::Outside);
        let on = result.unwrap();
        assert_eq!(
            revision, 4,
            "the revision identifier is written before VMXON"
        );
        assert_eq!(on.basic().revision_id(), 4);
        assert_eq!(*state.lock().unwrap(), 0x5);

        // Disabling undoes CR4.VMXE and CR0.NE after VMXOFF.
        cpu.checkpoint();
        let mut seq = Sequence::new();
        cpu.expect_vmxoff()
            .times(1)
            .in_sequence(&mut seq)
            .returning(|| Ok(()));
        cpu.expect_cr4().return_const(GOOD.cr4 | CR4_VMXE);
        cpu.expect_cr0().return_const(GOOD.cr0 | CR0_NE);
        cpu.expect_write_cr4()
            .with(eq(GOOD.cr4))
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_| ());
        cpu.expect_write_cr0()
            .with(eq(GOOD.cr0))
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_| ());
        // SAFETY: the mock models the processor.
        assert_eq!(unsafe { disable(&mut cpu, on) }, Ok(()));
    }

    #[test]
    fn already_locked_with_vmx_enabled_and_ne_set_writes_only_cr4() {
        let mut cpu = mock(Machine {
            feature_control: 0x5,
            cr0: CR0_PE_PG | 0x30,
            ..GOOD
        });
        cpu.expect_write_msr().never();
        cpu.expect_write_cr0().never();
        cpu.expect_write_cr4()
            .with(eq(CR4_PAE | CR4_VMXE))
            .times(1)
            .returning(|_| ());
        cpu.expect_vmxon().times(1).returning(|_| Ok(()));
        let on = run(&mut cpu, 0x7000, SmxMode::Outside).0.unwrap();
        assert_eq!(
            on,
            VmxOn {
                basic: VmxBasic(GOOD.basic),
                set_vmxe: true,
                set_ne: false
            }
        );
    }

    #[test]
    fn no_vmx_in_cpuid() {
        let mut cpu = mock(Machine { ecx1: 0, ..GOOD });
        cpu.expect_write_msr().never();
        cpu.expect_vmxon().never();
        assert_eq!(
            run(&mut cpu, 0x7000, SmxMode::Outside).0,
            Err(EnableError::NotSupported)
        );
    }

    #[test]
    fn inside_smx_without_smx() {
        let mut cpu = mock(GOOD);
        cpu.expect_write_msr().never();
        assert_eq!(
            run(&mut cpu, 0x7000, SmxMode::Inside).0,
            Err(EnableError::NoSmx)
        );
    }

    #[test]
    fn locked_by_firmware_outside_smx() {
        // Locked with only "inside SMX" enabled.
        let mut cpu = mock(Machine {
            feature_control: 0x3,
            ..GOOD
        });
        cpu.expect_write_msr().never();
        cpu.expect_write_cr4().never();
        assert_eq!(
            run(&mut cpu, 0x7000, SmxMode::Outside).0,
            Err(EnableError::DisabledByFirmware {
                smx: SmxMode::Outside,
                feature_control: FeatureControl::from_bits_retain(0x3)
            })
        );
    }

    #[test]
    fn locked_by_firmware_inside_smx() {
        let mut cpu = mock(Machine {
            ecx1: VMX_BIT | SMX_BIT,
            feature_control: 0x5,
            ..GOOD
        });
        cpu.expect_write_msr().never();
        let err = run(&mut cpu, 0x7000, SmxMode::Inside).0.unwrap_err();
        assert_eq!(
            err,
            EnableError::DisabledByFirmware {
                smx: SmxMode::Inside,
                feature_control: FeatureControl::from_bits_retain(0x5)
            }
        );
        assert!(err.to_string().contains("inside SMX"), "{err}");
    }

    #[test]
    fn unlocked_inside_smx_enables_the_smx_bit() {
        let mut cpu = mock(Machine {
            ecx1: VMX_BIT | SMX_BIT,
            ..GOOD
        });
        // The mock's FEATURE_CONTROL read stays 0, so the read-back check fails.
        cpu.expect_write_msr()
            .with(eq(msr::IA32_FEATURE_CONTROL), eq(0x3))
            .times(1)
            .returning(|_, _| ());
        cpu.expect_write_cr4().never();
        assert_eq!(
            run(&mut cpu, 0x7000, SmxMode::Inside).0,
            Err(EnableError::FeatureControlNotUpdated {
                wrote: 0x3,
                read: 0
            })
        );
    }

    #[test]
    fn region_size_and_32_bit_address_limit() {
        let mut cpu = mock(Machine {
            feature_control: 0x5,
            basic: 0x00da_1001_0000_0004,
            ..GOOD
        });
        assert_eq!(
            run(&mut cpu, 0x7000, SmxMode::Outside).0,
            Err(EnableError::RegionTooLarge(0x1001))
        );

        let basic_32 = GOOD.basic | (1 << 48);
        let mut cpu = mock(Machine {
            feature_control: 0x5,
            basic: basic_32,
            ..GOOD
        });
        cpu.expect_write_cr4().never();
        assert_eq!(
            run(&mut cpu, 0x1_0000_0000, SmxMode::Outside).0,
            Err(EnableError::RegionAbove4GiB(0x1_0000_0000))
        );
        let mut cpu = mock(Machine {
            feature_control: 0x5,
            basic: basic_32,
            ..GOOD
        });
        cpu.expect_write_cr0().returning(|_| ());
        cpu.expect_write_cr4().returning(|_| ());
        cpu.expect_vmxon().times(1).returning(|_| Ok(()));
        assert!(run(&mut cpu, 0xffff_f000, SmxMode::Outside).0.is_ok());
    }

    #[test]
    fn cr0_that_vmx_forbids() {
        // Paging off: CR0.PG is fixed to 1 and the procedure does not turn paging on.
        let mut cpu = mock(Machine {
            feature_control: 0x5,
            cr0: 0x11,
            ..GOOD
        });
        cpu.expect_write_cr0().never();
        cpu.expect_write_cr4().never();
        assert_eq!(
            run(&mut cpu, 0x7000, SmxMode::Outside).0,
            Err(EnableError::Cr0Incompatible {
                cr0: 0x11,
                missing: 0x8000_0000,
                forbidden: 0
            })
        );
    }

    #[test]
    fn cr4_that_vmx_forbids() {
        let cr4 = CR4_PAE | (1 << 22); // a bit outside IA32_VMX_CR4_FIXED1
        let mut cpu = mock(Machine {
            feature_control: 0x5,
            cr4,
            ..GOOD
        });
        cpu.expect_write_cr0().never();
        cpu.expect_write_cr4().never();
        assert_eq!(
            run(&mut cpu, 0x7000, SmxMode::Outside).0,
            Err(EnableError::Cr4Incompatible {
                cr4: cr4 | CR4_VMXE,
                missing: 0,
                forbidden: 1 << 22
            })
        );
    }

    #[test]
    fn failed_vmxon_restores_cr0_and_cr4() {
        for fail in [
            VmFail::Invalid,
            VmFail::Valid(VmInstructionError::VMXON_IN_VMX_ROOT),
        ] {
            let mut cpu = mock(Machine {
                feature_control: 0x5,
                ..GOOD
            });
            let mut seq = Sequence::new();
            cpu.expect_write_cr0()
                .with(eq(GOOD.cr0 | CR0_NE))
                .times(1)
                .in_sequence(&mut seq)
                .returning(|_| ());
            cpu.expect_write_cr4()
                .with(eq(GOOD.cr4 | CR4_VMXE))
                .times(1)
                .in_sequence(&mut seq)
                .returning(|_| ());
            cpu.expect_vmxon()
                .times(1)
                .in_sequence(&mut seq)
                .returning(move |_| Err(fail));
            cpu.expect_write_cr4()
                .with(eq(GOOD.cr4))
                .times(1)
                .in_sequence(&mut seq)
                .returning(|_| ());
            cpu.expect_write_cr0()
                .with(eq(GOOD.cr0))
                .times(1)
                .in_sequence(&mut seq)
                .returning(|_| ());
            assert_eq!(
                run(&mut cpu, 0x7000, SmxMode::Outside).0,
                Err(EnableError::Vmxon(fail))
            );
        }
    }

    #[test]
    fn failed_vmxoff_leaves_cr4_alone() {
        let mut cpu = MockVmxCpu::new();
        let fail = VmFail::Valid(VmInstructionError::VMXOFF_UNDER_DUAL_MONITOR);
        cpu.expect_vmxoff().times(1).returning(move || Err(fail));
        cpu.expect_write_cr4().never();
        cpu.expect_write_cr0().never();
        let on = VmxOn {
            basic: VmxBasic(GOOD.basic),
            set_vmxe: true,
            set_ne: true,
        };
        // SAFETY: the mock models the processor.
        let result = unsafe { disable(&mut cpu, on) };
        assert_eq!(result, Err(DisableError::Vmxoff(fail)));
    }
}
