/* The seccomp filter of RUN steps: Docker's default profile, compiled once in the parent and
 * loaded in the container's child between clone and exec (where nothing may allocate). */
#pragma once

#include <stddef.h>

#include "common/error.h"

typedef struct SeccompFilter SeccompFilter;

/* Compiles the filter to classic BPF for the host's native architecture plus the ones the host
 * CPU also runs (x86-64: x86 and x32; aarch64: arm; mips64/s390x: their 32-bit and n32 ABIs).
 * An emulated foreign RUN is qemu-user running on the host, so its syscalls are the host's.
 *
 * The profile, like Docker's default (moby profiles/seccomp/default.json, for a container with
 * Docker's default capabilities):
 *   - default action: fail with EPERM;
 *   - allowed: the ordinary process, file, socket, ipc, time-reading and scheduling calls,
 *     ptrace and process_vm_* (kernel >= 4.8), chroot (CAP_SYS_CHROOT is in the default set);
 *   - allowed with argument checks: clone without any CLONE_NEW* namespace flag (fork and threads
 *     work, new namespaces do not), socket for every family but AF_VSOCK, personality only with
 *     the query (0xffffffff) and the PER_LINUX, PER_LINUX32, UNAME26 values;
 *   - clone3 fails with ENOSYS so that libc falls back to clone, whose flags can be checked;
 *   - not allowed (EPERM): mount, umount2, pivot_root, setns, unshare (but for a user namespace
 *     alone), the new mount API,
 *     keyctl, add_key, request_key, clock_settime, settimeofday, adjtimex, clock_adjtime,
 *     init_module, finit_module, delete_module, kexec_load, kexec_file_load, bpf,
 *     perf_event_open, userfaultfd, open_by_handle_at, reboot, swapon, swapoff, acct,
 *     lookup_dcookie, io_uring_* (blocked by Docker since 25.0), and everything else not listed.
 * Names the linked libseccomp does not know are left out (they then fail with EPERM).
 * Errors: libseccomp failures (ENOMEM, EINVAL) with the rule that failed. */
int seccomp_filter_new(SeccompFilter **ret, KilnError **err);

/* The same filter, compiled once per process (thread-safe) and kept until exit: what
 * container_run() uses, so a build pays the ~20 ms of compilation once, not per RUN step. */
int seccomp_filter_shared(const SeccompFilter **ret, KilnError **err);

void seccomp_filter_free(SeccompFilter *f);
static inline void seccomp_filter_freep(SeccompFilter **f)
{
	seccomp_filter_free(*f);
	*f = 0;
}

/* Installs the filter on the calling thread: no allocation, no output, safe between clone and
 * exec. no_new_privs must be set first (the caller lacks CAP_SYS_ADMIN in the initial user
 * namespace). Returns 0 or -errno. */
int seccomp_filter_load(const SeccompFilter *f);

/* How many syscall names the filter allows on the native architecture (with or without
 * argument checks); clone3's ENOSYS rule is not counted. */
size_t seccomp_filter_n_allowed(const SeccompFilter *f);

/* Number of classic BPF instructions of the compiled filter. */
size_t seccomp_filter_n_instructions(const SeccompFilter *f);
