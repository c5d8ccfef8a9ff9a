//! hvkit-baremetal: a test kernel that boots from GRUB (multiboot2, Bochs) or QEMU `-kernel`
//! (multiboot1), detects VMX or SVM and runs an end-to-end case against the hvkit crates,
//! printing one line per check and a final `RESULT PASS|FAIL exits=N` marker on COM1.
#![no_std]
#![no_main]

mod boot;
mod frames;
mod guests;
mod mbkernel;
mod mbload;
mod memmap;
mod platform;
mod serial;
mod svm_smoke;
mod sync;
mod vmx_smoke;

use core::arch::x86_64::__cpuid;

/// Which virtualization extension this CPU offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Vendor {
    Intel,
    Amd,
    Other,
}

fn vendor() -> Vendor {
    let leaf0 = __cpuid(0);
    let mut id = [0u8; 12];
    id[..4].copy_from_slice(&leaf0.ebx.to_le_bytes());
    id[4..8].copy_from_slice(&leaf0.edx.to_le_bytes());
    id[8..].copy_from_slice(&leaf0.ecx.to_le_bytes());
    match &id {
        b"GenuineIntel" => Vendor::Intel,
        b"AuthenticAMD" => Vendor::Amd,
        _ => Vendor::Other,
    }
}

/// The Rust entry point, called by the boot stub in 64-bit mode with the multiboot magic and the
/// physical address of the multiboot information.
// UNSAFETY: the boot stub calls this function by its unmangled name.
#[expect(unsafe_code, reason = "entry point called from the boot stub")]
#[unsafe(no_mangle)]
extern "C" fn kernel_main(magic: u32, info: u32) -> ! {
    serial::init();
    let boot = match magic {
        boot::MULTIBOOT1_MAGIC => "multiboot1",
        boot::MULTIBOOT2_MAGIC => "multiboot2",
        _ => "unknown loader",
    };
    let command_line = boot::command_line(magic, info);
    println!("hvkit-baremetal: booted by {boot}, command line {command_line:?}");
    let case = command_line
        .split_whitespace()
        .find_map(|word| word.strip_prefix("case="))
        .unwrap_or("smoke");
    let vmx = __cpuid(1).ecx & (1 << 5) != 0;
    let svm = __cpuid(0x8000_0000).eax >= 0x8000_0001 && __cpuid(0x8000_0001).ecx & (1 << 2) != 0;
    let vendor = vendor();
    println!("cpu: {vendor:?}, vmx {vmx}, svm {svm}");
    let modules = boot::modules(magic, info);
    start_frames(magic, info, command_line, &modules);
    if vmx || svm {
        let platform = platform::MapPlatform::new();
        let caps = command_line
            .split_whitespace()
            .find_map(|word| word.strip_prefix("caps="))
            .unwrap_or("");
        let before = platform.frames_in_use();
        if let Some((pass, exits)) = guest_case(case, caps, &platform, &modules) {
            let after = platform.frames_in_use();
            println!(
                "{} frames: every frame given back after the case: {before} in use before, \
                 {after} after",
                if after == before { "ok" } else { "FAIL" }
            );
            serial::finish(pass && after == before, exits)
        }
    }
    match (case, vendor) {
        ("smoke", Vendor::Intel) if vmx => vmx_smoke::run(),
        ("smoke", Vendor::Amd) if svm => svm_smoke::run(),
        // Proves the exception path: #UD must be reported over serial as a FAIL.
        ("host-ud2", _) => {
            println!("executing UD2");
            ud2()
        }
        ("smoke", _) => {
            println!("FAIL no supported virtualization extension");
            serial::finish(false, 0)
        }
        _ => {
            println!("FAIL unknown case {case:?}");
            serial::finish(false, 0)
        }
    }
}

/// Starts the frame allocator from the boot memory map and prints what the map gave; a
/// missing or unusable map ends the run with a FAIL line. `memmap=none` or `memmap=empty` on the
/// command line stands for a loader that gave no map or one without entries (the runner checks
/// that the kernel says so and stops).
fn start_frames(magic: u32, info: u32, command_line: &str, modules: &boot::BootModules) {
    let pretend = command_line
        .split_whitespace()
        .find_map(|word| word.strip_prefix("memmap="));
    let memory = match pretend {
        Some("none") => Err(memmap::MapError::Missing.into()),
        Some("empty") => memmap::UsableMemory::build(
            memmap::multiboot1_entries(&[]),
            memmap::LOW_MEMORY_END..boot::IDENTITY_MAP_END,
            &[],
        )
        .map_err(Into::into),
        _ => boot::usable_memory(magic, info, command_line, modules),
    };
    let memory = match memory {
        Ok(memory) => memory,
        Err(e) => {
            println!("FAIL frames: no frame allocator from the boot memory map: {e}");
            serial::finish(false, 0)
        }
    };
    if frames::init(&memory).is_none() {
        println!("FAIL frames: the frame allocator was started twice");
        serial::finish(false, 0)
    }
    let image = boot::kernel_image();
    print!(
        "frames: {} KiB usable in {} range{}, {} KiB excluded (map: {} entries, {} KiB \
         available; excluded: below 1 MiB, above {} GiB, reserved entries, kernel {:#x}-{:#x}, \
         boot information, {} modules); ranges",
        memory.usable() / 1024,
        memory.ranges.len(),
        if memory.ranges.len() == 1 { "" } else { "s" },
        memory.excluded() / 1024,
        memory.entries,
        memory.available / 1024,
        boot::IDENTITY_MAP_END >> 30,
        image.start,
        image.end,
        modules.iter().count()
    );
    for range in memory.ranges.iter() {
        print!(" {:#x}-{:#x}", range.start, range.end);
    }
    println!("");
}

/// Runs the guest case `case` (`None` if it is not one), with the emulator capabilities the
/// runner passed in `caps` (`no-shutdown-exit`: a guest triple fault is not reported as a
/// shutdown exit) and the boot modules (the `mbkernel` case's guest kernel). Returns whether
/// it passed and its exits.
fn guest_case(
    case: &str,
    caps: &str,
    platform: &platform::MapPlatform,
    modules: &boot::BootModules,
) -> Option<(bool, u64)> {
    guests::mask_pic();
    let outcome = match case {
        "cpuid" => guests::cpuid(platform),
        "io" => guests::io(platform),
        "msr" => guests::msr(platform),
        "hlt" => guests::hlt(platform),
        "hypercall" => guests::hypercall(platform),
        "npf" => guests::npf(platform),
        "exception" => guests::exception(platform),
        "realmode" => guests::realmode(platform),
        "paging" => guests::paging(platform),
        "hostile" => {
            let shutdown_exit = !caps.split(',').any(|c| c == "no-shutdown-exit");
            let hostile = guests::hostile(platform, shutdown_exit);
            // The host survived: it can still build and run another guest.
            let after = guests::cpuid(platform);
            println!(
                "{} hostile: after it, the host ran another guest (cpuid): {}",
                if after.pass() { "ok" } else { "FAIL" },
                if after.pass() { "PASS" } else { "FAIL" }
            );
            return Some((
                hostile.pass() && after.pass(),
                hostile.counts.total() + after.counts.total(),
            ));
        }
        "hostile-loop-1m" => guests::exit_loop(platform, "hostile-loop-1m", 1_000_000),
        "exitcost" => guests::exit_cost(platform).0,
        "entryfail" => guests::entry_failure(platform),
        "bluepill" => guests::bluepill(platform),
        "extint" => guests::external_interrupt(platform),
        "fpu" | "fpu-legacy" => {
            let xsetbv_exit = !caps.split(',').any(|c| c == "no-xsetbv-intercept");
            guests::fpu(platform, case == "fpu-legacy", xsetbv_exit)
        }
        "mbkernel" => mbkernel::run(platform, modules),
        "demo" => return Some(demo(platform)),
        _ => return None,
    };
    Some((outcome.pass(), outcome.counts.total()))
}

/// The demo: several guests one after the other on one CPU, then a summary of all. Returns
/// whether all passed and their exits.
fn demo(platform: &platform::MapPlatform) -> (bool, u64) {
    let runs = [
        guests::cpuid(platform),
        guests::io(platform),
        guests::hypercall(platform),
        guests::npf(platform),
        guests::exception(platform),
    ];
    let (cost, per) = guests::exit_cost(platform);
    let mut total = [0u64; hvkit_vcpu::ExitKind::NAMES.len()];
    let mut pass = cost.pass();
    println!("demo summary:");
    for run in runs.iter().chain([&cost]) {
        println!(
            "  {:<10} {} {}",
            run.name,
            if run.pass() { "PASS" } else { "FAIL" },
            run.counts
        );
        for (i, name) in hvkit_vcpu::ExitKind::NAMES.iter().enumerate() {
            total[i] += run.counts.get(name);
        }
        pass &= run.pass();
    }
    print!(
        "  exits by kind over all guests: total {}",
        total.iter().sum::<u64>()
    );
    for (name, n) in hvkit_vcpu::ExitKind::NAMES.iter().zip(total) {
        if n != 0 {
            print!(", {name} {n}");
        }
    }
    println!("");
    println!(
        "  exit cost: {per} guest TSC cycles per CPUID round trip ({} round trips)",
        guests::EXIT_COST_ROUND_TRIPS
    );
    (pass, total.iter().sum())
}

/// Raises #UD.
fn ud2() -> ! {
    // SAFETY: UD2 only raises #UD, which the IDT reports before ending the run.
    #[expect(unsafe_code, reason = "a deliberate invalid opcode")]
    unsafe {
        core::arch::asm!("ud2", options(noreturn))
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    println!("FAIL panic: {info}");
    serial::finish(false, 0)
}
