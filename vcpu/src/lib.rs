//! hvkit-vcpu: one vCPU API over Intel VT-x and AMD-V.
//!
//! **Status: planned.** This crate is a placeholder in the workspace so that the layout in
//! `DESIGN.md` is visible; it has no API yet. It will hold the `Platform` trait that host
//! environments implement, a `Vcpu` that picks VMX or SVM from CPUID at run time, and the run loop
//! with its common exits. Until then, use `hvkit-vmx` and `hvkit-svm` directly.
#![cfg_attr(not(test), no_std)]
