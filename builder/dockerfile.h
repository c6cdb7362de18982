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

/* Parses a Dockerfile. Errors (KILN_EFAIL, exit 1) read
 * "FILENAME:LINE: what is wrong: 'offending text'". */
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
