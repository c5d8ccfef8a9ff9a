//! Building the VMCS: controls from the capabilities, guest state from a [`GuestState`], host
//! state from a [`HostState`], and the intercept configuration. Generic over [`VmcsWrite`], so a
//! host test fills a `SoftVmcs` with exactly what the processor would get.
//!
//! Manual: Intel® 64 and IA-32 Architectures Software Developer's Manual, Combined Volumes, Order
//! Number 325462-086US, December 2024, Vol. 3C: 25.4 "Guest-State Area", 25.5 "Host-State Area",
//! 25.6 "VM-Execution Control Fields" (25.6.3 "Exception Bitmap", 25.6.4 "I/O-Bitmap Addresses",
//! 25.6.5 "Time-Stamp Counter Offset and Multiplier", 25.6.6 "Guest/Host Masks and Read Shadows
//! for CR0 and CR4", 25.6.9 "MSR-Bitmap Address", 25.6.11 "Extended-Page-Table Pointer (EPTP)",
//! 25.6.12 "Virtual-Processor Identifier (VPID)"), 25.7 "VM-Exit Control Fields", 25.8 "VM-Entry
//! Control Fields", 27.2 "Checks on VMX Controls and Host-State Area", 27.3.1 "Checks on the
//! Guest State Area".

use hvkit_vmx::capabilities::{ControlsRequest, VmxCapabilities};
use hvkit_vmx::controls::{
    EntryControls, ExitControls, PinBasedControls, PrimaryControls, SecondaryControls,
};
use hvkit_vmx::fields::{GuestField16, GuestField32, GuestFieldNatural, control, guest, host};
use hvkit_vmx::vmcs::{VmcsError, VmcsWrite};

use crate::error::Unsupported;
use crate::state::{CR0_PE, CR0_PG, GuestState, Segment};
use crate::vmx::core::CrPolicy;

/// The host state the VMCS restores on every VM exit (SDM 25.5 "Host-State Area"). The selectors
/// must have RPL = 0 and TI = 0, TR must not be 0 (SDM 27.2.3 "Checks on Host Segment and
/// Descriptor-Table Registers").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct HostState {
    /// CR0.
    pub cr0: u64,
    /// CR3.
    pub cr3: u64,
    /// CR4 (with VMXE).
    pub cr4: u64,
    /// CS selector.
    pub cs: u16,
    /// SS selector.
    pub ss: u16,
    /// DS selector.
    pub ds: u16,
    /// ES selector.
    pub es: u16,
    /// FS selector.
    pub fs: u16,
    /// GS selector.
    pub gs: u16,
    /// TR selector.
    pub tr: u16,
    /// IA32_FS_BASE.
    pub fs_base: u64,
    /// IA32_GS_BASE.
    pub gs_base: u64,
    /// The TSS base (from its GDT descriptor).
    pub tr_base: u64,
    /// GDTR base.
    pub gdtr_base: u64,
    /// IDTR base.
    pub idtr_base: u64,
    /// IA32_SYSENTER_CS.
    pub sysenter_cs: u32,
    /// IA32_SYSENTER_ESP.
    pub sysenter_esp: u64,
    /// IA32_SYSENTER_EIP.
    pub sysenter_eip: u64,
    /// IA32_EFER.
    pub efer: u64,
    /// IA32_PAT.
    pub pat: u64,
}

/// A source of the current host state: the processor (`crate::capture`), or a fixed value in
/// tests.
pub trait HostStateSource {
    /// The host state to restore on VM exits.
    fn host_state(&self) -> HostState;
}

impl HostStateSource for HostState {
    fn host_state(&self) -> HostState {
        *self
    }
}

/// Vendor-neutral choices for the controls.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VmxOptions {
    /// Exit on external interrupts (otherwise they go straight to the guest's IDT).
    pub external_interrupt_exiting: bool,
    /// Use a VPID (when the processor has one).
    pub vpid: bool,
}

/// The controls to request for `state` on a processor with `caps`: HLT exiting, I/O and MSR
/// bitmaps, TSC offsetting, EPT; VPID, RDTSCP and INVPCID when the processor has them (not
/// XSAVES: the guest gets #UD for it);
/// unrestricted guest when available (required for real mode or unpaged protected mode);
/// 64-bit host; EFER and PAT saved and loaded; IA-32e mode guest per `state`.
///
/// # Errors
/// [`Unsupported::NoEpt`] without EPT, [`Unsupported::NoUnrestrictedGuest`] when `state`
/// needs it and the processor lacks it.
pub fn controls_request(
    caps: &VmxCapabilities,
    state: &GuestState,
    options: VmxOptions,
) -> Result<ControlsRequest, Unsupported> {
    let secondary_allowed = caps.secondary.map_or(0, |s| s.may_be_one);
    let has = |c: SecondaryControls| secondary_allowed & c.bits() == c.bits();
    if !has(SecondaryControls::ENABLE_EPT) {
        return Err(Unsupported::NoEpt);
    }
    let needs_unrestricted = state.cr0 & CR0_PE == 0 || state.cr0 & CR0_PG == 0;
    if needs_unrestricted && !has(SecondaryControls::UNRESTRICTED_GUEST) {
        return Err(Unsupported::NoUnrestrictedGuest);
    }
    let mut secondary = SecondaryControls::ENABLE_EPT;
    for optional in [
        SecondaryControls::UNRESTRICTED_GUEST,
        SecondaryControls::ENABLE_RDTSCP,
        SecondaryControls::ENABLE_INVPCID,
    ] {
        if has(optional) {
            secondary |= optional;
        }
    }
    if options.vpid && has(SecondaryControls::ENABLE_VPID) {
        secondary |= SecondaryControls::ENABLE_VPID;
    }
    let mut pin_based = PinBasedControls::empty();
    let mut exit = ExitControls::HOST_ADDRESS_SPACE_SIZE
        | ExitControls::SAVE_IA32_EFER
        | ExitControls::LOAD_IA32_EFER
        | ExitControls::SAVE_IA32_PAT
        | ExitControls::LOAD_IA32_PAT;
    if options.external_interrupt_exiting {
        pin_based |= PinBasedControls::EXTERNAL_INTERRUPT_EXITING;
        exit |= ExitControls::ACKNOWLEDGE_INTERRUPT_ON_EXIT;
    }
    let mut entry = EntryControls::LOAD_IA32_EFER | EntryControls::LOAD_IA32_PAT;
    if state.long_mode() {
        entry |= EntryControls::IA32E_MODE_GUEST;
    }
    Ok(ControlsRequest {
        pin_based,
        primary: PrimaryControls::HLT_EXITING
            | PrimaryControls::USE_IO_BITMAPS
            | PrimaryControls::USE_MSR_BITMAPS
            | PrimaryControls::USE_TSC_OFFSETTING
            | PrimaryControls::ACTIVATE_SECONDARY_CONTROLS,
        secondary,
        exit,
        entry,
        ..ControlsRequest::default()
    })
}

/// Everything [`write_vmcs`] writes besides the guest and host state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmcsLayout {
    /// The adjusted control words.
    pub controls: hvkit_vmx::capabilities::AdjustedControls,
    /// CR0/CR4 ownership.
    pub cr: CrPolicy,
    /// Physical address of an [`hvkit_vmx::IoBitmaps`] block: bitmap A, with B
    /// [`IoBitmaps::B_OFFSET`](hvkit_vmx::IoBitmaps::B_OFFSET) bytes later.
    pub io_bitmaps: u64,
    /// Physical address of the MSR bitmap.
    pub msr_bitmap: u64,
    /// The EPTP.
    pub eptp: u64,
    /// The VPID (used only with "enable VPID"; never 0 then).
    pub vpid: u16,
    /// The exception bitmap.
    pub exception_bitmap: u32,
    /// The TSC offset.
    pub tsc_offset: u64,
}

fn write_segment<V: VmcsWrite>(
    vmcs: &mut V,
    fields: (GuestField16, GuestFieldNatural, GuestField32, GuestField32),
    segment: &Segment,
) -> Result<(), VmcsError> {
    vmcs.write(fields.0, segment.selector)?;
    vmcs.write(fields.1, segment.base)?;
    vmcs.write(fields.2, segment.limit)?;
    vmcs.write(fields.3, segment.access.0)
}

/// Writes the whole VMCS: controls, guest state (CR0/CR4 with the fixed bits forced, the
/// guest's values in the read shadows), host state (host RIP and RSP are written by the world
/// switch) and the intercept configuration.
///
/// # Errors
/// [`VmcsError`] from the first VMWRITE that fails.
pub fn write_vmcs<V: VmcsWrite>(
    vmcs: &mut V,
    layout: &VmcsLayout,
    state: &GuestState,
    host_state: &HostState,
) -> Result<(), VmcsError> {
    let c = &layout.controls;
    vmcs.write(control::PIN_BASED_VM_EXEC_CONTROL, c.pin_based)?;
    vmcs.write(control::PRIMARY_PROC_BASED_VM_EXEC_CONTROL, c.primary)?;
    if c.primary & PrimaryControls::ACTIVATE_SECONDARY_CONTROLS.bits() != 0 {
        vmcs.write(control::SECONDARY_PROC_BASED_VM_EXEC_CONTROL, c.secondary)?;
    }
    vmcs.write(control::PRIMARY_VM_EXIT_CONTROLS, c.exit)?;
    vmcs.write(control::VM_ENTRY_CONTROLS, c.entry)?;
    vmcs.write(control::EXCEPTION_BITMAP, layout.exception_bitmap)?;
    vmcs.write(control::PAGE_FAULT_ERROR_CODE_MASK, 0)?;
    vmcs.write(control::PAGE_FAULT_ERROR_CODE_MATCH, 0)?;
    vmcs.write(control::CR3_TARGET_COUNT, 0)?;
    vmcs.write(control::VM_EXIT_MSR_STORE_COUNT, 0)?;
    vmcs.write(control::VM_EXIT_MSR_LOAD_COUNT, 0)?;
    vmcs.write(control::VM_ENTRY_MSR_LOAD_COUNT, 0)?;
    vmcs.write(control::VM_ENTRY_INTERRUPTION_INFO, 0)?;
    vmcs.write(control::IO_BITMAP_A, layout.io_bitmaps)?;
    let b_offset = hvkit_vmx::IoBitmaps::B_OFFSET as u64;
    vmcs.write(control::IO_BITMAP_B, layout.io_bitmaps + b_offset)?;
    vmcs.write(control::MSR_BITMAPS, layout.msr_bitmap)?;
    vmcs.write(control::TSC_OFFSET, layout.tsc_offset)?;
    vmcs.write(control::EPT_POINTER, layout.eptp)?;
    if c.secondary & SecondaryControls::ENABLE_VPID.bits() != 0 {
        vmcs.write(control::VIRTUAL_PROCESSOR_ID, layout.vpid)?;
    }
    vmcs.write(control::CR0_GUEST_HOST_MASK, layout.cr.cr0_mask())?;
    vmcs.write(control::CR4_GUEST_HOST_MASK, layout.cr.cr4_mask())?;
    vmcs.write(control::CR0_READ_SHADOW, state.cr0)?;
    vmcs.write(control::CR4_READ_SHADOW, state.cr4)?;

    // Guest state.
    vmcs.write(guest::CR0, layout.cr.cr0_actual(state.cr0))?;
    vmcs.write(guest::CR3, state.cr3)?;
    vmcs.write(guest::CR4, layout.cr.cr4_actual(state.cr4))?;
    vmcs.write(guest::DR7, state.dr7)?;
    vmcs.write(guest::RSP, state.rsp)?;
    vmcs.write(guest::RIP, state.rip)?;
    vmcs.write(guest::RFLAGS, state.rflags)?;
    use guest as g;
    write_segment(
        vmcs,
        (g::ES_SELECTOR, g::ES_BASE, g::ES_LIMIT, g::ES_ACCESS_RIGHTS),
        &state.es,
    )?;
    write_segment(
        vmcs,
        (g::CS_SELECTOR, g::CS_BASE, g::CS_LIMIT, g::CS_ACCESS_RIGHTS),
        &state.cs,
    )?;
    write_segment(
        vmcs,
        (g::SS_SELECTOR, g::SS_BASE, g::SS_LIMIT, g::SS_ACCESS_RIGHTS),
        &state.ss,
    )?;
    write_segment(
        vmcs,
        (g::DS_SELECTOR, g::DS_BASE, g::DS_LIMIT, g::DS_ACCESS_RIGHTS),
        &state.ds,
    )?;
    write_segment(
        vmcs,
        (g::FS_SELECTOR, g::FS_BASE, g::FS_LIMIT, g::FS_ACCESS_RIGHTS),
        &state.fs,
    )?;
    write_segment(
        vmcs,
        (g::GS_SELECTOR, g::GS_BASE, g::GS_LIMIT, g::GS_ACCESS_RIGHTS),
        &state.gs,
    )?;
    write_segment(
        vmcs,
        (
            g::LDTR_SELECTOR,
            g::LDTR_BASE,
            g::LDTR_LIMIT,
            g::LDTR_ACCESS_RIGHTS,
        ),
        &state.ldtr,
    )?;
    write_segment(
        vmcs,
        (g::TR_SELECTOR, g::TR_BASE, g::TR_LIMIT, g::TR_ACCESS_RIGHTS),
        &state.tr,
    )?;
    vmcs.write(guest::GDTR_BASE, state.gdtr.base)?;
    vmcs.write(guest::GDTR_LIMIT, u32::from(state.gdtr.limit))?;
    vmcs.write(guest::IDTR_BASE, state.idtr.base)?;
    vmcs.write(guest::IDTR_LIMIT, u32::from(state.idtr.limit))?;
    vmcs.write(guest::IA32_DEBUGCTL, 0)?;
    vmcs.write(guest::IA32_SYSENTER_CS, state.sysenter_cs)?;
    vmcs.write(guest::IA32_SYSENTER_ESP, state.sysenter_esp)?;
    vmcs.write(guest::IA32_SYSENTER_EIP, state.sysenter_eip)?;
    vmcs.write(guest::IA32_EFER, state.efer)?;
    vmcs.write(guest::IA32_PAT, state.pat)?;
    vmcs.write(guest::VMCS_LINK_POINTER, u64::MAX)?;
    vmcs.write(guest::INTERRUPTIBILITY_STATE, 0)?;
    vmcs.write(guest::ACTIVITY_STATE, 0)?;
    vmcs.write(guest::PENDING_DEBUG_EXCEPTIONS, 0)?;

    // Host state (RSP and RIP: the world switch).
    let h = host_state;
    vmcs.write(host::CR0, h.cr0)?;
    vmcs.write(host::CR3, h.cr3)?;
    vmcs.write(host::CR4, h.cr4)?;
    vmcs.write(host::CS_SELECTOR, h.cs & !7)?;
    vmcs.write(host::SS_SELECTOR, h.ss & !7)?;
    vmcs.write(host::DS_SELECTOR, h.ds & !7)?;
    vmcs.write(host::ES_SELECTOR, h.es & !7)?;
    vmcs.write(host::FS_SELECTOR, h.fs & !7)?;
    vmcs.write(host::GS_SELECTOR, h.gs & !7)?;
    vmcs.write(host::TR_SELECTOR, h.tr & !7)?;
    vmcs.write(host::FS_BASE, h.fs_base)?;
    vmcs.write(host::GS_BASE, h.gs_base)?;
    vmcs.write(host::TR_BASE, h.tr_base)?;
    vmcs.write(host::GDTR_BASE, h.gdtr_base)?;
    vmcs.write(host::IDTR_BASE, h.idtr_base)?;
    vmcs.write(host::IA32_SYSENTER_CS, h.sysenter_cs)?;
    vmcs.write(host::IA32_SYSENTER_ESP, h.sysenter_esp)?;
    vmcs.write(host::IA32_SYSENTER_EIP, h.sysenter_eip)?;
    vmcs.write(host::IA32_EFER, h.efer)?;
    vmcs.write(host::IA32_PAT, h.pat)?;
    Ok(())
}
