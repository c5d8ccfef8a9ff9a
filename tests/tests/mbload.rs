//! Host tests of the bare-metal hypervisor's multiboot v1 loader (`examples/baremetal/src/mbload.rs`,
//! plain `core` code compiled here as it is): the real guest kernel (`examples/guests/mbkernel`,
//! assembled and linked by [`hvkit_e2e::mbkernel`]) is planned and given an information block
//! whose bytes are read back at the offsets of Multiboot 0.6.96 §3.3, and hand-made images hit
//! every typed error of the header search, the ELF32 checks, the a.out kludge and the
//! information block.
#![expect(
    clippy::unwrap_used,
    reason = "test code: a failed step should fail loudly"
)]

#[path = "../../examples/baremetal/src/mbload.rs"]
pub mod mbload;

use mbload::{
    HeaderError, HeaderFlags, InfoError, LoadError, MAX_MODULES, Module, build_info, find_header,
    plan,
};

/// 4 MiB of guest RAM, as the bare-metal `mbkernel` case gives.
const RAM: u64 = 4 << 20;

/// A multiboot header: magic, `flags`, checksum, then (for the a.out kludge) address fields.
fn mb_header(flags: u32, fields: &[u32]) -> Vec<u8> {
    let mut h = Vec::new();
    for word in [
        mbload::HEADER_MAGIC,
        flags,
        0u32.wrapping_sub(mbload::HEADER_MAGIC.wrapping_add(flags)),
    ]
    .iter()
    .chain(fields)
    {
        h.extend_from_slice(&word.to_le_bytes());
    }
    h
}

/// A `PT_*` program header of a hand-made ELF32 image.
#[derive(Clone, Copy)]
struct Ph {
    kind: u32,
    offset: u32,
    paddr: u32,
    filesz: u32,
    memsz: u32,
}

/// `PT_LOAD` of `filesz` bytes from `offset` at `paddr`, `memsz` in memory.
const fn load(offset: u32, paddr: u32, filesz: u32, memsz: u32) -> Ph {
    Ph {
        kind: 1,
        offset,
        paddr,
        filesz,
        memsz,
    }
}

/// A hand-made ELF32 image (System V ABI ELF header and program headers) of `len` bytes with a
/// multiboot header (`flags`) at 0x100.
struct Elf {
    data: u8,
    kind: u16,
    machine: u16,
    entry: u32,
    phdrs: Vec<Ph>,
    len: usize,
    flags: u32,
}

impl Elf {
    /// An ET_EXEC, EM_386, little-endian image: text at 1 MiB, data with bss after it.
    fn good() -> Self {
        Self {
            data: 1,
            kind: 2,
            machine: 3,
            entry: 0x10_0010,
            phdrs: vec![
                load(0x100, 0x10_0000, 0x200, 0x200),
                load(0x300, 0x10_1000, 0x100, 0x4000),
            ],
            len: 0x400,
            flags: 3,
        }
    }

    fn build(&self) -> Vec<u8> {
        let mut b = vec![0u8; self.len.max(52 + 32 * self.phdrs.len())];
        let be = self.data == 2;
        let mut put = |at: usize, bytes: &[u8]| b[at..at + bytes.len()].copy_from_slice(bytes);
        let u16b = |v: u16| if be { v.to_be_bytes() } else { v.to_le_bytes() };
        let u32b = |v: u32| if be { v.to_be_bytes() } else { v.to_le_bytes() };
        put(0, &[0x7f, b'E', b'L', b'F', 1, self.data, 1]);
        put(16, &u16b(self.kind));
        put(18, &u16b(self.machine));
        put(20, &u32b(1));
        put(24, &u32b(self.entry));
        put(28, &u32b(52));
        put(40, &u16b(52));
        put(42, &u16b(32));
        put(44, &u16b(u16::try_from(self.phdrs.len()).unwrap()));
        put(46, &u16b(40));
        for (i, ph) in self.phdrs.iter().enumerate() {
            let at = 52 + 32 * i;
            put(at, &u32b(ph.kind));
            put(at + 4, &u32b(ph.offset));
            put(at + 8, &u32b(ph.paddr));
            put(at + 12, &u32b(ph.paddr));
            put(at + 16, &u32b(ph.filesz));
            put(at + 20, &u32b(ph.memsz));
            put(at + 28, &u32b(0x1000));
        }
        if self.len >= 0x10c {
            put(0x100, &mb_header(self.flags, &[]));
        }
        b
    }
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap())
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap())
}

/// The NUL-terminated string at guest-physical `gpa` inside the information page.
fn string_at(area: &[u8], gpa: u32) -> String {
    let at = (u64::from(gpa) - mbload::INFO_AREA_GPA) as usize;
    let end = at + area[at..].iter().position(|b| *b == 0).unwrap();
    String::from_utf8(area[at..end].to_vec()).unwrap()
}

#[test]
fn the_real_guest_kernel_is_planned_from_its_program_headers() {
    let built = hvkit_e2e::mbkernel().unwrap();
    let image = std::fs::read(&built.elf).unwrap();
    let plan = plan(&image, RAM).unwrap();
    assert_eq!(
        plan.header.flags,
        HeaderFlags::PAGE_ALIGN | HeaderFlags::MEMORY_INFO
    );
    assert_eq!(plan.header.addresses, None);
    assert!(plan.header.offset < mbload::HEADER_SEARCH);
    // The header opens .text at 1 MiB; the entry point follows its 12 bytes.
    assert_eq!(plan.entry, 0x10_000c);
    let segments = plan.segments();
    assert_eq!(segments.len(), 2);
    assert_eq!(segments[0].paddr, 0x10_0000);
    assert_eq!(
        segments[0].bss(),
        segments[0].memory().end..segments[0].memory().end
    );
    // The data segment carries .bss and the stack: p_memsz > p_filesz.
    let bss = segments[1].bss();
    assert!(bss.end - bss.start >= 96 * 1024, "{bss:x?}");
    assert_eq!(
        &segments[0].bytes(&image)[..4],
        &0x1BAD_B002u32.to_le_bytes()
    );
    // Too little RAM for its data segment.
    assert!(matches!(
        mbload::plan(&image, 0x11_0000),
        Err(LoadError::OutsideRam { index: 1, .. })
    ));
}

#[test]
fn the_information_block_has_the_fields_of_section_3_3() {
    let built = hvkit_e2e::mbkernel().unwrap();
    let image = std::fs::read(&built.elf).unwrap();
    let plan = plan(&image, RAM).unwrap();
    let module = std::fs::read(&built.module).unwrap();
    let modules = [
        Module {
            bytes: &module,
            string: "module.txt",
        },
        Module {
            bytes: b"second",
            string: "two args",
        },
    ];
    let info = build_info(&plan, RAM, "mbkernel.elf hvkit-mbkernel-test", &modules).unwrap();
    let area = &info.area[..info.used];
    let block = (info.info_gpa - mbload::INFO_AREA_GPA) as usize;
    let field = |at: usize| u32_at(area, block + at);
    // flags: mem, cmdline, mods, mmap, boot_loader_name.
    assert_eq!(field(0), 1 | 4 | 8 | 0x40 | 0x200);
    assert_eq!((field(4), field(8)), (640, 3072));
    assert_eq!((info.mem_lower, info.mem_upper), (640, 3072));
    assert_eq!(
        string_at(area, field(16)),
        "mbkernel.elf hvkit-mbkernel-test"
    );
    assert_eq!(field(20), 2);
    let mods = (u64::from(field(24)) - mbload::INFO_AREA_GPA) as usize;
    let mut previous_end = plan.end();
    for (i, m) in modules.iter().enumerate() {
        let entry = mods + 16 * i;
        let (start, end) = (u32_at(area, entry), u32_at(area, entry + 4));
        assert_eq!(u64::from(start), info.module_gpas[i]);
        assert_eq!(start % 4096, 0, "module {i} page-aligned");
        assert!(
            u64::from(start) >= previous_end,
            "module {i} above what precedes it"
        );
        assert_eq!((end - start) as usize, m.bytes.len());
        assert_eq!(string_at(area, u32_at(area, entry + 8)), m.string);
        previous_end = u64::from(end);
    }
    // Two available ranges: 0..640 KiB and 1 MiB..4 MiB, records of size 20 (+4).
    assert_eq!(field(44), 48);
    let mmap = (u64::from(field(48)) - mbload::INFO_AREA_GPA) as usize;
    let records: Vec<_> = (0..2)
        .map(|i| {
            let r = mmap + 24 * i;
            (
                u32_at(area, r),
                u64_at(area, r + 4),
                u64_at(area, r + 12),
                u32_at(area, r + 20),
            )
        })
        .collect();
    assert_eq!(
        records,
        [(20, 0, 640 * 1024, 1), (20, 0x10_0000, RAM - 0x10_0000, 1)]
    );
    assert_eq!(string_at(area, field(64)), mbload::LOADER_NAME);
}

#[test]
fn a_hand_made_elf32_image_is_planned() {
    let image = Elf::good().build();
    let plan = plan(&image, RAM).unwrap();
    assert_eq!(plan.header.offset, 0x100);
    assert_eq!(plan.entry, 0x10_0010);
    let s = plan.segments();
    assert_eq!(
        (s[1].paddr, s[1].offset, s[1].file_size),
        (0x10_1000, 0x300, 0x100)
    );
    assert_eq!(s[1].bss(), 0x10_1100..0x10_5000);
    assert_eq!(plan.end(), 0x10_5000);
    // Non-PT_LOAD headers are skipped; indexes stay those of the program headers.
    let mut with_note = Elf::good();
    with_note.phdrs.insert(
        0,
        Ph {
            kind: 4,
            ..load(0, 0, 0, 0)
        },
    );
    let plan = mbload::plan(&with_note.build(), RAM).unwrap();
    assert_eq!(
        plan.segments().iter().map(|s| s.index).collect::<Vec<_>>(),
        [1, 2]
    );
}

#[test]
fn header_search_errors() {
    assert_eq!(find_header(&[0; 64]), Err(HeaderError::NotFound));
    // Beyond the first 8 KiB, or not 4-byte aligned: not found.
    let mut late = vec![0u8; 9000];
    late[8192..8204].copy_from_slice(&mb_header(3, &[]));
    assert_eq!(find_header(&late), Err(HeaderError::NotFound));
    // Its 12 bytes must all be inside: at 8180 it is, at 8184 it is not.
    let mut edge = vec![0u8; 9000];
    edge[8184..8196].copy_from_slice(&mb_header(3, &[]));
    assert_eq!(find_header(&edge), Err(HeaderError::NotFound));
    edge[8180..8192].copy_from_slice(&mb_header(3, &[]));
    assert_eq!(find_header(&edge).unwrap().offset, 8180);
    let mut unaligned = vec![0u8; 64];
    unaligned[2..14].copy_from_slice(&mb_header(3, &[]));
    assert_eq!(find_header(&unaligned), Err(HeaderError::NotFound));
    // A bad checksum is reported where the magic was.
    let mut bad = vec![0u8; 64];
    bad[8..20].copy_from_slice(&mb_header(3, &[]));
    bad[16] ^= 1;
    assert_eq!(
        find_header(&bad),
        Err(HeaderError::BadChecksum {
            offset: 8,
            sum: u32::MAX
        })
    );
    // ... unless a good header follows.
    bad[32..44].copy_from_slice(&mb_header(3, &[]));
    assert_eq!(find_header(&bad).unwrap().offset, 32);
}

#[test]
fn required_flags_the_loader_lacks_are_refused_optional_ones_ignored() {
    for (flags, unsupported) in [(3 | 4, 4), (1 << 5, 1 << 5), (1 << 15 | 1, 1 << 15)] {
        let mut image = vec![0u8; 16];
        image[..12].copy_from_slice(&mb_header(flags, &[]));
        assert_eq!(
            find_header(&image),
            Err(HeaderError::UnsupportedFlags {
                offset: 0,
                unsupported
            }),
            "flags {flags:#x}"
        );
    }
    let mut optional = Elf::good();
    optional.flags = 3 | 1 << 20;
    let plan = plan(&optional.build(), RAM).unwrap();
    assert_eq!(plan.header.flags.bits(), 3 | 1 << 20);
}

#[test]
fn the_aout_kludge_loads_by_the_address_fields() {
    // Header at file offset 0x40 = physical 0x10_0040: the image loads from offset 0.
    let mut image = vec![0x90u8; 0x300];
    let fields = [0x10_0040, 0x10_0000, 0x10_0200, 0x10_1000, 0x10_0080];
    image[0x40..0x60].copy_from_slice(&mb_header(1 << 16 | 3, &fields));
    let plan = plan(&image, RAM).unwrap();
    assert_eq!(plan.header.addresses.unwrap().entry_addr, 0x10_0080);
    assert_eq!(plan.entry, 0x10_0080);
    let s = plan.segments();
    assert_eq!(s.len(), 1);
    assert_eq!(
        (s[0].paddr, s[0].offset, s[0].file_size),
        (0x10_0000, 0, 0x200)
    );
    assert_eq!(s[0].bss(), 0x10_0200..0x10_1000);
    // load_end_addr 0: the rest of the file; bss_end_addr 0: no bss.
    let fields = [0x10_0040, 0x10_0000, 0, 0, 0x10_0080];
    image[0x40..0x60].copy_from_slice(&mb_header(1 << 16 | 3, &fields));
    let plan = mbload::plan(&image, RAM).unwrap();
    assert_eq!(
        (plan.segments()[0].file_size, plan.segments()[0].mem_size),
        (0x300, 0x300)
    );
}

#[test]
fn aout_kludge_errors() {
    let with = |fields: [u32; 5], len: usize| {
        let mut image = vec![0u8; len];
        image[0x40..0x60].copy_from_slice(&mb_header(1 << 16 | 3, &fields));
        image
    };
    // The image ends inside the address fields.
    let mut cut = vec![0u8; 0x50];
    cut[0x40..0x4c].copy_from_slice(&mb_header(1 << 16 | 3, &[]));
    assert_eq!(
        find_header(&cut),
        Err(HeaderError::Truncated { offset: 0x40 })
    );
    // header_addr below load_addr, or further from it than the header is from the file start.
    for fields in [
        [0x10_0000, 0x10_0040, 0, 0, 0x10_0080],
        [0x10_0080, 0x10_0000, 0, 0, 0x10_0080],
        [0x10_0040, 0x10_0000, 0x0f_0000, 0, 0x10_0080],
        [0x10_0040, 0x10_0000, 0x10_0200, 0x10_0100, 0x10_0080],
    ] {
        assert!(
            matches!(
                plan(&with(fields, 0x300), RAM),
                Err(LoadError::BadAddressFields { .. })
            ),
            "{fields:x?}"
        );
    }
    // More bytes asked for than the file has.
    assert_eq!(
        plan(
            &with([0x10_0040, 0x10_0000, 0x10_0400, 0, 0x10_0080], 0x300),
            RAM
        ),
        Err(LoadError::OutsideImage {
            index: 0,
            offset: 0,
            size: 0x400,
            image_len: 0x300
        })
    );
    // Beyond RAM, and an entry point outside the loaded range.
    assert!(matches!(
        plan(
            &with([0x3f_f040, 0x3f_f000, 0, 0x40_1000, 0x3f_f080], 0x300),
            RAM
        ),
        Err(LoadError::OutsideRam { .. })
    ));
    assert_eq!(
        plan(&with([0x10_0040, 0x10_0000, 0, 0, 0x20_0000], 0x300), RAM),
        Err(LoadError::EntryOutside { entry: 0x20_0000 })
    );
}

#[test]
fn elf_identification_errors() {
    // No ELF magic and no a.out kludge.
    let mut not_elf = Elf::good().build();
    not_elf[..4].copy_from_slice(b"\x7fXYZ");
    assert_eq!(
        plan(&not_elf, RAM),
        Err(LoadError::NotElf { magic: *b"\x7fXYZ" })
    );
    // A well-formed ELF64 header (no program headers).
    let mut elf64 = vec![0u8; 0x200];
    elf64[..7].copy_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1]);
    elf64[16..18].copy_from_slice(&2u16.to_le_bytes());
    elf64[18..20].copy_from_slice(&62u16.to_le_bytes());
    elf64[20..24].copy_from_slice(&1u32.to_le_bytes());
    elf64[52..54].copy_from_slice(&64u16.to_le_bytes());
    elf64[54..56].copy_from_slice(&56u16.to_le_bytes());
    elf64[58..60].copy_from_slice(&64u16.to_le_bytes());
    elf64[0x100..0x10c].copy_from_slice(&mb_header(3, &[]));
    assert_eq!(plan(&elf64, RAM), Err(LoadError::NotElf32 { class: 2 }));
    // An unknown class byte.
    let mut odd = Elf::good().build();
    odd[4] = 7;
    assert_eq!(plan(&odd, RAM), Err(LoadError::NotElf32 { class: 7 }));
    let mut big = Elf::good();
    big.data = 2;
    assert_eq!(
        plan(&big.build(), RAM),
        Err(LoadError::NotLittleEndian { data: 2 })
    );
    let mut x86_64 = Elf::good();
    x86_64.machine = 62;
    assert_eq!(
        plan(&x86_64.build(), RAM),
        Err(LoadError::WrongMachine { machine: 62 })
    );
    let mut dynamic = Elf::good();
    dynamic.kind = 3;
    assert_eq!(
        plan(&dynamic.build(), RAM),
        Err(LoadError::NotExecutable { kind: 3 })
    );
    // Program headers beyond the end of the file.
    let mut cut = Elf::good().build();
    cut[44..46].copy_from_slice(&40u16.to_le_bytes());
    assert!(matches!(
        plan(&cut, RAM),
        Err(LoadError::ElfTruncated { .. })
    ));
}

#[test]
fn segment_errors() {
    let with = |edit: &dyn Fn(&mut Elf)| {
        let mut elf = Elf::good();
        edit(&mut elf);
        plan(&elf.build(), RAM)
    };
    assert_eq!(
        with(&|e| e.phdrs.retain(|p| p.kind != 1)),
        Err(LoadError::NoLoadSegment)
    );
    assert_eq!(
        with(&|e| e.phdrs[1].filesz = 0x5000),
        Err(LoadError::FileLargerThanMemory {
            index: 1,
            file_size: 0x5000,
            mem_size: 0x4000
        })
    );
    assert_eq!(
        with(&|e| e.phdrs[1].offset = 0x380),
        Err(LoadError::OutsideImage {
            index: 1,
            offset: 0x380,
            size: 0x100,
            image_len: 0x400
        })
    );
    assert_eq!(
        with(&|e| e.phdrs[1].paddr = 0x3f_e000),
        Err(LoadError::OutsideRam {
            index: 1,
            paddr: 0x3f_e000,
            size: 0x4000,
            ram: RAM
        })
    );
    assert_eq!(
        with(&|e| e.phdrs[1].paddr = 0x10_0100),
        Err(LoadError::SegmentsOverlap {
            first: 0,
            second: 1
        })
    );
    assert_eq!(
        with(&|e| e.entry = 0x20_0000),
        Err(LoadError::EntryOutside { entry: 0x20_0000 })
    );
    assert_eq!(
        with(&|e| {
            e.phdrs = (0..=mbload::MAX_SEGMENTS as u32)
                .map(|i| load(0x100, 0x10_0000 + 0x1000 * i, 0x10, 0x10))
                .collect();
        }),
        Err(LoadError::TooManySegments)
    );
}

#[test]
fn information_block_errors() {
    let image = Elf::good().build();
    let good = plan(&image, RAM).unwrap();
    let module = Module {
        bytes: b"m",
        string: "m",
    };
    assert_eq!(
        build_info(&good, RAM, "", &[module; MAX_MODULES + 1]).unwrap_err(),
        InfoError::TooManyModules {
            count: MAX_MODULES + 1
        }
    );
    let long = "x".repeat(5000);
    assert!(matches!(
        build_info(&good, RAM, &long, &[]),
        Err(InfoError::StringsTooLong { .. })
    ));
    let big = vec![0u8; 3 << 20];
    assert!(matches!(
        build_info(
            &good,
            RAM,
            "",
            &[Module {
                bytes: &big,
                string: "big"
            }]
        ),
        Err(InfoError::ModulesOutsideRam { ram: RAM, .. })
    ));
    assert_eq!(
        build_info(&good, 1 << 20, "", &[]).unwrap_err(),
        InfoError::RamTooSmall { ram: 1 << 20 }
    );
    // A kernel loaded over the information page.
    let mut low = Elf::good();
    low.phdrs[0].paddr = 0x8f00;
    low.entry = 0x8f10;
    let low = plan(&low.build(), RAM).unwrap();
    assert_eq!(
        build_info(&low, RAM, "", &[]).unwrap_err(),
        InfoError::KernelOverInfo { index: 0 }
    );
}
