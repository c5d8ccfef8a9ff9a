/*
 * io: port I/O of every size and form on the intercepted ports 0x80-0x85. The host answers
 * IN from port p of size s with (0x12345600 + 0x10 * s + (p & 0xf)) truncated to s bytes,
 * and logs every OUT; the guest checks the values it reads, the host the values it saw.
 * OUT byte/word/dword, IN byte/word/dword, REP OUTSB, OUTSW, REP OUTSD, REP INSD, INSB, INSW.
 */
    .pushsection .rodata.hvkit_guests, "a"
    .code32
    .global guest_io_start, guest_io_end
guest_io_start:
    cld
    movb $0x11, %al
    outb %al, $0x80
    movw $0x2222, %ax
    outw %ax, $0x80
    movl $0x33333333, %eax
    outl %eax, $0x80
    xorl %eax, %eax
    inb $0x82, %al
    cmpl $0x12, %eax
    CHECK e, 1
    xorl %eax, %eax
    inw $0x82, %ax
    cmpl $0x5622, %eax
    CHECK e, 2
    movw $0x82, %dx
    inl %dx, %eax
    cmpl $0x12345642, %eax
    CHECK e, 3
    /* Strings: "hvkit" (REP OUTSB), "OK" (OUTSW), two dwords (REP OUTSD) to port 0x84. */
    movl $(text - guest_io_start + 0x100000), %esi
    movw $0x84, %dx
    movl $5, %ecx
    rep outsb
    outsw
    movl $2, %ecx
    rep outsl
    cmpl $(text - guest_io_start + 0x100000 + 15), %esi
    CHECK e, 4
    testl %ecx, %ecx
    CHECK z, 5
    /* Three dwords (REP INSD), one byte (INSB), one word (INSW) from port 0x85 into 0x2000. */
    movl $0x2000, %edi
    movw $0x85, %dx
    movl $3, %ecx
    rep insl
    insb
    insw
    cmpl $0x200f, %edi
    CHECK e, 6
    cmpl $0x12345645, 0x2000
    CHECK e, 7
    cmpl $0x12345645, 0x2008
    CHECK e, 8
    cmpb $0x15, 0x200c
    CHECK e, 9
    cmpw $0x5625, 0x200d
    CHECK e, 10
    PASS
text:
    .ascii "hvkitOK"
    .long 0xa1b2c3d4, 0x01020304
guest_io_end:
    .code64
    .popsection
