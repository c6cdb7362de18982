#!/usr/bin/env bash
# Issue 8, layers and store: a snapshot serves a layer blob only when kiln computed that blob's
# diff_id (a config claiming another layer's diff_id is refused); the store is private (0700 dirs,
# 0600 files; a root others can enter is warned about); RUN output without newlines is linear in
# time and bounded in memory; deep trees from a RUN step neither crash kiln nor leave its work dir
# behind; a layer path through a lower layer's directory symlink becomes a directory (as with
# BuildKit's overlayfs snapshotter and Docker's overlay2), in RUN steps and the local output
# alike; a socket is in neither the layer nor the snapshot the next step runs on.
. "$(dirname "$0")/lib.sh"
require_userns
load_busybox

C=$(newdir ctx)
D='sha256:[0-9a-f]{64}'
corpus=$T/corpus
build() { kiln build --platform linux/amd64 --progress plain "$@"; }
dockerfile() { printf '%s\n' "$1" >"$C/Dockerfile"; }
# layer digests of the single image in oci-archive FILE, one a line
archive_layers() {
	python3 - "$1" <<'PY'
import json, sys, tarfile
t = tarfile.open(sys.argv[1])
blob = lambda d: t.extractfile("blobs/sha256/" + d.split(":", 1)[1]).read()
m = json.loads(blob(json.loads(t.extractfile("index.json").read())["manifests"][0]["digest"]))
print("\n".join(l["digest"] for l in m["layers"]))
PY
}
# run_measured NAME OUTFILE cmd...: runs cmd (stdout+stderr to OUTFILE); prints "SECONDS MAXRSS_KIB
# STATUS", the peak resident set of every process of the command (getrusage of the children)
run_measured() {
	local out=$1
	shift
	python3 - "$out" "$@" <<'PY'
import resource, subprocess, sys, time
t = time.monotonic()
with open(sys.argv[1], "wb") as f:
    st = subprocess.run(sys.argv[2:], stdout=f, stderr=subprocess.STDOUT, timeout=600).returncode
print("%.2f %d %d" % (time.monotonic() - t,
                      resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, st))
PY
}

check "make the corpus" python3 "$_here/../hostile/make-corpus.py" "$FIX/busybox-amd64.oci.tar" \
	"$corpus" "$T/outside" "kilnseclayers$$" || finish

# --- 7: a snapshot is reused for a blob only when kiln computed the blob's diff_id ----------------
bb_diff=$(jq -r '.diff_ids[-1]' "$FIX/busybox-amd64.info.json")
bb_layer=$(jq -r '.layers[-1]' "$FIX/busybox-amd64.info.json")
claim=$(archive_layers "$corpus/diffid-claim.oci.tar" | tail -n 1)
dockerfile $'FROM busybox\nRUN true'
check "diffid: a busybox build has the snapshot of busybox's last layer" build "$C" &&
	check "diffid: the snapshot exists" test -d "$KILN_ROOT/snapshots/${bb_diff#sha256:}"
dockerfile $'FROM base\nRUN cat /claim-marker'
check_fail "diffid-claim: a config claiming busybox's diff_id for another blob is refused" 1 \
	"FROM: check layer $claim: layer diff_id mismatch: expected $bb_diff, got $D" \
	build --build-context "base=oci-archive:$corpus/diffid-claim.oci.tar" "$C"
check_nogrep "diffid-claim: no RUN step ran" '^#2 ' "$OUT"
check_fail "diffid-claim: a fresh root unpacks the blob and refuses it" 1 \
	"FROM: unpack layer $claim: layer diff_id mismatch: expected $bb_diff" \
	build --root "$T/root-claim" --build-context "base=oci-archive:$corpus/diffid-claim.oci.tar" "$C"
check_fail "diffid-claim: kiln load refuses it" 1 "layer $claim: layer diff_id mismatch" \
	kiln load "$corpus/diffid-claim.oci.tar"
# a genuine blob whose record is gone is read once, then recorded again
rm -f "$KILN_ROOT/diffids/${bb_layer#sha256:}"
dockerfile $'FROM base\nRUN test -x /bin/busybox'
check "diffid: the genuine busybox archive without a record builds (the blob is checked)" \
	build --build-context "base=oci-archive:$FIX/busybox-amd64.oci.tar" "$C"
check_eq "diffid: its diff_id is recorded again" \
	"$(cat "$KILN_ROOT/diffids/${bb_layer#sha256:}" 2>&1)" "$bb_diff"

# --- 8: the store is private; a root others can enter is warned about ---------------------------
R=$T/root-modes
check "modes: load into a fresh root" kiln load --root "$R" "$FIX/busybox-amd64.oci.tar"
dockerfile $'FROM busybox\nRUN echo x > /x'
check "modes: build" build --root "$R" -t modes:1 "$C"
check_eq "modes: the root is 0700" "$(stat -c %a "$R")" 700
check_eq "modes: every dir of the store is 0700 (snapshot contents are the images' own)" \
	"$(find "$R" -path "$R/snapshots/*" -prune -o -type d ! -perm 700 -print 2>&1)" ""
check_eq "modes: every file of the store is 0600" \
	"$(find "$R" -path "$R/snapshots/*" -prune -o -type f ! -perm 600 -print 2>&1)" ""
check "modes: the store has blobs, snapshots, cache entries and diff_id records" \
	test -n "$(ls "$R/blobs/sha256")" -a -n "$(ls "$R/snapshots")" -a -n "$(ls "$R/cache")" \
	-a -n "$(ls "$R/diffids")"
check_eq "modes: no warning for the root kiln made" "$(kiln images --root "$R" 2>&1 >/dev/null)" ""
RO=$T/root-open
mkdir -p "$RO"
chmod 755 "$RO"
check "open root: kiln load" kiln load --root "$RO" "$FIX/busybox-amd64.oci.tar"
check_eq "open root: one warning line" "$(grep -c "warning: store root '$RO' is accessible to other users (mode 0755)" "$OUT")" 1
check "open root: build" build --root "$RO" "$C"
check_eq "open root: the build warns once, with its progress" \
	"$(grep -c "^warning: store root '$RO' is accessible to other users" "$OUT")" 1
check "open root: json progress" kiln build --root "$RO" --progress json "$C"
check_grep "open root: the warning is a json note" '"event":"note".*store root .* is accessible to other users' "$OUT"
check_eq "open root: kiln leaves its mode alone" "$(stat -c %a "$RO")" 755
check_eq "open root: inside, dirs are 0700" \
	"$(find "$RO" -mindepth 1 -path "$RO/snapshots/*" -prune -o -type d ! -perm 700 -print)" ""

# --- 12: 40 MB of RUN output without a newline ---------------------------------------------------
dockerfile $'FROM busybox\nRUN head -c 40000000 /dev/zero | tr "\\0" a'
for mode in plain json; do
	read -r secs rss st < <(run_measured "$T/long-$mode.out" "$KILN" build --platform linux/amd64 \
		--no-cache --progress $mode "$C")
	echo "# 40 MB line, --progress $mode: ${secs}s, peak RSS ${rss} KiB"
	check_eq "long line ($mode): the build succeeds" "$st" 0
	check "long line ($mode): in a few seconds (${secs}s < 15s)" python3 -c "assert $secs < 15"
	check "long line ($mode): bounded memory (${rss} KiB < 32 MiB)" test "$rss" -lt 32768
done
check_eq "long line (plain): every byte shown, in pieces of at most 8 KiB" \
	"$(awk '$1 == "#2" && $3 ~ /^a+$/ { n += length($3); if (length($3) > m) m = length($3) } END { print n, m }' "$T/long-plain.out")" \
	"40000000 8192"
check_eq "long line (json): every byte shown, in pieces of at most 8 KiB" \
	"$(grep '^{' "$T/long-json.out" | jq -r 'select(.event == "output" and .step == 2) | .line | length' |
		awk '{ n += $1; if ($1 > m) m = $1 } END { print n, m }')" "40000000 8192"

# --- 13: deep trees from a RUN step ---------------------------------------------------------------
RD=$T/root-deep
check "deep: load into a fresh root" kiln load --root "$RD" "$FIX/busybox-amd64.oci.tar"
# /t/d/d/.../d, 20,000 deep: 200 renames of 100-deep chains (a path stays short for the shell)
deep='p=d; i=1; while [ $i -lt 100 ]; do p=$p/d; i=$((i+1)); done; mkdir -p /t/$p; i=1; while [ $i -lt 200 ]; do mkdir -p /n/$p && mv /t/d /n/$p/ && rmdir /t && mv /n /t || exit 9; i=$((i+1)); done'
deep_build() { # STACK_KIB NOFILE ARGS...
	local s=$1 n=$2
	shift 2
	(ulimit -s "$s" -n "$n" && kiln build --root "$RD" --platform linux/amd64 --progress plain "$@")
}
work_left() { find "$RD/work" -mindepth 1 -maxdepth 1 2>&1; }
dockerfile "FROM busybox
RUN $deep && echo made
RUN cd /t && i=0; while cd d 2>/dev/null; do i=\$((i+1)); [ \$i -lt 150 ] || break; done; echo depth ok"
check "deep: a 20,000-deep tree builds with a 1 MiB stack" deep_build 1024 1024 -o "type=oci,dest=$T/deep.tar" "$C" &&
	check_grep "deep: the next step runs on it" '^#3 [0-9.]+ depth ok' "$OUT"
check "deep: and with 64 open files" deep_build 8192 64 --no-cache -o "type=oci,dest=$T/deep.tar" "$C"
check_eq "deep: nothing left in ROOT/work" "$(work_left)" ""
dockerfile "FROM busybox
RUN $deep && exit 3"
check_fail "deep: a step failing after it made a deep tree fails cleanly" 1 'exit code 3' \
	deep_build 1024 64 "$C"
check_eq "deep: the failed build left nothing in ROOT/work" "$(work_left)" ""
# a build killed while its step holds the deep tree: the next prune removes what it left
dockerfile "FROM busybox
RUN $deep && echo made && sleep 120"
"$KILN" build --root "$RD" --platform linux/amd64 --progress plain "$C" >"$T/killed.log" 2>&1 &
pid=$!
for _ in $(seq 1 600); do grep -q ' made$' "$T/killed.log" && break; sleep 0.1; done
check_grep "deep: the killed build made its tree" ' made$' "$T/killed.log"
kill -9 "$pid"
wait "$pid" 2>/dev/null
check "deep: the dead build's work dir is there" test -n "$(work_left)"
(ulimit -s 1024 -n 64 && kiln prune --root "$RD") >"$OUT" 2>&1
check_eq "deep: kiln prune (1 MiB stack, 64 files) removed the dead build's work dir" "$(work_left)" ""
check_grep "deep: prune says so" 'removed [1-9][0-9]* temporary files and dirs' "$OUT"
(ulimit -s 1024 -n 64 && kiln prune --all --root "$RD") >"$OUT" 2>&1
check_eq "deep: kiln prune --all removes the deep snapshot" "$(ls "$RD/snapshots" | wc -l)" 2

# --- 15a: a path through a lower layer's directory symlink ---------------------------------------
dockerfile $'FROM base\nRUN test -d /lib && test ! -L /lib && test -f /lib/foo && test ! -e /usr/lib/foo && test "$(cat /usr/lib/a)" = a && echo shadowed'
if check "lower dir symlink: the layer's lib/ is a directory shadowing the lower lib -> usr/lib" \
	build --build-context "base=oci-archive:$corpus/lower-dir-symlink.oci.tar" \
	-o "type=local,dest=$T/shadow" "$C"; then
	check_grep "lower dir symlink: as BuildKit and Docker overlay2 have it" '^#2 [0-9.]+ shadowed$' "$OUT"
	check "lower dir symlink: the local output is what the step saw" \
		test -d "$T/shadow/lib" -a ! -L "$T/shadow/lib" -a -f "$T/shadow/lib/foo" \
		-a ! -e "$T/shadow/usr/lib/foo" -a -f "$T/shadow/usr/lib/a"
fi

# --- 15b: a socket is in neither the layer nor the next step's snapshot ---------------------------
printf '%s\n' '#include <string.h>' '#include <sys/socket.h>' '#include <sys/un.h>' \
	'int main(int c, char **v) { struct sockaddr_un a = {.sun_family = AF_UNIX};' \
	'  int s = socket(AF_UNIX, SOCK_STREAM, 0); strncpy(a.sun_path, v[1], sizeof(a.sun_path) - 1);' \
	'  return c < 2 || bind(s, (struct sockaddr *)&a, sizeof(a)) != 0; }' >"$T/mksock.c"
if cc -static -O2 -o "$C/mksock" "$T/mksock.c" 2>"$OUT"; then
	dockerfile "FROM busybox
COPY mksock /mksock
RUN mkdir /srv && /mksock /srv/sock && test -S /srv/sock && echo $$ > /srv/f
RUN test ! -e /srv/sock && cat /srv/f"
	if check "socket: builds" build -o "type=oci,dest=$T/sock,tar=false" "$C"; then
		check_grep "socket: the next step does not see it" "^#4 [0-9.]+ $$\$" "$OUT"
		oci_list_layers "$T/sock" "$T/sock.list"
		check_grep "socket: the layer has the step's file" ' srv/f$' "$T/sock.list"
		check_nogrep "socket: the layer has no socket" 'srv/sock' "$T/sock.list"
	fi
else
	skip "socket" "cc -static cannot build the socket helper (libc6-dev)"
fi

finish
