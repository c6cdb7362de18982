/* Entering kiln's user namespace: uid/gid 0 over the widest id map the caller can get. */
#pragma once

#include <stdint.h>
#include <sys/types.h>

#include "common/error.h"

typedef enum {
	IDMAP_ROOT,  /* caller was root: ids 0..n-1 on an unprivileged host range, host ids above */
	IDMAP_SUBID, /* caller's uid + /etc/subuid range via newuidmap/newgidmap */
	IDMAP_SINGLE, /* only the caller's own id mapped to 0 */
} IdMapKind;

typedef struct IdMapInfo {
	IdMapKind kind;
	uid_t outer_uid;
	gid_t outer_gid;
	uint32_t n_uids, n_gids; /* the container range: ids 0..n-1 inside (what images may use) */
	/* The ids inside that stand for the calling user on the host: files kiln writes for the
	 * user (outputs, reports) are given to them. 0 except under IDMAP_ROOT (host root). */
	uid_t owner_uid;
	gid_t owner_gid;
	/* The host ids behind inside 0 (the first id of the container range). */
	uint32_t host_uid_base, host_gid_base;
} IdMapInfo;

/* The subordinate range kiln reserves for root builds when root has none of its own:
 * "kiln:START:65536" in /etc/subuid and /etc/subgid, START at or above 2^30 (clear of what
 * useradd hands out, SUB_UID_MAX 600100000, and below podman's "containers" range). */
#define USERNS_RESERVED_NAME "kiln"
#define USERNS_RESERVED_COUNT 65536u
#define USERNS_RESERVED_FLOOR 1073741824u

/* Moves the process into a new user + mount namespace as uid/gid 0, with mount propagation
 * private and no supplementary groups (except under IDMAP_SINGLE, where setgroups is denied).
 *
 * Forks: the parent stays outside, writes the maps, forwards SIGINT/SIGTERM/SIGHUP to the child,
 * waits, and _exit()s with the child's exit status (or 128+signal). The call returns 0 only in
 * the child; on failure it returns < 0 in the original process (no child is left behind).
 * Call it before starting threads. The parent keeps only fds 0-2 open.
 *
 * Maps:
 *   root (euid 0)  IDMAP_ROOT: a build step must never be host root, so inside ids 0..n-1 are
 *                  root's own range in /etc/subuid (user "root" or "0"), else the range kiln
 *                  reserves (see userns_reserve_subid_range()); the host's ids below that range
 *                  follow it (host root is inside id n, the owner_uid) and the ones above map
 *                  onto themselves, so kiln itself still reaches every host file, while the
 *                  container range holds no host-owned inode (see userns_map_container());
 *   otherwise      0 -> caller's uid, 1..count -> the FIRST range listed for the user in
 *                  /etc/subuid (/etc/subgid for gids), matched by user name or numeric uid,
 *                  written by newuidmap/newgidmap (IDMAP_SUBID);
 *   fallback       "0 uid 1", setgroups=deny, "0 gid 1" written directly (IDMAP_SINGLE).
 * When no range is configured, newuidmap/newgidmap are missing or fail, it falls back to
 * IDMAP_SINGLE and stores why in *ret_reason (malloc'd; NULL when there was no fallback).
 * KILN_USERNS=single forces IDMAP_SINGLE (for tests), also as root.
 * Calling it again once entered is a no-op that returns the same info. */
int userns_enter(IdMapInfo *ret, char **ret_reason, KilnError **err);

/* The map entered, or NULL before userns_enter() succeeded in this process. */
const IdMapInfo *userns_current(void);

/* Writes the id maps of the user namespace that process pid created inside kiln's (it must
 * have unshared CLONE_NEWUSER and wait for this): "0 0 n" for uids and gids, the container
 * range. Host ids kiln maps above the range (host root included) stay unmapped there, so a
 * step's root has no power over host-owned files. Call inside kiln's namespace. */
int userns_map_container(pid_t pid, KilnError **err);

/* This process's /proc/self/uid_map and gid_map as one text (whitespace runs made one space),
 * for telling whether files made under another map have the ids they should. */
char *userns_map_text(void);

/* Returns the range named name in file (an /etc/subuid-format file), adding
 * "name:START:count\n" when it has none: START is the lowest multiple of 65536 at or above
 * floor whose range overlaps no range in the file. The file is flock(2)ed while it is read and
 * extended, and created (0644) when missing. */
int userns_reserve_subid_range(const char *file, const char *name, uint32_t count, uint32_t floor,
			       uint32_t *ret_start, KilnError **err);

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
