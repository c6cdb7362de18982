#include "caps.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/capability.h>
#include <sys/prctl.h>

#include "common/cleanup.h"
#include "common/fdutil.h"

struct CapsPlan {
	uint64_t bounding;
	cap_value_t last_cap;
	cap_t state; /* effective, permitted, inheritable for capset */
};

/* Docker's default set; everything else (SYS_ADMIN, NET_ADMIN, SYS_PTRACE, DAC_READ_SEARCH,
 * SYS_MODULE, ...) is dropped from the bounding set. */
static const cap_value_t default_caps[] = {
    CAP_CHOWN,	 CAP_DAC_OVERRIDE, CAP_FSETID,		 CAP_FOWNER,
    CAP_MKNOD,	 CAP_NET_RAW,	   CAP_SETGID,		 CAP_SETUID,
    CAP_SETFCAP, CAP_SETPCAP,	   CAP_NET_BIND_SERVICE, CAP_SYS_CHROOT,
    CAP_KILL,	 CAP_AUDIT_WRITE,
};

uint64_t caps_default_mask(void)
{
	uint64_t m = 0;

	for (size_t i = 0; i < ELEMENTSOF(default_caps); i++)
		m |= UINT64_C(1) << default_caps[i];
	return m;
}

int caps_plan_new(uid_t uid, CapsPlan **ret, KilnError **err)
{
	_cleanup_(caps_plan_freep) CapsPlan *p = xcalloc(1, sizeof(*p));

	p->bounding = caps_default_mask();
	/* libcap reads the running kernel's cap_last_cap, which may know more than its headers */
	p->last_cap = cap_max_bits() - 1;
	if (p->last_cap < 0 || p->last_cap > 63)
		p->last_cap = 63;
	p->state = cap_init(); /* all clear */
	if (!p->state)
		return kiln_error_errno(err, errno, "capabilities: cap_init");
	if (uid == 0) {
		for (int f = 0; f < 2; f++) {
			cap_flag_t flag = f == 0 ? CAP_EFFECTIVE : CAP_PERMITTED;
			if (cap_set_flag(p->state, flag, (int)ELEMENTSOF(default_caps),
					 default_caps, CAP_SET) < 0)
				return kiln_error_errno(err, errno, "capabilities: cap_set_flag");
		}
	}
	*ret = TAKE_PTR(p);
	return 0;
}

void caps_plan_free(CapsPlan *p)
{
	if (!p)
		return;
	if (p->state)
		cap_free(p->state);
	free(p);
}

int caps_plan_drop_bounding(const CapsPlan *p)
{
	for (cap_value_t c = 0; c <= p->last_cap; c++) {
		if (p->bounding & (UINT64_C(1) << c))
			continue;
		/* EINVAL: a capability this kernel does not have */
		if (cap_drop_bound(c) < 0 && errno != EINVAL)
			return -errno;
	}
	return 0;
}

int caps_plan_apply(const CapsPlan *p)
{
	if (cap_set_proc(p->state) < 0)
		return -errno;
	if (cap_reset_ambient() < 0)
		return -errno;
	return 0;
}
