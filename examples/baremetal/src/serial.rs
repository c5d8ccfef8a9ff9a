//! The serial console (COM1, a 16550 UART at port 3F8H) and the end of a run: QEMU's
//! `isa-debug-exit` device (port F4H) and Bochs's shutdown port (8900H).
// UNSAFETY: port I/O is how the UART and the emulators' exit devices are reached.
#![expect(
    unsafe_code,
    reason = "port I/O to the UART and the emulator exit ports"
)]

use core::fmt;

use x86_64::instructions::port::{Port, PortWriteOnly};

const COM1: u16 = 0x3F8;
/// Line status register bit 5: the transmit holding register is empty.
const LSR_THR_EMPTY: u8 = 1 << 5;
/// Line status register bit 6: the transmitter (shift register too) is empty.
const LSR_TRANSMITTER_EMPTY: u8 = 1 << 6;

/// The value written to QEMU's `isa-debug-exit` for a passing run: QEMU exits with
/// `(value << 1) | 1` = 33.
pub const QEMU_PASS_VALUE: u8 = 0x10;
/// The value written to QEMU's `isa-debug-exit` for a failing run (exit status 35).
pub const QEMU_FAIL_VALUE: u8 = 0x11;

fn outb(port: u16, value: u8) {
    // SAFETY: the ports written here are the COM1 UART's and the emulators' exit devices, which
    // have no effect on memory.
    unsafe { PortWriteOnly::new(port).write(value) }
}

fn inb(port: u16) -> u8 {
    // SAFETY: reading the COM1 line status register has no side effects.
    unsafe { Port::new(port).read() }
}

/// Programs COM1 for 115200 baud, 8N1, FIFOs on.
pub fn init() {
    outb(COM1 + 1, 0x00); // no interrupts
    outb(COM1 + 3, 0x80); // DLAB
    outb(COM1, 0x01); // divisor 1: 115200 baud
    outb(COM1 + 1, 0x00);
    outb(COM1 + 3, 0x03); // 8 bits, no parity, one stop bit
    outb(COM1 + 2, 0xC7); // FIFO on, cleared, 14-byte threshold
    outb(COM1 + 4, 0x03); // DTR, RTS
}

fn write_byte(byte: u8) {
    while inb(COM1 + 5) & LSR_THR_EMPTY == 0 {
        core::hint::spin_loop();
    }
    outb(COM1, byte);
}

/// Waits until the UART has sent every byte (the emulators drop what is still in flight, and a
/// guest that resets the FIFOs drops what is still queued).
pub fn drain() {
    while inb(COM1 + 5) & LSR_TRANSMITTER_EMPTY == 0 {
        core::hint::spin_loop();
    }
}

/// The serial console as a [`fmt::Write`] sink.
#[derive(Debug, Clone, Copy)]
pub struct Serial;

impl fmt::Write for Serial {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for byte in s.bytes() {
            if byte == b'\n' {
                write_byte(b'\r');
            }
            write_byte(byte);
        }
        Ok(())
    }
}

/// Prints to the serial console.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => {{
        let _ = core::fmt::Write::write_fmt(&mut $crate::serial::Serial, format_args!($($arg)*));
    }};
}

/// Prints a line to the serial console.
#[macro_export]
macro_rules! println {
    ($($arg:tt)*) => {{
        let _ = core::fmt::Write::write_fmt(
            &mut $crate::serial::Serial,
            format_args!("{}\n", format_args!($($arg)*)),
        );
    }};
}

/// Prints the result marker the test runner looks for and ends the run: QEMU exits through
/// `isa-debug-exit`, Bochs through its magic breakpoint or else its shutdown port (Bochs then
/// exits with status 1); the runner judges Bochs runs by the markers.
pub fn finish(pass: bool, exits: u64) -> ! {
    let _ = fmt::Write::write_fmt(
        &mut Serial,
        format_args!(
            "RESULT {} exits={exits}\n",
            if pass { "PASS" } else { "FAIL" }
        ),
    );
    drain();
    outb(
        0xF4,
        if pass {
            QEMU_PASS_VALUE
        } else {
            QEMU_FAIL_VALUE
        },
    );
    // Bochs's magic breakpoint (`magic_break: enabled=1`): the debugger takes over and the `q` in
    // its command file ends Bochs cleanly (exit status 0, serial file flushed). A no-op elsewhere.
    // SAFETY: XCHG of BX with itself changes nothing.
    unsafe { core::arch::asm!("xchg bx, bx", options(nomem, nostack, preserves_flags)) };
    for byte in b"Shutdown" {
        // SAFETY: Bochs's shutdown port; elsewhere an unused port.
        unsafe { PortWriteOnly::<u8>::new(0x8900).write(*byte) }
    }
    loop {
        x86_64::instructions::interrupts::disable();
        x86_64::instructions::hlt();
    }
}
