//! Virtualizing the running CPU ("blue pill") and giving it back.
//!
//! `hvkit_enter` (assembly) saves the callee-saved registers on the kernel stack, then calls
//! [`hvkit_host_main`] on a fresh host stack from the pool with the kernel stack pointer and a
//! continuation label as the guest's RSP and RIP. `hvkit_host_main` captures the CPU as a guest
//! state (`capture::current_state`), switches to its own CR3 (a pool copy of the kernel half of
//! the current top-level table, so the host never depends on a process's page tables), builds a
//! [`Vcpu`] with an identity EPT/NPT over everything but the pool, and runs the guest forever: the
//! guest starts at the continuation label, pops the registers and returns 0 to the C shim, as if
//! `hvkit_enter` had returned.
//!
//! Devirtualizing is hypercall [`DEVIRTUALIZE`] made from `hvkit_devirtualize_vmcall`/`vmmcall`
//! (the only place the host accepts it from, at CPL 0): the host completes it, has hvkit-vcpu
//! load the guest's values of the state the world switch keeps in the VMCB/VMCS
//! (`Vcpu::load_native_state`: SVM's VMLOAD set, VMX's host-state fields), drops the vCPU
//! (VMXOFF / EFER.SVME off, frames back to the pool) and `hvkit_resume_native` loads the guest's
//! registers, CR3, CR4, RFLAGS and RIP into the processor. What only the kernel can do (TR's
//! limit through `invalidate_tss_limit()`, CR4.VMXE through its CR4 helpers) stays in the shim.
//!
//! Manuals: Intel® 64 and IA-32 Architectures Software Developer's Manual, Combined Volumes, Order
//! Number 325462-086US, December 2024, Vol. 3C 31.3 "VMCALL"; AMD64 Architecture Programmer's
//! Manual Volume 2: System Programming, Publication No. 24593, Revision 3.42, March 2024, 15.18
//! "VMMCALL Instruction", 15.25 "Nested Paging".
// UNSAFETY: the stack switch, the continuation and the return to native execution are assembly;
// `Vcpu::new` is unsafe; the host CR3 is built and loaded by hand.
#![expect(
    unsafe_code,
    reason = "the blue-pill stack switch, CR3 and the return to native execution"
)]

use core::arch::{asm, global_asm};
use core::mem::offset_of;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use hvkit_paging::{GuestPhysAddr, HostPhysAddr, MemoryType, Mtrrs};
use hvkit_vcpu::memory::{MemoryMap, Region, RegionKind};
use hvkit_vcpu::platform::OwnedFrames;
use hvkit_vcpu::state::SegmentName;
use hvkit_vcpu::{Event, ExitKind, GuestRegisters, Platform, Vcpu, VcpuConfig};

use crate::platform::{PLATFORM, log};
use crate::stats::{CpuStats, STATS};

/// The hypercall that ends virtualization on the calling CPU (the first user number).
pub const DEVIRTUALIZE: u64 = hvkit_vcpu::hypercall::FIRST_USER;

/// Frames of host stack per CPU (32 KiB).
const STACK_FRAMES: usize = 8;

/// What `hvkit_resume_native` loads.
#[repr(C)]
#[derive(Debug, Default)]
struct Native {
    regs: GuestRegisters,
    rip: u64,
    rsp: u64,
    rflags: u64,
    cr3: u64,
    cr4: u64,
}

// Every return goes through the kernel's return thunk (Debian's kernel is a RETHUNK build:
// objtool refuses bare `ret`s, and the thunk may be patched to a mitigation at boot), followed
// by `int3` against straight-line speculation. Each routine is a sized function symbol;
// `hvkit_enter` and `hvkit_resume_native` switch stacks, which objtool cannot follow: they are
// listed in `.discard.func_stack_frame_non_standard`, as the kernel's
// `STACK_FRAME_NON_STANDARD()` does, so objtool leaves them out of its stack validation.
global_asm!(
    ".pushsection .text.hvkit_enter, \"ax\"",
    ".global hvkit_enter",
    ".type hvkit_enter, @function",
    ".p2align 4",
    // rdi = CPU index, rsi = host stack top (16-byte aligned).
    "hvkit_enter:",
    "push rbp",
    "push rbx",
    "push r12",
    "push r13",
    "push r14",
    "push r15",
    "mov rbx, rsp",
    "mov rdx, rsp",
    "lea rcx, [rip + 2f]",
    "mov rsp, rsi",
    "call hvkit_host_main",
    // Only on failure (RAX = negative error): back on the kernel stack, not virtualized.
    "mov rsp, rbx",
    "jmp 3f",
    // The guest starts here with RSP = the kernel stack above and RAX = 0.
    "2:",
    "3:",
    "pop r15",
    "pop r14",
    "pop r13",
    "pop r12",
    "pop rbx",
    "pop rbp",
    "jmp __x86_return_thunk",
    "int3",
    ".size hvkit_enter, . - hvkit_enter",
    ".popsection",
    ".pushsection .text.hvkit_devirtualize, \"ax\"",
    ".global hvkit_devirtualize_vmmcall",
    ".global hvkit_devirtualize_vmcall",
    ".global hvkit_devirtualize_vmmcall_insn",
    ".global hvkit_devirtualize_vmcall_insn",
    ".type hvkit_devirtualize_vmmcall, @function",
    ".type hvkit_devirtualize_vmcall, @function",
    ".p2align 4",
    "hvkit_devirtualize_vmmcall:",
    "push rbx",
    "mov rax, {devirt}",
    "xor ebx, ebx",
    "xor ecx, ecx",
    "xor edx, edx",
    "xor esi, esi",
    "hvkit_devirtualize_vmmcall_insn:",
    "vmmcall",
    "pop rbx",
    "jmp __x86_return_thunk",
    "int3",
    ".size hvkit_devirtualize_vmmcall, . - hvkit_devirtualize_vmmcall",
    ".p2align 4",
    "hvkit_devirtualize_vmcall:",
    "push rbx",
    "mov rax, {devirt}",
    "xor ebx, ebx",
    "xor ecx, ecx",
    "xor edx, edx",
    "xor esi, esi",
    "hvkit_devirtualize_vmcall_insn:",
    "vmcall",
    "pop rbx",
    "jmp __x86_return_thunk",
    "int3",
    ".size hvkit_devirtualize_vmcall, . - hvkit_devirtualize_vmcall",
    ".popsection",
    ".pushsection .text.hvkit_resume_native, \"ax\"",
    ".global hvkit_resume_native",
    ".type hvkit_resume_native, @function",
    ".p2align 4",
    // rdi = &Native. Never returns.
    "hvkit_resume_native:",
    "mov rax, [rdi + {cr4}]",
    "mov cr4, rax",
    "mov rax, [rdi + {cr3}]",
    "mov cr3, rax",
    "mov rsp, [rdi + {rsp}]",
    "push qword ptr [rdi + {rip}]",
    "push qword ptr [rdi + {rflags}]",
    "mov rax, [rdi + {rax}]",
    "mov rbx, [rdi + {rbx}]",
    "mov rcx, [rdi + {rcx}]",
    "mov rdx, [rdi + {rdx}]",
    "mov rsi, [rdi + {rsi}]",
    "mov rbp, [rdi + {rbp}]",
    "mov r8, [rdi + {r8}]",
    "mov r9, [rdi + {r9}]",
    "mov r10, [rdi + {r10}]",
    "mov r11, [rdi + {r11}]",
    "mov r12, [rdi + {r12}]",
    "mov r13, [rdi + {r13}]",
    "mov r14, [rdi + {r14}]",
    "mov r15, [rdi + {r15}]",
    "mov rdi, [rdi + {rdi}]",
    "popfq",
    "jmp __x86_return_thunk",
    "int3",
    ".size hvkit_resume_native, . - hvkit_resume_native",
    ".popsection",
    ".pushsection .discard.func_stack_frame_non_standard, \"awR\"",
    ".p2align 3",
    ".quad hvkit_enter",
    ".quad hvkit_resume_native",
    ".popsection",
    devirt = const DEVIRTUALIZE,
    cr4 = const offset_of!(Native, cr4),
    cr3 = const offset_of!(Native, cr3),
    rsp = const offset_of!(Native, rsp),
    rip = const offset_of!(Native, rip),
    rflags = const offset_of!(Native, rflags),
    rax = const offset_of!(Native, regs) + GuestRegisters::OFFSET_RAX,
    rbx = const offset_of!(Native, regs) + GuestRegisters::OFFSET_RBX,
    rcx = const offset_of!(Native, regs) + GuestRegisters::OFFSET_RCX,
    rdx = const offset_of!(Native, regs) + GuestRegisters::OFFSET_RDX,
    rsi = const offset_of!(Native, regs) + GuestRegisters::OFFSET_RSI,
    rdi = const offset_of!(Native, regs) + GuestRegisters::OFFSET_RDI,
    rbp = const offset_of!(Native, regs) + GuestRegisters::OFFSET_RBP,
    r8 = const offset_of!(Native, regs) + GuestRegisters::OFFSET_R8,
    r9 = const offset_of!(Native, regs) + GuestRegisters::OFFSET_R9,
    r10 = const offset_of!(Native, regs) + GuestRegisters::OFFSET_R10,
    r11 = const offset_of!(Native, regs) + GuestRegisters::OFFSET_R11,
    r12 = const offset_of!(Native, regs) + GuestRegisters::OFFSET_R12,
    r13 = const offset_of!(Native, regs) + GuestRegisters::OFFSET_R13,
    r14 = const offset_of!(Native, regs) + GuestRegisters::OFFSET_R14,
    r15 = const offset_of!(Native, regs) + GuestRegisters::OFFSET_R15,
);

unsafe extern "C" {
    fn hvkit_enter(cpu: u64, stack_top: u64) -> i64;
    fn hvkit_resume_native(native: *const Native) -> !;
    /// The devirtualizing hypercall (AMD).
    pub fn hvkit_devirtualize_vmmcall() -> i64;
    /// The devirtualizing hypercall (Intel).
    pub fn hvkit_devirtualize_vmcall() -> i64;
    static hvkit_devirtualize_vmmcall_insn: u8;
    static hvkit_devirtualize_vmcall_insn: u8;
}

/// Whether this is an Intel (VMX) machine, set by [`detect`] before any CPU is virtualized (the
/// guest's CPUID hides VMX and SVM, so code running in the guest cannot ask `detect_vendor`).
static INTEL: AtomicBool = AtomicBool::new(false);

/// Records the vendor (natively, at load).
pub fn detect() {
    let intel = hvkit_vcpu::detect_vendor() == Some(hvkit_vcpu::cpuid::Vendor::Intel);
    INTEL.store(intel, Ordering::Relaxed);
}

/// Intel (VMX) rather than AMD (SVM), as [`detect`] found.
pub fn intel() -> bool {
    INTEL.load(Ordering::Relaxed)
}

/// Error numbers returned to C (negated errno values).
const ENOMEM: i64 = -12;
const EIO: i64 = -5;

/// Virtualizes the calling CPU (interrupts off, kernel FPU section open, XCR0 saved by the
/// caller). Returns 0 in the guest, or a negative errno with the CPU unchanged.
///
/// # Safety
/// - CPL 0 with interrupts disabled, on the CPU `cpu`, which is not virtualized yet;
/// - the platform is initialized and nothing else uses VMX/SVM on this CPU.
pub unsafe fn virtualize(cpu: usize) -> i64 {
    let Ok(stack) = OwnedFrames::allocate(&PLATFORM, STACK_FRAMES) else {
        return ENOMEM;
    };
    let top = stack.as_ptr().as_ptr() as u64 + stack.len_bytes() as u64;
    let (stack_phys, stack_count) = stack.into_raw();
    // SAFETY: CPL 0, interrupts off (the caller's obligations); the stack is 32 KiB of pool
    // memory this CPU alone uses; `hvkit_enter` returns here either in the guest (0) or after a
    // failure of `hvkit_host_main` (which gave back everything but the stack).
    let result = unsafe { hvkit_enter(cpu as u64, top) };
    if result != 0 {
        // SAFETY: the host never ran, so nothing uses the stack any more.
        unsafe { PLATFORM.free_frames(stack_phys, stack_count) };
    } else {
        STACKS[cpu.min(crate::MAX_CPUS - 1)].store(stack_phys.as_u64(), Ordering::Release);
    }
    result
}

/// The host stack of each virtualized CPU (physical), freed after devirtualization.
static STACKS: [AtomicU64; crate::MAX_CPUS] = [const { AtomicU64::new(0) }; crate::MAX_CPUS];

/// Frees the host stack of a CPU that was devirtualized.
pub fn free_stack(cpu: usize) {
    let Some(slot) = STACKS.get(cpu) else { return };
    let phys = slot.swap(0, Ordering::AcqRel);
    if let Ok(phys) = HostPhysAddr::try_new(phys)
        && phys.as_u64() != 0
    {
        // SAFETY: the stack came from `virtualize` and the CPU no longer runs its host loop.
        unsafe { PLATFORM.free_frames(phys, STACK_FRAMES) };
    }
}

fn read_cr3() -> u64 {
    let cr3: u64;
    // SAFETY: reading CR3 at CPL 0 has no side effects.
    unsafe { asm!("mov {}, cr3", out(reg) cr3, options(nostack, nomem, preserves_flags)) };
    cr3
}

/// XCR0 (only with CR4.OSXSAVE set).
fn host_xcr0() -> u64 {
    let (low, high): (u32, u32);
    // SAFETY: XGETBV of XCR0 is allowed whenever CR4.OSXSAVE is set (the caller checks).
    unsafe {
        asm!("xgetbv", in("ecx") 0, out("eax") low, out("edx") high,
            options(nostack, nomem, preserves_flags));
    }
    (u64::from(high) << 32) | u64::from(low)
}

fn read_rflags() -> u64 {
    let rflags: u64;
    // SAFETY: PUSHFQ/POP reads RFLAGS.
    unsafe { asm!("pushfq", "pop {}", out(reg) rflags, options(nomem, preserves_flags)) };
    rflags
}

/// A top-level page table for the host: the kernel half (entries 256–511) of the current one.
/// The kernel's upper entries never change after boot (x86-64 preallocates them), so the copy
/// maps the kernel for as long as the module runs.
fn host_page_table() -> Option<OwnedFrames<'static, crate::platform::LinuxPlatform>> {
    let frame = OwnedFrames::allocate(&PLATFORM, 1).ok()?;
    let current = read_cr3() & 0x000f_ffff_ffff_f000;
    let from = PLATFORM.phys_to_virt(HostPhysAddr::try_new(current).ok()?)?;
    // SAFETY: the current top-level table is a mapped 4 KiB frame (it translates this very
    // code); the copy goes into a fresh pool frame that nothing else uses.
    unsafe {
        core::ptr::copy_nonoverlapping(
            from.as_ptr().add(2048),
            frame.as_ptr().as_ptr().add(2048),
            2048,
        );
    }
    Some(frame)
}

/// Reads an MSR.
///
/// # Safety
/// - CPL 0, and `msr` exists on this processor.
unsafe fn rdmsr(msr: u32) -> u64 {
    let (low, high): (u32, u32);
    // SAFETY: CPL 0 and an implemented MSR (the caller's obligations).
    unsafe {
        asm!("rdmsr", in("ecx") msr, out("eax") low, out("edx") high,
            options(nostack, nomem, preserves_flags));
    }
    (u64::from(high) << 32) | u64::from(low)
}

/// The host's MTRRs (Intel SDM Vol. 3A 12.11 "Memory Type Range Registers (MTRRs)"), or `None`
/// when CPUID.1:EDX.MTRR[bit 12] says there are none.
fn host_mtrrs(phys_bits: u8) -> Option<Mtrrs> {
    if core::arch::x86_64::__cpuid(1).edx & (1 << 12) == 0 {
        return None;
    }
    // SAFETY: CPL 0; IA32_MTRRCAP and IA32_MTRR_DEF_TYPE exist with CPUID.1:EDX.MTRR, and
    // `Mtrrs::read` reads the fixed ranges only when IA32_MTRRCAP.FIX is set and the variable
    // pairs only up to IA32_MTRRCAP.VCNT.
    Some(Mtrrs::read(|msr| unsafe { rdmsr(msr) }, phys_bits))
}

/// How many regions of the identity map got each memory type (index = encoding).
pub type TypeCounts = [u16; 8];

/// The guest-physical map: identity RAM over `0 .. top` except the pool (never mapped, so a
/// guest access to it is a nested-page fault). With `mtrrs` (Intel), each range gets the memory
/// type the host's MTRRs give it, since the EPT type replaces the MTRR type for the guest's
/// accesses (SDM Vol. 3C 29.3.7.2 "Memory Type Used for Translated Guest-Physical Addresses"):
/// device memory such as the local and I/O APICs stays uncacheable. Without (AMD), everything is
/// write-back: NPT entries combine with the host's MTRRs, which still apply (APM 15.25.8
/// "Combining Memory Types, MTRRs").
fn identity_map(mtrrs: Option<&Mtrrs>) -> Option<(MemoryMap, TypeCounts)> {
    let (pool, pool_len) = PLATFORM.pool();
    let phys_bits = raw_cpuid_phys_bits();
    let top = (1u64 << phys_bits.min(39)).max(pool + pool_len);
    let mut map = MemoryMap::new();
    let mut counts = TypeCounts::default();
    let mut ram = |start: u64, end: u64| -> Option<()> {
        let mut add = |start: u64, end: u64, memory_type: MemoryType| {
            let memory_type = if memory_type.is_valid_for_ept() {
                memory_type
            } else {
                MemoryType::UNCACHEABLE
            };
            map.add(Region {
                start: GuestPhysAddr::new_truncate(start),
                len: end - start,
                kind: RegionKind::Ram {
                    host: HostPhysAddr::new_truncate(start),
                    memory_type,
                },
            })
            .ok()?;
            counts[usize::from(memory_type.0 & 7)] += 1;
            Some(())
        };
        match mtrrs {
            Some(m) => m.ranges(start, end).try_for_each(|(s, e, t)| add(s, e, t)),
            None => add(start, end, MemoryType::WRITE_BACK),
        }
    };
    if pool > 0 {
        ram(0, pool)?;
    }
    ram(pool + pool_len, top)?;
    Some((map, counts))
}

/// The local and I/O APICs' pages (and what lies between), which must be uncacheable.
const APIC_AREA: core::ops::Range<u64> = 0xfec0_0000..0xfef0_0000;

/// "WB 3, UC 2, ..." for the load line.
struct TypeLine(TypeCounts);

impl core::fmt::Display for TypeLine {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let mut first = true;
        for t in [6u8, 0, 1, 4, 5] {
            let n = self.0[usize::from(t)];
            if n == 0 {
                continue;
            }
            let name = MemoryType(t).name().unwrap_or("?");
            write!(f, "{}{name} {n}", if first { "" } else { ", " })?;
            first = false;
        }
        Ok(())
    }
}

/// The EPT type of every page of [`APIC_AREA`]: `Some(t)` if all pages have type `t`.
fn apic_area_type<P: Platform>(vcpu: &Vcpu<'_, P>) -> Option<MemoryType> {
    let mut found = None;
    for page in APIC_AREA.step_by(4096) {
        let t = vcpu.nested_memory_type(GuestPhysAddr::new_truncate(page))?;
        if found.is_some_and(|f| f != t) {
            return None;
        }
        found = Some(t);
    }
    found
}

/// The identity map this CPU's vCPU gets, one region per line (`start-end type`), sorted by
/// address; for debugfs.
pub fn write_memory_types(out: &mut impl core::fmt::Write) -> core::fmt::Result {
    let intel = intel();
    let mtrrs = if intel {
        host_mtrrs(raw_cpuid_phys_bits())
    } else {
        None
    };
    let Some((map, _)) = identity_map(mtrrs.as_ref()) else {
        return writeln!(out, "the identity map does not fit");
    };
    let mut regions: [Option<Region>; hvkit_vcpu::memory::MAX_REGIONS] =
        [None; hvkit_vcpu::memory::MAX_REGIONS];
    for (slot, r) in regions.iter_mut().zip(map.regions()) {
        *slot = Some(*r);
    }
    regions.sort_unstable_by_key(|r| r.map(|r| r.start.as_u64()));
    for r in regions.iter().flatten() {
        let RegionKind::Ram { memory_type, .. } = r.kind else {
            continue;
        };
        let (start, end) = (r.start.as_u64(), r.start.as_u64() + r.len - 1);
        let name = memory_type.name().unwrap_or("?");
        let table = if intel { "ept" } else { "npt" };
        writeln!(out, "{start:016x}-{end:016x} {table} {name}")?;
    }
    Ok(())
}

fn raw_cpuid_phys_bits() -> u8 {
    let r = core::arch::x86_64::__cpuid(0x8000_0008);
    (r.eax & 0xff) as u8
}

/// The host side of `hvkit_enter`: runs on the host stack, never returns while the CPU is
/// virtualized (it becomes the guest's continuation instead); returns a negative errno when the
/// CPU could not be virtualized.
#[unsafe(no_mangle)]
extern "C" fn hvkit_host_main(cpu: u64, _stack_top: u64, guest_rsp: u64, guest_rip: u64) -> i64 {
    let cpu = cpu as usize;
    // SAFETY: CPL 0 in 64-bit mode (called from `virtualize`); the kernel's GDT is mapped.
    let mut state = unsafe { hvkit_vcpu::capture::current_state(guest_rip, guest_rsp) };
    state.rflags = read_rflags();
    state.regs = GuestRegisters::default();
    let intel = intel();
    let mtrrs = if intel {
        host_mtrrs(raw_cpuid_phys_bits())
    } else {
        None
    };
    let Some((map, counts)) = identity_map(mtrrs.as_ref()) else {
        log(format_args!(
            "cpu{cpu}: the identity map does not fit in {} regions",
            hvkit_vcpu::memory::MAX_REGIONS
        ));
        return EIO;
    };
    let Some(cr3_frame) = host_page_table() else {
        return ENOMEM;
    };
    let kernel_cr3 = read_cr3();
    // SAFETY: the copy maps the kernel half exactly as the current table does, and this code,
    // its stack and the pool are all kernel memory; PCID 0 is not used by Linux.
    unsafe {
        asm!("mov cr3, {}", in(reg) cr3_frame.phys().as_u64(), options(nostack, preserves_flags));
    }
    let restore_cr3 = || {
        // SAFETY: back to the kernel's own table of this context.
        unsafe { asm!("mov cr3, {}", in(reg) kernel_cr3, options(nostack, preserves_flags)) };
    };
    let state_osxsave = state.cr4 & (1 << 18) != 0;
    let mut config = VcpuConfig::new(state);
    config.memory = map;
    config.vpid = 1;
    // SAFETY: CPL 0 on this CPU, which the host loop never leaves; no other VMX/SVM user (the
    // shim refuses to load next to KVM); the host GDT/IDT/CR/MSR state stays as captured (the
    // host loop changes nothing); the guest is the kernel itself, which already owns every port
    // and MSR it reaches.
    let mut vcpu = match unsafe { Vcpu::new(&PLATFORM, &config) } {
        Ok(v) => v,
        Err(e) => {
            restore_cr3();
            drop(cr3_frame);
            log(format_args!("cpu{cpu}: could not build the vCPU: {e}"));
            return EIO;
        }
    };
    // The kernel's idle loop halts until the next interrupt, which reaches it directly: let it
    // halt instead of exiting (and spinning through the host's skip of HLT).
    let _ = vcpu.set_hlt_exiting(false);
    // SVM keeps the SYSCALL MSRs and KernelGsBase in the VMCB (VMLOAD at every entry): the
    // guest continues with the kernel's. VMX leaves them to the processor.
    // SAFETY: CPL 0 in 64-bit mode.
    let syscall = unsafe { hvkit_vcpu::capture::SyscallMsrs::current() };
    if !vcpu.set_syscall_msrs(&syscall) {
        log(format_args!(
            "cpu{cpu}: the SYSCALL MSRs changed under the capture"
        ));
    }
    // The guest continues with the XCR0 the kernel set at boot.
    if state_osxsave && !vcpu.set_xcr0(host_xcr0()) {
        log(format_args!("cpu{cpu}: the vCPU refused the kernel's XCR0"));
    }
    // ... and with the CPU's x87/SSE/AVX/PKRU state (the shim's kernel-FPU section: FNINIT and
    // the default MXCSR, and the interrupted task's PKRU), not the reset state.
    if !vcpu.capture_extended_state() {
        log(format_args!(
            "cpu{cpu}: the guest starts with the reset FPU state"
        ));
    }
    if cpu == 0 {
        if intel {
            let apic = apic_area_type(&vcpu)
                .and_then(MemoryType::name)
                .unwrap_or("MIXED");
            log(format_args!(
                "ept types: {} ({:x}-{:x} {apic})",
                TypeLine(counts),
                APIC_AREA.start,
                APIC_AREA.end - 1
            ));
        } else {
            log(format_args!(
                "npt types: {} (the host MTRRs combine with them, APM 15.25.8)",
                TypeLine(counts)
            ));
        }
    }
    log(format_args!(
        "cpu{cpu}: {:?} vCPU ready, entering the guest",
        vcpu.vendor()
    ));
    PLATFORM.set_quiet(cpu, true);
    let stats = &STATS[cpu.min(crate::MAX_CPUS - 1)];
    let mut native = host_loop(&mut vcpu, stats);
    // SAFETY: the guest exited on this CPU for the last time, and the kernel's own code runs
    // next (`hvkit_resume_native`): its GDT, IDT, GS base and SYSCALL entry points.
    if unsafe { vcpu.load_native_state() }.is_err() && native.regs.rax == 0 {
        native.regs.rax = EIO as u64;
    }
    PLATFORM.set_quiet(cpu, false);
    drop(vcpu);
    drop(cr3_frame);
    // SAFETY: the vCPU is gone (VMX/SVM off on this CPU), and `native` is the guest's state at
    // the devirtualizing hypercall (or at a failed entry): the kernel continues there.
    unsafe { hvkit_resume_native(&native) }
}

/// Runs the guest until it devirtualizes (or cannot be entered); returns the state to continue
/// natively from.
fn host_loop<P: Platform>(vcpu: &mut Vcpu<'_, P>, stats: &CpuStats) -> Native {
    let vmmcall = (&raw const hvkit_devirtualize_vmmcall_insn) as u64;
    let vmcall = (&raw const hvkit_devirtualize_vmcall_insn) as u64;
    let mut result = 0;
    loop {
        let exit = match vcpu.run() {
            Ok(exit) => exit,
            Err(_) => {
                result = EIO;
                break;
            }
        };
        stats.record(&exit);
        match exit.kind {
            ExitKind::Hypercall(call) if call.number == DEVIRTUALIZE => {
                let rip = vcpu.rip().unwrap_or(0);
                let cpl0 = vcpu
                    .segment(SegmentName::Cs)
                    .is_ok_and(|cs| cs.selector & 3 == 0);
                if cpl0 && (rip == vmmcall || rip == vmcall) {
                    if vcpu.complete_hypercall(0).is_err() {
                        result = EIO;
                    }
                    break;
                }
                let _ = vcpu.complete_hypercall(hvkit_vcpu::hypercall::UNKNOWN);
                continue;
            }
            ExitKind::EntryFailure(_) | ExitKind::Shutdown => {
                result = EIO;
                break;
            }
            _ => {}
        }
        match vcpu.handle_default() {
            Ok(true) => continue,
            Ok(false) => {}
            Err(_) => {
                result = EIO;
                break;
            }
        }
        match exit.kind {
            ExitKind::NestedPageFault(fault) => {
                stats.deny(fault.gpa.as_u64());
                vcpu.inject(Event::GP0);
            }
            ExitKind::Hypercall(_) => {
                let _ = vcpu.complete_hypercall(hvkit_vcpu::hypercall::UNKNOWN);
            }
            ExitKind::Hlt => {
                let _ = vcpu.skip_instruction();
            }
            _ => {
                stats.undefined();
                vcpu.inject(Event::UD);
            }
        }
    }
    let mut native = Native {
        regs: *vcpu.regs(),
        rip: vcpu.rip().unwrap_or(0),
        rsp: vcpu.rsp().unwrap_or(0),
        rflags: vcpu.rflags().unwrap_or(2),
        cr3: vcpu.cr3().unwrap_or(0),
        cr4: vcpu.cr4().unwrap_or(0) & !hvkit_vcpu::state::CR4_VMXE,
    };
    if result != 0 {
        native.regs.rax = result as u64;
    }
    native
}
