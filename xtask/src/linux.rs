//! `cargo xtask linux-module [FILTER]`: builds `examples/linux-module` (the Rust half with nightly
//! `-Zbuild-std`, one relocatable object, objtool, then Kbuild against Debian's headers), a
//! busybox initramfs whose init loads and unloads the module six times, and boots Debian's kernel
//! with it: QEMU TCG (SVM, 1 and 2 CPUs, `-kernel`/`-initrd`) and Bochs `corei7_skylake_x` (VMX,
//! 1 and 2 CPUs, from a GRUB rescue ISO). Prints one line per run:
//! `e2e linux-module <vendor>/<emulator>-smp<N> PASS|FAIL <exits> exits <seconds>s`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::steps::{Result, announce, ensure_rustup, root};

/// Debian packages for building the module and the initramfs.
const PACKAGES: &[&str] = &[
    "linux-image-amd64",
    "linux-headers-amd64",
    "busybox-static",
    "make",
    "gcc",
    "libelf-dev",
    "binutils",
];

/// The Rust half's exported functions (everything else is made local).
const EXPORTS: &[&str] = &[
    "hvkit_rust_init",
    "hvkit_rust_virtualize",
    "hvkit_rust_devirtualize",
    "hvkit_rust_free_stack",
    "hvkit_rust_stat",
    "hvkit_rust_exit_breakdown",
    "hvkit_rust_memory_types",
    "hvkit_rust_live_frames",
];

/// The codegen flags the module loader accepts (see `../shared/EMULATORS.md`).
const RUSTFLAGS: &str = "-Crelocation-model=static -Ccode-model=kernel -Crelro-level=off \
     -Zfunction-return=thunk-extern -Zretpoline-external-thunk -Zindirect-branch-cs-prefix";

/// Markers the init prints, in order, on a passing run (`true`: only with 2 CPUs and more).
const MARKERS: &[(&str, bool)] = &[
    ("HVKIT-INIT start", false),
    (
        "hypervisor memory denied to the guest, guest cannot enable VMX/SVM",
        false,
    ),
    ("HVKIT-LOADED", false),
    ("HVKIT-USER ok", false),
    ("HVKIT-HOTPLUG refused, cpu1 online", true),
    (
        "hvkit: refusing suspend/hibernation while the CPUs are virtualized",
        false,
    ),
    ("HVKIT-SUSPEND refused: ", false),
    ("HVKIT-STRESS ok", false),
    ("hvkit: unloaded, 0 pool frames still out", false),
    ("HVKIT-UNLOADED", false),
    ("HVKIT-HOTPLUG unloaded, cpu1 offline and back", true),
    ("HVKIT-CYCLE 1 ok", false),
    ("HVKIT-CYCLE 5 ok", false),
    ("HVKIT-FPU ok", false),
    ("HVKIT-DONE", false),
];

/// Console lines that fail a run (kernel trouble or module-loader errors).
const BAD: &[&str] = &[
    "BUG:",
    "Oops",
    "WARNING:",
    "Call Trace",
    "Kernel panic",
    "Unknown symbol",
    "invalid module format",
    "disagrees about version",
    "Unknown rela",
    "unknown relocation",
    "HVKIT-FAIL",
    "not virtualized",
    "READABLE",
    "CAN ENABLE",
    "general protection fault",
];

/// Console lines that fail a run even before init starts.
const BAD_AT_BOOT: &[&str] = &["BUG:", "Oops", "Kernel panic", "general protection fault"];

fn dir() -> PathBuf {
    root().join("target/linux-module")
}

fn run_quiet(what: &str, cmd: &mut Command) -> Result {
    let out = cmd
        .output()
        .map_err(|e| format!("{what}: could not start {:?}: {e}", cmd.get_program()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what}: failed ({})\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .is_ok_and(|o| {
            o.status.success() && String::from_utf8_lossy(&o.stdout).ends_with(" installed")
        })
}

fn ensure_packages() -> Result {
    announce("checking Debian's kernel, headers, busybox-static and build tools");
    let missing: Vec<&str> = PACKAGES.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        println!("--> ok: all installed ({})", PACKAGES.join(" "));
        return Ok(());
    }
    let apt = || {
        let mut c = Command::new("apt-get");
        c.env("DEBIAN_FRONTEND", "noninteractive");
        c
    };
    crate::steps::run("apt-get update", apt().args(["update", "-q"]))?;
    crate::steps::run(
        &format!("apt-get install {}", missing.join(" ")),
        apt()
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing),
    )
}

/// The newest kernel version with both an image in /boot and headers in /usr/src.
fn kernel_version() -> Result<String> {
    let mut versions: Vec<String> = fs::read_dir("/boot")
        .map_err(|e| format!("/boot: {e}"))?
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            let v = name.strip_prefix("vmlinuz-")?.to_owned();
            Path::new(&format!("/usr/src/linux-headers-{v}"))
                .is_dir()
                .then_some(v)
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .ok_or_else(|| "no /boot/vmlinuz-* with matching /usr/src/linux-headers-*".to_owned())
}

/// Formatting and clippy of `examples/linux-module` (its own workspace, built only with nightly's
/// `-Zbuild-std`, so outside the main workspace's checks).
fn lint() -> Result {
    let example = root().join("examples/linux-module");
    announce(
        "formatting and lints of examples/linux-module (cargo fmt --check, clippy -D warnings)",
    );
    run_quiet(
        "cargo fmt --check (examples/linux-module)",
        Command::new("cargo")
            .args(["+nightly", "fmt", "--check"])
            .current_dir(&example)
            .env_remove("RUSTUP_TOOLCHAIN")
            .env_remove("CARGO"),
    )?;
    run_quiet(
        "cargo clippy (examples/linux-module)",
        Command::new("cargo")
            .args([
                "+nightly",
                "clippy",
                "--release",
                "--target",
                "x86_64-unknown-none",
                "-Zbuild-std=core,compiler_builtins",
                "-Zbuild-std-features=compiler-builtins-mem",
                "--",
                "-D",
                "warnings",
            ])
            .current_dir(&example)
            .env_remove("RUSTUP_TOOLCHAIN")
            .env_remove("CARGO")
            .env("RUSTFLAGS", RUSTFLAGS),
    )?;
    println!("--> ok: examples/linux-module is formatted and lint-free");
    Ok(())
}

/// Runs objtool: it must succeed and print no warning (bare `ret`s in a RETHUNK build, code it
/// cannot reach or follow).
fn objtool(cmd: &mut Command) -> Result {
    let out = cmd
        .output()
        .map_err(|e| format!("objtool: could not start {:?}: {e}", cmd.get_program()))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() && !text.contains("warning") {
        Ok(())
    } else {
        Err(format!("objtool ({}):\n{text}", out.status))
    }
}

/// Builds `hvkit.ko` for kernel `version`; returns its path.
fn build_module(version: &str) -> Result<PathBuf> {
    let example = root().join("examples/linux-module");
    let out = dir();
    let kbuild = out.join("kbuild");
    fs::create_dir_all(&kbuild).map_err(|e| format!("{}: {e}", kbuild.display()))?;
    announce("building the Rust half of hvkit.ko (nightly, -Zbuild-std, kernel code model)");
    let start = Instant::now();
    run_quiet(
        "cargo +nightly build (examples/linux-module)",
        Command::new("cargo")
            .args([
                "+nightly",
                "build",
                "--release",
                "--target",
                "x86_64-unknown-none",
                "-Zbuild-std=core,compiler_builtins",
                "-Zbuild-std-features=compiler-builtins-mem",
            ])
            .current_dir(&example)
            .env_remove("RUSTUP_TOOLCHAIN")
            .env_remove("CARGO")
            .env("RUSTFLAGS", RUSTFLAGS),
    )?;
    let archive = example.join("target/x86_64-unknown-none/release/libhvkit_linux_module.a");
    let linked = out.join("hvkit_rust_linked.o");
    let object = kbuild.join("hvkit_rust.o_shipped");
    let mut ld = Command::new("ld");
    ld.args(["-r", "--gc-sections", "-e", EXPORTS[0]]);
    for s in EXPORTS {
        ld.args(["-u", s]);
    }
    ld.arg("--whole-archive")
        .arg(&archive)
        .arg("-o")
        .arg(&linked);
    run_quiet("ld -r --gc-sections", &mut ld)?;
    let mut objcopy = Command::new("objcopy");
    for s in EXPORTS {
        objcopy.arg(format!("--keep-global-symbol={s}"));
    }
    objcopy
        .args(["-R", ".llvmbc", "-R", ".llvmcmd"])
        .arg(&linked)
        .arg(&object);
    run_quiet("objcopy (exports only, no bitcode)", &mut objcopy)?;
    let headers = PathBuf::from(format!("/usr/src/linux-headers-{version}"));
    objtool(
        Command::new(headers.join("tools/objtool/objtool"))
            .args([
                "--hacks=jump_label",
                "--hacks=noinstr",
                "--orc",
                "--retpoline",
                "--rethunk",
                "--sls",
                "--static-call",
                "--uaccess",
                "--module",
                "--link",
            ])
            .arg(&object),
    )?;
    for file in ["Kbuild", "hvkit_shim.c"] {
        fs::copy(example.join("kmod").join(file), kbuild.join(file))
            .map_err(|e| format!("copying {file}: {e}"))?;
    }
    // modpost looks for the command file of every object (there is nothing to record).
    fs::write(kbuild.join(".hvkit_rust.o.cmd"), "").map_err(|e| e.to_string())?;
    let _ = fs::remove_file(kbuild.join("hvkit_rust.o"));
    run_quiet(
        "make modules (Kbuild)",
        Command::new("make")
            .arg("-C")
            .arg(&headers)
            .arg(format!("M={}", kbuild.display()))
            .arg("modules")
            .env_remove("RUSTFLAGS"),
    )?;
    println!(
        "--> ok: hvkit.ko for {version} ({:.1}s)",
        start.elapsed().as_secs_f64()
    );
    Ok(kbuild.join("hvkit.ko"))
}

/// A `newc` cpio archive (what the kernel unpacks as its initramfs).
#[derive(Default)]
struct Cpio {
    bytes: Vec<u8>,
    inode: u32,
}

impl Cpio {
    fn entry(&mut self, name: &str, mode: u32, data: &[u8]) {
        self.inode += 1;
        let header = format!(
            "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            self.inode,
            mode,
            0,
            0,
            1,
            0,
            data.len(),
            0,
            0,
            0,
            0,
            name.len() + 1,
            0
        );
        self.bytes.extend_from_slice(header.as_bytes());
        self.bytes.extend_from_slice(name.as_bytes());
        self.bytes.push(0);
        self.pad();
        self.bytes.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while self.bytes.len() % 4 != 0 {
            self.bytes.push(0);
        }
    }
}

/// Builds the initramfs: busybox, the init script, the CPUID and FPU helpers and the module.
fn build_initramfs(module: &Path) -> Result<PathBuf> {
    announce("building the busybox initramfs (init, hvkit-cpuid, hvkit-user, hvkit-fpu, hvkit.ko)");
    let example = root().join("examples/linux-module/initramfs");
    let mut helpers = Vec::new();
    for name in ["hvkit-cpuid", "hvkit-user", "hvkit-fpu"] {
        let helper = dir().join(name);
        run_quiet(
            &format!("gcc -static {name}"),
            Command::new("gcc")
                .args([
                    "-static",
                    "-nostdlib",
                    "-ffreestanding",
                    "-fno-stack-protector",
                    "-O2",
                    "-o",
                ])
                .arg(&helper)
                .arg(example.join(format!("{name}.c"))),
        )?;
        helpers.push((name, helper));
    }
    let read = |p: &Path| fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
    let mut cpio = Cpio::default();
    for d in ["bin", "dev", "proc", "sys", "tmp"] {
        cpio.entry(d, 0o040_755, &[]);
    }
    cpio.entry("dev/console", 0o020_600, &[]);
    cpio.entry("bin/busybox", 0o100_755, &read(Path::new("/bin/busybox"))?);
    cpio.entry("bin/sh", 0o120_777, b"busybox");
    cpio.entry("init", 0o100_755, &read(&example.join("init"))?);
    for (name, helper) in &helpers {
        cpio.entry(name, 0o100_755, &read(helper)?);
    }
    cpio.entry("hvkit.ko", 0o100_644, &read(module)?);
    cpio.entry("TRAILER!!!", 0, &[]);
    let path = dir().join("initramfs.cpio");
    fs::write(&path, &cpio.bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    println!("--> ok: {} ({} bytes)", path.display(), cpio.bytes.len());
    Ok(path)
}

/// One emulator run.
#[derive(Clone, Debug)]
struct Run {
    vendor: &'static str,
    emulator: &'static str,
    cpus: u32,
}

impl Run {
    fn name(&self) -> String {
        format!("{}/{}-smp{}", self.vendor, self.emulator, self.cpus)
    }
}

const COMMAND_LINE: &str = "console=ttyS0,115200 panic=-1 rdinit=/init tsc=unstable";

/// Waits for `cmd` up to `timeout`; returns whether it ended by itself. A kernel failure on the
/// console (`BAD_AT_BOOT`: an Oops, a GP fault, a panic) usually leaves the machine hung, so the
/// emulator is stopped 15 s after one appears (time for the trace) instead of at the timeout.
fn wait(cmd: &mut Command, serial: &Path, timeout: Duration) -> std::io::Result<bool> {
    let start = Instant::now();
    let mut child = cmd.spawn()?;
    let mut failed_at: Option<Instant> = None;
    let mut polls = 0u32;
    loop {
        if child.try_wait()?.is_some() {
            return Ok(true);
        }
        polls += 1;
        if failed_at.is_none() && polls % 20 == 0 {
            let text = fs::read(serial).unwrap_or_default();
            let text = String::from_utf8_lossy(&text);
            if BAD_AT_BOOT.iter().any(|bad| text.contains(bad)) {
                failed_at = Some(Instant::now());
            }
        }
        let failed_long_ago = failed_at.is_some_and(|t| t.elapsed() > Duration::from_secs(15));
        if start.elapsed() > timeout || failed_long_ago {
            child.kill()?;
            child.wait()?;
            return Ok(false);
        }
        thread::sleep(Duration::from_millis(50));
    }
}

fn boot(run: &Run, kernel: &Path, initrd: &Path) -> Result<(PathBuf, bool)> {
    let work = dir().join(run.name().replace('/', "-"));
    if work.exists() {
        fs::remove_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    }
    fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    let serial = work.join("serial.txt");
    let out = fs::File::create(work.join("emulator.out")).map_err(|e| e.to_string())?;
    let err = out.try_clone().map_err(|e| e.to_string())?;
    let ended = if run.emulator == "qemu" {
        wait(
            Command::new("qemu-system-x86_64")
                .args(["-accel", "tcg", "-cpu", "max", "-m", "256"])
                .args(["-smp", &run.cpus.to_string()])
                .args(["-display", "none", "-no-reboot", "-monitor", "none"])
                .arg("-serial")
                .arg(format!("file:{}", serial.display()))
                .arg("-kernel")
                .arg(kernel)
                .arg("-initrd")
                .arg(initrd)
                .args(["-append", COMMAND_LINE])
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err),
            &serial,
            Duration::from_secs(300),
        )
    } else {
        let iso = work.join("iso/boot");
        fs::create_dir_all(iso.join("grub")).map_err(|e| e.to_string())?;
        fs::copy(kernel, iso.join("vmlinuz")).map_err(|e| e.to_string())?;
        fs::copy(initrd, iso.join("initrd")).map_err(|e| e.to_string())?;
        fs::write(
            iso.join("grub/grub.cfg"),
            format!(
                "set timeout=0\nset default=0\nmenuentry \"hvkit\" {{\n  linux /boot/vmlinuz \
                 {COMMAND_LINE}\n  initrd /boot/initrd\n  boot\n}}\n"
            ),
        )
        .map_err(|e| e.to_string())?;
        run_quiet(
            "grub-mkrescue",
            Command::new("grub-mkrescue")
                .args([
                    "--install-modules=linux normal iso9660 biosdisk",
                    "--fonts=",
                    "--locales=",
                    "--themes=",
                    "-o",
                    "hvkit.iso",
                    "iso",
                ])
                .current_dir(&work),
        )?;
        let bochsrc = format!(
            "megs: 256\n\
             cpu: model=corei7_skylake_x, count={}, reset_on_triple_fault=0, ips=90000000\n\
             romimage: file=/usr/share/bochs/BIOS-bochs-latest, options=fastboot\n\
             vgaromimage: file=/usr/share/bochs/VGABIOS-lgpl-latest\n\
             display_library: sdl2\n\
             ata0-master: type=cdrom, path=hvkit.iso, status=inserted\n\
             boot: cdrom\n\
             com1: enabled=1, mode=file, dev=serial.txt\n\
             clock: sync=none, time0=1\n\
             sound: waveoutdrv=dummy, waveindrv=dummy, midioutdrv=dummy\n\
             speaker: enabled=0\n\
             log: bochs.log\n",
            run.cpus
        );
        fs::write(work.join("bochsrc"), bochsrc).map_err(|e| e.to_string())?;
        fs::write(work.join("cmds"), "c\nq\n").map_err(|e| e.to_string())?;
        wait(
            Command::new("bochs")
                .args(["-q", "-f", "bochsrc", "-rc", "cmds"])
                .current_dir(&work)
                .env("SDL_VIDEODRIVER", "dummy")
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err),
            &serial,
            Duration::from_secs(600),
        )
    }
    .map_err(|e| format!("could not start the emulator: {e}"))?;
    Ok((serial, ended))
}

/// The load line about nested memory types: on VMX the EPT follows the host's MTRRs and the
/// APIC area must be uncacheable; on SVM the nested entries are write-back (the host's MTRRs
/// combine with them).
fn type_marker(vendor: &str) -> &'static str {
    if vendor == "vmx" {
        "(fec00000-feefffff UC)"
    } else {
        "hvkit: npt types: WB "
    }
}

/// Checks a console log: every marker, in order, no bad line after init started, a CPUID line
/// from every CPU. Returns the total exits (from the unload lines of the first load) or why it
/// failed.
fn judge(text: &str, run: &Run) -> std::result::Result<u64, String> {
    let cpus = run.cpus;
    // The whole log for kernel failures; from init on also for warnings and traces (Debian's
    // kernel warns at boot on some emulated CPUs, e.g. Bochs's XSAVE layout, before any hvkit).
    let init = text.find("HVKIT-INIT start").unwrap_or(0);
    for line in text[..init].lines() {
        if let Some(bad) = BAD_AT_BOOT.iter().find(|b| line.contains(*b)) {
            return Err(format!("console shows {bad:?} at boot: {}", line.trim()));
        }
    }
    for line in text[init..].lines() {
        if let Some(bad) = BAD.iter().find(|b| line.contains(*b)) {
            return Err(format!("console shows {bad:?}: {}", line.trim()));
        }
    }
    if !text.contains(type_marker(run.vendor)) {
        return Err(format!(
            "no nested memory-type line {:?}",
            type_marker(run.vendor)
        ));
    }
    let mut at = 0;
    for (marker, smp_only) in MARKERS {
        if *smp_only && cpus < 2 {
            continue;
        }
        match text[at..].find(marker) {
            Some(i) => at += i + marker.len(),
            None => return Err(format!("missing marker {marker:?}")),
        }
    }
    for cpu in 0..cpus {
        let want = format!("HVKIT-CPUID cpu={cpu} sig=hvkitHVKIThv");
        if !text.contains(&want) {
            return Err(format!("no hvkit signature from cpu{cpu}"));
        }
    }
    // "hvkit: cpuN devirtualized (0): E exits (...)" of the first unload.
    let first_unload = text.find("HVKIT-UNLOADED").unwrap_or(text.len());
    let exits = text[..first_unload]
        .lines()
        .filter_map(|l| {
            let rest = l.split("devirtualized (0): ").nth(1)?;
            rest.split(' ').next()?.parse::<u64>().ok()
        })
        .sum();
    Ok(exits)
}

/// Per-CPU exits of the first load by kind, for the summary (one line per CPU).
fn per_cpu(text: &str) -> Vec<String> {
    let first_unload = text.find("HVKIT-UNLOADED").unwrap_or(text.len());
    text[..first_unload]
        .lines()
        .filter_map(|l| {
            let i = l.find("hvkit: cpu")?;
            let rest = &l[i + "hvkit: ".len()..];
            let (cpu, tail) = rest.split_once(" devirtualized (0): ")?;
            Some(format!("{cpu} {}", tail.trim()))
        })
        .collect()
}

/// `cargo xtask linux-module [FILTER]`.
pub(crate) fn run(filter: Option<&str>) -> Result {
    let start = Instant::now();
    ensure_packages()?;
    crate::e2e::ensure_debian_packages()?;
    ensure_rustup(Some("nightly"), &["rust-src", "rustfmt", "clippy"], &[])?;
    let version = kernel_version()?;
    lint()?;
    let module = build_module(&version)?;
    let initrd = build_initramfs(&module)?;
    let kernel = PathBuf::from(format!("/boot/vmlinuz-{version}"));
    let runs: Vec<Run> = [
        ("svm", "qemu", 1),
        ("svm", "qemu", 2),
        ("vmx", "bochs", 1),
        ("vmx", "bochs", 2),
    ]
    .into_iter()
    .map(|(vendor, emulator, cpus)| Run {
        vendor,
        emulator,
        cpus,
    })
    .filter(|r| filter.is_none_or(|f| r.name().contains(f)))
    .collect();
    announce(&format!(
        "booting {version} with hvkit.ko: {}",
        runs.iter().map(Run::name).collect::<Vec<_>>().join(", ")
    ));
    let handles: Vec<_> = runs
        .into_iter()
        .map(|run| {
            let (kernel, initrd) = (kernel.clone(), initrd.clone());
            thread::spawn(move || {
                let begun = Instant::now();
                let result = boot(&run, &kernel, &initrd);
                (run, result, begun.elapsed())
            })
        })
        .collect();
    let mut failed = 0;
    for handle in handles {
        let Ok((run, result, took)) = handle.join() else {
            failed += 1;
            continue;
        };
        let secs = took.as_secs_f64();
        let verdict = result.and_then(|(serial, ended)| {
            let text =
                String::from_utf8_lossy(&fs::read(&serial).unwrap_or_default()).replace('\r', "");
            let judged = judge(&text, &run);
            match (judged, ended) {
                (Ok(exits), true) => Ok((exits, per_cpu(&text), serial)),
                (Ok(_), false) => Err(format!("timed out; log {}", serial.display())),
                (Err(e), _) => Err(format!("{e}; log {}", serial.display())),
            }
        });
        match verdict {
            Ok((exits, cpus, _)) => {
                println!(
                    "e2e linux-module {} PASS {exits} exits {secs:.1}s",
                    run.name()
                );
                for line in cpus {
                    println!("  first load: {line}");
                }
            }
            Err(e) => {
                failed += 1;
                println!("e2e linux-module {} FAIL 0 exits {secs:.1}s", run.name());
                println!("  {e}");
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    if failed == 0 {
        println!("--> ok: linux-module runs passed ({secs:.1}s)");
        Ok(())
    } else {
        Err(format!("{failed} linux-module run(s) failed ({secs:.1}s)"))
    }
}
