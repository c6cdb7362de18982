#!/usr/bin/env bash
# kiln load / images / inspect / rmi on the busybox fixtures, and digest-checked imports.
. "$(dirname "$0")/lib.sh"

# A store of its own: this file removes images.
export KILN_ROOT=$T/load-root
d=$(newdir load)
cd "$d" || exit 1
info=$FIX/busybox-amd64.info.json
images() { kiln images >"$d/images.txt" 2>&1; }

# one-line ERE for an image name in `kiln images`: "name:tag" or docker's "name   tag" columns
named() { echo "(^|[[:space:]/])$1(:|[[:space:]]+)$2([[:space:]]|$)"; }

check "load oci-archive" kiln load "$FIX/busybox-amd64.oci.tar"
if check "images after oci load" images; then
	check_grep "images lists busybox:latest" "$(named busybox latest)" images.txt
fi
if check "inspect --json busybox:latest" kiln inspect --json busybox:latest; then
	cp "$OUT" bb.json
	check_jq "inspect --json shows platform linux/amd64" \
		'[.. | objects | select(.architecture? == "amd64" and .os? == "linux")] | length > 0' bb.json
	for l in $(jq -r '.layers[]' "$info"); do
		check_grep "inspect --json lists layer ${l:7:12}" "${l#sha256:}" bb.json
	done
fi
if check "inspect busybox:latest (text)" kiln inspect busybox:latest; then
	check_grep "inspect text names linux/amd64" 'linux/amd64'
fi
check "load the same archive again" kiln load "$FIX/busybox-amd64.oci.tar"

check "load docker-archive" kiln load "$FIX/busybox-amd64.docker.tar"
if check "images after docker load" images; then
	check_grep "images lists the docker RepoTags name busybox:docker" "$(named busybox docker)" images.txt
fi
if check "inspect --json busybox:docker" kiln inspect --json busybox:docker; then
	check_jq "docker image platform linux/amd64" \
		'[.. | objects | select(.architecture? == "amd64" and .os? == "linux")] | length > 0' "$OUT"
fi

check "load nested-index oci-archive" kiln load "$FIX/busybox-amd64.nested.oci.tar"
if check "images after nested load" images; then
	check_grep "images lists busybox:nested" "$(named busybox nested)" images.txt
fi
if check "inspect --json busybox:nested" kiln inspect --json busybox:nested; then
	check_jq "nested image platform linux/amd64" \
		'[.. | objects | select(.architecture? == "amd64" and .os? == "linux")] | length > 0' "$OUT"
fi

mkdir layout && tar -xf "$FIX/busybox-amd64.oci.tar" -C layout
check "load an oci layout directory" kiln load oci:"$d/layout"
check "inspect an oci-archive: path directly" kiln inspect "oci-archive:$FIX/busybox-amd64.oci.tar"

check "rmi busybox:docker" kiln rmi busybox:docker
if check "images after rmi" images; then
	check_nogrep "busybox:docker is gone" "$(named busybox docker)" images.txt
	check_grep "busybox:latest is still there" "$(named busybox latest)" images.txt
fi
check_fail "rmi of an unknown name fails naming it" 1 'nosuchimage' kiln rmi nosuchimage:1
check "inspect busybox:latest after rmi of the other name" kiln inspect busybox:latest

# A copy with one byte flipped in the middle of the first layer blob.
export KILN_ROOT=$T/corrupt-root
layer=$(jq -r '.layers[0]' "$info")
python3 - "$FIX/busybox-amd64.oci.tar" corrupt.tar "$layer" <<'PY'
import shutil, sys, tarfile
src, dst, digest = sys.argv[1:4]
shutil.copyfile(src, dst)
with tarfile.open(src) as t:
    m = t.getmember("blobs/sha256/" + digest.split(":", 1)[1])
off = m.offset_data + m.size // 2
with open(dst, "r+b") as f:
    f.seek(off)
    b = f.read(1)
    f.seek(off)
    f.write(bytes([b[0] ^ 0xFF]))
PY
check_fail "corrupted layer blob is refused naming its digest" 1 "sha256:${layer#sha256:}" \
	kiln load corrupt.tar
if check "images after the failed load" images; then
	check_nogrep "nothing named from the corrupted archive" "$(named busybox latest)" images.txt
fi

size=$(stat -c %s "$FIX/busybox-amd64.oci.tar")
head -c $((size / 2)) "$FIX/busybox-amd64.oci.tar" >trunc.tar
check_fail "truncated archive is refused" 1 'trunc\.tar|[Tt]runcat|sha256:|[Uu]nexpected (end|EOF)|short' kiln load trunc.tar
check_fail "missing archive is refused naming it" 1 'no-such\.tar' kiln load no-such.tar

finish
