//! Every VMCS field, typed by area, width and access.
//!
//! Reference: Intel® 64 and IA-32 Architectures Software Developer's Manual, Combined Volumes,
//! Order Number 325462-086US, December 2024: Appendix B "Field Encoding in VMCS" (Tables B-1 to
//! B-15) for the fields and their encodings, and Section 25.11.2 "VMREAD, VMWRITE, and Encodings
//! of VMCS Fields" (Table 25-21 "Structure of VMCS Component Encoding") for the meaning of the
//! encoding bits.
//!
//! # Encodings
//!
//! A field is named by a 32-bit encoding (Table 25-21):
//!
//! | bits  | meaning                                                          |
//! |-------|------------------------------------------------------------------|
//! | 0     | access type: 0 = full, 1 = high (only for 64-bit fields)          |
//! | 9:1   | index                                                            |
//! | 11:10 | type: 0 control, 1 VM-exit information (read-only), 2 guest state, 3 host state |
//! | 12    | reserved, 0                                                      |
//! | 14:13 | width: 0 16-bit, 1 64-bit, 2 32-bit, 3 natural-width             |
//! | 31:15 | reserved, 0                                                      |
//!
//! [`FieldEncoding`] decodes any `u32` this way (an open type: unknown encodings are data).
//!
//! # Typed fields
//!
//! Each (area, width) pair has its own type, and the HIGH half of a 64-bit field (access type 1)
//! has one more per area:
//!
//! | area                     | 16-bit             | 64-bit             | 32-bit             | natural-width           | 64-bit, HIGH half     |
//! |--------------------------|--------------------|--------------------|--------------------|-------------------------|-----------------------|
//! | control ([`control`])    | [`ControlField16`] | [`ControlField64`] | [`ControlField32`] | [`ControlFieldNatural`] | [`ControlFieldHigh`]  |
//! | read-only ([`exit_info`])| [`ReadOnlyField16`]| [`ReadOnlyField64`]| [`ReadOnlyField32`]| [`ReadOnlyFieldNatural`]| [`ReadOnlyFieldHigh`] |
//! | guest state ([`guest`])  | [`GuestField16`]   | [`GuestField64`]   | [`GuestField32`]   | [`GuestFieldNatural`]   | [`GuestFieldHigh`]    |
//! | host state ([`host`])    | [`HostField16`]    | [`HostField64`]    | [`HostField32`]    | [`HostFieldNatural`]    | [`HostFieldHigh`]     |
//!
//! Every type implements [`VmcsField`], whose `Value` is the Rust type of the field's contents
//! (`u16`, `u64`, `u32`, natural width as `u64`, HIGH halves as `u32`). Only the control,
//! guest-state and host-state types implement [`WritableField`], so the typed write of
//! [`crate::vmcs::VmcsWrite`] cannot name a read-only field, and its value must have the field's
//! width. The read-only types implement [`ExitInfoField`] instead.
//!
//! Every field constant is built by a constructor such as [`GuestField16::with_encoding`], which
//! checks in a `const` block, at compile time, that the encoding's width (bits 14:13), type (bits
//! 11:10) and access type (bit 0) match the Rust type and that the reserved bits (12 and 31:15)
//! are 0. A field declared with the wrong type does not build:
//!
//! ```compile_fail,E0080
//! use hvkit_vmx::fields::GuestField16;
//! // 0x4800 is "Guest ES limit", a 32-bit guest-state field: const evaluation fails.
//! const WRONG: GuestField16 = GuestField16::with_encoding::<0x4800>();
//! ```
//!
//! The same constructor is the way to name a field that a newer SDM adds before this crate
//! knows it; the check still runs at compile time, so it can never panic at run time:
//!
//! ```
//! use hvkit_vmx::fields::{self, GuestField16};
//! const CS: GuestField16 = GuestField16::with_encoding::<0x0802>();
//! assert_eq!(CS, fields::guest::CS_SELECTOR);
//! ```
//!
//! # The run-time table
//!
//! [`ALL`] lists every field of Appendix B once (full access), sorted by encoding, with its SDM
//! name, the name of its Rust constant, its width, area, table and the feature it depends on. It
//! serves dumps ([`crate::vmcs::dump`]), the software VMCS ([`crate::vmcs::SoftVmcs`]) and
//! checkers. [`lookup`] also resolves the HIGH encodings of 64-bit fields.
//!
//! Field counts (`ALL.len()` is [`COUNT`] = 201):
//!
//! | width   | control | read-only | guest | host | total |
//! |---------|---------|-----------|-------|------|-------|
//! | 16-bit  | 5       | 0         | 11    | 7    | 23    |
//! | 64-bit  | 38      | 3         | 21    | 12   | 74    |
//! | 32-bit  | 20      | 8         | 23    | 1    | 52    |
//! | natural | 8       | 6         | 23    | 15   | 52    |
//!
//! The 74 64-bit fields add 74 HIGH encodings, for 275 encodings in all.

use core::fmt;

/// The width of a VMCS field, from bits 14:13 of its encoding (SDM 25.11.2 "VMREAD, VMWRITE, and
/// Encodings of VMCS Fields", Table 25-21).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
#[repr(u8)]
pub enum Width {
    /// 0: 16-bit.
    Bits16 = 0,
    /// 1: 64-bit (full access reads all 64 bits; high access bits 63:32).
    Bits64 = 1,
    /// 2: 32-bit.
    Bits32 = 2,
    /// 3: natural width (64 bits on processors that support Intel 64).
    Natural = 3,
}

impl Width {
    /// The number of value bits a full access moves (natural width as 64).
    #[must_use]
    pub const fn bits(self) -> u32 {
        match self {
            Self::Bits16 => 16,
            Self::Bits32 => 32,
            Self::Bits64 | Self::Natural => 64,
        }
    }

    /// The mask of the value bits a full access moves.
    #[must_use]
    pub const fn mask(self) -> u64 {
        match self {
            Self::Bits16 => 0xffff,
            Self::Bits32 => 0xffff_ffff,
            Self::Bits64 | Self::Natural => u64::MAX,
        }
    }
}

/// The area (the SDM's "type") of a VMCS field, from bits 11:10 of its encoding (SDM 25.11.2,
/// Table 25-21).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
#[repr(u8)]
pub enum Area {
    /// 0: control fields (VM-execution, VM-exit and VM-entry controls).
    Control = 0,
    /// 1: VM-exit information, the read-only data fields.
    ReadOnly = 1,
    /// 2: guest-state area.
    Guest = 2,
    /// 3: host-state area.
    Host = 3,
}

/// The access type of an encoding, bit 0 (SDM 25.11.2, Table 25-21).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
#[repr(u8)]
pub enum Access {
    /// 0: full access (the whole field).
    Full = 0,
    /// 1: high access: bits 63:32 of a 64-bit field, as a 32-bit value.
    High = 1,
}

/// A raw VMCS field encoding, decoded per SDM 25.11.2 "VMREAD, VMWRITE, and Encodings of VMCS
/// Fields" (Table 25-21).
///
/// An open type: every `u32` decodes, and [`FieldEncoding::is_well_formed`] says whether the
/// reserved bits are clear. `Debug` prints the field's name when [`ALL`] knows it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct FieldEncoding(pub u32);

/// Bits 31:15 and 12 of an encoding are reserved (SDM Table 25-21).
const RESERVED_BITS: u32 = 0xffff_8000 | (1 << 12);

impl FieldEncoding {
    /// The width, bits 14:13.
    #[must_use]
    pub const fn width(self) -> Width {
        match (self.0 >> 13) & 3 {
            0 => Width::Bits16,
            1 => Width::Bits64,
            2 => Width::Bits32,
            _ => Width::Natural,
        }
    }

    /// The area (type), bits 11:10.
    #[must_use]
    pub const fn area(self) -> Area {
        match (self.0 >> 10) & 3 {
            0 => Area::Control,
            1 => Area::ReadOnly,
            2 => Area::Guest,
            _ => Area::Host,
        }
    }

    /// The index, bits 9:1.
    #[must_use]
    pub const fn index(self) -> u16 {
        // Nine bits always fit.
        ((self.0 >> 1) & 0x1ff) as u16
    }

    /// The access type, bit 0.
    #[must_use]
    pub const fn access(self) -> Access {
        if self.0 & 1 == 0 {
            Access::Full
        } else {
            Access::High
        }
    }

    /// Builds an encoding from its parts (SDM Table 25-21). `index` is taken modulo 512.
    #[must_use]
    pub const fn from_parts(width: Width, area: Area, index: u16, access: Access) -> Self {
        Self(
            ((width as u32) << 13)
                | ((area as u32) << 10)
                | (((index as u32) & 0x1ff) << 1)
                | (access as u32),
        )
    }

    /// True when the reserved bits (12 and 31:15) are 0 and high access is used only with a
    /// 64-bit width. Processors fail VMREAD/VMWRITE of other encodings with error 12.
    #[must_use]
    pub const fn is_well_formed(self) -> bool {
        self.0 & RESERVED_BITS == 0
            && (matches!(self.access(), Access::Full) || matches!(self.width(), Width::Bits64))
    }

    /// True when the encoding is well formed and has exactly this width, area and access type.
    /// This is the check behind every typed field's constructor.
    #[must_use]
    pub const fn has_shape(self, width: Width, area: Area, access: Access) -> bool {
        self.is_well_formed()
            && self.width() as u8 == width as u8
            && self.area() as u8 == area as u8
            && self.access() as u8 == access as u8
    }

    /// The full-access encoding of the same field (bit 0 cleared).
    #[must_use]
    pub const fn full(self) -> Self {
        Self(self.0 & !1)
    }

    /// The high-access encoding of the same field (bit 0 set); meaningful for 64-bit fields.
    #[must_use]
    pub const fn high(self) -> Self {
        Self(self.0 | 1)
    }

    /// The field this encoding names and how, if [`ALL`] knows it (see [`lookup`]).
    #[must_use]
    pub fn info(self) -> Option<(&'static FieldInfo, Access)> {
        lookup(self)
    }

    /// The name of the Rust constant for this encoding (`"guest::CS_SELECTOR"`), if known.
    /// High encodings are not named here; see [`FieldEncoding::info`].
    #[must_use]
    pub fn name(self) -> Option<&'static str> {
        match lookup(self) {
            Some((info, Access::Full)) => Some(info.ident),
            _ => None,
        }
    }
}

impl fmt::Debug for FieldEncoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match lookup(*self) {
            Some((info, Access::Full)) => write!(f, "{:#06x} ({})", self.0, info.ident),
            Some((info, Access::High)) => write!(f, "{:#06x} ({} high)", self.0, info.ident),
            None => write!(f, "{:#06x}", self.0),
        }
    }
}

impl fmt::Display for FieldEncoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl From<FieldEncoding> for u32 {
    fn from(encoding: FieldEncoding) -> Self {
        encoding.0
    }
}

mod sealed {
    pub trait Sealed {}
}

/// A typed VMCS field (SDM Appendix B "Field Encoding in VMCS").
///
/// Implemented only by the field types of this module (the trait is sealed), one per area and
/// width, so the encoding of a value of this type always has the shape `WIDTH`, `AREA`, `ACCESS`.
pub trait VmcsField: Copy + fmt::Debug + sealed::Sealed {
    /// The Rust type of the field's contents: `u16`, `u32`, or `u64` (64-bit and natural-width);
    /// `u32` for the HIGH half of a 64-bit field.
    type Value: Copy + fmt::Debug + PartialEq + Into<u64>;
    /// The width in the encoding's bits 14:13.
    const WIDTH: Width;
    /// The area in the encoding's bits 11:10.
    const AREA: Area;
    /// The access type in the encoding's bit 0.
    const ACCESS: Access;

    /// The field's encoding, as VMREAD and VMWRITE take it.
    fn encoding(self) -> FieldEncoding;

    /// The field's contents from a raw VMREAD result: the low bits that the field holds (VMREAD
    /// zero-extends, so this only drops bits that are 0 on hardware).
    fn value_from_raw(raw: u64) -> Self::Value;

    /// The field's entry in [`ALL`] (for a HIGH half, the entry of the 64-bit field).
    fn info(self) -> Option<&'static FieldInfo> {
        lookup(self.encoding()).map(|(info, _)| info)
    }
}

/// A field that VMWRITE may write: control, guest-state and host-state fields (SDM 31.3
/// "VMWRITE—Write Field to Virtual-Machine Control Structure": a VMWRITE to a VM-exit
/// information field fails with error 13 unless IA32_VMX_MISC bit 29 is set).
pub trait WritableField: VmcsField {}

/// A read-only VM-exit information field (SDM 25.9 "VM-Exit Information Fields"). Software VMCS
/// implementations accept these only through an explicit method such as
/// [`crate::vmcs::SoftVmcs::set_exit_info`].
pub trait ExitInfoField: VmcsField {}

#[expect(
    clippy::cast_possible_truncation,
    reason = "truncation to the field's width is the point: VMREAD zero-extends the field"
)]
const fn truncate_u16(raw: u64) -> u16 {
    raw as u16
}

#[expect(
    clippy::cast_possible_truncation,
    reason = "truncation to the field's width is the point: VMREAD zero-extends the field"
)]
const fn truncate_u32(raw: u64) -> u32 {
    raw as u32
}

const fn identity_u64(raw: u64) -> u64 {
    raw
}

macro_rules! field_types {
    ($(
        $(#[$doc:meta])*
        $name:ident: $value:ty = $conv:ident, $width:ident, $area:ident, $access:ident, $role:ident;
    )*) => {$(
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(FieldEncoding);

        impl $name {
            /// The field with this encoding, checked at compile time: the `const` block fails
            /// const evaluation (so the program does not build) unless the encoding's width, area
            /// and access bits match this type and its reserved bits are 0 (SDM 25.11.2,
            /// Table 25-21). It never panics at run time.
            #[must_use]
            pub const fn with_encoding<const ENCODING: u32>() -> Self {
                const {
                    assert!(
                        FieldEncoding(ENCODING).has_shape(Width::$width, Area::$area, Access::$access),
                        concat!("the encoding does not have the width, area and access type of ",
                            stringify!($name)),
                    );
                }
                Self(FieldEncoding(ENCODING))
            }

            /// The field's encoding.
            #[must_use]
            pub const fn encoding(self) -> FieldEncoding {
                self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({:?})"), self.0)
            }
        }

        impl sealed::Sealed for $name {}

        impl VmcsField for $name {
            type Value = $value;
            const WIDTH: Width = Width::$width;
            const AREA: Area = Area::$area;
            const ACCESS: Access = Access::$access;

            fn encoding(self) -> FieldEncoding {
                self.0
            }

            fn value_from_raw(raw: u64) -> $value {
                $conv(raw)
            }
        }

        impl $role for $name {}
    )*};
}

field_types! {
    /// A 16-bit control field (SDM Appendix B.1.1, Table B-1 "Encodings for 16-Bit Control Fields").
    ControlField16: u16 = truncate_u16, Bits16, Control, Full, WritableField;
    /// A 64-bit control field, full access (SDM Appendix B.2.1, Table B-4 "Encodings for 64-Bit
    /// Control Fields").
    ControlField64: u64 = identity_u64, Bits64, Control, Full, WritableField;
    /// The HIGH half (bits 63:32) of a 64-bit control field (SDM Table B-4, "(high)" rows).
    ControlFieldHigh: u32 = truncate_u32, Bits64, Control, High, WritableField;
    /// A 32-bit control field (SDM Appendix B.3.1, Table B-8 "Encodings for 32-Bit Control Fields").
    ControlField32: u32 = truncate_u32, Bits32, Control, Full, WritableField;
    /// A natural-width control field (SDM Appendix B.4.1, Table B-12 "Encodings for
    /// Natural-Width Control Fields").
    ControlFieldNatural: u64 = identity_u64, Natural, Control, Full, WritableField;

    /// A 16-bit read-only data field. Appendix B defines none yet; the type exists so that every
    /// (area, width) pair has one.
    ReadOnlyField16: u16 = truncate_u16, Bits16, ReadOnly, Full, ExitInfoField;
    /// A 64-bit read-only data field, full access (SDM Appendix B.2.2, Table B-5 "Encodings for
    /// 64-Bit Read-Only Data Field").
    ReadOnlyField64: u64 = identity_u64, Bits64, ReadOnly, Full, ExitInfoField;
    /// The HIGH half of a 64-bit read-only data field (SDM Table B-5, "(high)" rows).
    ReadOnlyFieldHigh: u32 = truncate_u32, Bits64, ReadOnly, High, ExitInfoField;
    /// A 32-bit read-only data field (SDM Appendix B.3.2, Table B-9 "Encodings for 32-Bit
    /// Read-Only Data Fields").
    ReadOnlyField32: u32 = truncate_u32, Bits32, ReadOnly, Full, ExitInfoField;
    /// A natural-width read-only data field (SDM Appendix B.4.2, Table B-13 "Encodings for
    /// Natural-Width Read-Only Data Fields").
    ReadOnlyFieldNatural: u64 = identity_u64, Natural, ReadOnly, Full, ExitInfoField;

    /// A 16-bit guest-state field (SDM Appendix B.1.2, Table B-2 "Encodings for 16-Bit
    /// Guest-State Fields").
    GuestField16: u16 = truncate_u16, Bits16, Guest, Full, WritableField;
    /// A 64-bit guest-state field, full access (SDM Appendix B.2.3, Table B-6 "Encodings for
    /// 64-Bit Guest-State Fields").
    GuestField64: u64 = identity_u64, Bits64, Guest, Full, WritableField;
    /// The HIGH half of a 64-bit guest-state field (SDM Table B-6, "(high)" rows).
    GuestFieldHigh: u32 = truncate_u32, Bits64, Guest, High, WritableField;
    /// A 32-bit guest-state field (SDM Appendix B.3.3, Table B-10 "Encodings for 32-Bit
    /// Guest-State Fields").
    GuestField32: u32 = truncate_u32, Bits32, Guest, Full, WritableField;
    /// A natural-width guest-state field (SDM Appendix B.4.3, Table B-14 "Encodings for
    /// Natural-Width Guest-State Fields").
    GuestFieldNatural: u64 = identity_u64, Natural, Guest, Full, WritableField;

    /// A 16-bit host-state field (SDM Appendix B.1.3, Table B-3 "Encodings for 16-Bit Host-State
    /// Fields").
    HostField16: u16 = truncate_u16, Bits16, Host, Full, WritableField;
    /// A 64-bit host-state field, full access (SDM Appendix B.2.4, Table B-7 "Encodings for 64-Bit
    /// Host-State Fields").
    HostField64: u64 = identity_u64, Bits64, Host, Full, WritableField;
    /// The HIGH half of a 64-bit host-state field (SDM Table B-7, "(high)" rows).
    HostFieldHigh: u32 = truncate_u32, Bits64, Host, High, WritableField;
    /// A 32-bit host-state field (SDM Appendix B.3.4, Table B-11 "Encodings for 32-Bit Host-State
    /// Field").
    HostField32: u32 = truncate_u32, Bits32, Host, Full, WritableField;
    /// A natural-width host-state field (SDM Appendix B.4.4, Table B-15 "Encodings for
    /// Natural-Width Host-State Fields").
    HostFieldNatural: u64 = identity_u64, Natural, Host, Full, WritableField;
}

macro_rules! high_halves {
    ($($full:ident => $high:ident;)*) => {$(
        impl $full {
            /// The HIGH half of this 64-bit field: bits 63:32 through the encoding with access
            /// type 1 (SDM 25.11.2, Table 25-21).
            #[must_use]
            pub const fn high(self) -> $high {
                $high(self.0.high())
            }
        }

        impl $high {
            /// The whole 64-bit field (full access) of this HIGH half.
            #[must_use]
            pub const fn full(self) -> $full {
                $full(self.0.full())
            }
        }
    )*};
}

high_halves! {
    ControlField64 => ControlFieldHigh;
    ReadOnlyField64 => ReadOnlyFieldHigh;
    GuestField64 => GuestFieldHigh;
    HostField64 => HostFieldHigh;
}

/// One row of the field table [`ALL`] (SDM Appendix B "Field Encoding in VMCS").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct FieldInfo {
    /// The field's name as the SDM's Appendix B gives it, e.g. `"Guest CS selector"`.
    pub name: &'static str,
    /// The path of the Rust constant below [`crate::fields`], e.g. `"guest::CS_SELECTOR"`.
    pub ident: &'static str,
    /// The full-access encoding.
    pub encoding: FieldEncoding,
    /// The width of the field's Rust type (the const check makes it agree with the encoding).
    pub width: Width,
    /// The area of the field's Rust type (the const check makes it agree with the encoding).
    pub area: Area,
    /// The Appendix B table that lists the field, e.g. `"B-2"`.
    pub table: &'static str,
    /// The VMX feature or control without which the field does not exist (the table footnotes),
    /// or `None` for fields every VMX processor has.
    pub feature: Option<&'static str>,
}

impl FieldInfo {
    /// The high-access encoding of a 64-bit field, or `None` for other widths.
    #[must_use]
    pub const fn high_encoding(&self) -> Option<FieldEncoding> {
        match self.width {
            Width::Bits64 => Some(self.encoding.high()),
            _ => None,
        }
    }

    /// True for the VM-exit information fields, which VMWRITE refuses (error 13).
    #[must_use]
    pub const fn is_read_only(&self) -> bool {
        matches!(self.area, Area::ReadOnly)
    }
}

impl fmt::Display for FieldInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({:#06x})", self.name, self.encoding.0)
    }
}

const PLACEHOLDER: FieldInfo = FieldInfo {
    name: "",
    ident: "",
    encoding: FieldEncoding(0),
    width: Width::Bits16,
    area: Area::Control,
    table: "",
    feature: None,
};

macro_rules! define_fields {
    (@feature) => { None };
    (@feature $feature:literal) => { Some($feature) };
    (
        $module:literal;
        $(
            $(#[$attr:meta])*
            $name:ident: $ty:ident = $enc:literal, $sdm:literal, $table:literal $(, $feature:literal)?;
        )*
    ) => {
        $(
            #[doc = concat!("**", $sdm, "**, encoding `", stringify!($enc),
                "` (SDM Appendix B \"Field Encoding in VMCS\", Table ", $table, ").")]
            $(
                #[doc = ""]
                #[doc = concat!("Exists only on processors that support ", $feature, ".")]
            )?
            $(#[$attr])*
            pub const $name: $ty = $ty::with_encoding::<$enc>();
        )*

        /// This module's rows of [`super::ALL`], in declaration order.
        pub(super) const INFO: &[FieldInfo] = &[$(
            FieldInfo {
                name: $sdm,
                ident: concat!($module, "::", stringify!($name)),
                encoding: $name.encoding(),
                width: <$ty as VmcsField>::WIDTH,
                area: <$ty as VmcsField>::AREA,
                table: $table,
                feature: define_fields!(@feature $($feature)?),
            },
        )*];
    };
}

pub mod control {
    //! Control fields: VM-execution, VM-exit and VM-entry controls (SDM 25.6 "VM-Execution
    //! Control Fields", 25.7 "VM-Exit Control Fields", 25.8 "VM-Entry Control Fields"; encodings
    //! in Appendix B Tables B-1 "Encodings for 16-Bit Control Fields", B-4 "Encodings for 64-Bit
    //! Control Fields", B-8 "Encodings for 32-Bit Control Fields" and B-12 "Encodings for
    //! Natural-Width Control Fields"; SDM 325462-086US).
    use super::{
        ControlField16, ControlField32, ControlField64, ControlFieldNatural, FieldInfo, VmcsField,
    };

    define_fields! {
        "control";
        // Table B-1: 16-bit control fields.
        #[doc(alias = "VPID")]
        VIRTUAL_PROCESSOR_ID: ControlField16 = 0x0000, "Virtual-processor identifier (VPID)", "B-1", "the 1-setting of the \"enable VPID\" VM-execution control";
        POSTED_INTERRUPT_NOTIFICATION_VECTOR: ControlField16 = 0x0002, "Posted-interrupt notification vector", "B-1", "the 1-setting of the \"process posted interrupts\" VM-execution control";
        EPTP_INDEX: ControlField16 = 0x0004, "EPTP index", "B-1", "the 1-setting of the \"EPT-violation #VE\" VM-execution control";
        HLAT_PREFIX_SIZE: ControlField16 = 0x0006, "HLAT prefix size", "B-1", "the 1-setting of the \"enable HLAT\" tertiary VM-execution control";
        LAST_PID_POINTER_INDEX: ControlField16 = 0x0008, "Last PID-pointer index", "B-1", "the 1-setting of the \"IPI virtualization\" tertiary VM-execution control";

        // Table B-4: 64-bit control fields.
        IO_BITMAP_A: ControlField64 = 0x2000, "Address of I/O bitmap A", "B-4";
        IO_BITMAP_B: ControlField64 = 0x2002, "Address of I/O bitmap B", "B-4";
        MSR_BITMAPS: ControlField64 = 0x2004, "Address of MSR bitmaps", "B-4", "the 1-setting of the \"use MSR bitmaps\" VM-execution control";
        VM_EXIT_MSR_STORE_ADDR: ControlField64 = 0x2006, "VM-exit MSR-store address", "B-4";
        VM_EXIT_MSR_LOAD_ADDR: ControlField64 = 0x2008, "VM-exit MSR-load address", "B-4";
        VM_ENTRY_MSR_LOAD_ADDR: ControlField64 = 0x200a, "VM-entry MSR-load address", "B-4";
        EXECUTIVE_VMCS_POINTER: ControlField64 = 0x200c, "Executive-VMCS pointer", "B-4";
        PML_ADDRESS: ControlField64 = 0x200e, "PML address", "B-4", "the 1-setting of the \"enable PML\" VM-execution control";
        TSC_OFFSET: ControlField64 = 0x2010, "TSC offset", "B-4";
        VIRTUAL_APIC_ADDRESS: ControlField64 = 0x2012, "Virtual-APIC address", "B-4", "the 1-setting of the \"use TPR shadow\" VM-execution control";
        APIC_ACCESS_ADDRESS: ControlField64 = 0x2014, "APIC-access address", "B-4", "the 1-setting of the \"virtualize APIC accesses\" VM-execution control";
        POSTED_INTERRUPT_DESC_ADDR: ControlField64 = 0x2016, "Posted-interrupt descriptor address", "B-4", "the 1-setting of the \"process posted interrupts\" VM-execution control";
        VM_FUNCTION_CONTROLS: ControlField64 = 0x2018, "VM-function controls", "B-4", "the 1-setting of the \"enable VM functions\" VM-execution control";
        #[doc(alias = "EPTP")]
        EPT_POINTER: ControlField64 = 0x201a, "EPT pointer (EPTP)", "B-4", "the 1-setting of the \"enable EPT\" VM-execution control";
        EOI_EXIT_BITMAP_0: ControlField64 = 0x201c, "EOI-exit bitmap 0 (EOI_EXIT0)", "B-4", "the 1-setting of the \"virtual-interrupt delivery\" VM-execution control";
        EOI_EXIT_BITMAP_1: ControlField64 = 0x201e, "EOI-exit bitmap 1 (EOI_EXIT1)", "B-4", "the 1-setting of the \"virtual-interrupt delivery\" VM-execution control";
        EOI_EXIT_BITMAP_2: ControlField64 = 0x2020, "EOI-exit bitmap 2 (EOI_EXIT2)", "B-4", "the 1-setting of the \"virtual-interrupt delivery\" VM-execution control";
        EOI_EXIT_BITMAP_3: ControlField64 = 0x2022, "EOI-exit bitmap 3 (EOI_EXIT3)", "B-4", "the 1-setting of the \"virtual-interrupt delivery\" VM-execution control";
        EPTP_LIST_ADDRESS: ControlField64 = 0x2024, "EPTP-list address", "B-4", "the 1-setting of the \"EPTP switching\" VM function";
        VMREAD_BITMAP_ADDRESS: ControlField64 = 0x2026, "VMREAD-bitmap address", "B-4", "the 1-setting of the \"VMCS shadowing\" VM-execution control";
        VMWRITE_BITMAP_ADDRESS: ControlField64 = 0x2028, "VMWRITE-bitmap address", "B-4", "the 1-setting of the \"VMCS shadowing\" VM-execution control";
        VIRTUALIZATION_EXCEPTION_INFO_ADDRESS: ControlField64 = 0x202a, "Virtualization-exception information address", "B-4", "the 1-setting of the \"EPT-violation #VE\" VM-execution control";
        XSS_EXITING_BITMAP: ControlField64 = 0x202c, "XSS-exiting bitmap", "B-4", "the 1-setting of the \"enable XSAVES/XRSTORS\" VM-execution control";
        ENCLS_EXITING_BITMAP: ControlField64 = 0x202e, "ENCLS-exiting bitmap", "B-4", "the 1-setting of the \"enable ENCLS exiting\" VM-execution control";
        SUB_PAGE_PERMISSION_TABLE_POINTER: ControlField64 = 0x2030, "Sub-page-permission-table pointer (SPPTP)", "B-4", "the 1-setting of the \"sub-page write permissions for EPT\" VM-execution control";
        TSC_MULTIPLIER: ControlField64 = 0x2032, "TSC multiplier", "B-4", "the 1-setting of the \"use TSC scaling\" VM-execution control";
        TERTIARY_PROC_BASED_VM_EXEC_CONTROL: ControlField64 = 0x2034, "Tertiary processor-based VM-execution controls", "B-4", "the 1-setting of the \"activate tertiary controls\" VM-execution control";
        ENCLV_EXITING_BITMAP: ControlField64 = 0x2036, "ENCLV-exiting bitmap", "B-4", "the 1-setting of the \"enable ENCLV exiting\" VM-execution control";
        LOW_PASID_DIRECTORY_ADDRESS: ControlField64 = 0x2038, "Low PASID directory address", "B-4", "the 1-setting of the \"PASID translation\" VM-execution control";
        HIGH_PASID_DIRECTORY_ADDRESS: ControlField64 = 0x203a, "High PASID directory address", "B-4", "the 1-setting of the \"PASID translation\" VM-execution control";
        SHARED_EPT_POINTER: ControlField64 = 0x203c, "SEAM shared EPT pointer", "B-4", "the 1-setting of the \"SEAM guest-physical address width\" VM-execution control (Intel TDX, SEAM VMX operation)";
        PCONFIG_EXITING_BITMAP: ControlField64 = 0x203e, "PCONFIG-exiting bitmap", "B-4", "the 1-setting of the \"enable PCONFIG\" VM-execution control";
        #[doc(alias = "HLATP")]
        HLAT_POINTER: ControlField64 = 0x2040, "Hypervisor-managed linear-address translation pointer (HLATP)", "B-4", "the 1-setting of the \"enable HLAT\" tertiary VM-execution control";
        PID_POINTER_TABLE_ADDRESS: ControlField64 = 0x2042, "PID-pointer table address", "B-4", "the 1-setting of the \"IPI virtualization\" tertiary VM-execution control";
        SECONDARY_VM_EXIT_CONTROLS: ControlField64 = 0x2044, "Secondary VM-exit controls", "B-4", "the 1-setting of the \"activate secondary controls\" primary VM-exit control";
        IA32_SPEC_CTRL_MASK: ControlField64 = 0x204a, "IA32_SPEC_CTRL mask", "B-4", "the 1-setting of the \"virtualize IA32_SPEC_CTRL\" tertiary VM-execution control";
        IA32_SPEC_CTRL_SHADOW: ControlField64 = 0x204c, "IA32_SPEC_CTRL shadow", "B-4", "the 1-setting of the \"virtualize IA32_SPEC_CTRL\" tertiary VM-execution control";
        INJECTED_EVENT_DATA: ControlField64 = 0x2052, "Injected-event data", "B-4", "FRED transitions";

        // Table B-8: 32-bit control fields.
        PIN_BASED_VM_EXEC_CONTROL: ControlField32 = 0x4000, "Pin-based VM-execution controls", "B-8";
        #[doc(alias = "CPU_BASED_VM_EXEC_CONTROL")]
        PRIMARY_PROC_BASED_VM_EXEC_CONTROL: ControlField32 = 0x4002, "Primary processor-based VM-execution controls", "B-8";
        EXCEPTION_BITMAP: ControlField32 = 0x4004, "Exception bitmap", "B-8";
        PAGE_FAULT_ERROR_CODE_MASK: ControlField32 = 0x4006, "Page-fault error-code mask", "B-8";
        PAGE_FAULT_ERROR_CODE_MATCH: ControlField32 = 0x4008, "Page-fault error-code match", "B-8";
        CR3_TARGET_COUNT: ControlField32 = 0x400a, "CR3-target count", "B-8";
        #[doc(alias = "VM_EXIT_CONTROLS")]
        PRIMARY_VM_EXIT_CONTROLS: ControlField32 = 0x400c, "Primary VM-exit controls", "B-8";
        VM_EXIT_MSR_STORE_COUNT: ControlField32 = 0x400e, "VM-exit MSR-store count", "B-8";
        VM_EXIT_MSR_LOAD_COUNT: ControlField32 = 0x4010, "VM-exit MSR-load count", "B-8";
        VM_ENTRY_CONTROLS: ControlField32 = 0x4012, "VM-entry controls", "B-8";
        VM_ENTRY_MSR_LOAD_COUNT: ControlField32 = 0x4014, "VM-entry MSR-load count", "B-8";
        #[doc = ""]
        #[doc = "Newer SDM revisions call this field \"Injected-event identification\"."]
        VM_ENTRY_INTERRUPTION_INFO: ControlField32 = 0x4016, "VM-entry interruption-information field", "B-8";
        #[doc = ""]
        #[doc = "Newer SDM revisions call this field \"Injected-event error code\"."]
        VM_ENTRY_EXCEPTION_ERROR_CODE: ControlField32 = 0x4018, "VM-entry exception error code", "B-8";
        VM_ENTRY_INSTRUCTION_LENGTH: ControlField32 = 0x401a, "VM-entry instruction length", "B-8";
        TPR_THRESHOLD: ControlField32 = 0x401c, "TPR threshold", "B-8", "the 1-setting of the \"use TPR shadow\" VM-execution control";
        #[doc(alias = "SECONDARY_VM_EXEC_CONTROL")]
        SECONDARY_PROC_BASED_VM_EXEC_CONTROL: ControlField32 = 0x401e, "Secondary processor-based VM-execution controls", "B-8", "the 1-setting of the \"activate secondary controls\" VM-execution control";
        PLE_GAP: ControlField32 = 0x4020, "PLE_Gap", "B-8", "the 1-setting of the \"PAUSE-loop exiting\" VM-execution control";
        PLE_WINDOW: ControlField32 = 0x4022, "PLE_Window", "B-8", "the 1-setting of the \"PAUSE-loop exiting\" VM-execution control";
        #[doc(alias = "NOTIFY_WINDOW")]
        INSTRUCTION_TIMEOUT_CONTROL: ControlField32 = 0x4024, "Instruction-timeout control", "B-8", "the 1-setting of the \"instruction timeout\" VM-execution control";
        #[doc = ""]
        #[doc = "Named \"SEAM-guest KeyID\" by the SDM; the HKID of Intel TDX."]
        #[doc(alias = "HKID")]
        SEAM_GUEST_KEYID: ControlField32 = 0x4026, "SEAM-guest KeyID", "B-8", "the 1-setting of the \"SEAM guest-physical address width\" VM-execution control (Intel TDX, SEAM VMX operation)";

        // Table B-12: natural-width control fields.
        CR0_GUEST_HOST_MASK: ControlFieldNatural = 0x6000, "CR0 guest/host mask", "B-12";
        CR4_GUEST_HOST_MASK: ControlFieldNatural = 0x6002, "CR4 guest/host mask", "B-12";
        CR0_READ_SHADOW: ControlFieldNatural = 0x6004, "CR0 read shadow", "B-12";
        CR4_READ_SHADOW: ControlFieldNatural = 0x6006, "CR4 read shadow", "B-12";
        CR3_TARGET_VALUE_0: ControlFieldNatural = 0x6008, "CR3-target value 0", "B-12";
        CR3_TARGET_VALUE_1: ControlFieldNatural = 0x600a, "CR3-target value 1", "B-12";
        CR3_TARGET_VALUE_2: ControlFieldNatural = 0x600c, "CR3-target value 2", "B-12";
        CR3_TARGET_VALUE_3: ControlFieldNatural = 0x600e, "CR3-target value 3", "B-12";
    }
}

pub mod exit_info {
    //! Read-only data fields: VM-exit information (SDM 25.9 "VM-Exit Information Fields";
    //! encodings in Appendix B Tables B-5 "Encodings for 64-Bit Read-Only Data Field", B-9
    //! "Encodings for 32-Bit Read-Only Data Fields" and B-13 "Encodings for Natural-Width
    //! Read-Only Data Fields"; SDM 325462-086US).
    //!
    //! None of these has a write path in [`crate::vmcs::VmcsWrite`].
    use super::{FieldInfo, ReadOnlyField32, ReadOnlyField64, ReadOnlyFieldNatural, VmcsField};

    define_fields! {
        "exit_info";
        // Table B-5: 64-bit read-only data fields.
        GUEST_PHYSICAL_ADDRESS: ReadOnlyField64 = 0x2400, "Guest-physical address", "B-5", "the 1-setting of the \"enable EPT\" VM-execution control";
        MSR_DATA: ReadOnlyField64 = 0x2402, "MSR data", "B-5", "the 1-setting of the \"enable MSR-list instructions\" VM-execution control";
        ORIGINAL_EVENT_DATA: ReadOnlyField64 = 0x2404, "Original-event data", "B-5", "FRED transitions";

        // Table B-9: 32-bit read-only data fields.
        VM_INSTRUCTION_ERROR: ReadOnlyField32 = 0x4400, "VM-instruction error", "B-9";
        EXIT_REASON: ReadOnlyField32 = 0x4402, "Exit reason", "B-9";
        #[doc = ""]
        #[doc = "Newer SDM revisions call this field \"Exiting-event identification\"."]
        VM_EXIT_INTERRUPTION_INFO: ReadOnlyField32 = 0x4404, "VM-exit interruption information", "B-9";
        #[doc = ""]
        #[doc = "Newer SDM revisions call this field \"Exiting-event error code\"."]
        VM_EXIT_INTERRUPTION_ERROR_CODE: ReadOnlyField32 = 0x4406, "VM-exit interruption error code", "B-9";
        #[doc = ""]
        #[doc = "Newer SDM revisions call this field \"Original-event identification\"."]
        IDT_VECTORING_INFO: ReadOnlyField32 = 0x4408, "IDT-vectoring information field", "B-9";
        #[doc = ""]
        #[doc = "Newer SDM revisions call this field \"Original-event error code\"."]
        IDT_VECTORING_ERROR_CODE: ReadOnlyField32 = 0x440a, "IDT-vectoring error code", "B-9";
        VM_EXIT_INSTRUCTION_LENGTH: ReadOnlyField32 = 0x440c, "VM-exit instruction length", "B-9";
        VM_EXIT_INSTRUCTION_INFO: ReadOnlyField32 = 0x440e, "VM-exit instruction information", "B-9";

        // Table B-13: natural-width read-only data fields.
        EXIT_QUALIFICATION: ReadOnlyFieldNatural = 0x6400, "Exit qualification", "B-13";
        IO_RCX: ReadOnlyFieldNatural = 0x6402, "I/O RCX", "B-13";
        IO_RSI: ReadOnlyFieldNatural = 0x6404, "I/O RSI", "B-13";
        IO_RDI: ReadOnlyFieldNatural = 0x6406, "I/O RDI", "B-13";
        IO_RIP: ReadOnlyFieldNatural = 0x6408, "I/O RIP", "B-13";
        GUEST_LINEAR_ADDRESS: ReadOnlyFieldNatural = 0x640a, "Guest-linear address", "B-13";
    }
}

pub mod guest {
    //! Guest-state fields (SDM 25.4 "Guest-State Area"; encodings in Appendix B Tables B-2
    //! "Encodings for 16-Bit Guest-State Fields", B-6 "Encodings for 64-Bit Guest-State Fields",
    //! B-10 "Encodings for 32-Bit Guest-State Fields" and B-14 "Encodings for Natural-Width
    //! Guest-State Fields"; SDM 325462-086US).
    use super::{
        FieldInfo, GuestField16, GuestField32, GuestField64, GuestFieldNatural, VmcsField,
    };

    define_fields! {
        "guest";
        // Table B-2: 16-bit guest-state fields.
        ES_SELECTOR: GuestField16 = 0x0800, "Guest ES selector", "B-2";
        CS_SELECTOR: GuestField16 = 0x0802, "Guest CS selector", "B-2";
        SS_SELECTOR: GuestField16 = 0x0804, "Guest SS selector", "B-2";
        DS_SELECTOR: GuestField16 = 0x0806, "Guest DS selector", "B-2";
        FS_SELECTOR: GuestField16 = 0x0808, "Guest FS selector", "B-2";
        GS_SELECTOR: GuestField16 = 0x080a, "Guest GS selector", "B-2";
        LDTR_SELECTOR: GuestField16 = 0x080c, "Guest LDTR selector", "B-2";
        TR_SELECTOR: GuestField16 = 0x080e, "Guest TR selector", "B-2";
        INTERRUPT_STATUS: GuestField16 = 0x0810, "Guest interrupt status", "B-2", "the 1-setting of the \"virtual-interrupt delivery\" VM-execution control";
        PML_INDEX: GuestField16 = 0x0812, "PML index", "B-2", "the 1-setting of the \"enable PML\" VM-execution control";
        UINV: GuestField16 = 0x0814, "Guest UINV", "B-2", "the 1-setting of either the \"clear UINV\" VM-exit control or the \"load UINV\" VM-entry control";

        // Table B-6: 64-bit guest-state fields.
        VMCS_LINK_POINTER: GuestField64 = 0x2800, "VMCS link pointer", "B-6";
        IA32_DEBUGCTL: GuestField64 = 0x2802, "Guest IA32_DEBUGCTL", "B-6";
        IA32_PAT: GuestField64 = 0x2804, "Guest IA32_PAT", "B-6", "the 1-setting of the \"load IA32_PAT\" VM-entry control or the \"save IA32_PAT\" VM-exit control";
        IA32_EFER: GuestField64 = 0x2806, "Guest IA32_EFER", "B-6", "the 1-setting of the \"load IA32_EFER\" VM-entry control or the \"save IA32_EFER\" VM-exit control";
        IA32_PERF_GLOBAL_CTRL: GuestField64 = 0x2808, "Guest IA32_PERF_GLOBAL_CTRL", "B-6", "the 1-setting of the \"load IA32_PERF_GLOBAL_CTRL\" VM-entry control";
        PDPTE0: GuestField64 = 0x280a, "Guest PDPTE0", "B-6", "the 1-setting of the \"enable EPT\" VM-execution control";
        PDPTE1: GuestField64 = 0x280c, "Guest PDPTE1", "B-6", "the 1-setting of the \"enable EPT\" VM-execution control";
        PDPTE2: GuestField64 = 0x280e, "Guest PDPTE2", "B-6", "the 1-setting of the \"enable EPT\" VM-execution control";
        PDPTE3: GuestField64 = 0x2810, "Guest PDPTE3", "B-6", "the 1-setting of the \"enable EPT\" VM-execution control";
        IA32_BNDCFGS: GuestField64 = 0x2812, "Guest IA32_BNDCFGS", "B-6", "the 1-setting of the \"load IA32_BNDCFGS\" VM-entry control or the \"clear IA32_BNDCFGS\" VM-exit control";
        IA32_RTIT_CTL: GuestField64 = 0x2814, "Guest IA32_RTIT_CTL", "B-6", "the 1-setting of the \"load IA32_RTIT_CTL\" VM-entry control or the \"clear IA32_RTIT_CTL\" VM-exit control";
        IA32_LBR_CTL: GuestField64 = 0x2816, "Guest IA32_LBR_CTL", "B-6", "the 1-setting of the \"load IA32_LBR_CTL\" VM-entry control or the \"clear IA32_LBR_CTL\" VM-exit control";
        IA32_PKRS: GuestField64 = 0x2818, "Guest IA32_PKRS", "B-6", "the 1-setting of the \"load PKRS\" VM-entry control";
        IA32_FRED_CONFIG: GuestField64 = 0x281a, "Guest IA32_FRED_CONFIG", "B-6", "the 1-setting of the \"load FRED\" VM-entry control or the \"save FRED\" VM-exit control";
        IA32_FRED_RSP1: GuestField64 = 0x281c, "Guest IA32_FRED_RSP1", "B-6", "the 1-setting of the \"load FRED\" VM-entry control or the \"save FRED\" VM-exit control";
        IA32_FRED_RSP2: GuestField64 = 0x281e, "Guest IA32_FRED_RSP2", "B-6", "the 1-setting of the \"load FRED\" VM-entry control or the \"save FRED\" VM-exit control";
        IA32_FRED_RSP3: GuestField64 = 0x2820, "Guest IA32_FRED_RSP3", "B-6", "the 1-setting of the \"load FRED\" VM-entry control or the \"save FRED\" VM-exit control";
        IA32_FRED_STKLVLS: GuestField64 = 0x2822, "Guest IA32_FRED_STKLVLS", "B-6", "the 1-setting of the \"load FRED\" VM-entry control or the \"save FRED\" VM-exit control";
        IA32_FRED_SSP1: GuestField64 = 0x2824, "Guest IA32_FRED_SSP1", "B-6", "the 1-setting of the \"load FRED\" VM-entry control or the \"save FRED\" VM-exit control";
        IA32_FRED_SSP2: GuestField64 = 0x2826, "Guest IA32_FRED_SSP2", "B-6", "the 1-setting of the \"load FRED\" VM-entry control or the \"save FRED\" VM-exit control";
        IA32_FRED_SSP3: GuestField64 = 0x2828, "Guest IA32_FRED_SSP3", "B-6", "the 1-setting of the \"load FRED\" VM-entry control or the \"save FRED\" VM-exit control";

        // Table B-10: 32-bit guest-state fields.
        ES_LIMIT: GuestField32 = 0x4800, "Guest ES limit", "B-10";
        CS_LIMIT: GuestField32 = 0x4802, "Guest CS limit", "B-10";
        SS_LIMIT: GuestField32 = 0x4804, "Guest SS limit", "B-10";
        DS_LIMIT: GuestField32 = 0x4806, "Guest DS limit", "B-10";
        FS_LIMIT: GuestField32 = 0x4808, "Guest FS limit", "B-10";
        GS_LIMIT: GuestField32 = 0x480a, "Guest GS limit", "B-10";
        LDTR_LIMIT: GuestField32 = 0x480c, "Guest LDTR limit", "B-10";
        TR_LIMIT: GuestField32 = 0x480e, "Guest TR limit", "B-10";
        GDTR_LIMIT: GuestField32 = 0x4810, "Guest GDTR limit", "B-10";
        IDTR_LIMIT: GuestField32 = 0x4812, "Guest IDTR limit", "B-10";
        ES_ACCESS_RIGHTS: GuestField32 = 0x4814, "Guest ES access rights", "B-10";
        CS_ACCESS_RIGHTS: GuestField32 = 0x4816, "Guest CS access rights", "B-10";
        SS_ACCESS_RIGHTS: GuestField32 = 0x4818, "Guest SS access rights", "B-10";
        DS_ACCESS_RIGHTS: GuestField32 = 0x481a, "Guest DS access rights", "B-10";
        FS_ACCESS_RIGHTS: GuestField32 = 0x481c, "Guest FS access rights", "B-10";
        GS_ACCESS_RIGHTS: GuestField32 = 0x481e, "Guest GS access rights", "B-10";
        LDTR_ACCESS_RIGHTS: GuestField32 = 0x4820, "Guest LDTR access rights", "B-10";
        TR_ACCESS_RIGHTS: GuestField32 = 0x4822, "Guest TR access rights", "B-10";
        INTERRUPTIBILITY_STATE: GuestField32 = 0x4824, "Guest interruptibility state", "B-10";
        ACTIVITY_STATE: GuestField32 = 0x4826, "Guest activity state", "B-10";
        SMBASE: GuestField32 = 0x4828, "Guest SMBASE", "B-10";
        IA32_SYSENTER_CS: GuestField32 = 0x482a, "Guest IA32_SYSENTER_CS", "B-10";
        VMX_PREEMPTION_TIMER_VALUE: GuestField32 = 0x482e, "VMX-preemption timer value", "B-10", "the 1-setting of the \"activate VMX-preemption timer\" VM-execution control";

        // Table B-14: natural-width guest-state fields.
        CR0: GuestFieldNatural = 0x6800, "Guest CR0", "B-14";
        CR3: GuestFieldNatural = 0x6802, "Guest CR3", "B-14";
        CR4: GuestFieldNatural = 0x6804, "Guest CR4", "B-14";
        ES_BASE: GuestFieldNatural = 0x6806, "Guest ES base", "B-14";
        CS_BASE: GuestFieldNatural = 0x6808, "Guest CS base", "B-14";
        SS_BASE: GuestFieldNatural = 0x680a, "Guest SS base", "B-14";
        DS_BASE: GuestFieldNatural = 0x680c, "Guest DS base", "B-14";
        FS_BASE: GuestFieldNatural = 0x680e, "Guest FS base", "B-14";
        GS_BASE: GuestFieldNatural = 0x6810, "Guest GS base", "B-14";
        LDTR_BASE: GuestFieldNatural = 0x6812, "Guest LDTR base", "B-14";
        TR_BASE: GuestFieldNatural = 0x6814, "Guest TR base", "B-14";
        GDTR_BASE: GuestFieldNatural = 0x6816, "Guest GDTR base", "B-14";
        IDTR_BASE: GuestFieldNatural = 0x6818, "Guest IDTR base", "B-14";
        DR7: GuestFieldNatural = 0x681a, "Guest DR7", "B-14";
        RSP: GuestFieldNatural = 0x681c, "Guest RSP", "B-14";
        RIP: GuestFieldNatural = 0x681e, "Guest RIP", "B-14";
        RFLAGS: GuestFieldNatural = 0x6820, "Guest RFLAGS", "B-14";
        PENDING_DEBUG_EXCEPTIONS: GuestFieldNatural = 0x6822, "Guest pending debug exceptions", "B-14";
        IA32_SYSENTER_ESP: GuestFieldNatural = 0x6824, "Guest IA32_SYSENTER_ESP", "B-14";
        IA32_SYSENTER_EIP: GuestFieldNatural = 0x6826, "Guest IA32_SYSENTER_EIP", "B-14";
        IA32_S_CET: GuestFieldNatural = 0x6828, "Guest IA32_S_CET", "B-14", "the 1-setting of the \"load CET state\" VM-entry control";
        SSP: GuestFieldNatural = 0x682a, "Guest SSP", "B-14", "the 1-setting of the \"load CET state\" VM-entry control";
        IA32_INTERRUPT_SSP_TABLE_ADDR: GuestFieldNatural = 0x682c, "Guest IA32_INTERRUPT_SSP_TABLE_ADDR", "B-14", "the 1-setting of the \"load CET state\" VM-entry control";
    }
}

pub mod host {
    //! Host-state fields (SDM 25.5 "Host-State Area"; encodings in Appendix B Tables B-3
    //! "Encodings for 16-Bit Host-State Fields", B-7 "Encodings for 64-Bit Host-State Fields",
    //! B-11 "Encodings for 32-Bit Host-State Field" and B-15 "Encodings for Natural-Width
    //! Host-State Fields"; SDM 325462-086US).
    use super::{FieldInfo, HostField16, HostField32, HostField64, HostFieldNatural, VmcsField};

    define_fields! {
        "host";
        // Table B-3: 16-bit host-state fields.
        ES_SELECTOR: HostField16 = 0x0c00, "Host ES selector", "B-3";
        CS_SELECTOR: HostField16 = 0x0c02, "Host CS selector", "B-3";
        SS_SELECTOR: HostField16 = 0x0c04, "Host SS selector", "B-3";
        DS_SELECTOR: HostField16 = 0x0c06, "Host DS selector", "B-3";
        FS_SELECTOR: HostField16 = 0x0c08, "Host FS selector", "B-3";
        GS_SELECTOR: HostField16 = 0x0c0a, "Host GS selector", "B-3";
        TR_SELECTOR: HostField16 = 0x0c0c, "Host TR selector", "B-3";

        // Table B-7: 64-bit host-state fields.
        IA32_PAT: HostField64 = 0x2c00, "Host IA32_PAT", "B-7", "the 1-setting of the \"load IA32_PAT\" VM-exit control";
        IA32_EFER: HostField64 = 0x2c02, "Host IA32_EFER", "B-7", "the 1-setting of the \"load IA32_EFER\" VM-exit control";
        IA32_PERF_GLOBAL_CTRL: HostField64 = 0x2c04, "Host IA32_PERF_GLOBAL_CTRL", "B-7", "the 1-setting of the \"load IA32_PERF_GLOBAL_CTRL\" VM-exit control";
        IA32_PKRS: HostField64 = 0x2c06, "Host IA32_PKRS", "B-7", "the 1-setting of the \"load PKRS\" VM-exit control";
        IA32_FRED_CONFIG: HostField64 = 0x2c08, "Host IA32_FRED_CONFIG", "B-7", "the 1-setting of the \"load FRED\" (secondary) VM-exit control";
        IA32_FRED_RSP1: HostField64 = 0x2c0a, "Host IA32_FRED_RSP1", "B-7", "the 1-setting of the \"load FRED\" (secondary) VM-exit control";
        IA32_FRED_RSP2: HostField64 = 0x2c0c, "Host IA32_FRED_RSP2", "B-7", "the 1-setting of the \"load FRED\" (secondary) VM-exit control";
        IA32_FRED_RSP3: HostField64 = 0x2c0e, "Host IA32_FRED_RSP3", "B-7", "the 1-setting of the \"load FRED\" (secondary) VM-exit control";
        IA32_FRED_STKLVLS: HostField64 = 0x2c10, "Host IA32_FRED_STKLVLS", "B-7", "the 1-setting of the \"load FRED\" (secondary) VM-exit control";
        IA32_FRED_SSP1: HostField64 = 0x2c12, "Host IA32_FRED_SSP1", "B-7", "the 1-setting of the \"load FRED\" (secondary) VM-exit control";
        IA32_FRED_SSP2: HostField64 = 0x2c14, "Host IA32_FRED_SSP2", "B-7", "the 1-setting of the \"load FRED\" (secondary) VM-exit control";
        IA32_FRED_SSP3: HostField64 = 0x2c16, "Host IA32_FRED_SSP3", "B-7", "the 1-setting of the \"load FRED\" (secondary) VM-exit control";

        // Table B-11: 32-bit host-state field.
        IA32_SYSENTER_CS: HostField32 = 0x4c00, "Host IA32_SYSENTER_CS", "B-11";

        // Table B-15: natural-width host-state fields.
        CR0: HostFieldNatural = 0x6c00, "Host CR0", "B-15";
        CR3: HostFieldNatural = 0x6c02, "Host CR3", "B-15";
        CR4: HostFieldNatural = 0x6c04, "Host CR4", "B-15";
        FS_BASE: HostFieldNatural = 0x6c06, "Host FS base", "B-15";
        GS_BASE: HostFieldNatural = 0x6c08, "Host GS base", "B-15";
        TR_BASE: HostFieldNatural = 0x6c0a, "Host TR base", "B-15";
        GDTR_BASE: HostFieldNatural = 0x6c0c, "Host GDTR base", "B-15";
        IDTR_BASE: HostFieldNatural = 0x6c0e, "Host IDTR base", "B-15";
        IA32_SYSENTER_ESP: HostFieldNatural = 0x6c10, "Host IA32_SYSENTER_ESP", "B-15";
        IA32_SYSENTER_EIP: HostFieldNatural = 0x6c12, "Host IA32_SYSENTER_EIP", "B-15";
        RSP: HostFieldNatural = 0x6c14, "Host RSP", "B-15";
        RIP: HostFieldNatural = 0x6c16, "Host RIP", "B-15";
        IA32_S_CET: HostFieldNatural = 0x6c18, "Host IA32_S_CET", "B-15", "the 1-setting of the \"load CET state\" VM-exit control";
        SSP: HostFieldNatural = 0x6c1a, "Host SSP", "B-15", "the 1-setting of the \"load CET state\" VM-exit control";
        IA32_INTERRUPT_SSP_TABLE_ADDR: HostFieldNatural = 0x6c1c, "Host IA32_INTERRUPT_SSP_TABLE_ADDR", "B-15", "the 1-setting of the \"load CET state\" VM-exit control";
    }
}

/// The number of fields in [`ALL`].
pub const COUNT: usize =
    control::INFO.len() + exit_info::INFO.len() + guest::INFO.len() + host::INFO.len();

/// Concatenates the per-area tables and sorts the result by encoding (insertion sort: this runs
/// once, at compile time).
const fn build_table() -> [FieldInfo; COUNT] {
    let parts: [&[FieldInfo]; 4] = [control::INFO, exit_info::INFO, guest::INFO, host::INFO];
    let mut table = [PLACEHOLDER; COUNT];
    let mut next = 0;
    let mut part = 0;
    while part < parts.len() {
        let mut row = 0;
        while row < parts[part].len() {
            table[next] = parts[part][row];
            next += 1;
            row += 1;
        }
        part += 1;
    }
    let mut i = 1;
    while i < COUNT {
        let mut j = i;
        while j > 0 && table[j - 1].encoding.0 > table[j].encoding.0 {
            let swap = table[j - 1];
            table[j - 1] = table[j];
            table[j] = swap;
            j -= 1;
        }
        i += 1;
    }
    table
}

const TABLE: [FieldInfo; COUNT] = build_table();

/// Every VMCS field of SDM 325462-086US Appendix B "Field Encoding in VMCS" (Tables B-1 to
/// B-15), one row per field with its full-access encoding, sorted by encoding.
///
/// The HIGH halves of 64-bit fields have no rows of their own; see
/// [`FieldInfo::high_encoding`] and [`lookup`].
pub const ALL: &[FieldInfo] = &TABLE;

/// The position in [`ALL`] of the field whose *full-access* encoding is `encoding`.
#[must_use]
pub fn index_of(encoding: FieldEncoding) -> Option<usize> {
    ALL.binary_search_by_key(&encoding.0, |info| info.encoding.0)
        .ok()
}

/// The field an encoding names and the access type it uses, for full and HIGH encodings.
///
/// `None` for encodings that are not well formed, HIGH encodings of fields that are not 64-bit,
/// and fields that [`ALL`] does not know.
#[must_use]
pub fn lookup(encoding: FieldEncoding) -> Option<(&'static FieldInfo, Access)> {
    if !encoding.is_well_formed() {
        return None;
    }
    let info = &ALL[index_of(encoding.full())?];
    match encoding.access() {
        Access::Full => Some((info, Access::Full)),
        Access::High if matches!(info.width, Width::Bits64) => Some((info, Access::High)),
        Access::High => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn table_has_201_fields_sorted_without_duplicates() {
        assert_eq!(ALL.len(), COUNT);
        assert_eq!(COUNT, 201);
        for pair in ALL.windows(2) {
            assert!(
                pair[0].encoding.0 < pair[1].encoding.0,
                "{} and {} are out of order or duplicated",
                pair[0].ident,
                pair[1].ident
            );
        }
        let names: BTreeSet<_> = ALL.iter().map(|info| info.ident).collect();
        assert_eq!(names.len(), ALL.len(), "duplicate Rust names");
    }

    #[test]
    fn counts_by_width_and_area_match_the_module_docs() {
        let count = |w: Width, a: Area| {
            ALL.iter()
                .filter(|info| info.width == w && info.area == a)
                .count()
        };
        let expected = [
            (Width::Bits16, [5, 0, 11, 7]),
            (Width::Bits64, [38, 3, 21, 12]),
            (Width::Bits32, [20, 8, 23, 1]),
            (Width::Natural, [8, 6, 23, 15]),
        ];
        for (width, per_area) in expected {
            for (area, n) in [Area::Control, Area::ReadOnly, Area::Guest, Area::Host]
                .into_iter()
                .zip(per_area)
            {
                assert_eq!(count(width, area), n, "{width:?} {area:?}");
            }
        }
    }

    #[test]
    fn every_entry_decodes_back_to_its_declared_width_and_area() {
        for info in ALL {
            let e = info.encoding;
            assert!(e.is_well_formed(), "{}", info.ident);
            assert_eq!(e.width(), info.width, "{}", info.ident);
            assert_eq!(e.area(), info.area, "{}", info.ident);
            assert_eq!(e.access(), Access::Full, "{}", info.ident);
            assert_eq!(
                FieldEncoding::from_parts(info.width, info.area, e.index(), Access::Full),
                e
            );
            assert_eq!(lookup(e), Some((info, Access::Full)));
            assert_eq!(e.name(), Some(info.ident));
            // The module a field lives in matches its area.
            let module = info.ident.split("::").next().unwrap_or_default();
            let expected = match info.area {
                Area::Control => "control",
                Area::ReadOnly => "exit_info",
                Area::Guest => "guest",
                Area::Host => "host",
            };
            assert_eq!(module, expected, "{}", info.ident);
            // The Appendix B table matches the width and area.
            let table = match (info.width, info.area) {
                (Width::Bits16, Area::Control) => "B-1",
                (Width::Bits16, Area::Guest) => "B-2",
                (Width::Bits16, Area::Host) => "B-3",
                (Width::Bits64, Area::Control) => "B-4",
                (Width::Bits64, Area::ReadOnly) => "B-5",
                (Width::Bits64, Area::Guest) => "B-6",
                (Width::Bits64, Area::Host) => "B-7",
                (Width::Bits32, Area::Control) => "B-8",
                (Width::Bits32, Area::ReadOnly) => "B-9",
                (Width::Bits32, Area::Guest) => "B-10",
                (Width::Bits32, Area::Host) => "B-11",
                (Width::Natural, Area::Control) => "B-12",
                (Width::Natural, Area::ReadOnly) => "B-13",
                (Width::Natural, Area::Guest) => "B-14",
                (Width::Natural, Area::Host) => "B-15",
                other => panic!("no table for {other:?}"),
            };
            assert_eq!(info.table, table, "{}", info.ident);
        }
    }

    #[test]
    fn high_encodings_resolve_only_for_64_bit_fields() {
        let mut highs = 0;
        for info in ALL {
            let high = info.encoding.high();
            match info.high_encoding() {
                Some(h) => {
                    highs += 1;
                    assert_eq!(h, high);
                    assert!(h.is_well_formed());
                    assert_eq!(lookup(h), Some((info, Access::High)));
                    assert_eq!(h.name(), None);
                }
                None => {
                    assert!(!high.is_well_formed(), "{}", info.ident);
                    assert_eq!(lookup(high), None);
                }
            }
        }
        assert_eq!(highs, 74);
        assert_eq!(
            guest::VMCS_LINK_POINTER.high().encoding(),
            FieldEncoding(0x2801)
        );
        assert_eq!(
            guest::VMCS_LINK_POINTER.high().full(),
            guest::VMCS_LINK_POINTER
        );
    }

    #[test]
    fn decoder_accepts_any_u32() {
        let e = FieldEncoding(0x6c1d);
        assert_eq!(e.width(), Width::Natural);
        assert_eq!(e.area(), Area::Host);
        assert_eq!(e.index(), 14);
        assert_eq!(e.access(), Access::High);
        assert!(!e.is_well_formed(), "high access of a natural-width field");
        assert!(!FieldEncoding(0x1000).is_well_formed(), "bit 12");
        assert!(!FieldEncoding(0x8000).is_well_formed(), "bit 15");
        assert!(!FieldEncoding(u32::MAX).is_well_formed());
        assert_eq!(lookup(FieldEncoding(0x482c)), None, "unused index");
        assert_eq!(FieldEncoding(u32::MAX).index(), 0x1ff);
    }

    #[test]
    fn known_encodings_from_the_issue() {
        let cases: [(FieldEncoding, &str); 22] = [
            (
                control::TERTIARY_PROC_BASED_VM_EXEC_CONTROL.encoding(),
                "control::TERTIARY_PROC_BASED_VM_EXEC_CONTROL",
            ),
            (
                FieldEncoding(0x2034),
                "control::TERTIARY_PROC_BASED_VM_EXEC_CONTROL",
            ),
            (FieldEncoding(0x0006), "control::HLAT_PREFIX_SIZE"),
            (FieldEncoding(0x2040), "control::HLAT_POINTER"),
            (FieldEncoding(0x203e), "control::PCONFIG_EXITING_BITMAP"),
            (FieldEncoding(0x2036), "control::ENCLV_EXITING_BITMAP"),
            (FieldEncoding(0x2044), "control::SECONDARY_VM_EXIT_CONTROLS"),
            (FieldEncoding(0x2818), "guest::IA32_PKRS"),
            (FieldEncoding(0x2c06), "host::IA32_PKRS"),
            (FieldEncoding(0x2816), "guest::IA32_LBR_CTL"),
            (FieldEncoding(0x2814), "guest::IA32_RTIT_CTL"),
            (FieldEncoding(0x6828), "guest::IA32_S_CET"),
            (FieldEncoding(0x682a), "guest::SSP"),
            (
                FieldEncoding(0x682c),
                "guest::IA32_INTERRUPT_SSP_TABLE_ADDR",
            ),
            (FieldEncoding(0x6c18), "host::IA32_S_CET"),
            (FieldEncoding(0x6c1a), "host::SSP"),
            (FieldEncoding(0x6c1c), "host::IA32_INTERRUPT_SSP_TABLE_ADDR"),
            (
                FieldEncoding(0x2038),
                "control::LOW_PASID_DIRECTORY_ADDRESS",
            ),
            (
                FieldEncoding(0x203a),
                "control::HIGH_PASID_DIRECTORY_ADDRESS",
            ),
            (
                FieldEncoding(0x4024),
                "control::INSTRUCTION_TIMEOUT_CONTROL",
            ),
            (FieldEncoding(0x2812), "guest::IA32_BNDCFGS"),
            (FieldEncoding(0x0814), "guest::UINV"),
        ];
        for (encoding, name) in cases {
            assert_eq!(encoding.name(), Some(name));
        }
        assert_eq!(
            FieldEncoding(0x4400).name(),
            Some("exit_info::VM_INSTRUCTION_ERROR")
        );
        assert_eq!(
            std::format!("{:?}", FieldEncoding(0x2c05)),
            "0x2c05 (host::IA32_PERF_GLOBAL_CTRL high)"
        );
        assert_eq!(std::format!("{:?}", FieldEncoding(0x482c)), "0x482c");
        assert_eq!(
            std::format!("{:?}", guest::CS_SELECTOR),
            "GuestField16(0x0802 (guest::CS_SELECTOR))"
        );
    }

    #[test]
    fn typed_values_truncate_like_vmread() {
        assert_eq!(GuestField16::value_from_raw(0x1_2345), 0x2345);
        assert_eq!(GuestField32::value_from_raw(0x1_2345_6789), 0x2345_6789);
        assert_eq!(GuestFieldHigh::value_from_raw(0x1_2345_6789), 0x2345_6789);
        assert_eq!(GuestField64::value_from_raw(u64::MAX), u64::MAX);
        assert_eq!(HostFieldNatural::value_from_raw(u64::MAX), u64::MAX);
        assert_eq!(Width::Bits16.mask(), 0xffff);
        assert_eq!(Width::Natural.bits(), 64);
    }

    #[test]
    fn with_encoding_builds_the_same_field() {
        const CS: GuestField16 = GuestField16::with_encoding::<0x0802>();
        assert_eq!(CS, guest::CS_SELECTOR);
        assert_eq!(
            ReadOnlyFieldHigh::with_encoding::<0x2401>(),
            exit_info::GUEST_PHYSICAL_ADDRESS.high()
        );
        assert_eq!(guest::RIP.info().map(|info| info.name), Some("Guest RIP"));
    }
}
