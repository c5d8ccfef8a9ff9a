//! Copies between host buffers and guest RAM (through the platform's mapping of the RAM's host
//! frames).
// UNSAFETY: writes and reads guest RAM through raw pointers from `Platform::phys_to_virt`.
#![expect(unsafe_code, reason = "guest RAM is reached through raw pointers")]

use hvkit_paging::{GuestPhysAddr, HostPhysAddr};

use crate::error::VcpuError;
use crate::memory::{MemoryMap, RegionKind};
use crate::platform::Platform;

/// The host pointer range for `len` bytes of RAM at `gpa`, all inside one RAM region.
fn locate<P: Platform + ?Sized>(
    platform: &P,
    map: &MemoryMap,
    gpa: GuestPhysAddr,
    len: usize,
) -> Result<*mut u8, VcpuError> {
    let bad = VcpuError::NotRam(gpa.as_u64());
    let region = map.lookup(gpa).ok_or(bad)?;
    let RegionKind::Ram { host, .. } = region.kind else {
        return Err(bad);
    };
    let offset = gpa.checked_offset_from(region.start).ok_or(bad)?;
    let end = offset.checked_add(len as u64).ok_or(bad)?;
    if end > region.len {
        return Err(bad);
    }
    let base: HostPhysAddr = host;
    let ptr = platform.phys_to_virt(base).ok_or(bad)?;
    Ok(ptr.as_ptr().wrapping_add(offset as usize))
}

/// Copies `bytes` into guest RAM at `gpa`.
///
/// The RAM regions of `map` are host-contiguous runs that the platform maps contiguously (the
/// obligation of adding them: [`crate::Vcpu::add_ram`] allocates such runs, and
/// `Vcpu::map_ram_at` requires it of its caller).
pub(crate) fn write<P: Platform + ?Sized>(
    platform: &P,
    map: &MemoryMap,
    gpa: GuestPhysAddr,
    bytes: &[u8],
) -> Result<(), VcpuError> {
    let dst = locate(platform, map, gpa, bytes.len())?;
    // SAFETY: `dst..dst + len` lies inside one RAM region (checked), which is host memory the
    // vCPU's owner gave to the guest and the platform maps contiguously; the guest is not running
    // (we hold the vCPU), and the destination is not a Rust object, so it cannot overlap `bytes`.
    unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), dst, bytes.len()) };
    Ok(())
}

/// Copies guest RAM at `gpa` into `bytes`.
pub(crate) fn read<P: Platform + ?Sized>(
    platform: &P,
    map: &MemoryMap,
    gpa: GuestPhysAddr,
    bytes: &mut [u8],
) -> Result<(), VcpuError> {
    let src = locate(platform, map, gpa, bytes.len())?;
    // SAFETY: as in `write`, reading instead.
    unsafe { core::ptr::copy_nonoverlapping(src, bytes.as_mut_ptr(), bytes.len()) };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::HostPlatform;
    use crate::memory::Region;
    use crate::platform::OwnedFrames;

    #[test]
    fn copies_stay_inside_ram() {
        let p = HostPlatform::new(4);
        let ram = OwnedFrames::allocate(&p, 2).unwrap();
        let mut map = MemoryMap::new();
        map.add(Region {
            start: GuestPhysAddr::new_truncate(0x10_0000),
            len: 0x2000,
            kind: RegionKind::Ram {
                host: ram.phys(),
                memory_type: hvkit_paging::MemoryType::WRITE_BACK,
            },
        })
        .unwrap();
        let at = GuestPhysAddr::new_truncate(0x10_0ffe);
        write(&p, &map, at, b"hvkit").unwrap();
        let mut back = [0u8; 5];
        read(&p, &map, at, &mut back).unwrap();
        assert_eq!(&back, b"hvkit");
        let end = GuestPhysAddr::new_truncate(0x10_1ffe);
        assert_eq!(
            write(&p, &map, end, b"abc"),
            Err(VcpuError::NotRam(0x10_1ffe))
        );
        assert_eq!(
            read(&p, &map, GuestPhysAddr::ZERO, &mut back),
            Err(VcpuError::NotRam(0))
        );
    }
}
