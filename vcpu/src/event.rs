//! Events to deliver to the guest: exceptions, NMIs and external interrupts.
//!
//! Manuals: Intel® 64 and IA-32 Architectures Software Developer's Manual, Combined Volumes, Order
//! Number 325462-086US, December 2024, Vol. 3C 27.6 "Event Injection", 25.8.3 "VM-Entry Controls
//! for Event Injection", 27.7 "Special Features of VM Entry" (interrupt and NMI windows), 28.2.4
//! "Information for VM Exits That Occur During Event Delivery"; AMD64 Architecture Programmer's
//! Manual Volume 2: System Programming, Publication No. 24593, Revision 3.42, March 2024, 15.20
//! "Event Injection", 15.7.2 "Intercepts During IDT Interrupt Delivery" (EXITINTINFO).
//!
//! The vCPU keeps one pending slot per class. Before each entry it delivers, in order: an event
//! an exit interrupted (re-injection from IDT-vectoring information / EXITINTINFO), a pending
//! exception, an NMI if the guest is not blocking NMIs, an external interrupt if RFLAGS.IF = 1
//! and no STI/MOV SS shadow is active. What cannot go in yet waits, and the vCPU asks for an
//! interrupt- or NMI-window exit so it goes in as soon as the guest allows.

/// An event for the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Event {
    /// A hardware exception (vector 0–31 except 2) with its error code where the vector has one
    /// (#DF, #TS, #NP, #SS, #GP, #PF, #AC, #CP).
    Exception {
        /// The vector.
        vector: u8,
        /// The error code.
        error_code: Option<u32>,
    },
    /// A non-maskable interrupt (vector 2).
    Nmi,
    /// An external interrupt with this vector (16–255).
    Interrupt {
        /// The vector.
        vector: u8,
    },
}

impl Event {
    /// #UD (invalid opcode, vector 6).
    pub const UD: Self = Self::Exception {
        vector: 6,
        error_code: None,
    };
    /// #GP(0) (general protection, vector 13, error code 0).
    pub const GP0: Self = Self::Exception {
        vector: 13,
        error_code: Some(0),
    };
}

/// The events waiting for delivery.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Pending {
    pub(crate) exception: Option<(u8, Option<u32>)>,
    pub(crate) nmi: bool,
    pub(crate) interrupt: Option<u8>,
}

impl Pending {
    pub(crate) fn push(&mut self, event: Event) {
        match event {
            Event::Exception { vector, error_code } => {
                // A second exception while one is pending: the architectural rules would make
                // it a #DF in some cases; hvkit keeps the first and drops the later one.
                if self.exception.is_none() {
                    self.exception = Some((vector, error_code));
                }
            }
            Event::Nmi => self.nmi = true,
            Event::Interrupt { vector } => self.interrupt = Some(vector),
        }
    }
}
