//! Mapping benchmark: hvkit-paging against `x86_64::OffsetPageTable::map_to` and
//! `page_table_multiarch`, all building x86-64 4-level tables in host memory.
//!
//! `cargo bench -p hvkit-paging` first prints a report (one timed run each: 1, 4 and 16 GiB mapped
//! as 4 KiB pages, one call per page and, where the library has one, one range call; ns per page,
//! frames used, ratio to the best peer; then a 512 GiB identity map with 1 GiB pages and its frame
//! count against the minimum), then runs short criterion measurements of a 64 MiB 4 KiB-page map
//! for each library. Frame pools are pre-faulted for every library, so the timings measure the
//! libraries rather than the kernel's first-touch page faults.
//
// UNSAFETY: the peers need raw table pointers (`OffsetPageTable::new`, `map_to` and
// `page_table_multiarch`'s physical-to-virtual hook are unsafe by design).
#![expect(unsafe_code, reason = "the peer libraries' mapping APIs are unsafe")]
#![expect(clippy::unwrap_used, reason = "a benchmark: failures abort the run")]

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::cell::Cell;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion};
use hvkit_paging::{
    FrameAllocator, GuestPhysAddr, GuestTable, GuestVirtAddr, HostArena, HostPhysAddr, LongMode,
    PageSize, PhysMemory, TableConfig, TableMemory, X86Attrs,
};
use x86_64::structures::paging::{
    FrameAllocator as X64FrameAllocator, Mapper, OffsetPageTable, Page, PageTable as X64Table,
    PageTableFlags, PhysFrame, Size1GiB, Size4KiB,
};
use x86_64::{PhysAddr, VirtAddr};

const BASE_VA: u64 = 0x10_0000_0000;
const K4: u64 = 4096;
const GIB: u64 = 1 << 30;

/// Frames for `pages` 4 KiB pages in a 4-level table (PTs, PDs, PDPT, PML4), plus slack.
fn frames_for(pages: u64) -> usize {
    (pages.div_ceil(512) + pages.div_ceil(512 * 512) + 2 + 8) as usize
}

/// The minimum number of table frames for `pages` 4 KiB pages starting 1 GiB-aligned.
fn minimum_frames(pages: u64) -> usize {
    (pages.div_ceil(512) + pages.div_ceil(512 * 512) + pages.div_ceil(512 * 512 * 512) + 1) as usize
}

fn flags() -> PageTableFlags {
    PageTableFlags::PRESENT | PageTableFlags::WRITABLE
}

/// An arena of `frames` frames with every page touched, so no library pays the kernel's
/// first-touch page faults inside the timed loop.
fn prefaulted(frames: usize) -> HostArena {
    let arena = HostArena::new(frames);
    for k in 0..frames as u64 {
        arena
            .write_u64(
                HostPhysAddr::new_truncate(arena.base().as_u64() + k * K4),
                0,
            )
            .unwrap();
    }
    arena
}

// ---- hvkit ----------------------------------------------------------------------------------

fn hvkit_4k(arena: &HostArena, pages: u64) -> (Duration, usize) {
    let mut t = GuestTable::<LongMode, _>::new(arena, TableConfig::new(4)).unwrap();
    let attrs = X86Attrs::new(flags());
    let start = Instant::now();
    for i in 0..pages {
        t.map_with_max(
            GuestVirtAddr::new(BASE_VA + i * K4),
            GuestPhysAddr::new_truncate(i * K4),
            K4,
            attrs,
            PageSize::Size4K,
        )
        .unwrap()
        .ignore();
    }
    let dt = start.elapsed();
    let frames = t.table_frames();
    black_box(t.free_all());
    (dt, frames)
}

fn hvkit_range_4k(arena: &HostArena, pages: u64) -> (Duration, usize) {
    let mut t = GuestTable::<LongMode, _>::new(arena, TableConfig::new(4)).unwrap();
    let start = Instant::now();
    t.map_with_max(
        GuestVirtAddr::new(BASE_VA),
        GuestPhysAddr::ZERO,
        pages * K4,
        X86Attrs::new(flags()),
        PageSize::Size4K,
    )
    .unwrap()
    .ignore();
    let dt = start.elapsed();
    let frames = t.table_frames();
    black_box(t.free_all());
    (dt, frames)
}

fn hvkit_1g(arena: &HostArena) -> (Duration, usize) {
    let mut t =
        GuestTable::<LongMode, _>::new(arena, TableConfig::new(4).with_huge_pages(true)).unwrap();
    let start = Instant::now();
    t.map(
        GuestVirtAddr::new(0),
        GuestPhysAddr::ZERO,
        512 * GIB,
        X86Attrs::new(flags()),
    )
    .unwrap()
    .ignore();
    let dt = start.elapsed();
    let frames = t.table_frames();
    black_box(t.free_all());
    (dt, frames)
}

// ---- x86_64 ---------------------------------------------------------------------------------

struct X64Frames<'a>(&'a HostArena);

// SAFETY: frames come from the arena allocator, unused and zeroed.
unsafe impl X64FrameAllocator<Size4KiB> for X64Frames<'_> {
    fn allocate_frame(&mut self) -> Option<PhysFrame<Size4KiB>> {
        let mut a = self.0;
        a.allocate_zeroed()
            .map(|f| PhysFrame::containing_address(PhysAddr::new(f.as_u64())))
    }
}

fn x64_setup(arena: &HostArena) -> (OffsetPageTable<'_>, X64Frames<'_>) {
    let mut a = arena;
    let root = a.allocate_zeroed().unwrap();
    let ptr = arena.frame_ptr(root).as_ptr();
    let offset = (ptr as u64).wrapping_sub(root.as_u64());
    // SAFETY: the root frame is a zeroed, 4 KiB-aligned arena frame used by nothing else.
    let l4 = unsafe { &mut *ptr.cast::<X64Table>() };
    // SAFETY: every arena frame `f` is mapped at `f + offset` in this process.
    let opt = unsafe { OffsetPageTable::new(l4, VirtAddr::new(offset)) };
    (opt, X64Frames(arena))
}

fn x64_4k(arena: &HostArena, pages: u64) -> (Duration, usize) {
    let (mut opt, mut alloc) = x64_setup(arena);
    let start = Instant::now();
    for i in 0..pages {
        let page = Page::<Size4KiB>::containing_address(VirtAddr::new(BASE_VA + i * K4));
        let frame = PhysFrame::containing_address(PhysAddr::new(i * K4));
        // SAFETY: the frames are not memory this process uses; the table is not live.
        unsafe { opt.map_to(page, frame, flags(), &mut alloc) }
            .unwrap()
            .ignore();
    }
    let dt = start.elapsed();
    let frames = arena.live_frames();
    arena.reset();
    (dt, frames)
}

fn x64_1g(arena: &HostArena) -> (Duration, usize) {
    let (mut opt, mut alloc) = x64_setup(arena);
    let start = Instant::now();
    for i in 0..512 {
        let page = Page::<Size1GiB>::containing_address(VirtAddr::new(i * GIB));
        let frame = PhysFrame::<Size1GiB>::containing_address(PhysAddr::new(i * GIB));
        // SAFETY: as above.
        unsafe { opt.map_to(page, frame, flags() | PageTableFlags::HUGE_PAGE, &mut alloc) }
            .unwrap()
            .ignore();
    }
    let dt = start.elapsed();
    let frames = arena.live_frames();
    arena.reset();
    (dt, frames)
}

// ---- page_table_multiarch -------------------------------------------------------------------

thread_local! {
    /// (next free byte, end) of the bump pool; phys = virt.
    static POOL: Cell<(usize, usize)> = const { Cell::new((0, 0)) };
    static USED: Cell<usize> = const { Cell::new(0) };
}

struct Ptm;

impl page_table_multiarch::PagingHandler for Ptm {
    fn alloc_frames(num: usize, align: usize) -> Option<memory_addr::PhysAddr> {
        let (next, end) = POOL.get();
        let at = next.next_multiple_of(align);
        if at + num * 4096 > end {
            return None;
        }
        POOL.set((at + num * 4096, end));
        USED.set(USED.get() + num);
        Some(memory_addr::PhysAddr::from_usize(at))
    }
    fn dealloc_frames(_paddr: memory_addr::PhysAddr, _num: usize) {}
    fn phys_to_virt(paddr: memory_addr::PhysAddr) -> memory_addr::VirtAddr {
        memory_addr::VirtAddr::from_usize(paddr.as_usize())
    }
}

type PtmTable = page_table_multiarch::x86_64::X64PageTable<Ptm>;

fn with_pool<R>(frames: usize, f: impl FnOnce() -> R) -> R {
    let layout = Layout::from_size_align(frames * 4096, 4096).unwrap();
    // SAFETY: non-zero size.
    let p = unsafe { alloc_zeroed(layout) };
    assert!(!p.is_null());
    // Pre-fault the pool like `prefault` does for the arena.
    for k in 0..frames {
        // SAFETY: inside the allocation; writes the zero that is already there.
        unsafe { p.wrapping_add(k * 4096).write_volatile(0) };
    }
    POOL.set((p as usize, p as usize + frames * 4096));
    USED.set(0);
    let r = f();
    // SAFETY: allocated above with this layout; the tables in it are gone.
    unsafe { dealloc(p, layout) };
    r
}

fn ptm_4k(pages: u64) -> (Duration, usize) {
    with_pool(frames_for(pages), || {
        let mut pt = PtmTable::try_new().unwrap();
        let mf = page_table_entry::MappingFlags::READ | page_table_entry::MappingFlags::WRITE;
        let start = Instant::now();
        {
            let mut c = pt.cursor();
            for i in 0..pages {
                c.map(
                    memory_addr::VirtAddr::from_usize((BASE_VA + i * K4) as usize),
                    memory_addr::PhysAddr::from_usize((i * K4) as usize),
                    page_table_multiarch::PageSize::Size4K,
                    mf,
                )
                .unwrap();
            }
        }
        let dt = start.elapsed();
        let frames = USED.get();
        drop(pt);
        (dt, frames)
    })
}

fn ptm_region_4k(pages: u64) -> (Duration, usize) {
    with_pool(frames_for(pages), || {
        let mut pt = PtmTable::try_new().unwrap();
        let mf = page_table_entry::MappingFlags::READ | page_table_entry::MappingFlags::WRITE;
        let start = Instant::now();
        {
            let mut c = pt.cursor();
            c.map_region(
                memory_addr::VirtAddr::from_usize(BASE_VA as usize),
                |va| memory_addr::PhysAddr::from_usize(va.as_usize() - BASE_VA as usize),
                (pages * K4) as usize,
                mf,
                false,
            )
            .unwrap();
        }
        let dt = start.elapsed();
        let frames = USED.get();
        drop(pt);
        (dt, frames)
    })
}

fn ptm_1g() -> (Duration, usize) {
    with_pool(16, || {
        let mut pt = PtmTable::try_new().unwrap();
        let mf = page_table_entry::MappingFlags::READ | page_table_entry::MappingFlags::WRITE;
        let start = Instant::now();
        {
            let mut c = pt.cursor();
            for i in 0..512u64 {
                c.map(
                    memory_addr::VirtAddr::from_usize((i * GIB) as usize),
                    memory_addr::PhysAddr::from_usize((i * GIB) as usize),
                    page_table_multiarch::PageSize::Size1G,
                    mf,
                )
                .unwrap();
            }
        }
        let dt = start.elapsed();
        let frames = USED.get();
        drop(pt);
        (dt, frames)
    })
}

// ---- report ---------------------------------------------------------------------------------

fn ns_per(d: Duration, n: u64) -> f64 {
    d.as_nanos() as f64 / n as f64
}

fn report() {
    println!(
        "hvkit-paging map benchmark (x86-64 4-level tables in host memory, one timed run each)"
    );
    println!(
        "{:>6} {:>24} {:>10} {:>8} {:>8} {:>18}",
        "size", "library", "ns/page", "frames", "minimum", "ratio (peer/hvkit)"
    );
    for gib in [1u64, 4, 16] {
        let pages = gib << 18;
        let arena = prefaulted(frames_for(pages));
        let (h, hf) = hvkit_4k(&arena, pages);
        let (r, rf) = hvkit_range_4k(&arena, pages);
        let (x, xf) = x64_4k(&arena, pages);
        let (p, pf) = ptm_4k(pages);
        let (q, qf) = ptm_region_4k(pages);
        let min = minimum_frames(pages);
        let best_peer = ns_per(x, pages).min(ns_per(p, pages)).min(ns_per(q, pages));
        let rows = [
            ("hvkit map() per page", ns_per(h, pages), hf),
            ("hvkit map() one range", ns_per(r, pages), rf),
            ("x86_64 OffsetPageTable", ns_per(x, pages), xf),
            ("page_table_multiarch", ns_per(p, pages), pf),
            ("ptm map_region", ns_per(q, pages), qf),
        ];
        for (name, ns, frames) in rows {
            println!(
                "{:>4}G {name:>24} {ns:>10.2} {frames:>8} {min:>8} {:>18.2}",
                gib,
                best_peer / ns
            );
        }
        assert!(
            hf <= min && rf <= min,
            "hvkit used more frames than the minimum"
        );
    }
    let arena = HostArena::new(64);
    let (h, hf) = hvkit_1g(&arena);
    let (x, xf) = x64_1g(&arena);
    let (p, pf) = ptm_1g();
    println!("512 GiB identity with 1 GiB pages (minimum 2 frames: PML4 + PDPT):");
    println!(
        "  hvkit map() one range    {:>10.1} us {hf:>4} frames",
        h.as_secs_f64() * 1e6
    );
    println!(
        "  x86_64 map_to x512       {:>10.1} us {xf:>4} frames",
        x.as_secs_f64() * 1e6
    );
    println!(
        "  page_table_multiarch x512{:>10.1} us {pf:>4} frames",
        p.as_secs_f64() * 1e6
    );
    assert_eq!(hf, 2, "hvkit must use the minimum");
}

fn criterion_benches(c: &mut Criterion) {
    let pages = 64 << 8; // 64 MiB of 4 KiB pages
    let mut g = c.benchmark_group("map_64MiB_4K");
    g.throughput(criterion::Throughput::Elements(pages));
    g.bench_function("hvkit", |b| {
        b.iter_batched(
            || prefaulted(frames_for(pages)),
            |arena| {
                black_box(hvkit_4k(&arena, pages));
            },
            BatchSize::PerIteration,
        );
    });
    g.bench_function("x86_64", |b| {
        b.iter_batched(
            || prefaulted(frames_for(pages)),
            |arena| {
                black_box(x64_4k(&arena, pages));
            },
            BatchSize::PerIteration,
        );
    });
    g.bench_function("page_table_multiarch", |b| {
        b.iter(|| black_box(ptm_4k(pages)))
    });
    g.finish();
}

fn main() {
    report();
    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(200))
        .measurement_time(Duration::from_secs(1))
        .configure_from_args();
    criterion_benches(&mut c);
    c.final_summary();
}
