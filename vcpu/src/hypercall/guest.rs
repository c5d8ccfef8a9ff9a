//! The guest side of the hvkit hypercall ABI: detect hvkit and call it.
//!
//! ```no_run
//! use hvkit_vcpu::hypercall::{self, guest};
//!
//! if let Some(hv) = guest::detect() {
//!     // SAFETY: running as a guest of hvkit (just detected); PING changes no guest state.
//!     let reply = unsafe { hv.call(hypercall::PING, [7, 0, 0, 0]) };
//!     assert_eq!(reply, hypercall::PING_REPLY + 7);
//! }
//! ```
//!
//! Manuals: see [`crate::hypercall`]; CPUID per SDM Vol. 2A "CPUID—CPU Identification" (leaf 1
//! ECX bit 31 "hypervisor present" is reserved for hypervisors).
// UNSAFETY: calls the vendor crates' VMCALL/VMMCALL wrappers, which transfer control to the
// hypervisor.
#![expect(unsafe_code, reason = "VMCALL and VMMCALL")]

use raw_cpuid::native_cpuid::cpuid_count;

use super::{
    INSTRUCTION_VMCALL, INSTRUCTION_VMMCALL, LEAF_INTERFACE, LEAF_SIGNATURE, signature_registers,
};

/// The hypercall instruction of the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Instruction {
    /// VMCALL (Intel VT-x).
    Vmcall,
    /// VMMCALL (AMD-V).
    Vmmcall,
}

/// A detected hvkit host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Hvkit {
    /// The ABI version (leaf 0x4000_0001 EAX).
    pub version: u32,
    /// The instruction to use.
    pub instruction: Instruction,
}

/// Looks for hvkit: CPUID.1:ECX\[31\] (hypervisor present), the signature at leaf 0x4000_0000 and
/// a known instruction at leaf 0x4000_0001. CPUID is safe anywhere.
#[must_use]
pub fn detect() -> Option<Hvkit> {
    if cpuid_count(1, 0).ecx & (1 << 31) == 0 {
        return None;
    }
    let sig = cpuid_count(LEAF_SIGNATURE, 0);
    if [sig.ebx, sig.ecx, sig.edx] != signature_registers() || sig.eax < LEAF_INTERFACE {
        return None;
    }
    let iface = cpuid_count(LEAF_INTERFACE, 0);
    let instruction = match iface.ebx {
        INSTRUCTION_VMCALL => Instruction::Vmcall,
        INSTRUCTION_VMMCALL => Instruction::Vmmcall,
        _ => return None,
    };
    Some(Hvkit {
        version: iface.eax,
        instruction,
    })
}

impl Hvkit {
    /// Issues hypercall `number` with `args` (RBX, RCX, RDX, RSI) and returns RAX.
    ///
    /// # Safety
    /// - This code runs as a guest of an hvkit host (as [`detect`] found), otherwise the
    ///   instruction raises #UD;
    /// - the hypercall's effect on guest state (defined by the host for `number`) does not break
    ///   this program's memory safety.
    #[doc(alias = "vmcall")]
    #[doc(alias = "vmmcall")]
    pub unsafe fn call(&self, number: u64, args: [u64; 4]) -> u64 {
        let [rbx, rcx, rdx, rsi] = args;
        match self.instruction {
            Instruction::Vmcall => {
                let mut regs = hvkit_vmx::instructions::HypercallRegisters {
                    rax: number,
                    rbx,
                    rcx,
                    rdx,
                    rsi,
                };
                // SAFETY: the caller meets the contract: a guest of an hvkit host on VT-x (VMX
                // non-root operation), whose handler keeps this program memory-safe.
                unsafe { hvkit_vmx::instructions::vmcall_from_guest(&mut regs) };
                regs.rax
            }
            Instruction::Vmmcall => {
                let mut regs = hvkit_svm::instructions::HypercallRegisters {
                    rax: number,
                    rbx,
                    rcx,
                    rdx,
                    rsi,
                    rdi: 0,
                };
                // SAFETY: as above, on AMD-V, where hvkit intercepts VMMCALL.
                unsafe { hvkit_svm::instructions::vmmcall(&mut regs) };
                regs.rax
            }
        }
    }
}
