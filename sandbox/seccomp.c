#include "seccomp.h"

#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <sched.h>
#include <seccomp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/fdutil.h"

#ifndef AF_VSOCK
#define AF_VSOCK 40
#endif

/* Every CLONE_NEW* flag clone() accepts: NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID,
 * NEWNET (0x7e020000, the mask Docker checks). */
#define CLONE_NAMESPACE_FLAGS                                                                      \
	(CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER |             \
	 CLONE_NEWPID | CLONE_NEWNET)

struct SeccompFilter {
	struct sock_fprog prog;
	size_t n_allowed;
};

typedef enum {
	RULE_ALLOW,	  /* always allowed */
	RULE_CLONE,	  /* allowed without namespace flags */
	RULE_UNSHARE,	  /* allowed for a new user namespace and nothing else */
	RULE_SOCKET,	  /* allowed for every address family but AF_VSOCK */
	RULE_PERSONALITY, /* allowed with the values in personality_values */
	RULE_ENOSYS,	  /* fails with ENOSYS instead of EPERM */
} RuleKind;

/* Host architecture families a rule is limited to (Docker's "includes.arches"); 0: all. */
enum {
	FAM_X86 = 1 << 0,
	FAM_X86_64 = 1 << 1, /* x86-64 and x32 only, not i386 */
	FAM_ARM = 1 << 2,
	FAM_S390 = 1 << 3,
	FAM_RISCV = 1 << 4,
	FAM_PPC64LE = 1 << 5,
};

typedef struct SyscallRule {
	const char *name;
	RuleKind kind;
	unsigned families;
} SyscallRule;

/* libseccomp's SCMP_A0() leaves datum_b to the compiler (clang warns); every field, spelled out. */
static struct scmp_arg_cmp arg_cmp(unsigned arg, enum scmp_compare op, scmp_datum_t a)
{
	return (struct scmp_arg_cmp){.arg = arg, .op = op, .datum_a = a, .datum_b = 0};
}

/* clang-format off */
#define A(n) {n, RULE_ALLOW, 0}
#define ARCH(n, fam) {n, RULE_ALLOW, fam}

/* The whole profile. What is not here fails with EPERM: see seccomp.h for the notable ones. */

static const SyscallRule rules[] = {
	/* processes: creation, exec, exit, waiting, signalling, identity of the process */
	{"clone", RULE_CLONE, 0},
	{"clone3", RULE_ENOSYS, 0},
	{"unshare", RULE_UNSHARE, 0},
	A("fork"), A("vfork"), A("execve"), A("execveat"), A("exit"), A("exit_group"),
	A("wait4"), A("waitid"), A("waitpid"), A("kill"), A("tkill"), A("tgkill"),
	A("pidfd_open"), A("pidfd_send_signal"), A("process_mrelease"),
	A("getpid"), A("getppid"), A("gettid"), A("getpgid"), A("getpgrp"), A("getsid"),
	A("setpgid"), A("setsid"), A("set_tid_address"), A("set_robust_list"),
	A("get_robust_list"), A("rseq"), A("restart_syscall"), A("prctl"), A("capget"),
	A("capset"), A("seccomp"), A("landlock_add_rule"), A("landlock_create_ruleset"),
	A("landlock_restrict_self"), A("uname"), A("sysinfo"), A("getrusage"), A("times"),
	A("getrlimit"), A("setrlimit"), A("ugetrlimit"), A("prlimit64"), A("umask"),
	{"personality", RULE_PERSONALITY, 0},
	/* CAP_SYS_CHROOT is in the default capability set */
	A("chroot"),
	/* debugging: Docker allows these on kernels >= 4.8 (seccomp runs after ptrace there) */
	A("ptrace"), A("process_vm_readv"), A("process_vm_writev"),
	/* user and group ids (the *32 names exist on 32-bit ABIs only) */
	A("getuid"), A("getuid32"), A("geteuid"), A("geteuid32"), A("getgid"), A("getgid32"),
	A("getegid"), A("getegid32"), A("getresuid"), A("getresuid32"), A("getresgid"),
	A("getresgid32"), A("getgroups"), A("getgroups32"), A("setuid"), A("setuid32"),
	A("setgid"), A("setgid32"), A("setreuid"), A("setreuid32"), A("setregid"),
	A("setregid32"), A("setresuid"), A("setresuid32"), A("setresgid"), A("setresgid32"),
	A("setfsuid"), A("setfsuid32"), A("setfsgid"), A("setfsgid32"), A("setgroups"),
	A("setgroups32"),
	/* signals */
	A("rt_sigaction"), A("rt_sigpending"), A("rt_sigprocmask"), A("rt_sigqueueinfo"),
	A("rt_sigreturn"), A("rt_sigsuspend"), A("rt_sigtimedwait"), A("rt_sigtimedwait_time64"),
	A("rt_tgsigqueueinfo"), A("sigaltstack"), A("sigprocmask"), A("sigreturn"), A("signalfd"),
	A("signalfd4"), A("pause"), A("alarm"),
	/* memory */
	A("brk"), A("mmap"), A("mmap2"), A("munmap"), A("mprotect"), A("mremap"), A("madvise"),
	A("mincore"), A("msync"), A("mlock"), A("mlock2"), A("mlockall"), A("munlock"),
	A("munlockall"), A("membarrier"), A("memfd_create"), A("memfd_secret"),
	A("remap_file_pages"), A("pkey_alloc"), A("pkey_free"), A("pkey_mprotect"),
	A("map_shadow_stack"), A("get_thread_area"), A("set_thread_area"),
	/* futexes */
	A("futex"), A("futex_time64"), A("futex_waitv"), A("futex_wake"), A("futex_wait"),
	A("futex_requeue"),
	/* file descriptors: open, read, write, copy */
	A("open"), A("openat"), A("openat2"), A("creat"), A("close"), A("close_range"),
	A("read"), A("readv"), A("pread64"), A("preadv"), A("preadv2"), A("write"), A("writev"),
	A("pwrite64"), A("pwritev"), A("pwritev2"), A("lseek"), A("_llseek"), A("dup"), A("dup2"),
	A("dup3"), A("fcntl"), A("fcntl64"), A("ioctl"), A("flock"), A("pipe"), A("pipe2"),
	A("sendfile"), A("sendfile64"), A("splice"), A("tee"), A("vmsplice"),
	A("copy_file_range"), A("readahead"), A("fadvise64"), A("fadvise64_64"),
	A("fallocate"), A("ftruncate"), A("ftruncate64"), A("truncate"), A("truncate64"),
	A("fsync"), A("fdatasync"), A("sync"), A("syncfs"), A("sync_file_range"),
	/* the file system tree and file metadata */
	A("stat"), A("stat64"), A("lstat"), A("lstat64"), A("fstat"), A("fstat64"),
	A("fstatat64"), A("newfstatat"), A("statx"), A("statfs"), A("statfs64"), A("fstatfs"),
	A("fstatfs64"), A("access"), A("faccessat"), A("faccessat2"), A("getcwd"), A("chdir"),
	A("fchdir"), A("getdents"), A("getdents64"), A("mkdir"), A("mkdirat"), A("rmdir"),
	A("mknod"), A("mknodat"), A("link"), A("linkat"), A("symlink"), A("symlinkat"),
	A("unlink"), A("unlinkat"), A("rename"), A("renameat"), A("renameat2"), A("readlink"),
	A("readlinkat"), A("chmod"), A("fchmod"), A("fchmodat"), A("fchmodat2"), A("chown"),
	A("chown32"), A("fchown"), A("fchown32"), A("lchown"), A("lchown32"), A("fchownat"),
	A("utime"), A("utimes"), A("utimensat"), A("utimensat_time64"), A("futimesat"),
	A("name_to_handle_at"),
	/* extended attributes */
	A("getxattr"), A("lgetxattr"), A("fgetxattr"), A("setxattr"), A("lsetxattr"),
	A("fsetxattr"), A("listxattr"), A("llistxattr"), A("flistxattr"), A("removexattr"),
	A("lremovexattr"), A("fremovexattr"),
	/* waiting for events */
	A("poll"), A("ppoll"), A("ppoll_time64"), A("select"), A("_newselect"), A("pselect6"),
	A("pselect6_time64"), A("epoll_create"), A("epoll_create1"), A("epoll_ctl"),
	A("epoll_ctl_old"), A("epoll_wait"), A("epoll_wait_old"), A("epoll_pwait"),
	A("epoll_pwait2"), A("eventfd"), A("eventfd2"), A("inotify_init"), A("inotify_init1"),
	A("inotify_add_watch"), A("inotify_rm_watch"), A("fanotify_mark"),
	/* Linux AIO (io_uring is left out, as in Docker >= 25.0) */
	A("io_setup"), A("io_destroy"), A("io_submit"), A("io_cancel"), A("io_getevents"),
	A("io_pgetevents"), A("io_pgetevents_time64"),
	/* reading clocks, sleeping, timers (setting a clock is not allowed) */
	A("clock_gettime"), A("clock_gettime64"), A("clock_getres"), A("clock_getres_time64"),
	A("clock_nanosleep"), A("clock_nanosleep_time64"), A("nanosleep"), A("gettimeofday"),
	A("time"), A("getitimer"), A("setitimer"), A("timer_create"), A("timer_delete"),
	A("timer_getoverrun"), A("timer_gettime"), A("timer_gettime64"), A("timer_settime"),
	A("timer_settime64"), A("timerfd_create"), A("timerfd_gettime"), A("timerfd_gettime64"),
	A("timerfd_settime"), A("timerfd_settime64"),
	/* scheduling and randomness */
	A("sched_getaffinity"), A("sched_setaffinity"), A("sched_getattr"), A("sched_setattr"),
	A("sched_getparam"), A("sched_setparam"), A("sched_getscheduler"),
	A("sched_setscheduler"), A("sched_get_priority_max"), A("sched_get_priority_min"),
	A("sched_rr_get_interval"), A("sched_rr_get_interval_time64"), A("sched_yield"),
	A("getpriority"), A("setpriority"), A("ioprio_get"), A("ioprio_set"), A("getcpu"),
	A("getrandom"),
	/* sockets */
	{"socket", RULE_SOCKET, 0},
	A("socketpair"), A("socketcall"), A("bind"), A("connect"), A("listen"), A("accept"),
	A("accept4"), A("getsockname"), A("getpeername"), A("getsockopt"), A("setsockopt"),
	A("send"), A("sendto"), A("sendmsg"), A("sendmmsg"), A("recv"), A("recvfrom"),
	A("recvmsg"), A("recvmmsg"), A("recvmmsg_time64"), A("shutdown"),
	/* System V and POSIX ipc (private to the container's ipc namespace) */
	A("ipc"), A("msgctl"), A("msgget"), A("msgrcv"), A("msgsnd"), A("semctl"), A("semget"),
	A("semop"), A("semtimedop"), A("semtimedop_time64"), A("shmat"), A("shmctl"), A("shmdt"),
	A("shmget"), A("mq_getsetattr"), A("mq_notify"), A("mq_open"), A("mq_timedreceive"),
	A("mq_timedreceive_time64"), A("mq_timedsend"), A("mq_timedsend_time64"), A("mq_unlink"),
	/* architecture-specific calls, on hosts of that family only */
	ARCH("arch_prctl", FAM_X86_64), ARCH("modify_ldt", FAM_X86 | FAM_X86_64),
	ARCH("arm_fadvise64_64", FAM_ARM), ARCH("arm_sync_file_range", FAM_ARM),
	ARCH("sync_file_range2", FAM_ARM | FAM_PPC64LE), ARCH("breakpoint", FAM_ARM),
	ARCH("cacheflush", FAM_ARM), ARCH("set_tls", FAM_ARM),
	ARCH("swapcontext", FAM_PPC64LE), ARCH("s390_pci_mmio_read", FAM_S390),
	ARCH("s390_pci_mmio_write", FAM_S390), ARCH("s390_runtime_instr", FAM_S390),
	ARCH("riscv_flush_icache", FAM_RISCV),
};
/* clang-format on */

/* personality(2) values Docker allows: PER_LINUX, PER_LINUX32, UNAME26, UNAME26|PER_LINUX32
 * and the query 0xffffffff; others (ADDR_NO_RANDOMIZE, READ_IMPLIES_EXEC, ...) weaken ASLR or
 * W^X. */
static const uint64_t personality_values[] = {0x0, 0x8, 0x20000, 0x20008, 0xffffffff};

typedef struct ArchSet {
	uint32_t native;
	uint32_t extra[2];
	unsigned family;
} ArchSet;

static ArchSet arch_set_host(void)
{
	ArchSet s = {.native = seccomp_arch_native()};

	switch (s.native) {
	case SCMP_ARCH_X86_64:
		s.extra[0] = SCMP_ARCH_X86;
		s.extra[1] = SCMP_ARCH_X32;
		s.family = FAM_X86_64;
		break;
	case SCMP_ARCH_X32:
		s.extra[0] = SCMP_ARCH_X86;
		s.extra[1] = SCMP_ARCH_X86_64;
		s.family = FAM_X86_64;
		break;
	case SCMP_ARCH_X86:
		s.family = FAM_X86;
		break;
	case SCMP_ARCH_AARCH64:
		s.extra[0] = SCMP_ARCH_ARM;
		s.family = FAM_ARM;
		break;
	case SCMP_ARCH_ARM:
		s.family = FAM_ARM;
		break;
	case SCMP_ARCH_MIPS64:
		s.extra[0] = SCMP_ARCH_MIPS;
		s.extra[1] = SCMP_ARCH_MIPS64N32;
		break;
	case SCMP_ARCH_MIPSEL64:
		s.extra[0] = SCMP_ARCH_MIPSEL;
		s.extra[1] = SCMP_ARCH_MIPSEL64N32;
		break;
	case SCMP_ARCH_S390X:
		s.extra[0] = SCMP_ARCH_S390;
		s.family = FAM_S390;
		break;
	case SCMP_ARCH_S390:
		s.family = FAM_S390;
		break;
	case SCMP_ARCH_RISCV64:
		s.family = FAM_RISCV;
		break;
	case SCMP_ARCH_PPC64LE:
		s.family = FAM_PPC64LE;
		break;
	default:
		break;
	}
	return s;
}

static void ctx_releasep(scmp_filter_ctx *ctx)
{
	if (*ctx)
		seccomp_release(*ctx);
}

static int rule_add(scmp_filter_ctx ctx, const ArchSet *arch, const SyscallRule *r, int nr,
		    KilnError **err)
{
	/* s390 passes clone's flags in the second argument */
	unsigned clone_arg = arch->family == FAM_S390 ? 1 : 0;
	int k = 0;

	switch (r->kind) {
	case RULE_ALLOW:
		k = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 0);
		break;
	case RULE_ENOSYS:
		k = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), nr, 0);
		break;
	case RULE_CLONE:
		k = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 1,
				     SCMP_CMP(clone_arg, SCMP_CMP_MASKED_EQ,
					      (scmp_datum_t)CLONE_NAMESPACE_FLAGS, 0));
		break;
	case RULE_UNSHARE:
		/* A user namespace (rootless tools inside a build) but no other namespace: those
		 * would need capabilities the container must not have over its own mounts. */
		k = seccomp_rule_add(
		    ctx, SCMP_ACT_ALLOW, nr, 1,
		    SCMP_CMP(0, SCMP_CMP_MASKED_EQ,
			     (scmp_datum_t)(CLONE_NAMESPACE_FLAGS & ~CLONE_NEWUSER), 0));
		break;
	case RULE_SOCKET:
		k = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 1,
				     arg_cmp(0, SCMP_CMP_NE, (scmp_datum_t)AF_VSOCK));
		break;
	case RULE_PERSONALITY:
		for (size_t i = 0; i < ELEMENTSOF(personality_values) && k == 0; i++)
			k = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 1,
					     arg_cmp(0, SCMP_CMP_EQ, personality_values[i]));
		break;
	}
	if (k < 0)
		return kiln_error_errno(err, -k, "seccomp: add rule for '%s'", r->name);
	return 0;
}

static int ctx_build(scmp_filter_ctx *ret_ctx, size_t *ret_n_allowed, KilnError **err)
{
	_cleanup_(ctx_releasep) scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ERRNO(EPERM));
	ArchSet arch = arch_set_host();
	size_t n_allowed = 0;
	int k;

	if (!ctx)
		return kiln_error(err, ENOMEM, "seccomp: cannot create a filter");
	for (size_t i = 0; i < ELEMENTSOF(arch.extra) && arch.extra[i]; i++) {
		k = seccomp_arch_add(ctx, arch.extra[i]);
		if (k < 0 && k != -EEXIST)
			return kiln_error_errno(err, -k, "seccomp: add architecture 0x%x",
						arch.extra[i]);
	}
	/* A binary-tree dispatch: a few hundred rules would otherwise be a linear scan on every
	 * syscall. Older libseccomp lacks it, which only costs speed. */
	(void)seccomp_attr_set(ctx, SCMP_FLTATR_CTL_OPTIMIZE, 2);
	for (size_t i = 0; i < ELEMENTSOF(rules); i++) {
		const SyscallRule *r = &rules[i];
		int nr;

		if (r->families && !(r->families & arch.family))
			continue;
		nr = seccomp_syscall_resolve_name(r->name);
		if (nr == __NR_SCMP_ERROR)
			continue; /* unknown to this libseccomp */
		if ((k = rule_add(ctx, &arch, r, nr, err)) < 0)
			return k;
		if (r->kind != RULE_ENOSYS && nr >= 0)
			n_allowed++;
	}
	*ret_ctx = TAKE_PTR(ctx);
	*ret_n_allowed = n_allowed;
	return 0;
}

int seccomp_filter_new(SeccompFilter **ret, KilnError **err)
{
	_cleanup_(ctx_releasep) scmp_filter_ctx ctx = NULL;
	_cleanup_(seccomp_filter_freep) SeccompFilter *f = NULL;
	_cleanup_close_ int fd = -1;
	_cleanup_free_ char *data = NULL;
	size_t n_allowed = 0, len = 0;
	int k;

	if ((k = ctx_build(&ctx, &n_allowed, err)) < 0)
		return k;
	/* libseccomp 2.5 exports only to an fd; a memfd keeps the program off the disk. */
	fd = memfd_create("kiln-seccomp", MFD_CLOEXEC);
	if (fd < 0)
		return kiln_error_errno(err, errno, "seccomp: memfd_create");
	if ((k = seccomp_export_bpf(ctx, fd)) < 0)
		return kiln_error_errno(err, -k, "seccomp: export the filter");
	if (lseek(fd, 0, SEEK_SET) < 0)
		return kiln_error_errno(err, errno, "seccomp: rewind the filter");
	if ((k = read_all_fd(fd, 1 << 20, &data, &len, err)) < 0)
		return kiln_error_wrap(err, -k, "seccomp: read the filter");
	if (len == 0 || len % sizeof(struct sock_filter) != 0 ||
	    len / sizeof(struct sock_filter) > BPF_MAXINSNS)
		return kiln_error(err, EINVAL,
				  "seccomp: the filter has an invalid size (%zu bytes)", len);
	f = xcalloc(1, sizeof(*f));
	f->prog.len = (unsigned short)(len / sizeof(struct sock_filter));
	f->prog.filter = (struct sock_filter *)TAKE_PTR(data);
	f->n_allowed = n_allowed;
	*ret = TAKE_PTR(f);
	return 0;
}

int seccomp_filter_shared(const SeccompFilter **ret, KilnError **err)
{
	static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
	static SeccompFilter *shared;
	int r = 0;

	pthread_mutex_lock(&lock);
	if (!shared)
		r = seccomp_filter_new(&shared, err);
	if (r >= 0)
		*ret = shared;
	pthread_mutex_unlock(&lock);
	return r;
}

void seccomp_filter_free(SeccompFilter *f)
{
	if (!f)
		return;
	free(f->prog.filter);
	free(f);
}

int seccomp_filter_load(const SeccompFilter *f)
{
	if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &f->prog, 0, 0) < 0)
		return -errno;
	return 0;
}

size_t seccomp_filter_n_allowed(const SeccompFilter *f)
{
	return f->n_allowed;
}

size_t seccomp_filter_n_instructions(const SeccompFilter *f)
{
	return f->prog.len;
}
