//! hvkit-svm: the typed AMD-V (SVM) layer. Work in progress; see the README status table.
#![cfg_attr(not(test), no_std)]
