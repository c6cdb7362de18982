#include <jansson.h>
#include <time.h>

#include "builder/dockerfile.h"
#include "builder/parse_json.h"
#include "common/cleanup.h"
#include "common/error.h"
#include "common/fdutil.h"
#include "common/strbuf.h"
#include "tap.h"

static Dockerfile *parse_ok(const char *text)
{
	Dockerfile *df = NULL;
	_cleanup_error_ KilnError *err = NULL;

	if (dockerfile_parse("Dockerfile", text, strlen(text), &df, &err) < 0) {
		printf("# unexpected parse error: %s\n", err->message);
		return NULL;
	}
	return df;
}

/* The error message, or "" if parsing succeeded (so CHECK_EQ_STR shows it). */
static char errbuf[512];
static const char *parse_err(const char *text)
{
	Dockerfile *df = NULL;
	_cleanup_error_ KilnError *err = NULL;

	if (dockerfile_parse("Dockerfile", text, strlen(text), &df, &err) == 0) {
		dockerfile_free(df);
		return "";
	}
	snprintf(errbuf, sizeof(errbuf), "%s", err->message);
	CHECK(err->code == KILN_EFAIL);
	return errbuf;
}

#define DF(name, text)                                                                             \
	_cleanup_(dockerfile_freep) Dockerfile *name = parse_ok(text);                             \
	CHECK(name != NULL);                                                                       \
	if (!name)                                                                                 \
	return

TEST(basic_shell_and_json_forms)
{
	DF(df, "FROM alpine:3.19 AS build\n"
	       "RUN echo hi\n"
	       "CMD [\"/bin/sh\", \"-c\", \"echo x\"]\n"
	       "ENTRYPOINT [\"a\" \"b\"]\n"
	       "cmd [\"a\", \"b\"] && more\n");

	CHECK_EQ_INT(df->n_insts, 5);
	CHECK_EQ_STR(df->insts[0].keyword, "FROM");
	CHECK_EQ_STR(df->insts[0].args[0], "alpine:3.19 AS build");
	CHECK_EQ_INT(df->insts[1].line, 2);
	CHECK_EQ_STR(df->insts[1].args[0], "echo hi");
	CHECK(!df->insts[1].json);
	CHECK(df->insts[2].json);
	CHECK_EQ_INT(strv_length(df->insts[2].args), 3);
	CHECK_EQ_STR(df->insts[2].args[2], "echo x");
	/* invalid JSON falls back to the shell form */
	CHECK(!df->insts[3].json);
	CHECK_EQ_STR(df->insts[3].args[0], "[\"a\" \"b\"]");
	CHECK_EQ_STR(df->insts[4].keyword, "CMD");
	CHECK(!df->insts[4].json);
	CHECK_EQ_STR(df->insts[4].args[0], "[\"a\", \"b\"] && more");
	CHECK_EQ_INT(df->escape, '\\');
}

TEST(continuations_and_comments)
{
	DF(df, "# leading comment\n"
	       "FROM scratch\n"
	       "RUN apt-get update && \\\n"
	       "    # a comment inside\n"
	       "\n"
	       "    apt-get install -y x \\  \n"
	       "  && echo done\n"
	       "   # indented comment\n"
	       "RUN echo # not a comment\n");

	CHECK_EQ_INT(df->n_insts, 3);
	CHECK_EQ_INT(df->insts[1].line, 3);
	CHECK_EQ_INT(df->insts[1].end_line, 7);
	CHECK_EQ_STR(df->insts[1].args[0],
		     "apt-get update &&     apt-get install -y x   && echo done");
	CHECK_EQ_STR(df->insts[1].original,
		     "RUN apt-get update &&     apt-get install -y x   && echo done");
	CHECK_EQ_INT(df->insts[2].line, 9);
	CHECK_EQ_STR(df->insts[2].args[0], "echo # not a comment");
}

TEST(escape_directive_backtick)
{
	DF(df, "# syntax=docker/dockerfile:1\n"
	       "# ESCAPE = `\n"
	       "# check=skip=all\n"
	       "\n"
	       "FROM windows\n"
	       "RUN dir C:\\ `\n"
	       "  && echo ok\n"
	       "COPY a\\b c:\\dest\\\n");

	CHECK_EQ_INT(df->escape, '`');
	CHECK_EQ_STR(df->syntax, "docker/dockerfile:1");
	CHECK_EQ_STR(df->check, "skip=all");
	CHECK_EQ_INT(df->n_insts, 3);
	CHECK_EQ_STR(df->insts[1].args[0], "dir C:\\   && echo ok");
	CHECK_EQ_STR(df->insts[2].args[0], "a\\b c:\\dest\\");
}

TEST(directives_only_at_top)
{
	DF(df, "FROM scratch\n# escape=`\nRUN a \\\n b\n");

	CHECK_EQ_INT(df->escape, '\\');
	CHECK_EQ_STR(df->insts[1].args[0], "a  b");
	DF(df2, "# some comment\n# escape=`\nFROM x\n");
	CHECK_EQ_INT(df2->escape, '\\');
	CHECK(strstr(parse_err("# escape=x\nFROM a\n"), "Dockerfile:1: invalid escape token"));
	CHECK(strstr(parse_err("# syntax=a\n# syntax=b\nFROM a\n"), "Dockerfile:2: only one"));
}

TEST(heredocs)
{
	DF(df, "FROM alpine\n"
	       "RUN <<EOF\n"
	       "echo $HOME\n"
	       "EOF\n"
	       "RUN python3 <<'PY'\n"
	       "print('hi $x')\n"
	       "PY\n"
	       "RUN <<-\"TABS\"\n"
	       "\t\tindented\n"
	       "\tTABS\n"
	       "COPY <<A <<B /dst/\n"
	       "first\n"
	       "A\n"
	       "second\n"
	       "B\n"
	       "RUN [\"cat\", \"<<EOF\"]\n"
	       "RUN 3<<FD cat <&3\n"
	       "\n"
	       "FD\n");

	CHECK_EQ_INT(df->n_insts, 7);
	const DfInstruction *r1 = &df->insts[1];
	CHECK_EQ_STR(r1->args[0], "<<EOF");
	CHECK_EQ_INT(r1->n_heredocs, 1);
	CHECK_EQ_STR(r1->heredocs[0].name, "EOF");
	CHECK_EQ_STR(r1->heredocs[0].content, "echo $HOME\n");
	CHECK(r1->heredocs[0].expand);
	CHECK(!r1->heredocs[0].chomp);
	CHECK_EQ_INT(r1->line, 2);
	CHECK_EQ_INT(r1->end_line, 4);

	const DfInstruction *r2 = &df->insts[2];
	CHECK_EQ_STR(r2->args[0], "python3 <<'PY'");
	CHECK_EQ_STR(r2->heredocs[0].name, "PY");
	CHECK(!r2->heredocs[0].expand);

	const DfInstruction *r3 = &df->insts[3];
	CHECK_EQ_STR(r3->heredocs[0].name, "TABS");
	CHECK(r3->heredocs[0].chomp);
	CHECK(!r3->heredocs[0].expand);
	CHECK_EQ_STR(r3->heredocs[0].content, "indented\n");

	const DfInstruction *c = &df->insts[4];
	CHECK_EQ_INT(c->n_heredocs, 2);
	CHECK_EQ_STR(c->heredocs[0].content, "first\n");
	CHECK_EQ_STR(c->heredocs[1].name, "B");
	CHECK_EQ_STR(c->heredocs[1].content, "second\n");
	CHECK_EQ_INT(c->end_line, 15);

	CHECK_EQ_INT(df->insts[5].n_heredocs, 0);
	CHECK_EQ_INT(df->insts[6].n_heredocs, 1);
	CHECK_EQ_STR(df->insts[6].heredocs[0].content, "\n");
}

TEST(heredoc_unterminated)
{
	CHECK_EQ_STR(parse_err("FROM a\n\nRUN <<EOF\necho hi\nEO\n"),
		     "Dockerfile:3: unterminated heredoc: '<<EOF'");
	CHECK(strstr(parse_err("FROM a\nCOPY <<A <<B /x\nA\nbody\n"),
		     "Dockerfile:2: unterminated heredoc: '<<B'"));
}

TEST(env_forms)
{
	DF(df, "FROM a\n"
	       "ENV A=1 B=\"two words\" C='single $x' D=esc\\ aped E=\"$HOME/bin\"\n"
	       "ENV LEGACY value with   spaces\n"
	       "LABEL \"com.example.vendor\"=\"ACME Inc\" version=1.0\n"
	       "ENV Q=\"a\"'b'c\n");

	const DfInstruction *e = &df->insts[1];
	CHECK_EQ_INT(e->n_kvs, 5);
	CHECK_EQ_STR(e->kvs[1].key, "B");
	CHECK_EQ_STR(e->kvs[1].raw_value, "\"two words\"");
	CHECK_EQ_STR(e->kvs[1].value, "two words");
	CHECK_EQ_STR(e->kvs[2].value, "single $x");
	CHECK_EQ_STR(e->kvs[3].value, "esc aped");
	CHECK_EQ_STR(e->kvs[4].raw_value, "\"$HOME/bin\"");
	CHECK_EQ_STR(e->args[0], "A=1");
	CHECK_EQ_STR(e->args[1], "B=two words");
	CHECK_EQ_INT(strv_length(e->args), 5);

	const DfInstruction *l = &df->insts[2];
	CHECK_EQ_INT(l->n_kvs, 1);
	CHECK_EQ_STR(l->kvs[0].key, "LEGACY");
	CHECK_EQ_STR(l->kvs[0].value, "value with   spaces");
	CHECK_EQ_STR(l->args[0], "LEGACY=value with   spaces");

	const DfInstruction *lb = &df->insts[3];
	CHECK_EQ_STR(lb->kvs[0].key, "com.example.vendor");
	CHECK_EQ_STR(lb->args[0], "com.example.vendor=ACME Inc");
	CHECK_EQ_STR(df->insts[4].kvs[0].value, "abc");
}

TEST(env_errors)
{
	CHECK(strstr(parse_err("FROM a\nENV A=\"open\n"),
		     "Dockerfile:2: unexpected end of statement while looking for matching "
		     "double-quote"));
	CHECK(strstr(parse_err("FROM a\nLABEL a='x\n"), "Dockerfile:2:"));
	CHECK(strstr(parse_err("FROM a\nENV ONLYKEY\n"),
		     "Dockerfile:2: ENV must have two arguments"));
	CHECK(
	    strstr(parse_err("FROM a\nENV A=1 B\n"), "Dockerfile:2: syntax error - can't find ="));
	CHECK(strstr(parse_err("FROM a\nENV =x\n"), "Dockerfile:2: ENV names can not be blank"));
	CHECK(
	    strstr(parse_err("FROM a\nENV\n"), "Dockerfile:2: ENV requires at least one argument"));
}

TEST(arg_forms)
{
	DF(df, "ARG BASE=alpine\n"
	       "ARG NODEFAULT\n"
	       "FROM ${BASE}\n"
	       "ARG A=\"x y\" B C=\n");

	CHECK_EQ_STR(df->insts[0].kvs[0].key, "BASE");
	CHECK_EQ_STR(df->insts[0].kvs[0].value, "alpine");
	CHECK_EQ_STR(df->insts[0].args[0], "BASE=alpine");
	CHECK(df->insts[1].kvs[0].raw_value == NULL);
	CHECK(df->insts[1].kvs[0].value == NULL);
	CHECK_EQ_STR(df->insts[1].args[0], "NODEFAULT");
	const DfInstruction *a = &df->insts[3];
	CHECK_EQ_INT(a->n_kvs, 3);
	CHECK_EQ_STR(a->kvs[0].value, "x y");
	CHECK_EQ_STR(a->kvs[0].raw_value, "\"x y\"");
	CHECK(a->kvs[1].raw_value == NULL);
	CHECK_EQ_STR(a->kvs[2].raw_value, "");
	CHECK_EQ_STR(a->args[2], "C=");
	CHECK(strstr(parse_err("FROM a\nARG\n"), "Dockerfile:2: ARG requires at least one"));
	CHECK(strstr(parse_err("ARG X=\"y\nFROM a\n"), "Dockerfile:1:"));
}

TEST(flags)
{
	DF(df, "FROM --platform=$BUILDPLATFORM golang AS b\n"
	       "RUN --mount=type=cache,target=/root/.cache --mount=type=secret,id=s "
	       "--network=none go build\n"
	       "COPY --from=b --chown=1:1 --link --exclude=*.md --exclude=\"*.txt\" /src /dst\n"
	       "HEALTHCHECK --interval=5s --retries=3 CMD curl -f http://x/\n"
	       "COPY --link=false -- --weird /dst\n");

	CHECK_EQ_STR(df_instruction_flag(&df->insts[0], "platform"), "$BUILDPLATFORM");
	CHECK_EQ_STR(df->insts[0].args[0], "golang AS b");
	const DfInstruction *run = &df->insts[1];
	_cleanup_strv_free_ char **mounts = df_instruction_flag_all(run, "mount");
	CHECK_EQ_INT(strv_length(mounts), 2);
	CHECK_EQ_STR(mounts[1], "type=secret,id=s");
	CHECK_EQ_STR(df_instruction_flag(run, "--network"), "none");
	CHECK(df_instruction_flag(run, "security") == NULL);
	CHECK_EQ_STR(run->args[0], "go build");
	const DfInstruction *cp = &df->insts[2];
	CHECK_EQ_STR(df_instruction_flag(cp, "link"), "");
	CHECK_EQ_STR(df_instruction_flag(cp, "from"), "b");
	_cleanup_strv_free_ char **ex = df_instruction_flag_all(cp, "exclude");
	CHECK_EQ_INT(strv_length(ex), 2);
	CHECK_EQ_STR(ex[1], "*.txt");
	CHECK_EQ_STR(cp->flags[4], "--exclude=*.txt");
	const DfInstruction *hc = &df->insts[3];
	CHECK_EQ_INT(strv_length(hc->args), 2);
	CHECK_EQ_STR(hc->args[0], "CMD");
	CHECK_EQ_STR(hc->args[1], "curl -f http://x/");
	CHECK_EQ_STR(df_instruction_flag(hc, "retries"), "3");
	CHECK_EQ_STR(df->insts[4].args[0], "--weird /dst");
	CHECK_EQ_STR(df_instruction_flag(&df->insts[4], "link"), "false");
}

TEST(unknown_flag)
{
	CHECK_EQ_STR(parse_err("FROM a\n\nCOPY --foo=bar a b\n"),
		     "Dockerfile:3: unknown flag '--foo' for COPY");
	CHECK_EQ_STR(parse_err("FROM --mount=x a\n"),
		     "Dockerfile:1: unknown flag '--mount' for FROM");
	CHECK_EQ_STR(parse_err("FROM a\nRUN --chown=1 x\n"),
		     "Dockerfile:2: unknown flag '--chown' for RUN");
	CHECK(strstr(parse_err("FROM a\nCOPY --from a b\n"), "missing a value on flag '--from'"));
	CHECK(strstr(parse_err("FROM a\nCOPY --link=maybe a b\n"), "expecting boolean value"));
}

TEST(unknown_instruction)
{
	CHECK_EQ_STR(parse_err("FROM a\nRUN x\nFROB nicate\n"),
		     "Dockerfile:3: unknown instruction: 'FROB'");
}

TEST(missing_args)
{
	CHECK(strstr(parse_err("FROM\n"), "Dockerfile:1: FROM requires"));
	CHECK(strstr(parse_err("FROM a b\n"), "Dockerfile:1: FROM requires either one or three"));
	CHECK(strstr(parse_err("FROM a AS 1bad\n"), "invalid name for build stage"));
	CHECK(strstr(parse_err("FROM a\nCOPY a\n"), "Dockerfile:2: COPY requires at least two"));
	CHECK(
	    strstr(parse_err("FROM a\nADD [\"a\"]\n"), "Dockerfile:2: ADD requires at least two"));
	CHECK(strstr(parse_err("FROM a\nRUN\n"), "Dockerfile:2: RUN requires at least one"));
	CHECK(strstr(parse_err("FROM a\nWORKDIR   \n"), "Dockerfile:2: WORKDIR requires"));
	CHECK(strstr(parse_err("FROM a\nSHELL /bin/sh -c\n"),
		     "SHELL requires the arguments to be in JSON"));
	CHECK(strstr(parse_err("FROM a\nHEALTHCHECK\n"), "HEALTHCHECK requires"));
	CHECK(strstr(parse_err("FROM a\nHEALTHCHECK NONE x\n"), "takes no arguments"));
	CHECK(strstr(parse_err("FROM a\nHEALTHCHECK RUN x\n"), "unknown type 'RUN'"));
	CHECK(strstr(parse_err("FROM a\nCMD [\"a\", 1]\n"), "must contain only strings"));
	CHECK(strstr(parse_err(""), "file with no instructions"));
	DF(df, "FROM a\nCMD []\nENTRYPOINT []\nHEALTHCHECK NONE\nSHELL [\"/bin/bash\", \"-c\"]\n");
	CHECK(df->insts[1].json);
	CHECK(df->insts[1].args[0] == NULL);
	CHECK_EQ_STR(df->insts[3].args[0], "NONE");
	CHECK_EQ_STR(df->insts[4].args[1], "-c");
}

TEST(instruction_before_from)
{
	CHECK_EQ_STR(parse_err("# c\nARG X\nRUN echo\nFROM a\n"),
		     "Dockerfile:3: only ARG may come before the first FROM: 'RUN echo'");
	_cleanup_free_ char *ok = xstrdup(parse_err("ARG X\n\nFROM a\n"));
	CHECK_EQ_STR(ok, "");
}

TEST(onbuild)
{
	DF(df, "FROM a\n"
	       "ONBUILD RUN --mount=type=cache,target=/c make\n"
	       "onbuild copy <<EOF /x\n"
	       "hi\n"
	       "EOF\n");

	const DfInstruction *o = &df->insts[1];
	CHECK_EQ_STR(o->keyword, "ONBUILD");
	CHECK_EQ_STR(o->args[0], "RUN --mount=type=cache,target=/c make");
	CHECK(o->onbuild != NULL);
	if (!o->onbuild)
		return;
	CHECK_EQ_STR(o->onbuild->keyword, "RUN");
	CHECK_EQ_STR(o->onbuild->args[0], "make");
	CHECK_EQ_STR(df_instruction_flag(o->onbuild, "mount"), "type=cache,target=/c");
	const DfInstruction *o2 = &df->insts[2];
	CHECK(o2->onbuild && o2->onbuild->n_heredocs == 1);
	CHECK_EQ_INT(o2->end_line, 5);
	if (o2->onbuild && o2->onbuild->n_heredocs == 1)
		CHECK_EQ_STR(o2->onbuild->heredocs[0].content, "hi\n");
	CHECK(
	    strstr(parse_err("FROM a\nONBUILD ONBUILD RUN x\n"), "Dockerfile:2: chaining ONBUILD"));
	CHECK(strstr(parse_err("FROM a\nONBUILD FROM b\n"), "FROM isn't allowed as an ONBUILD"));
	CHECK(strstr(parse_err("FROM a\nONBUILD MAINTAINER me\n"), "MAINTAINER isn't allowed"));
	CHECK(strstr(parse_err("FROM a\nONBUILD\n"), "ONBUILD requires"));
	CHECK(strstr(parse_err("FROM a\nONBUILD BOGUS x\n"), "unknown instruction: 'BOGUS'"));
}

TEST(crlf_bom_and_keywords_case)
{
	DF(df, "\xef\xbb\xbf# escape=`\r\nfrom a\r\nrun echo `\r\n  hi\r\nMaintainer me\r\n");

	CHECK_EQ_INT(df->escape, '`');
	CHECK_EQ_INT(df->n_insts, 3);
	CHECK_EQ_STR(df->insts[0].keyword, "FROM");
	CHECK_EQ_STR(df->insts[1].args[0], "echo   hi");
	CHECK_EQ_STR(df->insts[2].keyword, "MAINTAINER");
}

TEST(all_instructions_to_json)
{
	DF(df, "# syntax=docker/dockerfile:1\n"
	       "FROM alpine AS base\n"
	       "RUN --network=none echo hi\n"
	       "CMD [\"a\"]\n"
	       "LABEL a=b\n"
	       "MAINTAINER me\n"
	       "EXPOSE 80/tcp 443\n"
	       "ENV K=\"v w\"\n"
	       "ADD --checksum=sha256:x https://e/x /x\n"
	       "COPY a b\n"
	       "ENTRYPOINT /bin/sh\n"
	       "VOLUME [\"/data\"]\n"
	       "USER 1000:1000\n"
	       "WORKDIR /w\n"
	       "ARG V=1\n"
	       "ONBUILD RUN x\n"
	       "STOPSIGNAL SIGTERM\n"
	       "HEALTHCHECK CMD [\"true\"]\n"
	       "SHELL [\"/bin/sh\", \"-c\"]\n"
	       "RUN <<EOF\n"
	       "x\n"
	       "EOF\n");
	json_t *j = NULL;
	_cleanup_error_ KilnError *err = NULL;

	CHECK_EQ_INT(df->n_insts, 19);
	CHECK(dockerfile_to_json(df, &j, &err) == 0);
	if (!j)
		return;
	json_t *insts = json_object_get(j, "instructions");
	json_t *dir = json_object_get(j, "directives");
	CHECK_EQ_STR(json_string_value(json_object_get(dir, "escape")), "\\");
	CHECK_EQ_STR(json_string_value(json_object_get(dir, "syntax")), "docker/dockerfile:1");
	CHECK(json_object_get(dir, "check") == NULL);
	CHECK_EQ_INT(json_array_size(insts), 19);
	json_t *run = json_array_get(insts, 1);
	_cleanup_free_ char *rs = json_dumps(run, JSON_COMPACT | JSON_SORT_KEYS);
	CHECK_EQ_STR(rs, "{\"args\":[\"echo hi\"],\"end_line\":3,\"flags\":[\"--network=none\"],"
			 "\"heredocs\":[],\"json\":false,\"keyword\":\"RUN\",\"line\":3,"
			 "\"onbuild\":null}");
	json_t *env = json_array_get(insts, 6);
	CHECK_EQ_STR(json_string_value(json_array_get(json_object_get(env, "args"), 0)), "K=v w");
	json_t *onb = json_object_get(json_array_get(insts, 14), "onbuild");
	CHECK_EQ_STR(json_string_value(json_object_get(onb, "keyword")), "RUN");
	json_t *hd = json_array_get(json_object_get(json_array_get(insts, 18), "heredocs"), 0);
	_cleanup_free_ char *hs = json_dumps(hd, JSON_COMPACT | JSON_SORT_KEYS);
	CHECK_EQ_STR(hs, "{\"chomp\":false,\"content\":\"x\\n\",\"expand\":true,\"name\":\"EOF\"}");
	json_t *hc = json_array_get(insts, 16);
	CHECK(json_is_true(json_object_get(hc, "json")));
	CHECK_EQ_INT(json_array_size(json_object_get(hc, "args")), 2);
	json_decref(j);
}

TEST(hostile_input_does_not_crash)
{
	const char *inputs[] = {
	    "FROM a\nRUN \\",
	    "FROM a\nRUN <<",
	    "FROM a\nRUN <<-",
	    "FROM a\nRUN <<\"\"\n",
	    "\\\n\\\n",
	    "FROM a\nENV \"",
	    "FROM a\nCOPY --\n",
	    "FROM a\nCOPY --=x a b\n",
	    "FROM a\nRUN --mount='a b\n",
	    "FROM a\nHEALTHCHECK cmd\n",
	    "FROM a\nONBUILD ONBUILD\n",
	    "FROM a\nRUN [\n",
	    "FROM a\nRUN <<A <<A\nA\n",
	};
	for (size_t i = 0; i < ELEMENTSOF(inputs); i++) {
		Dockerfile *df = NULL;
		KilnError *err = NULL;
		int r = dockerfile_parse("Dockerfile", inputs[i], strlen(inputs[i]), &df, &err);
		CHECK((r == 0) == (df != NULL));
		CHECK((r < 0) == (err != NULL));
		dockerfile_free(df);
		kiln_error_free(err);
	}
	Dockerfile *df = NULL;
	_cleanup_error_ KilnError *err = NULL;
	CHECK(dockerfile_parse("Dockerfile", "FROM a\n\0RUN x\n", 14, &df, &err) < 0);
	CHECK(err && strstr(err->message, "Dockerfile:2:"));
}

/* ---------- hostile size and shape (issue 8) ---------- */

static char *repeat(const char *head, const char *unit, size_t n, const char *tail)
{
	StrBuf b = {0};
	strbuf_adds(&b, head);
	for (size_t i = 0; i < n; i++)
		strbuf_adds(&b, unit);
	strbuf_adds(&b, tail);
	return strbuf_steal(&b);
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

TEST(errors_quote_little_and_escape)
{
	/* a binary or secret file given as a Dockerfile: its bytes are escaped and cut */
	const char *bin = "\x7f"
			  "ELF\x02\x01\x1b[31mAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
			  "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA SECRET\n";
	const char *e = parse_err(bin);
	CHECK(strstr(e, "Dockerfile:1: unknown instruction: '\\x7fELF\\x02\\x01\\x1b[31mAAAA"));
	CHECK(strstr(e, "AAA...'"));
	CHECK(!strstr(e, "SECRET"));
	CHECK(!strchr(e, '\x1b'));
	_cleanup_free_ char *longenv = repeat("FROM a\nENV ", "x", 5000, "\n");
	e = parse_err(longenv);
	CHECK(strstr(e, "Dockerfile:2: ENV must have two arguments: 'ENV xxx"));
	CHECK(strlen(e) < 200);
	CHECK_EQ_STR(parse_err("FROM a\nRUN --\x1b[2Jx=1 y\n"),
		     "Dockerfile:2: unknown flag '--\\x1b[2Jx' for RUN");
}

TEST(caps_name_the_line)
{
	_cleanup_free_ char *insts = repeat("FROM a\n", "ARG a\n", DF_MAX_INSTRUCTIONS, "");
	_cleanup_free_ char *insts_ok = repeat("FROM a\n", "ARG a\n", DF_MAX_INSTRUCTIONS - 1, "");
	_cleanup_free_ char *json = repeat("FROM a\nRUN [\"a\"", ",\"a\"", DF_MAX_ITEMS, "]\n");
	_cleanup_free_ char *json_ok =
	    repeat("FROM a\nRUN [\"a\"", ",\"a\"", DF_MAX_ITEMS - 1, "]\n");
	_cleanup_free_ char *kvs = repeat("FROM a\nENV", " a=1", DF_MAX_ITEMS + 1, "\n");
	_cleanup_free_ char *args = repeat("FROM a\nARG", " a", DF_MAX_ITEMS + 1, "\n");
	_cleanup_free_ char *words = repeat("FROM a\nCOPY", " a", DF_MAX_ITEMS + 1, "\n");
	_cleanup_free_ char *flags =
	    repeat("FROM a\nRUN", " --network=none", DF_MAX_ITEMS + 1, " x\n");
	_cleanup_free_ char *here = repeat("FROM a\nRUN", " <<A", DF_MAX_HEREDOCS + 1, "\n");
	_cleanup_free_ char *line = repeat("", "ENV a=1 b=2 c=3 d=4\n", 4096, "");
	_cleanup_free_ char *total = xasprintf("FROM a\n%s", line);

	CHECK_EQ_STR(parse_err(insts), "Dockerfile:10001: more than 10000 instructions");
	CHECK_EQ_STR(parse_err(insts_ok), "");
	CHECK_EQ_STR(parse_err(json), "Dockerfile:2: more than 4096 arguments in one instruction");
	CHECK_EQ_STR(parse_err(json_ok), "");
	CHECK_EQ_STR(parse_err(kvs), "Dockerfile:2: more than 4096 arguments in one instruction");
	CHECK_EQ_STR(parse_err(args), "Dockerfile:2: more than 4096 arguments in one instruction");
	CHECK_EQ_STR(parse_err(words), "Dockerfile:2: more than 4096 arguments in one instruction");
	CHECK_EQ_STR(parse_err(flags), "Dockerfile:2: more than 4096 arguments in one instruction");
	CHECK_EQ_STR(parse_err(here), "Dockerfile:2: more than 64 heredocs in one instruction");
	CHECK_EQ_STR(parse_err(total),
		     "Dockerfile:4097: more than 16384 arguments in the Dockerfile");
}

TEST(onbuild_chain_does_not_recurse)
{
	_cleanup_free_ char *chain = repeat("FROM a\n", "ONBUILD ", 1000000, "RUN x\n");
	const char *e = parse_err(chain);
	CHECK(strstr(e, "Dockerfile:2: chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed"));
	CHECK(strlen(e) < 250);
}

/* Inputs at the size limit parse in linear time. */
TEST(huge_input_is_linear)
{
	_cleanup_free_ char *cont = repeat("FROM a\nRUN a \\\n", "b \\\n", 1000000, "c\n");
	_cleanup_free_ char *longl = repeat("FROM a\nRUN ", "a", 15 << 20, "\n");
	_cleanup_free_ char *hbody =
	    repeat("FROM a\nRUN <<EOF\n", "xxxxxxxxxxxxxxx\n", 1000000, "EOF\n");
	_cleanup_free_ char *words = repeat("FROM a\nCOPY", " a", 3000000, " /d/\n");
	_cleanup_free_ char *json = repeat("FROM a\nRUN [\"a\"", ",\"a\"", 3000000, "]\n");
	_cleanup_free_ char *kvs = repeat("FROM a\nENV", " a=1", 3000000, "\n");
	_cleanup_free_ char *flags = repeat("FROM a\nRUN", " --network=none", 1000000, " x\n");
	const char *inputs[] = {cont, longl, hbody, words, json, kvs, flags};
	double t0 = now();

	for (size_t i = 0; i < ELEMENTSOF(inputs); i++) {
		Dockerfile *df = NULL;
		_cleanup_error_ KilnError *err = NULL;
		if (dockerfile_parse("Dockerfile", inputs[i], strlen(inputs[i]), &df, &err) == 0)
			dockerfile_free(df);
		CHECK(i < 3 ? !err : err && strstr(err->message, "more than 4096"));
	}
	double dt = now() - t0;
	printf("# 7 inputs of 4-16 MiB: %.2f s\n", dt);
	CHECK(dt < 20);
}

int main(void)
{
	RUN(basic_shell_and_json_forms);
	RUN(continuations_and_comments);
	RUN(escape_directive_backtick);
	RUN(directives_only_at_top);
	RUN(heredocs);
	RUN(heredoc_unterminated);
	RUN(env_forms);
	RUN(env_errors);
	RUN(arg_forms);
	RUN(flags);
	RUN(unknown_flag);
	RUN(unknown_instruction);
	RUN(missing_args);
	RUN(instruction_before_from);
	RUN(onbuild);
	RUN(crlf_bom_and_keywords_case);
	RUN(all_instructions_to_json);
	RUN(hostile_input_does_not_crash);
	RUN(errors_quote_little_and_escape);
	RUN(caps_name_the_line);
	RUN(onbuild_chain_does_not_recurse);
	RUN(huge_input_is_linear);
	return tap_done();
}
