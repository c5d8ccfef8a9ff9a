// SPDX-License-Identifier: MIT OR Apache-2.0
/*
 * hvkit-fpu: loads and unloads hvkit.ko itself (finit_module/delete_module) with distinctive
 * user FPU state and checks that the state survives both: PKRU (when the kernel enabled
 * protection keys), MXCSR, the x87 control word and XMM5. Prints one line, e.g.
 *   HVKIT-FPU ok load pkru=5555555c mxcsr=3f80 fcw=027f xmm5=ok unload pkru=55555550 ...
 * or HVKIT-FPU FAIL ... The kernel reloads MXCSR, FCW and XMM from memory on the return to
 * user space (the module runs inside kernel_fpu_begin/end), but PKRU is kept live in the
 * register across the kernel: a virtualized CPU must continue with the PKRU it had, and a
 * devirtualized one with the guest's.
 * Freestanding like hvkit-cpuid: `gcc -static -nostdlib -ffreestanding`.
 */
#include "freestanding.h"

static int ospke(void)
{
	u32 a = 7, b, c = 0, d;
	asm volatile("cpuid" : "+a"(a), "=b"(b), "+c"(c), "=d"(d));
	return (c >> 4) & 1;
}

static u32 rdpkru(void)
{
	u32 a, d;
	asm volatile(".byte 0x0f, 0x01, 0xee" : "=a"(a), "=d"(d) : "c"(0));
	return a;
}

static void wrpkru(u32 v)
{
	asm volatile(".byte 0x0f, 0x01, 0xef" : : "a"(v), "c"(0), "d"(0) : "memory");
}

struct fpu_view {
	u32 pkru, mxcsr;
	unsigned short fcw;
	u64 xmm5;
};

/*
 * Sets MXCSR, FCW and XMM5 to the wanted values, makes syscall `n`, and reads them back in
 * the same asm block (so the compiler cannot use XMM5 in between).
 */
static long fpu_syscall(long n, long a, long b, long c, const struct fpu_view *want,
			struct fpu_view *got)
{
	long r;
	u32 mx = want->mxcsr, mx_out;
	unsigned short cw = want->fcw, cw_out;
	u64 x = want->xmm5, x_out;

	asm volatile("ldmxcsr %[mx]\n\t"
		     "fldcw %[cw]\n\t"
		     "movq %[x], %%xmm5\n\t"
		     "syscall\n\t"
		     "stmxcsr %[mxo]\n\t"
		     "fnstcw %[cwo]\n\t"
		     "movq %%xmm5, %[xo]\n\t"
		     : "=a"(r), [mxo] "=m"(mx_out), [cwo] "=m"(cw_out), [xo] "=r"(x_out)
		     : "a"(n), "D"(a), "S"(b), "d"(c), [mx] "m"(mx), [cw] "m"(cw), [x] "r"(x)
		     : "rcx", "r11", "xmm5", "memory");
	got->mxcsr = mx_out;
	got->fcw = cw_out;
	got->xmm5 = x_out;
	return r;
}

/* Runs one step; appends its figures to the line; returns 1 when everything survived. */
static int step(char **line, const char *name, long n, long a, long b, long c,
		const struct fpu_view *want, int pkeys)
{
	struct fpu_view got = { 0 };
	char *p = *line;
	long r;
	int ok;

	if (pkeys)
		wrpkru(want->pkru);
	r = fpu_syscall(n, a, b, c, want, &got);
	got.pkru = pkeys ? rdpkru() : 0;
	ok = r == 0 && (!pkeys || got.pkru == want->pkru) && got.mxcsr == want->mxcsr &&
	     got.fcw == want->fcw && got.xmm5 == want->xmm5;
	p = put(p, " ");
	p = put(p, name);
	if (r != 0) {
		p = put(p, " error=");
		p = hex(p, (u64)-r, 4);
	}
	p = put(p, pkeys ? " pkru=" : " pkru=none");
	if (pkeys)
		p = hex(p, got.pkru, 8);
	if (pkeys && got.pkru != want->pkru) {
		p = put(p, "(want ");
		p = hex(p, want->pkru, 8);
		p = put(p, ")");
	}
	p = put(p, " mxcsr=");
	p = hex(p, got.mxcsr, 4);
	p = put(p, " fcw=");
	p = hex(p, got.fcw, 4);
	p = put(p, got.xmm5 == want->xmm5 ? " xmm5=ok" : " xmm5=CHANGED");
	*line = p;
	return ok;
}

void _start(void)
{
	char body[360], line[400], *p = body, *q;
	int pkeys = ospke(), ok = 1;
	/* Key 0 (all ordinary memory) stays accessible; keys 1-15 differ between the steps. */
	const struct fpu_view load = { 0x5555555c, 0x3f80, 0x027f, 0x1122334455667788UL };
	const struct fpu_view unload = { 0x55555550, 0x5f80, 0x037e, 0x8877665544332211UL };
	long fd = sys3(2, (long)"/hvkit.ko", 0, 0); /* open, O_RDONLY */

	if (fd < 0) {
		p = put(p, " cannot open /hvkit.ko");
		ok = 0;
	} else {
		ok &= step(&p, "load", 313, fd, (long)"", 0, &load, pkeys); /* finit_module */
		sys3(3, fd, 0, 0);
		/* delete_module("hvkit", O_NONBLOCK) */
		ok &= step(&p, "unload", 176, (long)"hvkit", 04000, 0, &unload, pkeys);
	}
	*p = 0;
	q = put(line, ok ? "HVKIT-FPU ok" : "HVKIT-FPU FAIL");
	q = put(q, body);
	q = put(q, "\n");
	sys3(1, 1, (long)line, q - line);
	sys3(60, ok ? 0 : 1, 0, 0);
	for (;;)
		;
}
