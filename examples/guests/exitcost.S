/*
 * exitcost: the classic vmexit_cpuid microbenchmark. EBP (set by the host) CPUID round trips
 * between two RDTSCs; the start and end TSC go to 0x2000 and 0x2008 for the host to divide.
 */
    .pushsection .rodata.hvkit_guests, "a"
    .code32
    .global guest_exitcost_start, guest_exitcost_end
guest_exitcost_start:
    rdtsc
    movl %eax, 0x2000
    movl %edx, 0x2004
1:
    xorl %eax, %eax
    cpuid
    decl %ebp
    jnz 1b
    rdtsc
    movl %eax, 0x2008
    movl %edx, 0x200c
    PASS
guest_exitcost_end:
    .code64
    .popsection
