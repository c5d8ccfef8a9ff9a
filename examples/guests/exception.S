/*
 * exception: loads its own GDT and an IDT at 0x3000, then asks the host (OUT of the vector to
 * port 0x86) for an event, which the host injects after completing the OUT: #DE (no error
 * code), #GP with error code 0x18, #PF with error code 6 and CR2 0xdead_0000, the external
 * interrupt 0x30 (requested while IF = 0: delivered at the interrupt window). Last, UD2 with #UD intercepted by the exception bitmap: the host
 * sees the exception exit and reflects it. Each handler records its vector, error code (or
 * all ones) and a count at 0x2000; the guest checks them after each event.
 */
    .pushsection .rodata.hvkit_guests, "a"
    .code32
    .global guest_exception_start, guest_exception_end
    .set EX_BASE, 0x100000
guest_exception_start:
    lgdt ex_gdtd - guest_exception_start + EX_BASE
    lidt ex_idtd - guest_exception_start + EX_BASE
    SETGATE 0, ex_de, guest_exception_start, EX_BASE
    SETGATE 6, ex_ud, guest_exception_start, EX_BASE
    SETGATE 13, ex_gp, guest_exception_start, EX_BASE
    SETGATE 14, ex_pf, guest_exception_start, EX_BASE
    SETGATE 0x30, ex_int, guest_exception_start, EX_BASE
    movl $0, 0x200c
    /* #DE */
    movb $0, %al
    outb %al, $0x86
    cmpl $0, 0x2000
    CHECK e, 1
    cmpl $0xffffffff, 0x2004
    CHECK e, 2
    cmpl $1, 0x200c
    CHECK e, 3
    /* #GP(0x18) */
    movb $13, %al
    outb %al, $0x86
    cmpl $13, 0x2000
    CHECK e, 4
    cmpl $0x18, 0x2004
    CHECK e, 5
    cmpl $2, 0x200c
    CHECK e, 6
    /* #PF(6), CR2 = 0xdead0000 */
    movb $14, %al
    outb %al, $0x86
    cmpl $14, 0x2000
    CHECK e, 7
    cmpl $6, 0x2004
    CHECK e, 8
    cmpl $0xdead0000, 0x2008
    CHECK e, 9
    cmpl $3, 0x200c
    CHECK e, 10
    /* Interrupt 0x30, requested with IF = 0: it waits for the interrupt window, which opens
     * after STI and the one instruction of its shadow (ESI = 3 at delivery). */
    cli
    xorl %esi, %esi
    movb $0x30, %al
    outb %al, $0x86
    incl %esi
    incl %esi
    sti
    incl %esi
    nop
    cli
    cmpl $0x30, 0x2000
    CHECK e, 11
    cmpl $4, 0x200c
    CHECK e, 12
    cmpl $3, 0x2014
    CHECK e, 15
    /* #UD, intercepted by the host and reflected. */
    ud2
    cmpl $6, 0x2000
    CHECK e, 13
    cmpl $5, 0x200c
    CHECK e, 14
    PASS
ex_de:
    movl $0, 0x2000
    movl $0xffffffff, 0x2004
    incl 0x200c
    iret
ex_ud:
    movl $6, 0x2000
    movl $0xffffffff, 0x2004
    addl $2, (%esp)
    incl 0x200c
    iret
ex_gp:
    movl $13, 0x2000
    popl 0x2004
    incl 0x200c
    iret
ex_pf:
    movl $14, 0x2000
    popl 0x2004
    pushl %eax
    movl %cr2, %eax
    movl %eax, 0x2008
    popl %eax
    incl 0x200c
    iret
ex_int:
    movl $0x30, 0x2000
    movl $0xffffffff, 0x2004
    movl %esi, 0x2014
    incl 0x200c
    iret
    .balign 8
ex_gdt:
    .quad 0
    .quad 0x00cf9b000000ffff
    .quad 0x00cf93000000ffff
ex_gdtd:
    .word 23
    .long ex_gdt - guest_exception_start + EX_BASE
ex_idtd:
    .word 256 * 8 - 1
    .long 0x3000
guest_exception_end:
    .code64
    .popsection
