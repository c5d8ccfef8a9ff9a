//! [`Counting`]: VMCS traffic figures (how many VMREADs and VMWRITEs an exit handler costs; SDM
//! 31.3 "VMREAD" / "VMWRITE"; SDM 325462-086US).

use core::cell::Cell;

use super::{VmcsError, VmcsRead, VmcsWrite};
use crate::fields::FieldEncoding;

/// Read and write counts of a [`Counting`] wrapper.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct VmcsCounts {
    /// VMCS reads attempted (successful or not).
    pub reads: u64,
    /// VMCS writes attempted (successful or not).
    pub writes: u64,
}

/// Wraps a VMCS and counts every read and write that goes through it, failed ones included
/// (each is one VMREAD or VMWRITE on hardware).
///
/// Reads take `&self`, so the counters are [`Cell`]s: the wrapper is not `Sync`, like the
/// current VMCS it usually wraps.
#[derive(Debug, Default)]
pub struct Counting<V> {
    inner: V,
    reads: Cell<u64>,
    writes: Cell<u64>,
}

impl<V> Counting<V> {
    /// Wraps `inner` with zeroed counters.
    pub const fn new(inner: V) -> Self {
        Self {
            inner,
            reads: Cell::new(0),
            writes: Cell::new(0),
        }
    }

    /// The counts so far.
    #[must_use]
    pub fn counts(&self) -> VmcsCounts {
        VmcsCounts {
            reads: self.reads.get(),
            writes: self.writes.get(),
        }
    }

    /// Returns the counts so far and resets them (for per-exit figures).
    pub fn take_counts(&self) -> VmcsCounts {
        VmcsCounts {
            reads: self.reads.replace(0),
            writes: self.writes.replace(0),
        }
    }

    /// The wrapped VMCS (accesses through it are not counted).
    pub const fn inner(&self) -> &V {
        &self.inner
    }

    /// The wrapped VMCS, mutably (accesses through it are not counted).
    pub const fn inner_mut(&mut self) -> &mut V {
        &mut self.inner
    }

    /// Unwraps the VMCS.
    pub fn into_inner(self) -> V {
        self.inner
    }
}

impl<V: VmcsRead> VmcsRead for Counting<V> {
    fn read_raw(&self, encoding: FieldEncoding) -> Result<u64, VmcsError> {
        self.reads.set(self.reads.get().saturating_add(1));
        self.inner.read_raw(encoding)
    }
}

impl<V: VmcsWrite> VmcsWrite for Counting<V> {
    fn write_raw(&mut self, encoding: FieldEncoding, value: u64) -> Result<(), VmcsError> {
        self.writes.set(self.writes.get().saturating_add(1));
        self.inner.write_raw(encoding, value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fields::{exit_info, guest};
    use crate::vmcs::{SoftVmcs, dump};

    #[test]
    fn counts_reads_and_writes_including_failures() {
        let mut vmcs = Counting::new(SoftVmcs::new());
        vmcs.write(guest::RIP, 1).unwrap();
        assert!(vmcs.write_raw(FieldEncoding(0x0801), 1).is_err());
        assert!(
            vmcs.write_raw(exit_info::EXIT_REASON.encoding(), 1)
                .is_err()
        );
        assert_eq!(vmcs.read(guest::RIP), Ok(1));
        assert!(vmcs.read(guest::RSP).is_err());
        assert_eq!(
            vmcs.counts(),
            VmcsCounts {
                reads: 2,
                writes: 3
            }
        );
        assert_eq!(
            vmcs.take_counts(),
            VmcsCounts {
                reads: 2,
                writes: 3
            }
        );
        assert_eq!(vmcs.counts(), VmcsCounts::default());
        // A dump reads every field once.
        dump(&vmcs, |_, _| {}).unwrap();
        assert_eq!(vmcs.counts().reads, crate::fields::COUNT as u64);
        vmcs.inner_mut().write(guest::RSP, 2).unwrap();
        assert_eq!(vmcs.counts().writes, 0, "inner accesses are not counted");
        assert_eq!(vmcs.into_inner().len(), 2);
    }
}
