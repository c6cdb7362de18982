#!/usr/bin/env bash
# What a build shows: the live display on a terminal (--progress auto under a pty), plain and json
# output when not on a terminal, and CACHED marks on a warm build.
. "$(dirname "$0")/lib.sh"
require_userns
load_busybox

ctx=$(newdir ctx)
printf 'FROM busybox\nRUN echo visible-output; sleep 0.5\nRUN echo second\n' >"$ctx/Dockerfile"

# A pseudo-terminal for stderr: util-linux script(1); a terminal type, as a login shell has (the
# suite runs the unprivileged pass under env -i).
tty_build() {
	TERM=xterm script -qec "$(printf '%q ' "$KILN" build "$@")" /dev/null </dev/null >"$T/tty.out" 2>&1
}
if check "auto on a terminal: cold build" tty_build --no-cache "$ctx"; then
	check_grep "auto on a terminal: live header" '\[\+\] Building [0-9.]+s \([0-9]+/[0-9]+\)' "$T/tty.out"
	check_grep "auto on a terminal: finished steps scroll as => lines" '=> #[0-9]+ \[linux/amd64 stage-0 2/3\] RUN echo visible-output' "$T/tty.out"
	check_grep "auto on a terminal: ends FINISHED" 'FINISHED' "$T/tty.out"
	check_grep "auto on a terminal: redraws with cursor movement" $'\033\\[[0-9]+A' "$T/tty.out"
fi
if check "auto on a terminal: warm build" tty_build "$ctx"; then
	check_grep "auto on a terminal: CACHED marks" '=> CACHED #[0-9]+ ' "$T/tty.out"
fi
printf 'FROM busybox\nRUN echo before-failing; exit 5\n' >"$ctx/Dockerfile.bad"
tty_build -f "$ctx/Dockerfile.bad" "$ctx"
check_grep "auto on a terminal: a failing step shows its output" 'before-failing' "$T/tty.out"
check_grep "auto on a terminal: and ERROR" '=> ERROR #[0-9]+ .*exit 5' "$T/tty.out"

# Not a terminal: auto is plain
if check "auto without a terminal" kiln build "$ctx"; then
	check_grep "auto without a terminal is plain" '^#[0-9]+ CACHED$'
	check_nogrep "auto without a terminal has no escapes" $'\033'
fi
if check "json progress" kiln build --progress json --no-cache "$ctx"; then
	cp "$OUT" "$T/json.out"
	check_grep "json progress: output events" '"event":"output".*"line":"visible-output"' "$T/json.out"
	check "json progress: every stderr line is JSON" sh -c 'grep -v "^sha256:" "$1" | jq -e . >/dev/null' sh "$T/json.out"
fi
finish
