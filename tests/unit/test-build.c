/* The builder's own pieces: the COPY engine (context rules, globs, destinations, escapes) and
 * the image config (USER and --chown lookups, env, deterministic serialisation). */
#include <fcntl.h>
#include <sys/stat.h>

#include "builder/build-internal.h"
#include "builder/build.h"
#include "builder/context.h"
#include "builder/imageconf.h"
#include "common/cleanup.h"
#include "common/fdutil.h"
#include "common/strbuf.h"
#include "tap.h"

static void put(const char *path, const char *content)
{
	_cleanup_free_ char *dir = xstrdup(path);
	char *s = strrchr(dir, '/');
	if (s) {
		*s = 0;
		mkdir_p(dir, 0755, NULL);
	}
	write_file_atomic_at(AT_FDCWD, path, content, strlen(content), 0644, NULL);
}

static bool exists(const char *path)
{
	struct stat st;
	return lstat(path, &st) == 0;
}

static int open_dir(const char *p)
{
	mkdir_p(p, 0755, NULL);
	return open(p, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
}

static CopyOptions ctx_opts(void)
{
	return (CopyOptions){.from_context = true, .set_owner = true, .mtime = 0, .what = "COPY"};
}

static int copy1(const char *src, const char *dest, KilnError **err)
{
	_cleanup_close_ int c = open_dir("ctx"), r = open_dir("root");
	char *srcs[] = {(char *)src, NULL};
	CopyOptions o = ctx_opts();
	return copy_into(c, srcs, r, dest, &o, err);
}

TEST(copy_dir_contents_and_file_rules)
{
	put("ctx/files/a", "A");
	put("ctx/files/sub/b", "B");
	put("ctx/one", "1");
	CHECK(copy1("files/", "/src/", NULL) == 0);
	CHECK(exists("root/src/a"));
	CHECK(exists("root/src/sub/b"));
	CHECK(!exists("root/src/files"));
	/* a file onto a name that is not a dir is that file; onto "dir/" it lands inside */
	CHECK(copy1("one", "/x", NULL) == 0);
	CHECK(exists("root/x"));
	CHECK(copy1("one", "/d/", NULL) == 0);
	CHECK(exists("root/d/one"));
	/* an existing dir takes the file inside */
	CHECK(copy1("one", "/src", NULL) == 0);
	CHECK(exists("root/src/one"));
}

TEST(copy_globs_sorted_and_need_dir_dest)
{
	_cleanup_error_ KilnError *e = NULL;
	put("ctx/a.txt", "a");
	put("ctx/b.txt", "b");
	put("ctx/c.md", "c");
	CHECK(copy1("*.txt", "/t/", NULL) == 0);
	CHECK(exists("root/t/a.txt") && exists("root/t/b.txt") && !exists("root/t/c.md"));
	CHECK(copy1("*.txt", "/file", &e) < 0);
	CHECK(e && strstr(e->message, "end with '/'"));
	kiln_error_free(TAKE_PTR(e));
	CHECK(copy1("*.none", "/t/", &e) == -ENOENT);
}

TEST(copy_outside_context_refused)
{
	_cleanup_error_ KilnError *e = NULL;
	put("outside", "secret");
	put("ctx/in", "x");
	CHECK(copy1("../outside", "/o", &e) == -EXDEV);
	CHECK(e && strstr(e->message, "outside the build context"));
	kiln_error_free(TAKE_PTR(e));
	CHECK(symlink("/etc", "ctx/evil") == 0);
	CHECK(copy1("evil/passwd", "/p", &e) == -EXDEV);
	CHECK(e && strstr(e->message, "outside the build context"));
	kiln_error_free(TAKE_PTR(e));
	CHECK(symlink("../outside", "ctx/up") == 0);
	CHECK(copy1("up", "/p", &e) < 0);
	CHECK(!exists("root/p"));
	kiln_error_free(TAKE_PTR(e));
	CHECK(copy1("missing", "/p", &e) == -ENOENT);
	CHECK(e && strstr(e->message, "not found"));
}

TEST(copy_keeps_inner_symlinks_and_follows_top_level)
{
	char buf[64] = {0};
	put("ctx/dir/real", "r");
	CHECK(symlink("real", "ctx/dir/link") == 0);
	CHECK(symlink("dir/real", "ctx/top") == 0);
	CHECK(copy1("dir", "/d", NULL) == 0);
	CHECK(readlink("root/d/link", buf, sizeof(buf) - 1) == 4);
	CHECK_EQ_STR(buf, "real");
	CHECK(copy1("top", "/t", NULL) == 0);
	struct stat st;
	CHECK(lstat("root/t", &st) == 0 && S_ISREG(st.st_mode));
}

TEST(copy_dest_symlink_stays_in_root)
{
	put("ctx/f", "x");
	mkdir_p("root", 0755, NULL);
	CHECK(symlink("/", "root/escape") == 0);
	CHECK(copy1("f", "/escape/tmp/kiln-test-canary-file", NULL) == 0);
	CHECK(exists("root/tmp/kiln-test-canary-file"));
	CHECK(!exists("/tmp/kiln-test-canary-file"));
}

TEST(copy_honours_dockerignore)
{
	_cleanup_(build_context_freep) BuildContext *bc = NULL;
	put("ctx/.dockerignore", "*.log\nsub\n!sub/keep\n");
	put("ctx/a.log", "x");
	put("ctx/b", "x");
	put("ctx/sub/drop", "x");
	put("ctx/sub/keep", "x");
	CHECK(build_context_open("ctx", NULL, &bc, NULL) == 0);
	_cleanup_close_ int r = open_dir("root");
	char *srcs[] = {".", NULL};
	CopyOptions o = ctx_opts();
	o.ignore = build_context_ignore(bc);
	CHECK(copy_into(build_context_fd(bc), srcs, r, "/", &o, NULL) == 0);
	CHECK(exists("root/b"));
	CHECK(!exists("root/a.log"));
	CHECK(exists("root/sub/keep"));
	CHECK(!exists("root/sub/drop"));
}

TEST(user_lookup)
{
	uid_t uid;
	gid_t gid;
	_cleanup_free_ gid_t *groups = NULL;
	size_t n = 0;
	_cleanup_error_ KilnError *e = NULL;
	put("root/etc/passwd",
	    "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n");
	put("root/etc/group", "root:x:0:\napp:x:1000:\nextra:x:2000:app,other\n");
	_cleanup_close_ int r = open("root", O_RDONLY | O_DIRECTORY);
	CHECK(image_user_resolve(r, "app", &uid, &gid, &groups, &n, NULL) == 0);
	CHECK_EQ_INT(uid, 1000);
	CHECK_EQ_INT(gid, 1000);
	CHECK_EQ_INT(n, 2);
	CHECK(n == 2 && groups[1] == 2000);
	CHECK(image_user_resolve(r, "4242", &uid, &gid, NULL, NULL, NULL) == 0);
	CHECK(uid == 4242 && gid == 0);
	CHECK(image_user_resolve(r, "app:extra", &uid, &gid, NULL, NULL, NULL) == 0);
	CHECK(uid == 1000 && gid == 2000);
	CHECK(image_user_resolve(r, "nobody", &uid, &gid, NULL, NULL, &e) == -ENOENT);
	CHECK(e && strstr(e->message, "'nobody'"));
	CHECK(image_chown_resolve(r, "app", &uid, &gid, NULL) == 0);
	CHECK(uid == 1000 && gid == 1000);
	CHECK(image_chown_resolve(r, "10", &uid, &gid, NULL) == 0);
	CHECK(uid == 10 && gid == 10);
	CHECK(image_chown_resolve(r, "10:20", &uid, &gid, NULL) == 0);
	CHECK(uid == 10 && gid == 20);
}

TEST(config_serialisation_is_deterministic)
{
	Platform p = {.os = "linux", .arch = "arm", .variant = "v7"};
	_cleanup_(image_conf_freep) ImageConf *c = image_conf_new_empty(&p);
	image_conf_env_set(c, "A", "1");
	image_conf_env_set(c, "B", "2");
	image_conf_env_set(c, "A", "3");
	CHECK_EQ_STR(image_conf_env_get(c, "A"), "3");
	image_conf_map_add(c, "Labels", "z", "last");
	image_conf_map_add(c, "Labels", "a", "first");
	image_conf_add_history(c, "ENV A=3", true);
	_cleanup_free_ char *s = image_conf_serialize(c, 86400);
	CHECK_EQ_STR(s, "{\"created\":\"1970-01-02T00:00:00Z\",\"architecture\":\"arm\",\"os\":"
			"\"linux\",\"variant\":\"v7\",\"config\":{\"Env\":[\"A=3\",\"B=2\"],"
			"\"Labels\":{\"a\":\"first\",\"z\":\"last\"}},\"rootfs\":{\"type\":"
			"\"layers\",\"diff_ids\":[]},\"history\":[{\"created\":\"1970-01-02T00:00:"
			"00Z\",\"created_by\":\"ENV A=3\",\"comment\":\"kiln.dockerfile.v0\","
			"\"empty_layer\":true}]}");
}

static int build_str(const char *dockerfile, const char *target, KilnError **err)
{
	Store *store = NULL;
	Platform p;
	platform_host(&p);
	put("bctx/Dockerfile", dockerfile);
	if (store_open("broot", &store, err) < 0)
		return -1;
	BuildOptions o = {
	    .context_dir = "bctx",
	    .platforms = &p,
	    .n_platforms = 1,
	    .target = target,
	    .progress = PROGRESS_QUIET,
	    .store = store,
	};
	int r = build_run(&o, err);
	store_free(store);
	return r;
}

TEST(build_errors_name_line_and_thing)
{
	_cleanup_error_ KilnError *e = NULL;

	CHECK(build_str("FROM scratch\nCOPY --from=nope /x /y\n", NULL, &e) < 0);
	CHECK(e && strstr(e->message, "Dockerfile:2") && strstr(e->message, "'nope'"));
	kiln_error_free(TAKE_PTR(e));
	CHECK(build_str("FROM nosuchimage\n", NULL, &e) < 0);
	CHECK(e && strstr(e->message, "Dockerfile:1") && strstr(e->message, "nosuchimage") &&
	      strstr(e->message, "kiln load"));
	kiln_error_free(TAKE_PTR(e));
	CHECK(build_str("FROM scratch AS a\n", "b", &e) < 0);
	CHECK(e && strstr(e->message, "target stage 'b' not found"));
	CHECK(e && kiln_error_exit_status(e) == 1);
	kiln_error_free(TAKE_PTR(e));
	CHECK(build_str("FROM scratch\nRUN --mount=type=cache,target=/x true\n", NULL, &e) < 0);
	CHECK(e && strstr(e->message, "Dockerfile:2") && strstr(e->message, "--mount"));
	kiln_error_free(TAKE_PTR(e));
	CHECK(build_str("FROM scratch\nBOGUS x\n", NULL, &e) < 0);
	CHECK(e && strstr(e->message, "Dockerfile:2") && strstr(e->message, "BOGUS"));
}

/* ---------- step keys (issue 8: collisions served another build's layer) ---------- */

/* One instruction run as the first step of a stage from scratch: its step key, and what it did
 * (the config, the stage's ARG values, RUN's argv and network) as a string. */
typedef struct KeyRig {
	Build b;
	Pass p;
	Stage st;
	StageResult out;
	BuildOptions o;
	Dockerfile *df;
} KeyRig;

static void key_rig_init(KeyRig *k)
{
	*k = (KeyRig){0};
	k->o.progress = PROGRESS_QUIET;
	k->b.o = &k->o;
	k->b.progress = progress_new(PROGRESS_QUIET);
	pthread_mutex_init(&k->b.lock, NULL);
	build_cache_open("keyroot", &k->b.cache, NULL);
	k->p.b = &k->b;
	platform_host(&k->p.platform);
	k->out.platform = k->p.platform;
}

static void key_rig_done(KeyRig *k)
{
	for (size_t i = 0; i < k->b.n_steps; i++) {
		free(k->b.steps[i].stage);
		free(k->b.steps[i].instruction);
		free(k->b.steps[i].reason);
	}
	free(k->b.steps);
	build_cache_free(k->b.cache);
	progress_free(k->b.progress);
	pthread_mutex_destroy(&k->b.lock);
}

/* -1: the instruction is refused (not part of the comparison). */
static int step_of(KeyRig *k, const char *inst, char key[DIGEST_STRING_MAX], char **ret_effect)
{
	_cleanup_free_ char *text = xasprintf("FROM scratch\n%s\n", inst);
	_cleanup_(dockerfile_freep) Dockerfile *df = NULL;
	_cleanup_strv_free_ char **argv = NULL;
	NetworkMode net = NETWORK_PRIVATE;
	int r;

	if (dockerfile_parse("Dockerfile", text, strlen(text), &df, NULL) < 0 || df->n_insts != 2)
		return -1;
	k->b.df = df;
	k->out.conf = image_conf_new_empty(&k->p.platform);
	k->p.expand_budget = EXPAND_MAX_TOTAL;
	StageRun run = {.b = &k->b, .p = &k->p, .st = &k->st, .out = &k->out};
	memcpy(run.chain, "sha256:0000000000000000000000000000000000000000000000000000000000000000",
	       DIGEST_STRING_MAX);
	if (strcmp(df->insts[1].keyword, "RUN") == 0)
		r = run_prepare(&run, &df->insts[1], &argv, &net, NULL);
	else
		r = run_instruction(&run, &df->insts[1], NULL);
	if (r >= 0) {
		StrBuf e = {0};
		_cleanup_free_ char *conf = image_conf_serialize(k->out.conf, 0);
		/* the history line is not an effect: two spellings of one ENV may differ there */
		char *h = strstr(conf, ",\"history\"");
		strbuf_add(&e, conf, h ? (size_t)(h - conf) : strlen(conf));
		for (size_t i = 0; i < run.args.n; i++) {
			strbuf_adds(&e, "\n");
			strbuf_adds(&e, run.args.v[i].key);
			strbuf_adds(&e, run.args.v[i].value ? "=" : " unset");
			strbuf_adds(&e, run.args.v[i].value ? run.args.v[i].value : "");
		}
		for (size_t i = 0; argv && argv[i]; i++) {
			strbuf_adds(&e, "\n\x01");
			strbuf_adds(&e, argv[i]);
		}
		strbuf_adds(&e, "\n");
		strbuf_adds(&e, network_mode_name(net));
		*ret_effect = strbuf_steal(&e);
		memcpy(key, run.step_key, DIGEST_STRING_MAX);
	}
	vars_done(&run.args);
	free(run.reason);
	image_conf_free(k->out.conf);
	k->out.conf = NULL;
	return r < 0 ? -1 : 0;
}

TEST(step_keys_known_collisions)
{
	KeyRig k;
	char a[DIGEST_STRING_MAX], b[DIGEST_STRING_MAX];
	_cleanup_free_ char *ea = NULL, *eb = NULL, *ec = NULL, *ed = NULL, *ee = NULL;

	key_rig_init(&k);
	CHECK(step_of(&k, "ENV MODE=\"safe HARDEN=1\"", a, &ea) == 0);
	CHECK(step_of(&k, "ENV MODE=safe HARDEN=1", b, &eb) == 0);
	CHECK(strcmp(ea, eb) != 0);
	CHECK(strcmp(a, b) != 0);
	free(TAKE_PTR(ea));
	free(TAKE_PTR(eb));
	CHECK(step_of(&k, "ARG MODE=\"safe HARDEN=1\"", a, &ea) == 0);
	CHECK(step_of(&k, "ARG MODE=safe HARDEN=1", b, &eb) == 0);
	CHECK(strcmp(a, b) != 0);
	CHECK(step_of(&k, "RUN [\"/bin/sh\",\"-c\",\"echo a\",\"echo b\\n\"]", a, &ec) == 0);
	CHECK(step_of(&k, "RUN <<EOF\necho a\necho b\nEOF", b, &ed) == 0);
	CHECK(strcmp(ec, ed) != 0);
	CHECK(strcmp(a, b) != 0);
	/* the same instruction gives the same key (nothing of the host or the run in it) */
	CHECK(step_of(&k, "RUN <<EOF\necho a\necho b\nEOF", a, &ee) == 0);
	CHECK(strcmp(a, b) == 0);
	key_rig_done(&k);
}

/* Hundreds of near-identical instructions: two keys are equal only when the instructions did the
 * same thing. */
TEST(step_keys_near_collisions)
{
	static const char *const kv[] = {
	    "A=x",	"A=\"x y\"",  "A=\"x B=y\"", "A='x B=y'", "A=x\\ B=y",
	    "A=",	"A=\"\"",     "B=y",	     "A=x B=y",	  "A=\"x\" B=\"y\"",
	    "A=$B",	"A=\"$B\"",   "A='$B'",	     "A=\\$B",	  "A=\"x\\\"y\"",
	    "A=x\\\"y", "A=\"a\nb\"", "AB=x",	     "A=Bx",	  "A=\"x=y\"",
	};
	static const char *const run[] = {
	    "RUN [\"a b\",\"c\"]",
	    "RUN [\"a\",\"b c\"]",
	    "RUN [\"a\",\"b\",\"c\"]",
	    "RUN [\"a\",\"b\\nc\"]",
	    "RUN [\"a\\nb\",\"c\"]",
	    "RUN [\"a b c\"]",
	    "RUN a b c",
	    "RUN [\"/bin/sh\",\"-c\",\"a b c\"]",
	    "RUN [\"/bin/sh\",\"-c\",\"a\",\"b c\"]",
	    "RUN [\"/bin/sh\",\"-c\",\"a b\",\"c\"]",
	    "RUN --network=none a b c",
	    "RUN --network=host a b c",
	    "RUN <<EOF\na b c\nEOF",
	    "RUN <<EOF\na\nb c\nEOF",
	    "RUN <<EOF\na b\nc\nEOF",
	    "RUN <<-EOF\n\ta b c\nEOF",
	    "RUN <<EOF cat\na b c\nEOF",
	    "RUN cat <<EOF\na b c\nEOF",
	    "RUN [\"\"]",
	    "RUN [\"\",\"\"]",
	    "RUN a\\\n b c",
	    "RUN a  b c",
	};
	static const char *const meta[] = {"ENV", "ARG", "LABEL"};
	char **texts = NULL, **effects = NULL;
	const char **kept = NULL;
	char(*keys)[DIGEST_STRING_MAX] = NULL;
	size_t n = 0, nk = ELEMENTSOF(kv), pairs = 0, same = 0, bad = 0;
	KeyRig k;

	for (size_t m = 0; m < ELEMENTSOF(meta); m++)
		for (size_t i = 0; i < nk; i++)
			for (size_t j = 0; j <= nk; j++)
				strv_consume(
				    &texts, j == nk ? xasprintf("%s %s", meta[m], kv[i])
						    : xasprintf("%s %s %s", meta[m], kv[i], kv[j]));
	for (size_t i = 0; i < ELEMENTSOF(run); i++)
		strv_push(&texts, run[i]);
	strv_push(&texts, "USER a:b");
	strv_push(&texts, "USER \"a:b\"");
	strv_push(&texts, "USER a");
	strv_push(&texts, "ARG A");
	strv_push(&texts, "ARG A B");
	key_rig_init(&k);
	for (size_t i = 0; texts[i]; i++) {
		char *e = NULL;
		keys = xrealloc(keys, (n + 1) * sizeof(*keys));
		if (step_of(&k, texts[i], keys[n], &e) < 0)
			continue;
		effects = xrealloc(effects, (n + 1) * sizeof(char *));
		kept = xrealloc(kept, (n + 1) * sizeof(char *));
		effects[n] = e;
		kept[n++] = texts[i];
	}
	for (size_t i = 0; i < n; i++)
		for (size_t j = i + 1; j < n; j++) {
			pairs++;
			if (strcmp(keys[i], keys[j]) != 0)
				continue;
			same++;
			if (strcmp(effects[i], effects[j]) != 0 && bad++ < 5)
				printf("# same key, different effect: '%s' / '%s'\n", kept[i],
				       kept[j]);
		}
	printf("# %zu instructions, %zu pairs, %zu with equal keys\n", n, pairs, same);
	CHECK(n > 1000);
	CHECK_EQ_INT(bad, 0);
	key_rig_done(&k);
	for (size_t i = 0; i < n; i++)
		free(effects[i]);
	free(effects);
	free(keys);
	free(kept);
	strv_free(texts);
}

/* ---------- host reads (issue 8: Dockerfile symlinks, FIFOs) ---------- */

TEST(dockerfile_resolves_inside_the_context)
{
	_cleanup_error_ KilnError *e = NULL;
	_cleanup_free_ char *d = NULL;
	size_t n = 0;

	put("outside/secret", "TOKEN-abc123 do not print\n");
	put("ctx/real/Dockerfile.in", "FROM scratch\n");
	put("ctx/Dockerfile.real", "FROM busybox\n");
	/* a symlink leading out is refused without reading the target */
	CHECK(symlink("../outside/secret", "ctx/Dockerfile") == 0);
	CHECK(build_dockerfile_read("ctx", NULL, &d, &n, &e) == -EXDEV);
	CHECK(e && strstr(e->message, "'ctx/Dockerfile' is a symlink that does not resolve inside "
				      "'ctx'"));
	CHECK(e && !strstr(e->message, "TOKEN"));
	kiln_error_free(TAKE_PTR(e));
	/* an absolute symlink resolves against the context, as BuildKit does */
	unlink("ctx/Dockerfile");
	CHECK(symlink("/Dockerfile.real", "ctx/Dockerfile") == 0);
	CHECK(build_dockerfile_read("ctx", NULL, &d, &n, NULL) == 0);
	CHECK_EQ_STR(d, "FROM busybox\n");
	free(TAKE_PTR(d));
	/* -f inside the context resolves inside it too; outside it is the user's choice */
	CHECK(symlink("../../outside/secret", "ctx/real/Dockerfile") == 0);
	CHECK(build_dockerfile_read("ctx", "ctx/real/Dockerfile", &d, &n, &e) == -EXDEV);
	kiln_error_free(TAKE_PTR(e));
	CHECK(build_dockerfile_read("ctx", "ctx/real/Dockerfile.in", &d, &n, NULL) == 0);
	free(TAKE_PTR(d));
	CHECK(build_dockerfile_read("ctx", "outside/secret", &d, &n, NULL) == 0);
	CHECK(d && strstr(d, "TOKEN"));
	free(TAKE_PTR(d));
	CHECK(build_dockerfile_read("ctx", "ctx/missing", &d, &n, &e) == -ENOENT);
}

TEST(dockerfile_fifo_and_size_refused)
{
	_cleanup_error_ KilnError *e = NULL;
	_cleanup_free_ char *d = NULL, *big = xcalloc(DOCKERFILE_MAX_SIZE + 2, 1);
	BuildContext *c = NULL;
	size_t n = 0;

	mkdir_p("ctx", 0755, NULL);
	CHECK(mkfifo("ctx/Dockerfile", 0644) == 0);
	CHECK(build_dockerfile_read("ctx", NULL, &d, &n, &e) == -EINVAL);
	CHECK(e && strstr(e->message, "'ctx/Dockerfile' is a FIFO, not a regular file"));
	kiln_error_free(TAKE_PTR(e));
	memset(big, 'x', DOCKERFILE_MAX_SIZE + 1);
	put("ctx2/Dockerfile", big);
	CHECK(build_dockerfile_read("ctx2", NULL, &d, &n, &e) == -EFBIG);
	kiln_error_free(TAKE_PTR(e));
	/* .dockerignore: a FIFO and a symlink leading out are errors, a missing one is none */
	CHECK(mkfifo("ctx/.dockerignore", 0644) == 0);
	CHECK(build_context_open("ctx", NULL, &c, &e) < 0);
	CHECK(e && strstr(e->message, "'ctx/.dockerignore' is a FIFO"));
	kiln_error_free(TAKE_PTR(e));
	put("outside/ignore", "TOKEN-xyz\n");
	CHECK(symlink("../outside/ignore", "ctx2/.dockerignore") == 0);
	CHECK(build_context_open("ctx2", NULL, &c, &e) == -EXDEV);
	CHECK(e && !strstr(e->message, "TOKEN"));
	kiln_error_free(TAKE_PTR(e));
	put("ctx3/x", "x");
	CHECK(build_context_open("ctx3", NULL, &c, NULL) == 0);
	build_context_free(c);
	/* Dockerfile.dockerignore next to an explicit Dockerfile */
	put("ctx3/d/Dockerfile", "FROM scratch\n");
	CHECK(mkfifo("ctx3/d/Dockerfile.dockerignore", 0644) == 0);
	CHECK(build_context_open("ctx3", "ctx3/d/Dockerfile", &c, &e) == -EINVAL);
}

TEST(image_user_db_fifo_refused)
{
	_cleanup_error_ KilnError *e = NULL;
	uid_t uid;
	gid_t gid;
	_cleanup_free_ gid_t *groups = NULL;
	size_t n = 0;

	mkdir_p("root/etc", 0755, NULL);
	CHECK(mkfifo("root/etc/passwd", 0644) == 0);
	put("root/etc/group", "root:x:0:\n");
	_cleanup_close_ int r = open("root", O_RDONLY | O_DIRECTORY);
	CHECK(image_user_resolve(r, "someone", &uid, &gid, &groups, &n, &e) == -EINVAL);
	CHECK(e && strstr(e->message, "image: '/etc/passwd' is a FIFO, not a regular file"));
	kiln_error_free(TAKE_PTR(e));
	CHECK(image_chown_resolve(r, "someone", &uid, &gid, &e) == -EINVAL);
	kiln_error_free(TAKE_PTR(e));
	unlink("root/etc/passwd");
	unlink("root/etc/group");
	put("root/etc/passwd", "someone:x:7:8::/:/bin/sh\n");
	CHECK(mkfifo("root/etc/group", 0644) == 0);
	CHECK(image_user_resolve(r, "someone", &uid, &gid, &groups, &n, &e) == -EINVAL);
	CHECK(e && strstr(e->message, "image: '/etc/group' is a FIFO"));
	kiln_error_free(TAKE_PTR(e));
	CHECK(image_chown_resolve(r, "someone:grp", &uid, &gid, &e) == -EINVAL);
	kiln_error_free(TAKE_PTR(e));
	/* a passwd symlink leading out of the root resolves inside it */
	unlink("root/etc/group");
	unlink("root/etc/passwd");
	put("outside/passwd", "someone:x:4242:4242::/:/bin/sh\n");
	CHECK(symlink("../../../outside/passwd", "root/etc/passwd") == 0);
	CHECK(image_user_resolve(r, "someone", &uid, &gid, NULL, NULL, &e) == -ENOENT);
	CHECK(image_chown_resolve(r, "7", &uid, &gid, NULL) == 0);
	CHECK(uid == 7 && gid == 7);
}

TEST(cache_import_fifo_refused)
{
	_cleanup_error_ KilnError *e = NULL;
	BuildCache *c = NULL;
	Store *s = NULL;
	size_t n = 0;
	const char *h = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
	_cleanup_free_ char *json = xasprintf(
	    "{\"version\":1,\"entries\":{\"%s\":{\"layer\":{\"mediaType\":\"" MT_OCI_LAYER_GZIP
	    "\",\"digest\":"
	    "\"sha256:%s\",\"size\":1,\"diff_id\":\"sha256:%s\"}}}}",
	    h, h, h);
	_cleanup_free_ char *blob = xasprintf("cdir/blobs/sha256/%s", h);

	CHECK(store_open("sroot", &s, NULL) == 0);
	CHECK(build_cache_open("sroot", &c, NULL) == 0);
	mkdir_p("cdir/blobs/sha256", 0755, NULL);
	CHECK(mkfifo("cdir/kiln-cache.json", 0644) == 0);
	CHECK(build_cache_import(c, s, "cdir", &n, &e) < 0);
	CHECK(e && strstr(e->message, "not a kiln cache"));
	kiln_error_free(TAKE_PTR(e));
	unlink("cdir/kiln-cache.json");
	put("cdir/kiln-cache.json", json);
	CHECK(mkfifo(blob, 0644) == 0);
	CHECK(build_cache_import(c, s, "cdir", &n, &e) == -EINVAL);
	CHECK(e && strstr(e->message, "is a FIFO, not a regular file"));
	build_cache_free(c);
	store_free(s);
}

int main(void)
{
	RUN(copy_dir_contents_and_file_rules);
	RUN(copy_globs_sorted_and_need_dir_dest);
	RUN(copy_outside_context_refused);
	RUN(copy_keeps_inner_symlinks_and_follows_top_level);
	RUN(copy_dest_symlink_stays_in_root);
	RUN(copy_honours_dockerignore);
	RUN(user_lookup);
	RUN(config_serialisation_is_deterministic);
	RUN(build_errors_name_line_and_thing);
	RUN(step_keys_known_collisions);
	RUN(step_keys_near_collisions);
	RUN(dockerfile_resolves_inside_the_context);
	RUN(dockerfile_fifo_and_size_refused);
	RUN(image_user_db_fifo_refused);
	RUN(cache_import_fifo_refused);
	return tap_done();
}
