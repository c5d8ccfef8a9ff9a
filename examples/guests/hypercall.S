/*
 * hypercall: finds the hypercall instruction in CPUID 4000_0001H (EBX 1 = VMCALL, 2 = VMMCALL),
 * then PING(41) (hvkit answers 0x6876_6b69_7400_0000 + 41; EAX holds the low half), a user
 * hypercall 0x100 with arguments 1, 2, 3, 4 (the host answers 0x1000 + their sum and checks
 * them; the arguments survive), and hvkit's unknown number 5 (answered with all ones).
 */
    .pushsection .rodata.hvkit_guests, "a"
    .code32
    .global guest_hypercall_start, guest_hypercall_end
guest_hypercall_start:
    movl $0x40000001, %eax
    cpuid
    movl %ebx, 0x2000
    xorl %eax, %eax
    movl $41, %ebx
    call hcall
    cmpl $0x74000029, %eax
    CHECK e, 1
    movl $0x100, %eax
    movl $1, %ebx
    movl $2, %ecx
    movl $3, %edx
    movl $4, %esi
    call hcall
    cmpl $0x100a, %eax
    CHECK e, 2
    cmpl $1, %ebx
    CHECK e, 3
    cmpl $2, %ecx
    CHECK e, 4
    cmpl $3, %edx
    CHECK e, 5
    cmpl $4, %esi
    CHECK e, 6
    movl $5, %eax
    call hcall
    cmpl $0xffffffff, %eax
    CHECK e, 7
    PASS
hcall:
    cmpl $2, 0x2000
    je 1f
    vmcall
    ret
1:
    vmmcall
    ret
guest_hypercall_end:
    .code64
    .popsection
