/* layers/registry_push: what does not need a registry (--platform selection, --mount-from,
 * destinations refused before any request, the results). The pushes themselves are tested
 * against real registries in tests/integration/t-push.sh. */
#include <jansson.h>

#include "common/cleanup.h"
#include "common/digest.h"
#include "common/error.h"
#include "common/fdutil.h"
#include "layers/oci.h"
#include "layers/registry.h"
#include "layers/registry_push.h"
#include "layers/store.h"

#include "tap.h"

static Store *open_store(void)
{
	Store *s = NULL;
	_cleanup_error_ KilnError *e = NULL;

	if (store_open("root", &s, &e) < 0)
		printf("# store_open: %s\n", e->message);
	return s;
}

static void put(Store *s, const char *text, char digest[DIGEST_STRING_MAX])
{
	if (store_put_blob(s, text, strlen(text), NULL, digest, NULL) < 0)
		printf("# store_put_blob failed\n");
}

/* One platform's image: a layer, a config naming its diff_id, a manifest. */
static void put_image(Store *s, const char *arch, OciDescriptor *ret)
{
	char layer[DIGEST_STRING_MAX], config[DIGEST_STRING_MAX];
	_cleanup_free_ char *layer_text = xasprintf("layer of %s", arch);
	put(s, layer_text, layer);
	_cleanup_free_ char *cfg =
	    xasprintf("{\"architecture\":\"%s\",\"os\":\"linux\",\"rootfs\":{\"type\":\"layers\","
		      "\"diff_ids\":[\"%s\"]}}",
		      arch, layer);
	put(s, cfg, config);
	_cleanup_free_ char *m = xasprintf(
	    "{\"schemaVersion\":2,\"mediaType\":\"" MT_OCI_MANIFEST "\",\"config\":{\"mediaType\":"
	    "\"" MT_OCI_CONFIG "\",\"digest\":\"%s\",\"size\":%zu},\"layers\":[{\"mediaType\":"
	    "\"" MT_OCI_LAYER "\",\"digest\":\"%s\",\"size\":%zu}]}",
	    config, strlen(cfg), layer, strlen(layer_text));
	*ret = (OciDescriptor){.size = (int64_t)strlen(m), .has_platform = true};
	snprintf(ret->media_type, sizeof(ret->media_type), "%s", MT_OCI_MANIFEST);
	put(s, m, ret->digest);
	char pl[PLATFORM_STRING_MAX];
	snprintf(pl, sizeof(pl), "linux/%s", arch);
	platform_parse(pl, &ret->platform, NULL);
}

static void put_index(Store *s, OciDescriptor *ret)
{
	OciDescriptor m[3];

	put_image(s, "amd64", &m[0]);
	put_image(s, "arm64", &m[1]);
	put_image(s, "s390x", &m[2]);
	if (oci_index_put(s, m, 3, ret, NULL) < 0)
		printf("# oci_index_put failed\n");
}

TEST(select_platforms_makes_a_new_index)
{
	_cleanup_(store_freep) Store *s = open_store();
	_cleanup_error_ KilnError *e = NULL;
	OciDescriptor root, sel = {0};
	Platform want[2];
	_cleanup_free_ char *data = NULL;
	OciDescriptor *v = NULL;
	size_t len = 0, n = 0;

	put_index(s, &root);
	platform_parse("linux/s390x", &want[0], NULL);
	platform_parse("linux/amd64", &want[1], NULL);
	CHECK_EQ_INT(registry_push_select_platforms(s, &root, want, 2, &sel, &e), 0);
	CHECK(strcmp(sel.digest, root.digest) != 0);
	CHECK_EQ_STR(sel.media_type, MT_OCI_INDEX);
	CHECK_EQ_INT(store_read_blob(s, sel.digest, 1 << 20, &data, &len, NULL), 0);
	CHECK_EQ_INT(oci_index_parse(data, len, &v, &n, NULL), 0);
	CHECK_EQ_INT(n, 2);
	/* sorted by platform, as every index kiln writes */
	CHECK(n == 2 && strcmp(v[0].platform.arch, "amd64") == 0);
	CHECK(n == 2 && strcmp(v[1].platform.arch, "s390x") == 0);
	oci_descriptors_free(v, n);
}

TEST(select_all_platforms_gives_the_same_index)
{
	_cleanup_(store_freep) Store *s = open_store();
	OciDescriptor root, sel = {0};
	Platform want[3];

	put_index(s, &root);
	platform_parse("linux/arm64", &want[0], NULL);
	platform_parse("linux/s390x", &want[1], NULL);
	platform_parse("linux/amd64", &want[2], NULL);
	CHECK_EQ_INT(registry_push_select_platforms(s, &root, want, 3, &sel, NULL), 0);
	CHECK_EQ_STR(sel.digest, root.digest);
}

TEST(select_missing_platform_names_those_there)
{
	_cleanup_(store_freep) Store *s = open_store();
	_cleanup_error_ KilnError *e = NULL;
	OciDescriptor root, sel = {0};
	Platform want;

	put_index(s, &root);
	platform_parse("linux/ppc64le", &want, NULL);
	CHECK_EQ_INT(registry_push_select_platforms(s, &root, &want, 1, &sel, &e), -ENOENT);
	CHECK(e && strstr(e->message, "linux/ppc64le is not in the image"));
	CHECK(e && strstr(e->message, "linux/amd64, linux/arm64, linux/s390x"));
}

static int session_with(const char *mount_from, KilnError **err)
{
	_cleanup_(registry_push_session_freep) PushSession *p = NULL;
	PushOptions o = {.mount_from = mount_from};

	return registry_push_session_new(NULL, NULL, &o, &p, err);
}

TEST(mount_from_is_a_repository)
{
	static const char *const good[] = {"team/base", "base", "reg.io/team/base", "localhost/x",
					   "127.0.0.1:5000/a/b"};
	static const char *const bad[] = {"Team/base", "team//base", "team/base/",
					  "reg.io/",   "a b",	     "bad_host:x/y"};

	for (size_t i = 0; i < ELEMENTSOF(good); i++)
		CHECK_EQ_INT(session_with(good[i], NULL), 0);
	for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
		_cleanup_error_ KilnError *e = NULL;
		CHECK_EQ_INT(session_with(bad[i], &e), -KILN_EUSAGE);
		CHECK(e && strstr(e->message, "--mount-from"));
	}
}

TEST(destination_refused_before_any_request)
{
	_cleanup_(store_freep) Store *s = open_store();
	_cleanup_(registry_client_freep) RegistryClient *c = NULL;
	_cleanup_(registry_push_session_freep) PushSession *p = NULL;
	OciDescriptor root;
	PushResult res;

	put_index(s, &root);
	CHECK_EQ_INT(registry_client_new(NULL, &c, NULL), 0);
	CHECK_EQ_INT(registry_push_session_new(c, s, NULL, &p, NULL), 0);

	_cleanup_error_ KilnError *e1 = NULL;
	CHECK(registry_push_image(p, &root, "Bad Name", &res, &e1) < 0);
	CHECK(res.error && e1 && strcmp(res.error->message, e1->message) == 0);
	CHECK_EQ_STR(res.name, "Bad Name");
	push_result_done(&res);

	_cleanup_error_ KilnError *e2 = NULL;
	_cleanup_free_ char *other = xasprintf("127.0.0.1:1/a/b@sha256:%064d", 0);
	CHECK_EQ_INT(registry_push_image(p, &root, other, &res, &e2), -EINVAL);
	CHECK(e2 && strstr(e2->message, "names digest sha256:0000"));
	CHECK(e2 && strstr(e2->message, root.digest));
	CHECK_EQ_STR(res.name, other);
	CHECK_EQ_STR(res.digest, root.digest);
	CHECK_EQ_INT(res.uploaded + res.mounted + res.skipped + res.manifests, 0);
	json_t *j = push_result_json(&res);
	CHECK(json_object_get(j, "error") && !json_object_get(j, "digest"));
	json_decref(j);
	push_result_done(&res);
}

TEST(unreachable_destination_is_its_own_failure)
{
	_cleanup_(store_freep) Store *s = open_store();
	_cleanup_(registry_client_freep) RegistryClient *c = NULL;
	_cleanup_(registry_push_session_freep) PushSession *p = NULL;
	_cleanup_error_ KilnError *e = NULL;
	HttpRetry once = {.tries = 1};
	RegistryClientOptions co = {.retry = &once};
	OciDescriptor root;
	PushResult res;

	put_index(s, &root);
	CHECK_EQ_INT(registry_client_new(&co, &c, NULL), 0);
	CHECK_EQ_INT(registry_push_session_new(c, s, NULL, &p, NULL), 0);
	CHECK(registry_push_image(p, &root, "127.0.0.1:1/team/app:1", &res, &e) < 0);
	CHECK_EQ_STR(res.name, "127.0.0.1:1/team/app:1");
	CHECK(res.error && strstr(res.error->message, "127.0.0.1:1"));
	CHECK(res.seconds >= 0);
	push_result_done(&res);
}

TEST(result_json)
{
	PushResult r = {.name = xstrdup("reg.io/a/b:1"),
			.uploaded = 3,
			.mounted = 1,
			.skipped = 2,
			.manifests = 3,
			.bytes = 12345,
			.seconds = 1.25,
			.tag_only = false};
	snprintf(r.digest, sizeof(r.digest), "sha256:%064d", 7);
	json_t *j = push_result_json(&r);
	_cleanup_free_ char *s = json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(6));

	CHECK(s && strstr(s, "\"name\":\"reg.io/a/b:1\""));
	CHECK(s && strstr(s, "\"uploaded\":3,\"mounted\":1,\"skipped\":2,\"manifests\":3"));
	CHECK(s && strstr(s, "\"bytes\":12345,\"seconds\":1.25,\"tag_only\":false"));
	json_decref(j);
	push_result_done(&r);
	CHECK(r.name == NULL);
}

int main(void)
{
	RUN(select_platforms_makes_a_new_index);
	RUN(select_all_platforms_gives_the_same_index);
	RUN(select_missing_platform_names_those_there);
	RUN(mount_from_is_a_repository);
	RUN(destination_refused_before_any_request);
	RUN(unreachable_destination_is_its_own_failure);
	RUN(result_json);
	return tap_done();
}
