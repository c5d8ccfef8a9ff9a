//! The host-side tour of hvkit-vmx: what `cargo xtask demo` shows without an emulator.
//!
//! It decodes a recorded capability snapshot of a Skylake-class processor, adjusts a typical
//! hypervisor's control request against it (and one the processor refuses), and decodes VMX
//! instruction failures.

use hvkit_vmx::capabilities::{ControlsRequest, VmxCapabilities, recorded};
use hvkit_vmx::controls::{
    EntryControls, ExitControls, PinBasedControls, PrimaryControls, SecondaryControls,
    TertiaryControls,
};
use hvkit_vmx::{VmFail, VmInstructionError};

fn main() {
    println!("== hvkit-vmx: capability snapshot of a Skylake-class CPU ==");
    let caps = VmxCapabilities::read(&recorded::SKYLAKE_CLIENT);
    println!(
        "VMCS revision {}, region {} bytes, memory type {}, TRUE controls: {}",
        caps.basic.revision_id(),
        caps.basic.region_size(),
        caps.basic.memory_type(),
        caps.basic.true_controls()
    );
    println!("EPT/VPID: {:?}", caps.ept_vpid);
    println!(
        "preemption timer: TSC >> {}, CR3 targets: {}, activity states HLT/shutdown/SIPI: {}/{}/{}",
        caps.misc.preemption_timer_tsc_shift(),
        caps.misc.cr3_target_count(),
        caps.misc.activity_hlt(),
        caps.misc.activity_shutdown(),
        caps.misc.activity_wait_for_sipi()
    );

    println!("\n== adjusting a typical request ==");
    let request = ControlsRequest {
        pin_based: PinBasedControls::EXTERNAL_INTERRUPT_EXITING | PinBasedControls::NMI_EXITING,
        primary: PrimaryControls::HLT_EXITING | PrimaryControls::USE_MSR_BITMAPS,
        secondary: SecondaryControls::ENABLE_EPT
            | SecondaryControls::ENABLE_VPID
            | SecondaryControls::UNRESTRICTED_GUEST,
        exit: ExitControls::HOST_ADDRESS_SPACE_SIZE | ExitControls::LOAD_IA32_EFER,
        entry: EntryControls::IA32E_MODE_GUEST | EntryControls::LOAD_IA32_EFER,
        ..ControlsRequest::default()
    };
    match caps.adjust(&request) {
        Ok(v) => println!(
            "pin-based {:#010x}  primary {:#010x}  secondary {:#010x}\nexit {:#010x}  entry {:#010x}",
            v.pin_based, v.primary, v.secondary, v.exit, v.entry
        ),
        Err(e) => println!("refused: {e}"),
    }

    println!("\n== a request this CPU cannot meet ==");
    let too_much = ControlsRequest {
        pin_based: PinBasedControls::PROCESS_POSTED_INTERRUPTS,
        secondary: SecondaryControls::USE_TSC_SCALING,
        tertiary: TertiaryControls::IPI_VIRTUALIZATION,
        ..request
    };
    match caps.adjust(&too_much) {
        Ok(_) => println!("unexpectedly accepted"),
        Err(e) => println!("{e}"),
    }

    println!("\n== VMX instruction failures, decoded ==");
    for n in [5, 7, 8, 12, 27] {
        let fail = VmFail::Valid(VmInstructionError(n));
        println!("{fail}");
    }
    println!("{}", VmFail::Invalid);
}
