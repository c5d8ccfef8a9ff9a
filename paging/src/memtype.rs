//! Memory types (an open newtype: new encodings are data, not panics).
//!
//! Manual: Intel® 64 and IA-32 Architectures Software Developer's Manual, Combined Volumes, Order
//! Number 325462-086US, December 2024, Vol. 3A Section 12.3 "Methods of Caching Available",
//! Table 12-2 "Memory Types and Their Properties", Section 12.11 "Memory Type Range Registers (MTRRs)"
//! and Vol. 3C Section 29.3.7 "EPT and Memory Typing".

use core::fmt;

/// A memory-type encoding as used by MTRRs, the PAT, EPT entries (bits 5:3) and the EPTP (bits 2:0).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(transparent)]
pub struct MemoryType(pub u8);

impl MemoryType {
    /// Uncacheable (UC), encoding 0.
    pub const UNCACHEABLE: Self = Self(0);
    /// Write combining (WC), encoding 1.
    pub const WRITE_COMBINING: Self = Self(1);
    /// Write-through (WT), encoding 4.
    pub const WRITE_THROUGH: Self = Self(4);
    /// Write-protected (WP), encoding 5.
    pub const WRITE_PROTECTED: Self = Self(5);
    /// Write-back (WB), encoding 6.
    pub const WRITE_BACK: Self = Self(6);
    /// UC- (PAT only, encoding 7; reserved in MTRRs and EPT entries).
    pub const UNCACHED_MINUS: Self = Self(7);

    /// The manual's short name, if the encoding is defined.
    #[must_use]
    pub const fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            0 => "UC",
            1 => "WC",
            4 => "WT",
            5 => "WP",
            6 => "WB",
            7 => "UC-",
            _ => return None,
        })
    }

    /// `true` if valid in an EPT leaf entry or an MTRR (0, 1, 4, 5, 6; SDM Vol. 3C 29.3.7).
    #[must_use]
    pub const fn is_valid_for_ept(self) -> bool {
        matches!(self.0, 0 | 1 | 4 | 5 | 6)
    }
}

impl fmt::Debug for MemoryType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => write!(f, "MemoryType::{n}"),
            None => write!(f, "MemoryType({})", self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(MemoryType::WRITE_BACK.name(), Some("WB"));
        assert_eq!(MemoryType(2).name(), None);
        assert!(!MemoryType(7).is_valid_for_ept());
        assert_eq!(std::format!("{:?}", MemoryType(3)), "MemoryType(3)");
        assert_eq!(
            std::format!("{:?}", MemoryType::UNCACHEABLE),
            "MemoryType::UC"
        );
    }
}
