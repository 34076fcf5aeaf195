#!/bin/bash
# Runs in the VM (from e2e.sh, in the background, early): headless
# Chromium registers a discoverable passkey on passkeyd and signs in with
# it, from a page on the guest's loopback (guest/browser/index.html).
#
# Chromium takes most of a minute to start under TCG, so e2e.sh starts
# this script at the beginning and Chromium starts while the CLI checks
# run; the page loads, reports "ready" and then waits, without touching
# WebAuthn, until e2e.sh creates $www/go (its last stage, with the key in
# the configuration the page needs). Chromium enumerates HID devices only
# at its first WebAuthn call (no udevd here), so it then sees the key as
# it is by then, restarts included.
#
# The page reports each result by fetching /report?...; this script reads
# them from the HTTP server's log and prints the E2E lines once the page
# is done (or the bound after "go" has passed).
set -u
guest=$1
www=/tmp/www # served; $www/go is created by e2e.sh
log=/tmp/http.log
checks=(browser-create-discoverable browser-get-discoverable browser-create-server-side browser-get-allow-list)
now() { cut -d' ' -f1 /proc/uptime; }
since() { awk -v s="$1" -v e="$(now)" 'BEGIN{printf "%.1f", e-s}'; }
start=$(now)

mkdir -p "$www"
cp "$guest/browser/index.html" "$guest/browser/rp.js" "$www/"
/usr/bin/python3 -u -m http.server --bind 127.0.0.1 --directory "$www" 8000 >"$log" 2>&1 &
srv=$!
for _ in $(seq 1 100); do
	(exec 3<>/dev/tcp/127.0.0.1/8000) 2>/dev/null && break
	sleep 0.1
done

profile=$(mktemp -d /tmp/chromium.XXXXXX)
setsid /usr/lib/chromium/chromium --headless=new --no-sandbox --disable-gpu --disable-dev-shm-usage \
	--user-data-dir="$profile" --no-first-run --no-default-browser-check \
	--js-flags=--jitless --disable-extensions --disable-sync --disable-component-update \
	--disable-background-networking --disable-features=MediaRouter,OptimizationHints \
	--enable-logging=stderr --vmodule=device_event_log_impl=2 \
	http://localhost:8000/index.html >/tmp/chromium.log 2>&1 &
chromium=$!

ready=
until [ -e "$www/go" ]; do
	if [ -z "$ready" ] && grep -q 'GET /report?check=ready' "$log"; then
		ready=$(since "$start")
	fi
	sleep 0.5
done
go=$(now)
echo "VM chromium: page ready after ${ready:-(not yet)}s, go after $(since "$start")s"

# The page bounds each of its four calls to 30 s; this waits 150 s of the
# guest's clock for all of them (a count of polls would stretch with a
# loaded host: each grep and sleep takes longer under TCG).
done=
deadline=$(awk -v n="$(now)" 'BEGIN{print n + 150}')
past() { awk -v d="$1" -v n="$(now)" 'BEGIN{exit !(n >= d)}'; }
until past "$deadline"; do
	if grep -q 'GET /report?check=done' "$log"; then
		done=1
		break
	fi
	kill -0 "$chromium" 2>/dev/null || break
	sleep 0.1
done
end=$(now)
kill -TERM -- "-$chromium" 2>/dev/null
for _ in $(seq 1 50); do # a Chromium that ignores TERM must not hold the stage
	kill -0 "$chromium" 2>/dev/null || break
	sleep 0.1
done
kill -KILL -- "-$chromium" 2>/dev/null
kill "$srv" 2>/dev/null
wait "$chromium" "$srv" 2>/dev/null

# UI steps where Chromium waits for a person (PIN entry or setup, account
# selection, a missing capability, ...): nobody answers headless, so they
# explain a timeout.
waits=$(grep -o 'UI step: k[A-Za-z]*' /tmp/chromium.log | sed 's/UI step: //' |
	grep -vxE 'kUsbInsertAndActivate|kClosed|kNotStarted|kConditionalMediation|kClientPinTapAgain' | sort -u | tr '\n' ' ')
for c in "${checks[@]}"; do
	line=$(grep -o "GET /report?check=$c&result=[A-Z]*&detail=[^ ]*" "$log" | tail -1)
	detail=$(/usr/bin/python3 -c 'import sys, urllib.parse; print(urllib.parse.unquote_plus(sys.argv[1]))' "${line#*&detail=}")
	case $line in
	*result=PASS*) echo "E2E PASS $c ($detail)" ;;
	*result=FAIL*) echo "E2E FAIL $c: $detail${waits:+; Chromium stopped at UI step ${waits% }}" ;;
	*) echo "E2E FAIL $c: no report from the page$([ -z "$done" ] && echo " (page did not finish; chromium $(kill -0 "$chromium" 2>/dev/null && echo running || echo exited))")" ;;
	esac
done
if grep -q 'result=FAIL' "$log" || [ -z "$done" ] || [ -n "${VERBOSE:-}" ]; then
	grep -o 'GET /report?[^ ]*' "$log" | sed 's/^/VM   http: /'
	# Chromium's own account of its FIDO decisions (UI steps, errors).
	grep -E 'FIDO: (EVENT|ERROR)|HID: ' /tmp/chromium.log | sed -E 's/^.*\] \[[0-9:.]+\] //' |
		grep -v 'Starting .* flow' | tail -30 | sed 's/^/VM   chromium: /'
fi
if [ -n "${VERBOSE:-}" ]; then
	grep -E 'FIDO|HID' /tmp/chromium.log | sed -E 's/^.*\] \[[0-9:.]+\] //' | sed 's/^/VM   chromium-debug: /'
fi
echo "VM chromium: the ceremonies took $(awk -v s="$go" -v e="$end" 'BEGIN{printf "%.1f", e-s}')s after go"
rm -rf "$profile"
