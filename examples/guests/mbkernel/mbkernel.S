/*
 * mbkernel: an ordinary multiboot v1 kernel (ELF32, i386), the kind GRUB legacy or QEMU
 * `-kernel` boots. It knows nothing of hvkit: the same ELF file boots natively under
 * `qemu-system-i386 -kernel mbkernel.elf -append "..." -initrd module.txt` and as a boot module
 * of the bare-metal hypervisor (`examples/baremetal`, case `mbkernel`), which loads it into a
 * guest the way a multiboot boot loader would.
 *
 * On entry it checks what the Multiboot Specification 0.6.96 promises (§3.2 "Machine state",
 * §3.3 "Boot information format") and prints one line per check on COM1 (a 16550 at 3F8H):
 * `ok mbkernel <what>: <details>` or `FAIL mbkernel <what>: <details>`, then
 * `RESULT PASS checks=<n>` (or `RESULT FAIL checks=<n> failed=<m>`) and writes 0x10 (pass) or
 * 0x11 (fail) to port F4H, QEMU's `isa-debug-exit` (QEMU then exits with status 33 or 35; under
 * hvkit the host intercepts the write and ends the guest run).
 *
 * The command line may announce what the loader is expected to report: `mem_lower=<KiB>` and
 * `mem_upper=<KiB>` (then the info block must say exactly that), and must contain the word
 * `hvkit-mbkernel-test`. The first module must be `module.txt` with the very bytes assembled
 * into this kernel (`.incbin`).
 *
 * Build: as --32 -I <this folder> -o mbkernel.o mbkernel.S && ld -m elf_i386 -T linker.ld
 * -o mbkernel.elf mbkernel.o (the `hvkit-e2e` crate does this, `tests/src/lib.rs`).
 */
    .set MB_HEADER_MAGIC, 0x1BADB002
    /* Flags: bit 0 = modules page-aligned, bit 1 = memory information wanted. */
    .set MB_HEADER_FLAGS, 0x00000003
    .set MB_BOOTLOADER_MAGIC, 0x2BADB002
    /* Info block flags (§3.3): bit 0 mem_lower/mem_upper, bit 2 cmdline, bit 3 mods. */
    .set INFO_MEM, 1 << 0
    .set INFO_CMDLINE, 1 << 2
    .set INFO_MODS, 1 << 3
    .set COM1, 0x3f8
    .set DEBUG_EXIT, 0xf4
    .set PASS_VALUE, 0x10
    .set FAIL_VALUE, 0x11
    .set FLAT_WORD, 0x54414c46          /* "FLAT" */
    .set CR0_PE, 1 << 0
    .set CR0_PG, 1 << 31
    .set EFLAGS_IF, 1 << 9
    .set EFLAGS_VM, 1 << 17
    .set BSS_BIG, 96 * 1024

    .section .multiboot, "a"
    .balign 4
multiboot_header:
    .long MB_HEADER_MAGIC
    .long MB_HEADER_FLAGS
    .long -(MB_HEADER_MAGIC + MB_HEADER_FLAGS)

/* Prints the string literal `text`. */
    .macro PRINT text
    .pushsection .rodata
.Lstr\@: .asciz "\text"
    .popsection
    pushl %esi
    movl $.Lstr\@, %esi
    call puts
    popl %esi
    .endm

/* Prints the 32-bit value `src` in hex (0x%08x) or decimal. */
    .macro HEX src
    pushl %eax
    movl \src, %eax
    call puthex
    popl %eax
    .endm
    .macro DEC src
    pushl %eax
    movl \src, %eax
    call putdec
    popl %eax
    .endm

/* Starts a check's line: `ok mbkernel <what>: ` if condition `cond` holds after the last
 * compare, else `FAIL mbkernel <what>: ` (counted). The details and `call newline` follow. */
    .macro LINE cond, what
    .pushsection .rodata
.Lwhat\@: .asciz "\what: "
    .popsection
    pushl %esi
    movl $.Lwhat\@, %esi
    j\cond .Lok\@
    call begin_fail
    jmp .Ldone\@
.Lok\@:
    call begin_ok
.Ldone\@:
    popl %esi
    .endm

    .text
    .code32
    .global _start
_start:
    /* The loader's state, before anything changes it (DS is flat: §3.2). */
    movl %eax, entry_eax
    movl %ebx, entry_ebx
    movl $stack_top, %esp
    pushfl
    popl entry_eflags
    movl %cr0, %eax
    movl %eax, entry_cr0
    movw %cs, entry_cs
    movw %ds, entry_ds
    movw %es, entry_es
    movw %fs, entry_fs
    movw %gs, entry_gs
    movw %ss, entry_ss
    cld
    call serial_init
    PRINT "mbkernel: multiboot 0.6.96 kernel entered at "
    HEX $_start
    PRINT ", EBX "
    HEX entry_ebx
    call newline

    /* 1. EAX holds the boot-loader magic. */
    cmpl $MB_BOOTLOADER_MAGIC, entry_eax
    LINE e, "mbkernel eax"
    HEX entry_eax
    PRINT " (the multiboot boot-loader magic is 0x2badb002)"
    call newline

    /* 2. CR0: PE set, PG clear. */
    movl entry_cr0, %eax
    andl $(CR0_PE | CR0_PG), %eax
    cmpl $CR0_PE, %eax
    LINE e, "mbkernel cr0"
    HEX entry_cr0
    PRINT " (PE set, PG clear)"
    call newline

    /* 3. EFLAGS: IF clear. PUSHFD clears VM in the image it stores, so VM = 0 is shown by this
     * 32-bit code running at all (in virtual-8086 mode it would decode as 16-bit code). */
    testl $(EFLAGS_IF | EFLAGS_VM), entry_eflags
    LINE z, "mbkernel eflags"
    HEX entry_eflags
    PRINT " (IF clear; VM clear: this is 32-bit code)"
    call newline

    /* 4. Flat segments at CPL 0: a known word of .data reads the same through DS, ES, FS, GS
     * and SS at its link address (bases 0), so does the last word of RAM (limits reach it);
     * CALL/POP gives the link address (CS base 0); CS.RPL = 0. */
    call check_segments
    LINE e, "mbkernel segments"
    PRINT "CS "
    HEX entry_cs
    PRINT " DS "
    HEX entry_ds
    PRINT " ES "
    HEX entry_es
    PRINT " FS "
    HEX entry_fs
    PRINT " GS "
    HEX entry_gs
    PRINT " SS "
    HEX entry_ss
    PRINT ", flat (base 0, limits up to "
    HEX ram_top
    PRINT "), CPL 0"
    call newline

    /* 5. A20 enabled: a word at 1 MiB + x and the one at x do not follow each other. */
    call check_a20
    LINE e, "mbkernel a20"
    PRINT "the word at "
    HEX $a20_probe
    PRINT " does not alias the one 1 MiB lower"
    call newline

    /* 6. The info block carries memory, command line and modules. */
    movl entry_ebx, %ebx
    movl (%ebx), %eax
    andl $(INFO_MEM | INFO_CMDLINE | INFO_MODS), %eax
    cmpl $(INFO_MEM | INFO_CMDLINE | INFO_MODS), %eax
    LINE e, "mbkernel info flags"
    HEX (%ebx)
    PRINT " (mem, cmdline and mods bits 0, 2, 3 set)"
    call newline

    /* 7. mem_lower/mem_upper plausible, and what the command line announces. */
    call check_memory
    LINE e, "mbkernel memory"
    PRINT "mem_lower "
    DEC mem_lower
    PRINT " KiB, mem_upper "
    DEC mem_upper
    PRINT " KiB (command line: mem_lower="
    DEC announced_lower
    PRINT " mem_upper="
    DEC announced_upper
    PRINT ", 0 = not announced)"
    call newline

    /* 8. The command line, with the known word. */
    call check_cmdline
    LINE e, "mbkernel cmdline"
    PRINT "\""
    movl cmdline, %esi
    call puts
    PRINT "\" has the word hvkit-mbkernel-test"
    call newline

    /* 9. At least one module, page-aligned (header flag 0), named module.txt. */
    call check_modules
    LINE e, "mbkernel modules"
    DEC mods_count
    PRINT " module(s); the first at "
    HEX mod_start
    PRINT "-"
    HEX mod_end
    PRINT " (page-aligned), string \""
    movl mod_string, %esi
    call puts
    PRINT "\""
    call newline

    /* 10. The module's bytes are the ones this kernel was built with. */
    call check_module_bytes
    LINE e, "mbkernel module bytes"
    movl mod_end, %eax
    subl mod_start, %eax
    DEC %eax
    PRINT " bytes, expected "
    DEC $(expected_module_end - expected_module)
    PRINT " equal to this kernel's copy; FNV-1a "
    HEX mod_hash
    call newline

    /* 11. The whole .bss is zero (the loader zeroed p_memsz beyond p_filesz). */
    call check_bss
    LINE e, "mbkernel bss"
    HEX $bss_begin
    PRINT "-"
    HEX $bss_finish
    PRINT " ("
    DEC $(bss_finish - bss_begin)
    PRINT " bytes) all zero"
    call newline

    /* 12. Its own GDT and IDT: segments reloaded, INT3 handled and returned from. */
    call own_tables
    cmpl $1, breakpoints
    LINE e, "mbkernel own gdt/idt"
    PRINT "segments reloaded from its own GDT, INT3 returned through its own IDT ("
    DEC breakpoints
    PRINT " breakpoint)"
    call newline

    call note_cpuid

    /* The result. */
    PRINT "RESULT "
    cmpl $0, failures
    jne 1f
    PRINT "PASS checks="
    DEC passes
    call newline
    movb $PASS_VALUE, %al
    jmp finish
1:
    PRINT "FAIL checks="
    DEC passes
    PRINT " failed="
    DEC failures
    call newline
    movb $FAIL_VALUE, %al
finish:
    call drain
    outb %al, $DEBUG_EXIT
2:
    cli
    hlt
    jmp 2b

/* ---- checks (each returns ZF = 1 when it holds) ---- */

check_segments:
    pushal
    /* The last word of RAM, from mem_upper when the loader gave it. */
    movl entry_ebx, %ebx
    movl $0x100000 - 4, %edi
    testl $INFO_MEM, (%ebx)
    jz 1f
    movl 8(%ebx), %eax
    shll $10, %eax
    addl %eax, %edi
1:
    movl %edi, ram_top
    movl $FLAT_WORD, %eax
    cmpl %eax, %ds:flat_probe
    jne 9f
    cmpl %eax, %es:flat_probe
    jne 9f
    cmpl %eax, %fs:flat_probe
    jne 9f
    cmpl %eax, %gs:flat_probe
    jne 9f
    cmpl %eax, %ss:flat_probe
    jne 9f
    movl %ds:(%edi), %eax
    cmpl %eax, %es:(%edi)
    jne 9f
    cmpl %eax, %fs:(%edi)
    jne 9f
    cmpl %eax, %gs:(%edi)
    jne 9f
    cmpl %eax, %ss:(%edi)
    jne 9f
    call 2f
2:
    popl %eax
    cmpl $2b, %eax
    jne 9f
    testw $3, entry_cs
9:
    popal
    ret

check_a20:
    pushal
    movl $a20_probe, %esi
    movl %esi, %edi
    xorl $0x100000, %edi
    movl $0x12345678, (%esi)
    movl (%edi), %eax
    cmpl (%esi), %eax
    jne 9f
    movl $0x87654321, (%esi)
    movl (%edi), %eax
    cmpl (%esi), %eax
    jne 9f
    /* Both writes showed up 1 MiB lower: A20 is masked. */
    xorl %eax, %eax
    incl %eax
    popal
    ret
9:
    xorl %eax, %eax
    popal
    ret

check_memory:
    pushal
    movl entry_ebx, %ebx
    testl $INFO_MEM, (%ebx)
    jz 8f
    movl 4(%ebx), %eax
    movl %eax, mem_lower
    movl 8(%ebx), %eax
    movl %eax, mem_upper
    /* What the command line announces (0 when it does not). */
    testl $INFO_CMDLINE, (%ebx)
    jz 1f
    movl 16(%ebx), %esi
    movl $key_mem_lower, %edi
    call word_value
    jc 2f
    movl %eax, announced_lower
2:
    movl $key_mem_upper, %edi
    call word_value
    jc 1f
    movl %eax, announced_upper
1:
    /* Plausible: 0 < mem_lower <= 640 KiB, mem_upper >= 1 MiB. */
    movl mem_lower, %eax
    testl %eax, %eax
    jz 8f
    cmpl $640, %eax
    ja 8f
    cmpl $1024, mem_upper
    jb 8f
    movl announced_lower, %ecx
    testl %ecx, %ecx
    jz 3f
    cmpl %ecx, %eax
    jne 8f
3:
    movl announced_upper, %ecx
    testl %ecx, %ecx
    jz 4f
    cmpl %ecx, mem_upper
    jne 8f
4:
    xorl %eax, %eax
    popal
    ret
8:
    xorl %eax, %eax
    incl %eax
    popal
    ret

check_cmdline:
    pushal
    movl $empty, cmdline
    movl entry_ebx, %ebx
    testl $INFO_CMDLINE, (%ebx)
    jz 8f
    movl 16(%ebx), %esi
    movl %esi, cmdline
    movl $word_token, %edi
    movl $1, %edx
    call find
    testl %eax, %eax
    jz 8f
    xorl %eax, %eax
    popal
    ret
8:
    xorl %eax, %eax
    incl %eax
    popal
    ret

check_modules:
    pushal
    movl $empty, mod_string
    movl entry_ebx, %ebx
    testl $INFO_MODS, (%ebx)
    jz 8f
    movl 20(%ebx), %eax
    movl %eax, mods_count
    testl %eax, %eax
    jz 8f
    movl 24(%ebx), %ecx              /* mods_addr: the first entry (§3.3) */
    movl (%ecx), %eax
    movl %eax, mod_start
    movl 4(%ecx), %eax
    movl %eax, mod_end
    movl 8(%ecx), %esi
    movl %esi, mod_string
    testl $0xfff, mod_start
    jnz 8f
    movl $word_module, %edi
    xorl %edx, %edx
    call find
    testl %eax, %eax
    jz 8f
    xorl %eax, %eax
    popal
    ret
8:
    xorl %eax, %eax
    incl %eax
    popal
    ret

check_module_bytes:
    pushal
    movl mod_start, %esi
    movl mod_end, %ecx
    subl %esi, %ecx
    jb 8f
    /* FNV-1a over the module. */
    movl $0x811c9dc5, %eax
    movl %ecx, %edx
    movl %esi, %ebx
1:
    testl %edx, %edx
    jz 2f
    xorb (%ebx), %al
    imull $0x01000193, %eax
    incl %ebx
    decl %edx
    jmp 1b
2:
    movl %eax, mod_hash
    cmpl $(expected_module_end - expected_module), %ecx
    jne 8f
    cmpl $0, mods_count
    je 8f
    movl $expected_module, %edi
    repe cmpsb
    jne 8f
    xorl %eax, %eax
    popal
    ret
8:
    xorl %eax, %eax
    incl %eax
    popal
    ret

check_bss:
    pushal
    movl $bss_begin, %edi
    movl $(bss_finish - bss_begin) / 4, %ecx
    xorl %eax, %eax
    repe scasl
    popal
    ret

/* Loads its own GDT (flat code 08H, data 10H), reloads every segment register, builds an IDT
 * of 32 exception gates and executes INT3, which the handler counts and returns from. */
own_tables:
    pushal
    lgdt gdt_pointer
    ljmp $0x08, $1f
1:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %fs
    movw %ax, %gs
    movw %ax, %ss
    xorl %ecx, %ecx
2:
    movl exception_stubs(, %ecx, 4), %eax
    movw %ax, idt(, %ecx, 8)
    movw $0x08, idt + 2(, %ecx, 8)
    movw $0x8e00, idt + 4(, %ecx, 8)
    shrl $16, %eax
    movw %ax, idt + 6(, %ecx, 8)
    incl %ecx
    cmpl $32, %ecx
    jb 2b
    lidt idt_pointer
    int3
    popal
    ret

    .macro EXC_NOERR n
exception_\n:
    pushl $0
    pushl $\n
    jmp exception_common
    .endm
    .macro EXC_ERR n
exception_\n:
    pushl $\n
    jmp exception_common
    .endm
    EXC_NOERR 0
    EXC_NOERR 1
    EXC_NOERR 2
    EXC_NOERR 3
    EXC_NOERR 4
    EXC_NOERR 5
    EXC_NOERR 6
    EXC_NOERR 7
    EXC_ERR 8
    EXC_NOERR 9
    EXC_ERR 10
    EXC_ERR 11
    EXC_ERR 12
    EXC_ERR 13
    EXC_ERR 14
    EXC_NOERR 15
    EXC_NOERR 16
    EXC_ERR 17
    EXC_NOERR 18
    EXC_NOERR 19
    EXC_NOERR 20
    EXC_ERR 21
    EXC_NOERR 22
    EXC_NOERR 23
    EXC_NOERR 24
    EXC_NOERR 25
    EXC_NOERR 26
    EXC_NOERR 27
    EXC_NOERR 28
    EXC_ERR 29
    EXC_ERR 30
    EXC_NOERR 31

/* The breakpoint is counted and returned from; any other exception fails the run. */
exception_common:
    cmpl $3, (%esp)
    jne 1f
    incl breakpoints
    addl $8, %esp
    iret
1:
    movl (%esp), %ebx
    movl 4(%esp), %ecx
    movl 8(%esp), %edx
    PRINT "FAIL mbkernel exception: vector "
    DEC %ebx
    PRINT " error "
    HEX %ecx
    PRINT " eip "
    HEX %edx
    call newline
    PRINT "RESULT FAIL checks="
    DEC passes
    call newline
    movb $FAIL_VALUE, %al
    jmp finish

/* Informational: what CPUID says about a hypervisor (not a check: native runs have none). */
note_cpuid:
    pushal
    movl $1, %eax
    cpuid
    PRINT "mbkernel: note: CPUID.1:ECX[31] (hypervisor present) = "
    shrl $31, %ecx
    DEC %ecx
    testl %ecx, %ecx
    jz 1f
    movl $0x40000000, %eax
    cpuid
    movl %ebx, vendor_sig
    movl %ecx, vendor_sig + 4
    movl %edx, vendor_sig + 8
    PRINT ", leaf 40000000H \""
    movl $vendor_sig, %esi
    call puts
    PRINT "\""
1:
    call newline
    popal
    ret

/* ---- strings ---- */

/* find: EAX = the first place in the string at ESI where the string at EDI starts (at the
 * start of a word, after a space or the start, when EDX != 0), or 0. Other registers kept. */
find:
    pushl %ebx
    pushl %ecx
    pushl %esi
    movl %esi, %ebx
1:
    cmpb $0, (%esi)
    je 4f
    testl %edx, %edx
    jz 2f
    cmpl %ebx, %esi
    je 2f
    cmpb $0x20, -1(%esi)           /* a space */
    jne 3f
2:
    xorl %ecx, %ecx
5:
    movb (%edi, %ecx), %al
    testb %al, %al
    jz 6f
    cmpb %al, (%esi, %ecx)
    jne 3f
    incl %ecx
    jmp 5b
6:
    movl %esi, %eax
    jmp 7f
3:
    incl %esi
    jmp 1b
4:
    xorl %eax, %eax
7:
    popl %esi
    popl %ecx
    popl %ebx
    ret

/* word_value: the decimal number after the word `key` (EDI, with its `=`) in the string at
 * ESI: CF clear and EAX = the number, or CF set when the word is absent. */
word_value:
    pushl %ebx
    pushl %ecx
    pushl %edx
    pushl %esi
    movl $1, %edx
    call find
    testl %eax, %eax
    jz 8f
    movl %eax, %esi
    xorl %ecx, %ecx
1:
    cmpb $0, (%edi, %ecx)
    je 2f
    incl %ecx
    jmp 1b
2:
    addl %ecx, %esi
    xorl %eax, %eax
3:
    movzbl (%esi), %ebx
    subl $0x30, %ebx                /* '0' */
    cmpl $9, %ebx
    ja 4f
    imull $10, %eax
    addl %ebx, %eax
    incl %esi
    jmp 3b
4:
    clc
    jmp 9f
8:
    stc
9:
    popl %esi
    popl %edx
    popl %ecx
    popl %ebx
    ret

/* ---- COM1 ---- */

serial_init:
    pushl %eax
    pushl %edx
    movw $COM1 + 1, %dx
    movb $0x00, %al                 /* no interrupts */
    outb %al, %dx
    movw $COM1 + 3, %dx
    movb $0x80, %al                 /* DLAB */
    outb %al, %dx
    movw $COM1, %dx
    movb $0x01, %al                 /* divisor 1: 115200 baud */
    outb %al, %dx
    movw $COM1 + 1, %dx
    movb $0x00, %al
    outb %al, %dx
    movw $COM1 + 3, %dx
    movb $0x03, %al                 /* 8N1 */
    outb %al, %dx
    movw $COM1 + 2, %dx
    movb $0xc7, %al                 /* FIFOs on and cleared */
    outb %al, %dx
    movw $COM1 + 4, %dx
    movb $0x03, %al                 /* DTR, RTS */
    outb %al, %dx
    popl %edx
    popl %eax
    ret

/* putc: AL to COM1 once the transmit holding register is empty (LSR bit 5). */
putc:
    pushl %eax
    pushl %edx
    movb %al, %ah
    movw $COM1 + 5, %dx
1:
    inb %dx, %al
    testb $0x20, %al
    jz 1b
    movw $COM1, %dx
    movb %ah, %al
    outb %al, %dx
    popl %edx
    popl %eax
    ret

/* drain: waits until the transmitter is empty (LSR bit 6), so nothing is lost at the end. */
drain:
    pushl %eax
    pushl %edx
    movw $COM1 + 5, %dx
1:
    inb %dx, %al
    testb $0x40, %al
    jz 1b
    popl %edx
    popl %eax
    ret

/* puts: the NUL-terminated string at ESI. */
puts:
    pushal
1:
    lodsb
    testb %al, %al
    jz 2f
    call putc
    jmp 1b
2:
    popal
    ret

newline:
    pushl %eax
    movb $0x0d, %al
    call putc
    movb $0x0a, %al
    call putc
    popl %eax
    ret

/* puthex: EAX as 0x%08x. */
puthex:
    pushal
    movl %eax, %edx
    movb $0x30, %al                 /* "0x" */
    call putc
    movb $0x78, %al
    call putc
    movl $8, %ecx
1:
    roll $4, %edx
    movl %edx, %eax
    andl $0xf, %eax
    movb hex_digits(%eax), %al
    call putc
    decl %ecx
    jnz 1b
    popal
    ret

/* putdec: EAX in decimal. */
putdec:
    pushal
    movl $10, %ebx
    xorl %ecx, %ecx
1:
    xorl %edx, %edx
    divl %ebx
    pushl %edx
    incl %ecx
    testl %eax, %eax
    jnz 1b
2:
    popl %eax
    addb $0x30, %al
    call putc
    decl %ecx
    jnz 2b
    popal
    ret

begin_ok:
    incl passes
    PRINT "ok "
    call puts
    ret

begin_fail:
    incl failures
    PRINT "FAIL "
    call puts
    ret

    .section .rodata
hex_digits:
    .ascii "0123456789abcdef"
empty:
    .asciz ""
key_mem_lower:
    .asciz "mem_lower="
key_mem_upper:
    .asciz "mem_upper="
word_token:
    .asciz "hvkit-mbkernel-test"
word_module:
    .asciz "module.txt"
    .balign 4
exception_stubs:
    .long exception_0, exception_1, exception_2, exception_3
    .long exception_4, exception_5, exception_6, exception_7
    .long exception_8, exception_9, exception_10, exception_11
    .long exception_12, exception_13, exception_14, exception_15
    .long exception_16, exception_17, exception_18, exception_19
    .long exception_20, exception_21, exception_22, exception_23
    .long exception_24, exception_25, exception_26, exception_27
    .long exception_28, exception_29, exception_30, exception_31
expected_module:
    .incbin "module.txt"
expected_module_end:

    .data
    .balign 8
gdt:
    .quad 0
    .quad 0x00cf9a000000ffff            /* 08H: 32-bit code, base 0, limit 4 GiB */
    .quad 0x00cf92000000ffff            /* 10H: data, base 0, limit 4 GiB */
gdt_end:
    .balign 4
    .short 0
gdt_pointer:
    .short gdt_end - gdt - 1
    .long gdt
    .balign 4
    .short 0
idt_pointer:
    .short 32 * 8 - 1
    .long idt
    .balign 8
idt:
    .fill 32 * 8, 1, 0
flat_probe:
    .long FLAT_WORD
a20_probe:
    .long 0
entry_eax:
    .long 0
entry_ebx:
    .long 0
entry_eflags:
    .long 0
entry_cr0:
    .long 0
entry_cs:
    .long 0
entry_ds:
    .long 0
entry_es:
    .long 0
entry_fs:
    .long 0
entry_gs:
    .long 0
entry_ss:
    .long 0
ram_top:
    .long 0
mem_lower:
    .long 0
mem_upper:
    .long 0
announced_lower:
    .long 0
announced_upper:
    .long 0
cmdline:
    .long 0
mods_count:
    .long 0
mod_start:
    .long 0
mod_end:
    .long 0
mod_string:
    .long 0
mod_hash:
    .long 0
breakpoints:
    .long 0
passes:
    .long 0
failures:
    .long 0
vendor_sig:
    .fill 16, 1, 0

    /* Nothing here is written: the loader must have zeroed it all (p_memsz > p_filesz). */
    .bss
    .balign 16
bss_begin:
big_bss:
    .skip BSS_BIG
bss_finish:

    .section .stack, "aw", @nobits
    .balign 16
    .skip 16 * 1024
stack_top:
