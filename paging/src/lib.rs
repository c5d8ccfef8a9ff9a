//! hvkit-paging: EPT, nested and guest page tables for x86-64 hypervisors, built and walked in
//! software, `no_std`, host-testable.
//!
//! Manuals followed: Intel® 64 and IA-32 Architectures Software Developer's Manual, Combined Volumes,
//! Order Number 325462-086US, December 2024 (Vol. 3A Chapter 4 "Paging", Vol. 3C Chapter 29 "VMX
//! Support for Address Translation"); AMD64 Architecture Programmer's Manual Volume 2: System
//! Programming, Publication No. 24593, Revision 3.42, March 2024 (Section 15.25 "Nested Paging").
//!
//! # Walkthrough
//! - [`addr`]: [`HostPhysAddr`], [`GuestPhysAddr`], [`GuestVirtAddr`] and [`PageSize`].
//! - [`memory`]: the `unsafe` traits [`FrameAllocator`] (zeroed 4 KiB frames) and [`TableMemory`]
//!   (frame → pointer), and [`PhysMemory`], through which the walker reads tables.
//! - [`format`]: entry formats behind [`PageTableFormat`]: [`Ept`], [`LongMode`] (4/5-level, also
//!   AMD nested paging), [`Pae`] and [`Legacy32`] (32-bit paging with PSE).
//! - [`table`]: [`PageTable`], the builder: map with the largest page sizes allowed, unmap and
//!   protect with splitting, merge, translate, iterate, free; every change returns a `#[must_use]`
//!   [`Flush`], and every error leaves the table as it was.
//! - [`eptp`]: [`Eptp`] and [`NestedCr3`], checked against [`EptCapabilities`].
//! - [`mtrr`]: effective memory types from the MTRRs, and EPT mapping that splits where types change.
//! - [`walk`]: the two-dimensional walker, guest-virtual → guest-physical → host-physical, with the
//!   architectural faults.
//! - `host` (feature `host`, always in this crate's tests; needs `std`): `HostArena`, a tracking allocator and
//!   table memory over a host allocation.
//!
//! # Example: an identity EPT, its EPTP, and a guest-virtual translation
//! On a real host the [`FrameAllocator`] and [`TableMemory`] come from the kernel (frames and a
//! direct map); here `HostArena` (feature `host`) plays both parts and also serves as the
//! [`PhysMemory`] the walker reads.
//! ```
//! # #[cfg(feature = "host")] {
//! use hvkit_paging::{
//!     Access, EptAttrs, EptCapabilities, EptTable, GuestPagingState, GuestPhysAddr, GuestTable,
//!     GuestVirtAddr, HostArena, HostPhysAddr, LongMode, MemoryType, Nested, PageSize, TableConfig,
//!     Walker, X86Attrs,
//! };
//! use x86_64::structures::paging::PageTableFlags as F;
//!
//! let arena = HostArena::new(64); // 64 frames posing as host memory at 1 GiB
//! // What IA32_VMX_EPT_VPID_CAP reported (hvkit-vmx converts its snapshot into this).
//! let caps = EptCapabilities { page_walk_4: true, write_back: true, accessed_dirty: true,
//!     pages_2m: true, pages_1g: true, ..EptCapabilities::default() };
//!
//! // Identity-map the first 4 GiB: four 1 GiB pages, two table frames.
//! let mut ept = EptTable::new(&arena, caps.table_config(4, 39).unwrap()).unwrap();
//! ept.map(GuestPhysAddr::ZERO, HostPhysAddr::ZERO, 4 << 30, EptAttrs::RWX_WB).unwrap().ignore();
//! assert_eq!(ept.table_frames(), 2);
//! let eptp = caps.eptp(ept.root(), 4, MemoryType::WRITE_BACK, true).unwrap();
//! assert_eq!(eptp.page_walk_length(), 4);
//!
//! // The guest's own 4-level table: GVA 0x40_0000 -> GPA 0x1234_5000.
//! let mut guest = GuestTable::<LongMode, _>::new(&arena, TableConfig::new(4)).unwrap();
//! let rw = X86Attrs::new(F::PRESENT | F::WRITABLE);
//! guest.map(GuestVirtAddr::new(0x40_0000), GuestPhysAddr::new_truncate(0x1234_5000), 0x1000, rw)
//!     .unwrap().ignore();
//!
//! // Walk both dimensions: guest tables (read through EPT), then the final GPA through EPT.
//! let walker = Walker::new(&arena, Nested::Ept { eptp, mode_based_execute: false });
//! let regs = GuestPagingState::long_mode(guest.root().as_u64());
//! let t = walker.translate(&regs, GuestVirtAddr::new(0x40_0abc), Access::write()).unwrap();
//! assert_eq!(t.host_phys, HostPhysAddr::new_truncate(0x1234_5abc));
//! assert_eq!(t.page_size, PageSize::Size4K);
//!
//! // A user-mode write to this supervisor page is a guest #PF (P | W | U).
//! assert!(walker.translate(&regs, GuestVirtAddr::new(0x40_0000), Access::write().as_user()).is_err());
//! guest.free_all();
//! ept.free_all();
//! # }
//! ```
#![cfg_attr(not(test), no_std)]

pub mod addr;
pub mod eptp;
pub mod flush;
pub mod format;
#[cfg(any(test, feature = "host"))]
pub mod host;
pub mod memory;
pub mod memtype;
pub mod mtrr;
mod raw;
pub mod table;
#[cfg(test)]
mod table_tests;
pub mod walk;
#[cfg(test)]
mod walk_tests;

pub use addr::{AddrError, Address, GuestPhysAddr, GuestVirtAddr, HostPhysAddr, PageSize};
pub use eptp::{EptCapabilities, Eptp, EptpError, NestedCr3, NptCapabilities};
pub use flush::{Flush, FlushKind};
pub use format::{
    Ept, EptAttrs, EptEntry, EptFlags, Legacy32, LongMode, Pae, PageTableFormat, X86Attrs, X86Entry,
};
#[cfg(any(test, feature = "host"))]
pub use host::HostArena;
pub use memory::{FrameAllocator, MemoryError, PhysMemory, TableMemory};
pub use memtype::MemoryType;
pub use mtrr::{Mtrrs, map_with_mtrrs};
pub use table::{EptTable, GuestTable, MapError, Mapping, NptTable, PageTable, TableConfig};
pub use walk::{
    Access, AccessKind, EptViolationQualification, GuestPagingState, Nested, NpfExitInfo1,
    PageFaultErrorCode, PagingMode, Translation, WalkFault, Walker,
};
