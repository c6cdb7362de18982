#include "imageconf.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/cleanup.h"
#include "common/fdutil.h"
#include "common/rootfs.h"

struct ImageConf {
	Platform platform;
	char *author;
	json_t *config;	  /* the "config" sub-object */
	json_t *diff_ids; /* array of strings */
	json_t *history; /* array of objects; entries kiln adds have no "created" until serialize */
	size_t n_base_history;
	/* "KEY" -> position in config.Env: a Dockerfile may set tens of thousands of variables,
	 * and each ENV and each $KEY looks one up */
	json_t *env_index;
};

static json_t *env_array(const ImageConf *c)
{
	return json_object_get(c->config, "Env");
}

static void env_index_build(ImageConf *c)
{
	size_t i;
	json_t *e;

	json_decref(c->env_index);
	c->env_index = json_object();
	json_array_foreach (env_array(c), i, e) {
		const char *s = json_string_value(e), *eq = s ? strchr(s, '=') : NULL;
		if (!eq)
			continue;
		_cleanup_free_ char *key = strndup(s, (size_t)(eq - s));
		/* the first entry wins, as a scan from the start would find it */
		if (key && !json_object_get(c->env_index, key))
			json_object_set_new_nocheck(c->env_index, key, json_integer((json_int_t)i));
	}
}

static json_t *json_obj_or_new(json_t *parent, const char *key)
{
	json_t *o = json_object_get(parent, key);

	if (json_is_object(o))
		return json_deep_copy(o);
	return json_object();
}

ImageConf *image_conf_new_empty(const Platform *p)
{
	ImageConf *c = xcalloc(1, sizeof(*c));

	c->platform = *p;
	c->config = json_object();
	c->diff_ids = json_array();
	c->history = json_array();
	c->env_index = json_object();
	return c;
}

int image_conf_new_from_json(json_t *config, const Platform *p, ImageConf **ret, KilnError **err)
{
	if (!json_is_object(config))
		return kiln_error(err, EINVAL, "image config is not a JSON object");
	ImageConf *c = image_conf_new_empty(p);
	json_t *v;

	json_decref(c->config);
	c->config = json_obj_or_new(config, "config");
	v = json_object_get(config, "author");
	if (json_is_string(v))
		c->author = xstrdup(json_string_value(v));
	v = json_object_get(json_object_get(config, "rootfs"), "diff_ids");
	if (json_is_array(v)) {
		json_decref(c->diff_ids);
		c->diff_ids = json_deep_copy(v);
	}
	v = json_object_get(config, "history");
	if (json_is_array(v)) {
		json_decref(c->history);
		c->history = json_deep_copy(v);
	}
	c->n_base_history = json_array_size(c->history);
	env_index_build(c);
	*ret = c;
	return 0;
}

ImageConf *image_conf_copy(const ImageConf *c)
{
	ImageConf *n = xcalloc(1, sizeof(*n));

	n->platform = c->platform;
	n->author = c->author ? xstrdup(c->author) : NULL;
	n->config = json_deep_copy(c->config);
	n->diff_ids = json_deep_copy(c->diff_ids);
	n->history = json_deep_copy(c->history);
	n->n_base_history = c->n_base_history;
	env_index_build(n);
	return n;
}

void image_conf_free(ImageConf *c)
{
	if (!c)
		return;
	free(c->author);
	json_decref(c->config);
	json_decref(c->diff_ids);
	json_decref(c->history);
	json_decref(c->env_index);
	free(c);
}

const char *image_conf_env_get(const ImageConf *c, const char *key)
{
	json_t *i = json_object_get(c->env_index, key);
	const char *s =
	    i ? json_string_value(json_array_get(env_array(c), (size_t)json_integer_value(i)))
	      : NULL;
	size_t klen = strlen(key);

	if (s && strncmp(s, key, klen) == 0 && s[klen] == '=')
		return s + klen + 1;
	return NULL;
}

void image_conf_env_set(ImageConf *c, const char *key, const char *value)
{
	json_t *env = env_array(c), *i = json_object_get(c->env_index, key);
	_cleanup_free_ char *kv = xasprintf("%s=%s", key, value);

	if (!json_is_array(env)) {
		env = json_array();
		json_object_set_new(c->config, "Env", env);
	}
	if (i) {
		json_array_set_new(env, (size_t)json_integer_value(i), json_string(kv));
		return;
	}
	if (json_array_append_new(env, json_string(kv)) == 0) /* not UTF-8: dropped, as before */
		json_object_set_new_nocheck(c->env_index, key,
					    json_integer((json_int_t)json_array_size(env) - 1));
}

char **image_conf_env_strv(const ImageConf *c)
{
	return image_conf_get_strv(c, "Env");
}

const char *image_conf_get_string(const ImageConf *c, const char *field)
{
	return json_string_value(json_object_get(c->config, field));
}

void image_conf_set_string(ImageConf *c, const char *field, const char *value)
{
	if (value)
		json_object_set_new(c->config, field, json_string(value));
	else
		json_object_del(c->config, field);
}

char **image_conf_get_strv(const ImageConf *c, const char *field)
{
	json_t *a = json_object_get(c->config, field);
	char **v = xcalloc(json_array_size(a) + 1, sizeof(char *));
	size_t i, n = 0;
	json_t *e;

	if (!json_is_array(a)) {
		free(v);
		return NULL;
	}
	json_array_foreach (a, i, e) {
		if (json_is_string(e))
			v[n++] = xstrdup(json_string_value(e));
	}
	return v;
}

void image_conf_set_strv(ImageConf *c, const char *field, char *const *v)
{
	if (!v) {
		json_object_del(c->config, field);
		return;
	}
	json_t *a = json_array();
	for (size_t i = 0; v[i]; i++)
		json_array_append_new(a, json_string(v[i]));
	json_object_set_new(c->config, field, a);
}

void image_conf_map_add(ImageConf *c, const char *field, const char *key, const char *value)
{
	json_t *m = json_object_get(c->config, field);

	if (!json_is_object(m)) {
		m = json_object();
		json_object_set_new(c->config, field, m);
	}
	json_object_set_new(m, key, value ? json_string(value) : json_object());
}

void image_conf_set_json(ImageConf *c, const char *field, json_t *value)
{
	if (value)
		json_object_set_new(c->config, field, value);
	else
		json_object_del(c->config, field);
}

void image_conf_set_author(ImageConf *c, const char *author)
{
	free(c->author);
	c->author = xstrdup(author);
}

void image_conf_add_layer(ImageConf *c, const char *diff_id)
{
	json_array_append_new(c->diff_ids, json_string(diff_id));
}

size_t image_conf_n_layers(const ImageConf *c)
{
	return json_array_size(c->diff_ids);
}

void image_conf_add_history(ImageConf *c, const char *created_by, bool empty_layer)
{
	json_t *h = json_object();

	json_object_set_new(h, "created_by", json_string(created_by));
	json_object_set_new(h, "comment", json_string("kiln.dockerfile.v0"));
	if (empty_layer)
		json_object_set_new(h, "empty_layer", json_true());
	json_array_append_new(c->history, h);
}

void format_rfc3339(int64_t epoch, char out[32])
{
	time_t t = (time_t)epoch;
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* Go marshals maps with sorted keys; configs written by docker and BuildKit look like that. */
static json_t *sorted_object(json_t *o)
{
	size_t n = json_object_size(o), i = 0;
	const char **keys = xcalloc(n + 1, sizeof(char *));
	const char *k;
	json_t *v, *r = json_object();

	json_object_foreach (o, k, v)
		keys[i++] = k;
	for (size_t a = 1; a < n; a++)
		for (size_t b = a; b > 0 && strcmp(keys[b - 1], keys[b]) > 0; b--) {
			const char *t = keys[b];
			keys[b] = keys[b - 1];
			keys[b - 1] = t;
		}
	for (i = 0; i < n; i++)
		json_object_set(r, keys[i], json_object_get(o, keys[i]));
	free(keys);
	return r;
}

static json_t *ordered_config(json_t *cfg)
{
	static const char *const order[] = {"User",    "ExposedPorts", "Env",	      "Entrypoint",
					    "Cmd",     "Volumes",      "WorkingDir",  "Labels",
					    "OnBuild", "StopSignal",   "ArgsEscaped", "Healthcheck",
					    "Shell"};
	json_t *r = json_object();

	for (size_t i = 0; i < ELEMENTSOF(order); i++) {
		json_t *v = json_object_get(cfg, order[i]);
		if (!v || json_is_null(v))
			continue;
		if (json_is_object(v) && strcmp(order[i], "Healthcheck") != 0)
			json_object_set_new(r, order[i], sorted_object(v));
		else
			json_object_set(r, order[i], v);
	}
	return r;
}

char *image_conf_serialize(const ImageConf *c, int64_t epoch)
{
	char created[32];
	json_t *root = json_object(), *rootfs = json_object(), *hist = json_array();
	size_t i;
	json_t *h;

	format_rfc3339(epoch, created);
	json_object_set_new(root, "created", json_string(created));
	if (c->author)
		json_object_set_new(root, "author", json_string(c->author));
	json_object_set_new(root, "architecture", json_string(c->platform.arch));
	json_object_set_new(root, "os", json_string(c->platform.os));
	if (c->platform.variant[0])
		json_object_set_new(root, "variant", json_string(c->platform.variant));
	json_object_set_new(root, "config", ordered_config(c->config));
	json_object_set_new(rootfs, "type", json_string("layers"));
	json_object_set(rootfs, "diff_ids", c->diff_ids);
	json_object_set_new(root, "rootfs", rootfs);
	json_array_foreach (c->history, i, h) {
		if (i < c->n_base_history) {
			json_array_append(hist, h);
			continue;
		}
		json_t *e = json_object();
		json_object_set_new(e, "created", json_string(created));
		json_object_set(e, "created_by", json_object_get(h, "created_by"));
		json_object_set(e, "comment", json_object_get(h, "comment"));
		if (json_is_true(json_object_get(h, "empty_layer")))
			json_object_set_new(e, "empty_layer", json_true());
		json_array_append_new(hist, e);
	}
	json_object_set_new(root, "history", hist);
	char *s = json_dumps(root, JSON_COMPACT);
	json_decref(root);
	if (!s) {
		fputs("kiln: out of memory\n", stderr);
		abort();
	}
	return s;
}

/* /etc/passwd and /etc/group of the image, read inside its root (they may be symlinks). A RUN
 * step or a base layer may have made them a FIFO (an open would block forever) or huge: those
 * are errors naming the file; a missing file is *ret_data == NULL. */
#define IMAGE_DB_MAX_SIZE ((size_t)16 << 20)

static int read_image_file(int root_fd, const char *path, char **ret_data, KilnError **err)
{
	_cleanup_close_ int fd = rootfs_open(root_fd, path, O_RDONLY | O_NONBLOCK | O_NOCTTY, 0);
	int r;

	*ret_data = NULL;
	if (fd == -ENOENT || fd == -ENOTDIR)
		return 0;
	if (fd < 0)
		return kiln_error_errno(err, -fd, "image: open '%s'", path);
	r = read_regular_fd(fd, path, IMAGE_DB_MAX_SIZE, ret_data, NULL, err);
	return r < 0 ? kiln_error_wrap(err, r, "image") : 0;
}

static bool parse_id(const char *s, unsigned long *ret)
{
	char *end;

	if (!*s || *s == '-' || *s == '+')
		return false;
	errno = 0;
	unsigned long v = strtoul(s, &end, 10);
	if (errno || *end || v > 0xfffffffeUL)
		return false;
	*ret = v;
	return true;
}

/* Finds a line of an /etc/passwd-like file whose field 0 (name) or field `idfield` (numeric id)
 * matches; returns the fields split in place (up to 8). */
static bool db_find(char *data, const char *key, size_t idfield, char **fields, size_t *ret_n)
{
	unsigned long want_id = 0;
	bool numeric = parse_id(key, &want_id);
	char *save = NULL;

	for (char *line = strtok_r(data, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		size_t n = 0;
		char *p = line;
		while (n < 8) {
			fields[n++] = p;
			p = strchr(p, ':');
			if (!p)
				break;
			*p++ = 0;
		}
		if (n <= idfield)
			continue;
		unsigned long id;
		if ((!numeric && strcmp(fields[0], key) == 0) ||
		    (numeric && parse_id(fields[idfield], &id) && id == want_id)) {
			*ret_n = n;
			return true;
		}
	}
	return false;
}

static int lookup_group(int root_fd, const char *group, gid_t *ret, KilnError **err)
{
	unsigned long id;
	_cleanup_free_ char *data = NULL;
	char *f[8];
	size_t n;
	int r = read_image_file(root_fd, "/etc/group", &data, err);

	if (r < 0)
		return r;
	if (data && db_find(data, group, 2, f, &n) && parse_id(f[2], &id)) {
		*ret = (gid_t)id;
		return 0;
	}
	if (parse_id(group, &id)) {
		*ret = (gid_t)id;
		return 0;
	}
	return kiln_error(err, ENOENT, "unable to find group '%s' in the image's /etc/group",
			  group);
}

static int add_supplementary(int root_fd, const char *name, gid_t primary, gid_t **groups,
			     size_t *n, KilnError **err)
{
	_cleanup_free_ char *data = NULL;
	char *save = NULL;
	int r = read_image_file(root_fd, "/etc/group", &data, err);

	if (r < 0)
		return r;
	*groups = xcalloc(1, sizeof(gid_t));
	(*groups)[0] = primary;
	*n = 1;
	if (!data || !name)
		return 0;
	for (char *line = strtok_r(data, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char *f[4] = {0};
		size_t k = 0;
		char *p = line;
		while (k < 4) {
			f[k++] = p;
			p = strchr(p, ':');
			if (!p)
				break;
			*p++ = 0;
		}
		unsigned long gid;
		if (k < 4 || !parse_id(f[2], &gid) || gid == primary)
			continue;
		char *msave = NULL;
		for (char *m = strtok_r(f[3], ",", &msave); m; m = strtok_r(NULL, ",", &msave))
			if (strcmp(m, name) == 0) {
				*groups = xrealloc(*groups, (*n + 1) * sizeof(gid_t));
				(*groups)[(*n)++] = (gid_t)gid;
				break;
			}
	}
	return 0;
}

static int lookup_user(int root_fd, const char *user, uid_t *ret_uid, gid_t *ret_gid,
		       char **ret_name, KilnError **err)
{
	unsigned long id;
	_cleanup_free_ char *data = NULL;
	char *f[8];
	size_t n;
	int r = read_image_file(root_fd, "/etc/passwd", &data, err);

	if (r < 0)
		return r;
	if (data && db_find(data, user, 2, f, &n) && n >= 4 && parse_id(f[2], &id)) {
		unsigned long gid;
		*ret_uid = (uid_t)id;
		*ret_gid = parse_id(f[3], &gid) ? (gid_t)gid : 0;
		if (ret_name)
			*ret_name = xstrdup(f[0]);
		return 0;
	}
	if (parse_id(user, &id)) {
		*ret_uid = (uid_t)id;
		*ret_gid = 0;
		if (ret_name)
			*ret_name = NULL;
		return 0;
	}
	return kiln_error(err, ENOENT, "unable to find user '%s' in the image's /etc/passwd", user);
}

static int resolve_pair(int root_fd, const char *spec, uid_t *ret_uid, gid_t *ret_gid,
			char **ret_name, KilnError **err)
{
	_cleanup_free_ char *u = xstrdup(spec);
	char *g = strchr(u, ':');
	int r;

	if (g)
		*g++ = 0;
	if (!*u)
		return kiln_error(err, EINVAL, "invalid user '%s'", spec);
	r = lookup_user(root_fd, u, ret_uid, ret_gid, ret_name, err);
	if (r < 0)
		return r;
	if (g && *g)
		return lookup_group(root_fd, g, ret_gid, err);
	return 0;
}

int image_user_resolve(int root_fd, const char *user, uid_t *ret_uid, gid_t *ret_gid,
		       gid_t **ret_groups, size_t *ret_n_groups, KilnError **err)
{
	_cleanup_free_ char *name = NULL;
	uid_t uid;
	gid_t gid;
	int r;

	if (!user || !*user)
		user = "0";
	r = resolve_pair(root_fd, user, &uid, &gid, &name, err);
	if (r < 0)
		return r;
	if (ret_groups) {
		r = add_supplementary(root_fd, strchr(user, ':') ? NULL : name, gid, ret_groups,
				      ret_n_groups, err);
		if (r < 0)
			return r;
	}
	*ret_uid = uid;
	*ret_gid = gid;
	return 0;
}

int image_chown_resolve(int root_fd, const char *spec, uid_t *ret_uid, gid_t *ret_gid,
			KilnError **err)
{
	uid_t uid;
	gid_t gid;
	_cleanup_free_ char *u = xstrdup(spec);
	char *g = strchr(u, ':');
	int r;

	/* --chown=10 keeps gid 10 as BuildKit does for a numeric user without passwd entry. */
	r = resolve_pair(root_fd, spec, &uid, &gid, NULL, err);
	if (r < 0)
		return r;
	unsigned long id;
	if (g)
		*g = 0;
	if (!g && parse_id(u, &id)) {
		_cleanup_free_ char *data = NULL;
		char *f[8];
		size_t n;
		r = read_image_file(root_fd, "/etc/passwd", &data, err);
		if (r < 0)
			return r;
		if (!data || !db_find(data, u, 2, f, &n))
			gid = (gid_t)id;
	}
	*ret_uid = uid;
	*ret_gid = gid;
	return 0;
}
