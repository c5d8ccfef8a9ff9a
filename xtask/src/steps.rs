//! The steps of `cargo xtask test` and the tool installation they rely on.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// An error from a step: what was being done and why it failed.
pub(crate) type Result<T = ()> = std::result::Result<T, String>;

/// The workspace root (the parent of this crate's manifest directory).
pub(crate) fn root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.parent().unwrap_or(here).to_path_buf()
}

/// Prints a step heading so that the log says what is being done.
pub(crate) fn announce(what: &str) {
    println!("\n==> {what}");
}

/// Runs a command in the workspace root, failing with its description if it fails.
pub(crate) fn run(what: &str, cmd: &mut Command) -> Result {
    announce(what);
    let start = Instant::now();
    let status = cmd
        .current_dir(root())
        .status()
        .map_err(|e| format!("{what}: could not start {:?}: {e}", cmd.get_program()))?;
    let secs = start.elapsed().as_secs_f64();
    if status.success() {
        println!("--> ok: {what} ({secs:.1}s)");
        Ok(())
    } else {
        Err(format!("{what}: failed ({status}) after {secs:.1}s"))
    }
}

/// A `cargo` command using the same cargo that runs xtask.
pub(crate) fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Makes sure rustup has the components and targets the workspace needs for `toolchain`
/// (`None`: the one `rust-toolchain.toml` selects).
pub(crate) fn ensure_rustup(
    toolchain: Option<&str>,
    components: &[&str],
    targets: &[&str],
) -> Result {
    let with_tc = |args: &[&str]| {
        let mut c = Command::new("rustup");
        c.args(args).current_dir(root());
        if let Some(tc) = toolchain {
            c.args(["--toolchain", tc]);
        }
        c
    };
    let name = toolchain.unwrap_or("the workspace toolchain");
    if let Some(tc) = toolchain {
        let installed =
            output(Command::new("rustup").args(["toolchain", "list"])).unwrap_or_default();
        if !installed.lines().any(|l| l.starts_with(tc)) {
            run(
                &format!("installing the {tc} toolchain (rustup)"),
                Command::new("rustup").args(["toolchain", "install", tc, "--profile", "minimal"]),
            )?;
        }
    }
    let have_components =
        output(&mut with_tc(&["component", "list", "--installed"])).unwrap_or_default();
    for comp in components {
        if !have_components.lines().any(|l| l.starts_with(comp)) {
            run(
                &format!("installing rustup component {comp} for {name}"),
                &mut with_tc(&["component", "add", comp]),
            )?;
        }
    }
    let have_targets = output(&mut with_tc(&["target", "list", "--installed"])).unwrap_or_default();
    for target in targets {
        if !have_targets.lines().any(|l| l.trim() == *target) {
            run(
                &format!("installing rustup target {target} for {name}"),
                &mut with_tc(&["target", "add", target]),
            )?;
        }
    }
    Ok(())
}

/// `cargo xtask test`: every check and test, in the order that fails fastest.
pub(crate) fn test() -> Result {
    let start = Instant::now();
    announce("checking the Rust toolchain (rust-toolchain.toml)");
    ensure_rustup(
        None,
        &["rustfmt", "clippy", "rust-src"],
        &["x86_64-unknown-none"],
    )?;

    run(
        "formatting (cargo fmt --check)",
        cargo().args(["fmt", "--all", "--check"]),
    )?;
    run(
        "lints (cargo clippy --workspace --all-targets -D warnings)",
        cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]),
    )?;
    run(
        "API docs (cargo doc --workspace --no-deps, rustdoc warnings are errors)",
        cargo()
            .args(["doc", "--workspace", "--no-deps"])
            .env("RUSTDOCFLAGS", "-D warnings"),
    )?;
    run(
        "bare-metal build of the libraries (x86_64-unknown-none)",
        cargo().args([
            "build",
            "--target",
            "x86_64-unknown-none",
            "-p",
            "hvkit-vmx",
            "-p",
            "hvkit-svm",
            "-p",
            "hvkit-paging",
            "-p",
            "hvkit-vcpu",
        ]),
    )?;
    run(
        "host tests, including doc tests (cargo test --workspace, end-to-end runs apart)",
        cargo().args(["test", "--workspace", "--exclude", "hvkit-e2e"]),
    )?;

    crate::nightly::test_stage()?;

    crate::e2e::run(None)?;
    crate::linux::run(None)?;

    println!(
        "\nxtask test: all steps passed in {:.0}s",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
