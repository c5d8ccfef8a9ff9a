//! Random operation sequences on guest-format tables (PAE, 32-bit, 5-level), checked after every
//! step against the reference model: other geometries than EPT/NPT (4-entry PDPT, 1024-entry
//! 4-byte tables with 4 MiB pages, five levels).
#![no_main]

use hvkit_fuzz::{FuzzFormat, Geometry, Op, run_ops};
use hvkit_paging::{Legacy32, LongMode, Pae, X86Attrs};
use libfuzzer_sys::fuzz_target;
use x86_64::structures::paging::PageTableFlags as F;

/// Attributes from fuzzer bits and the flags present in them.
fn x86(b: u16) -> (X86Attrs, F) {
    let mut f = F::empty();
    let map = [
        (0, F::PRESENT),
        (1, F::WRITABLE),
        (2, F::USER_ACCESSIBLE),
        (3, F::WRITE_THROUGH),
        (4, F::NO_CACHE),
        (5, F::GLOBAL),
        (6, F::NO_EXECUTE),
        (7, F::BIT_9),
        (8, F::BIT_52),
    ];
    for (bit, flag) in map {
        if b >> bit & 1 == 1 {
            f |= flag;
        }
    }
    (X86Attrs { flags: f, pat: b >> 9 & 1 == 1, protection_key: (b >> 10 & 3) as u8 }, f)
}

struct PaeFuzz;
impl FuzzFormat for PaeFuzz {
    type F = Pae;
    fn attrs(b: u16) -> (X86Attrs, bool) {
        let (a, f) = x86(b);
        (a, f.contains(F::PRESENT) && a.protection_key == 0 && !f.contains(F::BIT_52))
    }
}

struct Bits32Fuzz;
impl FuzzFormat for Bits32Fuzz {
    type F = Legacy32;
    fn attrs(b: u16) -> (X86Attrs, bool) {
        let (a, f) = x86(b);
        let ok = f.contains(F::PRESENT)
            && a.protection_key == 0
            && !f.contains(F::BIT_52)
            && !f.contains(F::NO_EXECUTE);
        (a, ok)
    }
}

struct Level5Fuzz;
impl FuzzFormat for Level5Fuzz {
    type F = LongMode;
    fn attrs(b: u16) -> (X86Attrs, bool) {
        let (a, f) = x86(b);
        (a, f.contains(F::PRESENT))
    }
}

fuzz_target!(|input: (u8, bool, Vec<Op>)| {
    let (which, huge, ops) = input;
    match which % 3 {
        0 => run_ops::<PaeFuzz>(&ops, huge, Geometry::PAE),
        1 => run_ops::<Bits32Fuzz>(&ops, huge, Geometry::BITS32),
        _ => run_ops::<Level5Fuzz>(&ops, huge, Geometry { levels: 5, ..Geometry::LEVEL4 }),
    }
});
