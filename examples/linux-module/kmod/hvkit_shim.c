// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * hvkit.ko: the C half. Module entry points, page allocation, on_each_cpu, the kernel's CR4
 * helpers, the FPU/XCR0 bracket around the world switch, debugfs figures and printk. The
 * hypervisor itself is the Rust half (hvkit_rust.o, built on hvkit-vcpu); see README.md.
 */
#include <linux/module.h>
#include <linux/kernel.h>
#include <linux/smp.h>
#include <linux/cpumask.h>
#include <linux/gfp.h>
#include <linux/mm.h>
#include <linux/debugfs.h>
#include <linux/seq_file.h>
#include <linux/cpu.h>
#include <linux/suspend.h>
#include <linux/notifier.h>
#include <asm/processor.h>
#include <asm/tlbflush.h>
#include <asm/desc.h>
#include <asm/msr.h>
#include <asm/fpu/api.h>
#include <asm/fpu/xcr.h>
#include <asm/asm.h>

#define HVKIT_POOL_ORDER 9 /* 2 MiB, 512 frames, 2 MiB aligned */
#define HVKIT_MAX_CPUS 64

/* The Rust half (src/exports.rs). */
long hvkit_rust_init(u64 pool_phys, size_t frames, u64 page_offset, u32 cpus);
long hvkit_rust_virtualize(u32 cpu);
long hvkit_rust_devirtualize(bool intel);
void hvkit_rust_free_stack(u32 cpu);
u64 hvkit_rust_stat(u32 cpu, u32 which);
u64 hvkit_rust_live_frames(void);

/* What the Rust half calls (src/shim.rs). */
void hvkit_shim_log(int level, const char *text, size_t len);
u32 hvkit_shim_cpu(void);
void hvkit_shim_on_each_cpu(void (*f)(void *), void *context);

void hvkit_shim_log(int level, const char *text, size_t len)
{
	if (level <= 3)
		pr_err("hvkit: %.*s\n", (int)len, text);
	else if (level == 4)
		pr_warn("hvkit: %.*s\n", (int)len, text);
	else
		pr_info("hvkit: %.*s\n", (int)len, text);
}

u32 hvkit_shim_cpu(void)
{
	return raw_smp_processor_id();
}

void hvkit_shim_on_each_cpu(void (*f)(void *), void *context)
{
	on_each_cpu(f, context, 1);
}

static unsigned long pool;
static bool intel;
static long results[HVKIT_MAX_CPUS];
static bool virtualized[HVKIT_MAX_CPUS];
static struct dentry *dir;

/*
 * The MSRs that SVM's VMLOAD takes from the guest VMCB but a guest state does not describe: the
 * guest (this kernel) writes back its own values right after it starts.
 */
static const u32 syscall_msrs[] = { MSR_STAR, MSR_LSTAR, MSR_CSTAR, MSR_SYSCALL_MASK,
				    MSR_KERNEL_GS_BASE };

static void virtualize_cpu(void *unused)
{
	unsigned int cpu = smp_processor_id();
	u64 msrs[ARRAY_SIZE(syscall_msrs)];
	int i;
	bool xsave = boot_cpu_has(X86_FEATURE_OSXSAVE);

	if (cpu >= HVKIT_MAX_CPUS || !irq_fpu_usable()) {
		results[cpu % HVKIT_MAX_CPUS] = -EBUSY;
		return;
	}
	/*
	 * The vCPU switches x87/SSE/AVX state on every world switch and starts the guest with the
	 * init state: save the interrupted task's registers first (it reloads them from memory).
	 * The vCPU gives the guest the kernel's XCR0.
	 */
	kernel_fpu_begin();
	for (i = 0; i < ARRAY_SIZE(syscall_msrs); i++)
		rdmsrl(syscall_msrs[i], msrs[i]);
	if (intel)
		cr4_set_bits(X86_CR4_VMXE);
	results[cpu] = hvkit_rust_virtualize(cpu);
	if (results[cpu] == 0) {
		for (i = 0; i < ARRAY_SIZE(syscall_msrs); i++)
			wrmsrl(syscall_msrs[i], msrs[i]);
		virtualized[cpu] = true;
	} else if (intel) {
		cr4_clear_bits(X86_CR4_VMXE);
	}
	kernel_fpu_end();
}

static void devirtualize_cpu(void *unused)
{
	unsigned int cpu = smp_processor_id();
	struct desc_ptr gdt, idt;
	u64 msrs[ARRAY_SIZE(syscall_msrs)];
	u64 fs, gs, kgs;
	long r;
	int i;

	if (cpu >= HVKIT_MAX_CPUS || !virtualized[cpu])
		return;
	kernel_fpu_begin();
	native_store_gdt(&gdt);
	store_idt(&idt);
	rdmsrl(MSR_FS_BASE, fs);
	rdmsrl(MSR_GS_BASE, gs);
	rdmsrl(MSR_KERNEL_GS_BASE, kgs);
	for (i = 0; i < ARRAY_SIZE(syscall_msrs); i++)
		rdmsrl(syscall_msrs[i], msrs[i]);
	r = hvkit_rust_devirtualize(intel);
	/* Native again: the host's exit state differs from the guest's in these. */
	native_load_gdt(&gdt);
	load_idt(&idt);
	wrmsrl(MSR_FS_BASE, fs);
	wrmsrl(MSR_GS_BASE, gs);
	wrmsrl(MSR_KERNEL_GS_BASE, kgs);
	for (i = 0; i < ARRAY_SIZE(syscall_msrs); i++)
		wrmsrl(syscall_msrs[i], msrs[i]);
	if (intel) {
		invalidate_tss_limit();
		cr4_clear_bits(X86_CR4_VMXE);
	}
	kernel_fpu_end();
	results[cpu] = r;
	virtualized[cpu] = false;
}

/* A read of the hypervisor's own memory from the guest: answered with #GP, caught here. */
static bool probe_denied(void)
{
	unsigned long value = 0x5a5a5a5a;

	asm volatile("1: movq (%[p]), %[v]\n"
		     "2:\n" _ASM_EXTABLE(1b, 2b)
		     : [v] "+r"(value)
		     : [p] "r"(pool)
		     : "memory");
	return value == 0x5a5a5a5a;
}

/* The guest must not be able to turn on VMX or SVM itself: the host answers with #GP. */
static bool nested_refused(void)
{
	u64 value;

	if (intel)
		return rdmsrl_safe(MSR_IA32_VMX_BASIC, &value) != 0;
	if (rdmsrl_safe(MSR_EFER, &value))
		return false;
	return wrmsrl_safe(MSR_EFER, value | EFER_SVME) != 0;
}

static int exits_show(struct seq_file *m, void *v)
{
	unsigned int cpu;

	for_each_online_cpu(cpu) {
		if (cpu >= HVKIT_MAX_CPUS)
			break;
		seq_printf(m, "cpu%u exits %llu cpuid %llu denied %llu other %llu\n", cpu,
			   hvkit_rust_stat(cpu, 0), hvkit_rust_stat(cpu, 1), hvkit_rust_stat(cpu, 2),
			   hvkit_rust_stat(cpu, 3));
	}
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(exits);

static void devirtualize_all(void)
{
	unsigned int cpu;

	on_each_cpu(devirtualize_cpu, NULL, 1);
	for_each_possible_cpu(cpu) {
		if (cpu < HVKIT_MAX_CPUS)
			hvkit_rust_free_stack(cpu);
	}
}

/*
 * Suspend and hibernation are refused while loaded: S3/S4 lose the VMX/SVM state of every CPU
 * (and s2idle would run the guest's idle loop without a host to come back to after a lost
 * context). The PM notifier runs before any task is frozen or device suspended.
 */
static int hvkit_pm_notify(struct notifier_block *nb, unsigned long action, void *data)
{
	switch (action) {
	case PM_SUSPEND_PREPARE:
	case PM_HIBERNATION_PREPARE:
	case PM_RESTORE_PREPARE:
		pr_info("hvkit: refusing suspend/hibernation while the CPUs are virtualized (rmmod hvkit first)\n");
		return notifier_from_errno(-EBUSY);
	}
	return NOTIFY_DONE;
}

static struct notifier_block pm_notifier = {
	.notifier_call = hvkit_pm_notify,
};

static int __init hvkit_init(void)
{
	unsigned int cpu, ok = 0;
	bool failed = false;

	intel = boot_cpu_data.x86_vendor == X86_VENDOR_INTEL;
	if (intel ? !boot_cpu_has(X86_FEATURE_VMX) : !boot_cpu_has(X86_FEATURE_SVM)) {
		pr_err("hvkit: no %s on this CPU\n", intel ? "VMX" : "SVM");
		return -ENODEV;
	}
	if (num_online_cpus() > HVKIT_MAX_CPUS)
		return -E2BIG;
	pool = __get_free_pages(GFP_KERNEL | __GFP_ZERO, HVKIT_POOL_ORDER);
	if (!pool)
		return -ENOMEM;
	hvkit_rust_init(__pa(pool), 1UL << HVKIT_POOL_ORDER, (u64)PAGE_OFFSET, num_online_cpus());
	memset(results, 0, sizeof(results));
	/*
	 * CPU hotplug is refused while loaded (writes to cpuN/online fail with EBUSY): a CPU that
	 * went offline would lose its vCPU, one that came online would run natively. Disabled before
	 * the CPUs are virtualized, enabled again after they are given back.
	 */
	cpu_hotplug_disable();
	register_pm_notifier(&pm_notifier);
	cpus_read_lock();
	on_each_cpu(virtualize_cpu, NULL, 1);
	for_each_online_cpu(cpu) {
		if (results[cpu] == 0 && virtualized[cpu]) {
			ok++;
			pr_info("hvkit: cpu%u virtualized\n", cpu);
		} else {
			failed = true;
			pr_err("hvkit: cpu%u not virtualized (%ld)\n", cpu, results[cpu]);
		}
	}
	if (failed) {
		devirtualize_all();
		cpus_read_unlock();
		unregister_pm_notifier(&pm_notifier);
		cpu_hotplug_enable();
		free_pages(pool, HVKIT_POOL_ORDER);
		return -EIO;
	}
	cpus_read_unlock();
	dir = debugfs_create_dir("hvkit", NULL);
	debugfs_create_file("exits", 0444, dir, NULL, &exits_fops);
	pr_info("hvkit: loaded, %u CPUs virtualized (%s), hypervisor memory %s, guest %s\n", ok,
		intel ? "VMX" : "SVM", probe_denied() ? "denied to the guest" : "READABLE",
		nested_refused() ? "cannot enable VMX/SVM" : "CAN ENABLE VMX/SVM");
	return 0;
}

static void __exit hvkit_exit(void)
{
	unsigned int cpu;
	u64 live;

	debugfs_remove_recursive(dir);
	cpus_read_lock();
	devirtualize_all();
	for_each_online_cpu(cpu) {
		if (cpu >= HVKIT_MAX_CPUS)
			break;
		pr_info("hvkit: cpu%u devirtualized (%ld): %llu exits (%llu cpuid, %llu denied, %llu other)\n",
			cpu, results[cpu], hvkit_rust_stat(cpu, 0), hvkit_rust_stat(cpu, 1),
			hvkit_rust_stat(cpu, 2), hvkit_rust_stat(cpu, 3));
	}
	cpus_read_unlock();
	unregister_pm_notifier(&pm_notifier);
	cpu_hotplug_enable();
	live = hvkit_rust_live_frames();
	free_pages(pool, HVKIT_POOL_ORDER);
	pr_info("hvkit: unloaded, %llu pool frames still out\n", live);
}

module_init(hvkit_init);
module_exit(hvkit_exit);
MODULE_LICENSE("Dual MIT/GPL");
MODULE_DESCRIPTION("hvkit: virtualizes the running kernel on every CPU (VT-x or AMD-V)");
