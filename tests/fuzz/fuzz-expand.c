/* libFuzzer target: the word expander (${} modifiers, quotes, escapes, word splitting, shell
 * patterns). The first byte picks the escape char (a backtick, else a backslash); the rest up to
 * the first NUL is the word, what follows the NUL is the value of variable V (so patterns meet
 * arbitrary values). Every limit of expand.h must hold: no crash, no result over EXPAND_MAX_WORD,
 * no runaway time. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "builder/expand.h"
#include "common/cleanup.h"
#include "common/error.h"
#include "common/fdutil.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *value_v;

static const char *lookup(void *userdata, const char *name)
{
	(void)userdata;
	if (strcmp(name, "V") == 0)
		return value_v;
	if (strcmp(name, "A") == 0)
		return "hello world";
	if (strcmp(name, "E") == 0)
		return "";
	if (strcmp(name, "P") == 0)
		return "/usr/local/bin/tool.tar.gz";
	return NULL;
}

static void check_word(const char *word, char escape)
{
	_cleanup_free_ char *out = NULL, *unq = NULL;
	_cleanup_strv_free_ char **words = NULL;
	size_t budget = EXPAND_MAX_WORD * 2;

	if (expand_word(word, escape, lookup, NULL, &budget, &out, NULL) == 0 &&
	    strlen(out) > EXPAND_MAX_WORD)
		abort();
	if (expand_words(word, escape, lookup, NULL, NULL, &words, NULL) == 0 && !words)
		abort();
	(void)expand_unquote(word, escape, &unq, NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1 || size > 64 * 1024)
		return 0;
	char escape = data[0] == '`' ? '`' : '\\';
	const char *text = (const char *)data + 1;
	size_t n = size - 1;
	const char *nul = memchr(text, 0, n);
	size_t wlen = nul ? (size_t)(nul - text) : n;
	_cleanup_free_ char *word = xcalloc(wlen + 1, 1);
	_cleanup_free_ char *value = xcalloc(n - wlen + 1, 1);

	memcpy(word, text, wlen);
	if (nul)
		memcpy(value, nul + 1, n - wlen - 1);
	value_v = value;
	check_word(word, escape);
	/* the matcher on its own: the word as a pattern over the value */
	(void)expand_glob_match(word, wlen, value, strlen(value), escape);
	return 0;
}
