//! hvkit-vmx: the typed Intel VT-x layer. Work in progress; see the README status table.
#![cfg_attr(not(test), no_std)]
