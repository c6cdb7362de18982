#!/usr/bin/env bash
# Output types (oci layout dir, docker archive, local rootfs) and `kiln inspect` of the result.
. "$(dirname "$0")/lib.sh"
require_userns
load_busybox

ctx=$(newdir ctx)
echo "hello from the context" >"$ctx/hello.txt"
cat >"$ctx/Dockerfile" <<'DF'
FROM busybox
WORKDIR /work
COPY hello.txt .
ENV GREETING=hi
RUN echo built > built.txt
USER app
CMD ["cat", "/work/hello.txt"]
DF
o=$(newdir out)
build() { kiln build --platform linux/amd64 -t app:1 "$@" "$ctx"; }

# config checks shared by every reader: FILE holds an image config
check_config() {
	local what=$1 f=$2
	check_jq "$what: Env" '.config.Env | (index("GREETING=hi") != null) and any(startswith("PATH="))' "$f"
	check_jq "$what: Cmd" '.config.Cmd == ["cat","/work/hello.txt"]' "$f"
	check_jq "$what: WorkingDir" '.config.WorkingDir == "/work"' "$f"
	check_jq "$what: User" '.config.User == "app"' "$f"
	check_jq "$what: created is the epoch by default" '.created == "1970-01-01T00:00:00Z"' "$f"
}

# --- type=oci,tar=false: an OCI layout directory
if check "build -o type=oci,tar=false" build -o "type=oci,dest=$o/layout,tar=false"; then
	check "layout: oci-layout file" test -f "$o/layout/oci-layout"
	check_jq "layout: index.json is an index" '.schemaVersion == 2 and (.manifests | length >= 1)' "$o/layout/index.json"
	check "layout: skopeo inspect oci:DIR" skopeo inspect "oci:$o/layout"
	if check "layout: skopeo inspect --config" skopeo inspect --config "oci:$o/layout"; then
		cp "$OUT" "$o/layout-config.json"
		check_config "layout" "$o/layout-config.json"
	fi
fi

# --- type=docker: a `docker load` archive
if check "build -o type=docker" build -o "type=docker,dest=$o/docker.tar"; then
	dx=$(newdir docker-x)
	if check "docker: tar extracts" tar -xf "$o/docker.tar" -C "$dx"; then
		check_jq "docker: manifest.json RepoTags has app:1" '.[0].RepoTags | index("app:1") != null' "$dx/manifest.json"
		cfg=$(jq -r '.[0].Config' "$dx/manifest.json" 2>/dev/null)
		check "docker: Config file exists" test -n "$cfg" -a -f "$dx/$cfg"
		[ -n "$cfg" ] && [ -f "$dx/$cfg" ] && check_config "docker" "$dx/$cfg"
		missing=0
		nl=0
		for l in $(jq -r '.[0].Layers[]' "$dx/manifest.json" 2>/dev/null); do
			nl=$((nl + 1))
			[ -f "$dx/$l" ] || missing=$((missing + 1))
		done
		check_eq "docker: 4 layers listed (2 base + COPY + RUN; WORKDIR may add one)" "$([ $nl -ge 4 ] && [ $nl -le 5 ] && echo yes || echo "$nl")" yes
		check_eq "docker: every Layers file exists" "$missing" 0
	fi
	check "docker: skopeo inspect docker-archive:" skopeo inspect "docker-archive:$o/docker.tar"
fi

# --- type=local: the rootfs (directly in DIR for one platform, as buildx does)
if check "build -o type=local" build -o "type=local,dest=$o/rootfs"; then
	r=$o/rootfs
	[ -d "$r/linux_amd64" ] && r=$r/linux_amd64
	check_eq "local: work/hello.txt" "$(cat "$r/work/hello.txt" 2>&1)" "hello from the context"
	check_eq "local: work/built.txt from RUN" "$(cat "$r/work/built.txt" 2>&1)" built
	check "local: bin/busybox from the base" test -f "$r/bin/busybox"
	check "local: etc/passwd from the base" grep -q '^app:x:1000:1000:' "$r/etc/passwd"
fi

# --- kiln inspect of the stored result
if check "inspect app:1 (text)" kiln inspect app:1; then
	check_grep "inspect text names linux/amd64" 'linux/amd64'
fi
if check "inspect --json app:1" kiln inspect --json app:1; then
	cp "$OUT" "$o/inspect.json"
	# the image config is the object that has both rootfs and config
	if check_jq "inspect --json holds an image config" \
		'[.. | objects | select(has("rootfs") and has("config") and has("history"))] | length == 1' \
		"$o/inspect.json"; then
		jq '.. | objects | select(has("rootfs") and has("config") and has("history"))' \
			"$o/inspect.json" >"$o/config.json"
		check_config "inspect" "$o/config.json"
		check_jq "history: 2 base entries + one per instruction" '.history | length == 8' "$o/config.json"
		check_jq "history: ENV, USER, CMD are empty_layer" \
			'[.history[-6:][] | .empty_layer == true] | .[2] and .[4] and .[5]' "$o/config.json"
		check_jq "history: COPY and RUN made layers" \
			'[.history[-6:][] | (.empty_layer // false)] | (.[1] | not) and (.[3] | not)' "$o/config.json"
		check_jq "history: created_by names the instructions" \
			'[.history[-6:][] | .created_by] | (.[1] | test("COPY")) and (.[3] | test("built.txt")) and (.[4] | test("USER"))' \
			"$o/config.json"
		check_jq "history: non-empty entries match diff_ids" \
			'([.history[] | select((.empty_layer // false) | not)] | length) == (.rootfs.diff_ids | length)' \
			"$o/config.json"
	fi
fi

finish
