//! Shared pieces of the hvkit fuzz targets: a reference model of a page table (4 KiB page → target,
//! attributes), an operation-sequence runner that checks the builder against it after every step, and
//! a plain reference walker.

pub mod reference_walker;

use std::collections::BTreeMap;

use arbitrary::Arbitrary;
use hvkit_paging::{
    Address, FrameAllocator, GuestPhysAddr, HostArena, HostPhysAddr, MapError, PageSize, PageTable, PageTableFormat,
    TableConfig,
};

const PAGE: u64 = 4096;
/// The shape of the table under test, in 4 KiB pages.
#[derive(Debug, Clone, Copy)]
pub struct Geometry {
    /// Root depth.
    pub levels: u8,
    /// Input space explored (pages).
    pub space: u64,
    /// Output space (pages).
    pub targets: u64,
    /// Pages per large page (512 for 2 MiB, 1024 for 4 MiB).
    pub large: u64,
}

impl Geometry {
    /// 4-level EPT / NPT / long mode over 512 GiB, so 1 GiB pages and several PDPT slots occur.
    pub const LEVEL4: Self = Self { levels: 4, space: 1 << 27, targets: 1 << 36, large: 512 };
    /// PAE: 4 GiB of input, 2 MiB large pages.
    pub const PAE: Self = Self { levels: 3, space: 1 << 20, targets: 1 << 36, large: 512 };
    /// 32-bit paging: 4 GiB of input and output, 4 MiB large pages.
    pub const BITS32: Self = Self { levels: 2, space: 1 << 20, targets: 1 << 20, large: 1024 };
}

/// One builder operation, in 4 KiB page units.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Op {
    /// Map `len` pages at `page` to `target` (see [`Op::resolve`]).
    Map { page: u32, len: u32, target: u32, attrs: u16, max: u8 },
    /// Map `count` consecutive pages one call each (the single-page path and its cache).
    MapEach { page: u32, count: u8, target: u32, attrs: u16 },
    /// Unmap `len` pages.
    Unmap { page: u32, len: u32 },
    /// Change the attributes of `len` pages.
    Protect { page: u32, len: u32, attrs: u16 },
    /// Merge uniform tables.
    Merge { page: u32, len: u32 },
    /// Let only this many more frames be allocated (then fail), or lift the limit.
    Limit { frames: Option<u8> },
    /// Probe one address.
    Probe { page: u32 },
}

/// Turns fuzzer numbers into page numbers and lengths with interesting alignments.
fn page_of(raw: u32, g: &Geometry) -> u64 {
    let p = u64::from(raw >> 2) % g.space;
    match raw & 3 {
        0 => p & !0x3ffff,         // 1 GiB aligned
        1 => p & !(g.large - 1), // large-page aligned
        _ => p,
    }
}

fn len_of(raw: u32) -> u64 {
    let n = u64::from(raw >> 3);
    match raw & 7 {
        0 => 0x40000,                      // exactly 1 GiB
        1 => 0x200 * (1 + n % 4),          // a few 2 MiB
        2 => 0x200 + (n % 0x400),          // 2 MiB plus change
        3 => 0x40000 + 0x200 * (n % 3),    // 1 GiB plus 2 MiB pages
        _ => 1 + n % 64,                   // small
    }
}

/// A run of pages in the model: `len` pages mapped to `target..`, all with `attrs`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Run<A> {
    len: u64,
    target: u64,
    attrs: A,
}

/// The reference model: disjoint runs keyed by first page (a compressed page → (target, attrs) map).
#[derive(Debug)]
pub struct Model<A> {
    runs: BTreeMap<u64, Run<A>>,
}

impl<A: Copy + Eq + std::fmt::Debug> Model<A> {
    /// (target page, attrs) of `page`.
    pub fn lookup(&self, page: u64) -> Option<(u64, A)> {
        let (&s, r) = self.runs.range(..=page).next_back()?;
        (page < s + r.len).then(|| (r.target + (page - s), r.attrs))
    }

    fn overlaps(&self, s: u64, e: u64) -> Option<u64> {
        if let Some((&rs, r)) = self.runs.range(..s).next_back() {
            if rs + r.len > s {
                return Some(s);
            }
        }
        self.runs.range(s..e).next().map(|(&k, _)| k)
    }

    fn first_hole(&self, s: u64, e: u64) -> Option<u64> {
        let mut p = s;
        while p < e {
            let Some((&rs, r)) = self.runs.range(..=p).next_back() else { return Some(p) };
            if rs + r.len <= p {
                return Some(p);
            }
            p = rs + r.len;
        }
        None
    }

    /// Splits runs so that `p` starts a run (if it is inside one).
    fn cut(&mut self, p: u64) {
        if let Some((&rs, r)) = self.runs.range(..p).next_back() {
            let r = *r;
            if rs + r.len > p {
                let head = p - rs;
                self.runs.insert(rs, Run { len: head, ..r });
                self.runs.insert(p, Run { len: r.len - head, target: r.target + head, attrs: r.attrs });
            }
        }
    }

    fn remove(&mut self, s: u64, e: u64) {
        self.cut(s);
        self.cut(e);
        let keys: Vec<u64> = self.runs.range(s..e).map(|(&k, _)| k).collect();
        for k in keys {
            self.runs.remove(&k);
        }
    }

    fn set_attrs(&mut self, s: u64, e: u64, attrs: A) {
        self.cut(s);
        self.cut(e);
        for (_, r) in self.runs.range_mut(s..e) {
            r.attrs = attrs;
        }
    }

    fn pages(&self) -> u64 {
        self.runs.values().map(|r| r.len).sum()
    }
}

/// A format under test with a way to make (possibly invalid) attributes from fuzzer bits.
pub trait FuzzFormat {
    /// The format.
    type F: PageTableFormat;
    /// Attributes from 16 fuzzer bits, and whether the model thinks they are valid.
    fn attrs(bits: u16) -> (<Self::F as PageTableFormat>::Attrs, bool);
}

fn size_limit(max: u8) -> PageSize {
    match max % 4 {
        0 => PageSize::Size4K,
        1 => PageSize::Size2M,
        _ => PageSize::Size1G,
    }
}

/// Runs `ops` on a fresh table of format `Z` and checks it against the model after every step.
///
/// # Panics
/// On any disagreement (that is the point).
pub fn run_ops<Z: FuzzFormat>(ops: &[Op], huge: bool, g: Geometry) {
    let arena = HostArena::new(256);
    let cfg = TableConfig::new(g.levels).with_huge_pages(huge);
    let mut t: PageTable<Z::F, &HostArena> = PageTable::new(&arena, cfg).expect("root");
    let mut m: Model<<Z::F as PageTableFormat>::Attrs> = Model { runs: BTreeMap::new() };
    for (step, op) in ops.iter().take(48).enumerate() {
        let mut probes = Vec::new();
        match *op {
            Op::Map { page, len, target, attrs, max } => {
                let (s, n) = (page_of(page, &g), len_of(len));
                let e = (s + n).min(g.space);
                let n = e - s;
                if n == 0 {
                    continue;
                }
                // Targets keep the input's alignment mod 2 MiB or 1 GiB often, so large pages appear.
                let tgt = match target & 3 {
                    0 => s + (u64::from(target >> 2) << 18),
                    1 => s + u64::from(target >> 2) * g.large,
                    _ => u64::from(target >> 2),
                } % g.targets;
                // Huge ranges keep 2 MiB congruence so they are not mapped page by page (speed).
                let tgt = if n >= 0x4000 { (tgt & !(g.large - 1)) | (s & (g.large - 1)) } else { tgt };
                // Where 4 KiB pages cannot reach as far as large pages (32-bit paging: 4 GiB vs
                // PSE-36's 1 TiB), success depends on the page sizes chosen: keep to the common part.
                if (tgt + n) * PAGE > 1u64 << <Z::F as PageTableFormat>::max_output_bits_at(1) {
                    continue;
                }
                let (a, valid) = Z::attrs(attrs);
                let got = t.map_with_max(
                    GuestPhysAddr::new_truncate(s * PAGE),
                    HostPhysAddr::new_truncate(tgt * PAGE),
                    n * PAGE,
                    a,
                    // Keep executions fast: huge ranges are not mapped page by page.
                    if n >= 0x4000 { size_limit(max).max(PageSize::Size2M) } else { size_limit(max) },
                );
                let out_ok = (tgt + n) * PAGE <= 1u64 << <Z::F as PageTableFormat>::MAX_OUTPUT_BITS;
                match (got, valid, m.overlaps(s, e)) {
                    (Err(MapError::InvalidAttributes(_)), false, _) => {}
                    (Err(MapError::BeyondMaxPhysAddr(_)), true, _) if !out_ok => {}
                    (Err(MapError::Overlap(at)), true, Some(_)) => {
                        assert!(m.lookup(at / PAGE).is_some(), "step {step}: overlap reported at unmapped {at:#x}");
                    }
                    (Ok(f), true, None) if out_ok => {
                        f.ignore();
                        m.remove(s, e);
                        m.runs.insert(s, Run { len: n, target: tgt, attrs: a });
                    }
                    // Tables are allocated on the way, so exhaustion may come before an overlap.
                    (Err(MapError::OutOfFrames), true, _) if out_ok => {}
                    (got, valid, ov) => panic!("step {step}: map {op:?} -> {got:?}, model valid={valid} overlap={ov:?}"),
                }
                probes.extend([s, e - 1, e, s.saturating_sub(1)]);
            }
            Op::MapEach { page, count, target, attrs } => {
                let s = page_of(page, &g);
                let (a, valid) = Z::attrs(attrs);
                let tgt = u64::from(target) % (g.targets - 64);
                for k in 0..u64::from(count % 64) {
                    let p = s + k;
                    if p >= g.space {
                        break;
                    }
                    let got = t.map(GuestPhysAddr::new_truncate(p * PAGE), HostPhysAddr::new_truncate((tgt + k) * PAGE), PAGE, a);
                    match (got, valid, m.lookup(p)) {
                        (Err(MapError::InvalidAttributes(_)), false, _) => {}
                        (Err(MapError::Overlap(at)), true, Some(_)) => assert_eq!(at, p * PAGE, "step {step}"),
                        (Ok(f), true, None) => {
                            f.ignore();
                            m.runs.insert(p, Run { len: 1, target: tgt + k, attrs: a });
                        }
                        (Err(MapError::OutOfFrames), true, _) => {}
                        (got, valid, old) => panic!("step {step}: map page {p:#x} -> {got:?}, valid={valid} old={old:?}"),
                    }
                }
                probes.extend([s, s + u64::from(count % 64)]);
            }
            Op::Unmap { page, len } => {
                let s = page_of(page, &g);
                let e = (s + len_of(len)).min(g.space);
                if e <= s {
                    continue;
                }
                match t.unmap(GuestPhysAddr::new_truncate(s * PAGE), (e - s) * PAGE) {
                    Ok(f) => {
                        f.ignore();
                        m.remove(s, e);
                    }
                    Err(MapError::OutOfFrames) => {}
                    Err(err) => panic!("step {step}: unmap {op:?} -> {err:?}"),
                }
                probes.extend([s, e - 1, e, s.saturating_sub(1)]);
            }
            Op::Protect { page, len, attrs } => {
                let s = page_of(page, &g);
                let e = (s + len_of(len)).min(g.space);
                if e <= s {
                    continue;
                }
                let (a, valid) = Z::attrs(attrs);
                let got = t.protect(GuestPhysAddr::new_truncate(s * PAGE), (e - s) * PAGE, a);
                match (got, valid, m.first_hole(s, e)) {
                    (Err(MapError::InvalidAttributes(_)), false, _) => {}
                    (Err(MapError::NotMapped(at)), true, Some(h)) => assert_eq!(at, h * PAGE, "step {step}"),
                    (Ok(f), true, None) => {
                        f.ignore();
                        m.set_attrs(s, e, a);
                    }
                    (Err(MapError::OutOfFrames), true, None) => {}
                    (got, valid, hole) => panic!("step {step}: protect {op:?} -> {got:?}, valid={valid} hole={hole:?}"),
                }
                probes.extend([s, e - 1, e]);
            }
            Op::Merge { page, len } => {
                let s = page_of(page, &g);
                let e = (s + len_of(len)).min(g.space);
                if e <= s {
                    continue;
                }
                let before = t.table_frames();
                let (f, n) = t.merge(GuestPhysAddr::new_truncate(s * PAGE), (e - s) * PAGE).expect("merge");
                f.ignore();
                assert!(t.table_frames() + n == before, "step {step}: merge freed {n} tables");
            }
            Op::Limit { frames } => arena.fail_after(frames.map(usize::from)),
            Op::Probe { page } => probes.push(page_of(page, &g)),
        }
        check(&t, &m, &arena, &probes, step, g.space);
    }
    arena.fail_after(None);
    let _arena_handle = t.free_all();
    assert_eq!(arena.live_frames(), 0, "freeing must return every frame");
}

fn check<F: PageTableFormat, C: FrameAllocator>(
    t: &PageTable<F, C>,
    m: &Model<F::Attrs>,
    arena: &HostArena,
    probes: &[u64],
    step: usize,
    space: u64,
) {
    for &p in probes {
        if p >= space {
            continue;
        }
        let got = t.translate(GuestPhysAddr::new_truncate(p * PAGE)).map(|x| {
            let off = p * PAGE - x.virt.to_u64();
            ((x.phys.to_u64() + off) / PAGE, x.attrs)
        });
        assert_eq!(got, m.lookup(p), "step {step}: probe page {p:#x}");
    }
    // Full iteration equals the model: every mapped page agrees, in order, and the counts match.
    let mut last = None;
    let mut pages = 0;
    for x in t.iter() {
        let (v, pa) = (x.virt.to_u64() / PAGE, x.phys.to_u64() / PAGE);
        assert!(last.is_none_or(|l| l <= v), "step {step}: iteration out of order at {v:#x}");
        let n = x.size.bytes() / PAGE;
        let mut q = v;
        while q < v + n {
            let (&rs, r) = m.runs.range(..=q).next_back().expect("table page missing from model");
            assert!(q < rs + r.len, "step {step}: table maps {q:#x}, model does not");
            assert_eq!((r.target + (q - rs), r.attrs), (pa + (q - v), x.attrs), "step {step}: page {q:#x}");
            q = (rs + r.len).min(v + n);
        }
        last = Some(v + n);
        pages += n;
    }
    assert_eq!(pages, m.pages(), "step {step}: page count");
    assert_eq!(arena.live_frames(), t.table_frames(), "step {step}: leaked or lost frames");
}
