//! ASID allocation with generations.
//!
//! Manual: AMD64 Architecture Programmer's Manual Volume 2: System Programming, Publication
//! No. 24593, Revision 3.42, March 2024 — Section 15.16 "TLB Control" (15.16.1 "TLB Flush",
//! Table 15-9) and Section 15.5.1 (ASID 0 is the host's; CPUID Fn8000_000A EBX is the number of
//! ASIDs).
//!
//! TLB entries are tagged with the ASID, so a guest keeps its translations across #VMEXIT as
//! long as it keeps its ASID. One [`AsidAllocator`] serves one physical CPU: it hands out ASIDs
//! 1 … NASID−1 and, when they run out, starts a new *generation*. Every vCPU remembers the
//! [`AsidAssignment`] it ran with on this CPU; an assignment from an older generation is stale,
//! so the vCPU gets a fresh ASID. The VMRUN that opens a new generation flushes the whole TLB
//! (TLB_CONTROL = 01h), because the reused ASIDs may still tag translations of other guests
//! ("…allocating a new ASID for the guest and not reusing the old ASID until the entire TLB has
//! been flushed at least once", 15.16.1).

use crate::vmcb::TlbControl;

/// Errors from creating an ASID allocator.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum AsidError {
    /// NASID is below 2: there is no guest ASID (0 belongs to the host).
    #[error("CPUID reports {0} ASIDs; at least 2 are needed (ASID 0 is the host's)")]
    TooFewAsids(u32),
}

/// An ASID together with the allocator generation it belongs to.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct AsidAssignment {
    /// The guest ASID to write to the VMCB (never 0).
    pub asid: u32,
    /// The allocator generation this ASID was handed out in.
    pub generation: u64,
}

/// The result of [`AsidAllocator::assign`]: the ASID to run with and the TLB_CONTROL value the
/// next VMRUN on this CPU must use (set it, run, then set TLB_CONTROL back to
/// [`TlbControl::DO_NOTHING`]: VMRUN does not clear it).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct AsidDecision {
    /// The assignment to store with the vCPU and write to the VMCB.
    pub assignment: AsidAssignment,
    /// TLB_CONTROL for the next VMRUN: [`TlbControl::FLUSH_ALL`] when this assignment opened a
    /// new generation, [`TlbControl::DO_NOTHING`] otherwise.
    pub tlb_control: TlbControl,
    /// Whether the ASID differs from the one passed in (the VMCB's ASID field must be written).
    pub changed: bool,
}

/// Per-CPU ASID allocator with generations (APM 15.16).
#[derive(Clone, Debug)]
pub struct AsidAllocator {
    asid_count: u32,
    next: u32,
    generation: u64,
    flush_pending: bool,
}

impl AsidAllocator {
    /// An allocator for a CPU that reports `asid_count` ASIDs (CPUID Fn8000_000A EBX).
    ///
    /// # Errors
    /// [`AsidError::TooFewAsids`] if `asid_count < 2`.
    pub const fn new(asid_count: u32) -> Result<Self, AsidError> {
        if asid_count < 2 {
            return Err(AsidError::TooFewAsids(asid_count));
        }
        Ok(Self {
            asid_count,
            next: 1,
            generation: 1,
            flush_pending: false,
        })
    }

    /// The current generation (starts at 1, so a zeroed assignment is always stale).
    #[must_use]
    pub const fn generation(&self) -> u64 {
        self.generation
    }

    /// Returns the ASID a vCPU should run with on this CPU.
    ///
    /// `current` is the assignment the vCPU last ran with *on this CPU* (`None` if it never ran
    /// here). If it belongs to the current generation it is kept; otherwise a fresh ASID is
    /// handed out, and when the space is exhausted a new generation starts and the result asks
    /// for a full TLB flush.
    pub fn assign(&mut self, current: Option<AsidAssignment>) -> AsidDecision {
        if let Some(assignment) = current.filter(|a| a.generation == self.generation) {
            return AsidDecision {
                assignment,
                tlb_control: TlbControl::DO_NOTHING,
                changed: false,
            };
        }
        if self.next >= self.asid_count {
            self.new_generation();
        }
        let tlb_control = if core::mem::take(&mut self.flush_pending) {
            TlbControl::FLUSH_ALL
        } else {
            TlbControl::DO_NOTHING
        };
        let assignment = AsidAssignment {
            asid: self.next,
            generation: self.generation,
        };
        self.next += 1;
        AsidDecision {
            assignment,
            tlb_control,
            changed: current.map(|c| c.asid) != Some(assignment.asid),
        }
    }

    /// Starts a new generation now (e.g. after the host changed translations all guests
    /// share). Every vCPU gets a new ASID; the first assignment of the new generation asks for
    /// the full flush.
    pub fn new_generation(&mut self) {
        self.generation += 1;
        self.next = 1;
        self.flush_pending = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_too_few_asids() {
        assert_eq!(AsidAllocator::new(1).err(), Some(AsidError::TooFewAsids(1)));
        assert_eq!(AsidAllocator::new(0).err(), Some(AsidError::TooFewAsids(0)));
        assert!(AsidAllocator::new(2).is_ok());
    }

    #[test]
    fn keeps_asid_within_generation() {
        let mut alloc = AsidAllocator::new(8).unwrap();
        let first = alloc.assign(None);
        assert_eq!(first.assignment.asid, 1);
        assert_eq!(first.tlb_control, TlbControl::DO_NOTHING);
        assert!(first.changed);
        let again = alloc.assign(Some(first.assignment));
        assert_eq!(again.assignment, first.assignment);
        assert!(!again.changed);
        assert_eq!(again.tlb_control, TlbControl::DO_NOTHING);
    }

    #[test]
    fn generation_wrap_flushes_and_invalidates_old_assignments() {
        // NASID 4: guest ASIDs 1, 2, 3.
        let mut alloc = AsidAllocator::new(4).unwrap();
        let a = alloc.assign(None).assignment;
        let b = alloc.assign(None).assignment;
        let c = alloc.assign(None).assignment;
        assert_eq!([a.asid, b.asid, c.asid], [1, 2, 3]);
        assert!([a, b, c].iter().all(|x| x.generation == 1));

        // A fourth vCPU wraps the space: generation 2, ASID 1, full flush.
        let d = alloc.assign(None);
        assert_eq!(
            d.assignment,
            AsidAssignment {
                asid: 1,
                generation: 2
            }
        );
        assert_eq!(d.tlb_control, TlbControl::FLUSH_ALL);
        assert_eq!(alloc.generation(), 2);

        // The old vCPUs' assignments are stale now: each gets a new ASID, no further flush.
        let a2 = alloc.assign(Some(a));
        assert_eq!(
            a2.assignment,
            AsidAssignment {
                asid: 2,
                generation: 2
            }
        );
        assert_eq!(a2.tlb_control, TlbControl::DO_NOTHING);
        assert!(a2.changed);
        let b2 = alloc.assign(Some(b));
        assert_eq!(b2.assignment.asid, 3);
        // c wraps again.
        let c2 = alloc.assign(Some(c));
        assert_eq!(
            c2.assignment,
            AsidAssignment {
                asid: 1,
                generation: 3
            }
        );
        assert_eq!(c2.tlb_control, TlbControl::FLUSH_ALL);
        assert!(c2.changed, "ASID 3 became ASID 1");
    }

    #[test]
    fn explicit_new_generation() {
        let mut alloc = AsidAllocator::new(100).unwrap();
        let a = alloc.assign(None).assignment;
        alloc.new_generation();
        let a2 = alloc.assign(Some(a));
        assert_eq!(
            a2.assignment,
            AsidAssignment {
                asid: 1,
                generation: 2
            }
        );
        assert_eq!(a2.tlb_control, TlbControl::FLUSH_ALL);
        assert!(!a2.changed, "same ASID number, VMCB field unchanged");
    }
}
