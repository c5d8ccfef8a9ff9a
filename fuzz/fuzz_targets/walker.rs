//! The two-dimensional walker (guest paging, no nested paging) against the plain reference walker on
//! random guest tables in every paging mode.
#![no_main]

use arbitrary::Arbitrary;
use hvkit_fuzz::reference_walker::{EptRef, NestedRef, NptRef, Outcome, Regs, walk};
use hvkit_paging::walk::{AccessKind, WalkFault};
use hvkit_paging::walk::NpfExitInfo1;
use hvkit_paging::{Access, Eptp, GuestPagingState, NestedCr3, GuestVirtAddr, HostArena, HostPhysAddr, Nested, PhysMemory, Walker};
use libfuzzer_sys::fuzz_target;

const FRAMES: u64 = 16;

#[derive(Arbitrary, Debug)]
struct Input {
    cr0: u8,
    cr4: u8,
    efer: u8,
    pkru: u32,
    maxphy: u8,
    gbpages: bool,
    root: u8,
    va: u64,
    kind: u8,
    user: bool,
    implicit: bool,
    ac: bool,
    seed: u64,
    /// Bit 0: EPT on; bit 1: EPT A/D; bit 2: mode-based execute; bit 3: advanced exit info;
    /// bit 4: 5-level EPT / NPT; bit 5: NPT instead of EPT (bit 1 is then host EFER.NXE).
    ept: u8,
    ept_root: u8,
    writes: Vec<(u8, u16, u64)>,
}

fn next(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

fuzz_target!(|i: Input| {
    let arena = HostArena::with_base(HostPhysAddr::new_truncate(0x40_0000), FRAMES as usize);
    let base = arena.base().as_u64();
    // Fill the frames with entries that mostly point back into the arena.
    let mut s = i.seed | 1;
    for k in 0..FRAMES * 512 {
        let r = next(&mut s);
        // Mostly present, sometimes not; bits 5:3 (EPT memory type) and 7 (PS) vary.
        let flags = r & 0x7ff & if r >> 60 == 0 { 0x7fe } else { 0x7ff };
        let addr = base + ((r >> 9) % FRAMES) * 4096;
        let high = if r >> 58 == 1 { r & 0xfff0_0000_0000_0000 } else { r & (1 << 63) };
        let v = addr | flags | high | if (r >> 20) % 7 == 0 { 1 << 13 } else { 0 };
        arena.write_u64(HostPhysAddr::new_truncate(base + k * 8), v).expect("in arena");
    }
    for &(f, idx, raw) in i.writes.iter().take(32) {
        let at = base + u64::from(f) % FRAMES * 4096 + u64::from(idx % 512) * 8;
        arena.write_u64(HostPhysAddr::new_truncate(at), raw).expect("in arena");
    }
    let bitset = |b: u8, map: &[(u8, u64)]| map.iter().filter(|(k, _)| b >> k & 1 == 1).fold(0, |a, (_, v)| a | v);
    let regs = Regs {
        cr0: bitset(i.cr0, &[(0, 1 << 31), (1, 1 << 16)]),
        cr3: base + u64::from(i.root) % FRAMES * 4096 + if i.root >> 7 == 1 { 0x20 * u64::from(i.root & 3) } else { 0 },
        cr4: bitset(i.cr4, &[(0, 1 << 4), (1, 1 << 5), (2, 1 << 7), (3, 1 << 12), (4, 1 << 20), (5, 1 << 21), (6, 1 << 22)]),
        efer: bitset(i.efer, &[(0, 1 << 10), (1, 1 << 11)]),
        pkru: i.pkru,
        maxphy: 32 + i.maxphy % 21,
        gbpages: i.gbpages,
    };
    let kind = i.kind % 3;
    let root = base + u64::from(i.ept_root) % FRAMES * 4096;
    let npt = (i.ept & 1 == 1 && i.ept >> 5 & 1 == 1).then(|| NptRef {
        root,
        levels: if i.ept >> 4 & 1 == 1 { 5 } else { 4 },
        nxe: i.ept >> 1 & 1 == 1,
    });
    let ept = (i.ept & 1 == 1 && npt.is_none()).then(|| EptRef {
        eptp: base + u64::from(i.ept_root) % FRAMES * 4096 | 6 | if i.ept >> 4 & 1 == 1 { 4 << 3 } else { 3 << 3 }
            | u64::from(i.ept >> 1 & 1) << 6,
        mbec: i.ept >> 2 & 1 == 1,
        advanced: i.ept >> 3 & 1 == 1,
    });
    let nref = match (ept, npt) {
        (Some(e), _) => Some(NestedRef::Ept(e)),
        (_, Some(n)) => Some(NestedRef::Npt(n)),
        _ => None,
    };
    let want = walk(&arena, nref.as_ref(), &regs, i.va, kind, i.user, i.implicit, i.ac);
    let st = GuestPagingState {
        cr0: regs.cr0,
        cr3: regs.cr3,
        cr4: regs.cr4,
        efer: regs.efer,
        pkru: regs.pkru,
        maxphyaddr: regs.maxphy,
        gbpages: regs.gbpages,
    };
    let access = Access {
        kind: [AccessKind::Read, AccessKind::Write, AccessKind::Execute][usize::from(kind)],
        user: i.user,
        implicit_supervisor: i.implicit,
        rflags_ac: i.ac,
    };
    let nested = match (ept, npt) {
        (Some(e), _) => Nested::Ept { eptp: Eptp(e.eptp), mode_based_execute: e.mbec },
        (_, Some(n)) => Nested::Npt { ncr3: NestedCr3(n.root), levels: n.levels as u8, nxe: n.nxe },
        _ => Nested::None,
    };
    let mut walker = Walker::new(&arena, nested);
    walker.advanced_exit_info = ept.is_some_and(|e| e.advanced);
    let got = match walker.translate(&st, GuestVirtAddr::new(i.va), access) {
        Ok(t) => Outcome::Ok { gpa: t.gpa.as_u64(), hpa: t.host_phys.as_u64(), size: t.page_size.bytes(), global: t.global },
        Err(WalkFault::PageFault { error_code, address }) => {
            assert_eq!(address.as_u64(), i.va);
            Outcome::PageFault(error_code.bits())
        }
        Err(WalkFault::NonCanonical(_)) => Outcome::NonCanonical,
        Err(WalkFault::InvalidPdpte { index }) => Outcome::BadPdpte(index),
        Err(WalkFault::Memory(_)) => Outcome::Memory,
        Err(WalkFault::EptViolation { qualification, gpa, gla }) => {
            assert_eq!(gla, Some(GuestVirtAddr::new(i.va)));
            Outcome::EptViolation { qual: qualification.bits(), gpa: gpa.as_u64() }
        }
        Err(WalkFault::EptMisconfig { gpa }) => Outcome::EptMisconfig(gpa.as_u64()),
        Err(WalkFault::NestedPageFault { exitinfo1, gpa }) => {
            let _: NpfExitInfo1 = exitinfo1;
            Outcome::Npf { info: exitinfo1.bits(), gpa: gpa.as_u64() }
        }
        Err(other) => panic!("unexpected {other:?} without nested paging"),
    };
    assert_eq!(got, want, "regs {regs:?} va {:#x} kind {kind}", i.va);
});
