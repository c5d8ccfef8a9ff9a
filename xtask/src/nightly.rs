//! The stages that need the nightly toolchain: Miri over the paging host tests, and the
//! cargo-fuzz targets (a short smoke run in `cargo xtask test`, a long run in `cargo xtask fuzz`).

use std::process::Command;

use crate::steps::{Result, announce, ensure_rustup, root, run};

/// The toolchain for Miri and cargo-fuzz (both need nightly-only flags).
const NIGHTLY: &str = "nightly";

/// `cargo` of the nightly toolchain, started through rustup so that `rust-toolchain.toml`'s
/// stable pin does not apply.
fn nightly_cargo() -> Command {
    let mut c = Command::new("rustup");
    c.args(["run", NIGHTLY, "cargo"]);
    // Variables that the stable cargo running xtask set must not leak into the nightly build.
    for var in [
        "RUSTC",
        "RUSTDOC",
        "RUSTC_WRAPPER",
        "CARGO",
        "RUSTUP_TOOLCHAIN",
    ] {
        c.env_remove(var);
    }
    c
}

fn ensure_cargo_fuzz() -> Result {
    let have = Command::new("cargo")
        .args(["fuzz", "--version"])
        .env_remove("RUSTUP_TOOLCHAIN")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if have {
        return Ok(());
    }
    run(
        "installing cargo-fuzz (cargo install cargo-fuzz --locked)",
        Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]),
    )
}

/// The fuzz targets of `fuzz/` (the file names in `fuzz/fuzz_targets`).
pub(crate) fn fuzz_targets() -> Vec<String> {
    let dir = root().join("fuzz").join("fuzz_targets");
    let mut targets: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter_map(|e| {
                    let name = e.file_name().into_string().ok()?;
                    name.strip_suffix(".rs").map(str::to_owned)
                })
                .collect()
        })
        .unwrap_or_default();
    targets.sort();
    targets
}

/// Runs Miri over the hvkit-paging host tests.
pub(crate) fn miri() -> Result {
    ensure_rustup(Some(NIGHTLY), &["miri", "rust-src"], &[])?;
    run(
        "Miri over the hvkit-paging host tests (cargo +nightly miri test -p hvkit-paging)",
        nightly_cargo()
            .args(["miri", "test", "-p", "hvkit-paging"])
            .env("MIRIFLAGS", "-Zmiri-strict-provenance"),
    )
}

/// Runs every fuzz target for `seconds` each.
pub(crate) fn fuzz(seconds: u32, filter: Option<&str>) -> Result {
    let targets = fuzz_targets();
    if targets.is_empty() {
        return Err("no fuzz targets found in fuzz/fuzz_targets".into());
    }
    ensure_rustup(Some(NIGHTLY), &["rust-src"], &[])?;
    ensure_cargo_fuzz()?;
    for target in targets
        .iter()
        .filter(|t| filter.is_none_or(|f| t.contains(f)))
    {
        let max_time = format!("-max_total_time={seconds}");
        run(
            &format!("fuzzing {target} for {seconds}s (cargo +nightly fuzz run)"),
            nightly_cargo().current_dir(root().join("fuzz")).args([
                "fuzz",
                "run",
                target,
                "--",
                &max_time,
                "-print_final_stats=1",
            ]),
        )?;
    }
    Ok(())
}

/// The nightly part of `cargo xtask test`: Miri, then a short smoke run of each fuzz target.
pub(crate) fn test_stage() -> Result {
    announce("nightly stages: Miri and fuzz smoke runs");
    miri()?;
    fuzz(5, None)
}
