//! Reading the running processor's state: the host state a VMCS restores on exit, the state a
//! "blue-pill" guest starts from (with [`SyscallMsrs`], which a [`GuestState`] does not
//! describe), and the host's CPUID/XCR0 facts; and the way back: loading the guest's values of
//! the state the world switch keeps in the VMCS/VMCB into the processor when a blue-pill guest
//! continues natively (`crate::Vcpu::load_native_state`).
//!
//! Manuals: Intel® 64 and IA-32 Architectures Software Developer's Manual, Combined Volumes, Order
//! Number 325462-086US, December 2024: Vol. 3A 3.4.5 "Segment Descriptors", 8.2.3 "TSS
//! Descriptor in 64-bit mode" (16-byte system descriptors), 2.5 "Control Registers"; Vol. 3C
//! 25.5 "Host-State Area"; Vol. 4 Table 2-2 (IA32_FS_BASE C000_0100H, IA32_GS_BASE C000_0101H,
//! IA32_EFER C000_0080H, IA32_PAT 277H, IA32_SYSENTER_CS/ESP/EIP 174H–176H, IA32_STAR
//! C000_0081H, IA32_LSTAR C000_0082H, IA32_CSTAR C000_0083H, IA32_FMASK C000_0084H,
//! IA32_KERNEL_GS_BASE C000_0102H), Vol. 3C 28.5 "Loading Host State" (what a VM exit replaces);
//! AMD64 Architecture Programmer's Manual Volume 2: System Programming, Publication No. 24593,
//! Revision 3.42, March 2024, 15.5.2 "VMSAVE and VMLOAD Instructions" (the state SVM keeps in
//! the VMCB).
// UNSAFETY: reads and writes control registers, segment registers, descriptor tables and MSRs,
// which only ring 0 may do, and reads the GDT through its linear address.
#![expect(
    unsafe_code,
    reason = "privileged register reads and writes and GDT access at ring 0"
)]

use core::arch::asm;

use crate::state::{DescriptorTable, GuestState, Segment, SegmentAccess};
use crate::vmx::HostState;

/// Reads an MSR.
///
/// # Safety
/// - CPL 0, and `msr` exists on this processor.
pub(crate) unsafe fn rdmsr(msr: u32) -> u64 {
    let (low, high): (u32, u32);
    // SAFETY: the caller guarantees CPL 0 and an implemented MSR.
    unsafe {
        asm!("rdmsr", in("ecx") msr, out("eax") low, out("edx") high,
            options(nostack, nomem, preserves_flags));
    }
    (u64::from(high) << 32) | u64::from(low)
}

/// Writes an MSR.
///
/// # Safety
/// - CPL 0, `msr` exists on this processor and `value` is valid for it;
/// - the new value is one the code running afterwards expects (it changes processor behaviour).
pub(crate) unsafe fn wrmsr(msr: u32, value: u64) {
    #[expect(clippy::cast_possible_truncation, reason = "splitting into EDX:EAX")]
    let (low, high) = (value as u32, (value >> 32) as u32);
    // SAFETY: the caller's obligations.
    unsafe {
        asm!("wrmsr", in("ecx") msr, in("eax") low, in("edx") high,
            options(nostack, nomem, preserves_flags));
    }
}

/// IA32_STAR.
const IA32_STAR: u32 = 0xc000_0081;
/// IA32_LSTAR.
const IA32_LSTAR: u32 = 0xc000_0082;
/// IA32_CSTAR.
const IA32_CSTAR: u32 = 0xc000_0083;
/// IA32_FMASK (SFMASK in the APM).
const IA32_FMASK: u32 = 0xc000_0084;
/// IA32_KERNEL_GS_BASE.
const IA32_KERNEL_GS_BASE: u32 = 0xc000_0102;
/// IA32_FS_BASE.
const IA32_FS_BASE: u32 = 0xc000_0100;
/// IA32_GS_BASE.
const IA32_GS_BASE: u32 = 0xc000_0101;
/// IA32_SYSENTER_CS, _ESP, _EIP.
const IA32_SYSENTER_CS: u32 = 0x174;
const IA32_SYSENTER_ESP: u32 = 0x175;
const IA32_SYSENTER_EIP: u32 = 0x176;
/// IA32_EFER.
const IA32_EFER: u32 = 0xc000_0080;
/// IA32_PAT.
const IA32_PAT: u32 = 0x277;

/// The SYSCALL/SWAPGS MSRs, which a [`GuestState`] does not describe: SVM keeps them in the
/// VMCB and VMLOAD loads them at every entry (APM 15.5.2 "VMSAVE and VMLOAD Instructions"), VMX
/// leaves them to the processor (the guest sees the host's values).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SyscallMsrs {
    /// IA32_KERNEL_GS_BASE (KernelGsBase, swapped with GS base by SWAPGS).
    pub kernel_gs_base: u64,
    /// IA32_STAR (SYSCALL/SYSRET selectors).
    pub star: u64,
    /// IA32_LSTAR (64-bit SYSCALL entry).
    pub lstar: u64,
    /// IA32_CSTAR (compatibility-mode SYSCALL entry).
    pub cstar: u64,
    /// IA32_FMASK / SFMASK (RFLAGS bits SYSCALL clears).
    pub sfmask: u64,
}

impl SyscallMsrs {
    /// This processor's values.
    ///
    /// # Safety
    /// - CPL 0 on a 64-bit processor (the five MSRs exist whenever long mode does).
    #[must_use]
    pub unsafe fn current() -> Self {
        // SAFETY: CPL 0 and long mode (the caller's obligations), so the MSRs exist.
        let msr = |index: u32| unsafe { rdmsr(index) };
        Self {
            kernel_gs_base: msr(IA32_KERNEL_GS_BASE),
            star: msr(IA32_STAR),
            lstar: msr(IA32_LSTAR),
            cstar: msr(IA32_CSTAR),
            sfmask: msr(IA32_FMASK),
        }
    }
}

/// What a VM exit replaced with host-state values (SDM Vol. 3C 28.5 "Loading Host State": FS
/// and GS bases, GDTR/IDTR bases with limits set to FFFFH, SYSENTER MSRs, EFER and PAT when the
/// exit controls load them, and LDTR made unusable), with the guest's values from the VMCS.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub(crate) struct VmxNativeState {
    pub(crate) fs_base: u64,
    pub(crate) gs_base: u64,
    pub(crate) gdtr: DescriptorTable,
    pub(crate) idtr: DescriptorTable,
    pub(crate) sysenter_cs: u64,
    pub(crate) sysenter_esp: u64,
    pub(crate) sysenter_eip: u64,
    pub(crate) ldtr: u16,
    pub(crate) efer: u64,
    pub(crate) pat: u64,
}

/// Loads a descriptor-table register pair.
///
/// # Safety
/// - CPL 0; both tables are the ones the code running afterwards uses (valid, mapped).
pub(crate) unsafe fn load_descriptor_tables(gdtr: DescriptorTable, idtr: DescriptorTable) {
    let g = TableRegister {
        limit: gdtr.limit,
        base: gdtr.base,
    };
    let i = TableRegister {
        limit: idtr.limit,
        base: idtr.base,
    };
    // SAFETY: the caller's obligations; LGDT/LIDT read the 10 bytes of the locals.
    unsafe {
        asm!("lgdt [{0}]", "lidt [{1}]", in(reg) &raw const g, in(reg) &raw const i,
            options(nostack, readonly, preserves_flags));
    }
}

impl VmxNativeState {
    /// Loads the guest's values into the processor (an MSR only when it differs, so EFER and
    /// PAT are normally left alone). KernelGsBase, STAR, LSTAR, CSTAR and SFMASK need nothing:
    /// VMX does not switch them. The TR limit (67H after an exit) is the caller's: only LTR of a
    /// non-busy descriptor sets it.
    ///
    /// # Safety
    /// - CPL 0 in 64-bit mode, VMX exited, on the processor whose VMCS gave these values, and
    ///   the code running afterwards is the guest's (the same kernel: its GDT, IDT, GS base);
    /// - `ldtr` is 0 or selects an LDT descriptor in that GDT.
    pub(crate) unsafe fn load(&self) {
        // SAFETY: the caller's obligations: the guest's own tables.
        unsafe { load_descriptor_tables(self.gdtr, self.idtr) };
        // SAFETY: CPL 0; LLDT of 0 makes LDTR unusable, otherwise the caller guarantees an LDT
        // descriptor.
        unsafe { asm!("lldt {0:x}", in(reg) self.ldtr, options(nostack, preserves_flags)) };
        for (msr, value) in [
            (IA32_FS_BASE, self.fs_base),
            (IA32_GS_BASE, self.gs_base),
            (IA32_SYSENTER_CS, self.sysenter_cs),
            (IA32_SYSENTER_ESP, self.sysenter_esp),
            (IA32_SYSENTER_EIP, self.sysenter_eip),
            (IA32_EFER, self.efer),
            (IA32_PAT, self.pat),
        ] {
            // SAFETY: CPL 0; these MSRs exist on every VMX processor in 64-bit mode.
            let current = unsafe { rdmsr(msr) };
            if current != value {
                // SAFETY: as above; the value is the guest's, which the processor accepted at
                // VM entry, and the guest's code runs next.
                unsafe { wrmsr(msr, value) };
            }
        }
    }
}

/// Control registers CR0, CR3, CR4.
///
/// # Safety
/// - CPL 0.
unsafe fn control_registers() -> (u64, u64, u64) {
    let (cr0, cr3, cr4): (u64, u64, u64);
    // SAFETY: the caller guarantees CPL 0; reading CRs has no side effects.
    unsafe {
        asm!("mov {0}, cr0", "mov {1}, cr3", "mov {2}, cr4", out(reg) cr0, out(reg) cr3,
            out(reg) cr4, options(nostack, nomem, preserves_flags));
    }
    (cr0, cr3, cr4)
}

#[derive(Clone, Copy)]
struct Selectors {
    cs: u16,
    ss: u16,
    ds: u16,
    es: u16,
    fs: u16,
    gs: u16,
    tr: u16,
    ldtr: u16,
}

fn selectors() -> Selectors {
    let (cs, ss, ds, es, fs, gs, tr, ldtr): (u16, u16, u16, u16, u16, u16, u16, u16);
    // SAFETY: MOV from segment registers, STR and SLDT only read registers (STR/SLDT are
    // allowed at any CPL unless CR4.UMIP, and this module runs at ring 0).
    unsafe {
        asm!("mov {0:x}, cs", "mov {1:x}, ss", "mov {2:x}, ds", "mov {3:x}, es",
            "mov {4:x}, fs", "mov {5:x}, gs", "str {6:x}", "sldt {7:x}",
            out(reg) cs, out(reg) ss, out(reg) ds, out(reg) es, out(reg) fs, out(reg) gs,
            out(reg) tr, out(reg) ldtr, options(nostack, nomem, preserves_flags));
    }
    Selectors {
        cs,
        ss,
        ds,
        es,
        fs,
        gs,
        tr,
        ldtr,
    }
}

#[repr(C, packed)]
#[derive(Clone, Copy, Default)]
struct TableRegister {
    limit: u16,
    base: u64,
}

fn descriptor_tables() -> (DescriptorTable, DescriptorTable) {
    let mut gdtr = TableRegister::default();
    let mut idtr = TableRegister::default();
    // SAFETY: SGDT/SIDT store 10 bytes into the given locals.
    unsafe {
        asm!("sgdt [{0}]", "sidt [{1}]", in(reg) &raw mut gdtr, in(reg) &raw mut idtr,
            options(nostack, preserves_flags));
    }
    let (g, i) = (gdtr, idtr);
    (
        DescriptorTable {
            base: g.base,
            limit: g.limit,
        },
        DescriptorTable {
            base: i.base,
            limit: i.limit,
        },
    )
}

/// The segment named by `selector` as the GDT describes it (LDT selectors and the null
/// selector give an unusable segment).
///
/// # Safety
/// - `gdt` is the GDTR of this processor, and its table is readable at its linear address.
unsafe fn segment(gdt: DescriptorTable, selector: u16, system: bool) -> Segment {
    let index = u64::from(selector & !7);
    if selector & !3 == 0 || selector & 4 != 0 || index + 7 > u64::from(gdt.limit) {
        return Segment {
            selector,
            ..Segment::NULL
        };
    }
    let at = (gdt.base + index) as *const u64;
    // SAFETY: the descriptor lies within the GDT limit (checked), which the caller guarantees
    // is readable.
    let low = unsafe { at.read_unaligned() };
    let mut base = ((low >> 16) & 0xff_ffff) | (((low >> 56) & 0xff) << 24);
    if system && index + 15 <= u64::from(gdt.limit) {
        // SAFETY: the upper half of a 16-byte system descriptor, also within the limit.
        let high = unsafe { at.wrapping_add(1).read_unaligned() };
        base |= (high & 0xffff_ffff) << 32;
    }
    let mut access = SegmentAccess::from_descriptor(low);
    if access.code_or_data() {
        // Loading a code or data segment sets the accessed bit (SDM 3.4.5.1); the descriptor in
        // memory may not show it yet, and VMX requires it of a usable CS/SS/DS… (SDM 27.3.1.2).
        access.0 |= 1;
    }
    let raw_limit = ((low & 0xffff) | (((low >> 48) & 0xf) << 16)) as u32;
    let limit = if access.granularity() {
        (raw_limit << 12) | 0xfff
    } else {
        raw_limit
    };
    Segment {
        selector,
        base,
        limit,
        access,
    }
}

/// The host state of this processor, for the VMCS host-state area.
///
/// # Safety
/// - CPL 0 in 64-bit mode, and the GDT is readable at its linear address.
#[must_use]
pub unsafe fn host_state() -> HostState {
    // SAFETY: the caller guarantees CPL 0.
    let (cr0, cr3, cr4) = unsafe { control_registers() };
    let s = selectors();
    let (gdtr, idtr) = descriptor_tables();
    // SAFETY: the caller guarantees the GDT is readable.
    let tr = unsafe { segment(gdtr, s.tr, true) };
    // SAFETY: CPL 0 (the caller's obligation), and the MSRs read below exist on every 64-bit
    // processor (IA32_PAT and the SYSENTER MSRs since the P6 family).
    let msr = |index: u32| unsafe { rdmsr(index) };
    let (fs_base, gs_base, efer, pat) = (
        msr(0xc000_0100),
        msr(0xc000_0101),
        msr(0xc000_0080),
        msr(0x277),
    );
    let (cs, esp, eip) = (msr(0x174), msr(0x175), msr(0x176));
    HostState {
        cr0,
        cr3,
        cr4,
        cs: s.cs,
        ss: s.ss,
        ds: s.ds,
        es: s.es,
        fs: s.fs,
        gs: s.gs,
        tr: s.tr,
        fs_base,
        gs_base,
        tr_base: tr.base,
        gdtr_base: gdtr.base,
        idtr_base: idtr.base,
        sysenter_cs: cs as u32,
        sysenter_esp: esp,
        sysenter_eip: eip,
        efer,
        pat,
    }
}

/// The current processor state as a guest state ("blue pill"): control registers, segments with
/// their hidden parts from the GDT, descriptor tables, EFER, PAT and SYSENTER MSRs. RIP, RSP and
/// the GPRs are the caller's to set (usually a continuation point in the host's own code).
///
/// # Safety
/// - CPL 0 in 64-bit mode, and the GDT is readable at its linear address.
#[must_use]
pub unsafe fn current_state(rip: u64, rsp: u64) -> GuestState {
    // SAFETY: the caller's obligations are this function's.
    let host = unsafe { host_state() };
    let s = selectors();
    let (gdtr, idtr) = descriptor_tables();
    // SAFETY: the caller guarantees the GDT is readable.
    let seg = |selector: u16, system: bool| unsafe { segment(gdtr, selector, system) };
    let mut fs = seg(s.fs, false);
    let mut gs = seg(s.gs, false);
    fs.base = host.fs_base;
    gs.base = host.gs_base;
    let mut state = GuestState::long_mode_flat(host.cr3, rip, rsp);
    state.cr0 = host.cr0;
    state.cr4 = host.cr4 & !crate::state::CR4_VMXE;
    state.efer = host.efer;
    state.pat = host.pat;
    state.cs = seg(s.cs, false);
    state.ss = seg(s.ss, false);
    state.ds = seg(s.ds, false);
    state.es = seg(s.es, false);
    state.fs = fs;
    state.gs = gs;
    state.tr = seg(s.tr, true);
    state.ldtr = seg(s.ldtr, true);
    state.gdtr = gdtr;
    state.idtr = idtr;
    state.sysenter_cs = host.sysenter_cs;
    state.sysenter_esp = host.sysenter_esp;
    state.sysenter_eip = host.sysenter_eip;
    state
}
