#!/usr/bin/env bash
# Counts requests of one kind in a docker-registry access log (combined log format, as start.sh's
# registries write it: REG_<NAME>_ACCESS_LOG), so a test can say "this push uploaded N blobs".
#
# Usage: tests/registry/accesslog.sh KIND LOG [SKIP]
#   SKIP: lines to leave out at the start (take `wc -l <LOG` before the step, pass it after)
# KIND:
#   uploads    blob uploads the registry committed: PUT .../blobs/uploads/...?digest= answered 201,
#              or a monolithic POST .../blobs/uploads/?digest= answered 201
#   mounts     cross-repository mounts: POST .../blobs/uploads/?mount=...&from=... answered 201
#   manifests  manifest PUTs answered 201
#   blob-heads HEAD .../blobs/sha256:... (any status)
#   blob-gets  GET .../blobs/sha256:... answered 200 or 307
#   requests   every request
# Prints the number.
set -euo pipefail
if [ $# -lt 2 ] || [ $# -gt 3 ]; then
	echo "usage: $0 uploads|mounts|manifests|blob-heads|blob-gets|requests LOG [SKIP]" >&2
	exit 2
fi
kind=$1 log=$2 skip=${3:-0}
case $kind in uploads | mounts | manifests | blob-heads | blob-gets | requests) ;; *)
	echo "accesslog.sh: unknown kind '$kind'" >&2
	exit 2
	;;
esac
[ -r "$log" ] || { echo "accesslog.sh: cannot read $log" >&2; exit 2; }
# a line: HOST - USER [DATE] "METHOD URI PROTO" STATUS BYTES "REFERER" "AGENT"
awk -v kind="$kind" -v skip="$skip" '
NR <= skip { next }
{
	if (!match($0, /"[A-Z]+ [^ "]+ HTTP\/[0-9.]+" [0-9]+/)) next
	split(substr($0, RSTART + 1, RLENGTH - 1), f, /[ "]+/)
	m = f[1]; uri = f[2]; st = f[4]
	blob_upload = uri ~ /^\/v2\/.+\/blobs\/uploads\//
	if (kind == "requests") n++
	else if (kind == "uploads") {
		if (blob_upload && st == 201 && uri ~ /[?&]digest=/ && uri !~ /[?&]mount=/ && (m == "PUT" || m == "POST")) n++
	} else if (kind == "mounts") {
		if (blob_upload && st == 201 && m == "POST" && uri ~ /[?&]mount=/) n++
	} else if (kind == "manifests") {
		if (m == "PUT" && st == 201 && uri ~ /^\/v2\/.+\/manifests\/[^\/]+$/) n++
	} else if (kind == "blob-heads") {
		if (m == "HEAD" && uri ~ /^\/v2\/.+\/blobs\/sha256:[0-9a-f]+$/) n++
	} else if (kind == "blob-gets") {
		if (m == "GET" && (st == 200 || st == 307) && uri ~ /^\/v2\/.+\/blobs\/sha256:[0-9a-f]+$/) n++
	}
}
END { print n + 0 }' "$log"
