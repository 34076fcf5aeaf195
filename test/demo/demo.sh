#!/usr/bin/env bash
# `make demo`: build passkeyd, start it with a private swtpm on a UDP port,
# walk through register + sign-in with test/demo/demo.py, stop it, clean up.
# Safe to run again and again; exits non-zero if any step fails.
#
#   PASSKEYD_BIN=path   use this daemon binary instead of building one
#   DEMO_KEEP=1         keep the temporary directory (daemon log, state)
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
py=/usr/bin/python3

say() { printf '%s\n' "$*"; }
die() { printf 'demo: %s\n' "$*" >&2; exit 1; }

# --- prerequisites (same packages the interop tests install) ----------------
missing() {
	local m=()
	command -v swtpm >/dev/null 2>&1 || m+=(swtpm)
	command -v swtpm_setup >/dev/null 2>&1 || m+=(swtpm_setup)
	"$py" -c 'import fido2' >/dev/null 2>&1 || m+=(python3-fido2)
	echo "${m[*]:-}"
}
if [ -n "$(missing)" ]; then
	if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
		say "demo: installing python3-fido2 swtpm swtpm-tools ..."
		export DEBIAN_FRONTEND=noninteractive
		apt-get install -y -q python3-fido2 swtpm swtpm-tools >/dev/null 2>&1 ||
			{ apt-get update -q >/dev/null && apt-get install -y -q python3-fido2 swtpm swtpm-tools >/dev/null; } ||
			die "apt-get install python3-fido2 swtpm swtpm-tools failed"
	fi
	[ -z "$(missing)" ] || die "missing $(missing): install python3-fido2 swtpm swtpm-tools (as root: apt-get install python3-fido2 swtpm swtpm-tools)"
fi

# --- workspace and cleanup -----------------------------------------------------
tmp=$(mktemp -d "${TMPDIR:-/tmp}/passkeyd-demo.XXXXXX")
pid=
cleanup() {
	local rc=$?
	if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
		kill -TERM "$pid" 2>/dev/null || true
		for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
		if kill -0 "$pid" 2>/dev/null; then
			say "demo: passkeyd did not stop on SIGTERM; killing it" >&2
			kill -KILL "$pid" 2>/dev/null || true
		fi
		wait "$pid" 2>/dev/null || true
	fi
	if [ "$rc" -ne 0 ] && [ -s "$tmp/passkeyd.log" ]; then
		say "--- last lines of the passkeyd log ---" >&2
		tail -n 30 "$tmp/passkeyd.log" >&2
	fi
	if [ "${DEMO_KEEP:-}" = 1 ]; then
		say "demo: kept $tmp"
	else
		rm -rf "$tmp"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- build ---------------------------------------------------------------------
if [ -n "${PASSKEYD_BIN:-}" ]; then
	bin=$PASSKEYD_BIN
else
	say "Building passkeyd ..."
	bin=$tmp/passkeyd
	(cd "$root" && go build -o "$bin" ./cmd/passkeyd) || die "go build ./cmd/passkeyd failed"
fi

# --- start the daemon ----------------------------------------------------------
port=$("$py" -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
say "Starting passkeyd with a private software TPM (swtpm), listening on UDP 127.0.0.1:$port ..."
"$bin" serve --state-dir "$tmp/state" --tpm swtpm --transport "udp:127.0.0.1:$port" \
	--prompt approve-all --control "" --log-level info 2>"$tmp/passkeyd.log" &
pid=$!

ready=
for _ in $(seq 100); do
	kill -0 "$pid" 2>/dev/null || { wait "$pid" || true; die "passkeyd exited during start-up"; }
	if "$py" -B -c "import sys; sys.path.insert(0, sys.argv[1]); import udp_transport as u; sys.exit(0 if u.ping_init(int(sys.argv[2])) else 1)" \
		"$root/test/interop" "$port" 2>/dev/null; then
		ready=1
		break
	fi
	sleep 0.1
done
[ -n "$ready" ] || die "passkeyd did not answer on UDP port $port within 10 s"
say

# --- the walkthrough -----------------------------------------------------------
"$py" -B "$root/test/demo/demo.py" --port "$port"

# --- stop ----------------------------------------------------------------------
say
say "Stopping passkeyd ..."
kill -TERM "$pid"
status=0
wait "$pid" || status=$?
pid=
[ "$status" -eq 0 ] || die "passkeyd exited with status $status after SIGTERM"
say "passkeyd stopped cleanly; temporary keys and TPM state removed."
