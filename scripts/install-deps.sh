#!/usr/bin/env bash
# Installs every Debian package kiln's build, tests and demo need. Idempotent.
set -euo pipefail

pkgs=(
	# build
	gcc meson ninja-build pkg-config clang-format
	libarchive-dev libzstd-dev zlib1g-dev libssl-dev libseccomp-dev libcap-dev
	libjansson-dev libcurl4-openssl-dev
	# runtime: subordinate id maps for rootless builds; pasta (passt) for RUN steps' private
	# network
	uidmap passt
	# foreign-architecture RUN steps: kiln registers these interpreters itself
	qemu-user-static
	# tests: fixtures, independent readers of kiln's output, process checks
	skopeo umoci jq python3 dpkg-dev procps
	# registry tests and bench/push.sh (tests/registry): real registries, the suite's CA, htpasswd
	# users, the token server (Debian's /usr/bin/python3 with jwt and cryptography)
	docker-registry apache2-utils openssl curl python3-jwt python3-cryptography
)

missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	if [ "$(id -u)" -ne 0 ]; then
		echo "install-deps: missing packages: ${missing[*]} (run as root, or install them)" >&2
		exit 1
	fi
	export DEBIAN_FRONTEND=noninteractive
	# A mirror mid-sync can fail one index (seen: security Packages of a foreign architecture the
	# test fixtures added); the install below fails for real if what it needs is missing.
	apt-get update -q || echo "install-deps: apt-get update reported errors; trying the install anyway" >&2
	apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
