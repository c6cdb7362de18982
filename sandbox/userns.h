/* Entering kiln's user namespace: uid/gid 0 over the widest id map the caller can get. */
#pragma once

#include <stdint.h>
#include <sys/types.h>

#include "common/error.h"

typedef enum {
	IDMAP_FULL,   /* caller was root: identity map of the full range */
	IDMAP_SUBID,  /* caller's uid + /etc/subuid range via newuidmap/newgidmap */
	IDMAP_SINGLE, /* only the caller's own id mapped to 0 */
} IdMapKind;

typedef struct IdMapInfo {
	IdMapKind kind;
	uid_t outer_uid;
	gid_t outer_gid;
	uint32_t n_uids, n_gids; /* ids usable inside: 0..n-1 */
} IdMapInfo;

/* Moves the process into a new user + mount namespace as uid/gid 0, with mount propagation
 * private and no supplementary groups (except under IDMAP_SINGLE, where setgroups is denied).
 *
 * Forks: the parent stays outside, writes the maps, forwards SIGINT/SIGTERM/SIGHUP to the child,
 * waits, and _exit()s with the child's exit status (or 128+signal). The call returns 0 only in
 * the child; on failure it returns < 0 in the original process (no child is left behind).
 * Call it before starting threads. The parent keeps only fds 0-2 open.
 *
 * Maps:
 *   root (euid 0)  "0 0 4294967295" for uids and gids (IDMAP_FULL);
 *   otherwise      0 -> caller's uid, 1..count -> the FIRST range listed for the user in
 *                  /etc/subuid (/etc/subgid for gids), matched by user name or numeric uid,
 *                  written by newuidmap/newgidmap (IDMAP_SUBID);
 *   fallback       "0 uid 1", setgroups=deny, "0 gid 1" written directly (IDMAP_SINGLE).
 * When no range is configured, newuidmap/newgidmap are missing or fail, it falls back to
 * IDMAP_SINGLE and stores why in *ret_reason (malloc'd; NULL when there was no fallback).
 * KILN_USERNS=single forces IDMAP_SINGLE (for tests), also as root.
 * Calling it again once entered is a no-op that returns the same info. */
int userns_enter(IdMapInfo *ret, char **ret_reason, KilnError **err);

/* The hint kiln prints when a chown fails under IDMAP_SINGLE. */
const char *userns_subid_hint(void);

/* Looks up the first subordinate id range of a user in a /etc/subuid-format file ("name:start:
 * count" lines; name may be the numeric uid). Ranges with count 0 are ignored. Returns 1 and
 * fills the range, 0 when the user has none (or the file does not exist), < 0 on read error. */
int userns_find_subid_range(const char *file, const char *user, uid_t uid, uint32_t *ret_start,
			    uint32_t *ret_count, KilnError **err);

/* Finds a helper program (newuidmap, newgidmap) in $PATH, then /usr/sbin, /usr/bin, /sbin, /bin.
 * Returns 1 with *ret_path malloc'd, 0 when not found. */
int userns_find_helper(const char *name, char **ret_path);
