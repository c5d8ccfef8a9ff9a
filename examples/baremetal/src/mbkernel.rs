//! The `mbkernel` case: an unmodified multiboot v1 kernel given to this hypervisor as its first
//! boot module (GRUB `module2`, QEMU `-initrd`), with the module's string as its command line
//! and the further boot modules as its own modules. It is loaded as a multiboot boot loader
//! would ([`crate::mbload`]: header, ELF32 segments at `p_paddr`, bss zeroed, information
//! block) into 4 MiB of guest RAM that was first filled with a poison byte (so only the
//! loader's zeroing makes the bss zero), and entered through hvkit-vcpu in the state of
//! Multiboot 0.6.96 §3.2 "Machine state": 32-bit protected mode with flat segments, CR0.PE
//! only, EFLAGS.IF = 0, EAX = 0x2BADB002, EBX = the information block, EIP = the entry point.
//!
//! COM1 (3F8H-3FFH) is not intercepted, so the kernel prints its own checks on the serial
//! console; its write to QEMU's `isa-debug-exit` port (F4H) is intercepted and ends the run
//! with its verdict (0x10 = pass, as on a real QEMU), after which this host prints its summary.

use hvkit_paging::GuestPhysAddr;
use hvkit_vcpu::exit::IoDirection;
use hvkit_vcpu::state::GuestState;
use hvkit_vcpu::{ExitKind, VcpuConfig, VcpuError};

use crate::boot::BootModules;
use crate::guests::{Flow, Outcome, Run, failed};
use crate::mbload::{self, MAX_MODULES, Module};
use crate::platform::MapPlatform;
use crate::println;

/// The guest's RAM: 0 to 4 MiB (`mem_lower` 640, `mem_upper` 3072).
pub const RAM: u64 = 4 << 20;
/// QEMU's `isa-debug-exit` port, where the kernel reports.
const DEBUG_EXIT: u16 = 0xf4;
/// The value a passing kernel writes there (QEMU then exits with 33).
const GUEST_PASS: u32 = 0x10;
/// What guest RAM holds before loading (INT3, should stray code run it).
const POISON: u8 = 0xcc;
/// ESP at entry: undefined by §3.2 (the kernel sets its own); just below the information page.
const ENTRY_ESP: u32 = mbload::INFO_AREA_GPA as u32;
/// Exits allowed before the run counts as stuck.
const EXIT_LIMIT: u64 = 100_000;

/// Runs the first boot module as a multiboot kernel.
pub fn run(platform: &MapPlatform, boot_modules: &BootModules) -> Outcome {
    let mut all = boot_modules.iter();
    let Some(kernel) = all.next() else {
        println!(
            "FAIL mbkernel: no boot module: the guest kernel must be the first module (GRUB \
             module2, QEMU -initrd), its string the kernel's command line"
        );
        return failed("mbkernel");
    };
    let mut modules = [Module {
        bytes: &[],
        string: "",
    }; MAX_MODULES];
    let mut n_modules = 0;
    for (slot, m) in modules.iter_mut().zip(all) {
        *slot = Module {
            bytes: m.bytes,
            string: m.string,
        };
        n_modules += 1;
    }
    let modules = &modules[..n_modules];
    let image = kernel.bytes;
    println!(
        "mbkernel: kernel module of {} bytes, command line {:?}, {} module(s) for it",
        image.len(),
        kernel.string,
        modules.len()
    );
    let plan = match mbload::plan(image, RAM) {
        Ok(plan) => plan,
        Err(e) => {
            println!("FAIL mbkernel: the kernel cannot be loaded: {e}");
            return failed("mbkernel");
        }
    };
    println!(
        "mbkernel: multiboot header at offset {:#x}, flags {:#x}, {}; entry {:#x}",
        plan.header.offset,
        plan.header.flags.bits(),
        if plan.header.addresses.is_some() {
            "loaded by its a.out kludge address fields"
        } else {
            "loaded by its ELF32 program headers"
        },
        plan.entry
    );
    for s in plan.segments() {
        println!(
            "mbkernel: segment {}: {:#x} file bytes from offset {:#x} at {:#x}, {:#x} in memory \
             ({:#x} bytes of bss)",
            s.index,
            s.file_size,
            s.offset,
            s.paddr,
            s.mem_size,
            s.bss().end - s.bss().start
        );
    }
    let info = match mbload::build_info(&plan, RAM, kernel.string, modules) {
        Ok(info) => info,
        Err(e) => {
            println!("FAIL mbkernel: the information block: {e}");
            return failed("mbkernel");
        }
    };
    let mut state = GuestState::protected_mode_flat(plan.entry, ENTRY_ESP);
    state.regs.rax = u64::from(mbload::BOOTLOADER_MAGIC);
    state.regs.rbx = info.info_gpa;
    let config = VcpuConfig::new(state);
    let Some(mut run) = Run::empty(platform, "mbkernel", &config) else {
        return failed("mbkernel");
    };
    let loaded = (|| -> Result<(), VcpuError> {
        let vcpu = &mut run.vcpu;
        vcpu.add_ram(GuestPhysAddr::ZERO, RAM)?;
        let poison = [POISON; 4096];
        for page in (0..RAM).step_by(poison.len()) {
            vcpu.write_guest(GuestPhysAddr::new_truncate(page), &poison)?;
        }
        let zeros = [0u8; 4096];
        for s in plan.segments() {
            vcpu.write_guest(GuestPhysAddr::new_truncate(s.paddr), s.bytes(image))?;
            let bss = s.bss();
            let mut at = bss.start;
            while at < bss.end {
                let n = (bss.end - at).min(zeros.len() as u64) as usize;
                vcpu.write_guest(GuestPhysAddr::new_truncate(at), &zeros[..n])?;
                at += n as u64;
            }
        }
        vcpu.write_guest(
            GuestPhysAddr::new_truncate(mbload::INFO_AREA_GPA),
            &info.area[..info.used],
        )?;
        for (m, gpa) in modules.iter().zip(info.module_gpas) {
            vcpu.write_guest(GuestPhysAddr::new_truncate(gpa), m.bytes)?;
        }
        Ok(())
    })();
    if let Err(e) = loaded {
        run.check(false, format_args!("loading into guest RAM: {e:?}"));
        return run.finish();
    }
    for (m, gpa) in modules.iter().zip(info.module_gpas) {
        println!(
            "mbkernel: module {:?}: {} bytes at {gpa:#x}",
            m.string,
            m.bytes.len()
        );
    }
    println!(
        "mbkernel: information block at {:#x} (mem_lower {} KiB, mem_upper {} KiB); entering \
         at {:#x} in 32-bit protected mode, EAX {:#x}, EBX {:#x}; the kernel's own lines follow",
        info.info_gpa,
        info.mem_lower,
        info.mem_upper,
        plan.entry,
        mbload::BOOTLOADER_MAGIC,
        info.info_gpa
    );
    run.vcpu.intercept_io(DEBUG_EXIT..=DEBUG_EXIT + 3, true);
    // The kernel resets the UART's FIFOs: let the host's lines out first.
    crate::serial::drain();
    let mut reported = None;
    let mut stopped_by = "";
    let ended = run.drive(EXIT_LIMIT, |vcpu, exit| match exit.kind {
        ExitKind::Io(io) if io.port == DEBUG_EXIT && io.direction == IoDirection::Out => {
            reported = io.data;
            vcpu.complete_io(0)?;
            Ok(Flow::Stop)
        }
        ExitKind::Hlt => {
            stopped_by = "HLT before reporting";
            Ok(Flow::Stop)
        }
        ExitKind::Shutdown => {
            stopped_by = "a shutdown (triple fault) before reporting";
            Ok(Flow::Stop)
        }
        _ => Ok(Flow::Default),
    });
    run.verdict(ended);
    run.guest_pass = reported == Some(GUEST_PASS);
    match reported {
        Some(value) => run.check(
            stopped_by.is_empty(),
            format_args!("the kernel ended by writing {value:#x} to the debug-exit port"),
        ),
        None => run.check(
            false,
            format_args!("the kernel never wrote to the debug-exit port: {stopped_by}"),
        ),
    }
    let io = run.counts.get("io");
    run.check(
        io == 1,
        format_args!("COM1 passed through: the only I/O exit was the report ({io} I/O exits)"),
    );
    run.finish()
}
