#!/usr/bin/env bash
# The acceptance build: a multi-stage Dockerfile on busybox with ~3000 copied files, deletions
# of base and copied files, --chown and chmod; the result read back with skopeo and umoci.
. "$(dirname "$0")/lib.sh"
require_userns

ctx=$(newdir ctx)
mkdir -p "$ctx/files"
n=0
for s in 0 1 2 3 4 5 6 7 8 9; do
	for dd in 0 1 2 3 4 5 6 7 8 9; do
		mkdir -p "$ctx/files/sub$s/d$dd"
		for f in 00 01 02 03 04 05 06 07 08 09 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29; do
			printf 'file %s/%s/%s\n%*s\n' "$s" "$dd" "$f" $((n % 300)) '' >"$ctx/files/sub$s/d$dd/f$f.txt"
			n=$((n + 1))
		done
	done
done
head -c 300000 /dev/urandom >"$ctx/files/sub9/big.bin"
echo "owned by app" >"$ctx/x"
cat >"$ctx/Dockerfile" <<'DF'
FROM busybox AS build
WORKDIR /src
COPY files/ ./
RUN rm /bin/vi && rm -r sub3 && rm sub0/d0/f00.txt && echo hi > made.txt
ENV A=1
CMD ["sh", "-c", "echo $A"]

FROM busybox
COPY --from=0 /src /app
COPY --chown=app:app x /home/app/x
RUN chmod 600 /app/made.txt
USER app
CMD ["sh", "-c", "cat /home/app/x"]
DF

# What /app must hold: the context's files/ less what the RUN removed, plus made.txt.
expect=$(newdir expect)
cp -a "$ctx/files/." "$expect/"
rm -r "$expect/sub3" "$expect/sub0/d0/f00.txt"
echo hi >"$expect/made.txt"
tree_sums() { (cd "$1" && find . -type f -print0 | sort -z | xargs -0r sha256sum); }
tree_dirs() { (cd "$1" && find . -type d | sort); }
tree_sums "$expect" >"$T/expect.sums"
tree_dirs "$expect" >"$T/expect.dirs"

# verify LABEL OUT.TAR: reads the archive with skopeo and umoci and checks the final image
verify() {
	local what=$1 tar=$2 v
	v=$(newdir "verify-$what")
	if check "$what: skopeo inspect --raw" skopeo inspect --raw "oci-archive:$tar"; then
		cp "$OUT" "$v/raw.json"
		check_jq "$what: raw is an index with linux/amd64 or a manifest" \
			'if .manifests then ([.manifests[].platform | select(.architecture == "amd64" and .os == "linux")] | length == 1) else (.config.digest | startswith("sha256:")) end' \
			"$v/raw.json"
	fi
	if check "$what: skopeo inspect --config" skopeo inspect --config "oci-archive:$tar"; then
		cp "$OUT" "$v/config.json"
		check_jq "$what: config User app" '.config.User == "app"' "$v/config.json"
		check_jq "$what: config Cmd" '.config.Cmd == ["sh","-c","cat /home/app/x"]' "$v/config.json"
		check_jq "$what: config Env keeps the base PATH" '.config.Env | any(startswith("PATH=/usr/local/sbin:"))' "$v/config.json"
		check_jq "$what: config platform" '.architecture == "amd64" and .os == "linux"' "$v/config.json"
		check_jq "$what: 5 diff_ids (2 base + COPY, COPY, RUN)" '.rootfs.diff_ids | length == 5' "$v/config.json"
	fi
	check "$what: skopeo copy + umoci unpack" unpack_archive "$tar" "$v" || return
	local root=$v/bundle/rootfs
	check_eq "$what: layers reused byte for byte from the base" \
		"$(oci_layers "$v/layout" | head -n 2 | sed 's|.*/||' | tr '\n' ' ')" \
		"$(jq -r '.layers[] | sub("sha256:"; "")' "$FIX/busybox-amd64.info.json" | tr '\n' ' ')"
	check_eq "$what: 5 layers" "$(oci_layers "$v/layout" | wc -l)" 5
	tree_sums "$root/app" >"$v/got.sums"
	tree_dirs "$root/app" >"$v/got.dirs"
	check "$what: /app has exactly the expected files and contents" diff -u "$T/expect.sums" "$v/got.sums"
	check "$what: /app has exactly the expected directories" diff -u "$T/expect.dirs" "$v/got.dirs"
	check_eq "$what: /app/made.txt mode" "$(stat -c %a "$root/app/made.txt" 2>&1)" 600
	check_eq "$what: /home/app/x content" "$(cat "$root/home/app/x" 2>&1)" "owned by app"
	check "$what: /bin/vi of the final stage's base is there" test -L "$root/bin/vi"
	check "$what: nothing of stage 1 outside /app" test ! -e "$root/src"
	if check "$what: list the layer tars" oci_list_layers "$v/layout" "$v/layers.txt"; then
		check_grep "$what: home/app/x is 1000/1000 in its layer" '^-[-rwx]{9} 1000/1000 .* (\./)?home/app/x$' "$v/layers.txt"
		check_grep "$what: app/made.txt is 0600 in its layer" '^-rw------- 0/0 .* (\./)?app/made.txt$' "$v/layers.txt"
		check_grep "$what: copied files are 0/0" '^-rw-r--r-- 0/0 .* (\./)?app/sub1/d1/f01.txt$' "$v/layers.txt"
		check_nogrep "$what: no uid from the builder's id map leaks" ' (1[0-9]{5}|[2-9][0-9]{5})/' "$v/layers.txt"
	fi
}

# 1) base image from --build-context, in a fresh store that has no busybox
out=$(newdir out)
if check "build with --build-context busybox=oci-archive:" \
	kiln build --root "$T/ctx-root" --platform linux/amd64 -t app:1 \
	--build-context "busybox=oci-archive:$FIX/busybox-amd64.oci.tar" \
	-o "type=oci,dest=$out/a.tar" "$ctx"; then
	verify build-context "$out/a.tar"
fi

# 2) base image from the store after `kiln load`
load_busybox
if check "build with FROM busybox from the store" \
	kiln build --platform linux/amd64 -t app:1 -o "type=oci,dest=$out/b.tar" "$ctx"; then
	verify store "$out/b.tar"
	check "images lists app:1" kiln images
	check_grep "app:1 is in the store" '(^|[[:space:]/])app(:|[[:space:]]+)1([[:space:]]|$)'
fi
if [ -s "$out/a.tar" ] && [ -s "$out/b.tar" ]; then
	check_eq "both ways give the same bytes" "$(sha256sum <"$out/a.tar")" "$(sha256sum <"$out/b.tar")"
fi

# 3) stage 1 alone: the deletions are whiteouts
if check "build --target build" \
	kiln build --platform linux/amd64 --target build -o "type=oci,dest=$out/s1.tar" "$ctx"; then
	v=$(newdir verify-stage1)
	if check "stage 1: skopeo copy + umoci unpack" unpack_archive "$out/s1.tar" "$v"; then
		check "stage 1: /bin/vi deleted" test ! -e "$v/bundle/rootfs/bin/vi"
		check "stage 1: /bin/sh kept" test -L "$v/bundle/rootfs/bin/sh"
		check "stage 1: /src/sub3 deleted" test ! -e "$v/bundle/rootfs/src/sub3"
		check "stage 1: /src/sub0/d0/f00.txt deleted" test ! -e "$v/bundle/rootfs/src/sub0/d0/f00.txt"
		check "stage 1: /src/sub0/d0/f01.txt kept" test -f "$v/bundle/rootfs/src/sub0/d0/f01.txt"
		check_eq "stage 1: made.txt" "$(cat "$v/bundle/rootfs/src/made.txt" 2>&1)" hi
		if check "stage 1: list the layer tars" oci_list_layers "$v/layout" "$v/layers.txt"; then
			check_grep "stage 1: whiteout for bin/vi" ' (\./)?bin/\.wh\.vi$' "$v/layers.txt"
			check_grep "stage 1: whiteout for src/sub3" ' (\./)?src/\.wh\.sub3$' "$v/layers.txt"
		fi
	fi
	if check "stage 1: skopeo inspect --config" skopeo inspect --config "oci-archive:$out/s1.tar"; then
		check_jq "stage 1: WorkingDir /src, Env A=1" \
			'.config.WorkingDir == "/src" and (.config.Env | index("A=1") != null)' "$OUT"
	fi
fi

finish
