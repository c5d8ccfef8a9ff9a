/*
 * hlt: three HLTs; the host counts each one in the guest's EBX and skips it. The guest checks
 * that it resumed after each (EBX = 3, ESI = 3).
 */
    .pushsection .rodata.hvkit_guests, "a"
    .code32
    .global guest_hlt_start, guest_hlt_end
guest_hlt_start:
    xorl %ebx, %ebx
    xorl %esi, %esi
    hlt
    incl %esi
    hlt
    incl %esi
    hlt
    incl %esi
    cmpl $3, %ebx
    CHECK e, 1
    cmpl $3, %esi
    CHECK e, 2
    PASS
guest_hlt_end:
    .code64
    .popsection
