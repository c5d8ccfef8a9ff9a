//! `cargo xtask`: the project's front end for building, testing and demonstrating hvkit.
//!
//! - `cargo xtask test`: everything CI runs (formatting, clippy, rustdoc, host tests, bare-metal
//!   builds, and the further stages that later parts of the project add).
//! - `cargo xtask demo`: a tour of what the crates do today.
//!
//! Each step says what it is doing before it does it, and installs what a fresh Debian machine
//! lacks (rustup targets and components) instead of failing on it.

use std::process::ExitCode;

mod demo;
mod e2e;
mod linux;
mod nightly;
mod steps;

fn usage() -> ExitCode {
    eprintln!(
        "usage: cargo xtask <command>\n\n\
         commands:\n  \
         test    run every check and test (what CI runs)\n  \
         demo    show what hvkit does today\n  \
         e2e [FILTER]   run the end-to-end cases in Bochs and QEMU (installs them)\n  \
         linux-module [FILTER]   build hvkit.ko and boot Debian's kernel with it (QEMU SVM, Bochs VMX)\n  \
         fuzz [SECONDS] [TARGET]   run the fuzz targets (default 60 s each)\n"
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") => steps::test(),
        Some("demo") => demo::run(),
        Some("e2e") => e2e::run(args.get(1).map(String::as_str)),
        Some("linux-module") => linux::run(args.get(1).map(String::as_str)),
        Some("fuzz") => {
            let seconds = match args.get(1).map(|s| s.parse::<u32>()) {
                None => 60,
                Some(Ok(s)) => s,
                Some(Err(_)) => return usage(),
            };
            nightly::fuzz(seconds, args.get(2).map(String::as_str))
        }
        _ => return usage(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}
