//! Random operation sequences on an AMD nested page table (long-mode format), checked after every
//! step against the reference model.
#![no_main]

use hvkit_fuzz::{FuzzFormat, Geometry, Op, run_ops};
use hvkit_paging::{LongMode, X86Attrs};
use libfuzzer_sys::fuzz_target;
use x86_64::structures::paging::PageTableFlags as F;

struct NptFuzz;

impl FuzzFormat for NptFuzz {
    type F = LongMode;
    fn attrs(b: u16) -> (X86Attrs, bool) {
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
        ];
        for (bit, flag) in map {
            if b >> bit & 1 == 1 {
                f |= flag;
            }
        }
        let a = X86Attrs { flags: f, pat: b >> 8 & 1 == 1, protection_key: (b >> 9 & 0xf) as u8 };
        // Bit 13 injects a table-managed flag, which must be refused.
        if b >> 13 & 1 == 1 {
            let bad = X86Attrs { flags: f | F::DIRTY, ..a };
            return (bad, false);
        }
        (a, f.contains(F::PRESENT))
    }
}

fuzz_target!(|input: (bool, Vec<Op>)| {
    run_ops::<NptFuzz>(&input.1, input.0, Geometry::LEVEL4);
});
