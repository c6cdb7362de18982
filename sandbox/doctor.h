/* `kiln doctor`: what this host allows kiln to do, each finding with what to do about it. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "common/error.h"

typedef struct DoctorCheck {
	char *name; /* short, stable: "privileges", "user namespaces", ... */
	bool ok;
	char *detail;  /* what was found */
	char *hint;    /* what to do when !ok; NULL when ok */
	bool optional; /* a feature only some flags need: !ok is not a failure of the host */
} DoctorCheck;

/* Runs the checks from OUTSIDE any kiln namespace (call before userns_enter()):
 *   "privileges"           running as root (full id range) or rootless; always ok
 *   "user namespaces"      user.max_user_namespaces, kernel.apparmor_restrict_unprivileged_userns
 *                          when present, and a real unshare(CLONE_NEWUSER) in a child
 *   "subordinate ids"      the caller's /etc/subuid and /etc/subgid ranges (ok as root)
 *   "newuidmap/newgidmap"  present and setuid root or with file capabilities (ok as root)
 *   "overlayfs"            a real overlay mount with userxattr in a user namespace, in a child,
 *                          in a temp dir, including a whiteout
 *   "binfmt_misc"          kernel >= 6.7 and a real private binfmt_misc mount in a user namespace
 *   "network"              pasta really connecting a network namespace, in kiln's user namespace
 *                          (private networks for RUN; the hint names /dev/net/tun's fix)
 *   "cgroup limits"        (optional) kiln's cgroup v2 delegated with memory and pids, for
 *                          --memory and --pids-limit
 * Failing checks are results, not errors: < 0 only when the checks could not run at all.
 * *ret is an array of *ret_n checks; free it with doctor_checks_free(). */
int doctor_run(DoctorCheck **ret, size_t *ret_n, KilnError **err);

void doctor_checks_free(DoctorCheck *v, size_t n);
