#!/usr/bin/env bash
# The image config every metadata instruction writes, ONBUILD triggers in a child build, ADD of a
# local archive, ENTRYPOINT resetting an inherited CMD, and history entries per instruction.
. "$(dirname "$0")/lib.sh"
require_userns
load_busybox

# --- a parent image with every metadata instruction and an ONBUILD trigger
p=$(newdir parent)
mkdir -p "$p/tree/sub"
echo payload >"$p/tree/sub/file"
tar -czf "$p/bundle.tar.gz" -C "$p/tree" sub
cat >"$p/Dockerfile" <<'DF'
FROM busybox
LABEL b.two="2" a.one=1
EXPOSE 8080 53/udp
VOLUME ["/data"]
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s --retries=2 CMD wget -q localhost || exit 1
ADD bundle.tar.gz /opt/
ONBUILD RUN echo triggered > /onbuild.txt
CMD ["echo", "parent"]
DF
if check "build parent with ONBUILD" kiln build -t parent:1 -o "type=oci,dest=$T/parent.tar" "$p"; then
	check "inspect parent --json" kiln inspect --json parent:1
	cp "$OUT" "$T/parent.json"
	c='.platforms[0].config'
	check_jq "labels" "$c.config.Labels == {\"a.one\":\"1\",\"b.two\":\"2\"}" "$T/parent.json"
	check_jq "exposed ports" "$c.config.ExposedPorts == {\"53/udp\":{},\"8080/tcp\":{}}" "$T/parent.json"
	check_jq "volumes" "$c.config.Volumes == {\"/data\":{}}" "$T/parent.json"
	check_jq "stop signal" "$c.config.StopSignal == \"SIGTERM\"" "$T/parent.json"
	check_jq "healthcheck" "$c.config.Healthcheck == {\"Test\":[\"CMD-SHELL\",\"wget -q localhost || exit 1\"],\"Interval\":30000000000,\"Timeout\":5000000000,\"Retries\":2}" "$T/parent.json"
	check_jq "onbuild recorded" "$c.config.OnBuild == [\"RUN echo triggered > /onbuild.txt\"]" "$T/parent.json"
	check_jq "history: one entry per instruction after FROM" "[$c.history[] | select(.comment == \"kiln.dockerfile.v0\")] | length == 8" "$T/parent.json"
	check_jq "history: only ADD has a layer" "[$c.history[] | select(.comment == \"kiln.dockerfile.v0\" and (.empty_layer | not))] | map(.created_by) == [\"ADD bundle.tar.gz /opt/\"]" "$T/parent.json"
	mkdir -p "$T/px" && tar -xf "$T/parent.tar" -C "$T/px"
	oci_list_layers "$T/px" "$T/parent.list"
	check_grep "ADD extracted the archive" ' opt/sub/file$' "$T/parent.list"
	check_nogrep "ADD did not copy the archive itself" 'bundle.tar.gz' "$T/parent.list"
fi

# --- a child FROM the parent: the trigger runs, is cleared, ENTRYPOINT resets the inherited CMD
c=$(newdir child)
cat >"$c/Dockerfile" <<'DF'
FROM parent:1
ENTRYPOINT ["/bin/sh", "-c"]
DF
if check "build child of an ONBUILD image" kiln build --progress plain -t child:1 -o "type=local,dest=$T/child-root" "$c"; then
	check_grep "the trigger ran as a step" 'RUN echo triggered' "$OUT"
	check_eq "the trigger's file is in the child" "$(cat "$T/child-root/onbuild.txt" 2>/dev/null)" triggered
	check "inspect child --json" kiln inspect --json child:1
	cp "$OUT" "$T/child.json"
	check_jq "child has no OnBuild" '.platforms[0].config.config.OnBuild == null' "$T/child.json"
	check_jq "ENTRYPOINT reset the inherited CMD" '.platforms[0].config.config.Cmd == null and .platforms[0].config.config.Entrypoint == ["/bin/sh","-c"]' "$T/child.json"
	check_jq "child keeps the parent's labels" '.platforms[0].config.config.Labels."a.one" == "1"' "$T/child.json"
fi

# --- a failing RUN: exit status 1, the line, the command and its exit code
f=$(newdir failing)
printf 'FROM busybox\nRUN echo before\nRUN sh -c "exit 7"\n' >"$f/Dockerfile"
check_fail "failing RUN names line and exit code" 1 'Dockerfile:3.*exit 7.*exit code 7' kiln build --progress plain "$f"
check_grep "RUN output is streamed with the step number" '^#[0-9]+ [0-9.]+ before$' "$OUT"

finish
