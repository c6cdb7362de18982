#include "builder/build-internal.h"

/* ---------- instructions ---------- */

static char *step_name(StageRun *r, const DfInstruction *in)
{
	char plat[96];
	const char *text = in->original ? in->original : in->keyword;

	platform_format(&r->out->platform, plat, sizeof(plat));
	if (strcmp(in->keyword, "RUN") == 0 &&
	    !platform_runs_natively(&r->b->build_platform, &r->out->platform))
		strncat(plat, " emulated", sizeof(plat) - strlen(plat) - 1);
	if (r->st->name)
		return xasprintf("[%s %s %u/%u] %s", plat, r->st->name, r->step_no, r->n_steps,
				 text);
	return xasprintf("[%s stage-%zu %u/%u] %s", plat, r->st->index, r->step_no, r->n_steps,
			 text);
}

static int expand1(StageRun *r, const DfInstruction *in, const char *word, char **ret,
		   KilnError **err)
{
	int k =
	    expand_word(word, r->b->df->escape, lookup_stage, r, &r->p->expand_budget, ret, err);

	return k < 0 ? inst_wrap(r->b, in, k, err) : 0;
}

/* The words of COPY/ADD/EXPOSE/VOLUME-like instructions, expanded. */
static int inst_words(StageRun *r, const DfInstruction *in, bool expand, char ***ret,
		      KilnError **err)
{
	_cleanup_strv_free_ char **out = NULL;
	int k;

	if (in->json) {
		for (size_t i = 0; in->args && in->args[i]; i++) {
			char *w = NULL;
			if (expand) {
				k = expand1(r, in, in->args[i], &w, err);
				if (k < 0)
					return k;
			} else {
				w = xstrdup(in->args[i]);
			}
			strv_consume(&out, w);
		}
	} else if (in->args && in->args[0]) {
		k = expand_words(in->args[0], r->b->df->escape, lookup_stage, r,
				 &r->p->expand_budget, &out, err);
		if (k < 0)
			return inst_wrap(r->b, in, k, err);
	}
	*ret = TAKE_PTR(out);
	return 0;
}

static int flag_expanded(StageRun *r, const DfInstruction *in, const char *name, char **ret,
			 KilnError **err)
{
	const char *v = df_instruction_flag(in, name);

	*ret = NULL;
	if (!v)
		return 0;
	return expand1(r, in, v, ret, err);
}

static int refuse_flags(Build *b, const DfInstruction *in, const char *const *names,
			KilnError **err)
{
	for (size_t i = 0; names[i]; i++)
		if (df_instruction_flag(in, names[i]))
			return inst_error(b, in, ENOTSUP, err,
					  "%s --%s is not supported by kiln yet", in->keyword,
					  names[i]);
	return 0;
}

static char *workdir_join(StageRun *r, const char *path)
{
	const char *wd = image_conf_get_string(r->out->conf, "WorkingDir");
	_cleanup_free_ char *joined = NULL, *clean = NULL;

	if (path[0] == '/')
		joined = xstrdup(path);
	else
		joined = xasprintf("%s/%s", wd && *wd ? wd : "/", path);
	/* Lexically cleaned; '..' above '/' stays at '/', as in path.Clean. */
	if (path_clean_relative(joined, &clean) < 0)
		clean = xstrdup(".");
	if (strcmp(clean, ".") == 0)
		return xstrdup("/");
	return xasprintf("/%s", clean);
}

static char **shell_argv(StageRun *r, const char *cmd)
{
	_cleanup_strv_free_ char **shell = image_conf_get_strv(r->out->conf, "Shell");
	char **argv = NULL;

	if (shell && shell[0]) {
		argv = TAKE_PTR(shell);
	} else {
		strv_push(&argv, "/bin/sh");
		strv_push(&argv, "-c");
	}
	strv_push(&argv, cmd);
	return argv;
}

char *strv_join(char *const *v, const char *sep)
{
	size_t len = 1;

	for (size_t i = 0; v && v[i]; i++)
		len += strlen(v[i]) + strlen(sep);
	char *s = xcalloc(len, 1);
	for (size_t i = 0; v && v[i]; i++) {
		if (i)
			strcat(s, sep);
		strcat(s, v[i]);
	}
	return s;
}

static char *json_strv(char *const *v)
{
	json_t *a = json_array();

	for (size_t i = 0; v && v[i]; i++)
		json_array_append_new(a, json_string(v[i]));
	char *s = json_dumps(a, JSON_COMPACT);
	json_decref(a);
	return s ? s : xstrdup("[]");
}

static bool heredoc_only(const char *text)
{
	while (*text == ' ' || *text == '\t')
		text++;
	if (strncmp(text, "<<", 2) != 0)
		return false;
	text += 2;
	if (*text == '-')
		text++;
	if (*text == '"' || *text == '\'')
		text++;
	while (*text && *text != ' ' && *text != '\t')
		text++;
	while (*text == ' ' || *text == '\t')
		text++;
	return *text == 0;
}

/* RUN's command: a heredoc that is the whole command is the script; otherwise the shell gets the
 * command line followed by the heredoc bodies, as it would read them from a script. */
static char *run_command_text(const DfInstruction *in)
{
	const char *text = in->args && in->args[0] ? in->args[0] : "";

	if (in->n_heredocs == 1 && heredoc_only(text))
		return xstrdup(in->heredocs[0].content);
	if (in->n_heredocs == 0)
		return xstrdup(text);
	char *s = xstrdup(text);
	for (size_t i = 0; i < in->n_heredocs; i++) {
		char *n = xasprintf("%s\n%s%s", s, in->heredocs[i].content, in->heredocs[i].name);
		free(s);
		s = n;
	}
	return s;
}

/* The sandbox binds /etc/hosts and /etc/resolv.conf; when the image lacks them it creates the
 * mount points and removes them afterwards, but overlayfs has copied /etc up by then. An upper dir
 * that is empty, not opaque and has the lower dir's mode and owner changed nothing: drop it so the
 * layer does not carry it. */
static void prune_copied_up_dir(Mounted *m, const char *name, const struct stat *before)
{
	_cleanup_free_ char *upper = xasprintf("%s/u", m->dir);
	_cleanup_close_ int ufd = open(upper, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	struct stat st;
	char v[8];

	if (ufd < 0 || fstatat(ufd, name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISDIR(st.st_mode))
		return;
	if (st.st_mode != before->st_mode || st.st_uid != before->st_uid ||
	    st.st_gid != before->st_gid)
		return;
	_cleanup_free_ char *path = xasprintf("%s/%s", upper, name);
	if (lgetxattr(path, "user.overlay.opaque", v, sizeof(v)) > 0)
		return;
	unlinkat(ufd, name, AT_REMOVEDIR); /* fails, as it should, when not empty */
}

typedef struct RunOutput {
	Progress *p;
	unsigned step;
} RunOutput;

static void run_output(void *ud, int stream, const char *buf, size_t len)
{
	RunOutput *o = ud;

	(void)stream;
	progress_step_output(o->p, o->step, buf, len);
}

static char **run_env(StageRun *r)
{
	char **env = image_conf_env_strv(r->out->conf);
	bool has_path = image_conf_env_get(r->out->conf, "PATH") != NULL;

	for (size_t i = 0; i < r->args.n; i++) {
		const Var *v = &r->args.v[i];
		if (!v->value || image_conf_env_get(r->out->conf, v->key))
			continue;
		strv_consume(&env, xasprintf("%s=%s", v->key, v->value));
	}
	if (!has_path)
		strv_consume(&env, xasprintf("PATH=%s", DEFAULT_PATH));
	return env;
}

/* What a RUN step executes: each argv element on its own (joined they were ambiguous), the form,
 * the network asked for and the ulimits; env, user, workdir and shell are in the chain. */
static void run_key(StageRun *r, const DfInstruction *in, char *const *argv, NetworkMode net)
{
	_cleanup_free_ char *net_field = xasprintf("network=%s", network_mode_name(net));
	_cleanup_free_ char *ulimits = limits_ulimits_string(&r->b->o->limits);
	CacheKey k;

	cache_key_begin(&k, r->chain);
	cache_key_add(&k, "RUN");
	cache_key_add(&k, in->json ? "json" : "shell");
	cache_key_add_strv(&k, argv);
	cache_key_add(&k, net_field);
	/* BuildKit's too: a step may print its limits */
	if (ulimits)
		cache_key_add(&k, ulimits);
	cache_key_end(&k, r->step_key);
}

int run_prepare(StageRun *r, const DfInstruction *in, char ***ret_argv, NetworkMode *ret_net,
		KilnError **err)
{
	static const char *const refused[] = {"mount", "security", NULL};
	Build *b = r->b;
	_cleanup_strv_free_ char **argv = NULL;
	int k;

	k = refuse_flags(b, in, refused, err);
	if (k < 0)
		return k;
	const char *net_flag = df_instruction_flag(in, "network");
	NetworkMode net = b->o->network;
	if (net_flag && network_mode_parse(net_flag, b->o->network, &net) < 0)
		return inst_error(b, in, EINVAL, err,
				  "RUN --network=%s: expected default, none or host", net_flag);
	if (in->json) {
		argv = strv_copy(in->args);
		if (!argv || !argv[0])
			return inst_error(b, in, EINVAL, err, "RUN needs a command");
	} else {
		_cleanup_free_ char *cmd = run_command_text(in);
		argv = shell_argv(r, cmd);
	}
	run_key(r, in, argv, net);
	*ret_argv = TAKE_PTR(argv);
	*ret_net = net;
	return 0;
}

static const char *run_resolv_path(const Build *b, NetworkMode net)
{
	if (net == NETWORK_PRIVATE)
		return b->resolv_private;
	if (net == NETWORK_NONE || access("/etc/resolv.conf", R_OK) < 0)
		return NULL;
	return "/etc/resolv.conf";
}

/* Runs the step's command with its network, limits and cgroup; a non-zero exit is an error
 * naming the command (and the memory limit when that is what killed it). */
static int run_sandboxed(StageRun *r, const DfInstruction *in, unsigned step, ContainerSpec *spec,
			 NetworkMode asked, const char *shown, KilnError **err)
{
	Build *b = r->b;
	_cleanup_(limits_step_freep) LimitsStep *cg = NULL;
	NetworkMode net = build_network(b, asked);
	RunOutput out = {.p = b->progress, .step = step};
	int status = 0, k;

	if (b->cgroup && (k = limits_step_new(b->cgroup, &b->o->limits, &cg, err)) < 0)
		return inst_wrap(b, in, k, err);
	spec->network_none = net == NETWORK_NONE;
	spec->network_private = net == NETWORK_PRIVATE;
	spec->hosts_path = net == NETWORK_NONE || access("/etc/hosts", R_OK) ? NULL : "/etc/hosts";
	spec->resolv_path = run_resolv_path(b, net);
	spec->limits = &b->o->limits;
	spec->cgroup = cg;
	spec->output = run_output;
	spec->output_userdata = &out;
	k = container_run(spec, &status, err);
	if (k < 0)
		return inst_wrap(b, in, k, err);
	if (status != 0)
		return inst_error(
		    b, in, EIO, err, "RUN %s: process exited with exit code %d%s", shown, status,
		    cg && limits_step_oom_killed(cg) ? " (killed by the --memory limit)" : "");
	return 0;
}

static int do_run(StageRun *r, const DfInstruction *in, unsigned step, KilnError **err)
{
	Build *b = r->b;
	_cleanup_strv_free_ char **argv = NULL, **env = NULL;
	_cleanup_free_ char *created = NULL;
	_cleanup_free_ gid_t *groups = NULL;
	Mounted m = {.fd = -1};
	size_t n_groups = 0;
	NetworkMode net;
	uid_t uid;
	gid_t gid;
	int k;

	k = run_prepare(r, in, &argv, &net, err);
	if (k < 0)
		return k;
	_cleanup_free_ char *joined = strv_join(argv, " ");
	created = xasprintf("RUN %s", joined);
	k = step_cache_lookup(r, NULL, NULL, created, err);
	if (k != 0)
		return k < 0 ? inst_wrap(b, in, k, err) : 0;
	k = mount_layers(b, r->out->layers, r->out->n_layers, &m, err);
	if (k < 0)
		return k;
	_cleanup_free_ char *wd = workdir_join(r, ".");
	k = rootfs_mkdir_p(m.fd, wd, 0755, 0, 0, NULL, err);
	if (k >= 0)
		k = image_user_resolve(m.fd, image_conf_get_string(r->out->conf, "User"), &uid,
				       &gid, &groups, &n_groups, err);
	if (k < 0) {
		mounted_release(&m);
		return inst_wrap(b, in, k, err);
	}
	if (!platform_runs_natively(&b->build_platform, &r->out->platform)) {
		EmulationKind ek = EMULATION_NATIVE;
		k = binfmt_ensure(&r->out->platform, b->o->qemu_dir, &ek, err);
		if (k < 0) {
			mounted_release(&m);
			return inst_wrap(b, in, k, err);
		}
		r->emulated = ek != EMULATION_NATIVE;
	}
	env = run_env(r);
	struct stat etc_before;
	bool had_etc = fstatat(m.fd, "etc", &etc_before, AT_SYMLINK_NOFOLLOW) == 0 &&
		       S_ISDIR(etc_before.st_mode);
	ContainerSpec spec = {
	    .rootfs = m.merged,
	    .argv = argv,
	    .envp = env,
	    .cwd = wd,
	    .uid = uid,
	    .gid = gid,
	    .groups = groups,
	    .n_groups = n_groups,
	    .hostname = "kiln",
	    .ret_cpu_seconds = &r->cpu_s,
	};
	k = run_sandboxed(r, in, step, &spec, net, in->json ? joined : argv[strv_length(argv) - 1],
			  err);
	if (k < 0) {
		mounted_release(&m);
		return k;
	}
	k = mounted_unmount(&m, err);
	if (k < 0) {
		mounted_release(&m);
		return k;
	}
	if (had_etc)
		prune_copied_up_dir(&m, "etc", &etc_before);
	k = step_commit(r, &m, created, err);
	if (k < 0)
		return inst_wrap(b, in, k, err);
	return step_cache_record(r, NULL, NULL, err);
}

/* A source for COPY --from: a stage, a named build context (image or dir), or a store image. */
typedef struct CopySource {
	Mounted m;
	int fd;
	bool from_context;
	OciImage *img;
	StageResult tmp; /* layers of an image source */
} CopySource;

static void copy_source_done(CopySource *s)
{
	mounted_release(&s->m);
	if (s->from_context && s->fd >= 0)
		close(s->fd);
	oci_image_free(s->img);
	result_reset(&s->tmp);
}

static int copy_source_open(StageRun *r, const DfInstruction *in, const char *from, CopySource *s,
			    KilnError **err)
{
	Build *b = r->b;
	int k;

	*s = (CopySource){.fd = -1, .m = {.fd = -1}};
	if (!from) {
		s->fd = build_context_fd(b->ctx);
		s->from_context = false;
		return 0;
	}
	Stage *st = stage_find(b, from);
	if (st) {
		if (st == r->st)
			return inst_error(b, in, EINVAL, err,
					  "COPY --from='%s' refers to its own stage", from);
		StageResult *res = NULL;
		k = stage_build(r->p, st, &res, err);
		if (k < 0)
			return k;
		k = mount_layers(b, res->layers, res->n_layers, &s->m, err);
		s->fd = s->m.fd;
		return k;
	}
	const char *src = build_context_source(b, from);
	if (src && is_local_dir_context(src)) {
		s->fd = open(src, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (s->fd < 0)
			return inst_error(b, in, errno, err, "build context '%s': open '%s': %s",
					  from, src, strerror(errno));
		s->from_context = true;
		return 0;
	}
	k = image_lookup(b, r->st, from, &r->out->platform, &s->img, err);
	if (k < 0) {
		if (k == -ENOENT && !src) {
			/* The store's "not found" is replaced by what COPY --from can name. */
			if (err) {
				kiln_error_free(*err);
				*err = NULL;
			}
			return inst_error(b, in, ENOENT, err,
					  "COPY --from='%s': no stage, build context or image of "
					  "that name",
					  from);
		}
		return inst_wrap(b, in, k, err);
	}
	s->tmp.platform = r->out->platform;
	k = stage_from_image(b, &s->tmp, s->img, err);
	if (k < 0)
		return k;
	k = mount_layers(b, s->tmp.layers, s->tmp.n_layers, &s->m, err);
	s->fd = s->m.fd;
	return k;
}

static bool is_url(const char *s)
{
	return strncmp(s, "http://", 7) == 0 || strncmp(s, "https://", 8) == 0 ||
	       strncmp(s, "git@", 4) == 0 || strstr(s, ".git#") != NULL;
}

static const DfHeredoc *heredoc_for(const DfInstruction *in, const char *word)
{
	if (strncmp(word, "<<", 2) != 0)
		return NULL;
	word += 2;
	if (*word == '-')
		word++;
	_cleanup_free_ char *name = xstrdup(word);
	size_t n = strlen(name);
	if (n >= 2 && (name[0] == '"' || name[0] == '\'') && name[n - 1] == name[0]) {
		memmove(name, name + 1, n - 2);
		name[n - 2] = 0;
	}
	for (size_t i = 0; i < in->n_heredocs; i++)
		if (strcmp(in->heredocs[i].name, name) == 0)
			return &in->heredocs[i];
	return NULL;
}

static int copy_heredoc(StageRun *r, const DfInstruction *in, const DfHeredoc *h, int root,
			const char *dest, const CopyOptions *co, KilnError **err)
{
	_cleanup_free_ char *content = NULL, *target = NULL, *name = NULL;
	_cleanup_close_ int pdir = -1, fd = -1;
	int k;

	if (h->expand) {
		k = expand1(r, in, h->content, &content, err);
		if (k < 0)
			return k;
	} else {
		content = xstrdup(h->content);
	}
	size_t dl = strlen(dest);
	target = dest[dl - 1] == '/' ? xasprintf("%s%s", dest, h->name) : xstrdup(dest);
	_cleanup_free_ char *parent = xstrdup(target);
	*strrchr(parent, '/') = 0;
	k = rootfs_mkdir_p(root, *parent ? parent : "/", 0755, co->set_owner ? co->uid : 0,
			   co->set_owner ? co->gid : 0, NULL, err);
	if (k >= 0)
		k = rootfs_open_parent(root, target, &pdir, &name, err);
	if (k < 0)
		return inst_wrap(r->b, in, k, err);
	unlinkat(pdir, name, 0);
	fd = openat(pdir, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
	if (fd < 0 || write_all(fd, content, strlen(content)) < 0 ||
	    fchown(fd, co->set_owner ? co->uid : 0, co->set_owner ? co->gid : 0) < 0 ||
	    (co->set_mode && fchmod(fd, co->mode) < 0))
		return inst_error(r->b, in, errno, err, "write '%s': %s", target, strerror(errno));
	return 0;
}

static int parse_chmod(const char *s, mode_t *ret)
{
	char *end;
	unsigned long v = strtoul(s, &end, 8);

	if (!*s || *end || v > 07777)
		return -EINVAL;
	*ret = (mode_t)v;
	return 0;
}

static void cache_key_add_opt(CacheKey *k, const char *s)
{
	char *const one[] = {(char *)s, NULL};

	cache_key_add_strv(k, s ? one : NULL);
}

/* A COPY/ADD key: the keyword, form, --from/--chown/--chmod (each may be absent), every word
 * after expansion, then the heredocs (name, expansion, content) and what the sources hold (a
 * canonical JSON manifest). Without the last two it is the step's slot. */
static void copy_key(StageRun *r, const DfInstruction *in, const char *const flags[3],
		     char *const *words, char *const *heredocs, json_t *sources,
		     char out[DIGEST_STRING_MAX])
{
	CacheKey k;

	cache_key_begin(&k, r->chain);
	cache_key_add(&k, in->keyword);
	cache_key_add(&k, in->json ? "json" : "shell");
	for (size_t i = 0; i < 3; i++)
		cache_key_add_opt(&k, flags[i]);
	cache_key_add_strv(&k, words);
	if (sources) {
		_cleanup_free_ char *dump = json_dumps(sources, JSON_COMPACT | JSON_SORT_KEYS);
		cache_key_add_strv(&k, heredocs);
		cache_key_add(&k, dump ? dump : "");
	}
	cache_key_end(&k, out);
}

static int do_copy(StageRun *r, const DfInstruction *in, bool add, KilnError **err)
{
	static const char *const refused_copy[] = {"link", "parents", "exclude", NULL};
	static const char *const refused_add[] = {"link", "checksum", "keep-git-dir", "exclude",
						  NULL};
	Build *b = r->b;
	_cleanup_strv_free_ char **words = NULL, **srcs = NULL;
	_cleanup_free_ char *from = NULL, *chown_s = NULL, *chmod_s = NULL, *dest = NULL;
	_cleanup_free_ char *created = NULL, *joined = NULL;
	CopySource src = {.fd = -1, .m = {.fd = -1}};
	Mounted m = {.fd = -1};
	json_t *sources = NULL;
	_cleanup_strv_free_ char **heredocs = NULL;
	char slot[DIGEST_STRING_MAX];
	int k;

	k = refuse_flags(b, in, add ? refused_add : refused_copy, err);
	if (k < 0)
		return k;
	if ((k = flag_expanded(r, in, "from", &from, err)) < 0 ||
	    (k = flag_expanded(r, in, "chown", &chown_s, err)) < 0 ||
	    (k = flag_expanded(r, in, "chmod", &chmod_s, err)) < 0)
		return k;
	if (add && from)
		return inst_error(b, in, EINVAL, err, "ADD does not take --from");
	k = inst_words(r, in, true, &words, err);
	if (k < 0)
		return k;
	size_t n = strv_length(words);
	if (n < 2)
		return inst_error(b, in, EINVAL, err,
				  "%s needs at least one source and a destination", in->keyword);
	uint64_t devices_skipped = 0;
	CopyOptions co = {
	    .mtime = from ? -1 : b->o->epoch,
	    .extract_archives = add,
	    .devices_skipped = &devices_skipped,
	    .what = in->keyword,
	    .max_bytes = build_max_layer_bytes(b->o),
	    .max_entries = build_max_layer_entries(b->o),
	};
	if (chmod_s && parse_chmod(chmod_s, &co.mode) < 0)
		return inst_error(b, in, EINVAL, err, "invalid --chmod '%s': expected octal mode",
				  chmod_s);
	co.set_mode = chmod_s != NULL;
	const char *d = words[n - 1];
	dest = workdir_join(r, d);
	size_t dl = strlen(d);
	if ((dl && d[dl - 1] == '/') || strcmp(d, ".") == 0 ||
	    (dl >= 2 && strcmp(d + dl - 2, "/.") == 0)) {
		char *t = strcmp(dest, "/") == 0 ? xstrdup("/") : xasprintf("%s/", dest);
		free(dest);
		dest = t;
	}
	joined = strv_join(words, " ");
	created = xasprintf("%s %s%s%s", in->keyword, from ? "--from=" : "", from ? from : "",
			    from ? " " : "");
	{
		char *t = xasprintf("%s%s", created, joined);
		free(created);
		created = t;
	}
	k = copy_source_open(r, in, from, &src, err);
	if (k < 0)
		goto out;
	co.from_context = src.from_context || !from;
	co.ignore = from ? NULL : build_context_ignore(b->ctx);
	co.set_owner = !from || chown_s;
	for (size_t i = 0; i + 1 < n; i++) {
		const DfHeredoc *h = heredoc_for(in, words[i]);
		if (h) {
			strv_push(&heredocs, h->name);
			strv_push(&heredocs, h->expand ? "expand" : "verbatim");
			strv_push(&heredocs, h->content);
			continue;
		}
		if (is_url(words[i])) {
			k = inst_error(b, in, ENOTSUP, err,
				       "%s from a URL or git repository is not supported by kiln "
				       "yet: '%s'",
				       in->keyword, words[i]);
			goto out;
		}
		strv_push(&srcs, words[i]);
	}
	if (srcs && strv_length(srcs) > 1 && dest[strlen(dest) - 1] != '/') {
		k = inst_error(b, in, EINVAL, err,
			       "%s with more than one source needs a destination ending in '/': "
			       "'%s'",
			       in->keyword, d);
		goto out;
	}
	/* The key: what the copy would write (content, path, mode, owner of every source),
	 * hashed without copying, so a warm build only reads the context. */
	sources = json_object();
	if (srcs) {
		json_decref(sources);
		sources = NULL;
		k = copy_manifest(src.fd, srcs, &co, &sources, err);
		if (k < 0) {
			k = inst_wrap(b, in, k, err);
			goto out;
		}
	}
	copy_key(r, in, (const char *const[]){from, chown_s, chmod_s}, words, NULL, NULL, slot);
	copy_key(r, in, (const char *const[]){from, chown_s, chmod_s}, words, heredocs, sources,
		 r->step_key);
	k = step_cache_lookup(r, slot, sources, created, err);
	if (k != 0) {
		if (k < 0)
			k = inst_wrap(b, in, k, err);
		goto out;
	}
	k = mount_layers(b, r->out->layers, r->out->n_layers, &m, err);
	if (k < 0)
		goto out;
	if (chown_s) {
		k = image_chown_resolve(m.fd, chown_s, &co.uid, &co.gid, err);
		if (k < 0) {
			k = inst_wrap(b, in, k, err);
			goto out;
		}
	}
	for (size_t i = 0; i + 1 < n; i++) {
		const DfHeredoc *h = heredoc_for(in, words[i]);
		if (h && (k = copy_heredoc(r, in, h, m.fd, dest, &co, err)) < 0)
			goto out;
	}
	if (srcs) {
		k = copy_into(src.fd, srcs, m.fd, dest, &co, err);
		if (k < 0) {
			k = inst_wrap(b, in, k, err);
			goto out;
		}
	}
	if (devices_skipped)
		progress_note(b->progress,
			      "warning: %s:%u: ADD: %llu device node%s left out of the extracted "
			      "archive: a user namespace cannot create them",
			      b->df->filename, in->line, (unsigned long long)devices_skipped,
			      devices_skipped == 1 ? "" : "s");
	copy_source_done(&src);
	k = step_commit(r, &m, created, err);
	if (k < 0)
		k = inst_wrap(b, in, k, err);
	else
		k = step_cache_record(r, slot, sources, err);
	json_decref(sources);
	return k;
out:
	json_decref(sources);
	mounted_release(&m);
	copy_source_done(&src);
	return k < 0 ? k : 0;
}

static int do_workdir(StageRun *r, const DfInstruction *in, KilnError **err)
{
	_cleanup_free_ char *w = NULL, *path = NULL, *created = NULL;
	Mounted m = {.fd = -1};
	int k;

	k = expand1(r, in, in->args && in->args[0] ? in->args[0] : "", &w, err);
	if (k < 0)
		return k;
	if (!*w)
		return inst_error(r->b, in, EINVAL, err, "WORKDIR needs a path");
	path = workdir_join(r, w);
	image_conf_set_string(r->out->conf, "WorkingDir", path);
	created = xasprintf("WORKDIR %s", path);
	{
		const char *parts[] = {"WORKDIR", path};
		cache_key(r->step_key, r->chain, parts, ELEMENTSOF(parts));
	}
	k = step_cache_lookup(r, NULL, NULL, created, err);
	if (k != 0)
		return k < 0 ? inst_wrap(r->b, in, k, err) : 0;
	k = mount_layers(r->b, r->out->layers, r->out->n_layers, &m, err);
	if (k < 0)
		return k;
	k = rootfs_mkdir_p(m.fd, path, 0755, 0, 0, NULL, err);
	if (k < 0) {
		mounted_release(&m);
		return inst_wrap(r->b, in, k, err);
	}
	k = step_commit(r, &m, created, err);
	return k < 0 ? k : step_cache_record(r, NULL, NULL, err);
}

static int64_t parse_duration_ns(const char *s, bool *ok)
{
	int64_t total = 0;

	*ok = *s != 0;
	while (*s && *ok) {
		char *end;
		double v = strtod(s, &end);
		if (end == s) {
			*ok = false;
			break;
		}
		double mult;
		if (strncmp(end, "ns", 2) == 0)
			mult = 1, end += 2;
		else if (strncmp(end, "us", 2) == 0)
			mult = 1e3, end += 2;
		else if (strncmp(end, "ms", 2) == 0)
			mult = 1e6, end += 2;
		else if (*end == 's')
			mult = 1e9, end += 1;
		else if (*end == 'm')
			mult = 60e9, end += 1;
		else if (*end == 'h')
			mult = 3600e9, end += 1;
		else {
			*ok = false;
			break;
		}
		total += (int64_t)(v * mult);
		s = end;
	}
	return total;
}

static int do_healthcheck(StageRun *r, const DfInstruction *in, KilnError **err)
{
	static const char *const dur[] = {"interval", "timeout", "start-period", "start-interval"};
	static const char *const keys[] = {"Interval", "Timeout", "StartPeriod", "StartInterval"};
	json_t *hc = json_object(), *test = json_array();
	const char *kind = in->args && in->args[0] ? in->args[0] : "";

	/* The parser gives ["NONE"], or ["CMD", shell text] / ["CMD", argv...] for the JSON form.
	 */
	if (strcmp(kind, "NONE") == 0) {
		json_array_append_new(test, json_string("NONE"));
	} else if (strcmp(kind, "CMD") == 0 && in->args[1]) {
		json_array_append_new(test, json_string(in->json ? "CMD" : "CMD-SHELL"));
		for (size_t i = 1; in->args[i]; i++)
			json_array_append_new(test, json_string(in->args[i]));
	} else {
		json_decref(hc);
		json_decref(test);
		return inst_error(r->b, in, EINVAL, err,
				  "HEALTHCHECK needs 'CMD command' or 'NONE'");
	}
	json_object_set_new(hc, "Test", test);
	for (size_t i = 0; i < ELEMENTSOF(dur); i++) {
		const char *v = df_instruction_flag(in, dur[i]);
		bool ok;
		if (!v)
			continue;
		int64_t ns = parse_duration_ns(v, &ok);
		if (!ok || ns < 0) {
			json_decref(hc);
			return inst_error(r->b, in, EINVAL, err,
					  "HEALTHCHECK --%s: bad duration '%s'", dur[i], v);
		}
		json_object_set_new(hc, keys[i], json_integer(ns));
	}
	const char *retries = df_instruction_flag(in, "retries");
	if (retries) {
		char *end;
		long v = strtol(retries, &end, 10);
		if (!*retries || *end || v < 0) {
			json_decref(hc);
			return inst_error(r->b, in, EINVAL, err,
					  "HEALTHCHECK --retries: bad number '%s'", retries);
		}
		json_object_set_new(hc, "Retries", json_integer(v));
	}
	image_conf_set_json(r->out->conf, "Healthcheck", hc);
	return 0;
}

/* The history entry names each ARG with the value it took ("ARG V=1", or "ARG V" when unset),
 * as BuildKit does; it is also how the value enters the step cache chain. */
static int do_arg(StageRun *r, const DfInstruction *in, char **ret_created, char ***fields,
		  KilnError **err)
{
	Build *b = r->b;
	_cleanup_strbuf_ StrBuf created = {0};

	strbuf_adds(&created, "ARG");
	for (size_t i = 0; i < in->n_kvs; i++) {
		const DfKeyValue *kv = &in->kvs[i];
		Var *given = vars_find(&b->build_args, kv->key);
		_cleanup_free_ char *value = NULL;
		if (given) {
			value = xstrdup(given->value);
			mark_consumed(b, kv->key);
		} else if (kv->raw_value) {
			int k = expand1(r, in, kv->raw_value, &value, err);
			if (k < 0)
				return k;
		} else {
			Var *g = vars_find(&r->p->global_args, kv->key);
			if (g && g->value)
				value = xstrdup(g->value);
		}
		vars_set(&r->args, kv->key, value);
		strv_push(fields, kv->key);
		strv_push(fields, value ? "set" : "unset");
		strv_push(fields, value ? value : "");
		strbuf_adds(&created, " ");
		strbuf_adds(&created, kv->key);
		if (value) {
			strbuf_adds(&created, "=");
			strbuf_adds(&created, value);
		}
	}
	*ret_created = strbuf_steal(&created);
	return 0;
}

static int do_env_label(StageRun *r, const DfInstruction *in, bool env, char **ret_created,
			char ***fields, KilnError **err)
{
	size_t n = in->n_kvs;
	_cleanup_strv_free_ char **keys = NULL, **vals = NULL;

	for (size_t i = 0; i < n; i++) {
		char *k = NULL, *v = NULL;
		int ret = expand1(r, in, in->kvs[i].key, &k, err);
		if (ret >= 0)
			ret = expand1(r, in, in->kvs[i].raw_value ? in->kvs[i].raw_value : "", &v,
				      err);
		if (ret < 0) {
			free(k);
			return ret;
		}
		if (!*k) {
			free(k);
			free(v);
			return inst_error(r->b, in, EINVAL, err, "%s with an empty name",
					  in->keyword);
		}
		strv_consume(&keys, k);
		strv_consume(&vals, v);
	}
	_cleanup_strbuf_ StrBuf created = {0};
	strbuf_adds(&created, in->keyword);
	for (size_t i = 0; i < n; i++) {
		if (env)
			image_conf_env_set(r->out->conf, keys[i], vals[i]);
		else
			image_conf_map_add(r->out->conf, "Labels", keys[i], vals[i]);
		strv_push(fields, keys[i]);
		strv_push(fields, vals[i]);
		strbuf_adds(&created, " ");
		strbuf_adds(&created, keys[i]);
		strbuf_adds(&created, "=");
		strbuf_adds(&created, vals[i]);
	}
	*ret_created = strbuf_steal(&created);
	return 0;
}

static int do_expose(StageRun *r, const DfInstruction *in, KilnError **err)
{
	_cleanup_strv_free_ char **words = NULL;
	int k = inst_words(r, in, true, &words, err);

	if (k < 0)
		return k;
	for (size_t i = 0; words && words[i]; i++) {
		_cleanup_free_ char *p =
		    strchr(words[i], '/') ? xstrdup(words[i]) : xasprintf("%s/tcp", words[i]);
		for (char *c = strchr(p, '/'); c && *c; c++)
			*c = (char)tolower((unsigned char)*c);
		char *end;
		long port = strtol(p, &end, 10);
		if (end == p || *end != '/' || port < 0 || port > 65535 ||
		    (strcmp(end, "/tcp") && strcmp(end, "/udp") && strcmp(end, "/sctp")))
			return inst_error(r->b, in, EINVAL, err, "EXPOSE: invalid port '%s'",
					  words[i]);
		image_conf_map_add(r->out->conf, "ExposedPorts", p, NULL);
	}
	return 0;
}

static int do_cmd_entrypoint(StageRun *r, const DfInstruction *in, bool entrypoint)
{
	_cleanup_strv_free_ char **v = NULL;

	if (in->json)
		v = strv_copy(in->args);
	else
		v = shell_argv(r, in->args && in->args[0] ? in->args[0] : "");
	if (entrypoint) {
		image_conf_set_strv(r->out->conf, "Entrypoint", v);
		/* A base image's CMD does not survive a new ENTRYPOINT (Dockerfile reference). */
		if (!r->cmd_set)
			image_conf_set_strv(r->out->conf, "Cmd", NULL);
	} else {
		image_conf_set_strv(r->out->conf, "Cmd", v);
		r->cmd_set = true;
	}
	return 0;
}

int run_instruction(StageRun *r, const DfInstruction *in, KilnError **err);

/* Metadata-only instructions; returns 1 if `in` is not one of them. *fields: what the step key
 * holds of it (ENV/LABEL pairs, ARG name/state/value triples, else the form and its arguments
 * as the history shows them). */
static int do_meta(StageRun *r, const DfInstruction *in, char **ret_created, char ***fields,
		   KilnError **err)
{
	const char *kw = in->keyword;
	const char *text = in->args && in->args[0] ? in->args[0] : "";
	_cleanup_free_ char *v = NULL;
	int k;

	if (strcmp(kw, "ENV") == 0 || strcmp(kw, "LABEL") == 0) {
		k = do_env_label(r, in, kw[0] == 'E', ret_created, fields, err);
		return k < 0 ? k : 0;
	} else if (strcmp(kw, "ARG") == 0) {
		k = do_arg(r, in, ret_created, fields, err);
		return k < 0 ? k : 0;
	} else if (strcmp(kw, "CMD") == 0 || strcmp(kw, "ENTRYPOINT") == 0) {
		k = do_cmd_entrypoint(r, in, kw[0] == 'E');
	} else if (strcmp(kw, "USER") == 0 || strcmp(kw, "STOPSIGNAL") == 0) {
		k = expand1(r, in, text, &v, err);
		if (k >= 0 && !*v)
			k = inst_error(r->b, in, EINVAL, err, "%s needs a value", kw);
		if (k >= 0)
			image_conf_set_string(r->out->conf, kw[0] == 'U' ? "User" : "StopSignal",
					      v);
	} else if (strcmp(kw, "EXPOSE") == 0) {
		k = do_expose(r, in, err);
	} else if (strcmp(kw, "VOLUME") == 0) {
		_cleanup_strv_free_ char **w = NULL;
		k = inst_words(r, in, true, &w, err);
		for (size_t i = 0; k >= 0 && w && w[i]; i++)
			image_conf_map_add(r->out->conf, "Volumes", w[i], NULL);
	} else if (strcmp(kw, "SHELL") == 0) {
		if (!in->json || !in->args || !in->args[0])
			return inst_error(
			    r->b, in, EINVAL, err,
			    "SHELL needs the JSON form: SHELL [\"executable\", \"parameters\"]");
		image_conf_set_strv(r->out->conf, "Shell", in->args);
		k = 0;
	} else if (strcmp(kw, "HEALTHCHECK") == 0) {
		k = do_healthcheck(r, in, err);
	} else if (strcmp(kw, "MAINTAINER") == 0) {
		image_conf_set_author(r->out->conf, text);
		k = 0;
	} else if (strcmp(kw, "ONBUILD") == 0) {
		_cleanup_strv_free_ char **list = image_conf_get_strv(r->out->conf, "OnBuild");
		const char *t = in->onbuild && in->onbuild->original ? in->onbuild->original : text;
		strv_push(&list, t);
		image_conf_set_strv(r->out->conf, "OnBuild", list);
		k = 0;
	} else {
		return 1;
	}
	if (k < 0)
		return k;
	strv_push(fields, in->json ? "json" : "shell");
	if (in->json) {
		_cleanup_free_ char *j = json_strv(in->args);
		*ret_created = xasprintf("%s %s", kw, j);
		for (size_t i = 0; in->args[i]; i++)
			strv_push(fields, in->args[i]);
	} else {
		const char *rest =
		    v		   ? v
		    : in->original ? in->original + strlen(kw) + (in->original[strlen(kw)] == ' ')
				   : text;
		*ret_created = xasprintf("%s %s", kw, rest);
		strv_push(fields, rest);
	}
	for (size_t i = 0; in->flags && in->flags[i]; i++)
		strv_push(fields, in->flags[i]);
	return 0;
}

int run_instruction(StageRun *r, const DfInstruction *in, KilnError **err)
{
	Build *b = r->b;
	_cleanup_free_ char *name = NULL, *created = NULL;
	unsigned step;
	int k;

	r->step_no++;
	r->cached = false;
	free(r->reason);
	r->reason = NULL;
	r->emulated = false;
	r->cpu_s = 0;
	r->has_layer = false;
	name = step_name(r, in);
	step = progress_step_begin(b->progress, name);
	double t0 = now_seconds();
	if (strcmp(in->keyword, "RUN") == 0) {
		k = do_run(r, in, step, err);
	} else if (strcmp(in->keyword, "COPY") == 0 || strcmp(in->keyword, "ADD") == 0) {
		k = do_copy(r, in, in->keyword[0] == 'A', err);
	} else if (strcmp(in->keyword, "WORKDIR") == 0) {
		k = do_workdir(r, in, err);
	} else {
		_cleanup_strv_free_ char **fields = NULL;
		k = do_meta(r, in, &created, &fields, err);
		if (k == 1)
			k = inst_error(b, in, EINVAL, err, "unexpected instruction '%s'",
				       in->keyword);
		else if (k >= 0) {
			image_conf_add_history(r->out->conf, created, true);
			k = step_meta_cache(r, in->keyword, fields, err);
		}
	}
	progress_step_end(b->progress, step, k >= 0, r->cached,
			  k < 0 && err && *err ? (*err)->message : NULL);
	if (k >= 0)
		report_step(r, in, now_seconds() - t0, strcmp(in->keyword, "RUN") == 0);
	return k;
}

/* ONBUILD triggers of the base image run right after FROM, then are cleared. */
int run_onbuild(StageRun *r, const char *image, KilnError **err)
{
	_cleanup_strv_free_ char **triggers = image_conf_get_strv(r->out->conf, "OnBuild");
	int k;

	image_conf_set_strv(r->out->conf, "OnBuild", NULL);
	for (size_t i = 0; triggers && triggers[i]; i++) {
		Dockerfile *df = NULL;
		_cleanup_free_ char *fname = xasprintf("ONBUILD of '%s'", image);
		/* The parser wants a FROM first; the trigger is parsed as the line after one. */
		_cleanup_free_ char *text = xasprintf("FROM scratch\n%s\n", triggers[i]);
		k = dockerfile_parse(fname, text, strlen(text), &df, err);
		if (k < 0)
			return k;
		for (size_t j = 1; j < df->n_insts && k >= 0; j++) {
			r->n_steps++;
			k = run_instruction(r, &df->insts[j], err);
		}
		dockerfile_free(df);
		if (k < 0)
			return k;
	}
	return 0;
}
