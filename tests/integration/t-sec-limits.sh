#!/usr/bin/env bash
# Resource limits of RUN steps (issue 8, item 16): --ulimit (docker's syntax, repeatable) reaches
# the step; a fork bomb under nproc fails the step cleanly and leaves nothing running; a write
# beyond fsize fails the step; the ulimits are part of the step's cache key. --memory and
# --pids-limit work through a per-step cgroup when kiln's cgroup v2 is delegated, and are refused
# with a clear error when it is not.
. "$(dirname "$0")/lib.sh"
require_userns
load_busybox

token=kiln-lim-$$-$RANDOM
nap=$((3000 + $$ % 4000)) # a sleep duration no other process is likely to use
says() { printf '^#[0-9]+ [0-9.]+ %s$' "$1"; }

c=$(newdir ulimit)
cat >"$c/Dockerfile" <<'DF'
FROM busybox
RUN echo "limits n=$(ulimit -n) hn=$(ulimit -Hn) u=$(ulimit -u)" | tee /limits
DF
if check "--ulimit nofile=1024:2048 --ulimit nproc=300" kiln build --no-cache --progress plain \
	--ulimit nofile=1024:2048 --ulimit nproc=300 "$c"; then
	check_grep "the step sees the limits" "$(says "limits n=1024 hn=2048 u=300")"
fi
check "the same build again" kiln build --progress plain --ulimit nofile=1024:2048 --ulimit nproc=300 "$c"
check_grep "same ulimits: the step is cached" '^#2 CACHED'
check "other ulimits" kiln build --progress plain --ulimit nofile=512:2048 --ulimit nproc=300 "$c"
check_grep "other ulimits: the step runs again (part of the cache key)" "$(says "limits n=512 hn=2048 u=300")"
check_fail "an unknown ulimit is a usage error" 2 "--ulimit 'nofiles=5': expected NAME=SOFT" \
	kiln build --ulimit nofiles=5 "$c"
check_fail "soft above hard is a usage error" 2 "soft limit is above the hard limit" \
	kiln build --ulimit nofile=10:5 "$c"
check_fail "a hard limit above kiln's own is refused up front" 2 "above kiln's own" \
	bash -c "ulimit -n 4096 && exec \"\$KILN\" build --ulimit nofile=1024:8192 '$c'"

# A fork bomb (bounded, in case the limit did not hold) under nproc: the shell cannot fork, the
# step fails, and its sleepers die with it; as root of the step (never the host's root, which
# the kernel would not count) and as USER 1000.
b=$(newdir bomb)
cat >"$b/Dockerfile" <<DF
FROM busybox
RUN i=0; while [ \$i -lt 400 ]; do sleep $nap & i=\$((i+1)); done; echo "forked \$i $token"
DF
for who in root 1000; do
	[ "$who" = root ] || sed -i 's/^RUN/USER 1000:1000\nRUN/' "$b/Dockerfile"
	check_fail "fork bomb as $who under --ulimit nproc=40 fails the step" 1 \
		"can't fork|Resource temporarily unavailable" \
		kiln build --no-cache --progress plain --ulimit nproc=40 "$b"
	check_nogrep "$who: the bomb did not get its 400 processes" "$(says "forked 400 $token")"
	check_eq "$who: no sleeper of the bomb is left" "$(pgrep -cf "^sleep $nap\$")" "0"
done

f=$(newdir fsize)
cat >"$f/Dockerfile" <<'DF'
FROM busybox
RUN dd if=/dev/zero of=/big bs=1024 count=64 && echo wrote-all
DF
check_fail "a write beyond --ulimit fsize=16384 fails the step" 1 "exit code 153" \
	kiln build --no-cache --progress plain --ulimit fsize=16384 "$f"
check_nogrep "the write did not complete" "$(says wrote-all)"
check "without the limit the same write works" kiln build --no-cache --progress plain "$f"

# --- memory and pids: a delegated cgroup v2, or a clear error ---------------------------------
g=$(newdir cgroup)
cat >"$g/Dockerfile" <<'DF'
FROM busybox
RUN x=$(head -c 200000000 /dev/zero | tr '\0' a); echo "held ${#x}"
DF
p=$(newdir pids)
printf 'FROM busybox\nRUN i=0; while [ $i -lt 100 ]; do sleep 300 & i=$((i+1)); done; echo "forked $i"\n' >"$p/Dockerfile"
kiln doctor >"$T/doctor.txt" 2>&1
if grep -q '^ok   cgroup limits:' "$T/doctor.txt"; then
	check_fail "--memory 64m: a step holding 200 MB is killed" 1 "killed by the --memory limit" \
		kiln build --no-cache --progress plain --memory 64m "$g"
	check_fail "--pids-limit 20: a step forking 100 fails" 1 "can't fork|Resource temporarily" \
		kiln build --no-cache --progress plain --pids-limit 20 "$p"
	check "--pids-limit 200: the same step works" kiln build --no-cache --pids-limit 200 "$p"
	check_eq "no kiln step cgroup is left" \
		"$(find /sys/fs/cgroup -maxdepth 6 -name "kiln-[0-9]*-[0-9]*" -type d 2>/dev/null | wc -l)" 0
else
	check_grep "kiln doctor says why memory and pid limits are off" '^off  cgroup limits: memory and pid limits need a delegated cgroup v2' "$T/doctor.txt"
	check_fail "--memory without a delegated cgroup: a clear error" 1 \
		"memory and pid limits need a delegated cgroup v2: .*Delegate=yes" \
		kiln build --no-cache --memory 64m "$g"
	check_fail "--pids-limit without a delegated cgroup: a clear error" 1 \
		"memory and pid limits need a delegated cgroup v2" \
		kiln build --no-cache --pids-limit 20 "$p"
fi
check_fail "--memory below docker's minimum is a usage error" 2 "the minimum is 6m" \
	kiln build --memory 1m "$g"
check_fail "--pids-limit takes a number" 2 "--pids-limit 'lots'" kiln build --pids-limit lots "$g"

finish
