#!/usr/bin/env bash
# kiln's whole test suite, as CI runs it (`CI=true bash .ci/run`, as root, on a fresh clone):
#   1. install the Debian packages, configure and build (meson + ninja)
#   2. unit tests (meson test): every TAP test point counts
#   3. fixtures: busybox base images made from Debian's busybox-static, cached outside the repo
#   4. integration tests (tests/integration/run.sh), as root and as the unprivileged kiln-tester;
#      for them, the host's binfmt_misc entries for aarch64 (and any qemu-*) are disabled, so
#      foreign-architecture RUN steps prove kiln needs no host setup (restored on exit)
# and ends with the line `N passed, N failed`; the exit status is non-zero when anything failed.
#
# Environment: CI=true exports KILN_MUST_WORK=1 (a skip for a missing kernel feature fails);
# KILN_BUILD_DIR (default build); KILN_TEST_ARCHES (fixture arches, default "amd64 arm64 armhf ppc64el s390x";
# with both, the two-platform base busybox-multi.oci.tar is made too);
# KILN_TEST_ONLY=unit|integration to run one half; KILN_IT_FILES="t-a t-b" runs only those
# integration files; KILN_SKIP_DEPS=1 skips the package install (a machine already set up).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
repo=$PWD
build=${KILN_BUILD_DIR:-build}
arches=${KILN_TEST_ARCHES:-amd64 arm64 armhf ppc64el s390x}
only=${KILN_TEST_ONLY:-}
tester=kiln-tester
if [ "${CI:-}" = true ]; then
	export KILN_MUST_WORK=1
fi
passed=0
failed=0
failures=()
started=$SECONDS
it=
binfmt_disabled=()

# Undo what the run changed on the host: re-enable the binfmt_misc entries it disabled.
restore_binfmt() {
	local e
	for e in "${binfmt_disabled[@]}"; do
		if echo 1 >"$e" 2>/dev/null; then
			echo "binfmt_misc: re-enabled $e"
		else
			echo "binfmt_misc: could not re-enable $e" >&2
		fi
	done
	binfmt_disabled=()
}
on_exit() {
	restore_binfmt
	[ -n "$it" ] && rm -rf "$it"
}
trap on_exit EXIT
trap 'exit 130' INT TERM

# Disables every enabled host binfmt_misc entry named qemu-* or handling aarch64 ELF files (by its
# interpreter's name or by its magic), so the integration tests cannot lean on a host registration.
disable_host_binfmt() {
	local bm=/proc/sys/fs/binfmt_misc e
	if [ ! -e "$bm/status" ]; then
		echo "binfmt_misc: not mounted on the host; nothing to disable"
		return 0
	fi
	for e in "$bm"/*; do
		case ${e##*/} in register | status) continue ;; esac
		[ -f "$e" ] || continue
		[ "$(head -n 1 "$e" 2>/dev/null)" = enabled ] || continue
		case ${e##*/} in
		qemu-*) ;;
		*)
			# aarch64 ELF: e_ident 7f454c46 020101 + 9 bytes, then e_type 0200, e_machine b700 (183)
			grep -Eqi '^interpreter .*aarch64|^magic 7f454c46020101[0-9a-f]{18}0200b700' "$e" || continue
			;;
		esac
		if echo 0 >"$e" 2>/dev/null; then
			binfmt_disabled+=("$e")
			echo "binfmt_misc: disabled $e for this run ($(grep -m1 '^interpreter' "$e"))"
		else
			echo "binfmt_misc: could not disable $e; foreign-arch tests may use it" >&2
		fi
	done
	[ ${#binfmt_disabled[@]} -gt 0 ] || echo "binfmt_misc: no qemu or aarch64 entry enabled on the host"
}

fail() {
	failed=$((failed + 1))
	failures+=("$1")
	echo "FAILED: $1" >&2
}
section() { echo; echo "=== $* ($((SECONDS - started))s)"; }

section "dependencies"
if [ "${KILN_SKIP_DEPS:-}" = 1 ]; then
	echo "KILN_SKIP_DEPS=1: package install skipped"
else
	scripts/install-deps.sh || fail "scripts/install-deps.sh"
fi

# RUN steps' private network needs /dev/net/tun for pasta, as udev hosts ship it (0666: opening it
# only lets a process create tap devices in network namespaces it owns). Some VMs ship 0600,
# which leaves the unprivileged tester on the host network.
fix_tun() {
	local mode
	[ "$(id -u)" -eq 0 ] && [ -c /dev/net/tun ] || return 0
	mode=$(stat -c %a /dev/net/tun)
	if [ "$mode" != 666 ] && chmod 0666 /dev/net/tun; then
		echo "/dev/net/tun: mode $mode -> 0666 (the udev default) for pasta"
	fi
}
fix_tun

section "build ($build)"
if [ -f "$build/build.ninja" ]; then
	meson setup --reconfigure "$build" >/dev/null || fail "meson setup --reconfigure $build"
else
	meson setup "$build" || fail "meson setup $build"
fi
ninja -C "$build" || fail "ninja -C $build"

# One .clang-format decides layout: a file it would change is a failure.
section "format (clang-format)"
mapfile -t csrc < <(git ls-files '*.c' '*.h' 2>/dev/null || find builder common layers platforms sandbox tests -name '*.[ch]')
if clang-format --dry-run --Werror "${csrc[@]}" >"$build/clang-format.log" 2>&1; then
	passed=$((passed + 1))
	echo "format: ${#csrc[@]} files as .clang-format wants"
else
	grep -m 5 'error:' "$build/clang-format.log" >&2
	fail "format: clang-format would change files (see $build/clang-format.log; run clang-format -i)"
fi

# --- unit tests ----------------------------------------------------------------------------
# run_unit BUILDDIR: meson test there; every TAP point counts, failures listed by name
run_unit() {
	local bdir=$1 counts up uf
	rm -f "$bdir/meson-logs/testlog.json"
	meson test -C "$bdir" --no-rebuild --print-errorlogs
	if [ -f "$bdir/meson-logs/testlog.json" ]; then
		# prints "passed failed" then one failure name a line
		counts=$(python3 - "$bdir/meson-logs/testlog.json" "$bdir" <<'PY'
import json, re, sys
passed, failed, names = 0, 0, []
for line in open(sys.argv[1]):
    t = json.loads(line)
    name, result, out = t["name"], t["result"], t.get("stdout") or ""
    p = f = 0
    for l in out.splitlines():
        m = re.match(r"(not ok|ok)\b\s*\d*\s*-?\s*(.*)", l)
        if not m:
            continue
        directive = m.group(2).split("#", 1)[1].strip().upper() if "#" in m.group(2) else ""
        if directive.startswith("SKIP"):
            continue
        if m.group(1) == "ok":
            p += 1
        elif not directive.startswith("TODO"):
            f += 1
            names.append("unit [" + sys.argv[2] + "]: %s: %s" % (name, m.group(2).split("#", 1)[0].strip()))
    if result == "SKIP":
        print("unit [" + sys.argv[2] + "]: %s skipped: %s" % (name, out.strip().splitlines()[-1] if out.strip() else ""),
              file=sys.stderr)
    elif result not in ("OK", "EXPECTEDFAIL") and f == 0:
        f = 1
        bail = [l for l in out.splitlines() if l.startswith("Bail out!")]
        names.append("unit [" + sys.argv[2] + "]: %s: %s%s" % (name, result, (" (" + bail[0] + ")") if bail else ""))
    passed += p
    failed += f
print(passed, failed)
for n in names:
    print(n)
PY
		)
		read -r up uf <<<"$(head -n 1 <<<"$counts")"
		passed=$((passed + ${up:-0}))
		failed=$((failed + ${uf:-0}))
		while IFS= read -r n; do [ -n "$n" ] && failures+=("$n"); done < <(tail -n +2 <<<"$counts")
		echo "unit [$bdir]: ${up:-0} passed, ${uf:-0} failed"
	else
		fail "unit [$bdir]: meson test wrote no testlog.json"
	fi
}

if [ "$only" != integration ]; then
	section "unit tests"
	run_unit "$build"
	# The namespace and tar code is where memory bugs live: the unit tests again under
	# AddressSanitizer and UndefinedBehaviorSanitizer.
	section "unit tests under ASan+UBSan (build-asan)"
	asan=build-asan
	if [ -f "$asan/build.ninja" ] || meson setup "$asan" -Db_sanitize=address,undefined \
		-Db_lundef=false -Dbuildtype=debug >/dev/null; then
		if ninja -C "$asan" >/dev/null; then
			ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
				run_unit "$asan"
		else
			fail "ninja -C $asan"
		fi
	else
		fail "meson setup $asan"
	fi
fi

# --- fixtures and integration tests --------------------------------------------------------
# run_integration LABEL cmd...: runs a run.sh, adds its totals and its failed checks
run_integration() {
	local label=$1 log line
	shift
	log=$(mktemp)
	"$@" 2>&1 | tee "$log"
	line=$(grep -E '^integration: [0-9]+ passed, [0-9]+ failed$' "$log" | tail -n 1)
	if [ -z "$line" ]; then
		fail "integration [$label]: run.sh ended without its totals"
	else
		# shellcheck disable=SC2086
		set -- $line
		passed=$((passed + $2))
		failed=$((failed + $4))
		while IFS= read -r n; do failures+=("integration [$label]: ${n#not ok - }"); done \
			< <(grep -E '^not ok - ' "$log")
	fi
	rm -f "$log"
}

ensure_tester() {
	id "$tester" >/dev/null 2>&1 || useradd -m -s /bin/bash "$tester" || return 1
	local f start
	start=$(awk -F: 'NF >= 3 { e = $2 + $3; if (e > m) m = e } END { print (m < 100000 ? 100000 : m) }' \
		/etc/subuid /etc/subgid 2>/dev/null)
	for f in /etc/subuid /etc/subgid; do
		touch "$f"
		grep -q "^$tester:" "$f" || echo "$tester:$start:65536" >>"$f"
	done
}

if [ "$only" != unit ]; then
	section "fixtures ($arches)"
	# shellcheck disable=SC2086
	fix=$(tests/fixtures/cached.sh $arches) || { fail "fixtures: tests/fixtures/cached.sh $arches"; fix=; }
	echo "fixtures in $fix"
	kbin=$repo/$build/builder/kiln
	if [ ! -x "$kbin" ]; then
		fail "integration: no kiln binary at $kbin"
	elif [ -n "$fix" ]; then
		# A world-readable copy: the repo may live where the unprivileged tester cannot read.
		it=$(mktemp -d /tmp/kiln-it.XXXXXX)
		cp "$kbin" "$it/kiln"
		cp -r tests/integration "$it/integration"
		cp -r tests/fixtures "$it/fixtures"
		cp -r tests/hostile "$it/hostile"
		cp -r tests/registry "$it/registry"
		mkdir "$it/fix"
		cp "$fix"/busybox-* "$it/fix/"
		chmod -R a+rX "$it"
		chmod 755 "$it"
		cd "$it" || exit 1 # the tester may not be able to enter the repo
		disable_host_binfmt

		section "integration tests as $(id -un)"
		# shellcheck disable=SC2086
		run_integration "$(id -un)" env KILN="$it/kiln" FIX="$it/fix" bash "$it/integration/run.sh" ${KILN_IT_FILES:-}

		if [ "$(id -u)" -eq 0 ]; then
			section "integration tests as $tester"
			if ensure_tester; then
				run_integration "$tester" runuser -u "$tester" -- env -i \
					PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin HOME="$(getent passwd "$tester" | cut -d: -f6)" \
					USER="$tester" LOGNAME="$tester" LANG=C.UTF-8 TMPDIR=/tmp \
					KILN="$it/kiln" FIX="$it/fix" KILN_MUST_WORK="${KILN_MUST_WORK:-0}" \
					bash "$it/integration/run.sh" ${KILN_IT_FILES:-}
			else
				fail "integration: could not create the user $tester"
			fi
		else
			echo "not root: the run as $tester is left out"
		fi
	fi
fi

restore_binfmt

section "summary"
if [ ${#failures[@]} -gt 0 ]; then
	echo "failures:"
	printf '  %s\n' "${failures[@]}"
fi
echo "suite took $((SECONDS - started))s"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
