//! `cargo xtask e2e [FILTER]`: the end-to-end stage. Installs the emulators a fresh Debian machine
//! lacks, then runs the `hvkit-e2e` crate (the bare-metal example in Bochs and QEMU, driven from
//! Rust) and prints exactly one line per emulator run:
//! `e2e <case> <vendor>/<emulator> PASS|FAIL <exits> exits <seconds>s`, with the serial and
//! emulator log paths under it when a run fails.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::thread;
use std::time::Instant;

use crate::steps::{Result, announce, cargo, ensure_rustup, root};

/// The Debian packages the emulator runs need (see `../shared/EMULATORS.md`): Bochs with its
/// BIOS images and the SDL display that runs headless, GRUB's rescue-ISO tooling (Bochs has no
/// `-kernel`), QEMU (`qemu-system-x86_64`, and `qemu-system-i386` for the guest kernel's native
/// run), and binutils (`as --32`, `ld -m elf_i386` build `examples/guests/mbkernel`).
const DEBIAN_PACKAGES: &[&str] = &[
    "binutils",
    "bochs",
    "bochsbios",
    "vgabios",
    "bochs-sdl",
    "grub-pc-bin",
    "grub-common",
    "xorriso",
    "mtools",
    "qemu-system-x86",
];

/// The programs the runs call, for machines without `dpkg`.
const COMMANDS: &[&str] = &[
    "as",
    "ld",
    "bochs",
    "qemu-system-x86_64",
    "qemu-system-i386",
    "grub-mkrescue",
    "xorriso",
    "mformat",
];

fn succeeds(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .is_ok_and(|o| {
            o.status.success() && String::from_utf8_lossy(&o.stdout).ends_with(" installed")
        })
}

fn have_command(name: &str) -> bool {
    succeeds(Command::new("sh").args(["-c", &format!("command -v {name}")]))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Installs the missing Debian packages with `apt-get` (as root, or through `sudo`).
pub(crate) fn ensure_debian_packages() -> Result {
    announce("checking the emulator packages (Bochs, QEMU, GRUB rescue-ISO tools)");
    if !have_command("dpkg-query") {
        let missing: Vec<_> = COMMANDS.iter().filter(|c| !have_command(c)).collect();
        if missing.is_empty() {
            println!("--> ok: not a Debian system, but every tool is on PATH");
            return Ok(());
        }
        return Err(format!(
            "not a Debian system and these tools are missing: {missing:?}; install the \
             equivalents of {DEBIAN_PACKAGES:?}"
        ));
    }
    let missing: Vec<&str> = DEBIAN_PACKAGES
        .iter()
        .copied()
        .filter(|p| !installed(p))
        .collect();
    if missing.is_empty() {
        println!("--> ok: all installed ({})", DEBIAN_PACKAGES.join(" "));
        return Ok(());
    }
    let sudo = !is_root();
    if sudo && !have_command("sudo") {
        return Err(format!(
            "missing Debian packages {missing:?} and not root (no sudo): run as root \
             `apt-get install -y --no-install-recommends {}`",
            missing.join(" ")
        ));
    }
    let apt = |args: &[&str]| {
        let mut c = Command::new(if sudo { "sudo" } else { "apt-get" });
        if sudo {
            c.arg("apt-get");
        }
        c.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        c
    };
    println!(
        "installing missing Debian packages: {} (apt-get update, then apt-get install){}",
        missing.join(" "),
        if sudo { " through sudo" } else { "" }
    );
    crate::steps::run("apt-get update", &mut apt(&["update", "-q"]))?;
    let mut install = apt(&["install", "-y", "-q", "--no-install-recommends"]);
    install.args(&missing);
    crate::steps::run(
        &format!("apt-get install {}", missing.join(" ")),
        &mut install,
    )
}

/// Whether a line of the test output belongs to the per-run summary: the `e2e …` line and, under
/// a failed one, its indented details (reason, log paths).
fn is_summary(line: &str, after_summary: bool) -> bool {
    line.starts_with("e2e ") || (after_summary && line.starts_with("  "))
}

/// Formatting and clippy for `examples/baremetal`, which is its own workspace (bare-metal target
/// only) and so outside the main workspace's `cargo fmt`/`cargo clippy`.
fn lint_baremetal() -> Result {
    let dir = root().join("examples/baremetal");
    let in_dir = |args: &[&str]| {
        let mut c = cargo();
        c.args(args).current_dir(&dir).env_remove("RUSTFLAGS");
        c
    };
    let step = |what: &str, mut cmd: Command| -> Result {
        announce(what);
        let out = cmd
            .output()
            .map_err(|e| format!("{what}: could not start cargo: {e}"))?;
        if out.status.success() {
            println!("--> ok: {what}");
            Ok(())
        } else {
            eprintln!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            Err(format!("{what}: failed ({})", out.status))
        }
    };
    step(
        "formatting of examples/baremetal (cargo fmt --check)",
        in_dir(&["fmt", "--check"]),
    )?;
    step(
        "lints of examples/baremetal (cargo clippy, x86_64-unknown-none, -D warnings)",
        in_dir(&[
            "clippy",
            "--release",
            "--target",
            "x86_64-unknown-none",
            "--",
            "-D",
            "warnings",
        ]),
    )
}

/// `cargo xtask e2e [FILTER]`: every end-to-end case whose test name contains FILTER.
pub(crate) fn run(filter: Option<&str>) -> Result {
    let start = Instant::now();
    ensure_rustup(None, &[], &["x86_64-unknown-none"])?;
    ensure_debian_packages()?;
    lint_baremetal()?;
    announce(&format!(
        "end-to-end runs (hvkit-e2e: examples/baremetal in Bochs and QEMU){}",
        filter.map_or(String::new(), |f| format!(", filter {f:?}"))
    ));
    let mut cmd = cargo();
    cmd.args(["test", "-p", "hvkit-e2e", "--"])
        .arg("--nocapture")
        .args(filter)
        .current_dir(root())
        .env_remove("RUSTFLAGS")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("could not start cargo test: {e}"))?;
    let stderr = child.stderr.take();
    let errors = thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut s) = stderr {
            let _ = s.read_to_string(&mut text);
        }
        text
    });
    let mut other = Vec::new();
    let mut runs = 0;
    let mut failed_runs = 0;
    if let Some(out) = child.stdout.take() {
        let mut after_summary = false;
        for line in BufReader::new(out).lines().map_while(std::io::Result::ok) {
            after_summary = is_summary(&line, after_summary);
            if after_summary {
                runs += usize::from(line.starts_with("e2e "));
                failed_runs += usize::from(line.starts_with("e2e ") && line.contains(" FAIL "));
                println!("{line}");
            } else {
                other.push(line);
            }
        }
    }
    let status = child
        .wait()
        .map_err(|e| format!("waiting for cargo test: {e}"))?;
    let errors = errors.join().unwrap_or_default();
    let secs = start.elapsed().as_secs_f64();
    if status.success() {
        println!("--> ok: {runs} end-to-end runs passed ({secs:.1}s)");
        Ok(())
    } else {
        if failed_runs == 0 {
            // Not an emulator run that failed (those printed their logs): show everything.
            eprintln!("{}\n{}", other.join("\n"), errors);
        }
        Err(format!(
            "end-to-end stage failed ({status}) after {secs:.1}s: {failed_runs} of {runs} runs \
             failed (logs above)"
        ))
    }
}
