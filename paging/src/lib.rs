//! hvkit-paging: EPT, NPT and guest page tables. Work in progress; see the README status table.
#![cfg_attr(not(test), no_std)]
