#!/usr/bin/env bash
# Stops every process tests/registry/start.sh (and proxy.sh) started for DIR: the registries, the
# token server, fault proxies and the watchdog. Only the pids listed in DIR/pids whose command line
# still names DIR are signalled (TERM, then KILL after 5 s); nothing is removed, DIR/stopped is
# written. Exits 1 if a process survived.
#
# Usage: tests/registry/stop.sh DIR
#        tests/registry/stop.sh --watch PID DIR   (start.sh's watchdog: waits until process PID
#                                                   is gone or DIR removed, then stops DIR's
#                                                   processes; ends when DIR is stopped)
set -u

# alive PID: the process exists and is not a zombie
alive() {
	local st
	st=$(sed -n 's/^State:[[:space:]]*\([A-Z]\).*/\1/p' "/proc/$1/status" 2>/dev/null) || return 1
	[ -n "$st" ] && [ "$st" != Z ]
}

# ours PID DIR: PID's command line names DIR (so a reused pid is never signalled)
ours() {
	[ -r "/proc/$1/cmdline" ] && tr '\0' '\n' <"/proc/$1/cmdline" 2>/dev/null | grep -qF -- "$2"
}

# starttime PID: field 22 of /proc/PID/stat (tells a reused pid apart)
starttime() { sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f20; }

# stop_dir DIR [PIDS]: stops the processes listed in PIDS (default: DIR/pids' content)
stop_dir() {
	local dir=$1 list=${2-} pid name left=() end
	[ $# -ge 2 ] || list=$(cat "$dir/pids" 2>/dev/null) || return 0
	while read -r pid name; do
		[ -n "$pid" ] && [ "$pid" != $$ ] || continue
		if alive "$pid" && ours "$pid" "$dir"; then
			kill -TERM "$pid" 2>/dev/null && left+=("$pid:$name")
		fi
	done <<<"$list"
	end=$((SECONDS + 5))
	while [ ${#left[@]} -gt 0 ]; do
		local still=() e
		for e in "${left[@]}"; do alive "${e%%:*}" && still+=("$e"); done
		left=("${still[@]+"${still[@]}"}")
		[ ${#left[@]} -gt 0 ] || break
		if [ $SECONDS -ge $end ]; then
			for e in "${left[@]}"; do
				echo "stop.sh: ${e#*:} (pid ${e%%:*}) ignored TERM; KILL" >&2
				kill -KILL "${e%%:*}" 2>/dev/null
			done
			sleep 0.5
			still=()
			for e in "${left[@]}"; do alive "${e%%:*}" && still+=("$e"); done
			if [ ${#still[@]} -gt 0 ]; then
				echo "stop.sh: still running: ${still[*]}" >&2
				touch "$dir/stopped" 2>/dev/null
				return 1
			fi
			break
		fi
		sleep 0.05
	done
	touch "$dir/stopped" 2>/dev/null
	return 0
}

if [ "${1:-}" = --watch ]; then
	[ $# -eq 3 ] || { echo "usage: $0 --watch PID DIR" >&2; exit 2; }
	watched=$2
	dir=$3
	born=$(starttime "$watched")
	pids=$(cat "$dir/pids" 2>/dev/null) || true
	# the pid list is re-read while DIR exists, so a DIR removed under running servers still
	# gets them stopped
	while [ ! -e "$dir/stopped" ] && alive "$watched" && [ "$(starttime "$watched")" = "$born" ]; do
		[ -d "$dir" ] || break
		pids=$(cat "$dir/pids" 2>/dev/null) || true
		sleep 0.5
	done
	[ ! -e "$dir/stopped" ] || exit 0
	echo "stop.sh: process $watched is gone (or $dir was removed); stopping $dir"
	stop_dir "$dir" "$pids"
	exit
fi
if [ $# -ne 1 ]; then
	echo "usage: $0 DIR" >&2
	exit 2
fi
[ -d "$1" ] || exit 0
stop_dir "$(cd "$1" && pwd)"
