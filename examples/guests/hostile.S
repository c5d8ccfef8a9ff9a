/*
 * hostile: a guest that attacks its host.
 * 1. Writes outside its memory: to GPA 0xC000_0000 (no RAM there) and to the GPA equal to the
 *    host-physical address of a host frame holding a canary (given in EDI; above its RAM too).
 *    Each is a nested-page fault; the host maps a fresh page, so the write lands there and never
 *    in the host.
 * 2. Executes the virtualization instructions of its vendor (VMXON and VMLAUNCH on Intel, VMRUN
 *    and CLGI on AMD): each must exit and come back as #UD, which its handler counts and skips
 *    (length at 0x2010).
 * 3. Asks the host (IN from port 0x511) whether to triple-fault; if so it loads an empty IDT and
 *    raises #BP: #GP, #DF, shutdown. The host must see a clean shutdown exit. Otherwise (an
 *    emulator without the shutdown exit) it reports PASS. The host then runs another guest
 *    (cpuid) to show it is intact.
 */
    .pushsection .rodata.hvkit_guests, "a"
    .code32
    .global guest_hostile_start, guest_hostile_end
    .set HO_BASE, 0x100000
guest_hostile_start:
    lgdt ho_gdtd - guest_hostile_start + HO_BASE
    lidt ho_idtd - guest_hostile_start + HO_BASE
    SETGATE 6, ho_ud, guest_hostile_start, HO_BASE
    movl $0, 0x200c
    movl $0x7e577e57, 0xc0000000
    movl $0x6a6a6a6a, (%edi)
    cmpl $0x7e577e57, 0xc0000000
    CHECK e, 1
    xorl %eax, %eax
    cpuid
    cmpl $0x756e6547, %ebx           /* "Genu" */
    jne ho_amd
    movl $4, 0x2010
    movl $0x4000, %eax
    vmxon (%eax)
    movl $3, 0x2010
    vmlaunch
    jmp ho_done
ho_amd:
    movl $3, 0x2010
    movl $0x4000, %eax
    vmrun
    clgi
ho_done:
    cmpl $2, 0x200c
    CHECK e, 2
    cmpl $6, 0x2000
    CHECK e, 3
    movw $0x511, %dx
    inl %dx, %eax
    testl %eax, %eax
    jz ho_skip
    lidt ho_empty_idtd - guest_hostile_start + HO_BASE
    int3
    movl $4, %eax                    /* still running after the triple fault */
    GUEST_REPORT
ho_skip:
    PASS
ho_ud:
    movl $6, 0x2000
    pushl %eax
    movl 0x2010, %eax
    addl %eax, 4(%esp)
    popl %eax
    incl 0x200c
    iret
    .balign 8
ho_gdt:
    .quad 0
    .quad 0x00cf9b000000ffff
    .quad 0x00cf93000000ffff
ho_gdtd:
    .word 23
    .long ho_gdt - guest_hostile_start + HO_BASE
ho_idtd:
    .word 256 * 8 - 1
    .long 0x3000
ho_empty_idtd:
    .word 0
    .long 0
guest_hostile_end:
    .code64
    .popsection
