//! CPUID virtualization: what the guest sees for each leaf.
//!
//! Manuals: Intel® 64 and IA-32 Architectures Software Developer's Manual, Combined Volumes, Order
//! Number 325462-086US, December 2024, Vol. 2A "CPUID—CPU Identification" (leaf 1 ECX bit 5 VMX,
//! bit 27 OSXSAVE, bit 31 reserved for hypervisors; leaves 4000_0000H–4FFF_FFFFH are not used by
//! Intel processors); AMD64 Architecture Programmer's Manual Volume 3, Publication No. 24594,
//! Appendix E "Obtaining Processor Information Via the CPUID Instruction" (Fn8000_0001_ECX bit 2
//! SVM, Fn4000_0000 reserved for hypervisors), and Volume 2 (Publication No. 24593, Revision
//! 3.42, March 2024) 15.4 "Enabling SVM".
//!
//! The default [`CpuidPolicy`] passes the host's values through with four changes: the
//! hypervisor-present bit is set, VMX and SVM are hidden (the guest cannot use them; if it tries,
//! it gets #UD), OSXSAVE follows the *guest's* CR4, and the hvkit leaves 0x4000_0000 and
//! 0x4000_0001 ([`crate::hypercall`]) answer. Up to [`MAX_OVERRIDES`] leaves can be replaced.

use raw_cpuid::CpuIdResult;

use crate::hypercall::{self, ABI_VERSION, LEAF_INTERFACE, LEAF_SIGNATURE};

/// How many leaves a [`CpuidPolicy`] can override.
pub const MAX_OVERRIDES: usize = 16;

/// Which hypercall instruction the guest is told to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Vendor {
    /// Intel VT-x: VMCALL.
    Intel,
    /// AMD-V: VMMCALL.
    Amd,
}

/// One replaced leaf.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuidOverride {
    /// EAX input.
    pub leaf: u32,
    /// ECX input (`None`: any subleaf).
    pub subleaf: Option<u32>,
    /// The result.
    pub result: CpuIdResult,
}

/// The policy is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the CPUID policy already holds {MAX_OVERRIDES} overrides")]
pub struct PolicyFull;

/// What the guest sees for CPUID.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuidPolicy {
    overrides: [Option<CpuidOverride>; MAX_OVERRIDES],
    /// Set CPUID.1:ECX\[31\] and answer the hvkit leaves (default: true).
    pub advertise_hypervisor: bool,
}

impl Default for CpuidPolicy {
    fn default() -> Self {
        Self {
            overrides: [None; MAX_OVERRIDES],
            advertise_hypervisor: true,
        }
    }
}

/// CPUID.1:ECX bit 5: VMX.
const LEAF1_ECX_VMX: u32 = 1 << 5;
/// CPUID.1:ECX bit 27: OSXSAVE (mirrors CR4.OSXSAVE).
const LEAF1_ECX_OSXSAVE: u32 = 1 << 27;
/// CPUID.1:ECX bit 31: a hypervisor is present.
const LEAF1_ECX_HYPERVISOR: u32 = 1 << 31;
/// CPUID Fn8000_0001_ECX bit 2: SVM.
const EXT1_ECX_SVM: u32 = 1 << 2;

impl CpuidPolicy {
    /// Replaces leaf `leaf` (subleaf `subleaf`, or every subleaf with `None`) by `result`; a
    /// later override of the same inputs replaces the earlier one.
    ///
    /// # Errors
    /// [`PolicyFull`] when [`MAX_OVERRIDES`] different leaves are already set.
    pub fn set(
        &mut self,
        leaf: u32,
        subleaf: Option<u32>,
        result: CpuIdResult,
    ) -> Result<(), PolicyFull> {
        let new = CpuidOverride {
            leaf,
            subleaf,
            result,
        };
        if let Some(slot) = self
            .overrides
            .iter_mut()
            .find(|o| matches!(o, Some(o) if o.leaf == leaf && o.subleaf == subleaf))
        {
            *slot = Some(new);
            return Ok(());
        }
        let slot = self
            .overrides
            .iter_mut()
            .find(|o| o.is_none())
            .ok_or(PolicyFull)?;
        *slot = Some(new);
        Ok(())
    }

    /// Whether leaf `leaf` depends on the guest's CR4 (leaf 1: OSXSAVE); the exit handler reads
    /// CR4 only then.
    #[must_use]
    pub fn needs_guest_cr4(&self, leaf: u32) -> bool {
        leaf == 1 && self.lookup(leaf, 0).is_none()
    }

    fn lookup(&self, leaf: u32, subleaf: u32) -> Option<CpuIdResult> {
        let mut any = None;
        for o in self.overrides.iter().flatten() {
            if o.leaf == leaf {
                match o.subleaf {
                    Some(s) if s == subleaf => return Some(o.result),
                    None => any = Some(o.result),
                    Some(_) => {}
                }
            }
        }
        any
    }

    /// The guest's result for (`leaf`, `subleaf`), given the host's `host` result for the same
    /// inputs, the guest's CR4.OSXSAVE and the vendor.
    #[must_use]
    pub fn apply(
        &self,
        leaf: u32,
        subleaf: u32,
        host: CpuIdResult,
        guest_osxsave: bool,
        vendor: Vendor,
    ) -> CpuIdResult {
        if let Some(result) = self.lookup(leaf, subleaf) {
            return result;
        }
        let mut r = host;
        match leaf {
            1 => {
                r.ecx &= !(LEAF1_ECX_VMX | LEAF1_ECX_OSXSAVE);
                if guest_osxsave {
                    r.ecx |= LEAF1_ECX_OSXSAVE;
                }
                if self.advertise_hypervisor {
                    r.ecx |= LEAF1_ECX_HYPERVISOR;
                }
            }
            0x8000_0001 => r.ecx &= !EXT1_ECX_SVM,
            LEAF_SIGNATURE if self.advertise_hypervisor => {
                let [b, c, d] = hypercall::signature_registers();
                r = CpuIdResult {
                    eax: LEAF_INTERFACE,
                    ebx: b,
                    ecx: c,
                    edx: d,
                };
            }
            LEAF_INTERFACE if self.advertise_hypervisor => {
                r = CpuIdResult {
                    eax: ABI_VERSION,
                    ebx: match vendor {
                        Vendor::Intel => hypercall::INSTRUCTION_VMCALL,
                        Vendor::Amd => hypercall::INSTRUCTION_VMMCALL,
                    },
                    ecx: 0,
                    edx: 0,
                };
            }
            0x4000_0002..=0x4000_00ff => {
                r = CpuIdResult {
                    eax: 0,
                    ebx: 0,
                    ecx: 0,
                    edx: 0,
                };
            }
            _ => {}
        }
        r
    }
}

/// CPUID.(EAX=0DH,ECX=0):EBX for a guest whose XCR0 is `xcr0`: the size of a standard-format
/// XSAVE area for the components XCR0 enables (SDM Vol. 1 13.2 "Enumeration of CPU Support for
/// XSAVE Instructions and XSAVE-Supported Features": each component i ≥ 2 is at offset
/// CPUID.(0DH,i):EBX with size CPUID.(0DH,i):EAX; the legacy region and header take 576 bytes).
/// The host's own value describes the host's XCR0, which may enable fewer components than the
/// guest's.
#[must_use]
pub fn xsave_size(xcr0: u64, host: impl Fn(u32, u32) -> CpuIdResult) -> u32 {
    (2..63u32)
        .filter(|i| xcr0 & (1 << i) != 0)
        .map(|i| {
            let c = host(0xd, i);
            c.ebx.saturating_add(c.eax)
        })
        .fold(576, u32::max)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST1: CpuIdResult = CpuIdResult {
        eax: 0x906ea,
        ebx: 0x0010_0800,
        ecx: 0x7ffa_fbff & !(1 << 31),
        edx: 0xbfeb_fbff,
    };

    #[test]
    fn default_policy_marks_hypervisor_and_hides_virtualization() {
        let p = CpuidPolicy::default();
        let r = p.apply(1, 0, HOST1, false, Vendor::Intel);
        assert_ne!(r.ecx & LEAF1_ECX_HYPERVISOR, 0);
        assert_eq!(r.ecx & LEAF1_ECX_VMX, 0);
        assert_eq!(r.ecx & LEAF1_ECX_OSXSAVE, 0);
        assert_ne!(
            p.apply(1, 0, HOST1, true, Vendor::Intel).ecx & LEAF1_ECX_OSXSAVE,
            0
        );
        assert_eq!((r.eax, r.edx), (HOST1.eax, HOST1.edx));
        let ext = CpuIdResult {
            eax: 0,
            ebx: 0,
            ecx: 0xffff_ffff,
            edx: 0,
        };
        assert_eq!(
            p.apply(0x8000_0001, 0, ext, false, Vendor::Amd).ecx,
            !EXT1_ECX_SVM
        );
        let sig = p.apply(LEAF_SIGNATURE, 0, ext, false, Vendor::Amd);
        assert_eq!(sig.eax, LEAF_INTERFACE);
        assert_eq!(
            [sig.ebx, sig.ecx, sig.edx],
            hypercall::signature_registers()
        );
        let i = p.apply(LEAF_INTERFACE, 0, ext, false, Vendor::Amd);
        assert_eq!(
            (i.eax, i.ebx),
            (ABI_VERSION, hypercall::INSTRUCTION_VMMCALL)
        );
        assert_eq!(p.apply(0x4000_0005, 0, ext, false, Vendor::Amd).ecx, 0);
        assert!(p.needs_guest_cr4(1) && !p.needs_guest_cr4(0));
    }

    #[test]
    fn xsave_size_follows_the_guest_xcr0() {
        // Skylake-like: AVX (2) at 576 + 256, AVX-512 (5–7) at 1088/1152/1664.
        let host = |leaf: u32, sub: u32| {
            assert_eq!(leaf, 0xd);
            let (eax, ebx) = match sub {
                2 => (256, 576),
                5 => (64, 1088),
                6 => (512, 1152),
                7 => (1024, 1664),
                _ => (0, 0),
            };
            CpuIdResult {
                eax,
                ebx,
                ecx: 0,
                edx: 0,
            }
        };
        assert_eq!(xsave_size(0x3, host), 576);
        assert_eq!(xsave_size(0x7, host), 832);
        assert_eq!(xsave_size(0xe7, host), 2688);
    }

    #[test]
    fn overrides_win_and_fill_up() {
        let mut p = CpuidPolicy::default();
        let mine = CpuIdResult {
            eax: 1,
            ebx: 2,
            ecx: 3,
            edx: 4,
        };
        p.set(7, Some(0), mine).unwrap();
        p.set(7, Some(0), CpuIdResult { eax: 9, ..mine }).unwrap();
        assert_eq!(p.apply(7, 0, HOST1, false, Vendor::Intel).eax, 9);
        assert_eq!(p.apply(7, 1, HOST1, false, Vendor::Intel), HOST1);
        p.set(0xb, None, mine).unwrap();
        assert_eq!(p.apply(0xb, 3, HOST1, false, Vendor::Intel), mine);
        for leaf in 0x100..0x100 + (MAX_OVERRIDES as u32 - 2) {
            p.set(leaf, None, mine).unwrap();
        }
        assert_eq!(p.set(0x999, None, mine), Err(PolicyFull));
        p.advertise_hypervisor = false;
        assert_eq!(
            p.apply(LEAF_SIGNATURE, 0, HOST1, false, Vendor::Intel),
            HOST1
        );
    }
}
