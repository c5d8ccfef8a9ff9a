/*
 * cpuid: a flat 32-bit guest at 0x100000 that checks what hvkit's CPUID policy shows it:
 * leaf 0 (a vendor), leaf 1 (hypervisor-present bit 31 set, VMX bit 5 hidden), leaf 8000_0001H
 * (SVM bit 2 hidden), the hvkit leaves 4000_0000H ("hvkitHVKIThv", highest leaf) and
 * 4000_0001H (ABI version 1, VMCALL on Intel, VMMCALL on AMD). Seven CPUID exits.
 */
    .pushsection .rodata.hvkit_guests, "a"
    .code32
    .global guest_cpuid_start, guest_cpuid_end
guest_cpuid_start:
    xorl %eax, %eax
    cpuid
    cmpl $1, %eax
    CHECK ae, 1
    movl %ebx, %edi                 /* "Genu" or "Auth" */
    movl $1, %eax
    xorl %ecx, %ecx
    cpuid
    btl $31, %ecx
    CHECK c, 2
    btl $5, %ecx
    CHECK nc, 3
    movl $0x80000000, %eax
    cpuid
    cmpl $0x80000001, %eax
    jb 1f
    movl $0x80000001, %eax
    cpuid
    btl $2, %ecx
    CHECK nc, 4
1:
    movl $0x40000000, %eax
    cpuid
    cmpl $0x40000001, %eax
    CHECK ae, 5
    cmpl $0x696b7668, %ebx          /* "hvki" */
    CHECK e, 6
    cmpl $0x4b564874, %ecx          /* "tHVK" */
    CHECK e, 7
    cmpl $0x76685449, %edx          /* "IThv" */
    CHECK e, 8
    movl $0x40000001, %eax
    cpuid
    cmpl $1, %eax
    CHECK e, 9
    movl $1, %eax                   /* VMCALL on Intel */
    cmpl $0x756e6547, %edi          /* "Genu" */
    je 2f
    movl $2, %eax                   /* VMMCALL on AMD */
2:
    cmpl %eax, %ebx
    CHECK e, 10
    PASS
guest_cpuid_end:
    .code64
    .popsection
