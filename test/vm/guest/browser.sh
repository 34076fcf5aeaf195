#!/bin/bash
# Runs in the VM (from e2e.sh): headless Chromium registers a discoverable
# passkey on passkeyd and signs in with it, from a page on the guest's
# loopback (guest/browser/index.html). The page reports each result by
# fetching /report?...; this script reads them from the HTTP server's log
# and prints the E2E lines.
set -u
guest=$1
hidraw=$2
page=$guest/browser
log=/tmp/http.log
checks=(browser-create-discoverable browser-get-discoverable browser-create-server-side browser-get-allow-list)
start=$(cut -d' ' -f1 /proc/uptime)

fail_all() {
	for c in "${checks[@]}"; do echo "E2E FAIL $c: $1"; done
}

/usr/bin/python3 -u -m http.server --bind 127.0.0.1 --directory "$page" 8000 >"$log" 2>&1 &
srv=$!
for _ in $(seq 1 100); do
	(exec 3<>/dev/tcp/127.0.0.1/8000) 2>/dev/null && break
	sleep 0.1
done

# Chromium sees only hidraw nodes that exist before its first WebAuthn
# call (no udevd here): $hidraw exists already.
[ -c "$hidraw" ] || { fail_all "$hidraw is gone"; kill "$srv"; exit 0; }
profile=$(mktemp -d /tmp/chromium.XXXXXX)
setsid /usr/lib/chromium/chromium --headless=new --no-sandbox --disable-gpu --disable-dev-shm-usage \
	--user-data-dir="$profile" --no-first-run --no-default-browser-check \
	--js-flags=--jitless --disable-extensions --disable-sync --disable-component-update \
	--disable-background-networking --disable-features=MediaRouter,OptimizationHints \
	--enable-logging=stderr --vmodule=device_event_log_impl=2 \
	http://localhost:8000/index.html >/tmp/chromium.log 2>&1 &
chromium=$!

# The page bounds each of its four calls to 30 s; plus start-up.
done=
for _ in $(seq 1 2400); do
	if grep -q 'GET /report?check=done' "$log"; then
		done=1
		break
	fi
	kill -0 "$chromium" 2>/dev/null || break
	sleep 0.1
done
end=$(cut -d' ' -f1 /proc/uptime)
kill -TERM -- "-$chromium" 2>/dev/null
kill "$srv" 2>/dev/null
wait "$chromium" "$srv" 2>/dev/null

for c in "${checks[@]}"; do
	line=$(grep -o "GET /report?check=$c&result=[A-Z]*&detail=[^ ]*" "$log" | tail -1)
	detail=$(/usr/bin/python3 -c 'import sys, urllib.parse; print(urllib.parse.unquote_plus(sys.argv[1]))' "${line#*&detail=}")
	case $line in
	*result=PASS*) echo "E2E PASS $c ($detail)" ;;
	*result=FAIL*) echo "E2E FAIL $c: $detail" ;;
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
echo "VM chromium: $(awk -v s="$start" -v e="$end" 'BEGIN{printf "%.1f", e-s}')s from start to the last report"
rm -rf "$profile"
