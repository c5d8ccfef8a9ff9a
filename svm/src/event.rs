//! EVENTINJ and EXITINTINFO: injecting events into a guest and reading the event that was being
//! delivered when a #VMEXIT happened.
//!
//! Manual: AMD64 Architecture Programmer's Manual Volume 2: System Programming, Publication
//! No. 24593, Revision 3.42, March 2024 — Section 15.20 "Event Injection" (Figure 15-5 "EVENTINJ
//! Field in the VMCB", Table 15-11 "Guest Exception or Interrupt Types") and Section 15.7.2
//! "Intercepts During IDT Interrupt Delivery" (EXITINTINFO, same encoding).
//!
//! Layout: bits 7:0 VECTOR, 10:8 TYPE, 11 EV (error code valid), 30:12 reserved (SBZ), 31 V
//! (valid), 63:32 ERRORCODE.

use bit_field::BitField;

/// The TYPE field of EVENTINJ/EXITINTINFO (bits 10:8; APM Table 15-11). Open: values the APM
/// leaves unused are data, and VMRUN rejects them with VMEXIT_INVALID.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct EventType(pub u8);

impl EventType {
    /// 0: external or virtual interrupt (INTR).
    pub const INTR: Self = Self(0);
    /// 2: NMI (the vector field is ignored).
    pub const NMI: Self = Self(2);
    /// 3: exception (fault or trap).
    pub const EXCEPTION: Self = Self(3);
    /// 4: software interrupt (INTn instruction).
    pub const SOFTWARE_INTERRUPT: Self = Self(4);

    /// The APM name of a defined type, or `None` for a reserved value.
    #[must_use]
    pub const fn name(self) -> Option<&'static str> {
        match self.0 {
            0 => Some("INTR"),
            2 => Some("NMI"),
            3 => Some("EXCEPTION"),
            4 => Some("SOFTWARE_INTERRUPT"),
            _ => None,
        }
    }

    /// Whether the APM defines this type (Table 15-11).
    #[must_use]
    pub const fn is_defined(self) -> bool {
        self.name().is_some()
    }
}

impl core::fmt::Debug for EventType {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.name() {
            Some(name) => write!(f, "EventType::{name}"),
            None => write!(f, "EventType({})", self.0),
        }
    }
}

/// An EVENTINJ or EXITINTINFO value (APM 15.20 Figure 15-5; 15.7.2).
///
/// The VMCB stores EVENTINJ at control-area offset 0A8h and EXITINTINFO at 088h.
#[repr(transparent)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct EventInjection(u64);

impl EventInjection {
    /// No event (V = 0).
    pub const NONE: Self = Self(0);

    /// Wraps a raw 64-bit value as read from the VMCB.
    #[must_use]
    pub const fn from_bits(bits: u64) -> Self {
        Self(bits)
    }

    /// The raw 64-bit value.
    #[must_use]
    pub const fn bits(self) -> u64 {
        self.0
    }

    /// A valid event of `event_type` with `vector` and, if `error_code` is `Some`, EV = 1 and
    /// that error code.
    #[must_use]
    pub fn new(event_type: EventType, vector: u8, error_code: Option<u32>) -> Self {
        let mut bits = 0u64;
        bits.set_bits(0..8, u64::from(vector));
        bits.set_bits(8..11, u64::from(event_type.0 & 7));
        bits.set_bit(11, error_code.is_some());
        bits.set_bit(31, true);
        bits.set_bits(32..64, u64::from(error_code.unwrap_or(0)));
        Self(bits)
    }

    /// An exception of `vector`, with an error code if given (TYPE = 3).
    #[must_use]
    pub fn exception(vector: u8, error_code: Option<u32>) -> Self {
        Self::new(EventType::EXCEPTION, vector, error_code)
    }

    /// An external interrupt of `vector` (TYPE = 0).
    #[must_use]
    pub fn interrupt(vector: u8) -> Self {
        Self::new(EventType::INTR, vector, None)
    }

    /// An NMI (TYPE = 2, vector 2).
    #[must_use]
    pub fn nmi() -> Self {
        Self::new(EventType::NMI, 2, None)
    }

    /// A software interrupt INTn (TYPE = 4). Needs NRIP save on real hardware (15.20).
    #[must_use]
    pub fn software_interrupt(vector: u8) -> Self {
        Self::new(EventType::SOFTWARE_INTERRUPT, vector, None)
    }

    /// V, bit 31: an event is present.
    #[must_use]
    pub fn valid(self) -> bool {
        self.0.get_bit(31)
    }

    /// VECTOR, bits 7:0.
    #[must_use]
    #[expect(clippy::cast_possible_truncation, reason = "an 8-bit field")]
    pub fn vector(self) -> u8 {
        self.0.get_bits(0..8) as u8
    }

    /// TYPE, bits 10:8.
    #[must_use]
    #[expect(clippy::cast_possible_truncation, reason = "a 3-bit field")]
    pub fn event_type(self) -> EventType {
        EventType(self.0.get_bits(8..11) as u8)
    }

    /// EV, bit 11: an error code is pushed.
    #[must_use]
    pub fn error_code_valid(self) -> bool {
        self.0.get_bit(11)
    }

    /// ERRORCODE, bits 63:32, if EV is set.
    #[must_use]
    #[expect(clippy::cast_possible_truncation, reason = "a 32-bit field")]
    pub fn error_code(self) -> Option<u32> {
        self.error_code_valid()
            .then(|| self.0.get_bits(32..64) as u32)
    }

    /// Bits 30:12, reserved (SBZ).
    #[must_use]
    pub fn reserved_bits(self) -> u64 {
        self.0.get_bits(12..31)
    }
}

impl core::fmt::Debug for EventInjection {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        if !self.valid() {
            return write!(f, "EventInjection(none, {:#x})", self.0);
        }
        f.debug_struct("EventInjection")
            .field("type", &self.event_type())
            .field("vector", &self.vector())
            .field("error_code", &self.error_code())
            .finish()
    }
}

/// Whether `vector` is an exception vector that TYPE = 3 may carry (APM 15.20: "TYPE = 3
/// (exception) has been specified with a vector that does not correspond to an exception (this
/// includes vector 2, which is an NMI, not an exception)" fails VMRUN). Vectors 0–31 except 2.
#[must_use]
pub const fn is_exception_vector(vector: u8) -> bool {
    vector < 32 && vector != 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_figure_15_5() {
        let gp = EventInjection::exception(13, Some(0x18));
        assert_eq!(gp.bits(), 0x0000_0018_8000_0B0D);
        assert!(gp.valid());
        assert_eq!(gp.vector(), 13);
        assert_eq!(gp.event_type(), EventType::EXCEPTION);
        assert_eq!(gp.error_code(), Some(0x18));

        let irq = EventInjection::interrupt(0x20);
        assert_eq!(irq.bits(), 0x8000_0020);
        assert_eq!(irq.error_code(), None);

        assert_eq!(EventInjection::nmi().bits(), 0x8000_0202);
        assert_eq!(EventInjection::software_interrupt(0x80).bits(), 0x8000_0480);
        assert!(!EventInjection::NONE.valid());
    }

    #[test]
    fn types_are_open() {
        let odd = EventInjection::from_bits(0x8000_0500);
        assert_eq!(odd.event_type(), EventType(5));
        assert_eq!(odd.event_type().name(), None);
        assert!(!odd.event_type().is_defined());
        assert_eq!(format!("{:?}", EventType(5)), "EventType(5)");
        assert_eq!(format!("{:?}", EventType::NMI), "EventType::NMI");
    }

    #[test]
    fn exception_vectors() {
        assert!(is_exception_vector(0));
        assert!(!is_exception_vector(2));
        assert!(is_exception_vector(31));
        assert!(!is_exception_vector(32));
    }
}
