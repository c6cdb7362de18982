#!/usr/bin/env bash
# Reproducibility: the same inputs give the same bytes, cold cache or warm, whatever the
# context files' mtimes; --source-date-epoch sets created.
. "$(dirname "$0")/lib.sh"
require_userns

ctx=$(newdir ctx)
mkdir -p "$ctx/src/a/b"
for i in $(seq 1 50); do echo "line $i" >"$ctx/src/a/b/f$i.txt"; done
printf '#!/bin/sh\necho tool\n' >"$ctx/src/tool.sh"
chmod 755 "$ctx/src/tool.sh"
cat >"$ctx/Dockerfile" <<'DF'
FROM busybox AS gen
RUN mkdir -p /out && for i in 1 2 3 4 5; do echo "gen $i" > /out/g$i; done
FROM busybox
COPY src /opt/src
COPY --from=gen /out /opt/gen
RUN ln -s /opt/src/tool.sh /bin/tool && mkdir -p /var/empty && touch /var/empty/f
ENV X=1
CMD ["/opt/src/tool.sh"]
DF
o=$(newdir out)
bc="busybox=oci-archive:$FIX/busybox-amd64.oci.tar"
build() { # ROOT OUT.TAR [options]
	local root=$1 tar=$2
	shift 2
	kiln build --root "$root" --platform linux/amd64 --build-context "$bc" -t repro:1 "$@" \
		-o "type=oci,dest=$tar" "$ctx"
}
index_digest() { skopeo inspect --raw "oci-archive:$1" 2>/dev/null | sha256sum | cut -d' ' -f1; }
sum() { sha256sum <"$1" | cut -d' ' -f1; }

check "build 1 in a fresh root" build "$T/r1" "$o/1.tar"
check "build 2 in another fresh root" build "$T/r2" "$o/2.tar"
if [ -s "$o/1.tar" ] && [ -s "$o/2.tar" ]; then
	check_eq "same index/manifest digest from two fresh roots" "$(index_digest "$o/2.tar")" "$(index_digest "$o/1.tar")"
	check_eq "same archive bytes from two fresh roots" "$(sum "$o/2.tar")" "$(sum "$o/1.tar")"
	check "index.json identical" cmp <(tar -xOf "$o/1.tar" index.json) <(tar -xOf "$o/2.tar" index.json)
fi

check "build 3 in root 1 again (warm cache)" build "$T/r1" "$o/3.tar"
[ -s "$o/3.tar" ] && [ -s "$o/1.tar" ] && check_eq "warm cache gives the same bytes" "$(sum "$o/3.tar")" "$(sum "$o/1.tar")"

check "build 4 with --no-cache" build "$T/r1" "$o/4.tar" --no-cache
[ -s "$o/4.tar" ] && [ -s "$o/1.tar" ] && check_eq "--no-cache gives the same bytes" "$(sum "$o/4.tar")" "$(sum "$o/1.tar")"

find "$ctx" -exec touch -h -d '2021-02-03 04:05:06' {} +
check "build 5 after touching the context" build "$T/r5" "$o/5.tar"
[ -s "$o/5.tar" ] && [ -s "$o/1.tar" ] && check_eq "context mtimes do not change the bytes" "$(sum "$o/5.tar")" "$(sum "$o/1.tar")"

if check "build with --source-date-epoch 1700000000" build "$T/r1" "$o/6.tar" --source-date-epoch 1700000000; then
	if check "epoch: skopeo inspect --config" skopeo inspect --config "oci-archive:$o/6.tar"; then
		check_jq "epoch: created is 2023-11-14T22:13:20Z" '.created == "2023-11-14T22:13:20Z"' "$OUT"
	fi
	check_eq "epoch: a different epoch gives different bytes" \
		"$([ "$(sum "$o/6.tar")" != "$(sum "$o/1.tar")" ] && echo differs)" differs
fi
if check "SOURCE_DATE_EPOCH from the environment" env SOURCE_DATE_EPOCH=1700000000 \
	timeout "${KILN_TIMEOUT:-600}" "$KILN" build --root "$T/r7" --platform linux/amd64 --build-context "$bc" -t repro:1 \
	-o "type=oci,dest=$o/7.tar" "$ctx"; then
	[ -s "$o/6.tar" ] && check_eq "env SOURCE_DATE_EPOCH equals --source-date-epoch" "$(sum "$o/7.tar")" "$(sum "$o/6.tar")"
fi

finish
