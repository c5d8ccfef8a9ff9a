//! The host-side tour of hvkit-vmx (filled in as the crate grows).
fn main() {
    println!("hvkit-vmx tour: nothing to show yet");
}
