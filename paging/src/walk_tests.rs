//! Host tests of the two-dimensional walker, one or more per guest paging mode.

use x86_64::structures::paging::PageTableFlags as F;

use crate::walk::*;
use crate::*;

const K4: u64 = 4096;
const DATA_GPA: u64 = 0x1_0000_0000;
const DATA_HPA: u64 = 0x2_0000_0000;
const VA: u64 = 0x40_0000;

fn hpa(v: u64) -> HostPhysAddr {
    HostPhysAddr::new_truncate(v)
}
fn gpa(v: u64) -> GuestPhysAddr {
    GuestPhysAddr::new_truncate(v)
}
fn gva(v: u64) -> GuestVirtAddr {
    GuestVirtAddr::new(v)
}
fn caps() -> EptCapabilities {
    EptCapabilities::from_msr((1 << 6) | (1 << 7) | (1 << 14) | (1 << 16) | (1 << 17) | (1 << 21))
}
fn x(flags: F) -> X86Attrs {
    X86Attrs::new(flags | F::PRESENT)
}

/// An EPT identity-mapping the arena (where guest tables live) and `DATA_GPA` → `DATA_HPA` (2 MiB).
fn ept(arena: &HostArena, data: EptAttrs) -> EptTable<&HostArena> {
    let mut e = EptTable::new(arena, caps().table_config(4, 46).unwrap()).unwrap();
    e.map(
        gpa(arena.base().as_u64()),
        arena.base(),
        arena.len_bytes(),
        EptAttrs::RWX_WB,
    )
    .unwrap()
    .ignore();
    e.map(gpa(DATA_GPA), hpa(DATA_HPA), 2 << 20, data)
        .unwrap()
        .ignore();
    e
}

fn eptp_of(e: &EptTable<&HostArena>, ad: bool) -> Eptp {
    caps()
        .eptp(e.root(), 4, MemoryType::WRITE_BACK, ad)
        .unwrap()
}

/// A 4-level guest mapping `VA` → `DATA_GPA` with `attrs`.
fn guest4(arena: &HostArena, attrs: X86Attrs) -> GuestTable<LongMode, &HostArena> {
    let mut g = GuestTable::<LongMode, _>::new(arena, TableConfig::new(4)).unwrap();
    g.map(gva(VA), gpa(DATA_GPA), K4, attrs).unwrap().ignore();
    g
}

/// The host address of the guest PTE for `va` in a 4-level table at `cr3` (tables identity-mapped).
fn pte4(arena: &HostArena, cr3: u64, va: u64) -> HostPhysAddr {
    let mut t = cr3;
    for level in (2..=4u32).rev() {
        let idx = (va >> (12 + 9 * (level - 1))) & 0x1ff;
        t = arena.read_u64(hpa(t + idx * 8)).unwrap() & 0x000f_ffff_ffff_f000;
    }
    hpa(t + ((va >> 12) & 0x1ff) * 8)
}

fn pf(code: PageFaultErrorCode, va: u64) -> Result<Translation, WalkFault> {
    Err(WalkFault::PageFault {
        error_code: code,
        address: gva(va),
    })
}

#[test]
fn paging_off_goes_straight_to_ept() {
    let arena = HostArena::new(64);
    let e = ept(&arena, EptAttrs::RWX_WB);
    let w = Walker::new(
        &arena,
        Nested::Ept {
            eptp: eptp_of(&e, false),
            mode_based_execute: false,
        },
    );
    let t = w.translate(
        &GuestPagingState::real_mode(),
        gva(DATA_GPA + 0x123),
        Access::read(),
    );
    // Paging off truncates the linear address to 32 bits: 0x123 is not mapped by the EPT.
    assert!(matches!(t, Err(WalkFault::EptViolation { .. })));
    let t = w
        .translate(
            &GuestPagingState::real_mode(),
            gva(arena.base().as_u64() + 8),
            Access::write(),
        )
        .unwrap();
    assert_eq!(t.host_phys, hpa(arena.base().as_u64() + 8));
    e.free_all();
}

#[test]
fn long_mode_4_level_through_ept() {
    let arena = HostArena::new(64);
    let e = ept(&arena, EptAttrs::RWX_WB);
    let g = guest4(&arena, x(F::WRITABLE | F::USER_ACCESSIBLE | F::GLOBAL));
    let w = Walker::new(
        &arena,
        Nested::Ept {
            eptp: eptp_of(&e, false),
            mode_based_execute: false,
        },
    );
    let mut st = GuestPagingState::long_mode(g.root().as_u64());
    st.cr4 |= CR4_PGE;
    let t = w
        .translate(&st, gva(VA + 0x10), Access::write().as_user())
        .unwrap();
    assert_eq!(t.gpa, gpa(DATA_GPA + 0x10));
    assert_eq!(t.host_phys, hpa(DATA_HPA + 0x10));
    assert_eq!(t.page_size, PageSize::Size4K);
    assert!(t.global);
    // Not present, with W and U in the error code.
    assert_eq!(
        w.translate(&st, gva(VA + K4), Access::write().as_user()),
        pf(
            PageFaultErrorCode::CAUSED_BY_WRITE | PageFaultErrorCode::USER_MODE,
            VA + K4
        )
    );
    // Non-canonical: #GP, not #PF.
    assert_eq!(
        w.translate(&st, gva(1 << 47), Access::read()),
        Err(WalkFault::NonCanonical(gva(1 << 47)))
    );
    g.free_all();
    e.free_all();
}

#[test]
fn access_rights_wp_smap_smep_nx_pk() {
    let arena = HostArena::new(64);
    let e = ept(&arena, EptAttrs::RWX_WB);
    let w = Walker::new(
        &arena,
        Nested::Ept {
            eptp: eptp_of(&e, false),
            mode_based_execute: false,
        },
    );
    let pv = PageFaultErrorCode::PROTECTION_VIOLATION;
    let wr = PageFaultErrorCode::CAUSED_BY_WRITE;
    let us = PageFaultErrorCode::USER_MODE;
    let id = PageFaultErrorCode::INSTRUCTION_FETCH;

    // Supervisor, read-only page.
    let sup_ro = guest4(&arena, x(F::empty()));
    let mut st = GuestPagingState::long_mode(sup_ro.root().as_u64());
    assert_eq!(
        w.translate(&st, gva(VA), Access::read().as_user()),
        pf(pv | us, VA)
    );
    assert_eq!(
        w.translate(&st, gva(VA), Access::write()),
        pf(pv | wr, VA),
        "CR0.WP = 1"
    );
    st.cr0 &= !CR0_WP;
    assert!(
        w.translate(&st, gva(VA), Access::write()).is_ok(),
        "CR0.WP = 0"
    );
    sup_ro.free_all();

    // User page, NX.
    let user_nx = guest4(&arena, x(F::USER_ACCESSIBLE | F::WRITABLE | F::NO_EXECUTE));
    let mut st = GuestPagingState::long_mode(user_nx.root().as_u64());
    assert!(w.translate(&st, gva(VA), Access::read()).is_ok(), "no SMAP");
    st.cr4 |= CR4_SMAP;
    assert_eq!(w.translate(&st, gva(VA), Access::read()), pf(pv, VA));
    let ac = Access {
        rflags_ac: true,
        ..Access::write()
    };
    assert!(
        w.translate(&st, gva(VA), ac).is_ok(),
        "EFLAGS.AC lifts SMAP"
    );
    let implicit = Access {
        implicit_supervisor: true,
        ..ac.as_user()
    };
    assert_eq!(
        w.translate(&st, gva(VA), implicit),
        pf(pv | wr, VA),
        "implicit accesses ignore AC"
    );
    assert_eq!(
        w.translate(&st, gva(VA), Access::execute().as_user()),
        pf(pv | us | id, VA),
        "NX"
    );
    st.efer &= !EFER_NXE;
    // With NXE off bit 63 is reserved.
    assert_eq!(
        w.translate(&st, gva(VA), Access::read().as_user()),
        pf(pv | us | PageFaultErrorCode::MALFORMED_TABLE, VA)
    );
    user_nx.free_all();

    // User executable page: SMEP blocks supervisor fetches.
    let user_x = guest4(&arena, x(F::USER_ACCESSIBLE));
    let mut st = GuestPagingState::long_mode(user_x.root().as_u64());
    assert!(w.translate(&st, gva(VA), Access::execute()).is_ok());
    st.cr4 |= CR4_SMEP;
    assert_eq!(
        w.translate(&st, gva(VA), Access::execute()),
        pf(pv | id, VA)
    );
    assert!(
        w.translate(&st, gva(VA), Access::execute().as_user())
            .is_ok()
    );
    user_x.free_all();

    // Protection keys: key 3, PKRU.AD3 blocks data reads, WD3 blocks writes.
    let pk = guest4(
        &arena,
        X86Attrs {
            protection_key: 3,
            ..x(F::USER_ACCESSIBLE | F::WRITABLE)
        },
    );
    let mut st = GuestPagingState::long_mode(pk.root().as_u64());
    st.cr4 |= CR4_PKE;
    st.pkru = 1 << 6;
    let pkf = PageFaultErrorCode::PROTECTION_KEY;
    assert_eq!(
        w.translate(&st, gva(VA), Access::read().as_user()),
        pf(pv | us | pkf, VA)
    );
    assert!(
        w.translate(&st, gva(VA), Access::execute().as_user())
            .is_ok(),
        "keys do not apply to fetches"
    );
    st.pkru = 1 << 7;
    assert!(w.translate(&st, gva(VA), Access::read().as_user()).is_ok());
    assert_eq!(
        w.translate(&st, gva(VA), Access::write().as_user()),
        pf(pv | wr | us | pkf, VA)
    );
    pk.free_all();
    e.free_all();
}

#[test]
fn reserved_bits_and_maxphyaddr() {
    let arena = HostArena::new(64);
    let e = ept(&arena, EptAttrs::RWX_WB);
    let g = guest4(&arena, x(F::WRITABLE));
    let w = Walker::new(
        &arena,
        Nested::Ept {
            eptp: eptp_of(&e, false),
            mode_based_execute: false,
        },
    );
    let mut st = GuestPagingState::long_mode(g.root().as_u64());
    st.maxphyaddr = 46;
    let pte = pte4(&arena, g.root().as_u64(), VA);
    let raw = arena.read_u64(pte).unwrap();
    arena.write_u64(pte, raw | (1 << 50)).unwrap();
    let rsvd = PageFaultErrorCode::PROTECTION_VIOLATION | PageFaultErrorCode::MALFORMED_TABLE;
    assert_eq!(w.translate(&st, gva(VA), Access::read()), pf(rsvd, VA));
    st.maxphyaddr = 52;
    // With MAXPHYADDR 52 bit 50 is an address bit: the GPA is unmapped in the EPT.
    assert!(matches!(
        w.translate(&st, gva(VA), Access::read()),
        Err(WalkFault::EptViolation { .. })
    ));
    arena.write_u64(pte, raw).unwrap();
    g.free_all();
    e.free_all();
}

#[test]
fn ept_violation_final_vs_walk_and_misconfig() {
    let arena = HostArena::new(64);
    let ro = EptAttrs::new(EptFlags::READ, MemoryType::WRITE_BACK);
    let mut e = ept(&arena, ro);
    let g = guest4(&arena, x(F::WRITABLE | F::USER_ACCESSIBLE | F::NO_EXECUTE));
    let mut w = Walker::new(
        &arena,
        Nested::Ept {
            eptp: eptp_of(&e, false),
            mode_based_execute: false,
        },
    );
    w.advanced_exit_info = true;
    let st = GuestPagingState::long_mode(g.root().as_u64());
    use EptViolationQualification as Q;
    let fault = w.translate(&st, gva(VA + 8), Access::write().as_user());
    assert_eq!(
        fault,
        Err(WalkFault::EptViolation {
            qualification: Q::WRITE
                | Q::READABLE
                | Q::GLA_VALID
                | Q::FINAL_TRANSLATION
                | Q::USER_LINEAR
                | Q::WRITABLE_LINEAR
                | Q::EXECUTE_DISABLED_LINEAR,
            gpa: gpa(DATA_GPA + 8),
            gla: Some(gva(VA + 8)),
        })
    );
    // Remove the EPT mapping of the guest PT: the fault happens during the walk.
    let pte = pte4(&arena, g.root().as_u64(), VA);
    let pt_page = pte.as_u64() & !0xfff;
    e.unmap(gpa(pt_page), K4).unwrap().ignore();
    let fault = w.translate(&st, gva(VA), Access::read());
    assert_eq!(
        fault,
        Err(WalkFault::EptViolation {
            qualification: Q::READ | Q::GLA_VALID,
            gpa: gpa(pte.as_u64()),
            gla: Some(gva(VA)),
        })
    );
    // With EPT A/D on, guest table accesses are writes; map the PT page read-only.
    e.map(gpa(pt_page), hpa(pt_page), K4, ro).unwrap().ignore();
    let wad = Walker::new(
        &arena,
        Nested::Ept {
            eptp: eptp_of(&e, true),
            mode_based_execute: false,
        },
    );
    assert!(matches!(
        wad.translate(&st, gva(VA), Access::read()),
        Err(WalkFault::EptViolation { qualification, .. }) if qualification == Q::WRITE | Q::READABLE | Q::GLA_VALID
    ));
    assert!(
        w.translate(&st, gva(VA), Access::read()).is_ok(),
        "without A/D the walk only reads"
    );
    // A write-only EPT entry is a misconfiguration.
    let leaf = e.translate(gpa(DATA_GPA)).unwrap();
    assert_eq!(leaf.size, PageSize::Size2M);
    e.unmap(gpa(DATA_GPA), 2 << 20).unwrap().ignore();
    e.map(gpa(DATA_GPA), hpa(DATA_HPA), 2 << 20, EptAttrs::RWX_WB)
        .unwrap()
        .ignore();
    let pd = ept_entry_addr(&arena, e.root().as_u64(), DATA_GPA, 2);
    let raw = arena.read_u64(pd).unwrap();
    arena.write_u64(pd, (raw & !7) | 2).unwrap();
    assert_eq!(
        w.translate(&st, gva(VA), Access::read()),
        Err(WalkFault::EptMisconfig { gpa: gpa(DATA_GPA) })
    );
    g.free_all();
    e.free_all();
}

fn ept_entry_addr(arena: &HostArena, root: u64, gpa: u64, stop_level: u32) -> HostPhysAddr {
    let mut t = root;
    for level in (stop_level + 1..=4u32).rev() {
        let idx = (gpa >> (12 + 9 * (level - 1))) & 0x1ff;
        t = arena.read_u64(hpa(t + idx * 8)).unwrap() & 0x000f_ffff_ffff_f000;
    }
    hpa(t + ((gpa >> (12 + 9 * (stop_level - 1))) & 0x1ff) * 8)
}

#[test]
fn mode_based_execute_uses_user_execute_bit() {
    let arena = HostArena::new(64);
    let sx = EptAttrs::new(EptFlags::READ | EptFlags::EXECUTE, MemoryType::WRITE_BACK);
    let e = ept(&arena, sx);
    let g = guest4(&arena, x(F::USER_ACCESSIBLE));
    let w = Walker::new(
        &arena,
        Nested::Ept {
            eptp: eptp_of(&e, false),
            mode_based_execute: true,
        },
    );
    let st = GuestPagingState::long_mode(g.root().as_u64());
    // The guest page is user-mode: execution needs bit 10, which the data page lacks.
    assert!(matches!(
        w.translate(&st, gva(VA), Access::execute().as_user()),
        Err(WalkFault::EptViolation { qualification, .. })
            if qualification.contains(EptViolationQualification::FETCH | EptViolationQualification::EXECUTABLE)
                && !qualification.contains(EptViolationQualification::USER_EXECUTABLE)
    ));
    g.free_all();
    e.free_all();
}

#[test]
fn npt_exitinfo1_bits_32_and_33() {
    let arena = HostArena::new(64);
    let urw = x(F::WRITABLE | F::USER_ACCESSIBLE);
    let mut n = NptTable::new(&arena, TableConfig::new(4)).unwrap();
    n.map(
        gpa(arena.base().as_u64()),
        arena.base(),
        arena.len_bytes(),
        urw,
    )
    .unwrap()
    .ignore();
    n.map(gpa(DATA_GPA), hpa(DATA_HPA), K4, x(F::USER_ACCESSIBLE))
        .unwrap()
        .ignore();
    let g = guest4(&arena, urw);
    let ncr3 = NestedCr3(n.root().as_u64());
    let w = Walker::new(
        &arena,
        Nested::Npt {
            ncr3,
            levels: 4,
            nxe: true,
        },
    );
    let st = GuestPagingState::long_mode(g.root().as_u64());
    assert_eq!(
        w.translate(&st, gva(VA), Access::read())
            .map(|t| t.host_phys),
        Ok(hpa(DATA_HPA))
    );
    let f = w.translate(&st, gva(VA), Access::write());
    assert_eq!(
        f,
        Err(WalkFault::NestedPageFault {
            exitinfo1: NpfExitInfo1::PRESENT
                | NpfExitInfo1::WRITE
                | NpfExitInfo1::USER
                | NpfExitInfo1::FINAL_TRANSLATION,
            gpa: gpa(DATA_GPA),
        })
    );
    // Guest tables mapped read-only in the NPT: the walk's (user write) access faults, bit 33.
    let pte = pte4(&arena, g.root().as_u64(), VA);
    let pt_page = pte.as_u64() & !0xfff;
    n.protect(gpa(pt_page), K4, x(F::USER_ACCESSIBLE))
        .unwrap()
        .ignore();
    assert_eq!(
        w.translate(&st, gva(VA), Access::read()),
        Err(WalkFault::NestedPageFault {
            exitinfo1: NpfExitInfo1::PRESENT
                | NpfExitInfo1::WRITE
                | NpfExitInfo1::USER
                | NpfExitInfo1::GUEST_TABLE_WALK,
            gpa: gpa(pte.as_u64()),
        })
    );
    g.free_all();
    n.free_all();
}

#[test]
fn bits32_with_and_without_pse() {
    let arena = HostArena::new(64);
    let w = Walker::new(&arena, Nested::None);
    let mut g = GuestTable::<Legacy32, _>::new(&arena, TableConfig::new(2)).unwrap();
    g.map(gva(0x80_0000), gpa(0xc0_0000), 4 << 20, x(F::WRITABLE))
        .unwrap()
        .ignore();
    g.map(
        gva(0x1000),
        gpa(0x5000),
        K4,
        x(F::WRITABLE | F::USER_ACCESSIBLE),
    )
    .unwrap()
    .ignore();
    let mut st = GuestPagingState {
        cr0: CR0_PG | CR0_WP,
        cr3: g.root().as_u64(),
        cr4: CR4_PSE,
        ..Default::default()
    };
    st.maxphyaddr = 36;
    let t = w.translate(&st, gva(0x81_2345), Access::write()).unwrap();
    assert_eq!((t.gpa, t.page_size), (gpa(0xc1_2345), PageSize::Size4M));
    let t = w
        .translate(&st, gva(0x1004), Access::read().as_user())
        .unwrap();
    assert_eq!((t.gpa, t.page_size), (gpa(0x5004), PageSize::Size4K));
    // 32-bit paging: fetch faults report I/D only with SMEP.
    assert_eq!(
        w.translate(&st, gva(0x81_0000), Access::execute().as_user()),
        pf(
            PageFaultErrorCode::PROTECTION_VIOLATION | PageFaultErrorCode::USER_MODE,
            0x81_0000
        )
    );
    // Without CR4.PSE, PS is ignored: the PDE points at "a page table" (the 4 MiB frame itself).
    st.cr4 = 0;
    let t = w.translate(&st, gva(0x80_0000), Access::read());
    assert!(matches!(
        t,
        Err(WalkFault::Memory(_)) | Err(WalkFault::PageFault { .. }) | Ok(_)
    ));
    assert_ne!(t.map(|t| t.page_size), Ok(PageSize::Size4M));
    g.free_all();
}

#[test]
fn pae_mode_2m_and_bad_pdpte() {
    let arena = HostArena::new(64);
    let w = Walker::new(&arena, Nested::None);
    let mut g = GuestTable::<Pae, _>::new(&arena, TableConfig::new(3)).unwrap();
    g.map(
        gva(0xc000_0000),
        gpa(0x20_0000),
        2 << 20,
        x(F::WRITABLE | F::NO_EXECUTE),
    )
    .unwrap()
    .ignore();
    let st = GuestPagingState {
        cr0: CR0_PG | CR0_WP,
        cr3: g.root().as_u64(),
        cr4: CR4_PAE,
        efer: EFER_NXE,
        maxphyaddr: 40,
        ..Default::default()
    };
    let t = w.translate(&st, gva(0xc010_0000), Access::read()).unwrap();
    assert_eq!((t.gpa, t.page_size), (gpa(0x30_0000), PageSize::Size2M));
    assert_eq!(
        w.translate(&st, gva(0xc000_0000), Access::execute()),
        pf(
            PageFaultErrorCode::PROTECTION_VIOLATION | PageFaultErrorCode::INSTRUCTION_FETCH,
            0xc000_0000
        )
    );
    let pdpte = hpa(g.root().as_u64() + 3 * 8);
    let raw = arena.read_u64(pdpte).unwrap();
    arena.write_u64(pdpte, raw | 2).unwrap();
    assert_eq!(
        w.translate(&st, gva(0xc000_0000), Access::read()),
        Err(WalkFault::InvalidPdpte { index: 3 })
    );
    arena.write_u64(pdpte, raw).unwrap();
    g.free_all();
}

#[test]
fn five_level_and_accessed_dirty_updates() {
    let arena = HostArena::new(64);
    let e = ept(&arena, EptAttrs::RWX_WB);
    let mut g = GuestTable::<LongMode, _>::new(&arena, TableConfig::new(5)).unwrap();
    let va = 0x00f0_0000_0000_0000u64; // beyond 48 bits: needs LA57
    g.map(gva(va), gpa(DATA_GPA), K4, x(F::WRITABLE))
        .unwrap()
        .ignore();
    let mut st = GuestPagingState::long_mode(g.root().as_u64());
    st.cr4 |= CR4_LA57;
    let mut w = Walker::new(
        &arena,
        Nested::Ept {
            eptp: eptp_of(&e, true),
            mode_based_execute: false,
        },
    );
    w.update_accessed_dirty = true;
    let t = w.translate(&st, gva(va + 4), Access::write()).unwrap();
    assert_eq!(t.host_phys, hpa(DATA_HPA + 4));
    let leaf = g.iter().next().unwrap();
    assert_eq!(leaf.virt, gva(va));
    // The guest leaf now has A and D set (the builder hides them from attrs, so read the raw entry).
    let mut table = g.root().as_u64();
    for level in (2..=5u32).rev() {
        let idx = (va >> (12 + 9 * (level - 1))) & 0x1ff;
        let raw = arena.read_u64(hpa(table + idx * 8)).unwrap();
        assert_ne!(raw & (1 << 5), 0, "A at level {level}");
        table = raw & 0x000f_ffff_ffff_f000;
    }
    let pte = arena
        .read_u64(hpa(table + ((va >> 12) & 0x1ff) * 8))
        .unwrap();
    assert_eq!(pte & 0x60, 0x60, "A and D on the guest PTE");
    let data = arena
        .read_u64(ept_entry_addr(&arena, e.root().as_u64(), DATA_GPA, 2))
        .unwrap();
    assert_eq!(data & 0x300, 0x300, "EPT A and D on the data page");
    // 4-level registers cannot reach it (non-canonical).
    st.cr4 &= !CR4_LA57;
    assert!(matches!(
        w.translate(&st, gva(va), Access::read()),
        Err(WalkFault::NonCanonical(_))
    ));
    g.free_all();
    e.free_all();
}

#[test]
fn accessed_dirty_survive_split_protect_and_merge() {
    let arena = HostArena::new(64);
    let mut e = ept(&arena, EptAttrs::RWX_WB);
    let mut w = Walker::new(
        &arena,
        Nested::Ept {
            eptp: eptp_of(&e, true),
            mode_based_execute: false,
        },
    );
    w.update_accessed_dirty = true;
    let gpa0 = DATA_GPA;
    let st = GuestPagingState::long_mode(0);
    // A 4-level guest mapping VA -> DATA_GPA; the write sets EPT A/D on the 2 MiB data leaf.
    let g = guest4(&arena, x(F::WRITABLE));
    let st = GuestPagingState {
        cr3: g.root().as_u64(),
        ..st
    };
    w.translate(&st, gva(VA), Access::write()).unwrap();
    let pde = ept_entry_addr(&arena, e.root().as_u64(), gpa0, 2);
    assert_eq!(
        arena.read_u64(pde).unwrap() & 0x380,
        0x380,
        "2 MiB leaf with A and D"
    );
    // Protecting one 4 KiB page splits the 2 MiB page: every piece keeps A and D.
    let ro = EptAttrs::new(EptFlags::READ, MemoryType::WRITE_BACK);
    e.protect(gpa(gpa0 + 0x1000), K4, ro).unwrap().ignore();
    for k in [0u64, 1, 511] {
        let pte = ept_entry_addr(&arena, e.root().as_u64(), gpa0 + k * K4, 1);
        assert_eq!(arena.read_u64(pte).unwrap() & 0x300, 0x300, "piece {k}");
    }
    e.protect(gpa(gpa0 + 0x1000), K4, EptAttrs::RWX_WB)
        .unwrap()
        .ignore();
    let (f, n) = e.merge(gpa(gpa0), 2 << 20).unwrap();
    f.ignore();
    assert_eq!(n, 1);
    assert_eq!(
        arena.read_u64(pde).unwrap() & 0x380,
        0x380,
        "merged leaf keeps A and D"
    );
    g.free_all();
    e.free_all();
}

#[test]
fn bits32_pse36_page_walks_above_4g() {
    let arena = HostArena::new(16);
    let w = Walker::new(&arena, Nested::None);
    let mut g = GuestTable::<Legacy32, _>::new(&arena, TableConfig::new(2)).unwrap();
    g.map(gva(0x80_0000), gpa(0x12_0040_0000), 4 << 20, x(F::WRITABLE))
        .unwrap()
        .ignore();
    let mut st = GuestPagingState {
        cr0: CR0_PG,
        cr3: g.root().as_u64(),
        cr4: CR4_PSE,
        ..Default::default()
    };
    st.maxphyaddr = 40;
    let t = w.translate(&st, gva(0x80_0010), Access::read()).unwrap();
    assert_eq!(
        (t.gpa, t.page_size),
        (gpa(0x12_0040_0010), PageSize::Size4M)
    );
    // With MAXPHYADDR 36 the PSE-36 bits beyond it are reserved.
    st.maxphyaddr = 36;
    assert_eq!(
        w.translate(&st, gva(0x80_0010), Access::read()),
        pf(
            PageFaultErrorCode::PROTECTION_VIOLATION | PageFaultErrorCode::MALFORMED_TABLE,
            0x80_0010
        )
    );
    g.free_all();
}
