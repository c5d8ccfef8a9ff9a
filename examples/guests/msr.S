/*
 * msr: RDMSR/WRMSR of an intercepted MSR in the bitmap range (IA32_SYSENTER_CS, 174H, which
 * the host answers with 0x4321 and whose writes it logs), of an MSR outside the bitmap ranges
 * (4000_1234H, always intercepted: the host answers 0x0123456789abcdef), and of a passed-through
 * MSR (IA32_SYSENTER_ESP, 175H: no exit, the guest reads back its own value and the host's own
 * SYSENTER_ESP is unchanged afterwards). Last, an MSR hvkit keeps from its guests (IA32_VMX_BASIC,
 * 480H, on Intel; VM_CR, C001_0114H, on AMD): the read exits and the host's default answer is
 * #GP(0), which the guest's handler checks.
 */
    .pushsection .rodata.hvkit_guests, "a"
    .code32
    .global guest_msr_start, guest_msr_end
    .set MSR_BASE, 0x100000
guest_msr_start:
    movl $0x174, %ecx
    rdmsr
    cmpl $0x4321, %eax
    CHECK e, 1
    testl %edx, %edx
    CHECK z, 2
    movl $0x174, %ecx
    movl $0x0008, %eax
    xorl %edx, %edx
    wrmsr
    movl $0x40001234, %ecx
    rdmsr
    cmpl $0x89abcdef, %eax
    CHECK e, 3
    cmpl $0x01234567, %edx
    CHECK e, 4
    movl $0x40001234, %ecx
    movl $0xbeef, %eax
    movl $0xfeed, %edx
    wrmsr
    /* Passed through: no exits. */
    movl $0x175, %ecx
    movl $0x00cafe00, %eax
    xorl %edx, %edx
    wrmsr
    xorl %eax, %eax
    rdmsr
    cmpl $0x00cafe00, %eax
    CHECK e, 5
    /* An MSR hvkit keeps from guests (IA32_VMX_BASIC on Intel, VM_CR on AMD): #GP(0). */
    lgdt msr_gdtd - guest_msr_start + MSR_BASE
    lidt msr_idtd - guest_msr_start + MSR_BASE
    SETGATE 13, msr_gp, guest_msr_start, MSR_BASE
    movl $0, 0x200c
    xorl %eax, %eax
    cpuid
    movl $0x480, %ecx                /* IA32_VMX_BASIC */
    cmpl $0x756e6547, %ebx           /* "Genu" */
    je 1f
    movl $0xc0010114, %ecx           /* VM_CR */
1:
    rdmsr
    cmpl $1, 0x200c
    CHECK e, 6
    cmpl $13, 0x2000
    CHECK e, 7
    cmpl $0, 0x2004
    CHECK e, 8
    PASS
msr_gp:
    movl $13, 0x2000
    popl 0x2004
    addl $2, (%esp)                  /* past the RDMSR */
    incl 0x200c
    iret
    .balign 8
msr_gdt:
    .quad 0
    .quad 0x00cf9b000000ffff
    .quad 0x00cf93000000ffff
msr_gdtd:
    .word 23
    .long msr_gdt - guest_msr_start + MSR_BASE
msr_idtd:
    .word 256 * 8 - 1
    .long 0x3000
guest_msr_end:
    .code64
    .popsection
