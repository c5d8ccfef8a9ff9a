//! The VMX control words as flag sets.
//!
//! Reference: Intel® 64 and IA-32 Architectures Software Developer's Manual, Order Number
//! 325462-086US (December 2024), Volume 3C: 25.6 "VM-Execution Control Fields" (25.6.1 Pin-Based
//! VM-Execution Controls, 25.6.2 Processor-Based VM-Execution Controls), 25.7.1 "VM-Exit Controls"
//! and 25.8.1 "VM-Entry Controls". Which settings a processor allows is in
//! [`crate::capabilities`], and [`crate::capabilities::VmxCapabilities::adjust`] turns a request
//! into the values to write.

use bitflags::bitflags;

bitflags! {
    /// Pin-based VM-execution controls (SDM Vol. 3C, 25.6.1 "Pin-Based VM-Execution Controls",
    /// Table 25-5). Bits 1, 2 and 4 are default-1 reserved bits.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct PinBasedControls: u32 {
        /// Bit 0: external interrupts cause VM exits.
        const EXTERNAL_INTERRUPT_EXITING = 1 << 0;
        /// Bit 3: non-maskable interrupts cause VM exits.
        const NMI_EXITING = 1 << 3;
        /// Bit 5: NMIs are never blocked and "blocking by NMI" means virtual-NMI blocking.
        const VIRTUAL_NMIS = 1 << 5;
        /// Bit 6: the VMX-preemption timer counts down in VMX non-root operation.
        const ACTIVATE_VMX_PREEMPTION_TIMER = 1 << 6;
        /// Bit 7: interrupts with the posted-interrupt notification vector are processed
        /// specially, updating the virtual-APIC page with posted-interrupt requests.
        const PROCESS_POSTED_INTERRUPTS = 1 << 7;
    }
}

bitflags! {
    /// Primary processor-based VM-execution controls (SDM Vol. 3C, 25.6.2 "Processor-Based
    /// VM-Execution Controls", Table 25-6). Bits 1, 4–6, 8, 13–16 and 26 are default-1 reserved
    /// bits.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct PrimaryControls: u32 {
        /// Bit 2: a VM exit at the beginning of any instruction if RFLAGS.IF = 1 and there are no
        /// other blocking of interrupts.
        const INTERRUPT_WINDOW_EXITING = 1 << 2;
        /// Bit 3: the TSC offset field modifies RDTSC/RDTSCP/RDMSR(IA32_TSC) results.
        const USE_TSC_OFFSETTING = 1 << 3;
        /// Bit 7: HLT causes VM exits.
        const HLT_EXITING = 1 << 7;
        /// Bit 9: INVLPG causes VM exits.
        const INVLPG_EXITING = 1 << 9;
        /// Bit 10: MWAIT causes VM exits.
        const MWAIT_EXITING = 1 << 10;
        /// Bit 11: RDPMC causes VM exits.
        const RDPMC_EXITING = 1 << 11;
        /// Bit 12: RDTSC and RDTSCP cause VM exits.
        const RDTSC_EXITING = 1 << 12;
        /// Bit 15: MOV to CR3 causes VM exits (subject to the CR3-target values).
        const CR3_LOAD_EXITING = 1 << 15;
        /// Bit 16: MOV from CR3 causes VM exits.
        const CR3_STORE_EXITING = 1 << 16;
        /// Bit 17: the tertiary processor-based VM-execution controls are used.
        const ACTIVATE_TERTIARY_CONTROLS = 1 << 17;
        /// Bit 19: MOV to CR8 causes VM exits.
        const CR8_LOAD_EXITING = 1 << 19;
        /// Bit 20: MOV from CR8 causes VM exits.
        const CR8_STORE_EXITING = 1 << 20;
        /// Bit 21: TPR virtualization and other APIC-virtualization features (virtual-APIC page).
        const USE_TPR_SHADOW = 1 << 21;
        /// Bit 22: a VM exit at the beginning of any instruction if there is no virtual-NMI
        /// blocking.
        const NMI_WINDOW_EXITING = 1 << 22;
        /// Bit 23: MOV DR causes VM exits.
        const MOV_DR_EXITING = 1 << 23;
        /// Bit 24: every I/O instruction causes a VM exit (ignored with I/O bitmaps).
        const UNCONDITIONAL_IO_EXITING = 1 << 24;
        /// Bit 25: I/O bitmaps restrict I/O instructions.
        const USE_IO_BITMAPS = 1 << 25;
        /// Bit 27: the monitor trap flag debugging feature is enabled.
        const MONITOR_TRAP_FLAG = 1 << 27;
        /// Bit 28: MSR bitmaps control RDMSR and WRMSR exits.
        const USE_MSR_BITMAPS = 1 << 28;
        /// Bit 29: MONITOR causes VM exits.
        const MONITOR_EXITING = 1 << 29;
        /// Bit 30: PAUSE causes VM exits.
        const PAUSE_EXITING = 1 << 30;
        /// Bit 31: the secondary processor-based VM-execution controls are used.
        const ACTIVATE_SECONDARY_CONTROLS = 1 << 31;
    }
}

bitflags! {
    /// Secondary processor-based VM-execution controls (SDM Vol. 3C, 25.6.2, Table 25-7).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct SecondaryControls: u32 {
        /// Bit 0: accesses to the APIC-access page are treated specially.
        const VIRTUALIZE_APIC_ACCESSES = 1 << 0;
        /// Bit 1: extended page tables are enabled.
        const ENABLE_EPT = 1 << 1;
        /// Bit 2: LGDT, LIDT, LLDT, LTR, SGDT, SIDT, SLDT and STR cause VM exits.
        const DESCRIPTOR_TABLE_EXITING = 1 << 2;
        /// Bit 3: RDTSCP does not raise #UD.
        const ENABLE_RDTSCP = 1 << 3;
        /// Bit 4: RDMSR/WRMSR of x2APIC MSRs are virtualized.
        const VIRTUALIZE_X2APIC_MODE = 1 << 4;
        /// Bit 5: cached linear translations are tagged with a virtual-processor identifier.
        const ENABLE_VPID = 1 << 5;
        /// Bit 6: WBINVD and WBNOINVD cause VM exits.
        const WBINVD_EXITING = 1 << 6;
        /// Bit 7: the guest may run in unpaged protected mode or real-address mode.
        const UNRESTRICTED_GUEST = 1 << 7;
        /// Bit 8: certain APIC accesses are virtualized via the virtual-APIC page.
        const APIC_REGISTER_VIRTUALIZATION = 1 << 8;
        /// Bit 9: virtual-interrupt delivery is enabled.
        const VIRTUAL_INTERRUPT_DELIVERY = 1 << 9;
        /// Bit 10: a series of PAUSE executions can cause a VM exit (PLE_Gap / PLE_Window).
        const PAUSE_LOOP_EXITING = 1 << 10;
        /// Bit 11: RDRAND causes VM exits.
        const RDRAND_EXITING = 1 << 11;
        /// Bit 12: INVPCID does not raise #UD.
        const ENABLE_INVPCID = 1 << 12;
        /// Bit 13: VMFUNC is enabled in VMX non-root operation.
        const ENABLE_VM_FUNCTIONS = 1 << 13;
        /// Bit 14: VMREAD/VMWRITE in non-root operation may access a shadow VMCS.
        const VMCS_SHADOWING = 1 << 14;
        /// Bit 15: ENCLS consults the ENCLS-exiting bitmap.
        const ENABLE_ENCLS_EXITING = 1 << 15;
        /// Bit 16: RDSEED causes VM exits.
        const RDSEED_EXITING = 1 << 16;
        /// Bit 17: guest-physical addresses of dirtied pages are logged (page-modification log).
        const ENABLE_PML = 1 << 17;
        /// Bit 18: EPT violations may cause virtualization exceptions (#VE).
        const EPT_VIOLATION_VE = 1 << 18;
        /// Bit 19: Intel Processor Trace suppresses PIP and VMCS packets for VMX non-root
        /// operation.
        const CONCEAL_VMX_FROM_PT = 1 << 19;
        /// Bit 20: XSAVES and XRSTORS do not raise #UD.
        const ENABLE_XSAVES_XRSTORS = 1 << 20;
        /// Bit 21: PASID translation is performed for ENQCMD and ENQCMDS.
        const PASID_TRANSLATION = 1 << 21;
        /// Bit 22: EPT execute permissions depend on the mode of the linear address
        /// (mode-based execute control).
        const MODE_BASED_EXECUTE_CONTROL = 1 << 22;
        /// Bit 23: EPT write permissions may be specified at 128-byte granularity.
        const SUB_PAGE_WRITE_PERMISSIONS = 1 << 23;
        /// Bit 24: Intel PT output addresses are guest-physical and translated through EPT.
        const PT_USES_GUEST_PHYSICAL_ADDRESSES = 1 << 24;
        /// Bit 25: TSC values read by the guest are scaled by the TSC multiplier.
        const USE_TSC_SCALING = 1 << 25;
        /// Bit 26: TPAUSE, UMONITOR and UMWAIT do not raise #UD.
        const ENABLE_USER_WAIT_AND_PAUSE = 1 << 26;
        /// Bit 27: PCONFIG does not raise #UD.
        const ENABLE_PCONFIG = 1 << 27;
        /// Bit 28: ENCLV consults the ENCLV-exiting bitmap.
        const ENABLE_ENCLV_EXITING = 1 << 28;
        /// Bit 30: a VM exit occurs after a bus lock is asserted (VMM bus-lock detection).
        const VMM_BUS_LOCK_DETECTION = 1 << 30;
        /// Bit 31: a VM exit occurs when an instruction takes longer than the instruction-timeout
        /// control allows (formerly "notify VM exiting").
        const INSTRUCTION_TIMEOUT = 1 << 31;
    }
}

bitflags! {
    /// Tertiary processor-based VM-execution controls, a 64-bit field (SDM Vol. 3C, 25.6.2,
    /// Table 25-8).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct TertiaryControls: u64 {
        /// Bit 0: LOADIWKEY causes VM exits.
        const LOADIWKEY_EXITING = 1 << 0;
        /// Bit 1: hypervisor-managed linear-address translation is enabled.
        const ENABLE_HLAT = 1 << 1;
        /// Bit 2: EPT paging-write control is enabled.
        const EPT_PAGING_WRITE_CONTROL = 1 << 2;
        /// Bit 3: guest-paging verification is enabled.
        const GUEST_PAGING_VERIFICATION = 1 << 3;
        /// Bit 4: IPI virtualization is enabled.
        const IPI_VIRTUALIZATION = 1 << 4;
        /// Bit 7: the guest's IA32_SPEC_CTRL is virtualized through a mask and shadow.
        const VIRTUALIZE_IA32_SPEC_CTRL = 1 << 7;
    }
}

bitflags! {
    /// Primary VM-exit controls (SDM Vol. 3C, 25.7.1 "VM-Exit Controls", Table 25-13). Bits 0–8
    /// (except 2), 10, 11, 13, 14, 16 and 17 are default-1 reserved bits.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct ExitControls: u32 {
        /// Bit 2: DR7 and IA32_DEBUGCTL are saved on VM exit.
        const SAVE_DEBUG_CONTROLS = 1 << 2;
        /// Bit 9: the host is in 64-bit mode after the VM exit.
        const HOST_ADDRESS_SPACE_SIZE = 1 << 9;
        /// Bit 12: IA32_PERF_GLOBAL_CTRL is loaded on VM exit.
        const LOAD_IA32_PERF_GLOBAL_CTRL = 1 << 12;
        /// Bit 15: the interrupt controller is acknowledged on an external-interrupt exit.
        const ACKNOWLEDGE_INTERRUPT_ON_EXIT = 1 << 15;
        /// Bit 18: IA32_PAT is saved on VM exit.
        const SAVE_IA32_PAT = 1 << 18;
        /// Bit 19: IA32_PAT is loaded on VM exit.
        const LOAD_IA32_PAT = 1 << 19;
        /// Bit 20: IA32_EFER is saved on VM exit.
        const SAVE_IA32_EFER = 1 << 20;
        /// Bit 21: IA32_EFER is loaded on VM exit.
        const LOAD_IA32_EFER = 1 << 21;
        /// Bit 22: the VMX-preemption timer value is saved on VM exit.
        const SAVE_VMX_PREEMPTION_TIMER = 1 << 22;
        /// Bit 23: IA32_BNDCFGS is cleared on VM exit.
        const CLEAR_IA32_BNDCFGS = 1 << 23;
        /// Bit 24: Intel PT does not produce a paging information packet on VM exit.
        const CONCEAL_VMX_FROM_PT = 1 << 24;
        /// Bit 25: IA32_RTIT_CTL is cleared on VM exit.
        const CLEAR_IA32_RTIT_CTL = 1 << 25;
        /// Bit 26: IA32_LBR_CTL is cleared on VM exit.
        const CLEAR_IA32_LBR_CTL = 1 << 26;
        /// Bit 27: UINV is cleared on VM exit.
        const CLEAR_UINV = 1 << 27;
        /// Bit 28: CET state (IA32_S_CET, SSP, interrupt SSP table address) is loaded on VM exit.
        const LOAD_CET_STATE = 1 << 28;
        /// Bit 29: IA32_PKRS is loaded on VM exit.
        const LOAD_PKRS = 1 << 29;
        /// Bit 30: IA32_PERF_GLOBAL_CTRL is saved on VM exit.
        const SAVE_IA32_PERF_GLOBAL_CTRL = 1 << 30;
        /// Bit 31: the secondary VM-exit controls are used.
        const ACTIVATE_SECONDARY_CONTROLS = 1 << 31;
    }
}

bitflags! {
    /// Secondary VM-exit controls, a 64-bit field (SDM Vol. 3C, 25.7.1, Table 25-14).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct SecondaryExitControls: u64 {
        /// Bit 0: the guest's FRED MSRs are saved on VM exit.
        const SAVE_IA32_FRED = 1 << 0;
        /// Bit 1: the host's FRED MSRs are loaded on VM exit.
        const LOAD_IA32_FRED = 1 << 1;
    }
}

bitflags! {
    /// VM-entry controls (SDM Vol. 3C, 25.8.1 "VM-Entry Controls", Table 25-15). Bits 0–8
    /// (except 2) and 12 are default-1 reserved bits.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct EntryControls: u32 {
        /// Bit 2: DR7 and IA32_DEBUGCTL are loaded on VM entry.
        const LOAD_DEBUG_CONTROLS = 1 << 2;
        /// Bit 9: the guest is in IA-32e mode after VM entry.
        const IA32E_MODE_GUEST = 1 << 9;
        /// Bit 10: the processor is in SMM after VM entry.
        const ENTRY_TO_SMM = 1 << 10;
        /// Bit 11: the dual-monitor treatment of SMIs and SMM is deactivated.
        const DEACTIVATE_DUAL_MONITOR_TREATMENT = 1 << 11;
        /// Bit 13: IA32_PERF_GLOBAL_CTRL is loaded on VM entry.
        const LOAD_IA32_PERF_GLOBAL_CTRL = 1 << 13;
        /// Bit 14: IA32_PAT is loaded on VM entry.
        const LOAD_IA32_PAT = 1 << 14;
        /// Bit 15: IA32_EFER is loaded on VM entry.
        const LOAD_IA32_EFER = 1 << 15;
        /// Bit 16: IA32_BNDCFGS is loaded on VM entry.
        const LOAD_IA32_BNDCFGS = 1 << 16;
        /// Bit 17: Intel PT does not produce a paging information packet on VM entry.
        const CONCEAL_VMX_FROM_PT = 1 << 17;
        /// Bit 18: IA32_RTIT_CTL is loaded on VM entry.
        const LOAD_IA32_RTIT_CTL = 1 << 18;
        /// Bit 19: UINV is loaded on VM entry.
        const LOAD_UINV = 1 << 19;
        /// Bit 20: CET state is loaded on VM entry.
        const LOAD_CET_STATE = 1 << 20;
        /// Bit 21: IA32_LBR_CTL is loaded on VM entry.
        const LOAD_GUEST_IA32_LBR_CTL = 1 << 21;
        /// Bit 22: IA32_PKRS is loaded on VM entry.
        const LOAD_PKRS = 1 << 22;
        /// Bit 23: the guest's FRED MSRs are loaded on VM entry.
        const LOAD_IA32_FRED = 1 << 23;
    }
}
