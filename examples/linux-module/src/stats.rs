//! Per-CPU exit figures: counts by kind (hvkit-vcpu's [`ExitKind::NAMES`]), the guest's denied
//! accesses to hypervisor memory, exits answered with #UD, and the raw vendor exits behind the
//! `other` kind. Written by each CPU's host loop, read from the guest (debugfs, unload line):
//! module memory, not pool memory, and only atomics.

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicU64, Ordering};

use hvkit_vcpu::exit::RawExit;
use hvkit_vcpu::{Exit, ExitKind};

/// How many kinds hvkit-vcpu tells apart.
const KINDS: usize = ExitKind::NAMES.len();

/// How many distinct raw exits of kind `other` are kept per CPU.
const OTHER_SLOTS: usize = 4;

/// The figures of one CPU.
#[derive(Debug)]
pub struct CpuStats {
    /// Exits by kind, indexed like [`ExitKind::NAMES`].
    kinds: [AtomicU64; KINDS],
    /// Nested-page faults on the hypervisor's memory, answered with #GP.
    denied: AtomicU64,
    /// The guest-physical address of the last denied access.
    last_denied: AtomicU64,
    /// Exits the host loop answered with #UD (no handler).
    undefined: AtomicU64,
    /// Raw exit (vendor code + 1; 0 = free slot) of `other` exits, with their counts.
    other_codes: [AtomicU64; OTHER_SLOTS],
    other_counts: [AtomicU64; OTHER_SLOTS],
}

impl CpuStats {
    const fn new() -> Self {
        Self {
            kinds: [const { AtomicU64::new(0) }; KINDS],
            denied: AtomicU64::new(0),
            last_denied: AtomicU64::new(0),
            undefined: AtomicU64::new(0),
            other_codes: [const { AtomicU64::new(0) }; OTHER_SLOTS],
            other_counts: [const { AtomicU64::new(0) }; OTHER_SLOTS],
        }
    }

    /// Zeroes every figure (at load).
    pub fn reset(&self) {
        let all = self
            .kinds
            .iter()
            .chain(&self.other_codes)
            .chain(&self.other_counts)
            .chain([&self.denied, &self.last_denied, &self.undefined]);
        for a in all {
            a.store(0, Ordering::Relaxed);
        }
    }

    /// Counts one exit (on its own CPU only: the slots are filled without a lock).
    pub fn record(&self, exit: &Exit) {
        self.kinds[exit.kind.index()].fetch_add(1, Ordering::Relaxed);
        if !matches!(exit.kind, ExitKind::Other) {
            return;
        }
        let code = raw_code(&exit.raw).saturating_add(1);
        for (slot, count) in self.other_codes.iter().zip(&self.other_counts) {
            let held = slot.load(Ordering::Relaxed);
            if held == code || held == 0 {
                slot.store(code, Ordering::Relaxed);
                count.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
    }

    /// Counts a denied access to `gpa`.
    pub fn deny(&self, gpa: u64) {
        self.denied.fetch_add(1, Ordering::Relaxed);
        self.last_denied.store(gpa, Ordering::Relaxed);
    }

    /// Counts an exit answered with #UD.
    pub fn undefined(&self) {
        self.undefined.fetch_add(1, Ordering::Relaxed);
    }

    /// All exits.
    pub fn total(&self) -> u64 {
        self.kinds
            .iter()
            .fold(0, |a, k| a.saturating_add(k.load(Ordering::Relaxed)))
    }

    /// Exits of the kind named `name`.
    pub fn kind(&self, name: &str) -> u64 {
        ExitKind::NAMES
            .iter()
            .position(|n| *n == name)
            .map_or(0, |i| self.kinds[i].load(Ordering::Relaxed))
    }

    /// Denied accesses.
    pub fn denied(&self) -> u64 {
        self.denied.load(Ordering::Relaxed)
    }

    /// Exits answered with #UD.
    pub fn undefined_count(&self) -> u64 {
        self.undefined.load(Ordering::Relaxed)
    }

    /// The guest-physical address of the last denied access.
    pub fn last_denied(&self) -> u64 {
        self.last_denied.load(Ordering::Relaxed)
    }
}

/// The vendor's exit code (VMX basic exit reason, SVM EXITCODE).
fn raw_code(raw: &RawExit) -> u64 {
    match raw {
        RawExit::Vmx { reason, .. } => u64::from(reason.basic().0),
        RawExit::Svm { code, .. } => code.0,
        _ => u64::MAX - 1,
    }
}

/// The manual's name of a raw exit code on this processor's vendor.
fn raw_name(code: u64) -> Option<&'static str> {
    if crate::hv::intel() {
        hvkit_vmx::exit::BasicExitReason(u16::try_from(code).ok()?).name()
    } else {
        hvkit_svm::exit::ExitCode(code).name()
    }
}

/// `"<total> exits: cpuid 140, hypercall 2, npf 1; denied 1"`: the kinds that happened, then
/// the denied accesses and #UD answers when there were any, then the raw exits behind `other`.
pub struct Breakdown<'a>(pub &'a CpuStats);

impl fmt::Display for Breakdown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        write!(f, "{} exits", s.total())?;
        let mut sep = ": ";
        for (name, n) in ExitKind::NAMES.iter().zip(&s.kinds) {
            let n = n.load(Ordering::Relaxed);
            if n != 0 {
                write!(f, "{sep}{name} {n}")?;
                sep = ", ";
            }
        }
        for (what, n) in [("denied", s.denied()), ("#UD", s.undefined_count())] {
            if n != 0 {
                write!(f, "; {what} {n}")?;
            }
        }
        for (code, n) in s.other_codes.iter().zip(&s.other_counts) {
            let code = code.load(Ordering::Relaxed);
            if code == 0 {
                continue;
            }
            let code = code - 1;
            let n = n.load(Ordering::Relaxed);
            match raw_name(code) {
                Some(name) => write!(f, "; other {name} {n}")?,
                None => write!(f, "; other {code:#x} {n}")?,
            }
        }
        Ok(())
    }
}

/// The figures of every CPU.
pub static STATS: [CpuStats; crate::MAX_CPUS] = [const { CpuStats::new() }; crate::MAX_CPUS];

/// Writes `text` into a C buffer of `len` bytes, NUL-terminated and cut to fit; returns the
/// length written (without the NUL).
pub struct CBuffer<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl<'a> CBuffer<'a> {
    /// Over `buf` (its last byte is kept for the NUL).
    pub fn new(buf: &'a mut [u8]) -> Self {
        Self { buf, len: 0 }
    }

    /// Terminates the text; returns its length.
    pub fn finish(self) -> usize {
        if let Some(b) = self.buf.get_mut(self.len) {
            *b = 0;
        }
        self.len
    }
}

impl Write for CBuffer<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = self.buf.len().saturating_sub(1).saturating_sub(self.len);
        let n = s.len().min(room);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}
