// SPDX-License-Identifier: MIT OR Apache-2.0
/*
 * hvkit-user: what user space may and may not do on a virtualized CPU. Run on each CPU (taskset)
 * while hvkit.ko is loaded; prints one line, e.g.
 *   HVKIT-USER ok cpu=1 tsc=toggled devirtualize=refused rax=ffffffffffffffff sig=kept
 * or HVKIT-USER FAIL ...
 * - PR_SET_TSC makes the kernel rewrite CR4 (TSD) from its per-CPU copy of CR4, twice: that
 *   copy must not carry the host's CR4.VMXE, or the write would take #GP in the kernel.
 * - The devirtualizing hypercall from user space (CPL 3) is refused: RAX comes back as hvkit's
 *   UNKNOWN and the CPU is still virtualized (the hvkit CPUID signature is still there).
 * Freestanding like hvkit-cpuid: `gcc -static -nostdlib -ffreestanding`.
 */
#include "freestanding.h"

#define PR_GET_TSC 25
#define PR_SET_TSC 26
#define PR_TSC_ENABLE 1
#define PR_TSC_SIGSEGV 2
#define DEVIRTUALIZE 0x100UL /* hvkit_vcpu::hypercall::FIRST_USER, the module's number */

static u64 rdtsc(void)
{
	u32 lo, hi;
	asm volatile("rdtsc" : "=a"(lo), "=d"(hi));
	return ((u64)hi << 32) | lo;
}

static int hvkit_signature(void)
{
	u32 a, b, c, d;
	cpuid(0x40000000, &a, &b, &c, &d);
	/* "hvkitHVKIThv" */
	return b == 0x696b7668 && c == 0x4b564874 && d == 0x76685449;
}

void _start(void)
{
	char line[200], *p = line;
	u32 a, b, c, d, cpu = 0;
	long tsc_mode = 0;
	int ok = 1;

	sys3(309, (long)&cpu, 0, 0); /* getcpu */
	p = put(p, "cpu=");
	*p++ = (char)('0' + cpu % 10);

	/* CR4.TSD set and cleared by the kernel for this task. */
	long set = sys3(157, PR_SET_TSC, PR_TSC_SIGSEGV, 0);
	long get = sys3(157, PR_GET_TSC, (long)&tsc_mode, 0);
	long back = sys3(157, PR_SET_TSC, PR_TSC_ENABLE, 0);
	u64 t0 = rdtsc(), t1 = rdtsc();
	int tsc = set == 0 && get == 0 && tsc_mode == PR_TSC_SIGSEGV && back == 0 && t1 >= t0;
	ok &= tsc;
	p = put(p, tsc ? " tsc=toggled" : " tsc=FAILED set/get/enable=");
	if (!tsc) {
		p = hex(p, (u64)set, 16);
		*p++ = '/';
		p = hex(p, (u64)get, 16);
		*p++ = '/';
		p = hex(p, (u64)back, 16);
		p = put(p, " mode=");
		p = hex(p, (u64)tsc_mode, 16);
		p = put(p, " rdtsc=");
		p = hex(p, t0, 16);
		*p++ = '/';
		p = hex(p, t1, 16);
	}

	/* The devirtualizing hypercall from CPL 3, with the vendor's instruction. */
	cpuid(0, &a, &b, &c, &d);
	int amd = b == 0x68747541; /* "Auth" */
	u64 rax = DEVIRTUALIZE;
	if (amd)
		asm volatile("vmmcall" : "+a"(rax) : : "rbx", "rcx", "rdx", "rsi", "rdi", "memory");
	else
		asm volatile("vmcall" : "+a"(rax) : : "rbx", "rcx", "rdx", "rsi", "rdi", "memory");
	int refused = rax == ~0UL;
	int sig = hvkit_signature();
	ok &= refused && sig;
	p = put(p, refused ? " devirtualize=refused rax=" : " devirtualize=ANSWERED rax=");
	p = hex(p, rax, 16);
	p = put(p, sig ? " sig=kept" : " sig=GONE");
	*p++ = '\n';
	*p = 0;
	char out[240], *q = put(out, ok ? "HVKIT-USER ok " : "HVKIT-USER FAIL ");
	q = put(q, line);
	sys3(1, 1, (long)out, q - out);
	sys3(60, ok ? 0 : 1, 0, 0);
	for (;;)
		;
}
