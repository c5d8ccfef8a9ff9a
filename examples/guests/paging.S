/*
 * paging: starts in flat 32-bit protected mode, builds 4-level page tables (identity 0-2 MiB
 * with one 2 MiB page; linear 0x4000_0000 -> physical 0x30000 through a 4 KiB page), turns on
 * PAE, EFER.LME and paging itself and far-jumps to 64-bit code. There it writes through the
 * mapping and reads the frame back through the identity map, switches to a second tree
 * (0x4000_0000 -> 0x31000) and back, and remaps a page with INVLPG.
 * Tables: A = PML4 0x10000, PDPT 0x11000, PD 0x12000, PD 0x13000, PT 0x14000;
 * B = PML4 0x15000, PDPT 0x16000, PD 0x17000, PT 0x18000.
 */
    .pushsection .rodata.hvkit_guests, "a"
    .code32
    .global guest_paging_start, guest_paging_end
    .set PG_BASE, 0x100000
guest_paging_start:
    lgdt pg_gdtd - guest_paging_start + PG_BASE
    /* Tree A. */
    movl $0x11003, 0x10000
    movl $0x12003, 0x11000
    movl $0x13003, 0x11008
    movl $0x00083, 0x12000
    movl $0x14003, 0x13000
    movl $0x30003, 0x14000
    /* Tree B: the same identity PD, another page at 0x4000_0000. */
    movl $0x16003, 0x15000
    movl $0x12003, 0x16000
    movl $0x17003, 0x16008
    movl $0x18003, 0x17000
    movl $0x31003, 0x18000
    /* Frame contents seen through the identity map. */
    movl $0x32323232, 0x32000
    /* Long mode. */
    movl %cr4, %eax
    orl $0x20, %eax                  /* PAE */
    movl %eax, %cr4
    movl $0x10000, %eax
    movl %eax, %cr3
    movl $0xc0000080, %ecx           /* IA32_EFER */
    rdmsr
    orl $0x100, %eax                 /* LME */
    wrmsr
    movl %cr0, %eax
    orl $0x80000000, %eax            /* PG */
    movl %eax, %cr0
    ljmp $0x18, $(pg_long - guest_paging_start + PG_BASE)
    .code64
pg_long:
    movl $0x10, %eax
    movw %ax, %ds
    movw %ax, %ss
    movl $0xc0000080, %ecx
    rdmsr
    btl $10, %eax                    /* LMA */
    CHECK c, 1
    movabsq $0x1122334455667788, %rax
    movq %rax, 0x40000000
    cmpq %rax, 0x30000
    CHECK e, 2
    /* Tree B. */
    movl $0x15000, %eax
    movq %rax, %cr3
    movq $0x5555, 0x40000008
    cmpq $0x5555, 0x31008
    CHECK e, 3
    cmpq $0, 0x40000000
    CHECK e, 4
    /* Back to tree A. */
    movl $0x10000, %eax
    movq %rax, %cr3
    movabsq $0x1122334455667788, %rax
    cmpq %rax, 0x40000000
    CHECK e, 5
    /* Remap 0x4000_0000 -> 0x32000 in tree A and flush the one page. */
    movl $0x32003, 0x14000
    invlpg 0x40000000
    cmpl $0x32323232, 0x40000000
    CHECK e, 6
    PASS
    .balign 8
pg_gdt:
    .quad 0
    .quad 0x00cf9b000000ffff
    .quad 0x00cf93000000ffff
    .quad 0x00af9b000000ffff
pg_gdtd:
    .word 31
    .long pg_gdt - guest_paging_start + PG_BASE
guest_paging_end:
    .code64
    .popsection
