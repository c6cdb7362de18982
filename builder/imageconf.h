/* The image config a stage builds up: the OCI config JSON of its base, edited instruction by
 * instruction, plus the history and rootfs lists. Key order of everything written is fixed so the
 * config blob is deterministic. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/digest.h"
#include "common/error.h"
#include "platforms/platform.h"

typedef struct ImageConf ImageConf;

/* A config with nothing in it (FROM scratch) for a platform. */
ImageConf *image_conf_new_empty(const Platform *p);
/* From a base image's config blob (parsed). Takes a reference of its own. */
int image_conf_new_from_json(json_t *config, const Platform *p, ImageConf **ret, KilnError **err);
ImageConf *image_conf_copy(const ImageConf *c);
void image_conf_free(ImageConf *c);
static inline void image_conf_freep(ImageConf **c)
{
	image_conf_free(*c);
}

/* Environment ("K=V" list, order kept, a new key appended, an existing one replaced in place). */
const char *image_conf_env_get(const ImageConf *c, const char *key);
void image_conf_env_set(ImageConf *c, const char *key, const char *value);
/* NULL-terminated "K=V" copy of the env (caller frees with strv_free). */
char **image_conf_env_strv(const ImageConf *c);

/* The "config" sub-object: string fields (User, WorkingDir, StopSignal); NULL value deletes. */
const char *image_conf_get_string(const ImageConf *c, const char *field);
void image_conf_set_string(ImageConf *c, const char *field, const char *value);
/* Array fields (Cmd, Entrypoint, Shell, OnBuild); NULL deletes. */
char **image_conf_get_strv(const ImageConf *c, const char *field);
void image_conf_set_strv(ImageConf *c, const char *field, char *const *v);
/* Map fields holding {} values (ExposedPorts, Volumes) and Labels (string values). */
void image_conf_map_add(ImageConf *c, const char *field, const char *key, const char *value);
void image_conf_set_json(ImageConf *c, const char *field, json_t *value /* stolen */);
void image_conf_set_author(ImageConf *c, const char *author);

/* rootfs.diff_ids and history. */
void image_conf_add_layer(ImageConf *c, const char *diff_id);
size_t image_conf_n_layers(const ImageConf *c);
void image_conf_add_history(ImageConf *c, const char *created_by, bool empty_layer);

/* The final config blob: created = epoch (history entries kiln added get it too), keys in a fixed
 * order, maps sorted by key. Returns a malloc'd compact JSON string. */
char *image_conf_serialize(const ImageConf *c, int64_t epoch);

/* Formats an epoch as RFC 3339 UTC ("1970-01-01T00:00:00Z"). */
void format_rfc3339(int64_t epoch, char out[32]);

/* Looks up USER ("name", "uid", "name:group", "uid:gid") in the image's /etc/passwd and /etc/group
 * below root_fd. A numeric uid without a passwd entry gets gid 0; a name that is not found is an
 * error. ret_groups (may be NULL) gets the supplementary groups (primary gid first). */
int image_user_resolve(int root_fd, const char *user, uid_t *ret_uid, gid_t *ret_gid,
		       gid_t **ret_groups, size_t *ret_n_groups, KilnError **err);
/* Resolves a --chown value ("user", "user:group", "uid:gid") the same way (no supplementary
 * groups); a user without a group takes the user's primary group. */
int image_chown_resolve(int root_fd, const char *spec, uid_t *ret_uid, gid_t *ret_gid,
			KilnError **err);
