/*
 * fpu: the guest's SSE state and XCR0 are its own. It turns on CR4.OSFXSR/OSXSAVE, sets XCR0 to
 * x87|SSE (XSETBV exits; hvkit keeps the guest's XCR0), loads a pattern into XMM0-XMM2, makes
 * CPUID exits (the host, which has its own XMM0 pattern, runs in between) and checks its
 * registers and XGETBV afterwards. With EBX bit 0 set by the host (fpu-legacy) it uses SSE
 * without XSAVE (CR4.OSFXSR only, XCR0 stays 1), as an FXSAVE-era OS does.
 */
    .pushsection .rodata.hvkit_guests, "a"
    .code32
    .global guest_fpu_start, guest_fpu_end
    .set FPU_BASE, 0x100000
guest_fpu_start:
    movl %ebx, %edi                  /* EBX bit 0 from the host: legacy SSE, no XSAVE */
    movl %ebx, %esi                  /* EBX bit 1: XSETBV does not exit, skip the XCR0 check */
    andl $1, %edi
    andl $2, %esi
    movl %cr4, %eax
    orl $0x200, %eax                 /* OSFXSR */
    testl %edi, %edi
    jnz 2f
    orl $0x40000, %eax               /* OSXSAVE */
2:
    movl %eax, %cr4
    testl %edi, %edi
    jnz 3f
    xorl %ecx, %ecx
    xorl %edx, %edx
    movl $3, %eax                    /* x87 | SSE */
    xsetbv
3:
    movdqu fpu_pattern - guest_fpu_start + FPU_BASE, %xmm0
    movdqu fpu_pattern - guest_fpu_start + FPU_BASE + 4, %xmm1
    movdqu fpu_pattern - guest_fpu_start + FPU_BASE + 8, %xmm2
    movl $50, %ebp
1:
    xorl %eax, %eax
    cpuid
    decl %ebp
    jnz 1b
    movdqu fpu_pattern - guest_fpu_start + FPU_BASE, %xmm7
    pcmpeqb %xmm0, %xmm7
    pmovmskb %xmm7, %eax
    cmpl $0xffff, %eax
    CHECK e, 1
    movdqu fpu_pattern - guest_fpu_start + FPU_BASE + 4, %xmm7
    pcmpeqb %xmm1, %xmm7
    pmovmskb %xmm7, %eax
    cmpl $0xffff, %eax
    CHECK e, 2
    movdqu fpu_pattern - guest_fpu_start + FPU_BASE + 8, %xmm7
    pcmpeqb %xmm2, %xmm7
    pmovmskb %xmm7, %eax
    cmpl $0xffff, %eax
    CHECK e, 3
    testl %edi, %edi
    jnz 4f
    testl %esi, %esi
    jnz 4f
    xorl %ecx, %ecx
    xgetbv
    cmpl $3, %eax
    CHECK e, 4
4:
    PASS
fpu_pattern:
    .long 0x01234567, 0x89abcdef, 0xfedcba98, 0x76543210, 0x0f1e2d3c, 0x4b5a6978
guest_fpu_end:
    .code64
    .popsection
