#!/usr/bin/env bash
# make readme-check: run the README's "By hand" walk from the README's own
# code blocks (those fenced as ```sh by-hand), in order, as one bash script
# with a fresh $HOME, and check what it printed. The README and this check
# cannot drift: the commands run are the ones the README shows.
#
# READMEWALK_TIMEOUT bounds the whole walk (seconds, default 300: it starts
# with make build). Everything the walk starts runs in its own process
# group, which is stopped at the end whatever happened.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
TIMEOUT=${READMEWALK_TIMEOUT:-300}
WORK=$(mktemp -d -t minimesh-readme.XXXXXX)
chmod 700 "$WORK"
WALK_HOME=$WORK/home
mkdir -m 700 "$WALK_HOME"
LOG=$WORK/walk.log
pgid=

fail() {
	echo "readme-walk: $*" >&2
	if [ -s "$LOG" ]; then
		echo "--- what the walk printed:" >&2
		cat "$LOG" >&2
	fi
	for f in "$WALK_HOME"/.local/state/minimesh/*.log; do
		[ -f "$f" ] || continue
		echo "--- $f (last 20 lines):" >&2
		tail -n 20 "$f" >&2
	done
	exit 1
}

stop_walk() {
	[ -n "$pgid" ] || return 0
	kill -TERM -- "-$pgid" 2>/dev/null || true
	for _ in $(seq 1 150); do # the proxies drain for up to --drain (10 s)
		kill -0 -- "-$pgid" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL -- "-$pgid" 2>/dev/null || true
	pgid=
}

cleanup() {
	stop_walk
	rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The blocks, one file each; the walk shows each and sources it, so its
# variables and background jobs carry over to the next, as in a terminal.
awk -v dir="$WORK" '
	/^```sh by-hand[[:space:]]*$/ { n++; f = dir "/block-" n ".sh"; printf "" > f; inblock = 1; next }
	inblock && /^```[[:space:]]*$/ { inblock = 0; close(f); next }
	inblock { print > f }
	END { if (inblock) exit 1; print n + 0 > (dir "/blocks") }
' README.md || fail "README.md has an unterminated sh by-hand block"
blocks=$(cat "$WORK/blocks")
[ "$blocks" -gt 0 ] || fail "README.md has no sh by-hand blocks"
for i in $(seq 1 "$blocks"); do
	printf 'echo "== README block %d"\ncat %q\n. %q\n' "$i" "$WORK/block-$i.sh" "$WORK/block-$i.sh"
done >"$WORK/walk.sh"
cat "$WORK"/block-*.sh >"$WORK/all-blocks.sh"

# The walk must be the one the issue asks for; a README that lost its
# blocks must not pass by running nothing.
for want in 'make build' 'bin/meshd ' 'token create' '--upstream api=' 'examples/mesh.yaml' 'curl -s http://127.0.0.1:15001/hello' 'kill $(jobs -p)'; do
	grep -qF -- "$want" "$WORK/all-blocks.sh" || fail "the README's sh by-hand blocks no longer contain: $want"
done

# The walk's ports must be free: a daemon that cannot bind would leave the
# check talking to whatever holds the port.
for port in $(grep -oE '127\.0\.0\.1:[0-9]+' "$WORK/all-blocks.sh" | sort -u | cut -d: -f2); do
	if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
		fail "port $port, which the README's walk uses, is taken; stop what listens there first"
	fi
done

# The Go toolchain keeps its caches and settings where they are.
export GOPATH GOCACHE GOMODCACHE GOENV
GOPATH=$(go env GOPATH) GOCACHE=$(go env GOCACHE) GOMODCACHE=$(go env GOMODCACHE) GOENV=$(go env GOENV)

echo "== the README's walk ($blocks blocks), home $WALK_HOME"
HOME=$WALK_HOME setsid bash -euo pipefail "$WORK/walk.sh" >"$LOG" 2>&1 </dev/null &
pgid=$!
deadline=$((SECONDS + TIMEOUT))
while kill -0 "$pgid" 2>/dev/null; do
	if [ "$SECONDS" -ge "$deadline" ]; then
		stop_walk
		fail "the walk did not finish within ${TIMEOUT}s"
	fi
	sleep 0.2
done
rc=0
wait "$pgid" || rc=$?
[ "$rc" -eq 0 ] || fail "the walk failed (exit $rc)"
# Its last block stopped what it started: nothing of it may be left.
for _ in $(seq 1 150); do
	kill -0 -- "-$pgid" 2>/dev/null || break
	sleep 0.1
done
if kill -0 -- "-$pgid" 2>/dev/null; then
	fail "processes the walk started were still running 15 s after its last block: $(ps -o pid=,args= -g "$pgid" | tr '\n' ';')"
fi
pgid=

# What the README says the walk shows.
expect() { # description pattern
	grep -qE -- "$2" "$LOG" || fail "the walk did not show $1 (no line matching: $2)"
}
expect "api's answer to web's verified identity" '"peer": "spiffe://minimesh\.local/ns/default/sa/web"'
expect "the AuthorizationPolicy's 403 on /admin" '^403$'
expect "web's call to api through its proxy" '"status": 200'
expect "the ConfigFile's content" 'hello from the mesh'
expect "an access log line" '"path":"/hello"'
[ "$(grep -c 'SYNCED' "$LOG")" -ge 2 ] || fail "meshctl proxy-status did not show both proxies SYNCED"
cat "$LOG"
echo "== readme-walk: the README's By hand walk works"
