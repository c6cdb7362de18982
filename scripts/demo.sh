#!/usr/bin/env bash
# A short demonstration of kiln: installs the dependencies, builds kiln, makes a busybox base image
# from Debian's busybox-static (tests/fixtures), builds examples/hello into an oci-archive with
# plain progress output, then shows `kiln inspect` of the result and the raw index skopeo reads.
#
# Usage: scripts/demo.sh [OUTDIR]     (default: a new /tmp/kiln-demo.XXXXXX)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${KILN_BUILD_DIR:-build}
out=${1:-$(mktemp -d /tmp/kiln-demo.XXXXXX)}
mkdir -p "$out"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "dependencies"
scripts/install-deps.sh

step "building kiln ($build)"
[ -f "$build/build.ninja" ] || meson setup "$build"
ninja -C "$build"
kiln=$PWD/$build/builder/kiln

step "base image: busybox from Debian's busybox-static"
fix=$(tests/fixtures/cached.sh amd64 arm64)
ls -l "$fix"/busybox-multi.oci.tar

# A store of the demo's own, so it leaves the user's images alone.
export KILN_ROOT=$out/root

# Both platforms in one command: the arm64 RUN steps run under QEMU that kiln registers in its
# own user namespace (no host binfmt setup), and one index holds both images.
step "kiln build examples/hello"
set -x
"$kiln" build --progress plain --platform linux/amd64,linux/arm64 \
	--build-context "busybox=oci-archive:$fix/busybox-multi.oci.tar" \
	-t hello:latest -o "type=oci,dest=$out/hello.oci.tar" examples/hello
set +x

step "kiln inspect hello:latest"
"$kiln" inspect hello:latest

step "skopeo inspect --raw oci-archive:$out/hello.oci.tar"
skopeo inspect --raw "oci-archive:$out/hello.oci.tar" | jq .

step "done"
echo "artifact: $out/hello.oci.tar"
echo "load it elsewhere with: kiln load $out/hello.oci.tar   (or: podman load -i ...)"
