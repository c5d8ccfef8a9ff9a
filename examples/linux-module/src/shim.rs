//! What the C shim (`kmod/hvkit_shim.c`) provides to the Rust half.
// UNSAFETY: declares foreign functions (calling C is unsafe).
#![expect(unsafe_code, reason = "declares the C shim's functions")]

use core::ffi::c_void;

unsafe extern "C" {
    /// `printk` of `len` bytes at `text` at KERN_<level> (0–7), prefixed "hvkit: ".
    pub fn hvkit_shim_log(level: i32, text: *const u8, len: usize);
    /// `raw_smp_processor_id()`.
    pub fn hvkit_shim_cpu() -> u32;
    /// `on_each_cpu(f, context, 1)`.
    pub fn hvkit_shim_on_each_cpu(f: extern "C" fn(*mut c_void), context: *mut c_void);
}
