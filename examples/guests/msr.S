/*
 * msr: RDMSR/WRMSR of an intercepted MSR in the bitmap range (IA32_SYSENTER_CS, 174H, which
 * the host answers with 0x4321 and whose writes it logs), of an MSR outside the bitmap ranges
 * (4000_1234H, always intercepted: the host answers 0x0123456789abcdef), and of a passed-through
 * MSR (IA32_SYSENTER_ESP, 175H: no exit, the guest reads back its own value and the host's own
 * SYSENTER_ESP is unchanged afterwards).
 */
    .pushsection .rodata.hvkit_guests, "a"
    .code32
    .global guest_msr_start, guest_msr_end
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
    PASS
guest_msr_end:
    .code64
    .popsection
