// SPDX-License-Identifier: MIT OR Apache-2.0
/*
 * hvkit-cpuid: reads the hvkit CPUID leaves from user space and prints one line, e.g.
 *   HVKIT-CPUID cpu=1 sig=hvkitHVKIThv max=40000001 hv=1 vmx=0 svm=0
 * (sig=none when leaf 0x4000_0000 does not carry the hvkit signature). Freestanding: no libc,
 * built with `gcc -static -nostdlib -ffreestanding`, so the initramfs needs nothing else.
 */
#include "freestanding.h"

void _start(void)
{
	char line[160], *p = line;
	u32 a, b, c, d, cpu = 0, hv, vmx, svm, max;
	char sig[13];

	sys3(309, (long)&cpu, 0, 0); /* getcpu */
	cpuid(1, &a, &b, &c, &d);
	hv = (c >> 31) & 1;
	vmx = (c >> 5) & 1;
	cpuid(0x80000001, &a, &b, &c, &d);
	svm = (c >> 2) & 1;
	cpuid(0x40000000, &max, &b, &c, &d);
	for (int i = 0; i < 4; i++) {
		sig[i] = (char)(b >> (8 * i));
		sig[4 + i] = (char)(c >> (8 * i));
		sig[8 + i] = (char)(d >> (8 * i));
	}
	sig[12] = 0;
	int ok = 1;
	const char *want = "hvkitHVKIThv";
	for (int i = 0; i < 12; i++)
		ok &= sig[i] == want[i];
	p = put(p, "HVKIT-CPUID cpu=");
	p = dec(p, cpu);
	p = put(p, " sig=");
	p = put(p, ok ? sig : "none");
	p = put(p, " max=");
	p = hex(p, max, 8);
	p = put(p, " hv=");
	p = dec(p, hv);
	p = put(p, " vmx=");
	p = dec(p, vmx);
	p = put(p, " svm=");
	p = dec(p, svm);
	*p++ = '\n';
	sys3(1, 1, (long)line, p - line);
	sys3(60, ok ? 0 : 1, 0, 0);
	for (;;)
		;
}
