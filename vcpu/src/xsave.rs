//! Keeping guest and host x87/SSE/AVX state apart: XSAVE/XRSTOR of each side's extended state
//! and the XCR0 swap around every guest run, or FXSAVE/FXRSTOR without XSAVE.
//!
//! Manual: Intel® 64 and IA-32 Architectures Software Developer's Manual, Combined Volumes, Order
//! Number 325462-086US, December 2024, Vol. 1 Chapter 13 "Managing State Using the XSAVE Feature
//! Set" (13.2 "Enumeration of CPU Support for XSAVE Instructions and XSAVE-Supported Features",
//! 13.3 "Enabling the XSAVE Feature Set and XSAVE-Enabled Features", 13.4 "XSAVE Area" (64-byte
//! alignment, legacy region and header), 13.8 "Operation of XRSTOR"); Vol. 1 10.5 "FXSAVE and
//! FXRSTOR Instructions" (512-byte, 16-byte aligned area). AMD's APM Volume 2 11.5 "XSAVE/XRSTOR
//! Instructions" agrees for these uses.
// UNSAFETY: XSAVE/XRSTOR/XSETBV/FXSAVE/FXRSTOR read and write processor state and memory areas.
#![expect(unsafe_code, reason = "XSAVE, XRSTOR, XSETBV, FXSAVE and FXRSTOR")]

use core::arch::asm;

use raw_cpuid::native_cpuid::cpuid_count;

use crate::platform::{OutOfMemory, OwnedFrames, Platform};

/// How extended state is switched on this processor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// XSAVE/XRSTOR with XCR0 swapped: the host runs with `host_xcr0`; `supported` is
    /// CPUID.(EAX=0DH,ECX=0):EDX:EAX, the XCR0 bits a guest may set.
    Xsave {
        /// The host's XCR0.
        host_xcr0: u64,
        /// The bits XCR0 may have.
        supported: u64,
        /// Bytes of the XSAVE area for every supported component.
        size: u32,
    },
    /// FXSAVE/FXRSTOR (no XSAVE, or the host did not enable it with CR4.OSXSAVE).
    Fxsave,
}

impl Method {
    /// What this processor supports (CPUID.1:ECX.XSAVE\[26\] and OSXSAVE\[27\], leaf 0DH).
    #[must_use]
    pub fn detect() -> Self {
        let leaf1 = cpuid_count(1, 0);
        if leaf1.ecx & (1 << 26) == 0 || leaf1.ecx & (1 << 27) == 0 {
            return Self::Fxsave;
        }
        let d = cpuid_count(0xd, 0);
        Self::Xsave {
            host_xcr0: xgetbv0(),
            supported: (u64::from(d.edx) << 32) | u64::from(d.eax),
            size: d.ecx,
        }
    }

    /// The XCR0 bits a guest may set (x87 only under FXSAVE).
    #[must_use]
    pub fn supported_xcr0(self) -> u64 {
        match self {
            Self::Xsave { supported, .. } => supported,
            Self::Fxsave => 1,
        }
    }
}

fn xgetbv0() -> u64 {
    let (low, high): (u32, u32);
    // SAFETY: only called when CPUID says CR4.OSXSAVE is set, so XGETBV(0) is defined.
    unsafe {
        asm!("xgetbv", in("ecx") 0, out("eax") low, out("edx") high,
            options(nostack, nomem, preserves_flags));
    }
    (u64::from(high) << 32) | u64::from(low)
}

/// The host's and the guest's extended-state areas.
#[derive(Debug)]
pub struct ExtendedState<'p, P: Platform + ?Sized> {
    method: Method,
    host: OwnedFrames<'p, P>,
    guest: OwnedFrames<'p, P>,
}

impl<'p, P: Platform + ?Sized> ExtendedState<'p, P> {
    /// Areas for `method`; the guest's starts in the reset state (FCW 037FH, MXCSR 1F80H,
    /// XSTATE_BV 0).
    ///
    /// # Errors
    /// [`OutOfMemory`].
    pub fn new(platform: &'p P, method: Method) -> Result<Self, OutOfMemory> {
        let bytes = match method {
            Method::Xsave { size, .. } => size.max(576) as usize,
            Method::Fxsave => 512,
        };
        let frames = bytes.div_ceil(crate::platform::FRAME_SIZE);
        let host = OwnedFrames::allocate(platform, frames)?;
        let guest = OwnedFrames::allocate(platform, frames)?;
        let area = guest.as_ptr().as_ptr();
        // SAFETY: the guest area is at least 512 bytes, owned, and reached through raw pointers;
        // FCW is at byte 0 and MXCSR at byte 24 of the legacy region (Vol. 1 Table 10-2).
        unsafe { area.cast::<u16>().write_volatile(0x037f) };
        // SAFETY: as above.
        unsafe { area.wrapping_add(24).cast::<u32>().write_volatile(0x1f80) };
        Ok(Self {
            method,
            host,
            guest,
        })
    }

    /// The method in use.
    #[must_use]
    pub fn method(&self) -> Method {
        self.method
    }

    /// Saves the processor's current extended state (x87, SSE, AVX, PKRU… under the current
    /// XCR0) as the guest's, for a guest that continues the current processor state ("blue
    /// pill") instead of starting from the reset state.
    ///
    /// # Safety
    /// - CPL 0; the processor's XCR0 is the one the guest will run with (its components are
    ///   the ones saved), and is a subset of the host's (or equal to it).
    pub unsafe fn capture_current(&self) {
        let guest = self.guest.as_ptr().as_ptr();
        match self.method {
            // SAFETY: the area is 64-byte aligned, owned and large enough for every supported
            // component; CR4.OSXSAVE is set (checked by `detect`). XSAVE writes the standard
            // form that `to_guest`'s XRSTOR reads.
            Method::Xsave { .. } => unsafe { xsave(guest) },
            // SAFETY: the area is 512 bytes or more and 16-byte aligned.
            Method::Fxsave => unsafe {
                asm!("fxsave64 [{0}]", in(reg) guest, options(nostack, preserves_flags));
            },
        }
    }

    /// Saves the host's state and loads the guest's, with XCR0 = `guest_xcr0`.
    ///
    /// # Safety
    /// - CPL 0; `guest_xcr0` is a valid XCR0 for this processor (see
    ///   `crate::vmx::xcr0_valid`);
    /// - nothing uses x87/SSE/AVX state until [`to_host`](Self::to_host) runs.
    pub unsafe fn to_guest(&self, guest_xcr0: u64) {
        let host = self.host.as_ptr().as_ptr();
        let guest = self.guest.as_ptr().as_ptr();
        match self.method {
            Method::Xsave { host_xcr0, .. } => {
                // The switch runs with XCR0 = the union of both values, and the guest's own XCR0
                // is set last: XSAVE/XRSTOR only reach the components XCR0 enables, and SSE
                // registers are the guest's even when its XCR0 leaves bit 1 clear (a guest
                // that never executes XSETBV has XCR0 = 1 and still uses XMM registers: SDM
                // Vol. 1 13.3 "Enabling the XSAVE Feature Set and XSAVE-Enabled Features").
                let both = guest_xcr0 | host_xcr0;
                if both != host_xcr0 {
                    // SAFETY: the union of two valid values is valid (every dependency of a
                    // bit set in either is set in that one).
                    unsafe { xsetbv0(both) };
                }
                // SAFETY: both areas are 64-byte aligned, owned and large enough for every
                // supported component; CR4.OSXSAVE is set (checked by `detect`).
                unsafe { xsave(host) };
                // XRSTOR refuses (#GP) a header whose XSTATE_BV names a component XCR0 does not
                // enable (SDM Vol. 1 13.8.1 "Standard Form of XRSTOR"): components outside the
                // union are dropped (measured under QEMU TCG, which enforces this; Bochs does
                // not).
                let header = guest.wrapping_add(512).cast::<u64>();
                // SAFETY: the area is at least 576 bytes (`new`), owned, reached through raw
                // pointers; XSTATE_BV is the first 8 bytes of the header at byte 512.
                let bv = unsafe { header.read_volatile() };
                if bv & !both != 0 {
                    // SAFETY: as above.
                    unsafe { header.write_volatile(bv & both) };
                }
                // SAFETY: as for XSAVE; XRSTOR of an area the processor wrote (or the reset
                // image built in `new`) whose XSTATE_BV fits XCR0.
                unsafe { xrstor(guest) };
                if guest_xcr0 != both {
                    // SAFETY: a valid value is the caller's promise.
                    unsafe { xsetbv0(guest_xcr0) };
                }
            }
            // SAFETY: both areas are 512 bytes or more and 16-byte aligned.
            Method::Fxsave => unsafe {
                asm!("fxsave64 [{0}]", "fxrstor64 [{1}]", in(reg) host, in(reg) guest,
                    options(nostack, preserves_flags));
            },
        }
    }

    /// Saves the guest's state and loads the host's (XCR0 back to the host's).
    ///
    /// # Safety
    /// - CPL 0, right after a VM exit that followed [`to_guest`](Self::to_guest) with
    ///   `guest_xcr0`, which is still the processor's XCR0.
    pub unsafe fn to_host(&self, guest_xcr0: u64) {
        let host = self.host.as_ptr().as_ptr();
        let guest = self.guest.as_ptr().as_ptr();
        match self.method {
            Method::Xsave { host_xcr0, .. } => {
                // As in `to_guest`: the switch runs with XCR0 = the union, so the guest's SSE
                // registers are saved even when its XCR0 leaves them out.
                let both = guest_xcr0 | host_xcr0;
                if guest_xcr0 != both {
                    // SAFETY: the union of two valid values is valid.
                    unsafe { xsetbv0(both) };
                }
                // SAFETY: as in `to_guest`.
                unsafe { xsave(guest) };
                // SAFETY: the host area was written by `to_guest` under the same XCR0.
                unsafe { xrstor(host) };
                if both != host_xcr0 {
                    // SAFETY: the host's XCR0 is valid by definition.
                    unsafe { xsetbv0(host_xcr0) };
                }
            }
            // SAFETY: both areas are 512 bytes or more and 16-byte aligned.
            Method::Fxsave => unsafe {
                asm!("fxsave64 [{0}]", "fxrstor64 [{1}]", in(reg) guest, in(reg) host,
                    options(nostack, preserves_flags));
            },
        }
    }
}

/// XSAVE64 of every enabled component into `area`.
///
/// # Safety
/// - CPL 0 with CR4.OSXSAVE = 1; `area` is 64-byte aligned and large enough for every component
///   XCR0 enables, and reached by nothing else.
unsafe fn xsave(area: *mut u8) {
    // SAFETY: the caller's obligations.
    unsafe {
        asm!("xsave64 [{0}]", in(reg) area, in("eax") u32::MAX, in("edx") u32::MAX,
            options(nostack, preserves_flags));
    }
}

/// XRSTOR64 of every enabled component from `area`.
///
/// # Safety
/// - As [`xsave`], and `area` holds a valid XSAVE image (header with no reserved bits).
unsafe fn xrstor(area: *mut u8) {
    // SAFETY: the caller's obligations.
    unsafe {
        asm!("xrstor64 [{0}]", in(reg) area, in("eax") u32::MAX, in("edx") u32::MAX,
            options(nostack, preserves_flags));
    }
}

/// XSETBV of XCR0.
///
/// # Safety
/// - CPL 0, CR4.OSXSAVE = 1, and `value` is a valid XCR0 for this processor.
unsafe fn xsetbv0(value: u64) {
    // SAFETY: the caller's obligations.
    unsafe {
        asm!("xsetbv", in("ecx") 0, in("eax") value as u32, in("edx") (value >> 32) as u32,
            options(nostack, preserves_flags));
    }
}
