#!/usr/bin/env bash
# Starts faultproxy.py in front of one instance that tests/registry/start.sh started in DIR, waits
# until /v2/ answers through it, and adds its variables to DIR/env (stop.sh stops it with the
# rest). The proxy serves HTTPS (the suite's server certificate) when the instance does, else
# plain HTTP.
#
# Usage: tests/registry/proxy.sh DIR NAME INSTANCE [--rule JSON]...
#   NAME: a word ([a-z0-9]) naming this proxy; INSTANCE: tls1, tls2, token or plain
# Adds to DIR/env (P is NAME in upper case):
#   REG_PROXY_P_HOST (127.0.0.1:PORT), REG_PROXY_P_PORT, REG_PROXY_P_URL,
#   REG_PROXY_P_STORE_HOST (the blob-store listener redirects go to; its Location names
#   localhost:PORT by default), REG_PROXY_P_RULES (the control file: write JSON rules to a temp
#   file and mv it there; see faultproxy.py), REG_PROXY_P_LOG (JSON lines, one per request),
#   REG_PROXY_P_PID
set -euo pipefail
tools=$(cd "$(dirname "$0")" && pwd)
if [ $# -lt 3 ]; then
	echo "usage: $0 DIR NAME INSTANCE [--rule JSON]..." >&2
	exit 2
fi
dir=$(cd "$1" && pwd)
name=$2
inst=$3
shift 3
[[ $name =~ ^[a-z0-9]+$ ]] || { echo "proxy.sh: NAME is [a-z0-9]+, not '$name'" >&2; exit 2; }
# shellcheck disable=SC1091
. "$dir/env"
up=$(echo "$inst" | tr '[:lower:]' '[:upper:]')
P=$(echo "$name" | tr '[:lower:]' '[:upper:]')
url_var=REG_${up}_URL
upstream=${!url_var:-}
[ -n "$upstream" ] || { echo "proxy.sh: instance '$inst' is not running in $dir" >&2; exit 1; }
d=$dir/proxy-$name
mkdir -p "$d"
rm -f "$d/ready"
tls=()
case $upstream in https://*) tls=(--tls-cert "$REG_SERVER_CERT" --tls-key "$REG_SERVER_KEY") ;; esac
/usr/bin/python3 "$tools/faultproxy.py" --upstream "$upstream" --ca "$REG_CA" "${tls[@]}" \
	--rules "$d/rules.json" --log "$d/requests.log" --ready "$d/ready" "$@" \
	</dev/null >"$d/proxy.log" 2>&1 &
pid=$!
echo "$pid proxy-$name" >>"$dir/pids"
end=$((SECONDS + ${REG_START_TIMEOUT:-30}))
while [ ! -s "$d/ready" ]; do
	if ! kill -0 "$pid" 2>/dev/null || [ $SECONDS -ge $end ]; then
		echo "proxy.sh: faultproxy.py did not start: $(tail -n 5 "$d/proxy.log")" >&2
		kill "$pid" 2>/dev/null
		exit 1
	fi
	sleep 0.05
done
read -r port store <"$d/ready"
scheme=${upstream%%://*}
while :; do
	code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 --cacert "$REG_CA" "$scheme://127.0.0.1:$port/v2/" || true)
	case $code in 200 | 401) break ;; esac
	if [ $SECONDS -ge $end ]; then
		echo "proxy.sh: /v2/ through the proxy answered '$code'; log: $d/proxy.log" >&2
		kill "$pid" 2>/dev/null
		exit 1
	fi
	sleep 0.1
done
# the check above is not a test request: start the log empty
: >"$d/requests.log"
{
	cat "$dir/env"
	for kv in "HOST=127.0.0.1:$port" "PORT=$port" "URL=$scheme://127.0.0.1:$port" \
		"STORE_HOST=127.0.0.1:$store" "RULES=$d/rules.json" "LOG=$d/requests.log" "PID=$pid"; do
		printf 'export REG_PROXY_%s_%s=%q\n' "$P" "${kv%%=*}" "${kv#*=}"
	done
} >"$dir/env.tmp"
mv "$dir/env.tmp" "$dir/env"
echo "proxy.sh: $name on 127.0.0.1:$port -> $upstream" >&2
