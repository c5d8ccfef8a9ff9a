/*
 * npf: touches three pages above its RAM (GPA 0x4000_0000, 0x4000_1000: reads; 0x4000_2000: a
 * write). Each access exits as a nested-page fault; the host maps a fresh page there, fills the
 * first words of the read pages with 0x4E50_4600 + page number, and the guest retries. The guest
 * checks the data it reads (and that a second access to a mapped page does not exit); the host
 * checks the write landed in its page.
 */
    .pushsection .rodata.hvkit_guests, "a"
    .code32
    .global guest_npf_start, guest_npf_end
guest_npf_start:
    movl 0x40000000, %eax
    cmpl $0x4e504600, %eax
    CHECK e, 1
    movl 0x40001004, %eax
    cmpl $0x4e504601, %eax
    CHECK e, 2
    movl $0xdeadbeef, 0x40002010
    cmpl $0xdeadbeef, 0x40002010
    CHECK e, 3
    movl 0x40000008, %eax
    cmpl $0x4e504600, %eax
    CHECK e, 4
    PASS
guest_npf_end:
    .code64
    .popsection
