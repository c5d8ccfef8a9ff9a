//! Loading an unmodified multiboot v1 kernel into a guest, as a multiboot boot loader would:
//! finding and checking its multiboot header, planning where its ELF32 `PT_LOAD` segments (or,
//! with the a.out kludge, its header's address fields) put it in guest-physical memory, and
//! building the multiboot information block, its module list, memory map and strings.
//!
//! Reference: Multiboot Specification version 0.6.96, §3.1 "OS image format" (§3.1.1 "The
//! layout of Multiboot header", §3.1.2 "The magic fields of Multiboot header", §3.1.3 "The
//! address fields of Multiboot header"), §3.2 "Machine state", §3.3 "Boot information format";
//! ELF: System V ABI and its Intel386 supplement (`ELFCLASS32`, `ELFDATA2LSB`, `EM_386`,
//! `ET_EXEC`, `PT_LOAD`), read with the `elf` crate's zero-copy `ElfBytes` (no allocation).
//!
//! Plain `core` code with no `unsafe` and no hardware access: the host-side tests of the
//! `hvkit-e2e` crate (`tests/tests/mbload.rs`) compile this same file and feed it broken
//! images, one per error.

use core::mem::offset_of;
use core::ops::Range;

use bitflags::bitflags;
use elf::ElfBytes;
use elf::abi::{EM_386, ET_EXEC, PT_LOAD};
use elf::endian::AnyEndian;
use elf::file::Class;
use elf::parse::ParseError;

/// The header's `magic` field (§3.1.2).
pub const HEADER_MAGIC: u32 = 0x1BAD_B002;
/// What a multiboot loader leaves in EAX (§3.2 "Machine state").
pub const BOOTLOADER_MAGIC: u32 = 0x2BAD_B002;
/// The header (its three mandatory fields at least) must lie, 32-bit aligned, completely
/// within the first 8192 bytes of the image (§3.1.1).
pub const HEADER_SEARCH: usize = 8192;
/// Most `PT_LOAD` segments a plan holds.
pub const MAX_SEGMENTS: usize = 8;
/// Most modules handed to a guest kernel.
pub const MAX_MODULES: usize = 8;
/// Where the information block, its module list, memory map and strings go: one 4 KiB page
/// of conventional memory (below 640 KiB), [`INFO_AREA_GPA`] .. + [`INFO_AREA_SIZE`].
pub const INFO_AREA_GPA: u64 = 0x9000;
/// The size of that page.
pub const INFO_AREA_SIZE: usize = 4096;
/// Conventional memory reported as `mem_lower` (KiB) when the guest has at least that much.
pub const MEM_LOWER_KIB: u64 = 640;
/// The name left in `boot_loader_name`.
pub const LOADER_NAME: &str = "hvkit-baremetal";

bitflags! {
    /// The header's `flags` (§3.1.2). Bits 0-15 are requirements: a loader that does not
    /// understand one that is set must refuse the image; bits 16-31 are optional features.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct HeaderFlags: u32 {
        /// Bit 0: load modules on 4 KiB page boundaries.
        const PAGE_ALIGN = 1 << 0;
        /// Bit 1: the information block must carry `mem_lower`/`mem_upper` (and the memory
        /// map when the loader has one).
        const MEMORY_INFO = 1 << 1;
        /// Bit 2: the information block must carry the video mode table, and the header's
        /// graphics fields are valid.
        const VIDEO_MODE = 1 << 2;
        /// Bit 16: the header's address fields are valid (the "a.out kludge"): the image is
        /// loaded by them instead of by its ELF headers (§3.1.3).
        const AOUT_KLUDGE = 1 << 16;
        // Unknown bits are data to refuse (required) or ignore (optional), not dropped.
        const _ = !0;
    }
}

impl HeaderFlags {
    /// Bits 0-15, the requirements (§3.1.2).
    pub const REQUIRED: Self = Self::from_bits_retain(0xffff);
    /// The requirements this loader meets: page-aligned modules and memory information.
    pub const SUPPORTED: Self = Self::PAGE_ALIGN.union(Self::MEMORY_INFO);
}

/// The header's address fields (offsets 12-28), valid with [`HeaderFlags::AOUT_KLUDGE`]
/// (§3.1.3 "The address fields of Multiboot header").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressFields {
    /// The physical address of the header's `magic` field.
    pub header_addr: u32,
    /// The physical address of the start of the text segment: the image's bytes from
    /// `header offset - (header_addr - load_addr)` on are loaded here.
    pub load_addr: u32,
    /// The physical address of the end of the data segment; 0: the rest of the file.
    pub load_end_addr: u32,
    /// The physical address of the end of the bss, zeroed by the loader; 0: no bss.
    pub bss_end_addr: u32,
    /// Where the loader jumps.
    pub entry_addr: u32,
}

/// A multiboot header found in an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Its offset in the image (4-byte aligned, below [`HEADER_SEARCH`]).
    pub offset: usize,
    /// Its flags.
    pub flags: HeaderFlags,
    /// Its address fields, when [`HeaderFlags::AOUT_KLUDGE`] is set.
    pub addresses: Option<AddressFields>,
}

/// Why an image has no usable multiboot header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeaderError {
    /// No 4-byte aligned magic in the first 8 KiB.
    #[error("no multiboot header (magic 0x1BADB002, 4-byte aligned) in the first 8 KiB")]
    NotFound,
    /// The magic is there, but magic + flags + checksum is not 0 (mod 2^32) at any place.
    #[error(
        "the multiboot header at offset {offset:#x} has a bad checksum: magic + flags + \
         checksum = {sum:#x}, not 0"
    )]
    BadChecksum {
        /// The first place the magic was found.
        offset: usize,
        /// magic + flags + checksum there.
        sum: u32,
    },
    /// A requirement (bits 0-15) this loader does not meet.
    #[error(
        "the multiboot header at offset {offset:#x} requires flags {unsupported:#x} that this \
         loader does not support (it meets bits 0 and 1: page-aligned modules, memory information)"
    )]
    UnsupportedFlags {
        /// The header's offset.
        offset: usize,
        /// The required bits not supported.
        unsupported: u32,
    },
    /// The a.out kludge is set but the image ends inside the address fields.
    #[error(
        "the multiboot header at offset {offset:#x} sets the a.out kludge (flag 16) but the image ends before its address fields"
    )]
    Truncated {
        /// The header's offset.
        offset: usize,
    },
}

/// Why an image cannot be loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The multiboot header is missing or refused.
    #[error(transparent)]
    Header(#[from] HeaderError),
    /// Not an ELF file (and no a.out kludge to load it by).
    #[error("not an ELF file: magic {magic:02x?} (and no a.out kludge in the multiboot header)")]
    NotElf {
        /// The first four bytes.
        magic: [u8; 4],
    },
    /// Not `ELFCLASS32`.
    #[error("ELF class {class} is not ELFCLASS32 (1): a multiboot v1 kernel is a 32-bit image")]
    NotElf32 {
        /// `e_ident[EI_CLASS]`.
        class: u8,
    },
    /// Not `ELFDATA2LSB`.
    #[error("ELF data encoding {data} is not ELFDATA2LSB (1): i386 images are little-endian")]
    NotLittleEndian {
        /// `e_ident[EI_DATA]`.
        data: u8,
    },
    /// Not `EM_386`.
    #[error("ELF machine {machine} is not EM_386 (3)")]
    WrongMachine {
        /// `e_machine`.
        machine: u16,
    },
    /// Not `ET_EXEC`.
    #[error("ELF type {kind} is not ET_EXEC (2): a multiboot kernel is loaded at fixed addresses")]
    NotExecutable {
        /// `e_type`.
        kind: u16,
    },
    /// The ELF headers point outside the file.
    #[error("the ELF headers reach bytes {start:#x}..{end:#x}, beyond the end of the image")]
    ElfTruncated {
        /// First byte asked for.
        start: usize,
        /// End of the range asked for.
        end: usize,
    },
    /// The ELF headers are malformed in another way.
    #[error("malformed ELF headers: {what}")]
    MalformedElf {
        /// What the `elf` crate found wrong.
        what: &'static str,
    },
    /// No `PT_LOAD` segment.
    #[error("the ELF image has no PT_LOAD segment")]
    NoLoadSegment,
    /// More than [`MAX_SEGMENTS`] `PT_LOAD` segments.
    #[error("the ELF image has more than {MAX_SEGMENTS} PT_LOAD segments")]
    TooManySegments,
    /// `p_filesz` > `p_memsz`.
    #[error("segment {index}: p_filesz {file_size:#x} is larger than p_memsz {mem_size:#x}")]
    FileLargerThanMemory {
        /// The segment's index among the program headers.
        index: usize,
        /// `p_filesz`.
        file_size: u64,
        /// `p_memsz`.
        mem_size: u64,
    },
    /// A segment's file bytes lie beyond the image.
    #[error(
        "segment {index}: file bytes {offset:#x} + {size:#x} lie beyond the image's {image_len:#x} bytes"
    )]
    OutsideImage {
        /// The segment's index (0 for the a.out kludge's one segment).
        index: usize,
        /// File offset.
        offset: u64,
        /// File size.
        size: u64,
        /// The image's length.
        image_len: usize,
    },
    /// A segment does not fit in guest RAM.
    #[error("segment {index}: {paddr:#x} + {size:#x} does not fit in guest RAM (0..{ram:#x})")]
    OutsideRam {
        /// The segment's index.
        index: usize,
        /// Its guest-physical address (`p_paddr`, or `load_addr`).
        paddr: u64,
        /// Its size in memory.
        size: u64,
        /// The guest's RAM size.
        ram: u64,
    },
    /// Two segments overlap in memory.
    #[error("segments {first} and {second} overlap in guest memory")]
    SegmentsOverlap {
        /// The earlier segment's index.
        first: usize,
        /// The later one's.
        second: usize,
    },
    /// The entry point is not inside a loaded segment.
    #[error("the entry point {entry:#x} is in no loaded segment")]
    EntryOutside {
        /// `e_entry` or `entry_addr`.
        entry: u64,
    },
    /// The a.out kludge's address fields contradict each other or the header's place.
    #[error("a.out kludge address fields {fields:x?}: {problem}")]
    BadAddressFields {
        /// The fields.
        fields: AddressFields,
        /// What is wrong.
        problem: &'static str,
    },
}

/// One piece of the image to copy into guest memory: `image[offset .. offset + file_size]` at
/// `paddr`, then zeros up to `paddr + mem_size` (the bss).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Segment {
    /// The index of its program header (0 for the a.out kludge).
    pub index: usize,
    /// Its guest-physical address.
    pub paddr: u64,
    /// Where its bytes start in the image.
    pub offset: usize,
    /// How many bytes come from the image.
    pub file_size: usize,
    /// How many bytes it takes in memory (the rest is zeroed).
    pub mem_size: u64,
}

impl Segment {
    /// Its bytes in `image` (empty if `image` is not the one it was planned from).
    #[must_use]
    pub fn bytes<'a>(&self, image: &'a [u8]) -> &'a [u8] {
        image
            .get(self.offset..self.offset.saturating_add(self.file_size))
            .unwrap_or(&[])
    }

    /// Its guest-physical range in memory.
    #[must_use]
    pub fn memory(&self) -> Range<u64> {
        self.paddr..self.paddr.saturating_add(self.mem_size)
    }

    /// The part of it that is zeroed: `paddr + file_size .. paddr + mem_size`.
    #[must_use]
    pub fn bss(&self) -> Range<u64> {
        self.paddr.saturating_add(self.file_size as u64)..self.memory().end
    }
}

/// Where an image goes: its header, entry point and segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadPlan {
    /// The multiboot header.
    pub header: Header,
    /// Where the guest starts (EIP).
    pub entry: u32,
    segments: [Segment; MAX_SEGMENTS],
    len: usize,
}

impl LoadPlan {
    /// The segments, in program-header order.
    #[must_use]
    pub fn segments(&self) -> &[Segment] {
        &self.segments[..self.len]
    }

    /// The end of the highest segment in memory.
    #[must_use]
    pub fn end(&self) -> u64 {
        self.segments()
            .iter()
            .map(|s| s.memory().end)
            .max()
            .unwrap_or(0)
    }

    fn push(&mut self, segment: Segment) -> Result<(), LoadError> {
        let slot = self
            .segments
            .get_mut(self.len)
            .ok_or(LoadError::TooManySegments)?;
        *slot = segment;
        self.len += 1;
        Ok(())
    }
}

fn read_u32(image: &[u8], offset: usize) -> Option<u32> {
    let bytes = image.get(offset..offset.checked_add(4)?)?;
    Some(u32::from_le_bytes(bytes.try_into().ok()?))
}

/// Finds the multiboot header: the first 4-byte aligned place whose magic, flags and checksum
/// lie in the first 8 KiB and add up to 0 (§3.1.1, §3.1.2), and checks
/// that this loader meets the required flags.
///
/// # Errors
/// [`HeaderError`]: no magic, a bad checksum, a requirement not supported, address fields cut
/// off by the end of the image.
pub fn find_header(image: &[u8]) -> Result<Header, HeaderError> {
    let mut first_bad = None;
    for offset in (0..=HEADER_SEARCH - 12).step_by(4) {
        let Some(magic) = read_u32(image, offset) else {
            break;
        };
        if magic != HEADER_MAGIC {
            continue;
        }
        let (Some(flags), Some(checksum)) =
            (read_u32(image, offset + 4), read_u32(image, offset + 8))
        else {
            break;
        };
        let sum = magic.wrapping_add(flags).wrapping_add(checksum);
        if sum != 0 {
            first_bad.get_or_insert(HeaderError::BadChecksum { offset, sum });
            continue;
        }
        let flags = HeaderFlags::from_bits_retain(flags);
        let unsupported = flags
            .intersection(HeaderFlags::REQUIRED)
            .difference(HeaderFlags::SUPPORTED);
        if !unsupported.is_empty() {
            return Err(HeaderError::UnsupportedFlags {
                offset,
                unsupported: unsupported.bits(),
            });
        }
        let addresses = if flags.contains(HeaderFlags::AOUT_KLUDGE) {
            let field = |i: usize| read_u32(image, offset + 12 + 4 * i);
            let (Some(header_addr), Some(load_addr), Some(load_end_addr), Some(bss_end_addr)) =
                (field(0), field(1), field(2), field(3))
            else {
                return Err(HeaderError::Truncated { offset });
            };
            let entry_addr = field(4).ok_or(HeaderError::Truncated { offset })?;
            Some(AddressFields {
                header_addr,
                load_addr,
                load_end_addr,
                bss_end_addr,
                entry_addr,
            })
        } else {
            None
        };
        return Ok(Header {
            offset,
            flags,
            addresses,
        });
    }
    Err(first_bad.unwrap_or(HeaderError::NotFound))
}

/// What the `elf` crate's parse error means for a loader.
fn elf_error(e: &ParseError) -> LoadError {
    match *e {
        ParseError::BadMagic(magic) => LoadError::NotElf { magic },
        ParseError::UnsupportedElfClass(class) => LoadError::NotElf32 { class },
        ParseError::UnsupportedElfEndianness(data) => LoadError::NotLittleEndian { data },
        ParseError::SliceReadError((start, end)) => LoadError::ElfTruncated { start, end },
        ParseError::UnsupportedVersion(_) => LoadError::MalformedElf {
            what: "unsupported ELF version",
        },
        ParseError::BadEntsize(_) => LoadError::MalformedElf {
            what: "unexpected header entry size",
        },
        ParseError::BadOffset(_) => LoadError::MalformedElf {
            what: "an offset out of bounds",
        },
        ParseError::IntegerOverflow => LoadError::MalformedElf {
            what: "an integer overflow in the header fields",
        },
        _ => LoadError::MalformedElf {
            what: "unreadable headers",
        },
    }
}

/// Plans how `image` is loaded into a guest with `ram` bytes of RAM at guest-physical 0: by
/// the header's address fields when the a.out kludge is set (§3.1.3), else by its ELF32
/// `PT_LOAD` program headers at `p_paddr`.
///
/// # Errors
/// [`LoadError`]: the header's, the ELF checks (class 32, little-endian, `EM_386`, `ET_EXEC`),
/// a segment with `p_filesz > p_memsz`, outside the image or outside RAM, overlapping
/// segments, an entry point outside them, inconsistent address fields.
pub fn plan(image: &[u8], ram: u64) -> Result<LoadPlan, LoadError> {
    let header = find_header(image)?;
    let mut plan = LoadPlan {
        header,
        entry: 0,
        segments: [Segment::default(); MAX_SEGMENTS],
        len: 0,
    };
    match header.addresses {
        Some(fields) => plan_kludge(&mut plan, image, fields)?,
        None => plan_elf(&mut plan, image)?,
    }
    for (i, s) in plan.segments().iter().enumerate() {
        if s.paddr.checked_add(s.mem_size).is_none_or(|end| end > ram) {
            return Err(LoadError::OutsideRam {
                index: s.index,
                paddr: s.paddr,
                size: s.mem_size,
                ram,
            });
        }
        for later in &plan.segments()[i + 1..] {
            let (a, b) = (s.memory(), later.memory());
            if a.start < b.end && b.start < a.end {
                return Err(LoadError::SegmentsOverlap {
                    first: s.index,
                    second: later.index,
                });
            }
        }
    }
    let entry = u64::from(plan.entry);
    if !plan.segments().iter().any(|s| s.memory().contains(&entry)) {
        return Err(LoadError::EntryOutside { entry });
    }
    Ok(plan)
}

fn plan_elf(plan: &mut LoadPlan, image: &[u8]) -> Result<(), LoadError> {
    let file = ElfBytes::<AnyEndian>::minimal_parse(image).map_err(|e| elf_error(&e))?;
    let ehdr = file.ehdr;
    if ehdr.class != Class::ELF32 {
        return Err(LoadError::NotElf32 { class: 2 });
    }
    if ehdr.endianness != AnyEndian::Little {
        return Err(LoadError::NotLittleEndian { data: 2 });
    }
    if ehdr.e_machine != EM_386 {
        return Err(LoadError::WrongMachine {
            machine: ehdr.e_machine,
        });
    }
    if ehdr.e_type != ET_EXEC {
        return Err(LoadError::NotExecutable { kind: ehdr.e_type });
    }
    let headers = file.segments().ok_or(LoadError::NoLoadSegment)?;
    for (index, ph) in headers.iter().enumerate() {
        if ph.p_type != PT_LOAD {
            continue;
        }
        if ph.p_filesz > ph.p_memsz {
            return Err(LoadError::FileLargerThanMemory {
                index,
                file_size: ph.p_filesz,
                mem_size: ph.p_memsz,
            });
        }
        let outside = LoadError::OutsideImage {
            index,
            offset: ph.p_offset,
            size: ph.p_filesz,
            image_len: image.len(),
        };
        let (Ok(offset), Ok(file_size)) =
            (usize::try_from(ph.p_offset), usize::try_from(ph.p_filesz))
        else {
            return Err(outside);
        };
        if offset
            .checked_add(file_size)
            .is_none_or(|end| end > image.len())
        {
            return Err(outside);
        }
        plan.push(Segment {
            index,
            paddr: ph.p_paddr,
            offset,
            file_size,
            mem_size: ph.p_memsz,
        })?;
    }
    if plan.len == 0 {
        return Err(LoadError::NoLoadSegment);
    }
    // ELF32: e_entry is a 32-bit field, widened by the parser.
    plan.entry = u32::try_from(ehdr.e_entry).map_err(|_| LoadError::EntryOutside {
        entry: ehdr.e_entry,
    })?;
    Ok(())
}

fn plan_kludge(plan: &mut LoadPlan, image: &[u8], fields: AddressFields) -> Result<(), LoadError> {
    let bad = |problem| LoadError::BadAddressFields { fields, problem };
    let header = plan.header.offset as u64;
    let (load, header_addr) = (u64::from(fields.load_addr), u64::from(fields.header_addr));
    if header_addr < load || header_addr - load > header {
        return Err(bad(
            "header_addr - load_addr must lie between 0 and the header's offset in the image",
        ));
    }
    let offset = header - (header_addr - load);
    let file_size = match fields.load_end_addr {
        0 => (image.len() as u64).saturating_sub(offset),
        end if u64::from(end) < load => return Err(bad("load_end_addr is below load_addr")),
        end => u64::from(end) - load,
    };
    let mem_size = match fields.bss_end_addr {
        0 => file_size,
        end if u64::from(end) < load + file_size => {
            return Err(bad("bss_end_addr is below the end of the loaded bytes"));
        }
        end => u64::from(end) - load,
    };
    if offset + file_size > image.len() as u64 {
        return Err(LoadError::OutsideImage {
            index: 0,
            offset,
            size: file_size,
            image_len: image.len(),
        });
    }
    plan.push(Segment {
        index: 0,
        paddr: load,
        // Both fit in the image's length, a usize.
        offset: offset as usize,
        file_size: file_size as usize,
        mem_size,
    })?;
    plan.entry = fields.entry_addr;
    Ok(())
}

bitflags! {
    /// The information block's `flags`: which of its fields are valid (§3.3).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct InfoFlags: u32 {
        /// Bit 0: `mem_lower` and `mem_upper`.
        const MEMORY = 1 << 0;
        /// Bit 1: `boot_device`.
        const BOOT_DEVICE = 1 << 1;
        /// Bit 2: `cmdline`.
        const CMDLINE = 1 << 2;
        /// Bit 3: `mods_count` and `mods_addr`.
        const MODS = 1 << 3;
        /// Bit 6: `mmap_length` and `mmap_addr`.
        const MMAP = 1 << 6;
        /// Bit 9: `boot_loader_name`.
        const LOADER_NAME = 1 << 9;
    }
}

/// The multiboot information block (§3.3 "Boot information format"), as laid out in guest
/// memory; [`build_info`] writes its fields at these offsets.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct MultibootInfo {
    /// [`InfoFlags`].
    pub flags: u32,
    /// KiB of memory from 0 (at most 640).
    pub mem_lower: u32,
    /// KiB of memory from 1 MiB up to the first hole.
    pub mem_upper: u32,
    /// BIOS boot device.
    pub boot_device: u32,
    /// Physical address of the command line (NUL-terminated).
    pub cmdline: u32,
    /// Number of modules.
    pub mods_count: u32,
    /// Physical address of the first [`ModuleEntry`].
    pub mods_addr: u32,
    /// a.out or ELF symbol information.
    pub syms: [u32; 4],
    /// Bytes of memory map.
    pub mmap_length: u32,
    /// Physical address of the memory map ([`MmapEntry`] records).
    pub mmap_addr: u32,
    /// Bytes of drive structures.
    pub drives_length: u32,
    /// Physical address of the drive structures.
    pub drives_addr: u32,
    /// Physical address of the BIOS configuration table.
    pub config_table: u32,
    /// Physical address of the loader's name (NUL-terminated).
    pub boot_loader_name: u32,
    /// Physical address of the APM table.
    pub apm_table: u32,
    /// VBE control information.
    pub vbe_control_info: u32,
    /// VBE mode information.
    pub vbe_mode_info: u32,
    /// VBE mode.
    pub vbe_mode: u16,
    /// VBE protected-mode interface segment.
    pub vbe_interface_seg: u16,
    /// VBE protected-mode interface offset.
    pub vbe_interface_off: u16,
    /// VBE protected-mode interface length.
    pub vbe_interface_len: u16,
    /// Framebuffer physical address.
    pub framebuffer_addr: u64,
    /// Framebuffer pitch.
    pub framebuffer_pitch: u32,
    /// Framebuffer width.
    pub framebuffer_width: u32,
    /// Framebuffer height.
    pub framebuffer_height: u32,
    /// Framebuffer bits per pixel.
    pub framebuffer_bpp: u8,
    /// Framebuffer type.
    pub framebuffer_type: u8,
    /// Palette or colour-field description.
    pub color_info: [u8; 6],
}

/// The offsets §3.3 gives.
const _: () = {
    assert!(offset_of!(MultibootInfo, flags) == 0);
    assert!(offset_of!(MultibootInfo, mem_lower) == 4);
    assert!(offset_of!(MultibootInfo, mem_upper) == 8);
    assert!(offset_of!(MultibootInfo, boot_device) == 12);
    assert!(offset_of!(MultibootInfo, cmdline) == 16);
    assert!(offset_of!(MultibootInfo, mods_count) == 20);
    assert!(offset_of!(MultibootInfo, mods_addr) == 24);
    assert!(offset_of!(MultibootInfo, syms) == 28);
    assert!(offset_of!(MultibootInfo, mmap_length) == 44);
    assert!(offset_of!(MultibootInfo, mmap_addr) == 48);
    assert!(offset_of!(MultibootInfo, drives_length) == 52);
    assert!(offset_of!(MultibootInfo, drives_addr) == 56);
    assert!(offset_of!(MultibootInfo, config_table) == 60);
    assert!(offset_of!(MultibootInfo, boot_loader_name) == 64);
    assert!(offset_of!(MultibootInfo, apm_table) == 68);
    assert!(offset_of!(MultibootInfo, vbe_control_info) == 72);
    assert!(offset_of!(MultibootInfo, vbe_mode_info) == 76);
    assert!(offset_of!(MultibootInfo, vbe_mode) == 80);
    assert!(offset_of!(MultibootInfo, vbe_interface_seg) == 82);
    assert!(offset_of!(MultibootInfo, vbe_interface_off) == 84);
    assert!(offset_of!(MultibootInfo, vbe_interface_len) == 86);
    assert!(offset_of!(MultibootInfo, framebuffer_addr) == 88);
    assert!(offset_of!(MultibootInfo, framebuffer_pitch) == 96);
    assert!(offset_of!(MultibootInfo, framebuffer_width) == 100);
    assert!(offset_of!(MultibootInfo, framebuffer_height) == 104);
    assert!(offset_of!(MultibootInfo, framebuffer_bpp) == 108);
    assert!(offset_of!(MultibootInfo, framebuffer_type) == 109);
    assert!(offset_of!(MultibootInfo, color_info) == 110);
};

/// The bytes of the information block the spec defines (up to the end of `color_info`).
pub const INFO_SIZE: usize = 116;

/// One entry of the module list (§3.3: `mods_addr`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ModuleEntry {
    /// First byte of the module.
    pub mod_start: u32,
    /// One past its last byte.
    pub mod_end: u32,
    /// Physical address of its string (NUL-terminated).
    pub string: u32,
    /// Zero.
    pub reserved: u32,
}

const _: () = {
    assert!(offset_of!(ModuleEntry, mod_start) == 0);
    assert!(offset_of!(ModuleEntry, mod_end) == 4);
    assert!(offset_of!(ModuleEntry, string) == 8);
    assert!(offset_of!(ModuleEntry, reserved) == 12);
    assert!(size_of::<ModuleEntry>() == 16);
};

/// One record of the memory map (§3.3: `mmap_addr`); `size` (the bytes after it, 20) comes
/// first, so `base_addr` is at offset 4 of the record.
#[repr(C, packed)]
#[derive(Debug, Clone, Copy, Default)]
pub struct MmapEntry {
    /// Bytes of the record after this field.
    pub size: u32,
    /// First byte of the range.
    pub base_addr: u64,
    /// Bytes in the range.
    pub length: u64,
    /// 1 = available RAM, anything else reserved.
    pub kind: u32,
}

const _: () = {
    assert!(offset_of!(MmapEntry, size) == 0);
    assert!(offset_of!(MmapEntry, base_addr) == 4);
    assert!(offset_of!(MmapEntry, length) == 12);
    assert!(offset_of!(MmapEntry, kind) == 20);
    assert!(size_of::<MmapEntry>() == 24);
};

/// A module handed to the guest kernel: its bytes and its string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Module<'a> {
    /// The module's bytes.
    pub bytes: &'a [u8],
    /// Its string (by convention its file name, then arguments).
    pub string: &'a str,
}

/// Why the information block cannot be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InfoError {
    /// More than [`MAX_MODULES`] modules.
    #[error("{count} modules, at most {MAX_MODULES}")]
    TooManyModules {
        /// How many were given.
        count: usize,
    },
    /// The block, module list, memory map and strings do not fit in their page.
    #[error("the information block and its strings need {needed} bytes, {INFO_AREA_SIZE} fit")]
    StringsTooLong {
        /// Bytes needed.
        needed: usize,
    },
    /// The kernel loads over the information page.
    #[error("the kernel's segment {index} overlaps the information page at {INFO_AREA_GPA:#x}")]
    KernelOverInfo {
        /// The segment's index.
        index: usize,
    },
    /// The modules do not fit in guest RAM above the kernel.
    #[error("the modules would end at {end:#x}, beyond guest RAM (0..{ram:#x})")]
    ModulesOutsideRam {
        /// Where the last one would end.
        end: u64,
        /// The guest's RAM size.
        ram: u64,
    },
    /// Guest RAM does not reach past 1 MiB.
    #[error("guest RAM of {ram:#x} bytes does not reach past 1 MiB")]
    RamTooSmall {
        /// The guest's RAM size.
        ram: u64,
    },
}

/// The information page and where everything goes: write [`BootInfo::area`] at
/// [`INFO_AREA_GPA`], each module's bytes at its [`BootInfo::module_gpas`] entry, and start the
/// guest with EBX = [`BootInfo::info_gpa`].
#[derive(Debug, Clone)]
pub struct BootInfo {
    /// The page's bytes: the information block, module list, memory map, strings.
    pub area: [u8; INFO_AREA_SIZE],
    /// How many bytes of `area` are used.
    pub used: usize,
    /// The information block's guest-physical address (EBX).
    pub info_gpa: u64,
    /// Where each module goes (page-aligned, above the kernel).
    pub module_gpas: [u64; MAX_MODULES],
    /// `mem_lower` reported (KiB).
    pub mem_lower: u32,
    /// `mem_upper` reported (KiB).
    pub mem_upper: u32,
}

/// A bump writer over the information page.
struct Area {
    bytes: [u8; INFO_AREA_SIZE],
    used: usize,
    needed: usize,
}

impl Area {
    /// Reserves `len` bytes aligned to `align`; returns their offset.
    fn reserve(&mut self, len: usize, align: usize) -> usize {
        let at = self.needed.next_multiple_of(align);
        self.needed = at + len;
        if self.needed <= INFO_AREA_SIZE {
            self.used = self.needed;
        }
        at
    }

    fn put(&mut self, at: usize, bytes: &[u8]) {
        if let Some(dst) = self.bytes.get_mut(at..at + bytes.len()) {
            dst.copy_from_slice(bytes);
        }
    }

    fn put_u32(&mut self, at: usize, value: u32) {
        self.put(at, &value.to_le_bytes());
    }

    fn put_u64(&mut self, at: usize, value: u64) {
        self.put(at, &value.to_le_bytes());
    }

    /// Adds a NUL-terminated string; returns its guest-physical address.
    fn string(&mut self, s: &str) -> u32 {
        let at = self.reserve(s.len() + 1, 1);
        self.put(at, s.as_bytes());
        self.put(at + s.len(), &[0]);
        gpa32(at)
    }
}

/// The guest-physical address of an offset in the information page (below 640 KiB).
fn gpa32(offset: usize) -> u32 {
    // INFO_AREA_GPA + INFO_AREA_SIZE is far below 4 GiB.
    (INFO_AREA_GPA as usize + offset) as u32
}

/// Builds the information block for the kernel `plan` describes, in a guest with `ram` bytes
/// of RAM at 0: `mem_lower`/`mem_upper` and a two-range memory map from `ram`, the command
/// line, `modules` placed page-aligned above the kernel (always: it meets
/// [`HeaderFlags::PAGE_ALIGN`] whether asked or not) with their strings, and the loader's name.
///
/// # Errors
/// [`InfoError`]: too many modules, strings that overflow the page, a kernel loaded over the
/// page, modules beyond RAM, RAM that ends below 1 MiB.
pub fn build_info(
    plan: &LoadPlan,
    ram: u64,
    cmdline: &str,
    modules: &[Module<'_>],
) -> Result<BootInfo, InfoError> {
    if modules.len() > MAX_MODULES {
        return Err(InfoError::TooManyModules {
            count: modules.len(),
        });
    }
    if ram <= 1 << 20 {
        return Err(InfoError::RamTooSmall { ram });
    }
    let page = INFO_AREA_GPA..INFO_AREA_GPA + INFO_AREA_SIZE as u64;
    if let Some(s) = plan
        .segments()
        .iter()
        .find(|s| s.paddr < page.end && page.start < s.memory().end)
    {
        return Err(InfoError::KernelOverInfo { index: s.index });
    }
    // Modules: page-aligned, from the end of the kernel (at least 1 MiB) up.
    let mut module_gpas = [0u64; MAX_MODULES];
    let mut next = plan.end().max(1 << 20).next_multiple_of(4096);
    for (gpa, module) in module_gpas.iter_mut().zip(modules) {
        *gpa = next;
        let end = next + module.bytes.len() as u64;
        if end > ram {
            return Err(InfoError::ModulesOutsideRam { end, ram });
        }
        next = end.next_multiple_of(4096);
    }
    let mem_lower = (ram / 1024).min(MEM_LOWER_KIB) as u32;
    let mem_upper = u32::try_from((ram - (1 << 20)) / 1024).unwrap_or(u32::MAX);
    let mut area = Area {
        bytes: [0; INFO_AREA_SIZE],
        used: 0,
        needed: 0,
    };
    let info = area.reserve(INFO_SIZE, 8);
    let mods = area.reserve(size_of::<ModuleEntry>() * modules.len(), 4);
    let mmap = area.reserve(2 * size_of::<MmapEntry>(), 4);
    let field = |f: usize| info + f;
    area.put_u32(
        field(offset_of!(MultibootInfo, flags)),
        (InfoFlags::MEMORY | InfoFlags::CMDLINE | InfoFlags::MODS)
            .union(InfoFlags::MMAP | InfoFlags::LOADER_NAME)
            .bits(),
    );
    area.put_u32(field(offset_of!(MultibootInfo, mem_lower)), mem_lower);
    area.put_u32(field(offset_of!(MultibootInfo, mem_upper)), mem_upper);
    let line = area.string(cmdline);
    area.put_u32(field(offset_of!(MultibootInfo, cmdline)), line);
    area.put_u32(
        field(offset_of!(MultibootInfo, mods_count)),
        modules.len() as u32,
    );
    area.put_u32(field(offset_of!(MultibootInfo, mods_addr)), gpa32(mods));
    for (i, (module, gpa)) in modules.iter().zip(module_gpas).enumerate() {
        let entry = mods + i * size_of::<ModuleEntry>();
        let string = area.string(module.string);
        // Module addresses are below `ram`, which the caller keeps below 4 GiB.
        let end = gpa + module.bytes.len() as u64;
        area.put_u32(entry + offset_of!(ModuleEntry, mod_start), gpa as u32);
        area.put_u32(entry + offset_of!(ModuleEntry, mod_end), end as u32);
        area.put_u32(entry + offset_of!(ModuleEntry, string), string);
    }
    // Available RAM: conventional memory up to `mem_lower`, and 1 MiB to the end of RAM.
    let ranges = [(0, u64::from(mem_lower) * 1024), (1 << 20, ram - (1 << 20))];
    for (i, (base, length)) in ranges.into_iter().enumerate() {
        let record = mmap + i * size_of::<MmapEntry>();
        area.put_u32(
            record + offset_of!(MmapEntry, size),
            (size_of::<MmapEntry>() - 4) as u32,
        );
        area.put_u64(record + offset_of!(MmapEntry, base_addr), base);
        area.put_u64(record + offset_of!(MmapEntry, length), length);
        area.put_u32(record + offset_of!(MmapEntry, kind), 1);
    }
    area.put_u32(
        field(offset_of!(MultibootInfo, mmap_length)),
        (2 * size_of::<MmapEntry>()) as u32,
    );
    area.put_u32(field(offset_of!(MultibootInfo, mmap_addr)), gpa32(mmap));
    let name = area.string(LOADER_NAME);
    area.put_u32(field(offset_of!(MultibootInfo, boot_loader_name)), name);
    if area.needed > INFO_AREA_SIZE {
        return Err(InfoError::StringsTooLong {
            needed: area.needed,
        });
    }
    Ok(BootInfo {
        area: area.bytes,
        used: area.used,
        info_gpa: u64::from(gpa32(info)),
        module_gpas,
        mem_lower,
        mem_upper,
    })
}
