/*
 * loop: EBP (set by the host) CPUID exits in a row, then PASS. The host checks that no frame
 * is allocated per exit and that the last exits cost no more than the first (no leak, no
 * slowdown).
 */
    .pushsection .rodata.hvkit_guests, "a"
    .code32
    .global guest_loop_start, guest_loop_end
guest_loop_start:
1:
    xorl %eax, %eax
    cpuid
    decl %ebp
    jnz 1b
    PASS
guest_loop_end:
    .code64
    .popsection
