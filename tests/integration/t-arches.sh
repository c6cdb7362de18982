#!/usr/bin/env bash
# Emulation beyond arm64: arm/v7, ppc64le and s390x RUN steps under QEMU registered in kiln's own
# user namespace, each from a busybox base made from Debian's busybox-static for that architecture.
. "$(dirname "$0")/lib.sh"
require_userns

ctx=$(newdir ctx)
printf 'FROM busybox\nRUN uname -m > /arch.txt && cat /arch.txt\n' >"$ctx/Dockerfile"

# Debian arch, OCI platform, what `uname -m` says under QEMU
while read -r deb platform machine; do
	base=$FIX/busybox-$deb.oci.tar
	if [ ! -f "$base" ]; then
		skip "$platform: no fixture busybox-$deb.oci.tar (KILN_TEST_ARCHES lacks $deb)"
		continue
	fi
	o=$(newdir "out-$deb")
	if check "$platform: build with an emulated RUN" kiln build --progress plain \
		--platform "$platform" --build-context "busybox=oci-archive:$base" \
		--report "$o/r.json" -o "type=local,dest=$o/root" "$ctx"; then
		check_grep "$platform: the step ran emulated" "\\[$platform emulated stage-0 2/2\\] RUN"
		check_eq "$platform: uname -m inside is $machine" "$(cat "$o/root/arch.txt" 2>/dev/null)" "$machine"
		check_jq "$platform: the report marks the RUN emulated" \
			'[.steps[] | select(.instruction | startswith("RUN"))] | length == 1 and all(.emulated)' "$o/r.json"
	fi
done <<'ARCHES'
armhf linux/arm/v7 armv7l
ppc64el linux/ppc64le ppc64le
s390x linux/s390x s390x
ARCHES

finish
