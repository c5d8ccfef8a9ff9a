//! Address newtypes for the three address spaces a hypervisor juggles, and page sizes.
//!
//! Manual: Intel® 64 and IA-32 Architectures Software Developer's Manual, Combined Volumes, Order
//! Number 325462-086US, December 2024 (the SDM), Vol. 3A Section 4.1.4 "Enumeration of Paging
//! Features by CPUID" (MAXPHYADDR is at most 52) and Section 3.3.7.1 "Canonical Addressing".
//!
//! Host-physical addresses mean the same as [`x86_64::PhysAddr`] (52 bits at most), so the two convert
//! into each other; guest-physical addresses have the same width but are a different space. Guest
//! virtual addresses are plain 64-bit values: a 32-bit guest has no canonical form, so canonicality is a
//! query ([`GuestVirtAddr::is_canonical`]) rather than a constructor rule. There is no raw `+`/`-` on
//! addresses: use [`HostPhysAddr::checked_add`], [`HostPhysAddr::align_down`] and friends.

use core::fmt;

/// The widest physical address x86-64 architecturally allows (SDM Vol. 3A 4.1.4, MAXPHYADDR ≤ 52).
pub const MAX_PHYS_BITS: u32 = 52;

/// An address does not fit its space.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("address {0:#x} is wider than 52 bits (SDM Vol. 3A 4.1.4, MAXPHYADDR)")]
pub struct AddrError(pub u64);

/// A page size the x86 paging formats can map (SDM Vol. 3A 4.3 "32-Bit Paging" for 4 MiB, 4.4 "PAE
/// Paging" and 4.5 "4-Level Paging and 5-Level Paging" for 2 MiB and 1 GiB).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum PageSize {
    /// 4 KiB page (a PTE).
    Size4K,
    /// 2 MiB page (a PDE with PS = 1 under PAE, 4- or 5-level paging, EPT or NPT).
    Size2M,
    /// 4 MiB page (a 32-bit PDE with PS = 1 when CR4.PSE = 1).
    Size4M,
    /// 1 GiB page (a PDPTE with PS = 1; EPT and NPT only when the CPU supports it).
    Size1G,
}

impl PageSize {
    /// Size in bytes.
    #[must_use]
    pub const fn bytes(self) -> u64 {
        1 << self.shift()
    }

    /// log2 of the size.
    #[must_use]
    pub const fn shift(self) -> u32 {
        match self {
            Self::Size4K => 12,
            Self::Size2M => 21,
            Self::Size4M => 22,
            Self::Size1G => 30,
        }
    }

    /// The runtime size matching one of the `x86_64` crate's type-level page sizes.
    #[must_use]
    pub const fn of<S: x86_64::structures::paging::PageSize>() -> Option<Self> {
        match S::SIZE {
            0x1000 => Some(Self::Size4K),
            0x20_0000 => Some(Self::Size2M),
            0x4000_0000 => Some(Self::Size1G),
            _ => None,
        }
    }
}

macro_rules! phys_addr {
    ($(#[$m:meta])* $name:ident, $what:literal) => {
        $(#[$m])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        #[repr(transparent)]
        pub struct $name(u64);

        impl $name {
            /// The zero address.
            pub const ZERO: Self = Self(0);

            #[doc = concat!("A ", $what, " address; bits 63:52 must be clear.")]
            ///
            /// # Errors
            /// [`AddrError`] if the value is wider than 52 bits.
            pub const fn try_new(addr: u64) -> Result<Self, AddrError> {
                if addr >> MAX_PHYS_BITS == 0 { Ok(Self(addr)) } else { Err(AddrError(addr)) }
            }

            #[doc = concat!("A ", $what, " address with bits 63:52 cleared.")]
            #[must_use]
            pub const fn new_truncate(addr: u64) -> Self {
                Self(addr & ((1 << MAX_PHYS_BITS) - 1))
            }

            /// The raw value.
            #[must_use]
            pub const fn as_u64(self) -> u64 {
                self.0
            }

            /// `true` if aligned to `size`.
            #[must_use]
            pub const fn is_aligned(self, size: PageSize) -> bool {
                self.0 & (size.bytes() - 1) == 0
            }

            /// Rounded down to a multiple of `size`.
            #[must_use]
            pub const fn align_down(self, size: PageSize) -> Self {
                Self(self.0 & !(size.bytes() - 1))
            }

            /// Offset within the `size` page containing this address.
            #[must_use]
            pub const fn page_offset(self, size: PageSize) -> u64 {
                self.0 & (size.bytes() - 1)
            }

            /// `self + bytes`, or `None` if that leaves the 52-bit space.
            #[must_use]
            pub const fn checked_add(self, bytes: u64) -> Option<Self> {
                match self.0.checked_add(bytes) {
                    Some(v) if v >> MAX_PHYS_BITS == 0 => Some(Self(v)),
                    _ => None,
                }
            }

            /// `self - other` in bytes, or `None` if `other > self`.
            #[must_use]
            pub const fn checked_offset_from(self, other: Self) -> Option<u64> {
                self.0.checked_sub(other.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({:#x})"), self.0)
            }
        }

        impl fmt::LowerHex for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::LowerHex::fmt(&self.0, f)
            }
        }

        impl TryFrom<u64> for $name {
            type Error = AddrError;
            fn try_from(v: u64) -> Result<Self, AddrError> {
                Self::try_new(v)
            }
        }
    };
}

phys_addr!(
    /// A host-physical address (what the CPU puts on the bus; EPT/NPT output, table frames).
    HostPhysAddr,
    "host-physical"
);
phys_addr!(
    /// A guest-physical address (EPT/NPT input; the output of the guest's own page tables).
    GuestPhysAddr,
    "guest-physical"
);

impl From<x86_64::PhysAddr> for HostPhysAddr {
    fn from(a: x86_64::PhysAddr) -> Self {
        Self(a.as_u64())
    }
}

impl From<HostPhysAddr> for x86_64::PhysAddr {
    fn from(a: HostPhysAddr) -> Self {
        // Both are 52-bit physical addresses, so this never truncates.
        Self::new_truncate(a.0)
    }
}

/// A guest-virtual (linear) address: any 64-bit value (SDM Vol. 3A 3.3.7.1 "Canonical Addressing").
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[repr(transparent)]
pub struct GuestVirtAddr(u64);

impl GuestVirtAddr {
    /// Any 64-bit value is a linear address (32-bit guests use the low half only).
    #[must_use]
    pub const fn new(addr: u64) -> Self {
        Self(addr)
    }

    /// The raw value.
    #[must_use]
    pub const fn as_u64(self) -> u64 {
        self.0
    }

    /// `true` if canonical for 4-level (`la57 == false`, 48 bits) or 5-level (57 bits) paging.
    #[must_use]
    pub const fn is_canonical(self, la57: bool) -> bool {
        let bits = if la57 { 57 } else { 48 };
        let top = (self.0 as i64) >> (bits - 1);
        top == 0 || top == -1
    }

    /// `true` if aligned to `size`.
    #[must_use]
    pub const fn is_aligned(self, size: PageSize) -> bool {
        self.0 & (size.bytes() - 1) == 0
    }

    /// `self + bytes`, wrapping at 2^64 like the CPU's address arithmetic, or `None` on overflow.
    #[must_use]
    pub const fn checked_add(self, bytes: u64) -> Option<Self> {
        match self.0.checked_add(bytes) {
            Some(v) => Some(Self(v)),
            None => None,
        }
    }
}

impl fmt::Debug for GuestVirtAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GuestVirtAddr({:#x})", self.0)
    }
}

impl From<x86_64::VirtAddr> for GuestVirtAddr {
    fn from(a: x86_64::VirtAddr) -> Self {
        Self(a.as_u64())
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::HostPhysAddr {}
    impl Sealed for super::GuestPhysAddr {}
    impl Sealed for super::GuestVirtAddr {}
}

/// The address types a page table can take as input or produce as output (sealed).
pub trait Address: sealed::Sealed + Copy + Eq + Ord + fmt::Debug {
    /// `true` for linear addresses, which are sign-extended above the root's reach on x86-64.
    const VIRTUAL: bool;
    /// `true` for guest-physical addresses (the input of EPT and NPT).
    const GUEST_PHYSICAL: bool;
    /// The raw value.
    fn to_u64(self) -> u64;
    /// From a raw value the table code has already range-checked.
    fn from_u64(v: u64) -> Self;
}

impl Address for HostPhysAddr {
    const VIRTUAL: bool = false;
    const GUEST_PHYSICAL: bool = false;
    fn to_u64(self) -> u64 {
        self.0
    }
    fn from_u64(v: u64) -> Self {
        Self::new_truncate(v)
    }
}

impl Address for GuestPhysAddr {
    const VIRTUAL: bool = false;
    const GUEST_PHYSICAL: bool = true;
    fn to_u64(self) -> u64 {
        self.0
    }
    fn from_u64(v: u64) -> Self {
        Self::new_truncate(v)
    }
}

impl Address for GuestVirtAddr {
    const VIRTUAL: bool = true;
    const GUEST_PHYSICAL: bool = false;
    fn to_u64(self) -> u64 {
        self.0
    }
    fn from_u64(v: u64) -> Self {
        Self(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phys_bounds() {
        assert_eq!(HostPhysAddr::try_new(1 << 52), Err(AddrError(1 << 52)));
        assert!(HostPhysAddr::try_new((1 << 52) - 1).is_ok());
        assert_eq!(HostPhysAddr::new_truncate(u64::MAX).as_u64(), (1 << 52) - 1);
        assert_eq!(
            GuestPhysAddr::new_truncate(0x1fff)
                .align_down(PageSize::Size4K)
                .as_u64(),
            0x1000
        );
        assert_eq!(
            HostPhysAddr::new_truncate((1 << 52) - 0x1000).checked_add(0x1000),
            None
        );
        let x: x86_64::PhysAddr = HostPhysAddr::new_truncate(0x1234_5000).into();
        assert_eq!(HostPhysAddr::from(x).as_u64(), 0x1234_5000);
    }

    #[test]
    fn canonical() {
        assert!(GuestVirtAddr::new(0xffff_8000_0000_0000).is_canonical(false));
        assert!(!GuestVirtAddr::new(0x0000_8000_0000_0000).is_canonical(false));
        assert!(GuestVirtAddr::new(0x0000_8000_0000_0000).is_canonical(true));
        assert!(!GuestVirtAddr::new(0x0100_0000_0000_0000).is_canonical(true));
    }

    #[test]
    fn sizes() {
        assert_eq!(PageSize::Size4M.bytes(), 4 << 20);
        assert_eq!(
            PageSize::of::<x86_64::structures::paging::Size2MiB>(),
            Some(PageSize::Size2M)
        );
        assert_eq!(
            PageSize::of::<x86_64::structures::paging::Size1GiB>(),
            Some(PageSize::Size1G)
        );
    }
}
