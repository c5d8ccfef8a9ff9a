/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * What the freestanding initramfs helpers (hvkit-cpuid, hvkit-user, hvkit-fpu) share: no libc,
 * built with `gcc -static -nostdlib -ffreestanding`, so they need nothing else in the initramfs.
 */
#ifndef HVKIT_FREESTANDING_H
#define HVKIT_FREESTANDING_H

typedef unsigned int u32;
typedef unsigned long u64;

/* A system call with up to three arguments. */
static inline long sys3(long n, long a, long b, long c)
{
	long r;
	asm volatile("syscall" : "=a"(r) : "a"(n), "D"(a), "S"(b), "d"(c) : "rcx", "r11", "memory");
	return r;
}

static inline void cpuid(u32 leaf, u32 *a, u32 *b, u32 *c, u32 *d)
{
	asm volatile("cpuid" : "=a"(*a), "=b"(*b), "=c"(*c), "=d"(*d) : "a"(leaf), "c"(0));
}

/* Appends `s` at `p`; returns the new end. */
static inline char *put(char *p, const char *s)
{
	while (*s)
		*p++ = *s++;
	return p;
}

/* Appends the low `digits` hex digits of `v`. */
static inline char *hex(char *p, u64 v, int digits)
{
	for (int i = 4 * (digits - 1); i >= 0; i -= 4)
		*p++ = "0123456789abcdef"[(v >> i) & 15];
	return p;
}

/* Appends `v` in decimal. */
static inline char *dec(char *p, u32 v)
{
	char t[12];
	int n = 0;
	do {
		t[n++] = '0' + v % 10;
		v /= 10;
	} while (v);
	while (n)
		*p++ = t[--n];
	return p;
}

#endif
