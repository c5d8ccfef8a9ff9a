//! Host tests of the builder over every format.

use std::vec::Vec;

use x86_64::structures::paging::PageTableFlags as PTF;

use crate::*;

const G: u64 = 1 << 30;
const M2: u64 = 2 << 20;
const K4: u64 = 4096;

fn gpa(v: u64) -> GuestPhysAddr {
    GuestPhysAddr::new_truncate(v)
}
fn hpa(v: u64) -> HostPhysAddr {
    HostPhysAddr::new_truncate(v)
}
fn huge_cfg(levels: u8) -> TableConfig {
    TableConfig::new(levels).with_huge_pages(true)
}
fn rw() -> EptAttrs {
    EptAttrs::new(EptFlags::READ | EptFlags::WRITE, MemoryType::WRITE_BACK)
}

type Snapshot = (
    Vec<Mapping<GuestPhysAddr, HostPhysAddr, EptAttrs>>,
    usize,
    usize,
);

fn snap(t: &EptTable<&HostArena>) -> Snapshot {
    (
        t.iter().collect(),
        t.table_frames(),
        t.context().live_frames(),
    )
}

#[test]
fn identity_4g_uses_1g_pages_and_minimum_frames() {
    let arena = HostArena::new(16);
    let mut t = EptTable::new(&arena, huge_cfg(4)).unwrap();
    t.map(gpa(0), hpa(0), 4 * G, EptAttrs::RWX_WB)
        .unwrap()
        .ignore();
    assert_eq!(t.table_frames(), 2);
    let m: Vec<_> = t.iter().collect();
    assert_eq!(m.len(), 4);
    assert!(
        m.iter()
            .all(|m| m.size == PageSize::Size1G && m.virt.as_u64() == m.phys.as_u64())
    );
    assert_eq!(
        t.translate_addr(gpa(3 * G + 0x1234)),
        Some(hpa(3 * G + 0x1234))
    );
    assert_eq!(t.translate_addr(gpa(4 * G)), None);
    t.free_all();
    assert_eq!(arena.live_frames(), 0);
}

#[test]
fn mixed_alignment_picks_largest_pages() {
    let arena = HostArena::new(64);
    let mut t = EptTable::new(&arena, huge_cfg(4)).unwrap();
    // 0x1ff000 .. 0x601000: one 4K page, two 2M pages, one 4K page.
    t.map(gpa(0x1ff000), hpa(0x8001ff000), 0x402000, rw())
        .unwrap()
        .ignore();
    let sizes: Vec<_> = t.iter().map(|m| (m.virt.as_u64(), m.size)).collect();
    assert_eq!(
        sizes,
        [
            (0x1ff000, PageSize::Size4K),
            (0x200000, PageSize::Size2M),
            (0x400000, PageSize::Size2M),
            (0x600000, PageSize::Size4K)
        ]
    );
    // Output misaligned to 2M: only 4K pages.
    t.map(gpa(G), hpa(0x1000), M2, rw()).unwrap().ignore();
    assert_eq!(t.iter().filter(|m| m.virt.as_u64() >= G).count(), 512);
    // Without large pages everything is 4K.
    let mut s = EptTable::new(&arena, TableConfig::new(4).with_large_pages(false)).unwrap();
    s.map(gpa(0), hpa(0), M2, rw()).unwrap().ignore();
    assert!(s.iter().all(|m| m.size == PageSize::Size4K));
    // Without 1G support a 1G-aligned range becomes 2M pages.
    let mut u = EptTable::new(&arena, TableConfig::new(4)).unwrap();
    u.map(gpa(0), hpa(0), G, rw()).unwrap().ignore();
    assert_eq!(u.iter().count(), 512);
    assert_eq!(u.table_frames(), 3);
    // map_with_max caps the page size.
    let mut w = EptTable::new(&arena, huge_cfg(4)).unwrap();
    w.map_with_max(gpa(0), hpa(0), 4 * M2, rw(), PageSize::Size4K)
        .unwrap()
        .ignore();
    assert_eq!(w.iter().count(), 2048);
    for x in [t, s, u, w] {
        x.free_all();
    }
}

#[test]
fn errors_leave_table_unchanged() {
    let arena = HostArena::new(64);
    let mut t = EptTable::new(&arena, huge_cfg(4).with_phys_bits(39)).unwrap();
    t.map(gpa(0x40_0000), hpa(0x40_0000), 0x3000, rw())
        .unwrap()
        .ignore();
    let before = snap(&t);
    assert_eq!(
        t.map(gpa(0x40_1000), hpa(0), K4, rw()),
        Err(MapError::Overlap(0x40_1000))
    );
    assert_eq!(
        t.map(gpa(0x20_0000), hpa(0), M2 * 2, rw()),
        Err(MapError::Overlap(0x40_0000))
    );
    assert_eq!(
        t.map(gpa(0x10), hpa(0), K4, rw()),
        Err(MapError::Misaligned(0x10))
    );
    assert_eq!(
        t.map(gpa(0), hpa(0x10), K4, rw()),
        Err(MapError::Misaligned(0x10))
    );
    assert_eq!(
        t.map(gpa(0), hpa(0), 0x10, rw()),
        Err(MapError::Misaligned(0x10))
    );
    assert_eq!(t.map(gpa(0), hpa(0), 0, rw()), Err(MapError::EmptyRange));
    assert_eq!(
        t.map(gpa(1 << 48), hpa(0), K4, rw()),
        Err(MapError::BeyondReach((1 << 48) + 0xfff))
    );
    assert_eq!(
        t.map(gpa(0), hpa(1 << 39), K4, rw()),
        Err(MapError::BeyondMaxPhysAddr((1 << 39) + 0xfff))
    );
    assert!(matches!(
        t.map(
            gpa(0),
            hpa(0),
            K4,
            EptAttrs::new(EptFlags::WRITE, MemoryType::WRITE_BACK)
        ),
        Err(MapError::InvalidAttributes(_))
    ));
    assert_eq!(
        t.protect(gpa(0x40_0000), 0x4000, rw()),
        Err(MapError::NotMapped(0x40_3000))
    );
    assert_eq!(before, snap(&t));
    assert_eq!(
        EptTable::new(&arena, TableConfig::new(3)).err(),
        Some(MapError::UnsupportedLevels(3))
    );
    t.free_all();
}

#[test]
fn allocator_failure_at_every_point_rolls_back() {
    let arena = HostArena::new(64);
    let mut t = EptTable::new(&arena, huge_cfg(4)).unwrap();
    t.map(gpa(0x1000), hpa(0x1000), K4, rw()).unwrap().ignore();
    let before = snap(&t);
    // Mapping 3 x 1G + 4K across a new PDPT/PD/PT needs frames in the middle of the walk.
    let (va, len) = (G - 2 * K4, 2 * G + 4 * K4);
    let mut needed = None;
    for n in 0..16 {
        arena.fail_after(Some(n));
        match t.map(gpa(va), hpa(va + (1 << 40)), len, rw()) {
            Err(MapError::OutOfFrames) => {
                assert_eq!(before, snap(&t), "after failing at frame {n}")
            }
            Ok(f) => {
                f.ignore();
                needed = Some(n);
                break;
            }
            Err(e) => assert_eq!(Err::<(), _>(e), Ok(())),
        }
    }
    arena.fail_after(None);
    assert_eq!(
        needed,
        Some(3),
        "a PT for the start, a PD and a PT for the end (PDPT exists)"
    );
    // Unmap that splits needs frames too: failing leaves it untouched.
    let before = snap(&t);
    arena.fail_after(Some(1));
    assert_eq!(t.unmap(gpa(G + 0x5000), K4), Err(MapError::OutOfFrames));
    assert_eq!(before, snap(&t));
    arena.fail_after(Some(2));
    t.unmap(gpa(G + 0x5000), K4).unwrap().ignore();
    arena.fail_after(None);
    assert_eq!(t.translate(gpa(G + 0x5000)), None);
    assert_eq!(
        t.translate_addr(gpa(G + 0x6000)),
        Some(hpa(G + 0x6000 + (1 << 40)))
    );
    t.free_all();
    assert_eq!(arena.live_frames(), 0);
}

#[test]
fn unmap_splits_and_frees_empty_tables() {
    let arena = HostArena::new(64);
    let mut t = EptTable::new(&arena, huge_cfg(4)).unwrap();
    t.map(gpa(0), hpa(0), G, EptAttrs::RWX_WB).unwrap().ignore();
    assert_eq!(t.table_frames(), 2);
    let f = t.unmap(gpa(0x20_3000), 0x2000).unwrap();
    assert_eq!(f.kind(), FlushKind::InveptSingleContext);
    assert_eq!(f.range(), 0x20_3000..0x20_5000);
    f.ignore();
    assert_eq!(
        t.table_frames(),
        4,
        "1G split into a PD, one 2M split into a PT"
    );
    assert_eq!(t.iter().count(), 511 + 510);
    assert_eq!(t.translate_addr(gpa(0x20_2fff)), Some(hpa(0x20_2fff)));
    assert_eq!(t.translate(gpa(0x20_4000)), None);
    // Unmapping holes is fine; unmapping everything frees every table but the root.
    t.unmap(gpa(0), 2 * G).unwrap().ignore();
    assert_eq!(t.table_frames(), 1);
    assert_eq!(arena.live_frames(), 1);
    t.free_all();
}

#[test]
fn protect_splits_then_merge_restores() {
    let arena = HostArena::new(64);
    let mut t = EptTable::new(&arena, huge_cfg(4)).unwrap();
    t.map(gpa(0), hpa(0), G, rw()).unwrap().ignore();
    let ro = EptAttrs::new(EptFlags::READ, MemoryType::UNCACHEABLE);
    t.protect(gpa(0x1000), K4, ro).unwrap().ignore();
    assert_eq!(t.table_frames(), 4);
    assert_eq!(t.translate(gpa(0x1000)).map(|m| m.attrs), Some(ro));
    assert_eq!(
        t.translate(gpa(0x2000)).map(|m| (m.attrs, m.size)),
        Some((rw(), PageSize::Size4K))
    );
    // Not uniform yet: merge changes nothing.
    let (f, n) = t.merge(gpa(0), G).unwrap();
    f.ignore();
    assert_eq!(n, 0);
    t.protect(gpa(0x1000), K4, rw()).unwrap().ignore();
    let (f, n) = t.merge(gpa(0), G).unwrap();
    f.ignore();
    assert_eq!(n, 2, "PT into 2M, then PD into 1G");
    assert_eq!(t.table_frames(), 2);
    assert_eq!(
        t.translate(gpa(0x1000)).map(|m| m.size),
        Some(PageSize::Size1G)
    );
    t.free_all();
    assert_eq!(arena.live_frames(), 0);
}

#[test]
fn five_level_root_reaches_beyond_48_bits() {
    let arena = HostArena::new(16);
    let mut t = EptTable::new(&arena, huge_cfg(5)).unwrap();
    t.map(gpa(1 << 50), hpa(0x1000), K4, rw()).unwrap().ignore();
    assert_eq!(t.translate_addr(gpa((1 << 50) + 8)), Some(hpa(0x1008)));
    assert_eq!(t.table_frames(), 5);
    let mut four = EptTable::new(&arena, huge_cfg(4)).unwrap();
    assert!(matches!(
        four.map(gpa(1 << 50), hpa(0), K4, rw()),
        Err(MapError::BeyondReach(_))
    ));
    t.free_all();
    four.free_all();
}

#[test]
fn npt_and_guest_long_mode_canonical_halves() {
    let arena = HostArena::new(32);
    let a = X86Attrs::new(PTF::PRESENT | PTF::WRITABLE | PTF::USER_ACCESSIBLE);
    let mut n = NptTable::new(&arena, huge_cfg(4)).unwrap();
    let f = n.map(gpa(0), hpa(0x20_0000), M2, a).unwrap();
    assert_eq!(f.kind(), FlushKind::NestedAsid);
    f.ignore();
    assert_eq!(
        n.translate(gpa(0x1234)).map(|m| m.size),
        Some(PageSize::Size2M)
    );
    let mut g: GuestTable<LongMode, _> = GuestTable::new(&arena, huge_cfg(4)).unwrap();
    let hi = GuestVirtAddr::new(0xffff_8000_0000_0000);
    let f = g.map(hi, gpa(0x5000), K4, a).unwrap();
    assert_eq!(f.kind(), FlushKind::GuestTlb);
    f.ignore();
    assert_eq!(
        g.translate_addr(GuestVirtAddr::new(0xffff_8000_0000_0010)),
        Some(gpa(0x5010))
    );
    assert_eq!(g.iter().next().map(|m| m.virt), Some(hi));
    assert_eq!(
        g.map(GuestVirtAddr::new(0x0000_8000_0000_0000), gpa(0), K4, a),
        Err(MapError::NonCanonical(0x0000_8000_0000_0000))
    );
    assert_eq!(
        g.map(GuestVirtAddr::new(0x7fff_ffff_f000), gpa(0), 2 * K4, a),
        Err(MapError::NonCanonical(0x8000_0000_0000))
    );
    n.free_all();
    g.free_all();
}

#[test]
fn pae_and_32bit_guest_tables() {
    let arena = HostArena::new(32);
    let a = X86Attrs::new(PTF::PRESENT | PTF::WRITABLE);
    let mut p: GuestTable<Pae, _> = GuestTable::new(&arena, TableConfig::new(3)).unwrap();
    p.map(GuestVirtAddr::new(0xc000_0000), gpa(0x40_0000), M2 + K4, a)
        .unwrap()
        .ignore();
    assert_eq!(
        p.translate(GuestVirtAddr::new(0xc000_0000)).map(|m| m.size),
        Some(PageSize::Size2M)
    );
    assert_eq!(
        p.translate_addr(GuestVirtAddr::new(0xc020_0008)),
        Some(gpa(0x60_0008))
    );
    assert!(matches!(
        p.map(GuestVirtAddr::new(1 << 32), gpa(0), K4, a),
        Err(MapError::BeyondReach(_))
    ));
    // The PDPTE carries only P (bits 2:1 are reserved).
    let pdpte = arena.read_u64(hpa(p.root().as_u64() + 3 * 8)).unwrap();
    assert_eq!(pdpte & 0x7, 1);
    let mut l: GuestTable<Legacy32, _> = GuestTable::new(&arena, TableConfig::new(2)).unwrap();
    l.map(GuestVirtAddr::new(0x40_0000), gpa(0x80_0000), 4 << 20, a)
        .unwrap()
        .ignore();
    l.map(GuestVirtAddr::new(0x1000), gpa(0x2000), K4, a)
        .unwrap()
        .ignore();
    assert_eq!(
        l.translate(GuestVirtAddr::new(0x40_0000)).map(|m| m.size),
        Some(PageSize::Size4M)
    );
    assert_eq!(
        l.translate_addr(GuestVirtAddr::new(0x1004)),
        Some(gpa(0x2004))
    );
    assert!(matches!(
        l.map(GuestVirtAddr::new(0), gpa(1 << 32), K4, a),
        Err(MapError::BeyondMaxPhysAddr(_))
    ));
    l.unmap(GuestVirtAddr::new(0x40_1000), K4).unwrap().ignore();
    assert_eq!(l.iter().count(), 1 + 1023);
    p.free_all();
    l.free_all();
    assert_eq!(arena.live_frames(), 0);
}

#[test]
fn iteration_is_ordered_and_complete() {
    let arena = HostArena::new(64);
    let mut t = EptTable::new(&arena, huge_cfg(4)).unwrap();
    for (va, len) in [(5 * G, G), (0x3000, K4), (G + M2, M2), (0x7f_ffff_f000, K4)] {
        t.map(gpa(va), hpa(va), len, rw()).unwrap().ignore();
    }
    let v: Vec<_> = t.iter().map(|m| m.virt.as_u64()).collect();
    assert_eq!(v, [0x3000, G + M2, 5 * G, 0x7f_ffff_f000]);
    t.free_all();
}

#[test]
fn single_page_cache_survives_unmap_merge_and_rollback() {
    let arena = HostArena::new(32);
    let mut t = EptTable::new(&arena, huge_cfg(4)).unwrap();
    for i in 0..4 {
        t.map(gpa(0x20_0000 + i * K4), hpa(0x40_0000 + i * K4), K4, rw())
            .unwrap()
            .ignore();
    }
    assert_eq!(t.table_frames(), 4);
    // Unmapping frees the cached page table; the next single-page map must build a new one.
    t.unmap(gpa(0x20_0000), M2).unwrap().ignore();
    assert_eq!(t.table_frames(), 1);
    t.map(gpa(0x20_5000), hpa(0x5000), K4, rw())
        .unwrap()
        .ignore();
    assert_eq!(t.translate_addr(gpa(0x20_5008)), Some(hpa(0x5008)));
    assert_eq!(t.table_frames(), 4);
    // Fill the 2 MiB region uniformly, merge it away, then map next to it.
    t.unmap(gpa(0x20_5000), K4).unwrap().ignore();
    for i in 0..512 {
        t.map(gpa(0x20_0000 + i * K4), hpa(0x60_0000 + i * K4), K4, rw())
            .unwrap()
            .ignore();
    }
    let (f, n) = t.merge(gpa(0), G).unwrap();
    f.ignore();
    assert_eq!(n, 1);
    assert_eq!(
        t.translate(gpa(0x20_0000)).map(|m| m.size),
        Some(PageSize::Size2M)
    );
    assert_eq!(
        t.map(gpa(0x20_1000), hpa(0), K4, rw()),
        Err(MapError::Overlap(0x20_1000))
    );
    // A failed single-page map frees exactly the tables it created.
    arena.fail_after(Some(1));
    let before = snap(&t);
    assert_eq!(
        t.map(gpa(5 * G), hpa(0), K4, rw()),
        Err(MapError::OutOfFrames)
    );
    assert_eq!(before, snap(&t));
    arena.fail_after(None);
    t.free_all();
    assert_eq!(arena.live_frames(), 0);
}

#[test]
fn upper_half_guest_ranges_split_and_merge() {
    let arena = HostArena::new(32);
    let a = X86Attrs::new(PTF::PRESENT | PTF::WRITABLE);
    let ro = X86Attrs::new(PTF::PRESENT);
    let mut g: GuestTable<LongMode, _> = GuestTable::new(&arena, huge_cfg(4)).unwrap();
    let hi = 0xffff_ff80_0000_0000u64; // the last PML4 slot
    g.map(GuestVirtAddr::new(hi), gpa(0), G, a)
        .unwrap()
        .ignore();
    assert_eq!(g.table_frames(), 2);
    g.protect(GuestVirtAddr::new(hi + M2), K4, ro)
        .unwrap()
        .ignore();
    assert_eq!(
        g.translate(GuestVirtAddr::new(hi + M2))
            .map(|m| (m.attrs, m.size)),
        Some((ro, PageSize::Size4K))
    );
    assert_eq!(
        g.translate_addr(GuestVirtAddr::new(hi + M2 + K4 + 5)),
        Some(gpa(M2 + K4 + 5))
    );
    let virts: Vec<_> = g.iter().take(3).map(|m| m.virt.as_u64()).collect();
    assert_eq!(virts, [hi, hi + M2, hi + M2 + K4]);
    g.protect(GuestVirtAddr::new(hi + M2), K4, a)
        .unwrap()
        .ignore();
    let (f, n) = g.merge(GuestVirtAddr::new(hi), G).unwrap();
    f.ignore();
    assert_eq!((n, g.table_frames()), (2, 2));
    g.unmap(GuestVirtAddr::new(hi), G).unwrap().ignore();
    assert_eq!(g.iter().count(), 0);
    g.free_all();
    assert_eq!(arena.live_frames(), 0);
}

#[test]
fn legacy32_4m_page_splits_on_protect() {
    let arena = HostArena::new(16);
    let a = X86Attrs::new(PTF::PRESENT | PTF::WRITABLE);
    let ro = X86Attrs {
        pat: true,
        ..X86Attrs::new(PTF::PRESENT)
    };
    let mut l: GuestTable<Legacy32, _> = GuestTable::new(&arena, TableConfig::new(2)).unwrap();
    l.map(GuestVirtAddr::new(0xc000_0000), gpa(0x80_0000), 4 << 20, a)
        .unwrap()
        .ignore();
    arena.fail_after(Some(0));
    assert_eq!(
        l.protect(GuestVirtAddr::new(0xc000_0000), K4, ro),
        Err(MapError::OutOfFrames)
    );
    arena.fail_after(None);
    l.protect(GuestVirtAddr::new(0xc000_0000), K4, ro)
        .unwrap()
        .ignore();
    assert_eq!(l.iter().count(), 1024);
    assert_eq!(
        l.translate(GuestVirtAddr::new(0xc000_0000))
            .map(|m| m.attrs),
        Some(ro)
    );
    // The 4 KiB PTE carries PAT in bit 7.
    let pde = arena
        .read_u64(hpa(l.root().as_u64() + (0xc000_0000u64 >> 22) * 4))
        .unwrap()
        & 0xffff_f000;
    assert_eq!(arena.read_u32(hpa(pde)).unwrap() & 0x80, 0x80);
    l.free_all();
}

#[test]
fn legacy32_pse36_4m_pages_above_4g() {
    let arena = HostArena::new(16);
    let a = X86Attrs::new(PTF::PRESENT | PTF::WRITABLE);
    let mut l: GuestTable<Legacy32, _> = GuestTable::new(&arena, TableConfig::new(2)).unwrap();
    let high = 0x12_0040_0000u64; // above 4 GiB: only a 4 MiB page can reach it
    l.map(GuestVirtAddr::new(0x80_0000), gpa(high), 4 << 20, a)
        .unwrap()
        .ignore();
    assert_eq!(
        l.translate_addr(GuestVirtAddr::new(0x81_2345)),
        Some(gpa(high + 0x1_2345))
    );
    let pde = arena.read_u32(hpa(l.root().as_u64() + 2 * 4)).unwrap();
    assert_eq!((pde >> 13) & 0xff, 0x12, "PSE-36 bits 20:13");
    let before: Vec<_> = l.iter().collect();
    let frames = arena.live_frames();
    // A 4 KiB page cannot reach above 4 GiB: the whole map fails and nothing changes.
    assert_eq!(
        l.map(GuestVirtAddr::new(0xc0_0000), gpa(0xffff_f000), 2 * K4, a),
        Err(MapError::BeyondMaxPhysAddr(0x1_0000_0fff))
    );
    // Nor can splitting the high 4 MiB page into 4 KiB pages.
    assert_eq!(
        l.protect(GuestVirtAddr::new(0x80_1000), K4, a),
        Err(MapError::BeyondMaxPhysAddr(high + (4 << 20) - 1))
    );
    assert_eq!(
        l.unmap(GuestVirtAddr::new(0x80_1000), K4)
            .map(|f| f.range()),
        Err(MapError::BeyondMaxPhysAddr(high + (4 << 20) - 1))
    );
    assert_eq!(before, l.iter().collect::<Vec<_>>());
    assert_eq!(frames, arena.live_frames());
    // Beyond PSE-36's 40 bits.
    assert!(matches!(
        l.map(GuestVirtAddr::new(0), gpa(1 << 40), 4 << 20, a),
        Err(MapError::BeyondMaxPhysAddr(_))
    ));
    l.free_all();
}
