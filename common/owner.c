#include "owner.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <unistd.h>

static bool owner_is_set;
static uid_t owner_uid;
static gid_t owner_gid;

void owner_set(uid_t uid, gid_t gid)
{
	owner_uid = uid;
	owner_gid = gid;
	owner_is_set = uid != 0 || gid != 0;
}

int owner_give_fd(int fd)
{
	if (owner_is_set && fchown(fd, owner_uid, owner_gid) < 0)
		return -errno;
	return 0;
}

int owner_give_at(int dirfd, const char *name)
{
	if (owner_is_set && fchownat(dirfd, name, owner_uid, owner_gid, AT_SYMLINK_NOFOLLOW) < 0)
		return -errno;
	return 0;
}
