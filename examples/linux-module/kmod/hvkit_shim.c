// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * hvkit.ko: the C half. Module entry points, page allocation, on_each_cpu, the kernel's CR4
 * helpers and TSS-limit reload, the kernel-FPU section around (de)virtualizing, refusing CPU
 * hotplug and suspend while loaded, debugfs figures and printk. The hypervisor itself is the
 * Rust half (hvkit_rust.o, built on hvkit-vcpu); see README.md.
 */
#include <linux/module.h>
#include <linux/kernel.h>
#include <linux/smp.h>
#include <linux/cpumask.h>
#include <linux/gfp.h>
#include <linux/slab.h>
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
size_t hvkit_rust_exit_breakdown(u32 cpu, char *buf, size_t len);
size_t hvkit_rust_memory_types(char *buf, size_t len);
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

static void virtualize_cpu(void *unused)
{
	unsigned int cpu = smp_processor_id();

	if (cpu >= HVKIT_MAX_CPUS || !irq_fpu_usable()) {
		results[cpu % HVKIT_MAX_CPUS] = -EBUSY;
		return;
	}
	/*
	 * A kernel-FPU section around the switch: the interrupted task's registers are saved to
	 * memory (and reloaded on its return to user space), so the FPU is the kernel's scratch
	 * space here. The guest continues with the CPU's current x87/SSE/AVX/PKRU state and XCR0
	 * (Vcpu::capture_extended_state, Vcpu::set_xcr0).
	 */
	kernel_fpu_begin();
	if (intel)
		cr4_set_bits(X86_CR4_VMXE);
	results[cpu] = hvkit_rust_virtualize(cpu);
	if (results[cpu] == 0) {
		virtualized[cpu] = true;
	} else if (intel) {
		cr4_clear_bits(X86_CR4_VMXE);
	}
	kernel_fpu_end();
}

static void devirtualize_cpu(void *unused)
{
	unsigned int cpu = smp_processor_id();
	long r;

	if (cpu >= HVKIT_MAX_CPUS || !virtualized[cpu])
		return;
	kernel_fpu_begin();
	/*
	 * Native again when this returns: hvkit-vcpu loaded the guest's FS/GS/KernelGS bases,
	 * SYSCALL and SYSENTER MSRs, GDTR/IDTR and LDTR (Vcpu::load_native_state). Left here: what
	 * only the kernel does, TR's limit (a VM exit sets it to 0x67) and CR4.VMXE.
	 */
	r = hvkit_rust_devirtualize(intel);
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
	char line[512];
	unsigned int cpu;

	for_each_online_cpu(cpu) {
		if (cpu >= HVKIT_MAX_CPUS)
			break;
		hvkit_rust_exit_breakdown(cpu, line, sizeof(line));
		seq_printf(m, "cpu%u %s\n", cpu, line);
	}
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(exits);

/* The identity map's regions with their EPT (MTRR) or NPT memory types. */
static int memory_types_show(struct seq_file *m, void *v)
{
	char *text = kmalloc(4096, GFP_KERNEL);

	if (!text)
		return -ENOMEM;
	hvkit_rust_memory_types(text, 4096);
	seq_puts(m, text);
	kfree(text);
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(memory_types);

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
	debugfs_create_file("memory_types", 0444, dir, NULL, &memory_types_fops);
	pr_info("hvkit: loaded, %u CPUs virtualized (%s), hypervisor memory %s, guest %s\n", ok,
		intel ? "VMX" : "SVM", probe_denied() ? "denied to the guest" : "READABLE",
		nested_refused() ? "cannot enable VMX/SVM" : "CAN ENABLE VMX/SVM");
	return 0;
}

static void __exit hvkit_exit(void)
{
	static char line[512];
	unsigned int cpu;
	u64 live;

	debugfs_remove_recursive(dir);
	cpus_read_lock();
	devirtualize_all();
	for_each_online_cpu(cpu) {
		if (cpu >= HVKIT_MAX_CPUS)
			break;
		hvkit_rust_exit_breakdown(cpu, line, sizeof(line));
		pr_info("hvkit: cpu%u devirtualized (%ld): %s\n", cpu, results[cpu], line);
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
