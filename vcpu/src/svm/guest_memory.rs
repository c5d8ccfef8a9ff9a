//! Host-physical memory seen through a [`Platform`], as `hvkit-paging`'s [`PhysMemory`]: how the
//! SVM backend's two-dimensional walker reads the guest's page tables, the nested page tables
//! and the guest's code bytes.
//!
//! Manual: AMD64 Architecture Programmer's Manual Volume 2: System Programming, Publication No.
//! 24593, Revision 3.42, March 2024, 15.25.5 "Nested Table Walk" (guest and nested tables are
//! ordinary memory the walk reads 8 bytes at a time).
// UNSAFETY: reads (and, for accessed/dirty updates, writes) physical memory through the
// platform's `phys_to_virt` pointers; this module holds the alignment check that makes the
// accesses sound.
#![expect(
    unsafe_code,
    reason = "volatile access to physical memory through Platform::phys_to_virt"
)]

use hvkit_paging::{HostPhysAddr, MemoryError, PhysMemory};

use crate::platform::Platform;

/// Physical memory through `platform.phys_to_virt`, 8 bytes at a time with volatile accesses.
///
/// Every address the platform maps is readable, as [`Platform`]'s contract promises for
/// allocated runs "or any memory the environment maps"; unmapped addresses are a
/// [`MemoryError`].
#[derive(Debug)]
pub struct PlatformMemory<'p, P: Platform + ?Sized>(pub &'p P);

impl<P: Platform + ?Sized> Clone for PlatformMemory<'_, P> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<P: Platform + ?Sized> Copy for PlatformMemory<'_, P> {}

impl<P: Platform + ?Sized> PlatformMemory<'_, P> {
    /// The pointer to the naturally aligned 8 bytes at `addr`.
    fn word(&self, addr: HostPhysAddr) -> Result<*mut u64, MemoryError> {
        if addr.as_u64() % 8 != 0 {
            return Err(MemoryError(addr));
        }
        let ptr = self.0.phys_to_virt(addr).ok_or(MemoryError(addr))?;
        Ok(ptr.as_ptr().cast::<u64>())
    }
}

impl<P: Platform + ?Sized> PhysMemory for PlatformMemory<'_, P> {
    fn read_u64(&self, addr: HostPhysAddr) -> Result<u64, MemoryError> {
        let ptr = self.word(addr)?;
        // SAFETY: `phys_to_virt` returned a pointer to the mapped, 8-byte aligned (checked in
        // `word`, and the mapping keeps the offset within the frame) word at `addr`; the access
        // is volatile because the guest may write the same memory.
        Ok(unsafe { ptr.read_volatile() })
    }

    fn write_u64(&self, addr: HostPhysAddr, value: u64) -> Result<(), MemoryError> {
        let ptr = self.word(addr)?;
        // SAFETY: as in `read_u64`; the walker only writes accessed/dirty bits of table
        // entries, which the processor itself would write.
        unsafe { ptr.write_volatile(value) };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::HostPlatform;
    use crate::platform::OwnedFrames;

    #[test]
    fn reads_and_writes_platform_frames() {
        let p = HostPlatform::new(2);
        let run = OwnedFrames::allocate(&p, 1).unwrap();
        let mem = PlatformMemory(&p);
        let at = run.phys().checked_add(8).unwrap();
        mem.write_u64(at, 0x1122_3344_5566_7788).unwrap();
        assert_eq!(mem.read_u64(at).unwrap(), 0x1122_3344_5566_7788);
        assert_eq!(mem.read_u32(at).unwrap(), 0x5566_7788);
        let odd = run.phys().checked_add(3).unwrap();
        assert_eq!(mem.read_u64(odd), Err(MemoryError(odd)));
        let far = HostPhysAddr::new_truncate(0x10_0000);
        assert_eq!(mem.read_u64(far), Err(MemoryError(far)));
    }
}
