#!/usr/bin/env bash
# kiln parse: the JSON syntax tree of a Dockerfile, and file:line errors for malformed ones.
. "$(dirname "$0")/lib.sh"

d=$(newdir parse)
cd "$d" || exit 1
cat >Dockerfile <<'DF'
# syntax=docker/dockerfile:1
ARG BASE=busybox
FROM ${BASE} AS build
ENV A=1 B="two words" \
    C=3
RUN echo one \
    # a comment inside the continuation
    && echo two
RUN <<EOF
echo from heredoc
EOF
RUN --network=none echo x
COPY ["a b", "/dst/"]
ONBUILD RUN echo later
CMD ["sh", "-c", "echo $A"]
DF
keywords='["ARG","FROM","ENV","RUN","RUN","RUN","COPY","ONBUILD","CMD"]'
ins() { echo ".instructions[$1]"; }

if check "parse a valid Dockerfile" kiln parse Dockerfile; then
	cp "$OUT" tree.json
	check_jq "output is one JSON object" 'type == "object"' tree.json
	check_jq "syntax directive" '.directives.syntax == "docker/dockerfile:1"' tree.json
	check_jq "default escape directive" '.directives.escape == "\\"' tree.json
	check_jq "keywords in order" "[.instructions[].keyword] == $keywords" tree.json
	check_jq "line numbers" '[.instructions[].line] == [2,3,4,6,9,12,13,14,15]' tree.json
	check_jq "ARG args" "$(ins 0).args == [\"BASE=busybox\"]" tree.json
	check_jq "FROM is not expanded" "($(ins 1).args | join(\" \")) == \"\${BASE} AS build\"" tree.json
	check_jq "ENV pairs with quotes removed" "$(ins 2).args == [\"A=1\",\"B=two words\",\"C=3\"]" tree.json
	check_jq "ENV continuation end_line" "$(ins 2).end_line == 5" tree.json
	check_jq "RUN continuation joined, comment dropped" \
		"($(ins 3).args | length == 1) and ($(ins 3).args[0] | test(\"^echo one +&& echo two\$\"))" tree.json
	check_jq "RUN continuation spans lines 6-8" "$(ins 3).end_line == 8 and $(ins 3).json == false" tree.json
	check_jq "RUN heredoc recorded" \
		"($(ins 4).heredocs | length == 1) and ($(ins 4).heredocs | tostring | contains(\"echo from heredoc\"))" tree.json
	check_jq "RUN heredoc ends at its terminator" "$(ins 4).end_line == 11" tree.json
	check_jq "RUN flags" "$(ins 5).flags == [\"--network=none\"] and $(ins 5).args == [\"echo x\"]" tree.json
	check_jq "COPY JSON form" "$(ins 6).json == true and $(ins 6).args == [\"a b\",\"/dst/\"]" tree.json
	check_jq "ONBUILD holds the inner instruction" \
		"$(ins 7).onbuild.keyword == \"RUN\" and $(ins 7).onbuild.args == [\"echo later\"]" tree.json
	check_jq "onbuild is null elsewhere" \
		'[.instructions[] | select(.keyword != "ONBUILD") | .onbuild] | all(. == null)' tree.json
	check_jq "CMD JSON form, nothing expanded" \
		"$(ins 8).json == true and $(ins 8).args == [\"sh\",\"-c\",\"echo \$A\"]" tree.json
	check_jq "every instruction has the documented keys" \
		'[.instructions[] | has("line") and has("end_line") and has("keyword") and has("flags") and has("json") and has("args") and has("heredocs") and has("onbuild")] | all' tree.json
fi

cat >Dockerfile.bt <<'DF'
# escape=`
FROM busybox
RUN echo a `
    b
DF
if check "parse with escape=backtick" kiln parse Dockerfile.bt; then
	cp "$OUT" bt.json
	check_jq "escape directive is backtick" '.directives.escape == "`"' bt.json
	check_jq "backtick continues the line" '.instructions[1].args[0] | test("^echo a +b$")' bt.json
fi

printf 'FROM busybox\nRUN true\nFROBNICATE x\n' >bad-instr
check_fail "unknown instruction names file:line" 1 'bad-instr:3([^0-9]|$)' kiln parse bad-instr
check_grep "unknown instruction is named" '[Ff][Rr][Oo][Bb][Nn][Ii][Cc][Aa][Tt][Ee]'

printf 'FROM busybox\nRUN --bogus=1 true\n' >bad-flag
check_fail "bad flag names file:line" 1 'bad-flag:2([^0-9]|$)' kiln parse bad-flag
check_grep "bad flag is named" 'bogus'

printf 'FROM busybox\nRUN <<EOF\necho never closed\n' >bad-heredoc
check_fail "unterminated heredoc names file:line" 1 'bad-heredoc:2([^0-9]|$)' kiln parse bad-heredoc

printf 'FROM busybox\nENV A=1\nENV B="unterminated\nRUN true\n' >bad-quote
check_fail "unterminated quote names file:line" 1 'bad-quote:3([^0-9]|$)' kiln parse bad-quote

check_fail "missing file is an error naming it" 1 'no-such-file' kiln parse no-such-file

finish
