/*
 * Shared by every guest (GNU as, AT&T syntax; assembled into the bare-metal kernel by
 * `examples/baremetal/src/guests.rs` with `global_asm!`). Guests are copied into guest RAM and
 * run under hvkit-vcpu; they report through port 0x510 (OUT of EAX: 0 = PASS, else the number
 * of the check that failed), which the host intercepts and which ends the run.
 *
 * Absolute addresses inside a guest are written `label - <guest>_start + <load address>`:
 * both labels sit in the same section, so the assembler folds them into constants and the
 * code runs wherever the host copies it.
 */
    .macro GUEST_REPORT
    movw $0x510, %dx
    outl %eax, %dx
.Lhang\@:
    hlt
    jmp .Lhang\@
    .endm

    .macro PASS
    xorl %eax, %eax
    GUEST_REPORT
    .endm

    /* After a compare: report failure `code` unless condition `cond` holds. */
    .macro CHECK cond, code
    j\cond .Lok\@
    movl $\code, %eax
    GUEST_REPORT
.Lok\@:
    .endm

    /* A 32-bit interrupt gate in the IDT at 0x3000 for vector `vec`, selector 0x08. */
    .macro SETGATE vec, handler, start, base
    movl $(\handler - \start + \base), %eax
    movl %eax, %ecx
    andl $0xffff, %eax
    orl $0x00080000, %eax
    andl $0xffff0000, %ecx
    orl $0x8e00, %ecx
    movl %eax, 0x3000 + 8 * \vec
    movl %ecx, 0x3000 + 8 * \vec + 4
    .endm
