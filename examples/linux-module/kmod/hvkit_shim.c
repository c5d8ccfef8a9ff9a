// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * hvkit.ko: the C half. Module entry points, page allocation, per-CPU kworkers
 * (smp_call_on_cpu) and on_each_cpu, the kernel's CR4 helpers and TSS-limit reload, the
 * kernel-FPU section around (de)virtualizing, the probes of what the guest may not do, refusing
 * CPU hotplug and suspend while loaded, debugfs figures and printk. The hypervisor itself is the
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
#include <asm/trapnr.h>

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

/*
 * Virtualizing and devirtualizing run in task context, in the CPU's bound kworker
 * (smp_call_on_cpu), not in an IPI: kernel_fpu_begin() is only allowed where irq_fpu_usable()
 * holds, and a function-call IPI that interrupts softirq processing is not such a place (the
 * kernel warns, kernel/fpu/core.c). Interrupts are off across the switch itself, as the host
 * half expects.
 */
static int virtualize_cpu(void *unused)
{
	unsigned int cpu = raw_smp_processor_id(); /* a bound kworker: it stays on this CPU */
	unsigned long flags;

	if (cpu >= HVKIT_MAX_CPUS)
		return -E2BIG;
	/*
	 * A kernel-FPU section around the switch: the interrupted task's registers are saved to
	 * memory (and reloaded on its return to user space), so the FPU is the kernel's scratch
	 * space here. The guest continues with the CPU's current x87/SSE/AVX/PKRU state and XCR0
	 * (Vcpu::capture_extended_state, Vcpu::set_xcr0).
	 */
	kernel_fpu_begin();
	local_irq_save(flags);
	if (intel)
		cr4_set_bits(X86_CR4_VMXE);
	results[cpu] = hvkit_rust_virtualize(cpu);
	if (results[cpu] == 0) {
		virtualized[cpu] = true;
		/*
		 * Now a guest. CR4.VMXE belongs to the host and reads as 0 (the CR4 read shadow);
		 * drop it from the kernel's CR4 copy too, or the next CR4 write the kernel makes from
		 * that copy (TSD for PR_SET_TSC, PGE for a global TLB flush without INVPCID, PCE)
		 * would try to set VMXE and take the #GP a CPU without VMX gives. Writing CR4 with
		 * VMXE clear leaves the real bit alone (guest/host mask, SDM 25.6.6).
		 */
		if (intel)
			cr4_clear_bits(X86_CR4_VMXE);
	} else if (intel) {
		cr4_clear_bits(X86_CR4_VMXE);
	}
	local_irq_restore(flags);
	kernel_fpu_end();
	return 0;
}

static int devirtualize_cpu(void *unused)
{
	unsigned int cpu = raw_smp_processor_id(); /* a bound kworker: it stays on this CPU */
	unsigned long flags;
	long r;

	if (cpu >= HVKIT_MAX_CPUS || !virtualized[cpu])
		return 0;
	kernel_fpu_begin();
	local_irq_save(flags);
	/*
	 * Native again when this returns: hvkit-vcpu loaded the guest's FS/GS/KernelGS bases,
	 * SYSCALL and SYSENTER MSRs, GDTR/IDTR and LDTR (Vcpu::load_native_state), and the host
	 * half continued with the guest's CR4 less VMXE (after VMXOFF). Left here: what only the
	 * kernel does, TR's limit (a VM exit sets it to 0x67).
	 */
	r = hvkit_rust_devirtualize(intel);
	if (intel)
		invalidate_tss_limit();
	local_irq_restore(flags);
	kernel_fpu_end();
	results[cpu] = r;
	virtualized[cpu] = false;
	return 0;
}

/* Runs f on every online CPU in turn, in that CPU's kworker (callers hold cpus_read_lock). */
static void for_each_cpu_in_task(int (*f)(void *))
{
	unsigned int cpu;

	for_each_online_cpu(cpu) {
		int r = smp_call_on_cpu(cpu, f, NULL, false);

		if (r && cpu < HVKIT_MAX_CPUS)
			results[cpu] = r;
	}
}

/*
 * The guest may neither read nor write the hypervisor's own memory: each access is a
 * nested-page fault the host answers with #GP, caught here by an exception-table fixup (the
 * instruction after the access is skipped, so `done` stays 0). The write goes to the pool's
 * last frame.
 */
static bool probe_denied(void)
{
	unsigned long value = 0x5a5a5a5a, read_done = 0, write_done = 0;
	unsigned long last = pool + ((1UL << HVKIT_POOL_ORDER) - 1) * PAGE_SIZE;

	asm volatile("1: movq (%[p]), %[v]\n"
		     "movq $1, %[d]\n"
		     "2:\n" _ASM_EXTABLE(1b, 2b)
		     : [v] "+r"(value), [d] "+r"(read_done)
		     : [p] "r"(pool)
		     : "memory");
	asm volatile("1: movq %[v], (%[p])\n"
		     "movq $1, %[d]\n"
		     "2:\n" _ASM_EXTABLE(1b, 2b)
		     : [d] "+r"(write_done)
		     : [p] "r"(last), [v] "r"(0xa5a5a5a5UL)
		     : "memory");
	if (read_done || write_done)
		pr_err("hvkit: the guest %s the hypervisor's memory\n",
		       read_done && write_done ? "read and wrote" : read_done ? "read" : "wrote");
	return !read_done && !write_done && value == 0x5a5a5a5a;
}

/*
 * The vector of the exception one instruction raised (EX_TYPE_FAULT stores it in RAX), or -1.
 * VMXON and VMRUN exit unconditionally in a guest; CPL 0 and a page-aligned operand rule out
 * every earlier #GP, so what comes back is the host's answer.
 */
static long vmxon_vector(void)
{
	u64 region = 0x1000;
	long vector = -1;

	asm volatile("1: vmxon %[r]\n"
		     "2:\n" _ASM_EXTABLE_FAULT(1b, 2b)
		     : "+a"(vector)
		     : [r] "m"(region)
		     : "cc", "memory");
	return vector;
}

static long vmrun_vector(void)
{
	long vector = 0x1000; /* RAX: the VMCB address, then the vector */

	asm volatile("1: vmrun %%rax\n"
		     "2:\n" _ASM_EXTABLE_FAULT(1b, 2b)
		     : "+a"(vector)
		     :
		     : "cc", "memory");
	return vector == 0x1000 ? -1 : vector;
}

static long cr4_vmxe_vector(void)
{
	unsigned long flags, cr4;
	long vector = -1;

	local_irq_save(flags);
	cr4 = __read_cr4() | X86_CR4_VMXE;
	asm volatile("1: mov %[c], %%cr4\n"
		     "2:\n" _ASM_EXTABLE_FAULT(1b, 2b)
		     : "+a"(vector)
		     : [c] "r"(cr4)
		     : "memory");
	local_irq_restore(flags);
	return vector;
}

/*
 * The guest must not be able to turn on VMX or SVM itself, as on a CPU without them: the
 * capability MSR (Intel) or EFER.SVME (AMD) gives #GP, so does setting CR4.VMXE (Intel), and
 * VMXON/VMRUN give #UD.
 */
static bool nested_refused(void)
{
	long insn, cr4 = X86_TRAP_GP;
	bool msr;
	u64 value;

	if (intel) {
		msr = rdmsrl_safe(MSR_IA32_VMX_BASIC, &value) != 0;
		cr4 = cr4_vmxe_vector();
		insn = vmxon_vector();
	} else {
		msr = !rdmsrl_safe(MSR_EFER, &value) && wrmsrl_safe(MSR_EFER, value | EFER_SVME) != 0;
		insn = vmrun_vector();
	}
	if (intel)
		pr_info("hvkit: nested probes: rdmsr IA32_VMX_BASIC %s, CR4.VMXE vector %ld, vmxon vector %ld\n",
			msr ? "refused" : "TAKEN", cr4, insn);
	else
		pr_info("hvkit: nested probes: wrmsr EFER.SVME %s, vmrun vector %ld\n",
			msr ? "refused" : "TAKEN", insn);
	return msr && cr4 == X86_TRAP_GP && insn == X86_TRAP_UD;
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

	for_each_cpu_in_task(devirtualize_cpu);
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
	for_each_cpu_in_task(virtualize_cpu);
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
