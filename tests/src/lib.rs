//! hvkit-e2e: end-to-end runs of the bare-metal example (`examples/baremetal`) in emulators that
//! provide the virtualization hardware this project has no real CPU for: Bochs (VT-x, and AMD-V)
//! and QEMU TCG (AMD-V). See `../shared/EMULATORS.md` for the measured emulator facts these
//! recipes rely on.
//!
//! Each run:
//! 1. builds the kernel once per process (`cargo build --release --target x86_64-unknown-none` in
//!    `examples/baremetal`, which is its own Cargo workspace);
//! 2. prepares a fresh folder `target/e2e/<case>-<vendor>-<emulator>/` with the kernel, a trimmed
//!    GRUB rescue ISO and the `bochsrc`/`cmds` files (Bochs boots the multiboot2 kernel through
//!    GRUB; QEMU takes the multiboot1 kernel with `-kernel`); for the [`MBKERNEL_CASE`] also the
//!    guest kernel `examples/guests/mbkernel` ([`mbkernel`]: `as --32`, `ld -m elf_i386`) and its
//!    module, as GRUB `module2` lines or QEMU `-initrd`, or booted by itself under
//!    `qemu-system-i386` ([`Vendor::Native`], [`Emulator::QEMU_I386`]);
//! 3. runs the emulator under a timeout, with COM1 written to `serial.txt`;
//! 4. judges the run by the serial markers the kernel prints: a `RESULT PASS exits=N` line and no
//!    line starting with `FAIL` (for QEMU also the `isa-debug-exit` status of a pass); for the
//!    guest kernel also its own `RESULT PASS checks=N` and `ok mbkernel …` lines
//!    ([`mbkernel_report`]).
//!
//! [`Outcome::line`] is the one-line summary `cargo xtask e2e` shows:
//! `e2e <case> <vendor>/<emulator> PASS|FAIL <exits> exits <seconds>s`.
//!
//! ```no_run
//! use hvkit_e2e::{Case, Emulator, Vendor};
//!
//! let outcome = hvkit_e2e::run(&Case::new("smoke", Vendor::Vmx, Emulator::BOCHS_SKYLAKE));
//! println!("{}", outcome.report());
//! assert!(outcome.pass);
//! ```

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

/// How long one emulator run may take before it is stopped and counted as a failure.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// The timeout of the million-exit loops ([`Case::timeout`]): about 40 s alone under Bochs
/// (measured: 39.9 s SVM, 46.6 s VMX with two other runs beside it), longer when the other
/// test threads share the two cores.
pub const LONG_RUN_TIMEOUT: Duration = Duration::from_secs(180);

/// The value the kernel writes to QEMU's `isa-debug-exit` port on success; QEMU then exits with
/// `(value << 1) | 1`.
pub const QEMU_PASS_VALUE: i32 = 0x10;

/// The virtualization extension a case exercises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vendor {
    /// Intel VT-x.
    Vmx,
    /// AMD-V.
    Svm,
    /// No hypervisor: the guest kernel boots directly on the emulator (the `mbkernel` case's
    /// reference run, [`Emulator::QEMU_I386`]).
    Native,
}

impl fmt::Display for Vendor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Vmx => "vmx",
            Self::Svm => "svm",
            Self::Native => "native",
        })
    }
}

/// The emulator a case runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Emulator {
    /// Bochs with the given `cpu: model=` (booted through a GRUB ISO, multiboot2).
    Bochs {
        /// The Bochs CPU model.
        cpu_model: &'static str,
        /// The name in the summary line: `bochs` for the vendor's main model, else
        /// `bochs-<model>`.
        label: &'static str,
    },
    /// QEMU with TCG and the given `-cpu` (multiboot1 `-kernel`).
    Qemu {
        /// The `-cpu` argument.
        cpu: &'static str,
        /// The name in the summary line: `qemu` for `-cpu max`, else `qemu-<variant>`.
        label: &'static str,
    },
    /// `qemu-system-i386` booting the guest kernel itself with `-kernel` (multiboot1), with no
    /// hypervisor: the reference run of the `mbkernel` case.
    QemuI386,
}

impl Emulator {
    /// QEMU TCG `-cpu max`: SVM with NPT, without NRIP save, decode assists or clean bits.
    pub const QEMU: Self = Self::Qemu {
        cpu: "max",
        label: "qemu",
    };
    /// QEMU TCG `-cpu qemu64,+svm`: SVM without nested paging.
    pub const QEMU_NO_NPT: Self = Self::Qemu {
        cpu: "qemu64,+svm",
        label: "qemu-nonpt",
    };
    /// Bochs as a Skylake-X: VMX with EPT (1 GiB pages, A/D), VPID, unrestricted guest.
    pub const BOCHS_SKYLAKE: Self = Self::Bochs {
        cpu_model: "corei7_skylake_x",
        label: "bochs",
    };
    /// Bochs as a Core 2 Penryn: VMX without EPT, VPID or unrestricted guest, and no VMWRITE to
    /// read-only fields (the paths a modern model never takes).
    pub const BOCHS_PENRYN: Self = Self::Bochs {
        cpu_model: "core2_penryn_t9600",
        label: "bochs-penryn",
    };
    /// `qemu-system-i386 -kernel` with the guest kernel and no hypervisor.
    pub const QEMU_I386: Self = Self::QemuI386;
    /// Bochs as an AMD Trinity APU: SVM with NPT and NRIP save.
    pub const BOCHS_TRINITY: Self = Self::Bochs {
        cpu_model: "trinity_apu",
        label: "bochs",
    };

    /// What this emulator cannot do that a guest case would otherwise check, as the kernel's
    /// `caps=` argument (comma-separated; empty when it does everything):
    /// - `no-shutdown-exit`: a guest triple fault is not reported as a shutdown exit (Bochs
    ///   2.7's SVM model panics or resets the whole machine instead; measured);
    /// - `no-xsetbv-intercept`: a guest XSETBV does not exit although the VMCB intercepts it
    ///   (QEMU 7.2 TCG; measured: the same vCPU sees the exit under Bochs), so a hypervisor
    ///   cannot know the guest's XCR0.
    #[must_use]
    pub fn missing_capabilities(&self) -> &'static str {
        match self {
            Self::Bochs {
                cpu_model: "trinity_apu",
                ..
            } => "no-shutdown-exit",
            Self::Qemu { .. } => "no-xsetbv-intercept",
            Self::Bochs { .. } | Self::QemuI386 => "",
        }
    }
}

impl fmt::Display for Emulator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Bochs { label, .. } => label,
            Self::Qemu { label, .. } => label,
            Self::QemuI386 => "qemu-i386",
        })
    }
}

/// One end-to-end run: a case of the bare-metal kernel on one vendor and emulator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Case {
    /// The case name, passed to the kernel as `case=<name>` on its command line.
    pub name: &'static str,
    /// The virtualization extension exercised.
    pub vendor: Vendor,
    /// The emulator.
    pub emulator: Emulator,
    /// Further words for the kernel's command line (`count=…`), besides `case=` and `caps=`.
    pub args: &'static str,
}

impl Case {
    /// A case.
    #[must_use]
    pub const fn new(name: &'static str, vendor: Vendor, emulator: Emulator) -> Self {
        Self {
            name,
            vendor,
            emulator,
            args: "",
        }
    }

    /// The kernel's command line: `case=<name>`, the emulator's missing capabilities as
    /// `caps=…` (see [`Emulator::missing_capabilities`]) and [`args`](Self::args).
    #[must_use]
    pub fn command_line(&self) -> String {
        let mut line = format!("case={}", self.name);
        let caps = self.emulator.missing_capabilities();
        if !caps.is_empty() {
            line.push_str(" caps=");
            line.push_str(caps);
        }
        if !self.args.is_empty() {
            line.push(' ');
            line.push_str(self.args);
        }
        line
    }

    /// How long this run may take: [`LONG_RUN_TIMEOUT`] for the million-exit loop
    /// (`hostile-loop-1m`), else [`RUN_TIMEOUT`].
    #[must_use]
    pub fn timeout(&self) -> Duration {
        if self.name.starts_with("hostile-loop") {
            LONG_RUN_TIMEOUT
        } else {
            RUN_TIMEOUT
        }
    }

    /// `<case>-<vendor>-<emulator>`: the run folder's name.
    #[must_use]
    pub fn id(&self) -> String {
        format!("{}-{}-{}", self.name, self.vendor, self.emulator)
    }
}

/// The result of one run.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The case that ran.
    pub case: Case,
    /// Whether the run passed.
    pub pass: bool,
    /// The number of VM exits the kernel reported (0 when it reported none).
    pub exits: u64,
    /// Wall time of the emulator run.
    pub seconds: f64,
    /// Why the run failed (empty on a pass).
    pub reason: String,
    /// The serial log.
    pub serial: PathBuf,
    /// The emulator's own log.
    pub emulator_log: PathBuf,
    /// The serial output (carriage returns removed).
    pub serial_text: String,
    /// Figures the kernel printed for the summary line (the exit cost).
    pub detail: String,
    /// What the kernel skipped and why (`SKIP` lines), shown under the summary line.
    pub notes: Vec<String>,
}

impl Outcome {
    /// `e2e <case> <vendor>/<emulator> PASS|FAIL <exits> exits <seconds>s`.
    #[must_use]
    pub fn line(&self) -> String {
        let line = format!(
            "e2e {} {}/{} {} {} exits {:.1}s",
            self.case.name,
            self.case.vendor,
            self.case.emulator,
            if self.pass { "PASS" } else { "FAIL" },
            self.exits,
            self.seconds
        );
        if self.detail.is_empty() {
            line
        } else {
            format!("{line} ({})", self.detail)
        }
    }

    /// The summary line, and on failure the reason (continuation lines indented) and the paths
    /// of the logs.
    #[must_use]
    pub fn report(&self) -> String {
        let mut line = self.line();
        for note in &self.notes {
            line.push_str("\n  note: ");
            line.push_str(note);
        }
        if self.pass {
            line
        } else {
            format!(
                "{}\n  reason: {}\n  serial: {}\n  emulator log: {}",
                line,
                self.reason.replace('\n', "\n    "),
                self.serial.display(),
                self.emulator_log.display()
            )
        }
    }

    /// Marks the run failed for `reason` (keeping an earlier reason first).
    pub fn fail(&mut self, reason: impl Into<String>) {
        let reason = reason.into();
        self.pass = false;
        if self.reason.is_empty() {
            self.reason = reason;
        } else {
            self.reason = format!("{}; {reason}", self.reason);
        }
    }
}

/// What the serial log says about a run.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Verdict {
    /// The `RESULT` marker said PASS.
    pub result_pass: bool,
    /// A `RESULT` marker was printed at all.
    pub finished: bool,
    /// The exit count from the `RESULT` marker.
    pub exits: u64,
    /// Every line starting with `FAIL`.
    pub failures: Vec<String>,
}

impl Verdict {
    /// Whether the log shows a passing run.
    #[must_use]
    pub fn pass(&self) -> bool {
        self.finished && self.result_pass && self.failures.is_empty()
    }
}

/// The exit cost the kernel measured (`exit-cost: N CPUID round trips, C guest TSC cycles each
/// …`), as `C guest TSC cycles per CPUID round trip`.
#[must_use]
pub fn exit_cost(text: &str) -> Option<String> {
    let line = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("exit-cost: "))?;
    let (_, rest) = line.split_once(", ")?;
    let (cycles, _) = rest.split_once(" each")?;
    Some(format!("{cycles} per CPUID round trip"))
}

/// The share of SVM re-entries with every VMCB clean bit set, summed over the kernel's
/// `vmcb clean bits <guest>: A of B re-entries …` lines, as `vmcb clean A/B`.
#[must_use]
pub fn clean_share(text: &str) -> Option<String> {
    let (mut clean, mut all, mut seen) = (0u64, 0u64, false);
    for line in text.lines().map(str::trim) {
        let Some((_, rest)) = line
            .strip_prefix("vmcb clean bits ")
            .and_then(|l| l.split_once(": "))
        else {
            continue;
        };
        let mut words = rest.split_whitespace();
        let a = words.next().and_then(|w| w.parse::<u64>().ok());
        let b = words.nth(1).and_then(|w| w.parse::<u64>().ok());
        if let (Some(a), Some(b)) = (a, b) {
            clean += a;
            all += b;
            seen = true;
        }
    }
    seen.then(|| format!("vmcb clean {clean}/{all} re-entries"))
}

/// The `SKIP` notes of a serial log: `<guest>: SKIP <what and why>` lines.
#[must_use]
pub fn skip_notes(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| l.contains(": SKIP "))
        .map(str::to_owned)
        .collect()
}

/// Reads the markers from a serial log: `RESULT PASS|FAIL exits=N` and `FAIL ...` lines.
#[must_use]
pub fn parse_serial(text: &str) -> Verdict {
    let mut verdict = Verdict::default();
    for line in text.lines().map(str::trim_end) {
        if let Some(rest) = line.strip_prefix("RESULT ") {
            let mut words = rest.split_whitespace();
            verdict.finished = true;
            verdict.result_pass = words.next() == Some("PASS");
            verdict.exits = words
                .find_map(|w| w.strip_prefix("exits="))
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
        } else if line.starts_with("FAIL") {
            verdict.failures.push(line.to_owned());
        }
    }
    verdict
}

/// The case that hands the guest kernel `examples/guests/mbkernel` (an ordinary multiboot v1
/// ELF32 kernel) and its module to the bare-metal hypervisor as boot modules: hvkit loads it
/// into a guest as a multiboot boot loader would. With [`Vendor::Native`] the same ELF file
/// boots directly under `qemu-system-i386 -kernel`.
pub const MBKERNEL_CASE: &str = "mbkernel";

/// The checks the guest kernel makes: its own `RESULT PASS checks=N` line must say this many,
/// with one `ok mbkernel <what>: …` line each.
pub const MBKERNEL_CHECKS: usize = 12;

/// The word the guest kernel looks for on its command line.
pub const MBKERNEL_WORD: &str = "hvkit-mbkernel-test";

/// `mem_lower`/`mem_upper` (KiB) the guest kernel must find in its info block: hvkit-baremetal
/// gives it 4 MiB of RAM (`examples/baremetal/src/mbkernel.rs`), so 640 and 3072; QEMU 7.2's
/// own multiboot loader with `-m 64` reports 639 and 64384 (measured).
#[must_use]
pub fn mbkernel_memory(emulator: &Emulator) -> (u32, u32) {
    match emulator {
        Emulator::QemuI386 => (639, 64_384),
        _ => (640, 3072),
    }
}

/// The guest kernel's command line after its file name (what `-append` gives, or the rest of
/// its module string).
#[must_use]
pub fn mbkernel_args(emulator: &Emulator) -> String {
    let (lower, upper) = mbkernel_memory(emulator);
    format!("{MBKERNEL_WORD} mem_lower={lower} mem_upper={upper}")
}

/// Checks the guest kernel's own report in a serial log: a `RESULT PASS checks=N` line with
/// N = [`MBKERNEL_CHECKS`], and as many `ok mbkernel ` lines.
///
/// # Errors
/// What is missing or wrong.
pub fn mbkernel_report(text: &str) -> Result<(), String> {
    let oks = text
        .lines()
        .filter(|l| l.trim().starts_with("ok mbkernel "))
        .count();
    let result = text
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("RESULT ") && l.contains(" checks="));
    let expected = format!("RESULT PASS checks={MBKERNEL_CHECKS}");
    match result {
        None => Err("the guest kernel printed no RESULT line of its own".to_owned()),
        Some(line) if line != expected => Err(format!(
            "the guest kernel reported {line:?}, expected {expected:?}"
        )),
        Some(_) if oks != MBKERNEL_CHECKS => Err(format!(
            "the guest kernel printed {oks} `ok mbkernel` lines, expected {MBKERNEL_CHECKS}"
        )),
        Some(_) => Ok(()),
    }
}

/// The guest kernel `examples/guests/mbkernel` built, and the module it expects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MbKernel {
    /// The ELF32 kernel.
    pub elf: PathBuf,
    /// Its first module (`module.txt`).
    pub module: PathBuf,
}

/// The guest kernel, assembled and linked once per process (`as --32`, `ld -m elf_i386`) into
/// `target/e2e/mbkernel-build/`.
///
/// # Errors
/// The assembler's or linker's output when it fails.
pub fn mbkernel() -> Result<MbKernel, String> {
    static MBKERNEL: OnceLock<Result<MbKernel, String>> = OnceLock::new();
    MBKERNEL.get_or_init(build_mbkernel).clone()
}

fn build_mbkernel() -> Result<MbKernel, String> {
    let src = workspace_root().join("examples/guests/mbkernel");
    let out = workspace_root().join("target/e2e/mbkernel-build");
    fs::create_dir_all(&out).map_err(|e| format!("creating {}: {e}", out.display()))?;
    // Per-process names, renamed into place: another process may build at the same time.
    let pid = std::process::id();
    let object = out.join(format!("mbkernel-{pid}.o"));
    let linked = out.join(format!("mbkernel-{pid}.elf"));
    let tool = |name: &str, cmd: &mut Command| -> Result<(), String> {
        let result = cmd
            .output()
            .map_err(|e| format!("could not run {name} ({e}); it is in Debian's binutils"))?;
        if result.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{name} failed ({}) building the guest kernel:\n{}",
                result.status,
                String::from_utf8_lossy(&result.stderr)
            ))
        }
    };
    tool(
        "as",
        Command::new("as")
            .arg("--32")
            .arg("-I")
            .arg(&src)
            .arg("-o")
            .arg(&object)
            .arg(src.join("mbkernel.S")),
    )?;
    tool(
        "ld",
        Command::new("ld")
            .args(["-m", "elf_i386", "-T"])
            .arg(src.join("linker.ld"))
            .arg("-o")
            .arg(&linked)
            .arg(&object),
    )?;
    let _ = fs::remove_file(&object);
    let elf = out.join("mbkernel.elf");
    fs::rename(&linked, &elf).map_err(|e| format!("renaming {}: {e}", linked.display()))?;
    Ok(MbKernel {
        elf,
        module: src.join("module.txt"),
    })
}

/// The workspace root.
#[must_use]
pub fn workspace_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.parent().unwrap_or(here).to_path_buf()
}

/// The bare-metal kernel image, built once per process.
///
/// # Errors
/// The build's output when it fails.
pub fn kernel() -> Result<PathBuf, String> {
    static KERNEL: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    KERNEL.get_or_init(build_kernel).clone()
}

fn build_kernel() -> Result<PathBuf, String> {
    let dir = workspace_root().join("examples/baremetal");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["build", "--release", "--target", "x86_64-unknown-none"])
        .current_dir(&dir)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET")
        .output()
        .map_err(|e| format!("could not run cargo in {}: {e}", dir.display()))?;
    if !out.status.success() {
        return Err(format!(
            "building examples/baremetal failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(dir.join("target/x86_64-unknown-none/release/hvkit-baremetal"))
}

/// Prints the serial log's new complete lines while a run goes on, when `HVKIT_E2E_STREAM` is
/// set (what `cargo xtask demo` shows).
#[derive(Debug)]
struct Stream {
    path: PathBuf,
    prefix: String,
    shown: usize,
    on: bool,
}

impl Stream {
    fn new(path: PathBuf, prefix: String) -> Self {
        Self {
            path,
            prefix,
            shown: 0,
            on: std::env::var_os("HVKIT_E2E_STREAM").is_some(),
        }
    }

    /// Prints what is new; `all`: the rest too, even without a final newline.
    fn poll(&mut self, all: bool) {
        if !self.on {
            return;
        }
        let Ok(bytes) = fs::read(&self.path) else {
            return;
        };
        let Some(new) = bytes.get(self.shown..) else {
            return;
        };
        let end = if all {
            new.len()
        } else {
            new.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1)
        };
        for line in String::from_utf8_lossy(&new[..end]).lines() {
            println!("{}{}", self.prefix, line.trim_end_matches('\r'));
        }
        self.shown += end;
    }
}

/// Runs `cmd` until it exits or `timeout` passes (then kills it); returns its status and time.
fn run_with_timeout(
    cmd: &mut Command,
    timeout: Duration,
    stream: &mut Stream,
) -> io::Result<(Option<ExitStatus>, Duration)> {
    let start = Instant::now();
    let mut child = cmd.spawn()?;
    loop {
        stream.poll(false);
        if let Some(status) = child.try_wait()? {
            stream.poll(true);
            return Ok((Some(status), start.elapsed()));
        }
        if start.elapsed() > timeout {
            child.kill()?;
            child.wait()?;
            return Ok((None, start.elapsed()));
        }
        thread::sleep(Duration::from_millis(10));
    }
}

fn log_file(path: &Path) -> io::Result<Stdio> {
    Ok(Stdio::from(fs::File::create(path)?))
}

/// Keeps other processes (say, two `cargo xtask test` at once) out of a run folder: a lock
/// directory next to it, created atomically and removed on drop. A lock older than two of the
/// longest run timeouts is taken to be left over from a killed process.
#[derive(Debug)]
struct RunLock(PathBuf);

impl RunLock {
    fn acquire(path: PathBuf) -> io::Result<Self> {
        let start = Instant::now();
        loop {
            match fs::create_dir(&path) {
                Ok(()) => return Ok(Self(path)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    let age = fs::metadata(&path)
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| t.elapsed().ok())
                        .unwrap_or_default();
                    if age > LONG_RUN_TIMEOUT * 2 {
                        let _ = fs::remove_dir(&path);
                    } else if start.elapsed() > LONG_RUN_TIMEOUT * 2 {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!("{} is held by another run", path.display()),
                        ));
                    } else {
                        thread::sleep(Duration::from_millis(50));
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        let _ = fs::remove_dir(&self.0);
    }
}

/// Runs one case and judges it. Never panics: every problem is a failed [`Outcome`].
#[must_use]
pub fn run(case: &Case) -> Outcome {
    let runs = workspace_root().join("target/e2e");
    let dir = runs.join(case.id());
    let serial = dir.join("serial.txt");
    let emulator_log = dir.join(match case.emulator {
        Emulator::Bochs { .. } => "bochs.log",
        Emulator::Qemu { .. } | Emulator::QemuI386 => "qemu.log",
    });
    let mut outcome = Outcome {
        case: case.clone(),
        pass: true,
        exits: 0,
        seconds: 0.0,
        reason: String::new(),
        serial: serial.clone(),
        emulator_log: emulator_log.clone(),
        serial_text: String::new(),
        detail: String::new(),
        notes: Vec::new(),
    };
    let lock = fs::create_dir_all(&runs)
        .and_then(|()| RunLock::acquire(runs.join(format!("{}.lock", case.id()))));
    let _lock = match lock {
        Ok(lock) => lock,
        Err(e) => {
            outcome.fail(format!("locking the run folder: {e}"));
            return outcome;
        }
    };
    let mut stream = Stream::new(serial.clone(), format!("[{}] ", case.id()));
    let ran = prepare(case, &dir).and_then(|kernel| match case.emulator {
        Emulator::Bochs { cpu_model, .. } => run_bochs(case, &dir, cpu_model, &mut stream),
        Emulator::Qemu { cpu, .. } => {
            run_qemu(case, &dir, &kernel, cpu, &emulator_log, &mut stream)
        }
        Emulator::QemuI386 => run_qemu_i386(case, &dir, &emulator_log, &mut stream),
    });
    let (status, elapsed) = match ran {
        Ok(r) => r,
        Err(e) => {
            outcome.fail(e);
            return outcome;
        }
    };
    outcome.seconds = elapsed.as_secs_f64();
    outcome.serial_text = fs::read_to_string(&serial)
        .unwrap_or_default()
        .replace('\r', "");
    let verdict = parse_serial(&outcome.serial_text);
    outcome.exits = verdict.exits;
    outcome.detail = [
        exit_cost(&outcome.serial_text),
        clean_share(&outcome.serial_text),
    ]
    .into_iter()
    .flatten()
    .collect::<Vec<_>>()
    .join(", ");
    outcome.notes = skip_notes(&outcome.serial_text);
    match status {
        None => outcome.fail(format!("timed out after {}s", case.timeout().as_secs_f64())),
        Some(status) if matches!(case.emulator, Emulator::Qemu { .. } | Emulator::QemuI386) => {
            let expected = (QEMU_PASS_VALUE << 1) | 1;
            if status.code() != Some(expected) {
                outcome.fail(format!(
                    "QEMU exited with {status}, a pass exits with {expected}"
                ));
            }
        }
        // Bochs exits 0 through the magic breakpoint and 1 through its shutdown port; the
        // markers decide.
        Some(_) => {}
    }
    if !verdict.finished {
        outcome.fail("the kernel printed no RESULT marker");
    } else if !verdict.pass() {
        let detail = verdict
            .failures
            .first()
            .map_or("RESULT FAIL", String::as_str);
        outcome.fail(detail.to_owned());
    }
    if case.name == MBKERNEL_CASE
        && let Err(e) = mbkernel_report(&outcome.serial_text)
    {
        outcome.fail(e);
    }
    outcome
}

/// Makes the run folder afresh and copies the kernel into it (and, for the `mbkernel` case,
/// the guest kernel and its module, next to it for QEMU and in the ISO's `/boot` for GRUB).
/// Returns the kernel the emulator boots.
fn prepare(case: &Case, dir: &Path) -> Result<PathBuf, String> {
    if dir.exists() {
        fs::remove_dir_all(dir).map_err(|e| format!("removing {}: {e}", dir.display()))?;
    }
    let boot = dir.join("iso/boot");
    fs::create_dir_all(boot.join("grub"))
        .map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let copy = |from: &Path, to: PathBuf| -> Result<PathBuf, String> {
        fs::copy(from, &to).map_err(|e| format!("copying {}: {e}", from.display()))?;
        Ok(to)
    };
    let mut modules = String::new();
    if case.name == MBKERNEL_CASE {
        let mb = mbkernel()?;
        for (from, name) in [(&mb.elf, "mbkernel.elf"), (&mb.module, "module.txt")] {
            copy(from, dir.join(name))?;
            copy(from, boot.join(name))?;
        }
        if case.vendor == Vendor::Native {
            return Ok(dir.join("mbkernel.elf"));
        }
        // GRUB's module string is what follows the file name: the same words QEMU passes.
        modules = format!(
            "  module2 /boot/mbkernel.elf mbkernel.elf {}\n  module2 /boot/module.txt module.txt\n",
            mbkernel_args(&case.emulator)
        );
    }
    let kernel = kernel()?;
    let copy = copy(&kernel, boot.join("kernel.elf"))?;
    let grub_cfg = format!(
        "set timeout=0\nset default=0\nmenuentry \"hvkit\" {{\n  multiboot2 /boot/kernel.elf {}\n{modules}  boot\n}}\n",
        case.command_line()
    );
    fs::write(boot.join("grub/grub.cfg"), grub_cfg).map_err(|e| format!("grub.cfg: {e}"))?;
    Ok(copy)
}

fn run_bochs(
    case: &Case,
    dir: &Path,
    cpu_model: &str,
    stream: &mut Stream,
) -> Result<(Option<ExitStatus>, Duration), String> {
    let iso_log = dir.join("grub-mkrescue.log");
    let made = Command::new("grub-mkrescue")
        .args([
            "--install-modules=multiboot2 normal iso9660 biosdisk",
            "--fonts=",
            "--locales=",
            "--themes=",
            "-o",
            "hvkit.iso",
            "iso",
        ])
        .current_dir(dir)
        .stdout(log_file(&iso_log).map_err(|e| e.to_string())?)
        .stderr(log_file(&dir.join("grub-mkrescue.err")).map_err(|e| e.to_string())?)
        .status()
        .map_err(|e| format!("could not run grub-mkrescue ({e}); `cargo xtask e2e` installs it"))?;
    if !made.success() {
        return Err(format!(
            "grub-mkrescue failed ({made}), see {}",
            dir.join("grub-mkrescue.err").display()
        ));
    }
    let bochsrc = format!(
        "megs: 64\n\
         cpu: model={cpu_model}, reset_on_triple_fault=0\n\
         romimage: file=/usr/share/bochs/BIOS-bochs-latest, options=fastboot\n\
         vgaromimage: file=/usr/share/bochs/VGABIOS-lgpl-latest\n\
         display_library: sdl2\n\
         ata0-master: type=cdrom, path=hvkit.iso, status=inserted\n\
         boot: cdrom\n\
         com1: enabled=1, mode=file, dev=serial.txt\n\
         clock: sync=none, time0=1\n\
         sound: waveoutdrv=dummy, waveindrv=dummy, midioutdrv=dummy\n\
         speaker: enabled=0\n\
         magic_break: enabled=1\n\
         log: bochs.log\n"
    );
    fs::write(dir.join("bochsrc"), bochsrc).map_err(|e| format!("bochsrc: {e}"))?;
    fs::write(dir.join("cmds"), "c\nq\n").map_err(|e| format!("cmds: {e}"))?;
    run_with_timeout(
        Command::new("bochs")
            .args(["-q", "-f", "bochsrc", "-rc", "cmds"])
            .current_dir(dir)
            .env("SDL_VIDEODRIVER", "dummy")
            .stdin(Stdio::null())
            .stdout(log_file(&dir.join("bochs.out")).map_err(|e| e.to_string())?)
            .stderr(Stdio::from(
                fs::File::options()
                    .append(true)
                    .open(dir.join("bochs.out"))
                    .map_err(|e| e.to_string())?,
            )),
        case.timeout(),
        stream,
    )
    .map_err(|e| format!("could not run bochs ({e}); `cargo xtask e2e` installs it"))
}

fn run_qemu(
    case: &Case,
    dir: &Path,
    kernel: &Path,
    cpu: &str,
    log: &Path,
    stream: &mut Stream,
) -> Result<(Option<ExitStatus>, Duration), String> {
    let out = log_file(log).map_err(|e| e.to_string())?;
    let err = Stdio::from(
        fs::File::options()
            .append(true)
            .open(log)
            .map_err(|e| e.to_string())?,
    );
    run_with_timeout(
        Command::new("qemu-system-x86_64")
            .args(["-accel", "tcg", "-cpu", cpu, "-m", "64"])
            .args([
                "-display",
                "none",
                "-no-reboot",
                "-serial",
                "file:serial.txt",
            ])
            .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"])
            .arg("-kernel")
            .arg(kernel)
            .args(["-append", &case.command_line()])
            .args(qemu_modules(case))
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err),
        case.timeout(),
        stream,
    )
    .map_err(|e| format!("could not run qemu-system-x86_64 ({e}); `cargo xtask e2e` installs it"))
}

/// QEMU's multiboot1 modules for the `mbkernel` case: `-initrd "mbkernel.elf <args>,module.txt"`
/// (each entry's first word is the file, the whole entry its string).
fn qemu_modules(case: &Case) -> Vec<String> {
    if case.name == MBKERNEL_CASE {
        let args = mbkernel_args(&case.emulator).replace(',', ",,");
        vec!["-initrd".into(), format!("mbkernel.elf {args},module.txt")]
    } else {
        Vec::new()
    }
}

/// The guest kernel booted directly by `qemu-system-i386 -kernel` (no hypervisor), with its
/// module as `-initrd`.
fn run_qemu_i386(
    case: &Case,
    dir: &Path,
    log: &Path,
    stream: &mut Stream,
) -> Result<(Option<ExitStatus>, Duration), String> {
    let out = log_file(log).map_err(|e| e.to_string())?;
    let err = Stdio::from(
        fs::File::options()
            .append(true)
            .open(log)
            .map_err(|e| e.to_string())?,
    );
    run_with_timeout(
        Command::new("qemu-system-i386")
            .args(["-accel", "tcg", "-m", "64"])
            .args([
                "-display",
                "none",
                "-no-reboot",
                "-serial",
                "file:serial.txt",
            ])
            .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"])
            .args(["-kernel", "mbkernel.elf", "-initrd", "module.txt"])
            .args(["-append", &mbkernel_args(&case.emulator)])
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err),
        case.timeout(),
        stream,
    )
    .map_err(|e| format!("could not run qemu-system-i386 ({e}); `cargo xtask e2e` installs it"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_passing_log() {
        let v = parse_serial("hello\r\nok thing\nRESULT PASS exits=2\n");
        assert!(v.pass());
        assert_eq!(v.exits, 2);
    }

    #[test]
    fn a_fail_line_fails_even_with_a_pass_marker() {
        let v = parse_serial("FAIL vmread: boom\nRESULT PASS exits=2\n");
        assert!(!v.pass());
        assert_eq!(v.failures, ["FAIL vmread: boom"]);
    }

    #[test]
    fn no_marker_is_no_pass() {
        let v = parse_serial("ok enable\n");
        assert!(!v.finished);
        assert!(!v.pass());
        let v = parse_serial("RESULT FAIL exits=1\n");
        assert!(v.finished && !v.pass());
        assert_eq!(v.exits, 1);
    }

    #[test]
    fn run_lock_is_released_on_drop() {
        let path = std::env::temp_dir().join(format!("hvkit-e2e-lock-{}", std::process::id()));
        let lock = RunLock::acquire(path.clone());
        assert!(lock.is_ok() && path.is_dir());
        drop(lock);
        assert!(!path.exists());
        // Released, it can be taken again.
        let again = RunLock::acquire(path.clone());
        assert!(again.is_ok());
    }

    #[test]
    fn summary_line_format() {
        let outcome = Outcome {
            case: Case::new("smoke", Vendor::Svm, Emulator::QEMU),
            pass: true,
            exits: 3,
            seconds: 0.31,
            reason: String::new(),
            serial: PathBuf::from("s"),
            emulator_log: PathBuf::from("l"),
            serial_text: String::new(),
            detail: String::new(),
            notes: Vec::new(),
        };
        assert_eq!(outcome.line(), "e2e smoke svm/qemu PASS 3 exits 0.3s");
        let mut failed = outcome.clone();
        failed.fail("boom");
        assert_eq!(
            failed.report(),
            "e2e smoke svm/qemu FAIL 3 exits 0.3s\n  reason: boom\n  serial: s\n  emulator log: l"
        );
        let mut noted = outcome.clone();
        noted.detail = "910 guest TSC cycles per CPUID round trip".into();
        noted.notes = vec!["hostile: SKIP triple fault".into()];
        assert_eq!(
            noted.report(),
            "e2e smoke svm/qemu PASS 3 exits 0.3s (910 guest TSC cycles per CPUID round trip)\n  \
             note: hostile: SKIP triple fault"
        );
    }

    #[test]
    fn exit_cost_and_skip_notes() {
        let log = "x\nexit-cost: 10000 CPUID round trips, 808 guest TSC cycles each (host TSC per \
                   exit 808)\nhostile: SKIP triple fault: why\n";
        assert_eq!(
            exit_cost(log).as_deref(),
            Some("808 guest TSC cycles per CPUID round trip")
        );
        assert_eq!(skip_notes(log), ["hostile: SKIP triple fault: why"]);
        let clean = "vmcb clean bits a: 3 of 6 re-entries with every area clean (500 per mille)\n\
                     vmcb clean bits b: 6 of 6 re-entries with every area clean (1000 per mille)\n";
        assert_eq!(
            clean_share(clean).as_deref(),
            Some("vmcb clean 9/12 re-entries")
        );
        assert_eq!(clean_share(log), None);
        assert_eq!(exit_cost("nothing"), None);
    }

    #[test]
    fn command_line_carries_capabilities() {
        let case = Case::new("hostile", Vendor::Svm, Emulator::BOCHS_TRINITY);
        assert_eq!(case.command_line(), "case=hostile caps=no-shutdown-exit");
        let case = Case::new("fpu", Vendor::Svm, Emulator::QEMU);
        assert_eq!(case.command_line(), "case=fpu caps=no-xsetbv-intercept");
        let mut case = Case::new("cpuid", Vendor::Vmx, Emulator::BOCHS_SKYLAKE);
        assert_eq!(case.command_line(), "case=cpuid");
        case.args = "count=5";
        assert_eq!(case.command_line(), "case=cpuid count=5");
    }

    #[test]
    fn mbkernel_report_needs_the_guests_own_lines() {
        let oks: String = (0..MBKERNEL_CHECKS)
            .map(|i| format!("ok mbkernel check{i}: fine\n"))
            .collect();
        let good = format!("{oks}RESULT PASS checks={MBKERNEL_CHECKS}\nRESULT PASS exits=3\n");
        assert_eq!(mbkernel_report(&good), Ok(()));
        // The host's RESULT line alone is not the guest's.
        assert!(mbkernel_report("RESULT PASS exits=3\n").is_err());
        let short = format!("ok mbkernel a: x\nRESULT PASS checks={MBKERNEL_CHECKS}\n");
        assert!(mbkernel_report(&short).is_err());
        let failed = format!("{oks}RESULT FAIL checks=11 failed=1\n");
        assert!(mbkernel_report(&failed).is_err());
    }

    #[test]
    fn the_million_exit_loop_has_the_long_timeout() {
        let lp = Case::new("hostile-loop-1m", Vendor::Vmx, Emulator::BOCHS_SKYLAKE);
        assert_eq!(lp.timeout(), LONG_RUN_TIMEOUT);
        let cpuid = Case::new("cpuid", Vendor::Vmx, Emulator::BOCHS_SKYLAKE);
        assert_eq!(cpuid.timeout(), RUN_TIMEOUT);
    }

    #[test]
    fn mbkernel_modules_and_memory() {
        let case = Case::new(MBKERNEL_CASE, Vendor::Svm, Emulator::QEMU);
        assert_eq!(
            qemu_modules(&case),
            [
                "-initrd",
                "mbkernel.elf hvkit-mbkernel-test mem_lower=640 mem_upper=3072,module.txt"
            ]
        );
        assert!(qemu_modules(&Case::new("cpuid", Vendor::Svm, Emulator::QEMU)).is_empty());
        assert_eq!(mbkernel_memory(&Emulator::QEMU_I386), (639, 64_384));
        assert_eq!(Emulator::QEMU_I386.to_string(), "qemu-i386");
        assert_eq!(Vendor::Native.to_string(), "native");
    }
}
