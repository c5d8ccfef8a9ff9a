/*
 * realmode: a 16-bit real-mode guest at 0000:7C00 (unrestricted guest on VMX). OUT to port
 * 0x80 (the host checks the byte), CPUID of the hvkit leaf with 32-bit registers, segment
 * arithmetic (a word written through ES = 0x1000 read back through DS = 0x1001), a software
 * interrupt through its own IVT, then it loads a GDT, sets CR0.PE, far-jumps to 32-bit code
 * and reports from protected mode.
 */
    .pushsection .rodata.hvkit_guests, "a"
    .code16
    .global guest_realmode_start, guest_realmode_end
    .set RM_BASE, 0x7c00
guest_realmode_start:
    cli
    xorw %ax, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movw $0x7000, %sp
    movb $0x42, %al
    outb %al, $0x80
    movl $0x40000000, %eax
    cpuid
    cmpl $0x696b7668, %ebx
    CHECK e, 1
    movw $0x1000, %ax
    movw %ax, %es
    movw $0xbeef, %es:0x10
    movw $0x1001, %ax
    movw %ax, %ds
    cmpw $0xbeef, 0x0
    CHECK e, 2
    xorw %ax, %ax
    movw %ax, %ds
    cmpw $0xbeef, 0x10010 & 0xffff     /* DS = 0: 0x0010 is not 0x10010 */
    CHECK ne, 3
    /* INT 0x40 through the IVT. */
    movw $(rm_int - guest_realmode_start + RM_BASE), 0x100
    movw $0, 0x102
    xorw %bx, %bx
    int $0x40
    cmpw $0x1234, %bx
    CHECK e, 4
    /* To protected mode. */
    lgdtl rm_gdtd - guest_realmode_start + RM_BASE
    movl %cr0, %eax
    orl $1, %eax
    movl %eax, %cr0
    ljmpl $0x08, $(rm_pm - guest_realmode_start + RM_BASE)
rm_int:
    movw $0x1234, %bx
    iret
    .code32
rm_pm:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movl $0x7000, %esp
    movl %cr0, %eax
    testl $1, %eax
    CHECK nz, 5
    cmpw $0xbeef, 0x10010
    CHECK e, 6
    PASS
    .balign 8
rm_gdt:
    .quad 0
    .quad 0x00cf9b000000ffff
    .quad 0x00cf93000000ffff
rm_gdtd:
    .word 23
    .long rm_gdt - guest_realmode_start + RM_BASE
guest_realmode_end:
    .code64
    .popsection
