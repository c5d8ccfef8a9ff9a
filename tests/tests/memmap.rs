//! Host tests of the bare-metal hypervisor's boot memory map and frame allocator
//! (`examples/baremetal/src/memmap.rs`, plain `core` code compiled here as it is): multiboot1
//! map entries parsed from bytes laid out as Multiboot 0.6.96 §3.3 gives them, the usable ranges
//! of unsorted, overlapping and unaligned maps with reserved entries and exclusions (the low
//! 1 MiB, the end of the identity map, the kernel image, the boot information, modules), the
//! typed errors of missing, empty and unusable maps, and the bitmap allocator's runs, frees and
//! counts against a simple model.
#![expect(
    clippy::single_range_in_vec_init,
    reason = "the expected usable memory is a list of ranges, often of one"
)]

#[path = "../../examples/baremetal/src/memmap.rs"]
pub mod memmap;

use std::ops::Range;

use memmap::{
    FrameBitmap, FreeError, LOW_MEMORY_END, MAX_RANGES, MapError, PAGE_SIZE, RangeSet, Region,
    RegionKind, UsableMemory, multiboot1_entries,
};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
/// The kernel's bounds: 1 MiB up to the end of its 4 GiB identity map.
const BOUNDS: Range<u64> = LOW_MEMORY_END..4 * GIB;

fn region(start: u64, end: u64, kind: RegionKind) -> Region {
    Region {
        start,
        len: end - start,
        kind,
    }
}

fn avail(start: u64, end: u64) -> Region {
    region(start, end, RegionKind::AVAILABLE)
}

fn reserved(start: u64, end: u64) -> Region {
    region(start, end, RegionKind::RESERVED)
}

/// The multiboot1 entry bytes of `regions`: `size` (here `size`), then base, length, type,
/// then `size - 20` bytes of padding.
fn mb1_bytes(regions: &[Region], size: u32) -> Vec<u8> {
    let mut bytes = Vec::new();
    for r in regions {
        bytes.extend_from_slice(&size.to_le_bytes());
        bytes.extend_from_slice(&r.start.to_le_bytes());
        bytes.extend_from_slice(&r.len.to_le_bytes());
        bytes.extend_from_slice(&r.kind.0.to_le_bytes());
        bytes.resize(bytes.len() + (size as usize).saturating_sub(20), 0xee);
    }
    bytes
}

fn build(regions: &[Region], exclusions: &[Range<u64>]) -> Result<UsableMemory, MapError> {
    UsableMemory::build(regions.iter().copied().map(Ok), BOUNDS, exclusions)
}

fn ranges(memory: &UsableMemory) -> Vec<Range<u64>> {
    memory.ranges.iter().collect()
}

/// The map QEMU 7.2 gives a multiboot1 kernel with `-m 64` (SeaBIOS's e820).
fn qemu_map() -> Vec<Region> {
    vec![
        avail(0, 0x9_fc00),
        reserved(0x9_fc00, 0xa_0000),
        reserved(0xf_0000, 0x10_0000),
        avail(0x10_0000, 0x3fe_0000),
        reserved(0x3fe_0000, 0x400_0000),
        reserved(0xfffc_0000, 0x1_0000_0000),
    ]
}

#[test]
fn multiboot1_entries_are_read_at_their_offsets_and_size_fields() {
    let map = qemu_map();
    for size in [20, 24, 36] {
        let bytes = mb1_bytes(&map, size);
        let read: Vec<Region> = multiboot1_entries(&bytes).map(Result::unwrap).collect();
        assert_eq!(read, map, "entry size {size}");
    }
    // A type the specification does not name is kept as it is.
    let bytes = mb1_bytes(&[region(0x10_0000, 0x20_0000, RegionKind(0x1234))], 20);
    let read: Vec<Region> = multiboot1_entries(&bytes).map(Result::unwrap).collect();
    assert_eq!(read[0].kind, RegionKind(0x1234));
    assert_eq!(read[0].kind.to_string(), "type 4660 (reserved)");
    assert_eq!(multiboot1_entries(&[]).count(), 0);
}

#[test]
fn multiboot1_entries_that_do_not_fit_are_errors() {
    let map = qemu_map();
    // An entry whose size leaves no room for base, length and type.
    let mut bytes = mb1_bytes(&map[..2], 20);
    bytes[24..28].copy_from_slice(&16u32.to_le_bytes());
    let read: Vec<_> = multiboot1_entries(&bytes).collect();
    assert_eq!(read.len(), 2);
    assert_eq!(read[0], Ok(map[0]));
    assert_eq!(
        read[1],
        Err(MapError::EntryTooSmall {
            offset: 24,
            size: 16
        })
    );
    // `mmap_length` cuts the last entry short.
    let bytes = mb1_bytes(&map[..2], 20);
    let read: Vec<_> = multiboot1_entries(&bytes[..40]).collect();
    assert_eq!(
        read[1],
        Err(MapError::Truncated {
            offset: 24,
            len: 40
        })
    );
    // Two stray bytes after the last entry.
    let mut bytes = mb1_bytes(&map[..1], 20);
    bytes.extend_from_slice(&[0, 0]);
    let read: Vec<_> = multiboot1_entries(&bytes).collect();
    assert_eq!(
        read[1],
        Err(MapError::Truncated {
            offset: 24,
            len: 26
        })
    );
    // The error reaches the caller of `build`.
    assert_eq!(
        UsableMemory::build(multiboot1_entries(&bytes), BOUNDS, &[]),
        Err(MapError::Truncated {
            offset: 24,
            len: 26
        })
    );
}

#[test]
fn the_qemu_map_without_the_kernel_and_its_boot_information() {
    let bytes = mb1_bytes(&qemu_map(), 20);
    let kernel = 0x10_0000..0x1c_5000;
    // QEMU puts the module, then the information block, the map and the strings above the
    // kernel; none of it is page-aligned.
    let module = 0x1c_5000..0x1c_9a21;
    let info = 0x1c_a000..0x1c_a074;
    let strings = 0x1c_a300..0x1c_a350;
    let memory = UsableMemory::build(
        multiboot1_entries(&bytes),
        BOUNDS,
        &[kernel, module, info, strings],
    )
    .unwrap();
    assert_eq!(ranges(&memory), [0x1c_b000..0x3fe_0000]);
    assert_eq!(memory.entries, 6);
    // 0..0x9f000 and 1 MiB..0x3fe0000.
    assert_eq!(memory.available, 0x9_f000 + 0x3fe_0000 - 0x10_0000);
    assert_eq!(memory.usable(), 0x3fe_0000 - 0x1c_b000);
    assert_eq!(memory.excluded(), memory.available - memory.usable());
}

#[test]
fn unsorted_and_overlapping_entries_give_the_same_ranges() {
    let sorted = [
        avail(2 * MIB, 8 * MIB),
        reserved(5 * MIB, 6 * MIB),
        avail(16 * MIB, 32 * MIB),
    ];
    let messy = [
        avail(20 * MIB, 32 * MIB),
        reserved(5 * MIB, 6 * MIB),
        avail(4 * MIB, 8 * MIB),
        avail(16 * MIB, 24 * MIB),
        avail(2 * MIB, 5 * MIB),
        avail(3 * MIB, 4 * MIB),
        avail(16 * MIB, 17 * MIB),
    ];
    let expected = [2 * MIB..5 * MIB, 6 * MIB..8 * MIB, 16 * MIB..32 * MIB];
    assert_eq!(ranges(&build(&sorted, &[]).unwrap()), expected);
    assert_eq!(ranges(&build(&messy, &[]).unwrap()), expected);
    let mut reversed = messy;
    reversed.reverse();
    assert_eq!(ranges(&build(&reversed, &[]).unwrap()), expected);
    // Adjacent available entries merge into one range.
    let adjacent = [avail(2 * MIB, 3 * MIB), avail(3 * MIB, 4 * MIB)];
    assert_eq!(ranges(&build(&adjacent, &[]).unwrap()), [2 * MIB..4 * MIB]);
    // Overlapping entries are counted once.
    assert_eq!(build(&messy, &[]).unwrap().available, 6 * MIB + 16 * MIB);
}

#[test]
fn unaligned_bounds_shrink_available_and_grow_everything_else() {
    let map = [
        avail(0x10_0800, 0x40_0400),
        reserved(0x20_0010, 0x20_0020),
        avail(0x50_0fff, 0x50_1001),
    ];
    let memory = build(&map, &[0x30_0001..0x30_0002]).unwrap();
    // Only whole pages of available memory; the reserved bytes and the excluded byte each cost
    // the page they are in; the 2-byte entry across a page boundary gives nothing.
    assert_eq!(
        ranges(&memory),
        [
            0x10_1000..0x20_0000,
            0x20_1000..0x30_0000,
            0x30_1000..0x40_0000
        ]
    );
    for r in memory.ranges.iter() {
        assert_eq!(r.start % PAGE_SIZE, 0);
        assert_eq!(r.end % PAGE_SIZE, 0);
    }
}

#[test]
fn reserved_entries_win_over_available_ones_in_any_order() {
    for map in [
        [
            avail(MIB, 16 * MIB),
            region(4 * MIB, 5 * MIB, RegionKind::ACPI_NVS),
        ],
        [
            region(4 * MIB, 5 * MIB, RegionKind::ACPI_NVS),
            avail(MIB, 16 * MIB),
        ],
    ] {
        assert_eq!(
            ranges(&build(&map, &[]).unwrap()),
            [MIB..4 * MIB, 5 * MIB..16 * MIB]
        );
    }
    // Every non-available type, named or not, is kept out.
    for kind in [
        RegionKind::RESERVED,
        RegionKind::ACPI_RECLAIMABLE,
        RegionKind::ACPI_NVS,
        RegionKind::DEFECTIVE,
        RegionKind(0),
        RegionKind(7),
        RegionKind(0xf000_0000),
    ] {
        let map = [avail(MIB, 8 * MIB), region(2 * MIB, 3 * MIB, kind)];
        assert_eq!(
            ranges(&build(&map, &[]).unwrap()),
            [MIB..2 * MIB, 3 * MIB..8 * MIB],
            "{kind}"
        );
    }
    // A reserved entry covering an available one completely takes all of it.
    let map = [
        avail(MIB, 2 * MIB),
        reserved(0, 3 * MIB),
        avail(4 * MIB, 5 * MIB),
    ];
    assert_eq!(ranges(&build(&map, &[]).unwrap()), [4 * MIB..5 * MIB]);
}

#[test]
fn the_low_mebibyte_and_memory_above_the_identity_map_are_left_out() {
    let map = [
        avail(0, 0x9_fc00),
        avail(0x8_0000, 2 * MIB),
        avail(3 * GIB, 6 * GIB),
        avail(8 * GIB, 9 * GIB),
    ];
    let memory = build(&map, &[]).unwrap();
    assert_eq!(ranges(&memory), [MIB..2 * MIB, 3 * GIB..4 * GIB]);
    assert_eq!(memory.available, 2 * MIB + 3 * GIB + GIB);
    // Bounds that are not page-aligned shrink inward.
    let memory =
        UsableMemory::build(map.iter().copied().map(Ok), 0x10_0001..0x20_0fff, &[]).unwrap();
    assert_eq!(ranges(&memory), [0x10_1000..0x20_0000]);
    // An entry reaching the end of the address space does not overflow.
    let map = [Region {
        start: 3 * GIB,
        len: u64::MAX,
        kind: RegionKind::AVAILABLE,
    }];
    assert_eq!(ranges(&build(&map, &[]).unwrap()), [3 * GIB..4 * GIB]);
}

#[test]
fn exclusions_take_the_kernel_the_boot_information_and_modules_out() {
    let map = [avail(0, 0x9_f000), avail(MIB, 64 * MIB)];
    let kernel = MIB..0x1b_3000;
    let info = 0x1c_0010..0x1c_0088;
    let module_a = 0x1c_1000..0x1c_9a21;
    let module_b = 0x20_0000..0x20_0001;
    let memory = build(&map, &[module_b.clone(), kernel, info, module_a]).unwrap();
    assert_eq!(
        ranges(&memory),
        [
            0x1b_3000..0x1c_0000,
            0x1c_a000..0x20_0000,
            0x20_1000..64 * MIB
        ]
    );
    // Nothing of any exclusion is usable.
    for excluded in [
        0x1c_0010u64,
        0x1c_0087,
        0x1c_9a20,
        0x20_0000,
        MIB,
        0x1b_2fff,
    ] {
        assert!(
            !memory
                .ranges
                .iter()
                .any(|r| r.contains(&excluded) || r.contains(&(excluded & !0xfff))),
            "{excluded:#x}"
        );
    }
    // Empty exclusions change nothing.
    assert_eq!(
        ranges(&build(&map, &[5 * MIB..5 * MIB]).unwrap()),
        [MIB..64 * MIB]
    );
}

#[test]
fn missing_empty_and_unusable_maps_are_typed_errors_with_clear_messages() {
    assert_eq!(build(&[], &[]), Err(MapError::Empty));
    assert_eq!(
        UsableMemory::build(multiboot1_entries(&[]), BOUNDS, &[]),
        Err(MapError::Empty)
    );
    // Only reserved memory, only low memory, or everything excluded.
    for (map, exclusions) in [
        (vec![reserved(MIB, 64 * MIB)], vec![]),
        (vec![avail(0, 0x9_fc00)], vec![]),
        (vec![avail(5 * GIB, 6 * GIB)], vec![]),
        (vec![avail(MIB, 2 * MIB)], vec![MIB..0x1f_f001]),
    ] {
        let e = build(&map, &exclusions).unwrap_err();
        assert!(matches!(e, MapError::NoUsableMemory { .. }), "{e:?}");
        assert!(
            e.to_string().starts_with("no usable memory: the map's"),
            "{e}"
        );
    }
    assert_eq!(
        build(&[avail(MIB, 2 * MIB)], &[MIB..2 * MIB]),
        Err(MapError::NoUsableMemory {
            available_kib: 1024,
            entries: 1
        })
    );
    assert_eq!(
        MapError::Missing.to_string(),
        "the boot loader gave no memory map (multiboot1: flags bit 6 clear; multiboot2: no tag \
         of type 6)"
    );
    assert_eq!(
        MapError::Empty.to_string(),
        "the boot loader's memory map has no entries"
    );
}

#[test]
fn more_ranges_than_the_set_holds_is_an_error() {
    let map: Vec<Region> = (0..MAX_RANGES as u64 + 1)
        .map(|i| {
            avail(
                2 * MIB + 2 * i * PAGE_SIZE,
                2 * MIB + (2 * i + 1) * PAGE_SIZE,
            )
        })
        .collect();
    assert_eq!(build(&map, &[]), Err(MapError::TooManyRanges));
    assert!(build(&map[..MAX_RANGES], &[]).is_ok());
    // Exclusions that split one range too often.
    let holes: Vec<Range<u64>> = (0..MAX_RANGES as u64)
        .map(|i| 2 * MIB + 2 * i * PAGE_SIZE..2 * MIB + (2 * i + 1) * PAGE_SIZE)
        .collect();
    assert_eq!(
        build(&[avail(MIB, 64 * MIB)], &holes),
        Err(MapError::TooManyRanges)
    );
}

#[test]
fn range_set_insert_and_remove() {
    let mut set = RangeSet::new();
    set.insert(10, 20).unwrap();
    set.insert(30, 40).unwrap();
    set.insert(20, 30).unwrap();
    assert_eq!(set.iter().collect::<Vec<_>>(), [10..40]);
    set.remove(15, 16).unwrap();
    set.remove(0, 11).unwrap();
    set.remove(39, 100).unwrap();
    assert_eq!(set.iter().collect::<Vec<_>>(), [11..15, 16..39]);
    assert_eq!(set.bytes(), 4 + 23);
    assert!(set.contains(16, 39) && !set.contains(14, 17));
    set.insert(5, 5).unwrap();
    set.remove(7, 3).unwrap();
    assert_eq!(set.len(), 2);
}

/// An allocator over `memory` with a bitmap covering `covered` bytes.
fn bitmap(memory: &UsableMemory, covered: u64) -> (Vec<u64>, usize) {
    let mut words = vec![u64::MAX; (covered / PAGE_SIZE / 64) as usize];
    let total = FrameBitmap::new(&mut words, memory).total();
    (words, total)
}

#[test]
fn runs_are_contiguous_lowest_first_and_inside_usable_memory() {
    let map = [avail(MIB, 2 * MIB), avail(3 * MIB, 8 * MIB)];
    let memory = build(&map, &[MIB..0x10_3000]).unwrap();
    let mut words = vec![u64::MAX; 64 * MIB as usize / PAGE_SIZE as usize / 64];
    let mut frames = FrameBitmap::new(&mut words, &memory);
    assert_eq!(
        frames.total(),
        (0x10_0000 - 0x3000 + 5 * MIB) as usize / 4096
    );
    assert_eq!(frames.in_use(), 0);
    assert_eq!(frames.allocate(0), None);
    // The first frame after the excluded kernel.
    assert_eq!(frames.allocate(1), Some(0x10_3000));
    // A run larger than what is left below 2 MiB goes to the next range, not across the hole.
    let big = frames.allocate(256).unwrap();
    assert_eq!(big, 3 * MIB);
    // Smaller runs still fill the first range.
    assert_eq!(frames.allocate(2), Some(0x10_4000));
    assert_eq!(frames.in_use(), 259);
    assert!(frames.is_allocated(big) && frames.is_allocated(big + 255 * PAGE_SIZE));
    assert!(!frames.is_allocated(big + 256 * PAGE_SIZE));
    assert!(
        !frames.is_allocated(MIB),
        "excluded memory is never allocated"
    );
    // More than the largest range: none, even though enough frames are free in total.
    assert_eq!(frames.allocate(5 * 256), None);
    assert_eq!(frames.in_use(), 259);
}

#[test]
fn freed_runs_are_reused_and_double_frees_refused() {
    let memory = build(&[avail(MIB, 4 * MIB)], &[]).unwrap();
    let mut words = vec![0; 64];
    let mut frames = FrameBitmap::new(&mut words, &memory);
    let a = frames.allocate(3).unwrap();
    let b = frames.allocate(5).unwrap();
    assert_eq!((a, b), (MIB, MIB + 3 * PAGE_SIZE));
    frames.free(a, 3).unwrap();
    assert_eq!(frames.in_use(), 5);
    // The hole is reused by what fits in it, the rest goes above.
    assert_eq!(frames.allocate(2), Some(a));
    assert_eq!(frames.allocate(2), Some(b + 5 * PAGE_SIZE));
    assert_eq!(frames.allocate(1), Some(a + 2 * PAGE_SIZE));
    // Double free, and frees that were never handed out, change nothing.
    frames.free(b, 5).unwrap();
    let in_use = frames.in_use();
    assert_eq!(
        frames.free(b, 5),
        Err(FreeError::NotAllocated { addr: b, frame: b })
    );
    assert_eq!(
        frames.free(a, 4),
        Err(FreeError::NotAllocated {
            addr: a,
            frame: a + 3 * PAGE_SIZE
        })
    );
    assert_eq!(
        frames.free(a + 1, 1),
        Err(FreeError::Misaligned {
            addr: a + 1,
            count: 1
        })
    );
    assert_eq!(
        frames.free(a, 0),
        Err(FreeError::Misaligned { addr: a, count: 0 })
    );
    assert_eq!(
        frames.free(0x9_0000, 1),
        Err(FreeError::NotUsable {
            addr: 0x9_0000,
            count: 1
        })
    );
    assert_eq!(
        frames.free(4 * MIB - PAGE_SIZE, 2),
        Err(FreeError::NotUsable {
            addr: 4 * MIB - PAGE_SIZE,
            count: 2
        })
    );
    assert_eq!(frames.in_use(), in_use);
    // Everything back: the whole memory is one run again.
    frames.free(a, 3).unwrap();
    frames.free(b + 5 * PAGE_SIZE, 2).unwrap();
    assert_eq!(frames.in_use(), 0);
    assert_eq!(frames.allocate(3 * 256), Some(MIB));
    assert_eq!(frames.allocate(1), None);
}

#[test]
fn the_bitmap_only_covers_what_its_words_cover() {
    let memory = build(&[avail(MIB, 8 * MIB)], &[]).unwrap();
    // 64 words cover 16 MiB; 8 words 2 MiB, so only 1 MiB..2 MiB.
    assert_eq!(bitmap(&memory, 16 * MIB).1, 7 * 256);
    assert_eq!(bitmap(&memory, 2 * MIB).1, 256);
    assert_eq!(FrameBitmap::covered(16384), 4 * GIB);
}

/// A run handed out or given back at random against a model: runs never overlap, never leave
/// the usable memory, the count is right, and once everything is back the largest run fits.
#[test]
fn random_runs_against_a_model() {
    let map = [
        avail(0, 0x9_fc00),
        avail(MIB, 3 * MIB),
        reserved(0x18_0000, 0x18_1000),
        avail(0x20_0800, 6 * MIB),
    ];
    let memory = build(&map, &[MIB..0x12_0000, 0x40_0000..0x40_0010]).unwrap();
    let mut words = vec![0; 48];
    let mut frames = FrameBitmap::new(&mut words, &memory);
    let mut owned = vec![false; 12 * MIB as usize / 4096];
    let mut runs: Vec<(u64, usize)> = Vec::new();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..5000 {
        if runs.is_empty() || next() % 3 != 0 {
            let count = 1 + (next() % 40) as usize;
            if let Some(addr) = frames.allocate(count) {
                assert!(
                    memory
                        .ranges
                        .contains(addr, addr + count as u64 * PAGE_SIZE)
                );
                for f in 0..count {
                    let slot = &mut owned[addr as usize / 4096 + f];
                    assert!(!*slot, "{addr:#x} handed out twice");
                    *slot = true;
                }
                runs.push((addr, count));
            }
        } else {
            let (addr, count) = runs.swap_remove((next() % runs.len() as u64) as usize);
            frames.free(addr, count).unwrap();
            for f in 0..count {
                owned[addr as usize / 4096 + f] = false;
            }
        }
        assert_eq!(frames.in_use(), owned.iter().filter(|&&o| o).count());
    }
    for (addr, count) in runs.drain(..) {
        frames.free(addr, count).unwrap();
    }
    assert_eq!(frames.in_use(), 0);
    let largest = memory.ranges.iter().map(|r| r.end - r.start).max().unwrap();
    let start = memory
        .ranges
        .iter()
        .find(|r| r.end - r.start == largest)
        .unwrap()
        .start;
    assert_eq!(frames.allocate((largest / PAGE_SIZE) as usize), Some(start));
}
