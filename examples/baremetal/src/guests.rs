//! The test guests of `examples/guests`, run through `hvkit_vcpu::Vcpu` on whichever of VT-x or
//! AMD-V the CPU has (the same host code for both).
//!
//! Each guest checks itself and reports through port 0x510 (0 = PASS, else the number of the
//! check that failed); the host checks the exits it saw. Every run prints a summary line,
//! `summary <guest>: exits total N: cpuid 6, io 1; guest PASS; host ok`, and the kernel's
//! `RESULT` marker carries the total.
//!
//! Guest code is assembled into this kernel (`global_asm!` of `examples/guests/*.S`) as plain
//! bytes in `.rodata` and copied into the guest's RAM: 2 MiB at GPA 0, code at 0x10_0000 (real
//! mode: 0x7C00), stack at 0x9_0000.
// UNSAFETY: `Vcpu::new` is an `unsafe fn` (ring 0, one vCPU per CPU, stable host state); the
// PIC mask, RDTSC and the host MSR read are port/MSR/instruction accesses; the guest images are
// reached through linker symbols.
#![expect(
    unsafe_code,
    reason = "creates vCPUs, masks the PIC, reads the TSC and host MSRs, reads the guest images"
)]

use core::sync::atomic::{AtomicU64, Ordering};

use hvkit_paging::GuestPhysAddr;
use hvkit_vcpu::exit::IoDirection;
use hvkit_vcpu::state::{CR0_PE, CR0_PG, EFER_LMA, GuestState};
use hvkit_vcpu::{Event, Exit, ExitCounts, ExitKind, Platform, Vcpu, VcpuConfig, VcpuError};
use x86_64::instructions::port::PortWriteOnly;

use crate::platform::MapPlatform;
use crate::println;

core::arch::global_asm!(
    concat!(
        include_str!("../../guests/common.S"),
        include_str!("../../guests/cpuid.S"),
        include_str!("../../guests/io.S"),
        include_str!("../../guests/msr.S"),
        include_str!("../../guests/hlt.S"),
        include_str!("../../guests/hypercall.S"),
        include_str!("../../guests/npf.S"),
        include_str!("../../guests/exception.S"),
        include_str!("../../guests/realmode.S"),
        include_str!("../../guests/paging.S"),
        include_str!("../../guests/hostile.S"),
        include_str!("../../guests/loop.S"),
        include_str!("../../guests/exitcost.S"),
        include_str!("../../guests/fpu.S"),
    ),
    options(att_syntax)
);

/// The port a guest reports its result on (OUT of EAX: 0 = PASS).
const REPORT_PORT: u16 = 0x510;
/// The port the hostile guest asks whether to triple-fault on (IN: 1 = yes).
const ASK_PORT: u16 = 0x511;
/// The port the exception guest asks for an event on (OUT of the vector).
const EVENT_PORT: u16 = 0x86;
/// Where 32-bit and 64-bit guests are loaded.
const LOAD: u64 = 0x10_0000;
/// Where the real-mode guest is loaded (0000:7C00).
const LOAD_REAL: u64 = 0x7C00;
/// The guest's stack top.
const STACK: u32 = 0x9_0000;
/// Guest RAM: 0 to 2 MiB.
const RAM: u64 = 2 << 20;
/// Round trips of the exit-cost guest.
pub const EXIT_COST_ROUND_TRIPS: u32 = 10_000;

macro_rules! image {
    ($start:ident, $end:ident) => {{
        unsafe extern "C" {
            static $start: u8;
            static $end: u8;
        }
        let start = core::ptr::addr_of!($start);
        let end = core::ptr::addr_of!($end);
        let len = (end as usize).saturating_sub(start as usize);
        // SAFETY: the two symbols delimit one guest's bytes in `.rodata` (see
        // `examples/guests/*.S`), which nothing writes.
        unsafe { core::slice::from_raw_parts(start, len) }
    }};
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    /// The guest reported this result on [`REPORT_PORT`].
    Report(u32),
    /// The host's handler stopped the run (after a shutdown exit, say).
    Stopped,
    /// The run broke (an error or an unexpected exit, already printed).
    Broken,
}

/// What a handler wants done with an exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flow {
    /// Handled: run the guest again.
    Resume,
    /// Not handled: apply `Vcpu::handle_default`.
    Default,
    /// End the run.
    Stop,
}

/// The result of one guest run.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    /// The guest's name.
    pub name: &'static str,
    /// Exits by kind.
    pub counts: ExitCounts,
    /// The guest's own verdict.
    pub guest_pass: bool,
    /// Every host-side check held.
    pub host_pass: bool,
}

impl Outcome {
    /// Guest and host both passed.
    pub fn pass(&self) -> bool {
        self.guest_pass && self.host_pass
    }
}

/// A guest under construction and its run.
pub(crate) struct Run<'p> {
    pub(crate) name: &'static str,
    pub(crate) vcpu: Vcpu<'p, MapPlatform>,
    pub(crate) counts: ExitCounts,
    pub(crate) host_pass: bool,
    pub(crate) guest_pass: bool,
}

impl<'p> Run<'p> {
    /// A vCPU for `config` with no RAM yet (the caller adds it), nothing intercepted beyond
    /// hvkit-vcpu's defaults.
    pub(crate) fn empty(
        platform: &'p MapPlatform,
        name: &'static str,
        config: &VcpuConfig,
    ) -> Option<Self> {
        // SAFETY: ring 0 in 64-bit mode on the only CPU, which never leaves; no other vCPU
        // exists (each run drops its vCPU before the next is made); the host's GDT, segments,
        // CRs and MSRs do not change while it lives; the guests only reach the ports and MSRs
        // left open (the PIC is masked, so it cannot take the host's interrupts either).
        let vcpu = unsafe { Vcpu::new(platform, config) };
        match vcpu {
            Ok(vcpu) => Some(Self {
                name,
                vcpu,
                counts: ExitCounts::new(),
                host_pass: true,
                guest_pass: false,
            }),
            Err(e) => {
                println!("FAIL {name}: Vcpu::new: {e:?}");
                None
            }
        }
    }

    /// A vCPU in `state` with 2 MiB of RAM at 0, `image` at `load`, the report ports
    /// intercepted.
    fn new(
        platform: &'p MapPlatform,
        name: &'static str,
        config: &VcpuConfig,
        image: &[u8],
        load: u64,
    ) -> Option<Self> {
        let mut run = Self::empty(platform, name, config)?;
        let loaded = run.vcpu.add_ram(GuestPhysAddr::ZERO, RAM).and_then(|_| {
            run.vcpu
                .write_guest(GuestPhysAddr::new_truncate(load), image)
        });
        if let Err(e) = loaded {
            println!("FAIL {name}: loading the guest: {e:?}");
            return None;
        }
        run.vcpu.intercept_io(REPORT_PORT..=ASK_PORT, true);
        println!(
            "guest {name}: {} bytes at {load:#x} on {:?}",
            image.len(),
            run.vcpu.vendor()
        );
        Some(run)
    }

    /// A host-side check.
    pub(crate) fn check(&mut self, ok: bool, what: core::fmt::Arguments<'_>) {
        println!("{} {}: {what}", if ok { "ok" } else { "FAIL" }, self.name);
        self.host_pass &= ok;
    }

    /// Runs the guest until it reports (or `handler` stops it), for at most `limit` exits.
    /// `handler` sees every exit first; what it leaves goes to `handle_default`.
    pub(crate) fn drive(
        &mut self,
        limit: u64,
        mut handler: impl FnMut(&mut Vcpu<'p, MapPlatform>, &Exit) -> Result<Flow, VcpuError>,
    ) -> Ended {
        let name = self.name;
        for _ in 0..limit {
            let exit = match self.vcpu.run() {
                Ok(exit) => exit,
                Err(e) => {
                    println!("FAIL {name}: run: {e:?}");
                    return Ended::Broken;
                }
            };
            self.counts.record(&exit.kind);
            if let ExitKind::Io(io) = exit.kind
                && io.port == REPORT_PORT
                && io.direction == IoDirection::Out
                && !io.string
            {
                return Ended::Report(io.data.unwrap_or(u32::MAX));
            }
            match handler(&mut self.vcpu, &exit) {
                Ok(Flow::Resume) => continue,
                Ok(Flow::Stop) => return Ended::Stopped,
                Ok(Flow::Default) => {}
                Err(e) => {
                    println!("FAIL {name}: handling {exit:?}: {e:?}");
                    return Ended::Broken;
                }
            }
            match self.vcpu.handle_default() {
                Ok(true) => {}
                Ok(false) => {
                    let rip = self.vcpu.rip().unwrap_or(u64::MAX);
                    println!(
                        "FAIL {name}: unexpected exit {:?} (raw {:?}) at rip {rip:#x}",
                        exit.kind, exit.raw
                    );
                    return Ended::Broken;
                }
                Err(e) => {
                    println!("FAIL {name}: handle_default on {exit:?}: {e:?}");
                    return Ended::Broken;
                }
            }
        }
        println!("FAIL {name}: still running after {limit} exits");
        Ended::Broken
    }

    /// Records the guest's verdict from how the run ended.
    pub(crate) fn verdict(&mut self, ended: Ended) {
        self.guest_pass = match ended {
            Ended::Report(0) => true,
            Ended::Report(code) => {
                println!("FAIL {}: the guest's check {code} failed", self.name);
                false
            }
            Ended::Stopped => true,
            Ended::Broken => false,
        };
    }

    /// Prints the summary and returns the outcome (dropping the vCPU).
    pub(crate) fn finish(self) -> Outcome {
        let outcome = Outcome {
            name: self.name,
            counts: self.counts,
            guest_pass: self.guest_pass,
            host_pass: self.host_pass,
        };
        println!(
            "summary {}: exits {}; guest {}; host {}",
            outcome.name,
            outcome.counts,
            if outcome.guest_pass { "PASS" } else { "FAIL" },
            if outcome.host_pass { "ok" } else { "FAIL" }
        );
        if let Some(clean) = self.vcpu.svm_clean_stats() {
            println!(
                "vmcb clean bits {}: {} of {} re-entries with every area clean ({} per mille)",
                outcome.name,
                clean.clean_reentries,
                clean.reentries,
                clean.clean_per_mille()
            );
        }
        outcome
    }
}

fn rdtsc() -> u64 {
    // SAFETY: RDTSC only reads the time-stamp counter.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Masks both PICs: the BIOS leaves the PIT on IRQ 0 (vector 8), and with external-interrupt
/// exiting off a guest that sets IF would take the host's timer.
pub fn mask_pic() {
    // SAFETY: writing the PICs' interrupt mask registers only masks device interrupts, which
    // this kernel does not use.
    unsafe {
        PortWriteOnly::<u8>::new(0x21).write(0xff);
        PortWriteOnly::<u8>::new(0xa1).write(0xff);
    }
}

fn protected<'p>(platform: &'p MapPlatform, name: &'static str, image: &[u8]) -> Option<Run<'p>> {
    let config = VcpuConfig::new(GuestState::protected_mode_flat(LOAD as u32, STACK));
    Run::new(platform, name, &config, image, LOAD)
}

/// The outcome of a run that could not start (the reason is already printed).
pub(crate) fn failed(name: &'static str) -> Outcome {
    let outcome = Outcome {
        name,
        counts: ExitCounts::new(),
        guest_pass: false,
        host_pass: false,
    };
    println!("summary {name}: exits total 0; guest FAIL; host FAIL");
    outcome
}

/// cpuid: the policy's leaves, including hvkit's, answered by `handle_default`.
pub fn cpuid(platform: &MapPlatform) -> Outcome {
    let Some(mut run) = protected(
        platform,
        "cpuid",
        image!(guest_cpuid_start, guest_cpuid_end),
    ) else {
        return failed("cpuid");
    };
    let ended = run.drive(100, |_, _| Ok(Flow::Default));
    run.verdict(ended);
    let n = run.counts.get("cpuid");
    run.check(n == 6, format_args!("6 CPUID exits, saw {n}"));
    let t = run.counts.total();
    run.check(
        t == 7,
        format_args!("7 exits in all (6 + the report), saw {t}"),
    );
    run.finish()
}

/// The value the host's ports 0x80-0x85 give for IN of `size` bytes.
fn port_value(port: u16, size: usize) -> u32 {
    let v = 0x1234_5600 + 0x10 * size as u32 + u32::from(port & 0xf);
    match size {
        1 => v & 0xff,
        2 => v & 0xffff,
        _ => v,
    }
}

/// io: byte/word/dword IN and OUT, string and REP forms.
pub fn io(platform: &MapPlatform) -> Outcome {
    let Some(mut run) = protected(platform, "io", image!(guest_io_start, guest_io_end)) else {
        return failed("io");
    };
    run.vcpu.intercept_io(0x80..=0x85, true);
    let mut outs = [(0u16, 0u8, 0u32); 8];
    let mut n_outs = 0;
    let mut stream = [0u8; 32];
    let mut n_stream = 0;
    let mut string_exits = 0;
    let ended = run.drive(200, |vcpu, exit| {
        let ExitKind::Io(io) = exit.kind else {
            return Ok(Flow::Default);
        };
        if io.string {
            string_exits += 1;
            vcpu.complete_string_io(|port, direction, bytes| match direction {
                IoDirection::Out => {
                    for b in bytes.iter() {
                        if let Some(slot) = stream.get_mut(n_stream) {
                            *slot = *b;
                            n_stream += 1;
                        }
                    }
                }
                IoDirection::In => {
                    let v = port_value(port, bytes.len()).to_le_bytes();
                    let n = bytes.len().min(4);
                    bytes[..n].copy_from_slice(&v[..n]);
                }
            })?;
        } else if io.direction == IoDirection::In {
            vcpu.complete_io(port_value(io.port, usize::from(io.size)))?;
        } else {
            if let Some(slot) = outs.get_mut(n_outs) {
                *slot = (io.port, io.size, io.data.unwrap_or(0));
                n_outs += 1;
            }
            vcpu.complete_io(0)?;
        }
        Ok(Flow::Resume)
    });
    run.verdict(ended);
    let expected_outs = [(0x80, 1, 0x11), (0x80, 2, 0x2222), (0x80, 4, 0x3333_3333)];
    run.check(
        outs[..n_outs] == expected_outs,
        format_args!("OUT byte/word/dword seen {:x?}", &outs[..n_outs]),
    );
    let expected_stream = b"hvkitOK\xd4\xc3\xb2\xa1\x04\x03\x02\x01";
    run.check(
        &stream[..n_stream] == expected_stream,
        format_args!("REP OUTSB/OUTSW/REP OUTSD bytes {:x?}", &stream[..n_stream]),
    );
    run.check(
        string_exits >= 6,
        format_args!("{string_exits} string I/O exits for 6 string instructions"),
    );
    let n = run.counts.get("io");
    run.check(
        n == 6 + string_exits + 1,
        format_args!("{n} I/O exits (6 IN/OUT, {string_exits} string, 1 report)"),
    );
    run.finish()
}

/// IA32_SYSENTER_CS (intercepted), IA32_SYSENTER_ESP (passed through).
const SYSENTER_CS: u32 = 0x174;
const SYSENTER_ESP: u32 = 0x175;
/// An MSR outside the bitmaps' ranges: always intercepted.
const SYNTHETIC_MSR: u32 = 0x4000_1234;

fn host_msr(msr: u32) -> u64 {
    // SAFETY: reads an architectural MSR (IA32_SYSENTER_ESP) that every x86-64 CPU has.
    unsafe { x86_64::registers::model_specific::Msr::new(msr).read() }
}

/// msr: intercepted (in and out of the bitmap ranges) and passed-through MSRs.
pub fn msr(platform: &MapPlatform) -> Outcome {
    let Some(mut run) = protected(platform, "msr", image!(guest_msr_start, guest_msr_end)) else {
        return failed("msr");
    };
    let set = run.vcpu.intercept_msr(SYSENTER_CS, true, true)
        && run.vcpu.intercept_msr(SYSENTER_ESP, false, false);
    run.check(
        set,
        format_args!("bitmap: 174H intercepted, 175H passed through"),
    );
    let host_esp = host_msr(SYSENTER_ESP);
    let mut writes = [(0u32, 0u64); 4];
    let mut n_writes = 0;
    let mut reads = [0u32; 4];
    let mut n_reads = 0;
    let ended = run.drive(100, |vcpu, exit| match exit.kind {
        ExitKind::MsrRead { msr } => {
            if let Some(slot) = reads.get_mut(n_reads) {
                *slot = msr;
                n_reads += 1;
            }
            let value = match msr {
                SYSENTER_CS => 0x4321,
                SYNTHETIC_MSR => 0x0123_4567_89ab_cdef,
                _ => return Ok(Flow::Default),
            };
            vcpu.complete_msr(value)?;
            Ok(Flow::Resume)
        }
        ExitKind::MsrWrite { msr, value } => {
            if let Some(slot) = writes.get_mut(n_writes) {
                *slot = (msr, value);
                n_writes += 1;
            }
            if msr == SYSENTER_CS || msr == SYNTHETIC_MSR {
                vcpu.complete_msr(0)?;
                Ok(Flow::Resume)
            } else {
                Ok(Flow::Default)
            }
        }
        _ => Ok(Flow::Default),
    });
    run.verdict(ended);
    let kept = match run.vcpu.vendor() {
        hvkit_vcpu::cpuid::Vendor::Intel => 0x480,
        _ => 0xc001_0114,
    };
    run.check(
        reads[..n_reads] == [SYSENTER_CS, SYNTHETIC_MSR, kept],
        format_args!(
            "RDMSR exits {:x?} (the last one answered with #GP by handle_default)",
            &reads[..n_reads]
        ),
    );
    run.check(
        writes[..n_writes] == [(SYSENTER_CS, 8), (SYNTHETIC_MSR, 0xfeed_0000_beef)],
        format_args!("WRMSR exits {:x?}", &writes[..n_writes]),
    );
    let after = host_msr(SYSENTER_ESP);
    run.check(
        after == host_esp,
        format_args!(
            "passed-through 175H: no exit, host value {host_esp:#x} unchanged ({after:#x})"
        ),
    );
    run.finish()
}

/// hlt: three HLTs, each counted into the guest's EBX and skipped.
pub fn hlt(platform: &MapPlatform) -> Outcome {
    let Some(mut run) = protected(platform, "hlt", image!(guest_hlt_start, guest_hlt_end)) else {
        return failed("hlt");
    };
    let ended = run.drive(100, |vcpu, exit| {
        if exit.kind == ExitKind::Hlt {
            vcpu.regs().rbx += 1;
            vcpu.skip_instruction()?;
            return Ok(Flow::Resume);
        }
        Ok(Flow::Default)
    });
    run.verdict(ended);
    let n = run.counts.get("hlt");
    run.check(n == 3, format_args!("3 HLT exits, saw {n}"));
    run.finish()
}

/// hypercall: PING, a user hypercall with four arguments, an unknown hvkit number.
pub fn hypercall(platform: &MapPlatform) -> Outcome {
    let Some(mut run) = protected(
        platform,
        "hypercall",
        image!(guest_hypercall_start, guest_hypercall_end),
    ) else {
        return failed("hypercall");
    };
    let mut user_args = [0u64; 4];
    let ended = run.drive(100, |vcpu, exit| {
        if let ExitKind::Hypercall(call) = exit.kind
            && call.number == hvkit_vcpu::hypercall::FIRST_USER
        {
            user_args = call.args.map(|a| a & 0xffff_ffff);
            vcpu.complete_hypercall(0x1000 + user_args.iter().sum::<u64>())?;
            return Ok(Flow::Resume);
        }
        Ok(Flow::Default)
    });
    run.verdict(ended);
    run.check(
        user_args == [1, 2, 3, 4],
        format_args!("user hypercall 0x100 arguments {user_args:?}"),
    );
    let n = run.counts.get("hypercall");
    run.check(
        n == 3,
        format_args!("3 hypercall exits (PING, 0x100, 5), saw {n}"),
    );
    run.finish()
}

/// npf: three pages above the guest's RAM, mapped on demand.
pub fn npf(platform: &MapPlatform) -> Outcome {
    let Some(mut run) = protected(platform, "npf", image!(guest_npf_start, guest_npf_end)) else {
        return failed("npf");
    };
    let mut faults = [(0u64, false); 4];
    let mut n_faults = 0;
    let ended = run.drive(100, |vcpu, exit| {
        let ExitKind::NestedPageFault(fault) = exit.kind else {
            return Ok(Flow::Default);
        };
        let page = fault.gpa.as_u64() & !0xfff;
        if !(0x4000_0000..0x4000_3000).contains(&page) || n_faults == faults.len() {
            println!("FAIL npf: fault outside the on-demand pages: {fault:?}");
            return Ok(Flow::Stop);
        }
        faults[n_faults] = (fault.gpa.as_u64(), fault.access.write);
        n_faults += 1;
        vcpu.add_ram(GuestPhysAddr::new_truncate(page), 4096)?;
        let index = (page - 0x4000_0000) >> 12;
        if index < 2 {
            let word = (0x4E50_4600 + index as u32).to_le_bytes();
            for i in 0..4 {
                vcpu.write_guest(GuestPhysAddr::new_truncate(page + 4 * i), &word)?;
            }
        }
        println!("npf: {fault:?}: mapped a fresh page at {page:#x}");
        Ok(Flow::Resume)
    });
    run.verdict(ended);
    let pages: [u64; 3] = core::array::from_fn(|i| faults[i].0 & !0xfff);
    run.check(
        n_faults == 3 && pages == [0x4000_0000, 0x4000_1000, 0x4000_2000],
        format_args!("faults (gpa, write) {:x?}", &faults[..n_faults]),
    );
    run.check(
        !faults[0].1 && !faults[1].1 && faults[2].1,
        format_args!("read, read, write"),
    );
    let mut back = [0u8; 4];
    let read = run
        .vcpu
        .read_guest(GuestPhysAddr::new_truncate(0x4000_2010), &mut back);
    run.check(
        read.is_ok() && u32::from_le_bytes(back) == 0xdead_beef,
        format_args!(
            "the guest's write is in the page mapped for it: {:#x}",
            u32::from_le_bytes(back)
        ),
    );
    run.finish()
}

/// exception: host-injected #DE, #GP(0x18), #PF(6) with CR2, interrupt 0x30; #UD intercepted and
/// reflected.
pub fn exception(platform: &MapPlatform) -> Outcome {
    let Some(mut run) = protected(
        platform,
        "exception",
        image!(guest_exception_start, guest_exception_end),
    ) else {
        return failed("exception");
    };
    run.vcpu.intercept_io(EVENT_PORT..=EVENT_PORT, true);
    if let Err(e) = run.vcpu.set_exception_bitmap(1 << 6) {
        run.check(false, format_args!("exception bitmap: {e:?}"));
    }
    let mut injected = 0;
    let mut intercepted = [0u8; 2];
    let mut n_intercepted = 0;
    let ended = run.drive(100, |vcpu, exit| match exit.kind {
        ExitKind::Io(io) if io.port == EVENT_PORT => {
            vcpu.complete_io(0)?;
            let event = match io.data.unwrap_or(u32::MAX) {
                0 => Event::Exception {
                    vector: 0,
                    error_code: None,
                },
                13 => Event::Exception {
                    vector: 13,
                    error_code: Some(0x18),
                },
                14 => {
                    vcpu.set_cr2(0xdead_0000);
                    Event::Exception {
                        vector: 14,
                        error_code: Some(6),
                    }
                }
                0x30 => Event::Interrupt { vector: 0x30 },
                other => {
                    println!("FAIL exception: the guest asked for {other:#x}");
                    return Ok(Flow::Stop);
                }
            };
            injected += 1;
            vcpu.inject(event);
            Ok(Flow::Resume)
        }
        ExitKind::Exception(e) => {
            if let Some(slot) = intercepted.get_mut(n_intercepted) {
                *slot = e.vector;
                n_intercepted += 1;
            }
            vcpu.inject(Event::Exception {
                vector: e.vector,
                error_code: e.error_code,
            });
            Ok(Flow::Resume)
        }
        _ => Ok(Flow::Default),
    });
    run.verdict(ended);
    run.check(
        injected == 4,
        format_args!("{injected} events injected on request (#DE, #GP, #PF, int 0x30)"),
    );
    let windows = run.counts.get("interrupt-window");
    run.check(
        windows >= 1,
        format_args!("interrupt 0x30 waited for the interrupt window: {windows} window exits"),
    );
    run.check(
        intercepted[..n_intercepted] == [6],
        format_args!(
            "intercepted exceptions {:?} (UD2 with #UD in the bitmap)",
            &intercepted[..n_intercepted]
        ),
    );
    run.finish()
}

/// realmode: a real-mode guest that ends in protected mode.
pub fn realmode(platform: &MapPlatform) -> Outcome {
    let config = VcpuConfig::new(GuestState::real_mode(0, LOAD_REAL as u16, 0x7000));
    let image = image!(guest_realmode_start, guest_realmode_end);
    let Some(mut run) = Run::new(platform, "realmode", &config, image, LOAD_REAL) else {
        return failed("realmode");
    };
    run.vcpu.intercept_io(0x80..=0x80, true);
    let mut posted = None;
    let ended = run.drive(100, |vcpu, exit| match exit.kind {
        ExitKind::Io(io) if io.port == 0x80 => {
            posted = io.data;
            vcpu.complete_io(0)?;
            Ok(Flow::Resume)
        }
        _ => Ok(Flow::Default),
    });
    run.verdict(ended);
    run.check(
        posted == Some(0x42),
        format_args!("OUT 80H from real mode: {posted:x?}"),
    );
    let n = run.counts.get("cpuid");
    run.check(n == 1, format_args!("1 CPUID exit, saw {n}"));
    let cr0 = run.vcpu.cr0().unwrap_or(0);
    run.check(
        cr0 & CR0_PE != 0,
        format_args!("the guest entered protected mode itself: CR0 {cr0:#x}"),
    );
    run.finish()
}

/// paging: a guest that builds 4-level tables, enters long mode and switches CR3.
pub fn paging(platform: &MapPlatform) -> Outcome {
    let Some(mut run) = protected(
        platform,
        "paging",
        image!(guest_paging_start, guest_paging_end),
    ) else {
        return failed("paging");
    };
    let ended = run.drive(200, |_, _| Ok(Flow::Default));
    run.verdict(ended);
    let cr0 = run.vcpu.cr0().unwrap_or(0);
    let cr3 = run.vcpu.cr3().unwrap_or(0);
    let efer = run.vcpu.efer().unwrap_or(0);
    run.check(
        cr0 & CR0_PG != 0 && efer & EFER_LMA != 0 && cr3 == 0x10000,
        format_args!(
            "guest in long mode on its own tables: CR0 {cr0:#x} EFER {efer:#x} CR3 {cr3:#x}"
        ),
    );
    run.finish()
}

/// hostile: writes outside its memory, VMXON/VMLAUNCH or VMRUN/CLGI, a triple fault.
/// `shutdown_exit`: the CPU reports a guest triple fault as a shutdown exit (Bochs 2.7's SVM
/// model does not; the runner says so on the command line).
pub fn hostile(platform: &MapPlatform, shutdown_exit: bool) -> Outcome {
    let Some(mut run) = protected(
        platform,
        "hostile",
        image!(guest_hostile_start, guest_hostile_end),
    ) else {
        return failed("hostile");
    };
    // A host frame the guest aims at: its GPA is the frame's host-physical address.
    let Some(canary) = platform.allocate_frames(1) else {
        run.check(false, format_args!("no frame for the host canary"));
        return run.finish();
    };
    let Some(canary_ptr) = platform.phys_to_virt(canary) else {
        run.check(false, format_args!("the host canary is not mapped"));
        return run.finish();
    };
    let canary_ptr = canary_ptr.cast::<AtomicU64>();
    // SAFETY: the frame was just allocated for this run (4 KiB-aligned, zeroed, identity-mapped)
    // and nothing else refers to it; the reference ends with this function, before it is freed.
    let canary_word = unsafe { canary_ptr.as_ref() };
    let before = 0x00c0_ffee_c0ff_ee00;
    canary_word.store(before, Ordering::SeqCst);
    let canary = canary.as_u64();
    run.vcpu.regs().rdi = canary;
    println!(
        "hostile: host canary frame at {canary:#x} ({}), guest RAM ends at {RAM:#x}",
        if canary < RAM {
            "inside the guest's RAM range: the write goes to the guest's own frame"
        } else {
            "above the guest's RAM: the write exits"
        }
    );
    if !shutdown_exit {
        println!(
            "hostile: SKIP triple fault: this CPU does not report a guest triple fault as a \
             shutdown exit (capability given by the runner: no-shutdown-exit)"
        );
    }
    let mut outside = [0u64; 2];
    let mut n_outside = 0;
    let mut asked = false;
    let ended = run.drive(100, |vcpu, exit| match exit.kind {
        ExitKind::NestedPageFault(fault) => {
            let page = fault.gpa.as_u64() & !0xfff;
            if n_outside == outside.len() || page < RAM {
                println!("FAIL hostile: unexpected fault {fault:?}");
                return Ok(Flow::Stop);
            }
            outside[n_outside] = page;
            n_outside += 1;
            vcpu.add_ram(GuestPhysAddr::new_truncate(page), 4096)?;
            println!("hostile: write outside RAM: {fault:?}: gave it a fresh page");
            Ok(Flow::Resume)
        }
        ExitKind::Io(io) if io.port == ASK_PORT => {
            asked = true;
            vcpu.complete_io(u32::from(shutdown_exit))?;
            Ok(Flow::Resume)
        }
        ExitKind::Shutdown => Ok(Flow::Stop),
        _ => Ok(Flow::Default),
    });
    run.verdict(ended);
    if ended == Ended::Stopped && !asked {
        run.guest_pass = false;
    }
    let after = canary_word.load(Ordering::SeqCst);
    run.check(
        after == before,
        format_args!("host canary frame at {canary:#x} intact: {after:#x}"),
    );
    run.check(
        canary < RAM || outside[..n_outside].contains(&canary),
        format_args!("the write to GPA {canary:#x} (the host frame's address) exited"),
    );
    run.check(
        outside[..n_outside].contains(&0xc000_0000),
        format_args!(
            "the write to GPA 0xC000_0000 exited: faults at {:x?}",
            &outside[..n_outside]
        ),
    );
    let mut landed = [0u8; 4];
    let read = run
        .vcpu
        .read_guest(GuestPhysAddr::new_truncate(0xc000_0000), &mut landed);
    run.check(
        read.is_ok() && u32::from_le_bytes(landed) == 0x7e57_7e57,
        format_args!("the write landed in the fresh page"),
    );
    let n = run.counts.get("virtualization-instruction");
    run.check(
        n == 2,
        format_args!("2 virtualization-instruction exits, each answered with #UD: saw {n}"),
    );
    let n = run.counts.get("shutdown");
    if shutdown_exit {
        run.check(
            n == 1 && ended == Ended::Stopped,
            format_args!("the triple fault is a clean shutdown exit: {n}"),
        );
    } else {
        run.check(
            n == 0,
            format_args!("no triple fault requested, no shutdown exit"),
        );
    }
    println!("hostile: the host is still running");
    let outcome = run.finish();
    // SAFETY: the run (and its vCPU) is gone and `canary_word` is no longer used: the frame
    // allocated above is unused.
    unsafe { platform.free_frames(hvkit_paging::HostPhysAddr::new_truncate(canary), 1) };
    outcome
}

/// loop: `count` CPUID exits: no frame per exit, no slowdown.
pub fn exit_loop(platform: &MapPlatform, name: &'static str, count: u32) -> Outcome {
    let Some(mut run) = protected(platform, name, image!(guest_loop_start, guest_loop_end)) else {
        return failed(name);
    };
    run.vcpu.regs().rbp = u64::from(count);
    let frames = platform.frames_in_use();
    let tenth = u64::from(count / 10).max(1);
    let mut seen = 0u64;
    let start = rdtsc();
    let mut first = 0;
    let mut last_start = 0;
    let ended = run.drive(u64::from(count) + 10, |_, exit| {
        if matches!(exit.kind, ExitKind::Cpuid { .. }) {
            seen += 1;
            if seen == tenth {
                first = rdtsc() - start;
            }
            if seen == u64::from(count) - tenth {
                last_start = rdtsc();
            }
        }
        Ok(Flow::Default)
    });
    let last = rdtsc() - last_start;
    run.verdict(ended);
    run.check(
        seen == u64::from(count),
        format_args!("{seen} CPUID exits of {count}"),
    );
    let now = platform.frames_in_use();
    run.check(
        now == frames,
        format_args!("no frame allocated per exit: {frames} frames before, {now} after"),
    );
    run.check(
        last < first * 2,
        format_args!(
            "no slowdown: host TSC per exit {} in the first tenth, {} in the last",
            first / tenth,
            last / tenth
        ),
    );
    run.finish()
}

/// exitcost: guest TSC cycles per CPUID round trip. Returns the outcome and the figure.
pub fn exit_cost(platform: &MapPlatform) -> (Outcome, u64) {
    let Some(mut run) = protected(
        platform,
        "exitcost",
        image!(guest_exitcost_start, guest_exitcost_end),
    ) else {
        return (failed("exitcost"), 0);
    };
    run.vcpu.regs().rbp = u64::from(EXIT_COST_ROUND_TRIPS);
    let host_start = rdtsc();
    let ended = run.drive(u64::from(EXIT_COST_ROUND_TRIPS) + 10, |_, _| {
        Ok(Flow::Default)
    });
    let host = rdtsc() - host_start;
    run.verdict(ended);
    let mut tsc = [0u8; 16];
    let read = run
        .vcpu
        .read_guest(GuestPhysAddr::new_truncate(0x2000), &mut tsc);
    let [start, end] = core::array::from_fn(|i| {
        u64::from_le_bytes(tsc[8 * i..8 * i + 8].try_into().unwrap_or([0; 8]))
    });
    let n = u64::from(EXIT_COST_ROUND_TRIPS);
    let per = end.saturating_sub(start) / n;
    run.check(
        read.is_ok() && end > start && run.counts.get("cpuid") == n,
        format_args!("{n} CPUID round trips timed by the guest"),
    );
    println!(
        "exit-cost: {n} CPUID round trips, {per} guest TSC cycles each (host TSC per exit {})",
        host / n
    );
    (run.finish(), per)
}

/// entryfail: a guest state the processor must refuse: on VMX a 64-bit state with a data
/// segment in CS and EFER.LMA without LME (SDM 27.3.1 "Checks on the Guest State Area"), on SVM
/// CR0.NW without CD (APM 15.5.1 "Basic Operation", the VMRUN consistency checks; QEMU TCG and
/// Bochs both check this one). The run must end in an entry-failure exit, twice (a second
/// `run` fails the same way instead of crashing the host).
pub fn entry_failure(platform: &MapPlatform) -> Outcome {
    let mut state = GuestState::protected_mode_flat(LOAD as u32, STACK);
    match hvkit_vcpu::detect_vendor() {
        Some(hvkit_vcpu::cpuid::Vendor::Intel) => {
            state = GuestState::long_mode_flat(0x1000, LOAD, u64::from(STACK));
            state.cs.access = hvkit_vcpu::state::SegmentAccess::DATA32;
            state.efer &= !hvkit_vcpu::state::EFER_LME;
        }
        _ => {
            const CR0_NW: u64 = 1 << 29;
            const CR0_CD: u64 = 1 << 30;
            state.cr0 = (state.cr0 | CR0_NW) & !CR0_CD;
        }
    }
    let config = VcpuConfig::new(state);
    let Some(mut run) = Run::new(platform, "entryfail", &config, &[0xf4], LOAD) else {
        return failed("entryfail");
    };
    let mut failures = 0;
    for attempt in 1..=2 {
        match run.vcpu.run() {
            Ok(exit) => {
                run.counts.record(&exit.kind);
                println!(
                    "entryfail: attempt {attempt}: {:?} (raw {:?})",
                    exit.kind, exit.raw
                );
                if matches!(exit.kind, ExitKind::EntryFailure(_)) {
                    failures += 1;
                }
            }
            Err(e) => println!("entryfail: attempt {attempt}: error {e:?}"),
        }
    }
    // No guest code runs: the "guest" verdict is that it was refused.
    run.guest_pass = failures == 2;
    run.check(
        failures == 2,
        format_args!("both entries refused with an entry-failure exit: {failures} of 2"),
    );
    run.finish()
}

core::arch::global_asm!(
    ".pushsection .text.hvkit_bluepill, \"ax\"",
    ".global hvkit_bluepill_guest",
    "hvkit_bluepill_guest:",
    "mov eax, 0x40000000",
    "xor ecx, ecx",
    "cpuid",
    "mov r12, rbx",
    "mov rax, cr3",
    "mov r13, rax",
    "call {rust}",
    "hlt",
    ".popsection",
    rust = sym bluepill_rust,
);

unsafe extern "C" {
    /// The blue-pill guest's entry point (above): runs in the guest, on the host's own code.
    fn hvkit_bluepill_guest();
}

/// What the blue-pill guest's PING hypercall returned.
static PING_RESULT: AtomicU64 = AtomicU64::new(0);

/// Runs inside the blue-pill guest: the guest side of the hypercall ABI
/// (`hvkit_vcpu::hypercall::guest`).
extern "C" fn bluepill_rust() {
    if let Some(hv) = hvkit_vcpu::hypercall::guest::detect() {
        // SAFETY: `detect` found hvkit, so the hypercall instruction exits to the host, which
        // answers PING without touching guest memory.
        let reply = unsafe { hv.call(hvkit_vcpu::hypercall::PING, [41, 0, 0, 0]) };
        PING_RESULT.store(reply, Ordering::SeqCst);
    }
}

static BLUEPILL_STACK: crate::sync::TakeOnce<[crate::sync::Page; 4]> =
    crate::sync::TakeOnce::new([const { crate::sync::Page::zeroed() }; 4]);

/// bluepill: the guest is this kernel's own CPU state (`hvkit_vcpu::capture::current_state`)
/// running a stub of this kernel's code through an identity EPT/NPT of the first 64 MiB: CPUID
/// finds hvkit, CR3 is the host's, and Rust code in the guest calls PING through
/// `hypercall::guest`.
pub fn bluepill(platform: &MapPlatform) -> Outcome {
    let Some(stack) = BLUEPILL_STACK.take() else {
        return failed("bluepill");
    };
    let top = stack.as_ptr() as u64 + 4 * 4096 - 16;
    let rip = hvkit_bluepill_guest as *const () as u64;
    // SAFETY: CPL 0 in 64-bit mode; the boot GDT is identity-mapped and readable.
    let state = unsafe { hvkit_vcpu::capture::current_state(rip, top) };
    let config = VcpuConfig::new(state);
    // SAFETY: as in `Run::new`; the guest runs the host's own code and sees all of the first
    // 64 MiB (this kernel, the frames of the boot memory map): it is this kernel's own,
    // trusted code.
    let vcpu = unsafe { Vcpu::new(platform, &config) };
    let mut vcpu = match vcpu {
        Ok(v) => v,
        Err(e) => {
            println!("FAIL bluepill: Vcpu::new: {e:?}");
            return failed("bluepill");
        }
    };
    // SAFETY: the first 64 MiB is this machine's RAM (Bochs and QEMU get 64 MiB), which the
    // kernel owns; the guest is the kernel itself.
    let mapped = unsafe {
        vcpu.map_ram_at(
            GuestPhysAddr::ZERO,
            hvkit_paging::HostPhysAddr::ZERO,
            64 << 20,
        )
    };
    let mut run = Run {
        name: "bluepill",
        vcpu,
        counts: ExitCounts::new(),
        host_pass: true,
        guest_pass: false,
    };
    if let Err(e) = mapped {
        run.check(false, format_args!("identity map: {e:?}"));
        return run.finish();
    }
    let ended = run.drive(100, |_, exit| {
        Ok(if exit.kind == ExitKind::Hlt {
            Flow::Stop
        } else {
            Flow::Default
        })
    });
    let regs = *run.vcpu.regs();
    let ping = PING_RESULT.load(Ordering::SeqCst);
    let ok = ended == Ended::Stopped
        && regs.r12 as u32 == 0x696b_7668
        && regs.r13 == state.cr3
        && ping == hvkit_vcpu::hypercall::PING_REPLY + 41;
    run.guest_pass = ok;
    run.check(
        ok,
        format_args!(
            "the host's own code ran as the guest: CPUID signature {:#x}, CR3 {:#x} (host {:#x}), PING {ping:#x}",
            regs.r12, regs.r13, state.cr3
        ),
    );
    run.finish()
}

/// Remaps the PICs (ICW1-ICW4, Intel 8259A data sheet): master to vectors 0x20-0x27, slave to
/// 0x28-0x2F, and unmasks only IRQ 0 (the PIT the BIOS left running at 18.2 Hz).
fn pic_remap_timer_only() {
    // SAFETY: the 8259A initialization sequence only changes which vectors the PICs raise; the
    // only unmasked line (IRQ 0, vector 0x20) has a gate in the boot IDT (`timer_stub`).
    unsafe {
        for (port, value) in [
            (0x20u16, 0x11u8),
            (0xa0, 0x11),
            (0x21, 0x20),
            (0xa1, 0x28),
            (0x21, 0x04),
            (0xa1, 0x02),
            (0x21, 0x01),
            (0xa1, 0x01),
            (0x21, 0xfe),
            (0xa1, 0xff),
        ] {
            PortWriteOnly::<u8>::new(port).write(value);
        }
    }
}

/// extint: external-interrupt exiting. The guest spins with IF = 1; the PIT's IRQ 0 (remapped
/// to vector 0x20) must leave the guest as an external-interrupt exit, three times. On VMX the
/// exit acknowledges the interrupt ([`Vcpu::acknowledged_vector`] = 0x20, the host sends the
/// EOI); on SVM it stays pending and the host takes it through its own IDT once GIF is set
/// again, which needs the host's RFLAGS.IF = 1 at VMRUN (APM 15.21.1).
pub fn external_interrupt(platform: &MapPlatform) -> Outcome {
    let mut config = VcpuConfig::new(GuestState::protected_mode_flat(LOAD as u32, STACK));
    config.external_interrupt_exiting = true;
    // STI; INC ECX; JMP back to the INC.
    let Some(mut run) = Run::new(platform, "extint", &config, &[0xfb, 0x41, 0xeb, 0xfd], LOAD)
    else {
        return failed("extint");
    };
    pic_remap_timer_only();
    let ticks_before = crate::boot::ticks();
    x86_64::instructions::interrupts::enable();
    let mut vectors = [None; 3];
    let mut seen = 0;
    let ended = run.drive(100_000, |vcpu, exit| {
        if exit.kind != ExitKind::ExternalInterrupt {
            return Ok(Flow::Default);
        }
        let vector = vcpu.acknowledged_vector()?;
        if vector.is_some() {
            // SAFETY: the EOI to the master PIC ends the interrupt the exit acknowledged.
            unsafe { PortWriteOnly::<u8>::new(0x20).write(0x20) };
        }
        vectors[seen] = vector;
        seen += 1;
        Ok(if seen == vectors.len() {
            Flow::Stop
        } else {
            Flow::Resume
        })
    });
    x86_64::instructions::interrupts::disable();
    mask_pic();
    let ticks = crate::boot::ticks() - ticks_before;
    run.verdict(ended);
    let spun = run.vcpu.regs().rcx;
    run.check(
        ended == Ended::Stopped && seen == 3,
        format_args!("3 external-interrupt exits from a guest spinning with IF = 1 ({spun} loops)"),
    );
    let acked = vectors.iter().all(|v| *v == Some(0x20));
    let taken = vectors.iter().all(Option::is_none) && ticks >= 2;
    run.check(
        acked || taken,
        format_args!(
            "each interrupt reached the host: acknowledged vectors {vectors:x?}, taken by the \
             host's IDT {ticks}"
        ),
    );
    run.finish()
}

/// The host's XMM0 pattern in the fpu case.
const HOST_XMM0: [u64; 2] = [0x1111_2222_3333_4444, 0x5555_6666_7777_8888];

/// fpu: the guest's SSE registers and XCR0 against the host's. The host turns on its own
/// CR4.OSFXSR/OSXSAVE with XCR0 = x87|SSE (so the vCPU switches state with XSAVE), puts a
/// pattern in its XMM0, and after the guest has set its own XCR0 and XMM0-XMM2 and made 50
/// CPUID exits, its XMM0 and XCR0 must be unchanged, and the guest's too (the guest checks).
///
/// `legacy`: the guest uses SSE without XSAVE (XCR0 stays 1). `xsetbv_exit`: the CPU reports the
/// guest's XSETBV (QEMU 7.2 TCG does not, so there the guest's XCR0 check is skipped).
pub fn fpu(platform: &MapPlatform, legacy: bool, xsetbv_exit: bool) -> Outcome {
    // SAFETY: CR4.OSFXSR and CR4.OSXSAVE only enable instructions (the CPUs here have XSAVE:
    // CPUID.1:ECX[26] is checked by the XSETBV's #UD otherwise), and XCR0 = 3 is always valid;
    // this kernel is built soft-float, so no compiled code depends on the SSE state.
    unsafe {
        core::arch::asm!(
            "mov rax, cr4",
            "or rax, {bits}",
            "mov cr4, rax",
            "xor ecx, ecx",
            "xor edx, edx",
            "mov eax, 3",
            "xsetbv",
            bits = const (1u64 << 18) | (1 << 9),
            out("rax") _, out("rcx") _, out("rdx") _,
            options(nostack),
        );
    }
    let name = if legacy { "fpu-legacy" } else { "fpu" };
    let Some(mut run) = protected(platform, name, image!(guest_fpu_start, guest_fpu_end)) else {
        return failed(name);
    };
    run.vcpu.regs().rbx = u64::from(legacy) | (u64::from(!xsetbv_exit) << 1);
    if !xsetbv_exit && !legacy {
        println!(
            "fpu: SKIP the guest's XCR0 check: this CPU does not report the guest's XSETBV as \
             an exit (capability given by the runner: no-xsetbv-intercept), so no hypervisor \
             can keep the guest's XCR0"
        );
    }
    // SAFETY: loads 16 bytes from a constant into XMM0, which no compiled code of this
    // soft-float kernel uses; the read-back below is the only other user.
    unsafe {
        core::arch::asm!(
            "movdqu xmm0, [{p}]",
            p = in(reg) HOST_XMM0.as_ptr(),
            options(nostack, readonly),
        );
    }
    let ended = run.drive(200, |_, _| Ok(Flow::Default));
    let mut host = [0u64; 2];
    let xcr0_lo: u32;
    // SAFETY: stores XMM0 into a local array and reads XCR0 (XGETBV with ECX = 0, CR4.OSXSAVE
    // is set above).
    unsafe {
        core::arch::asm!(
            "movdqu [{p}], xmm0",
            "xor ecx, ecx",
            "xgetbv",
            p = in(reg) host.as_mut_ptr(),
            out("eax") xcr0_lo, out("ecx") _, out("edx") _,
            options(nostack),
        );
    }
    run.verdict(ended);
    run.check(
        host == HOST_XMM0,
        format_args!("the host's XMM0 survived the guest's: {host:x?}"),
    );
    run.check(
        xcr0_lo == 3,
        format_args!("the host's XCR0 is its own: {xcr0_lo:#x}"),
    );
    let n = run.counts.get("cpuid");
    run.check(n == 50, format_args!("50 CPUID exits in between, saw {n}"));
    let n = run.counts.get("xsetbv");
    let expected = u64::from(!legacy && xsetbv_exit);
    run.check(
        n == expected,
        format_args!("{expected} XSETBV exits, saw {n}"),
    );
    run.finish()
}
