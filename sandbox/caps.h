/* Capabilities of RUN steps: Docker's default set, computed in the parent and applied in the
 * container's child between clone and exec (where nothing may allocate). */
#pragma once

#include <stdint.h>
#include <sys/types.h>

#include "common/error.h"

/* Docker's default capability set (moby oci/caps/defaults.go) as a mask, bit N = capability N:
 * CHOWN, DAC_OVERRIDE, FSETID, FOWNER, MKNOD, NET_RAW, SETGID, SETUID, SETFCAP, SETPCAP,
 * NET_BIND_SERVICE, SYS_CHROOT, KILL, AUDIT_WRITE = 0x00000000a80425fb. */
uint64_t caps_default_mask(void);

typedef struct CapsPlan CapsPlan;

/* What the command run as `uid` gets: bounding set = the default set; effective and permitted =
 * the default set for uid 0, empty for any other uid (as after an ordinary setuid); inheritable
 * and ambient always empty. The capabilities the running kernel knows (cap_last_cap) are read
 * here, so the child needs nothing more. Errors: ENOMEM. */
int caps_plan_new(uid_t uid, CapsPlan **ret, KilnError **err);

void caps_plan_free(CapsPlan *p);
static inline void caps_plan_freep(CapsPlan **p)
{
	caps_plan_free(*p);
	*p = 0;
}

/* Drops every capability outside the default set from the bounding set (PR_CAPBSET_DROP).
 * Needs CAP_SETPCAP: call it before switching to the command's uid. No allocation; returns 0
 * or -errno. */
int caps_plan_drop_bounding(const CapsPlan *p);

/* Sets effective, permitted and inheritable (capset) and clears the ambient set. Call it after
 * the uid switch. No allocation; returns 0 or -errno. */
int caps_plan_apply(const CapsPlan *p);
