#include "overlay.h"

#include <errno.h>
#include <pthread.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/fdutil.h"

/* overlayfs splits its options on ',' and lowerdir on ':'; both (and '\') are escaped by '\'. */
static void put_escaped(FILE *f, const char *s)
{
	for (; *s; s++) {
		if (*s == ',' || *s == ':' || *s == '\\')
			fputc('\\', f);
		fputc(*s, f);
	}
}

static int absolute_path(const char *path, char **ret, KilnError **err)
{
	char *p = realpath(path, NULL);

	if (!p)
		return kiln_error_errno(err, errno, "resolve '%s'", path);
	*ret = p;
	return 0;
}

static int empty_lower_for(const char *work_abs, char **ret, KilnError **err)
{
	_cleanup_free_ char *copy = xstrdup(work_abs);
	_cleanup_free_ char *dir = xasprintf("%s/.empty-lower", dirname(copy));

	if (mkdir(dir, 0755) < 0 && errno != EEXIST)
		return kiln_error_errno(err, errno, "create '%s'", dir);
	*ret = TAKE_PTR(dir);
	return 0;
}

static int build_options(char *const *lowers, const char *empty, const char *upper,
			 const char *work, char **ret, KilnError **err)
{
	_cleanup_free_ char *buf = NULL;
	size_t len = 0;
	long page = sysconf(_SC_PAGESIZE);
	FILE *f = open_memstream(&buf, &len);

	if (!f)
		return kiln_error_errno(err, errno, "open_memstream");
	fputs("lowerdir=", f);
	if (empty)
		put_escaped(f, empty);
	for (size_t i = 0; !empty && lowers[i]; i++) {
		if (i > 0)
			fputc(':', f);
		put_escaped(f, lowers[i]);
	}
	fputs(",upperdir=", f);
	put_escaped(f, upper);
	fputs(",workdir=", f);
	put_escaped(f, work);
	fputs(",userxattr", f);
	if (fclose(f) != 0 || !buf)
		return kiln_error(err, ENOMEM, "out of memory");
	if (page > 0 && len + 1 > (size_t)page)
		return kiln_error(err, E2BIG,
				  "overlay mount options are %zu bytes, more than one page (%ld): "
				  "too many or too long lower layer names",
				  len + 1, page);
	*ret = TAKE_PTR(buf);
	return 0;
}

static pthread_mutex_t cwd_lock = PTHREAD_MUTEX_INITIALIZER;

int overlay_mount(const char *lower_base, char *const *lowers, const char *upper, const char *work,
		  const char *target, KilnError **err)
{
	_cleanup_free_ char *upper_abs = NULL, *work_abs = NULL, *target_abs = NULL;
	_cleanup_free_ char *empty = NULL, *opts = NULL;
	_cleanup_close_ int oldcwd = -1;
	bool no_lowers = !lowers || !lowers[0];
	int r, saved;

	if ((r = absolute_path(upper, &upper_abs, err)) < 0 ||
	    (r = absolute_path(work, &work_abs, err)) < 0 ||
	    (r = absolute_path(target, &target_abs, err)) < 0)
		return kiln_error_wrap(err, r, "mount overlay");
	for (size_t i = 0; !no_lowers && lowers[i]; i++)
		if (!lowers[i][0])
			return kiln_error(err, EINVAL, "mount overlay: empty lower layer name");
	if (no_lowers) {
		r = empty_lower_for(work_abs, &empty, err);
		if (r < 0)
			return kiln_error_wrap(err, r, "mount overlay");
	} else if (!lower_base) {
		return kiln_error(err, EINVAL, "mount overlay: lower layers without a base dir");
	}
	r = build_options(lowers, empty, upper_abs, work_abs, &opts, err);
	if (r < 0)
		return kiln_error_wrap(err, r, "mount overlay on '%s'", target);
	/* The cwd is process-wide and platforms build in parallel threads: one mount at a time. */
	pthread_mutex_lock(&cwd_lock);
	if (!no_lowers) {
		oldcwd = open(".", O_PATH | O_DIRECTORY | O_CLOEXEC);
		if (oldcwd < 0 || chdir(lower_base) < 0) {
			saved = errno;
			pthread_mutex_unlock(&cwd_lock);
			return kiln_error_errno(err, saved, "mount overlay: chdir '%s'",
						lower_base);
		}
	}
	r = mount("overlay", target_abs, "overlay", 0, opts);
	saved = errno;
	if (oldcwd >= 0 && fchdir(oldcwd) < 0) {
		saved = errno;
		pthread_mutex_unlock(&cwd_lock);
		return kiln_error_errno(err, saved, "restore current directory");
	}
	pthread_mutex_unlock(&cwd_lock);
	if (r < 0)
		return kiln_error_errno(err, saved, "mount overlay on '%s'", target);
	return 0;
}

int overlay_umount(const char *target, KilnError **err)
{
	if (umount2(target, MNT_DETACH) < 0)
		return kiln_error_errno(err, errno, "unmount '%s'", target);
	return 0;
}
