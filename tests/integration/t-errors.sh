#!/usr/bin/env bash
# Bad inputs: exit 1 (2 for usage errors) with a message naming the offending thing.
. "$(dirname "$0")/lib.sh"
require_userns
load_busybox

# mkctx NAME DOCKERFILE-TEXT: a context dir with that Dockerfile; prints its path
mkctx() {
	local c
	c=$(newdir "$1")/ctx
	mkdir -p "$c"
	printf '%s\n' "$2" >"$c/Dockerfile"
	echo "$c"
}
build() { kiln build --platform linux/amd64 "$@"; }

c=$(mkctx unknown $'FROM busybox\nFROBNICATE x\nRUN true')
check_fail "unknown instruction: exit 1 with Dockerfile:2" 1 'Dockerfile:2([^0-9]|$)' build "$c"
check_grep "unknown instruction is named" '[Ff][Rr][Oo][Bb][Nn][Ii][Cc][Aa][Tt][Ee]'

c=$(mkctx nostage $'FROM busybox\nCOPY --from=nope /x /y')
check_fail "COPY --from=nope names the missing stage or image" 1 'nope' build "$c"

c=$(mkctx outside $'FROM busybox\nCOPY ../x /x')
echo secret >"$c/../x"
check_fail "COPY ../x (outside the context) is refused" 1 '\.\./x' build -o "type=local,dest=$T/outside/out" "$c"
check "COPY ../x left nothing behind" test ! -e "$T/outside/out/x"

c=$(mkctx symlink $'FROM busybox\nCOPY evil/passwd /stolen')
ln -s /etc "$c/evil"
check_fail "context symlink leading outside is refused" 1 'evil' build -o "type=local,dest=$T/symlink/out" "$c"
check "the host's /etc/passwd was not copied" test ! -e "$T/symlink/out/stolen"

c=$(mkctx runfail $'FROM busybox\nRUN exit 3')
check_fail "RUN exit 3: exit 1 with Dockerfile:2" 1 'Dockerfile:2([^0-9]|$)' build "$c"
check_grep "RUN exit 3: the exit code is reported" '(exit|code|status)[^0-9]{0,12}3([^0-9]|$)'

c=$(mkctx target $'FROM busybox AS a\nRUN true')
check_fail "--target nosuch names the stage" 1 'nosuch' build --target nosuch "$c"

check_fail "unknown option: exit 2 naming it" 2 'frobnicate' kiln build --frobnicate "$c"
check_fail "unknown command: exit 2" 2 'nosuchcommand' kiln nosuchcommand

c=$(mkctx cache $'FROM busybox\nRUN --mount=type=cache,target=/x true')
check_fail "RUN --mount=type=cache is refused with Dockerfile:2" 1 'Dockerfile:2([^0-9]|$)' build "$c"

c=$(newdir nodockerfile)
check_fail "context without a Dockerfile" 1 'Dockerfile' build "$c"

c=$(mkctx skip $'FROM busybox AS broken\nRUN exit 1\n\nFROM busybox AS good\nRUN echo good > /good\n\nFROM broken AS after\nRUN true')
if check "--target good builds without running the broken stage" \
	build --target good -o "type=local,dest=$T/skip/out" "$c"; then
	r=$T/skip/out
	[ -d "$r/linux_amd64" ] && r=$r/linux_amd64
	check_eq "--target good: its RUN ran" "$(cat "$r/good" 2>&1)" good
fi

finish
