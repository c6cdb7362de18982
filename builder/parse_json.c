#include "parse_json.h"

#include <errno.h>

/* json_decrefp() comes from jansson (>= 2.9) */
#define _cleanup_json_ __attribute__((cleanup(json_decrefp)))

static json_t *strv_to_json(char *const *v)
{
	json_t *arr = json_array();

	for (; arr && v && *v; v++)
		if (json_array_append_new(arr, json_string(*v)) < 0) {
			json_decref(arr);
			return NULL;
		}
	return arr;
}

static json_t *heredocs_to_json(const DfInstruction *inst)
{
	json_t *arr = json_array();

	for (size_t i = 0; arr && i < inst->n_heredocs; i++) {
		const DfHeredoc *h = &inst->heredocs[i];
		json_t *o =
		    json_pack("{s:s, s:s, s:b, s:b}", "name", h->name, "content",
			      h->content ? h->content : "", "expand", h->expand, "chomp", h->chomp);
		if (!o || json_array_append_new(arr, o) < 0) {
			json_decref(arr);
			return NULL;
		}
	}
	return arr;
}

static json_t *instruction_to_json(const DfInstruction *inst)
{
	json_t *onbuild = json_null();

	if (inst->onbuild && inst->onbuild->keyword) {
		onbuild = instruction_to_json(inst->onbuild);
		if (!onbuild)
			return NULL;
	}
	/* "o" steals each reference, also when json_pack fails */
	return json_pack("{s:I, s:I, s:s, s:o, s:b, s:o, s:o, s:o}", "line", (json_int_t)inst->line,
			 "end_line", (json_int_t)inst->end_line, "keyword", inst->keyword, "flags",
			 strv_to_json(inst->flags), "json", inst->json, "args",
			 strv_to_json(inst->args), "heredocs", heredocs_to_json(inst), "onbuild",
			 onbuild);
}

int dockerfile_to_json(const Dockerfile *df, json_t **ret, KilnError **err)
{
	char esc[2] = {df->escape ? df->escape : '\\', 0};
	_cleanup_json_ json_t *directives = json_pack("{s:s}", "escape", esc);
	_cleanup_json_ json_t *insts = json_array();

	if (!directives || !insts)
		return kiln_error(err, ENOMEM, "out of memory");
	if (df->syntax && json_object_set_new(directives, "syntax", json_string(df->syntax)) < 0)
		return kiln_error(err, EINVAL, "syntax directive is not valid utf-8");
	if (df->check && json_object_set_new(directives, "check", json_string(df->check)) < 0)
		return kiln_error(err, EINVAL, "check directive is not valid utf-8");
	for (size_t i = 0; i < df->n_insts; i++) {
		json_t *o = instruction_to_json(&df->insts[i]);
		if (!o || json_array_append_new(insts, o) < 0)
			return kiln_error(err, EINVAL,
					  "%s:%u: instruction is not valid utf-8 or out of memory",
					  df->filename, df->insts[i].line);
	}
	json_t *root = json_pack("{s:O, s:O}", "directives", directives, "instructions", insts);
	if (!root)
		return kiln_error(err, ENOMEM, "out of memory");
	*ret = root;
	return 0;
}
