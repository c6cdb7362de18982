#!/usr/bin/env bash
# Dockerfile features end to end: ARG/ENV scoping and substitution, SHELL, exec-form and heredoc
# RUN, USER; COPY globs and trailing slashes, ADD of a local tar, --chmod, .dockerignore.
. "$(dirname "$0")/lib.sh"
require_userns
load_busybox

# localroot DIR: the rootfs of a single-platform type=local output
localroot() { if [ -d "$1/linux_amd64" ]; then echo "$1/linux_amd64"; else echo "$1"; fi; }
build() { kiln build --platform linux/amd64 --progress plain "$@"; }

# --- 1. variables, SHELL, RUN forms, USER
c=$(newdir run-ctx)
cat >"$c/Dockerfile" <<'DF'
ARG BASE=busybox
ARG VERSION=1.0
ARG NOTSEEN=global-only
FROM ${BASE} AS base
ARG VERSION
ENV APPDIR=${UNSET_VAR:-/opt/app}
ENV PLUS=${APPDIR:+set} EMPTYPLUS=${UNSET_VAR:+never}
WORKDIR ${APPDIR}/${VERSION}
RUN echo "version=$VERSION notseen=[$NOTSEEN]" > args.txt
ENV GREETING="hello world"
RUN env > /env.txt
RUN ["/bin/touch", "/exec-form"]
RUN <<EOF
echo heredoc-line1 > /heredoc.txt
echo heredoc-line2 >> /heredoc.txt
EOF
SHELL ["/bin/env", "MARKER=from-shell", "/bin/sh", "-c"]
RUN echo "shell:$MARKER" > /shell.txt
SHELL ["/bin/sh", "-c"]
RUN pwd > /pwd.txt
USER 1000
RUN echo "uid=$(id -u)" && id -u > /tmp/uid.txt
DF
o=$T/run-out
if check "build the variables/RUN Dockerfile" build -o "type=local,dest=$o" "$c"; then
	cp "$OUT" "$T/run.log"
	r=$(localroot "$o")
	check_eq "ARG redeclared in the stage gets the global default" "$(cat "$r/opt/app/1.0/args.txt" 2>&1)" \
		"version=1.0 notseen=[]"
	check "ENV \${UNSET:-default}" grep -qx 'APPDIR=/opt/app' "$r/env.txt"
	check "ENV \${V:+x}" grep -qx 'PLUS=set' "$r/env.txt"
	check "ENV \${UNSET:+x} is empty" grep -qx 'EMPTYPLUS=' "$r/env.txt"
	check "ENV with a quoted space" grep -qx 'GREETING=hello world' "$r/env.txt"
	check "ARG is in RUN's environment" grep -qx 'VERSION=1.0' "$r/env.txt"
	check "WORKDIR with variables" test -d "$r/opt/app/1.0"
	check_eq "RUN runs in WORKDIR" "$(cat "$r/pwd.txt" 2>&1)" /opt/app/1.0
	check "exec-form RUN" test -f "$r/exec-form"
	check_eq "RUN heredoc" "$(cat "$r/heredoc.txt" 2>&1 | tr '\n' ' ')" "heredoc-line1 heredoc-line2 "
	check_eq "SHELL is used for shell-form RUN" "$(cat "$r/shell.txt" 2>&1)" "shell:from-shell"
	check_eq "USER 1000: RUN id -u" "$(cat "$r/tmp/uid.txt" 2>&1)" 1000
	check_grep "USER 1000: --progress plain shows the RUN output" 'uid=1000' "$T/run.log"
fi

if check "build with --build-arg VERSION=2.0" build --build-arg VERSION=2.0 -o "type=local,dest=$T/run-out2" "$c"; then
	r=$(localroot "$T/run-out2")
	check_eq "--build-arg overrides the global ARG default" "$(cat "$r/opt/app/2.0/args.txt" 2>&1)" \
		"version=2.0 notseen=[]"
fi

# --- 2. COPY and ADD rules, --chmod, .dockerignore (no RUN)
c=$(newdir copy-ctx)
mkdir -p "$c/src/sub" "$c/secret" "$c/deep/er" "$c/pkg"
echo a >"$c/src/a.txt"
echo b >"$c/src/b.txt"
echo c >"$c/src/c.md"
echo d >"$c/src/sub/d.txt"
echo one >"$c/one.txt"
printf '#!/bin/sh\necho script\n' >"$c/script.sh"
chmod 644 "$c/script.sh"
echo ignored >"$c/a.log"
echo kept >"$c/keep.log"
echo s >"$c/secret/s.txt"
echo tmp >"$c/deep/er/x.tmp"
echo notmp >"$c/deep/er/x.txt"
echo packed >"$c/pkg/hello.txt"
tar -czf "$c/arch.tar.gz" -C "$c" pkg
rm -r "$c/pkg"
printf '*.log\nsecret/\n**/*.tmp\n!keep.log\n' >"$c/.dockerignore"
cat >"$c/Dockerfile" <<'DF'
FROM busybox
COPY src/*.txt /globs/
COPY one.txt /single/renamed.txt
COPY one.txt /intodir/
COPY src /srcdir
COPY src/*.txt src/c.md /multi/
ADD arch.tar.gz /unpacked/
ADD one.txt /added/
COPY --chmod=0755 script.sh /usr/local/bin/script.sh
COPY --chmod=640 one.txt /chmod/one.txt
COPY . /ctx/
DF
o=$T/copy-out
if check "build the COPY/ADD Dockerfile" build -o "type=local,dest=$o" "$c"; then
	r=$(localroot "$o")
	check_eq "COPY glob copies the matches into the dir" "$(cd "$r/globs" 2>/dev/null && ls | tr '\n' ' ')" "a.txt b.txt "
	check_eq "COPY file to a path without slash renames" "$(cat "$r/single/renamed.txt" 2>&1)" one
	check_eq "COPY file to a path with slash goes inside" "$(cat "$r/intodir/one.txt" 2>&1)" one
	check_eq "COPY dir copies its contents" "$(cd "$r/srcdir" 2>/dev/null && find . | sort | tr '\n' ' ')" \
		". ./a.txt ./b.txt ./c.md ./sub ./sub/d.txt "
	check_eq "COPY several sources into a dir" "$(cd "$r/multi" 2>/dev/null && ls | tr '\n' ' ')" "a.txt b.txt c.md "
	check_eq "ADD of a local tar.gz extracts it" "$(cat "$r/unpacked/pkg/hello.txt" 2>&1)" packed
	check "ADD does not leave the archive" test ! -e "$r/unpacked/arch.tar.gz"
	check_eq "ADD of a plain file copies it" "$(cat "$r/added/one.txt" 2>&1)" one
	check_eq "COPY --chmod=0755" "$(stat -c %a "$r/usr/local/bin/script.sh" 2>&1)" 755
	check_eq "COPY --chmod=640" "$(stat -c %a "$r/chmod/one.txt" 2>&1)" 640
	check ".dockerignore: !keep.log is copied" test -f "$r/ctx/keep.log"
	check ".dockerignore: *.log is not" test ! -e "$r/ctx/a.log"
	check ".dockerignore: secret/ is not" test ! -e "$r/ctx/secret"
	check ".dockerignore: **/*.tmp is not" test ! -e "$r/ctx/deep/er/x.tmp"
	check ".dockerignore: deep/er/x.txt is" test -f "$r/ctx/deep/er/x.txt"
fi

finish
