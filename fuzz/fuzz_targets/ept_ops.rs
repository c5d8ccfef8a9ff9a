//! Random operation sequences on an EPT, checked after every step against the reference model.
#![no_main]

use hvkit_fuzz::{FuzzFormat, Geometry, Op, run_ops};
use hvkit_paging::{Ept, EptAttrs, EptFlags, MemoryType};
use libfuzzer_sys::fuzz_target;

struct EptFuzz;

impl FuzzFormat for EptFuzz {
    type F = Ept;
    fn attrs(b: u16) -> (EptAttrs, bool) {
        let mut f = EptFlags::from_bits_truncate(u64::from(b & 7));
        let extra = [
            (3, EptFlags::USER_EXECUTE),
            (7, EptFlags::IGNORE_PAT),
            (8, EptFlags::SUPPRESS_VE),
            (9, EptFlags::SUB_PAGE_WRITE),
            (10, EptFlags::SUPERVISOR_SHADOW_STACK),
            (11, EptFlags::VERIFY_GUEST_PAGING),
            (12, EptFlags::PAGING_WRITE_ACCESS),
        ];
        for (bit, flag) in extra {
            if b >> bit & 1 == 1 {
                f |= flag;
            }
        }
        let mt = MemoryType([6, 0, 1, 4, 5, 6, 2, 7][usize::from(b >> 4 & 7)]);
        let perms = b & 7;
        let valid = (perms != 0 || f.contains(EptFlags::USER_EXECUTE))
            && !(perms & 2 != 0 && perms & 1 == 0)
            && matches!(mt.0, 0 | 1 | 4 | 5 | 6);
        (EptAttrs::new(f, mt), valid)
    }
}

fuzz_target!(|input: (bool, Vec<Op>)| {
    run_ops::<EptFuzz>(&input.1, input.0, Geometry::LEVEL4);
});
