//! Invalidation tokens returned by every change to a live table.
//!
//! Manual: Intel® 64 and IA-32 Architectures Software Developer's Manual, Combined Volumes, Order
//! Number 325462-086US, December 2024, Vol. 3C Section 29.4.3 "Invalidating Cached Translation
//! Information" (INVEPT) and Vol. 3A Section 4.10.4 "Invalidation of TLBs and Paging-Structure
//! Caches"; AMD64 Architecture Programmer's Manual Volume 2: System Programming, Publication
//! No. 24593, Revision 3.42, March 2024, Section 15.16 "TLB Control" (ASID flush, INVLPGA).

use crate::addr::HostPhysAddr;

/// What the hypervisor must do before the change is visible to every CPU using the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FlushKind {
    /// INVEPT single-context with the EPTP of this root (SDM Vol. 3C 29.4.3.1), on every CPU that
    /// ran with it.
    InveptSingleContext,
    /// Flush the guest's ASID (VMCB TLB_CONTROL = 3 "flush this guest's TLB entries", APM 15.16.1):
    /// nested-table changes affect guest-physical translations, which INVLPGA (by linear address)
    /// cannot target.
    NestedAsid,
    /// Per page of the linear range: INVLPG in the table's own address space, or from the
    /// hypervisor INVLPGA (APM 15.16.2) / INVVPID individual-address (SDM Vol. 3C 29.4.3.3); or a
    /// CR3 reload (SDM Vol. 3A 4.10.4.1).
    GuestTlb,
}

/// A pending invalidation. It must be acted upon ([`Flush::kind`], [`Flush::range`]) or dropped on
/// purpose with [`Flush::ignore`].
#[derive(Debug, PartialEq, Eq)]
#[must_use = "the CPU may still use stale translations: perform the invalidation or call ignore()"]
pub struct Flush {
    kind: FlushKind,
    root: HostPhysAddr,
    start: u64,
    end: u64,
}

impl Flush {
    pub(crate) fn new(kind: FlushKind, root: HostPhysAddr, start: u64, end: u64) -> Self {
        Self {
            kind,
            root,
            start,
            end,
        }
    }

    /// The invalidation to perform.
    pub fn kind(&self) -> FlushKind {
        self.kind
    }

    /// The root table whose cached translations are stale (the EPTP / nCR3 / CR3 address).
    pub fn root(&self) -> HostPhysAddr {
        self.root
    }

    /// The changed input-address range `start..end` (for per-page invalidation).
    pub fn range(&self) -> core::ops::Range<u64> {
        self.start..self.end
    }

    /// Declares that no invalidation is needed (the table is not live yet, or a full flush follows).
    pub fn ignore(self) {}

    /// One token covering both changes (same root and kind; the range becomes the hull).
    pub fn merge(self, other: Self) -> Self {
        Self {
            kind: self.kind,
            root: self.root,
            start: self.start.min(other.start),
            end: self.end.max(other.end),
        }
    }
}
