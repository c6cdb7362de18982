/* Dockerfile parser with BuildKit `dockerfile:1` syntax: parser directives, comments, line
 * continuations, heredocs, JSON and shell forms, per-instruction flag validation.
 * It expands no variables: see expand.h for that. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "common/error.h"

typedef struct DfHeredoc {
	char *name; /* delimiter, quotes removed */
	char *
	    content; /* body lines, each ending in '\n'; with chomp, leading tabs already removed */
	bool expand; /* false when the delimiter was quoted (<<"EOF", <<'EOF') */
	bool chomp;  /* <<-EOF: leading tabs stripped from body lines and the delimiter line */
} DfHeredoc;

typedef struct DfKeyValue {
	char *key;	 /* quotes removed, no expansion */
	char *raw_value; /* still quoted, unexpanded; NULL if no '=' (ARG without default) */
	char *value;	 /* quotes removed, no expansion ($V kept as written): for display/JSON;
			    NULL when raw_value is */
} DfKeyValue;

typedef struct DfInstruction {
	unsigned line,
	    end_line;  /* 1-based, first and last physical line (heredoc bodies included) */
	char *keyword; /* upper case: "RUN" */
	char **flags;  /* NULL-terminated, quotes removed: "--mount=type=cache,target=/x" */
	bool json;     /* JSON (exec) form */
	/* NULL-terminated. Shell form: one string, the text after the keyword and flags with
	 * continuations joined and comments dropped. JSON form: the array's strings.
	 * ENV/LABEL/ARG: "KEY=VALUE" (or "KEY" for ARG without default), quotes removed.
	 * HEALTHCHECK: "NONE", or "CMD" followed by the shell text or the JSON strings.
	 * ONBUILD: the inner instruction's text (parsed in `onbuild`). */
	char **args;
	char *original;	 /* the instruction text after continuations are joined */
	DfKeyValue *kvs; /* ENV, LABEL, ARG */
	size_t n_kvs;
	DfHeredoc *heredocs; /* RUN, COPY, ADD (for ONBUILD: on the inner instruction) */
	size_t n_heredocs;
	struct DfInstruction *onbuild; /* ONBUILD's inner instruction */
} DfInstruction;

typedef struct Dockerfile {
	char *filename;
	char escape;  /* '\\' or '`' */
	char *syntax; /* `# syntax=` directive, NULL if absent */
	char *check;  /* `# check=` directive, NULL if absent */
	DfInstruction *insts;
	size_t n_insts;
} Dockerfile;

/* A Dockerfile is hostile input. Besides its size (capped where it is read), the parser caps
 * what later stages loop over, each an error naming FILENAME:LINE; parsing is linear in the
 * input (long lines, a million continuations, huge heredocs or JSON arrays). */
#define DF_MAX_INSTRUCTIONS 10000
#define DF_MAX_ITEMS 4096	 /* flags, arguments, pairs and heredocs of one instruction */
#define DF_MAX_ITEMS_TOTAL 16384 /* the same, summed over the file */
#define DF_MAX_HEREDOCS 64

/* Parses a Dockerfile. Errors (KILN_EFAIL, exit 1) read
 * "FILENAME:LINE: what is wrong: 'offending text'", the text cut to STR_EXCERPT_MAX bytes with
 * anything unprintable escaped. */
int dockerfile_parse(const char *filename, const char *data, size_t len, Dockerfile **ret,
		     KilnError **err);
void dockerfile_free(Dockerfile *df);
static inline void dockerfile_freep(Dockerfile **df)
{
	dockerfile_free(*df);
}

/* Value of flag --NAME=V on an instruction (last one wins), NULL when absent; `--link` alone
 * gives "". name may be given with or without the leading "--". */
const char *df_instruction_flag(const DfInstruction *inst, const char *name);

/* All values of a repeatable flag (e.g. --mount, --exclude), NULL-terminated, caller frees with
 * strv_free. Never NULL. */
char **df_instruction_flag_all(const DfInstruction *inst, const char *name);
