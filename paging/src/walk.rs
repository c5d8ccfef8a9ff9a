//! The two-dimensional walker: guest-virtual → guest-physical → host-physical.
//!
//! Manual: Intel® 64 and IA-32 Architectures Software Developer's Manual, Combined Volumes, Order
//! Number 325462-086US, December 2024: Vol. 3A Section 4.1.1 "Four Paging Modes", Section 4.3
//! "32-Bit Paging", Section 4.4 "PAE Paging", Section 4.5 "4-Level Paging and 5-Level Paging",
//! Section 4.6 "Access Rights" (CR0.WP, SMEP, SMAP, EFLAGS.AC, implicit supervisor accesses),
//! Section 4.6.2 "Protection Keys", Section 4.7 "Page-Fault Exceptions" (error code), Section 4.8
//! "Accessed and Dirty Flags"; Vol. 3C Section 29.3.2 "EPT Translation Mechanism", Section 29.3.3
//! "EPT-Induced VM Exits" (EPT misconfigurations and violations), Section 29.3.5 "Accessed and Dirty
//! Flags for EPT", Section 28.2.1 "Basic VM-Exit Information" Table 28-7 "Exit Qualification for EPT
//! Violations". AMD64 Architecture Programmer's Manual Volume 2: System Programming, Publication
//! No. 24593, Revision 3.42, March 2024, Section 15.25.5 "Nested Table Walk" (guest table accesses
//! are user writes) and Section 15.25.6 "Nested versus Guest Page Faults, Fault Ordering" (EXITINFO1
//! bits 32/33).
//!
//! Every guest paging-structure access is itself translated through EPT or NPT (a fault there is
//! reported with "during the walk" set), then the final guest-physical address is (with "final
//! translation" set). Guest memory is read through [`PhysMemory`].
//!
//! Simplifications, stated: PAE PDPTEs are read during the walk (not from PDPTE registers);
//! supervisor protection keys (CR4.PKS), shadow stacks, HLAT and sub-page permissions are not
//! modelled; EPT execute-only support is assumed.

use bitflags::bitflags;
pub use x86_64::structures::idt::PageFaultErrorCode;

use crate::addr::{GuestPhysAddr, GuestVirtAddr, HostPhysAddr, PageSize};
use crate::eptp::{Eptp, NestedCr3};
use crate::format::mask;
use crate::memory::{MemoryError, PhysMemory};

bitflags! {
    /// Exit qualification of an EPT violation (SDM Vol. 3C Table 28-7).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct EptViolationQualification: u64 {
        /// Bit 0: the access was a data read.
        const READ = 1 << 0;
        /// Bit 1: the access was a data write (or a guest paging-structure access with EPT A/D on).
        const WRITE = 1 << 1;
        /// Bit 2: the access was an instruction fetch.
        const FETCH = 1 << 2;
        /// Bit 3: AND of bit 0 (read) of the EPT entries walked.
        const READABLE = 1 << 3;
        /// Bit 4: AND of bit 1 (write) of the EPT entries walked.
        const WRITABLE = 1 << 4;
        /// Bit 5: AND of bit 2 (execute / supervisor execute) of the EPT entries walked.
        const EXECUTABLE = 1 << 5;
        /// Bit 6: AND of bit 10 (user execute) of the EPT entries walked (mode-based execute).
        const USER_EXECUTABLE = 1 << 6;
        /// Bit 7: the guest linear-address field is valid.
        const GLA_VALID = 1 << 7;
        /// Bit 8: the access was to the translation of the linear address (clear: to a guest
        /// paging-structure entry during the walk).
        const FINAL_TRANSLATION = 1 << 8;
        /// Bit 9 (advanced information): the linear address is a user-mode address.
        const USER_LINEAR = 1 << 9;
        /// Bit 10 (advanced information): the linear address is writable in the guest tables.
        const WRITABLE_LINEAR = 1 << 10;
        /// Bit 11 (advanced information): the linear address is execute-disabled in the guest tables.
        const EXECUTE_DISABLED_LINEAR = 1 << 11;
        /// Bit 12: NMI unblocking due to IRET.
        const NMI_UNBLOCKING = 1 << 12;
        /// Bit 13: the access was a shadow-stack access.
        const SHADOW_STACK = 1 << 13;
        /// Bit 14: supervisor shadow-stack page (bit 60 of the EPT leaf).
        const SUPERVISOR_SHADOW_STACK = 1 << 14;
        /// Bit 15: guest-paging verification failed.
        const GUEST_PAGING_VERIFICATION = 1 << 15;
        /// Bit 16: the access was asynchronous to instruction execution.
        const ASYNCHRONOUS = 1 << 16;
    }
}

bitflags! {
    /// EXITINFO1 of #VMEXIT(NPF) (APM 15.25.6): a #PF-style error code plus bits 32/33.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct NpfExitInfo1: u64 {
        /// Bit 0: the nested entry was present (a protection violation).
        const PRESENT = 1 << 0;
        /// Bit 1: write access.
        const WRITE = 1 << 1;
        /// Bit 2: user access (always, nested walks are user accesses).
        const USER = 1 << 2;
        /// Bit 3: a reserved bit was set in a nested entry.
        const RESERVED = 1 << 3;
        /// Bit 4: instruction fetch.
        const FETCH = 1 << 4;
        /// Bit 32: the fault happened translating the final guest-physical address.
        const FINAL_TRANSLATION = 1 << 32;
        /// Bit 33: the fault happened translating a guest page-table access.
        const GUEST_TABLE_WALK = 1 << 33;
    }
}

/// The kind of access being translated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AccessKind {
    /// Data read.
    Read,
    /// Data write.
    Write,
    /// Instruction fetch.
    Execute,
}

/// One access to translate (SDM Vol. 3A 4.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Access {
    /// Read, write or fetch.
    pub kind: AccessKind,
    /// CPL = 3.
    pub user: bool,
    /// An implicit supervisor access (descriptor tables, TSS...), supervisor whatever the CPL and
    /// never exempted from SMAP by EFLAGS.AC.
    pub implicit_supervisor: bool,
    /// EFLAGS.AC (lets explicit supervisor data accesses reach user pages under SMAP).
    pub rflags_ac: bool,
}

impl Access {
    /// Supervisor data read.
    #[must_use]
    pub const fn read() -> Self {
        Self {
            kind: AccessKind::Read,
            user: false,
            implicit_supervisor: false,
            rflags_ac: false,
        }
    }
    /// Supervisor data write.
    #[must_use]
    pub const fn write() -> Self {
        Self {
            kind: AccessKind::Write,
            ..Self::read()
        }
    }
    /// Supervisor instruction fetch.
    #[must_use]
    pub const fn execute() -> Self {
        Self {
            kind: AccessKind::Execute,
            ..Self::read()
        }
    }
    /// The same access from CPL 3.
    #[must_use]
    pub const fn as_user(mut self) -> Self {
        self.user = true;
        self
    }

    fn is_user(&self) -> bool {
        self.user && !self.implicit_supervisor
    }
}

/// The guest registers that control paging.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GuestPagingState {
    /// CR0 (PG bit 31, WP bit 16).
    pub cr0: u64,
    /// CR3 (the root's guest-physical address).
    pub cr3: u64,
    /// CR4 (PSE 4, PAE 5, PGE 7, SMEP 20, SMAP 21, PKE 22, LA57 12).
    pub cr4: u64,
    /// IA32_EFER (NXE bit 11, LMA bit 10).
    pub efer: u64,
    /// PKRU (protection keys for user pages).
    pub pkru: u32,
    /// Guest MAXPHYADDR (reserved-bit checks), 36 to 52.
    pub maxphyaddr: u8,
    /// 1 GiB pages supported (CPUID.80000001H:EDX.Page1GB); otherwise PS in a PDPTE is reserved.
    pub gbpages: bool,
}

/// CR0.PG.
pub const CR0_PG: u64 = 1 << 31;
/// CR0.WP.
pub const CR0_WP: u64 = 1 << 16;
/// CR4.PSE.
pub const CR4_PSE: u64 = 1 << 4;
/// CR4.PAE.
pub const CR4_PAE: u64 = 1 << 5;
/// CR4.PGE.
pub const CR4_PGE: u64 = 1 << 7;
/// CR4.LA57.
pub const CR4_LA57: u64 = 1 << 12;
/// CR4.SMEP.
pub const CR4_SMEP: u64 = 1 << 20;
/// CR4.SMAP.
pub const CR4_SMAP: u64 = 1 << 21;
/// CR4.PKE.
pub const CR4_PKE: u64 = 1 << 22;
/// IA32_EFER.LMA.
pub const EFER_LMA: u64 = 1 << 10;
/// IA32_EFER.NXE.
pub const EFER_NXE: u64 = 1 << 11;

/// The guest paging mode (SDM Vol. 3A 4.1.1, Table 4-1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PagingMode {
    /// CR0.PG = 0: linear = physical.
    None,
    /// 32-bit paging.
    Bits32,
    /// PAE paging.
    Pae,
    /// 4-level paging.
    Level4,
    /// 5-level paging.
    Level5,
}

impl GuestPagingState {
    /// Paging off (real mode or protected mode without paging), MAXPHYADDR 52.
    #[must_use]
    pub const fn real_mode() -> Self {
        Self {
            cr0: 0,
            cr3: 0,
            cr4: 0,
            efer: 0,
            pkru: 0,
            maxphyaddr: 52,
            gbpages: true,
        }
    }

    /// 4-level long mode with CR0.WP and EFER.NXE on, root at `cr3`.
    #[must_use]
    pub const fn long_mode(cr3: u64) -> Self {
        Self {
            cr0: CR0_PG | CR0_WP | 1,
            cr3,
            cr4: CR4_PAE,
            efer: EFER_LMA | EFER_NXE,
            pkru: 0,
            maxphyaddr: 52,
            gbpages: true,
        }
    }

    /// The paging mode these registers select.
    #[must_use]
    pub const fn mode(&self) -> PagingMode {
        if self.cr0 & CR0_PG == 0 {
            PagingMode::None
        } else if self.cr4 & CR4_PAE == 0 {
            PagingMode::Bits32
        } else if self.efer & EFER_LMA == 0 {
            PagingMode::Pae
        } else if self.cr4 & CR4_LA57 != 0 {
            PagingMode::Level5
        } else {
            PagingMode::Level4
        }
    }
}

/// The second dimension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Nested {
    /// No nested paging: guest-physical = host-physical.
    None,
    /// Intel EPT.
    Ept {
        /// The EPTP in use (root, depth, A/D enable).
        eptp: Eptp,
        /// "Mode-based execute control for EPT" is on (bit 10 is user execute).
        mode_based_execute: bool,
    },
    /// AMD nested paging.
    Npt {
        /// The VMCB N_CR3.
        ncr3: NestedCr3,
        /// Depth of the nested tables (the host's: 4 or 5).
        levels: u8,
        /// The host's EFER.NXE (otherwise bit 63 of a nested entry is reserved).
        nxe: bool,
    },
}

/// A translation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    /// The guest-physical address.
    pub gpa: GuestPhysAddr,
    /// The host-physical address.
    pub host_phys: HostPhysAddr,
    /// The effective page size (the smaller of the guest and the nested page).
    pub page_size: PageSize,
    /// Global (G set in the guest leaf and CR4.PGE = 1).
    pub global: bool,
}

/// The architectural outcome of a failed translation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WalkFault {
    /// A guest #PF with this error code and CR2 value.
    #[error("guest #PF at {address:?}, error code {error_code:?}")]
    PageFault {
        /// The #PF error code (SDM Vol. 3A 4.7).
        error_code: PageFaultErrorCode,
        /// The faulting linear address (CR2).
        address: GuestVirtAddr,
    },
    /// A guest #GP: the linear address is not canonical.
    #[error("guest #GP: {0:?} is not canonical")]
    NonCanonical(GuestVirtAddr),
    /// Loading a PAE PDPTE with reserved bits set (#GP at MOV to CR3 on hardware).
    #[error("PAE PDPTE {index} has reserved bits set")]
    InvalidPdpte {
        /// Which of the four PDPTEs.
        index: u8,
    },
    /// An EPT violation VM exit.
    #[error("EPT violation at {gpa:?}: {qualification:?}")]
    EptViolation {
        /// The exit qualification.
        qualification: EptViolationQualification,
        /// The guest-physical address.
        gpa: GuestPhysAddr,
        /// The guest linear address, when valid.
        gla: Option<GuestVirtAddr>,
    },
    /// An EPT misconfiguration VM exit.
    #[error("EPT misconfiguration at {gpa:?}")]
    EptMisconfig {
        /// The guest-physical address.
        gpa: GuestPhysAddr,
    },
    /// A #VMEXIT(NPF).
    #[error("nested page fault at {gpa:?}: {exitinfo1:?}")]
    NestedPageFault {
        /// EXITINFO1.
        exitinfo1: NpfExitInfo1,
        /// EXITINFO2: the guest-physical address.
        gpa: GuestPhysAddr,
    },
    /// A table lies outside the memory behind [`PhysMemory`].
    #[error(transparent)]
    Memory(#[from] MemoryError),
}

/// What the guest tables say about the linear address, for the final nested access.
#[derive(Clone, Copy, Debug)]
struct GuestRights {
    user: bool,
    writable: bool,
    nx: bool,
}

/// Nested-translation request.
#[derive(Clone, Copy, Debug)]
struct NestedReq {
    gpa: u64,
    kind: AccessKind,
    final_access: bool,
    gla: u64,
    rights: GuestRights,
    /// A PAE PDPTE load: read, never a write for EPT A/D purposes.
    pdpte: bool,
}

/// The walker over memory `M` with nested paging `nested`.
#[derive(Clone, Copy, Debug)]
pub struct Walker<M: PhysMemory> {
    mem: M,
    nested: Nested,
    /// Set accessed/dirty flags in guest and nested entries as the CPU would.
    pub update_accessed_dirty: bool,
    /// The CPU reports advanced EPT-violation information (bits 9–11).
    pub advanced_exit_info: bool,
    /// Host MAXPHYADDR for nested-entry reserved-bit checks.
    pub host_maxphyaddr: u8,
}

const P: u64 = 1;
const RW: u64 = 1 << 1;
const US: u64 = 1 << 2;
const PS: u64 = 1 << 7;
const G: u64 = 1 << 8;
const XD: u64 = 1 << 63;
const ACC: u64 = 1 << 5;
const DIRTY: u64 = 1 << 6;

impl<M: PhysMemory> Walker<M> {
    /// A walker without accessed/dirty updates, without advanced EPT information, MAXPHYADDR 52.
    pub fn new(mem: M, nested: Nested) -> Self {
        Self {
            mem,
            nested,
            update_accessed_dirty: false,
            advanced_exit_info: false,
            host_maxphyaddr: 52,
        }
    }

    /// The memory.
    pub fn memory(&self) -> &M {
        &self.mem
    }

    /// Translates `gva` for `access` under the guest registers `state`.
    ///
    /// # Errors
    /// The architectural fault ([`WalkFault`]).
    pub fn translate(
        &self,
        state: &GuestPagingState,
        gva: GuestVirtAddr,
        access: Access,
    ) -> Result<Translation, WalkFault> {
        let mode = state.mode();
        let va = gva.as_u64();
        let guest = match mode {
            PagingMode::None => {
                let gpa = va & 0xffff_ffff;
                // Without guest paging no linear address is a user-mode address (for MBEC).
                let rights = GuestRights {
                    user: false,
                    writable: true,
                    nx: false,
                };
                (
                    gpa,
                    PageSize::Size4K,
                    false,
                    rights,
                    [(0u64, 0u64, false); 5],
                    0usize,
                )
            }
            _ => self.guest_walk(state, mode, va, access)?,
        };
        let (gpa, gsize, global, rights, entries, n) = guest;
        let req = NestedReq {
            gpa,
            kind: access.kind,
            final_access: true,
            gla: va,
            rights,
            pdpte: false,
        };
        let (hpa, nsize) = self.nested(req)?;
        if self.update_accessed_dirty {
            for (k, &(entry_gpa, raw, wide)) in entries[..n].iter().enumerate() {
                let leaf = k + 1 == n;
                let mut new = raw | ACC;
                if leaf && access.kind == AccessKind::Write {
                    new |= DIRTY;
                }
                if new != raw {
                    let req = NestedReq {
                        gpa: entry_gpa,
                        kind: AccessKind::Write,
                        final_access: false,
                        gla: va,
                        rights,
                        pdpte: false,
                    };
                    let (h, _) = self.nested(req)?;
                    let h = HostPhysAddr::new_truncate(h);
                    if wide {
                        self.mem.write_u64(h, new)?;
                    } else {
                        #[expect(clippy::cast_possible_truncation, reason = "a 32-bit entry")]
                        self.mem.write_u32(h, new as u32)?;
                    }
                }
            }
        }
        Ok(Translation {
            gpa: GuestPhysAddr::new_truncate(gpa),
            host_phys: HostPhysAddr::new_truncate(hpa),
            page_size: gsize.min(nsize),
            global,
        })
    }

    #[expect(clippy::type_complexity, reason = "internal tuple of walk results")]
    fn guest_walk(
        &self,
        st: &GuestPagingState,
        mode: PagingMode,
        va: u64,
        access: Access,
    ) -> Result<
        (
            u64,
            PageSize,
            bool,
            GuestRights,
            [(u64, u64, bool); 5],
            usize,
        ),
        WalkFault,
    > {
        let nxe = st.efer & EFER_NXE != 0 && mode != PagingMode::Bits32;
        let m = u32::from(st.maxphyaddr.clamp(32, 52));
        let user_access = access.is_user();
        let smep = st.cr4 & CR4_SMEP != 0;
        let fetch = access.kind == AccessKind::Execute;
        let base_code = {
            let mut c = PageFaultErrorCode::empty();
            if access.kind == AccessKind::Write {
                c |= PageFaultErrorCode::CAUSED_BY_WRITE;
            }
            if user_access {
                c |= PageFaultErrorCode::USER_MODE;
            }
            if fetch && (smep || (mode != PagingMode::Bits32 && st.efer & EFER_NXE != 0)) {
                c |= PageFaultErrorCode::INSTRUCTION_FETCH;
            }
            c
        };
        let pf = |extra: PageFaultErrorCode| WalkFault::PageFault {
            error_code: base_code | extra,
            address: GuestVirtAddr::new(va),
        };
        let rsvd = PageFaultErrorCode::PROTECTION_VIOLATION | PageFaultErrorCode::MALFORMED_TABLE;
        let mut entries = [(0u64, 0u64, false); 5];
        let mut n = 0;
        let (mut user, mut writable, mut nx) = (true, true, false);
        let rights_now = |u, w, x| GuestRights {
            user: u,
            writable: w,
            nx: x,
        };

        let (levels, wide, mut table) = match mode {
            PagingMode::Bits32 => (2u8, false, st.cr3 & mask(31, 12)),
            PagingMode::Pae => (3, true, st.cr3 & mask(31, 5)),
            PagingMode::Level4 | PagingMode::Level5 => {
                let la57 = mode == PagingMode::Level5;
                if !GuestVirtAddr::new(va).is_canonical(la57) {
                    return Err(WalkFault::NonCanonical(GuestVirtAddr::new(va)));
                }
                (if la57 { 5 } else { 4 }, true, st.cr3 & mask(m - 1, 12))
            }
            PagingMode::None => return Err(WalkFault::NonCanonical(GuestVirtAddr::new(va))),
        };

        let mut level = levels;
        let (gpa, size, leaf_raw) = loop {
            let (shift, idx_mask) = if wide {
                (12 + 9 * (u32::from(level) - 1), 0x1ff)
            } else {
                (12 + 10 * (u32::from(level) - 1), 0x3ff)
            };
            let idx_mask = if mode == PagingMode::Pae && level == 3 {
                3
            } else {
                idx_mask
            };
            let idx = (va >> shift) & idx_mask;
            let entry_gpa = table + idx * if wide { 8 } else { 4 };
            let pdpte = mode == PagingMode::Pae && level == 3;
            let req = NestedReq {
                gpa: entry_gpa,
                kind: AccessKind::Read,
                final_access: false,
                gla: va,
                rights: rights_now(user, writable, nx),
                pdpte,
            };
            let (h, _) = self.nested(req)?;
            let h = HostPhysAddr::new_truncate(h);
            let raw = if wide {
                self.mem.read_u64(h)?
            } else {
                u64::from(self.mem.read_u32(h)?)
            };
            if raw & P == 0 {
                return Err(pf(PageFaultErrorCode::empty()));
            }
            if pdpte {
                // PAE PDPTE: bits 2:1, 8:5, 63 and 51:M are reserved (SDM Vol. 3A Table 4-8).
                if raw & (0x6 | 0x1e0 | XD | mask(51, m)) != 0 {
                    #[expect(clippy::cast_possible_truncation, reason = "index below 4")]
                    return Err(WalkFault::InvalidPdpte { index: idx as u8 });
                }
                // PDPTEs have no accessed flag: not recorded for updates.
                table = raw & mask(m - 1, 12);
                level -= 1;
                continue;
            }
            // Reserved bits (SDM Vol. 3A 4.3, 4.4.2, 4.5.4).
            let mut reserved = 0u64;
            if wide {
                reserved |= mask(51, m);
                if mode == PagingMode::Pae {
                    reserved |= mask(62, 52);
                }
                if !nxe {
                    reserved |= XD;
                }
                if level >= 4 {
                    reserved |= PS;
                }
                if level == 3 && !st.gbpages {
                    reserved |= PS;
                }
            }
            let large = level > 1 && raw & PS != 0 && (wide || st.cr4 & CR4_PSE != 0);
            if large {
                if wide {
                    reserved |= mask(shift - 1, 13);
                } else {
                    // 4 MiB page: bit 21 reserved, and bits 20:(M-19) beyond the PSE-36 width.
                    let top = m.min(40);
                    reserved |= 1 << 21;
                    if top < 40 {
                        reserved |= mask(20, 13 + (top - 32));
                    }
                }
            }
            if raw & reserved != 0 {
                return Err(pf(rsvd));
            }
            user &= raw & US != 0;
            writable &= raw & RW != 0;
            nx |= wide && raw & XD != 0;
            entries[n] = (entry_gpa, raw, wide);
            n += 1;
            if level == 1 || large {
                let size = match (level, wide) {
                    (1, _) => PageSize::Size4K,
                    (2, true) => PageSize::Size2M,
                    (2, false) => PageSize::Size4M,
                    _ => PageSize::Size1G,
                };
                let base = if !wide && large {
                    (raw & mask(31, 22)) | ((raw & mask(20, 13)) << 19)
                } else {
                    raw & mask(m - 1, shift)
                };
                break (base | (va & (size.bytes() - 1)), size, raw);
            }
            table = raw & if wide { mask(m - 1, 12) } else { mask(31, 12) };
            level -= 1;
        };
        let gpa = if wide { gpa } else { gpa & mask(39, 0) };

        // Access rights (SDM Vol. 3A 4.6.1).
        let wp = st.cr0 & CR0_WP != 0;
        let smap = st.cr4 & CR4_SMAP != 0;
        let smap_blocks = user && smap && (access.implicit_supervisor || !access.rflags_ac);
        let nx_eff = nxe && nx;
        let denied = match access.kind {
            AccessKind::Read => {
                if user_access {
                    !user
                } else {
                    smap_blocks
                }
            }
            AccessKind::Write => {
                if user_access {
                    !user || !writable
                } else {
                    smap_blocks || (wp && !writable)
                }
            }
            AccessKind::Execute => {
                if user_access {
                    !user || nx_eff
                } else {
                    (user && smep) || nx_eff
                }
            }
        };
        if denied {
            return Err(pf(PageFaultErrorCode::PROTECTION_VIOLATION));
        }
        // Protection keys for user pages (SDM Vol. 3A 4.6.2), 4/5-level paging only.
        if matches!(mode, PagingMode::Level4 | PagingMode::Level5)
            && st.cr4 & CR4_PKE != 0
            && user
            && access.kind != AccessKind::Execute
        {
            let key = (leaf_raw >> 59) & 0xf;
            let ad = st.pkru >> (2 * key) & 1 != 0;
            let wd = st.pkru >> (2 * key + 1) & 1 != 0;
            if ad || (access.kind == AccessKind::Write && wd && (user_access || wp)) {
                return Err(pf(
                    PageFaultErrorCode::PROTECTION_VIOLATION | PageFaultErrorCode::PROTECTION_KEY
                ));
            }
        }
        let global = st.cr4 & CR4_PGE != 0 && leaf_raw & G != 0;
        Ok((
            gpa,
            size,
            global,
            GuestRights { user, writable, nx },
            entries,
            n,
        ))
    }

    /// Translates a guest-physical address through the nested tables.
    fn nested(&self, req: NestedReq) -> Result<(u64, PageSize), WalkFault> {
        match self.nested {
            Nested::None => Ok((req.gpa, PageSize::Size1G)),
            Nested::Ept {
                eptp,
                mode_based_execute,
            } => self.ept(eptp, mode_based_execute, req),
            Nested::Npt { ncr3, levels, nxe } => self.npt(ncr3, levels, nxe, req),
        }
    }

    fn ept(&self, eptp: Eptp, mbec: bool, req: NestedReq) -> Result<(u64, PageSize), WalkFault> {
        let levels = eptp.page_walk_length().clamp(4, 5);
        let m = u32::from(self.host_maxphyaddr.clamp(36, 52));
        let gpa = req.gpa;
        let ad = eptp.accessed_dirty();
        // Guest paging-structure accesses count as writes when EPT A/D is on (SDM 29.3.3.2).
        let kind = if !req.final_access && ad && !req.pdpte {
            AccessKind::Write
        } else {
            req.kind
        };
        let misconfig = WalkFault::EptMisconfig {
            gpa: GuestPhysAddr::new_truncate(gpa),
        };
        let mut table = eptp.root().as_u64();
        let mut and_bits: u64 = 0x407;
        let mut walked = [(0u64, 0u64); 5];
        let mut n = 0;
        let mut level = levels;
        let mut result = None;
        if gpa >> (12 + 9 * u32::from(levels)) == 0 {
            loop {
                let shift = 12 + 9 * (u32::from(level) - 1);
                let addr = HostPhysAddr::new_truncate(table + ((gpa >> shift) & 0x1ff) * 8);
                let raw = self.mem.read_u64(addr)?;
                let present = raw & 7 != 0 || (mbec && raw & (1 << 10) != 0);
                if !present {
                    and_bits = 0;
                    break;
                }
                if raw & 3 == 2 || raw & mask(51, m) != 0 || (level >= 4 && raw & PS != 0) {
                    return Err(misconfig);
                }
                and_bits &= raw & 0x407;
                walked[n] = (addr.as_u64(), raw);
                n += 1;
                let leaf = level == 1 || (level <= 3 && raw & PS != 0);
                if leaf {
                    let mt = (raw >> 3) & 7;
                    if matches!(mt, 2 | 3 | 7) || (level > 1 && raw & mask(shift - 1, 12) != 0) {
                        return Err(misconfig);
                    }
                    let size = match level {
                        1 => PageSize::Size4K,
                        2 => PageSize::Size2M,
                        _ => PageSize::Size1G,
                    };
                    result = Some((
                        (raw & mask(m - 1, shift)) | (gpa & (size.bytes() - 1)),
                        size,
                    ));
                    break;
                }
                table = raw & mask(m - 1, 12);
                level -= 1;
            }
        } else {
            and_bits = 0;
        }
        let allowed = match (result, kind) {
            (None, _) => false,
            (Some(_), AccessKind::Read) => and_bits & 1 != 0,
            (Some(_), AccessKind::Write) => and_bits & 2 != 0,
            (Some(_), AccessKind::Execute) => {
                if mbec && req.rights.user {
                    and_bits & (1 << 10) != 0
                } else {
                    and_bits & 4 != 0
                }
            }
        };
        if let (true, Some(r)) = (allowed, result) {
            if self.update_accessed_dirty && ad {
                for (k, &(addr, raw)) in walked[..n].iter().enumerate() {
                    let mut new = raw | (1 << 8);
                    if k + 1 == n && kind == AccessKind::Write {
                        new |= 1 << 9;
                    }
                    if new != raw {
                        self.mem.write_u64(HostPhysAddr::new_truncate(addr), new)?;
                    }
                }
            }
            return Ok(r);
        }
        let mut q = EptViolationQualification::GLA_VALID;
        q |= match kind {
            AccessKind::Read => EptViolationQualification::READ,
            AccessKind::Write => EptViolationQualification::WRITE,
            AccessKind::Execute => EptViolationQualification::FETCH,
        };
        if and_bits & 1 != 0 {
            q |= EptViolationQualification::READABLE;
        }
        if and_bits & 2 != 0 {
            q |= EptViolationQualification::WRITABLE;
        }
        if and_bits & 4 != 0 {
            q |= EptViolationQualification::EXECUTABLE;
        }
        if mbec && and_bits & (1 << 10) != 0 {
            q |= EptViolationQualification::USER_EXECUTABLE;
        }
        if req.final_access {
            q |= EptViolationQualification::FINAL_TRANSLATION;
            if self.advanced_exit_info {
                if req.rights.user {
                    q |= EptViolationQualification::USER_LINEAR;
                }
                if req.rights.writable {
                    q |= EptViolationQualification::WRITABLE_LINEAR;
                }
                if req.rights.nx {
                    q |= EptViolationQualification::EXECUTE_DISABLED_LINEAR;
                }
            }
        }
        Err(WalkFault::EptViolation {
            qualification: q,
            gpa: GuestPhysAddr::new_truncate(gpa),
            gla: Some(GuestVirtAddr::new(req.gla)),
        })
    }

    fn npt(
        &self,
        ncr3: NestedCr3,
        levels: u8,
        nxe: bool,
        req: NestedReq,
    ) -> Result<(u64, PageSize), WalkFault> {
        let m = u32::from(self.host_maxphyaddr.clamp(36, 52));
        let gpa = req.gpa;
        // Guest page-table accesses are user writes for the nested walk (APM 15.25.5).
        let kind = if req.final_access {
            req.kind
        } else {
            AccessKind::Write
        };
        let mut info = NpfExitInfo1::USER;
        info |= match kind {
            AccessKind::Read => NpfExitInfo1::empty(),
            AccessKind::Write => NpfExitInfo1::WRITE,
            AccessKind::Execute => NpfExitInfo1::FETCH,
        };
        info |= if req.final_access {
            NpfExitInfo1::FINAL_TRANSLATION
        } else {
            NpfExitInfo1::GUEST_TABLE_WALK
        };
        let fault = |extra: NpfExitInfo1| WalkFault::NestedPageFault {
            exitinfo1: info | extra,
            gpa: GuestPhysAddr::new_truncate(gpa),
        };
        let levels = levels.clamp(4, 5);
        if gpa >> (12 + 9 * u32::from(levels)) != 0 {
            return Err(fault(NpfExitInfo1::empty()));
        }
        let mut table = ncr3.root().as_u64();
        let (mut user, mut writable, mut nx) = (true, true, false);
        let mut walked = [(0u64, 0u64); 5];
        let mut n = 0;
        let mut level = levels;
        loop {
            let shift = 12 + 9 * (u32::from(level) - 1);
            let addr = HostPhysAddr::new_truncate(table + ((gpa >> shift) & 0x1ff) * 8);
            let raw = self.mem.read_u64(addr)?;
            if raw & P == 0 {
                return Err(fault(NpfExitInfo1::empty()));
            }
            let large = (level == 2 || level == 3) && raw & PS != 0;
            let mut reserved = mask(51, m);
            if !nxe {
                reserved |= XD;
            }
            if level >= 4 {
                reserved |= PS;
            }
            if large {
                reserved |= mask(shift - 1, 13);
            }
            if raw & reserved != 0 {
                return Err(fault(NpfExitInfo1::PRESENT | NpfExitInfo1::RESERVED));
            }
            user &= raw & US != 0;
            writable &= raw & RW != 0;
            nx |= raw & XD != 0;
            walked[n] = (addr.as_u64(), raw);
            n += 1;
            if level == 1 || large {
                let size = match level {
                    1 => PageSize::Size4K,
                    2 => PageSize::Size2M,
                    _ => PageSize::Size1G,
                };
                let denied = !user
                    || (kind == AccessKind::Write && !writable)
                    || (kind == AccessKind::Execute && nxe && nx);
                if denied {
                    return Err(fault(NpfExitInfo1::PRESENT));
                }
                if self.update_accessed_dirty {
                    for (k, &(a, r)) in walked[..n].iter().enumerate() {
                        let mut new = r | ACC;
                        if k + 1 == n && kind == AccessKind::Write {
                            new |= DIRTY;
                        }
                        if new != r {
                            self.mem.write_u64(HostPhysAddr::new_truncate(a), new)?;
                        }
                    }
                }
                return Ok((
                    (raw & mask(m - 1, shift)) | (gpa & (size.bytes() - 1)),
                    size,
                ));
            }
            table = raw & mask(m - 1, 12);
            level -= 1;
        }
    }
}
