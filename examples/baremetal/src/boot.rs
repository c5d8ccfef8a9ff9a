//! Boot: the multiboot1 and multiboot2 headers, the 32-bit entry stub that switches to long mode
//! with an identity map of the low 4 GiB, the GDT with a TSS (VMX rejects host TR = 0), and an IDT
//! whose 32 exception gates report over serial and end the run with a FAIL marker.
//!
//! References: Multiboot Specification 0.6.96 §3.1 "OS image format" (the a.out kludge fields
//! QEMU `-kernel` needs for a 64-bit ELF) and Multiboot2 Specification 2.0 §3.1; Intel SDM
//! (325462-086US) Vol. 3A 10.8.5 "Initializing IA-32e Mode", 4.5 "4-Level Paging and 5-Level
//! Paging", 8.2.3 "TSS Descriptor in 64-bit mode", 7.14.1 "64-Bit Mode IDT".
// UNSAFETY: the boot stub is assembly by nature, and the exception entry point is called from it
// by its unmangled name.
#![expect(
    unsafe_code,
    reason = "boot stub, descriptor tables and exception entry are assembly"
)]

use core::arch::global_asm;
use core::fmt::Write;
use core::ops::Range;

use crate::memmap::{self, LOW_MEMORY_END, MapError, Region, RegionKind, UsableMemory};
use crate::serial::{self, Serial};

/// The end of the identity map the boot stub builds: PML4[0] → one PDPT whose first four
/// entries each point to a page directory of 512 2-MiB pages, so 0..4 GiB.
pub const IDENTITY_MAP_END: u64 = 4 << 30;

/// The GDT selectors set up by the boot stub.
pub mod selectors {
    /// 64-bit ring-0 code segment.
    pub const CODE: u16 = 0x08;
    /// Ring-0 data segment (flat, 4 GiB).
    pub const DATA: u16 = 0x10;
    /// The 64-bit TSS (busy after LTR).
    pub const TSS: u16 = 0x18;
}

/// The size of the TSS minus one (the limit in its descriptor): a 64-bit TSS without an I/O
/// permission bitmap is 104 bytes (SDM Vol. 3A, 8.7 "Task Management in 64-bit Mode").
pub const TSS_LIMIT: u32 = 0x67;

global_asm!(
    r#"
    .section .multiboot, "a"
    // Multiboot 1 header (magic, flags = a.out kludge, checksum, then the kludge addresses).
    .balign 4
mb1_header:
    .long 0x1BADB002
    .long 0x00010000
    .long 0x100000000 - (0x1BADB002 + 0x00010000)
    .long mb1_header
    .long __image_start
    .long __load_end
    .long __bss_end
    .long _start32

    // Multiboot 2 header (magic, architecture 0 = i386, length, checksum, end tag).
    .balign 8
mb2_header:
    .long 0xE85250D6
    .long 0
    .long mb2_header_end - mb2_header
    .long 0x100000000 - (0xE85250D6 + (mb2_header_end - mb2_header))
    .short 0
    .short 0
    .long 8
mb2_header_end:

    .section .boot32, "ax"
    .code32
    .global _start32
_start32:
    cli
    cld
    mov edi, eax
    mov esi, ebx
    mov esp, offset boot_stack_top

    // PML4[0] -> PDPT; PDPT[0..4] -> four page directories of 2 MiB pages covering 0..4 GiB.
    mov eax, offset boot_pdpt
    or eax, 3
    mov dword ptr [boot_pml4], eax
    mov eax, offset boot_pd
    or eax, 3
    xor ecx, ecx
2:
    mov dword ptr [boot_pdpt + ecx * 8], eax
    add eax, 4096
    inc ecx
    cmp ecx, 4
    jb 2b
    mov eax, 0x83
    xor ecx, ecx
3:
    mov dword ptr [boot_pd + ecx * 8], eax
    mov dword ptr [boot_pd + ecx * 8 + 4], 0
    add eax, 0x200000
    inc ecx
    cmp ecx, 2048
    jb 3b

    // The TSS base goes into its GDT descriptor.
    mov eax, offset boot_tss
    mov word ptr [gdt_tss + 2], ax
    shr eax, 16
    mov byte ptr [gdt_tss + 4], al
    mov byte ptr [gdt_tss + 7], ah

    mov eax, offset boot_pml4
    mov cr3, eax
    mov eax, cr4
    or eax, 0x20
    mov cr4, eax
    mov ecx, 0xC0000080
    rdmsr
    or eax, 0x100
    wrmsr
    // CR0: PG, WP, NE, PE set; CD and NW (left set by some BIOSes) cleared.
    mov eax, cr0
    and eax, 0x9FFFFFFF
    or eax, 0x80010021
    mov cr0, eax
    lgdt [gdt_pointer]
    push 0x08
    mov eax, offset long_mode_entry
    push eax
    retf

    .code64
long_mode_entry:
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov fs, ax
    mov gs, ax
    lea rsp, [rip + boot_stack_top]
    mov ax, 0x18
    ltr ax

    // IDT: 33 interrupt gates (present, DPL 0, type 0xE): the 32 exception stubs, then vector
    // 0x20 for the PIT's IRQ 0 once a case remaps the PIC there (`timer_stub`).
    lea r8, [rip + boot_idt]
    lea r9, [rip + exception_stub_table]
    xor ecx, ecx
4:
    mov rax, [r9 + rcx * 8]
    mov word ptr [r8], ax
    mov word ptr [r8 + 2], 0x08
    mov word ptr [r8 + 4], 0x8E00
    shr rax, 16
    mov word ptr [r8 + 6], ax
    shr rax, 16
    mov dword ptr [r8 + 8], eax
    mov dword ptr [r8 + 12], 0
    add r8, 16
    inc ecx
    cmp ecx, 33
    jb 4b
    lidt [rip + idt_pointer]

    mov edi, edi
    mov esi, esi
    call kernel_main
5:
    hlt
    jmp 5b

    .macro EXC_NOERR n
exception_stub_\n:
    push 0
    push \n
    jmp exception_common
    .endm
    .macro EXC_ERR n
exception_stub_\n:
    push \n
    jmp exception_common
    .endm
    EXC_NOERR 0
    EXC_NOERR 1
    EXC_NOERR 2
    EXC_NOERR 3
    EXC_NOERR 4
    EXC_NOERR 5
    EXC_NOERR 6
    EXC_NOERR 7
    EXC_ERR 8
    EXC_NOERR 9
    EXC_ERR 10
    EXC_ERR 11
    EXC_ERR 12
    EXC_ERR 13
    EXC_ERR 14
    EXC_NOERR 15
    EXC_NOERR 16
    EXC_ERR 17
    EXC_NOERR 18
    EXC_NOERR 19
    EXC_NOERR 20
    EXC_ERR 21
    EXC_NOERR 22
    EXC_NOERR 23
    EXC_NOERR 24
    EXC_NOERR 25
    EXC_NOERR 26
    EXC_NOERR 27
    EXC_NOERR 28
    EXC_ERR 29
    EXC_ERR 30
    EXC_NOERR 31

    // IRQ 0 remapped to vector 0x20: count the tick, EOI to the master PIC.
timer_stub:
    push rax
    lock inc qword ptr [rip + timer_ticks]
    mov al, 0x20
    out 0x20, al
    pop rax
    iretq

exception_common:
    mov rdi, rsp
    and rsp, -16
    call exception_handler
6:
    hlt
    jmp 6b

    .section .rodata.boot, "a"
    .balign 8
exception_stub_table:
    .quad exception_stub_0, exception_stub_1, exception_stub_2, exception_stub_3
    .quad exception_stub_4, exception_stub_5, exception_stub_6, exception_stub_7
    .quad exception_stub_8, exception_stub_9, exception_stub_10, exception_stub_11
    .quad exception_stub_12, exception_stub_13, exception_stub_14, exception_stub_15
    .quad exception_stub_16, exception_stub_17, exception_stub_18, exception_stub_19
    .quad exception_stub_20, exception_stub_21, exception_stub_22, exception_stub_23
    .quad exception_stub_24, exception_stub_25, exception_stub_26, exception_stub_27
    .quad exception_stub_28, exception_stub_29, exception_stub_30, exception_stub_31
    .quad timer_stub

    .section .data.boot, "aw"
    .balign 16
boot_gdt:
    .quad 0
    .quad 0x00AF9A000000FFFF
    .quad 0x00CF92000000FFFF
gdt_tss:
    .quad 0x0000890000000067
    .quad 0
boot_gdt_end:
    .balign 8
    .short 0
gdt_pointer:
    .short boot_gdt_end - boot_gdt - 1
    .quad boot_gdt
    .balign 8
    .short 0
idt_pointer:
    .short 33 * 16 - 1
    .quad boot_idt

    .section .bss.boot, "aw", @nobits
    .balign 4096
boot_pml4:
    .skip 4096
boot_pdpt:
    .skip 4096
boot_pd:
    .skip 4 * 4096
boot_idt:
    .skip 33 * 16
    .balign 8
    .global timer_ticks
timer_ticks:
    .skip 8
    .balign 16
    .global boot_tss
boot_tss:
    .skip 104
    .balign 16
boot_stack:
    .skip 64 * 1024
boot_stack_top:
"#
);

/// What the exception stubs push: vector, error code (0 when the CPU pushes none), then the
/// interrupt frame of SDM Vol. 3A, 7.14.2 "64-Bit Mode Stack Frame".
#[repr(C)]
#[derive(Debug)]
pub struct ExceptionFrame {
    vector: u64,
    error_code: u64,
    rip: u64,
    cs: u64,
    rflags: u64,
    rsp: u64,
    ss: u64,
}

/// Reports an exception and ends the run as a failure.
#[unsafe(no_mangle)]
extern "C" fn exception_handler(frame: &ExceptionFrame) -> ! {
    let cr2 = x86_64::registers::control::Cr2::read_raw();
    let _ = writeln!(
        Serial,
        "FAIL exception: vector {} error {:#x} rip {:#x} cs {:#x} rflags {:#x} rsp {:#x} cr2 {cr2:#x}",
        frame.vector, frame.error_code, frame.rip, frame.cs, frame.rflags, frame.rsp
    );
    serial::finish(false, 0)
}

unsafe extern "C" {
    /// The TSS the boot stub loaded into TR (only its address is used).
    static boot_tss: u8;
}

/// The linear (= physical) address of the TSS in TR.
pub fn tss_base() -> u64 {
    (&raw const boot_tss) as u64
}

unsafe extern "C" {
    /// Timer interrupts the host took on vector 0x20 (`timer_stub` increments it atomically).
    static timer_ticks: core::sync::atomic::AtomicU64;
}

/// Timer interrupts (IRQ 0 remapped to vector 0x20) the host has taken so far.
pub fn ticks() -> u64 {
    // SAFETY: `timer_ticks` is an 8-byte, 8-aligned zeroed `.bss` word that only `timer_stub`
    // (with LOCK INC) and this atomic load touch.
    unsafe { timer_ticks.load(core::sync::atomic::Ordering::SeqCst) }
}

/// The multiboot1 boot-loader magic in EAX (Multiboot 0.6.96 §3.2 "Machine state").
pub const MULTIBOOT1_MAGIC: u32 = 0x2BAD_B002;
/// The multiboot2 boot-loader magic in EAX (Multiboot2 §3.3 "I386 machine state").
pub const MULTIBOOT2_MAGIC: u32 = 0x36D7_6289;

/// The longest command line this kernel reads.
const MAX_COMMAND_LINE: usize = 1024;

/// Reads a NUL-terminated string at `addr` (at most [`MAX_COMMAND_LINE`] bytes).
///
/// # Safety
/// - `addr` is identity-mapped memory the boot loader filled and nobody writes any more.
unsafe fn c_string(addr: u64) -> &'static str {
    let ptr = addr as *const u8;
    let mut len = 0;
    // SAFETY: the caller guarantees the bytes up to the terminator are readable.
    while len < MAX_COMMAND_LINE && unsafe { ptr.add(len).read() } != 0 {
        len += 1;
    }
    // SAFETY: the `len` bytes just read are readable and stay unchanged.
    let bytes = unsafe { core::slice::from_raw_parts(ptr, len) };
    core::str::from_utf8(bytes).unwrap_or("")
}

/// Reads a `u32` at `addr`.
///
/// # Safety
/// - `addr` is identity-mapped, 4-byte aligned memory that the boot loader filled.
unsafe fn read_u32(addr: u64) -> u32 {
    // SAFETY: forwarded to the caller.
    unsafe { (addr as *const u32).read() }
}

/// The kernel command line from the multiboot information, or "" if the loader gave none.
///
/// Multiboot1: `flags` bit 2 says `cmdline` (offset 16) is valid (Multiboot 0.6.96 §3.3 "Boot
/// information format"). Multiboot2: tag type 1 "Boot command line" in the tag list that starts
/// 8 bytes into the information (Multiboot2 §3.6.3).
pub fn command_line(magic: u32, info: u32) -> &'static str {
    let info = u64::from(info);
    match magic {
        MULTIBOOT1_MAGIC => {
            // SAFETY: QEMU/GRUB pass the information structure in EBX, below 4 GiB (mapped).
            let flags = unsafe { read_u32(info) };
            if flags & (1 << 2) == 0 {
                return "";
            }
            // SAFETY: as above; `cmdline` is valid because flags bit 2 is set.
            unsafe { c_string(u64::from(read_u32(info + 16))) }
        }
        MULTIBOOT2_MAGIC => {
            // SAFETY: GRUB passes the 8-byte aligned information in EBX, below 4 GiB (mapped).
            let total = u64::from(unsafe { read_u32(info) });
            let mut tag = info + 8;
            while tag + 8 <= info + total {
                // SAFETY: a tag header inside the information's `total_size`.
                let (kind, size) = unsafe { (read_u32(tag), read_u32(tag + 4)) };
                match kind {
                    0 => break,
                    // SAFETY: a command-line tag holds a NUL-terminated string after its header.
                    1 => return unsafe { c_string(tag + 8) },
                    _ => tag += (u64::from(size) + 7) & !7,
                }
                if size < 8 {
                    break;
                }
            }
            ""
        }
        _ => "",
    }
}

/// A boot module the loader placed in memory (multiboot1 `mods`, Multiboot 0.6.96 §3.3;
/// multiboot2 tag type 3 "Modules", Multiboot2 §3.6.6).
#[derive(Debug, Clone, Copy)]
pub struct BootModule {
    /// Its bytes, `mod_start .. mod_end`.
    pub bytes: &'static [u8],
    /// Its string (GRUB's `module2 FILE STRING…` and QEMU's `-initrd "FILE ARGS"` both make it
    /// start with the file name when the configuration writes it so).
    pub string: &'static str,
}

/// Most boot modules read.
pub const MAX_BOOT_MODULES: usize = 8;

/// The boot modules, in the loader's order.
#[derive(Debug, Clone, Copy)]
pub struct BootModules {
    list: [Option<BootModule>; MAX_BOOT_MODULES],
}

impl BootModules {
    /// The modules.
    pub fn iter(&self) -> impl Iterator<Item = &BootModule> {
        self.list.iter().map_while(Option::as_ref)
    }

    fn push(&mut self, module: BootModule) {
        if let Some(slot) = self.list.iter_mut().find(|m| m.is_none()) {
            *slot = Some(module);
        }
    }
}

/// A module's bytes.
///
/// # Safety
/// - `start..end` is identity-mapped memory the boot loader filled and that nothing writes
///   any more.
unsafe fn module_bytes(start: u32, end: u32) -> &'static [u8] {
    let len = end.saturating_sub(start) as usize;
    // SAFETY: forwarded to the caller; an empty module gets an empty slice.
    unsafe { core::slice::from_raw_parts(start as usize as *const u8, len) }
}

/// The boot modules (at most [`MAX_BOOT_MODULES`]): multiboot1 `flags` bit 3 with
/// `mods_count` (offset 20) entries of 16 bytes at `mods_addr` (offset 24); multiboot2 tags of
/// type 3 (`mod_start`, `mod_end`, then the string).
///
/// Modules lie outside this kernel's image (both loaders place them above the end of its
/// `.bss`), and [`usable_memory`] keeps them out of the frame allocator, so nothing ever
/// writes them.
pub fn modules(magic: u32, info: u32) -> BootModules {
    let mut found = BootModules {
        list: [None; MAX_BOOT_MODULES],
    };
    let info = u64::from(info);
    match magic {
        MULTIBOOT1_MAGIC => {
            // SAFETY: QEMU/GRUB pass the information structure in EBX, below 4 GiB (mapped).
            let flags = unsafe { read_u32(info) };
            if flags & (1 << 3) == 0 {
                return found;
            }
            // SAFETY: as above; `mods_count`/`mods_addr` are valid because flags bit 3 is set.
            let (count, table) = unsafe { (read_u32(info + 20), read_u32(info + 24)) };
            for i in 0..count.min(MAX_BOOT_MODULES as u32) {
                let entry = u64::from(table) + 16 * u64::from(i);
                // SAFETY: the loader's module list: `count` entries of 16 bytes, each with the
                // module's bounds and string, which it placed outside this kernel.
                found.push(unsafe {
                    BootModule {
                        bytes: module_bytes(read_u32(entry), read_u32(entry + 4)),
                        string: c_string(u64::from(read_u32(entry + 8))),
                    }
                });
            }
        }
        MULTIBOOT2_MAGIC => {
            // SAFETY: GRUB passes the 8-byte aligned information in EBX, below 4 GiB (mapped).
            let total = u64::from(unsafe { read_u32(info) });
            let mut tag = info + 8;
            while tag + 8 <= info + total {
                // SAFETY: a tag header inside the information's `total_size`.
                let (kind, size) = unsafe { (read_u32(tag), read_u32(tag + 4)) };
                if kind == 0 || size < 8 {
                    break;
                }
                if kind == 3 && size >= 17 {
                    // SAFETY: a module tag: its bounds, then its NUL-terminated string; the
                    // module lies outside this kernel.
                    found.push(unsafe {
                        BootModule {
                            bytes: module_bytes(read_u32(tag + 8), read_u32(tag + 12)),
                            string: c_string(tag + 16),
                        }
                    });
                }
                tag += (u64::from(size) + 7) & !7;
            }
        }
        _ => {}
    }
    found
}

unsafe extern "C" {
    /// The first byte of the kernel image (`linker.ld`).
    static __image_start: u8;
    /// The end of the kernel's `.bss`, page-aligned (`linker.ld`).
    static __bss_end: u8;
}

/// The kernel image in memory, `.bss` (with the boot page tables and stack) included.
pub fn kernel_image() -> Range<u64> {
    (&raw const __image_start) as u64..(&raw const __bss_end) as u64
}

/// Bytes of the multiboot1 information structure up to the framebuffer colour information
/// (Multiboot 0.6.96 §3.3: `flags` at 0 … `color_info` at 110, 6 bytes).
const MULTIBOOT1_INFO_SIZE: u64 = 116;

/// Why the boot memory map could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MemoryMapError {
    /// The multiboot2 information block is not valid (`multiboot2::BootInformation::load`).
    #[error("the multiboot2 information block at {info:#x} is invalid: {error}")]
    Multiboot2 {
        /// Its address.
        info: u32,
        /// What the `multiboot2` crate found.
        error: multiboot2::LoadError,
    },
    /// The multiboot1 map does not lie inside the identity map.
    #[error("the memory map at {addr:#x} ({len} bytes) is not inside the identity map")]
    Unmapped {
        /// `mmap_addr`.
        addr: u32,
        /// `mmap_length`.
        len: u32,
    },
    /// The map itself, or what is left of it.
    #[error(transparent)]
    Map(#[from] MapError),
}

/// The memory the frame allocator may use: the boot loader's memory map (multiboot1 `flags`
/// bit 6 with `mmap_length` at offset 44 and `mmap_addr` at 48, Multiboot 0.6.96 §3.3;
/// multiboot2 tag type 6, Multiboot2 §3.6.8, read with the `multiboot2` crate) from 1 MiB to
/// [`IDENTITY_MAP_END`], without the kernel image, the boot information (the structure, the
/// command line, the map, the module list and strings: the kernel keeps `&'static` references
/// to the strings) and the boot `modules` (the `mbkernel` case reads its guest from them).
///
/// # Errors
/// No map, an invalid map or information block, or no usable memory left.
pub fn usable_memory(
    magic: u32,
    info: u32,
    command_line: &str,
    modules: &BootModules,
) -> Result<UsableMemory, MemoryMapError> {
    const MAX_EXCLUSIONS: usize = 8 + 2 * MAX_BOOT_MODULES;
    let mut exclusions = [const { 0..0 }; MAX_EXCLUSIONS];
    let mut n = 0;
    let mut exclude = |range: Range<u64>| {
        if let Some(slot) = exclusions.get_mut(n) {
            *slot = range;
            n += 1;
        }
    };
    let string = |s: &str| s.as_ptr() as u64..s.as_ptr() as u64 + s.len() as u64 + 1;
    exclude(kernel_image());
    exclude(string(command_line));
    for module in modules.iter() {
        let start = module.bytes.as_ptr() as u64;
        exclude(start..start + module.bytes.len() as u64);
        exclude(string(module.string));
    }
    let bounds = LOW_MEMORY_END..IDENTITY_MAP_END;
    let addr = u64::from(info);
    match magic {
        MULTIBOOT1_MAGIC => {
            // SAFETY: QEMU/GRUB pass the information structure in EBX, below 4 GiB (mapped).
            let flags = unsafe { read_u32(addr) };
            if flags & (1 << 6) == 0 {
                return Err(MapError::Missing.into());
            }
            // SAFETY: as above; `mmap_length`/`mmap_addr` are valid because flags bit 6 is set.
            let (len, map) = unsafe { (read_u32(addr + 44), read_u32(addr + 48)) };
            if u64::from(map) + u64::from(len) > IDENTITY_MAP_END {
                return Err(MemoryMapError::Unmapped { addr: map, len });
            }
            exclude(addr..addr + MULTIBOOT1_INFO_SIZE);
            exclude(u64::from(map)..u64::from(map) + u64::from(len));
            if flags & (1 << 3) != 0 {
                // SAFETY: `mods_count`/`mods_addr` are valid because flags bit 3 is set.
                let (count, table) = unsafe { (read_u32(addr + 20), read_u32(addr + 24)) };
                exclude(u64::from(table)..u64::from(table) + 16 * u64::from(count));
            }
            // SAFETY: the loader's `mmap_length` bytes at `mmap_addr`, inside the identity map
            // (checked above); nothing writes them (they are excluded from the allocator).
            let bytes =
                unsafe { core::slice::from_raw_parts(map as usize as *const u8, len as usize) };
            Ok(UsableMemory::build(
                memmap::multiboot1_entries(bytes),
                bounds,
                &exclusions[..n],
            )?)
        }
        MULTIBOOT2_MAGIC => {
            // SAFETY: GRUB passes the 8-byte aligned information block in EBX, below 4 GiB
            // (mapped), valid for its `total_size` (which `load` checks before reading further);
            // nothing writes it (it is excluded from the allocator below).
            let mbi = unsafe {
                multiboot2::BootInformation::load(
                    info as usize as *const multiboot2::BootInformationHeader,
                )
            }
            .map_err(|error| MemoryMapError::Multiboot2 { info, error })?;
            exclude(addr..addr + mbi.total_size() as u64);
            let map = mbi.memory_map_tag().ok_or(MapError::Missing)?;
            let entries = map.memory_areas().iter().map(|area| {
                Ok(Region {
                    start: area.start_address(),
                    len: area.size(),
                    kind: RegionKind(area.typ().val()),
                })
            });
            Ok(UsableMemory::build(entries, bounds, &exclusions[..n])?)
        }
        _ => Err(MapError::Missing.into()),
    }
}
