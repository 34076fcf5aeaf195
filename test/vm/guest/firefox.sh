#!/bin/bash
# Runs in the VM (from e2e.sh, after its daemon has stopped): Firefox ESR
# under Xvfb, with a fresh profile (firefox/user.js), registers and signs
# in with passkeyd from a page on the guest's loopback (firefox/index.html,
# which checks each result as a relying party would and reports it).
#
# Its own daemon (approve-all, a fresh state directory) so the key starts
# without a PIN. Phase 1 runs without one: discoverable and allow list,
# attestation "none" and "direct", userVerification "required" on the key
# without a PIN, and Firefox's account chooser with two passkeys for the
# RP. Then the PIN is set with fido2-token -S and phase 2 makes and uses a
# credential with userVerification "required": Firefox asks for the PIN in
# its own dialog, which this script finds, photographs (an artifact in
# $work/artifacts, the host's work directory) and types the PIN into with
# xdotool.
#
# Usage: firefox.sh WORK REPO (e2e.sh's arguments). Prints E2E PASS/FAIL
# lines; FIREFOX=0 in $work/env (PASSKEYD_VM_FIREFOX=0) skips it.
set -u
work=$1
repo=$2
# shellcheck source=/dev/null
. "$work/env" # PASSKEYD_BIN, SVC_UID, SVC_GID, FIREFOX, VERBOSE
[ "${FIREFOX:-1}" = 1 ] || exit 0
guest=$repo/test/vm/guest
export PATH=/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C.UTF-8
t=/tmp/firefox
www=$t/www # served; go and go-pin are created by this script
log=$t/http.log
mkdir -p "$www" "$t/home"
pin=314159
checks=(firefox-create-discoverable-none firefox-get-discoverable firefox-create-direct firefox-get-allow-list
	firefox-uv-required-without-pin firefox-account-chooser firefox-pin-create-uv firefox-pin-get-uv)
# Artifacts go to the host's work directory when run.sh shared it
# writable (guest/init mounts it); else they stay in the guest.
art=$work/artifacts
if touch "$art/.w" 2>/dev/null; then rm -f "$art/.w"; else art=$t/artifacts; fi
mkdir -p "$art"

now() { cut -d' ' -f1 /proc/uptime; }
since() { awk -v s="$1" -v e="$(now)" 'BEGIN{printf "%.1f", e-s}'; }
say() { echo "VM firefox: $*"; }
pass() { echo "E2E PASS $1"; }
fail() { echo "E2E FAIL $1: $(printf '%s' "$2" | tr '\n' '|' | cut -c1-600)"; }
start=$(now)

# --- passkeyd: its own state, no PIN, presence approved ---------------------
state=/run/lib/passkeyd-firefox
install -d -m 0755 /run/lib
install -d -m 0700 -o "$SVC_UID" -g "$SVC_GID" "$state"
setpriv --reuid="$SVC_UID" --regid="$SVC_GID" --clear-groups --no-new-privs --inh-caps=-all --bounding-set=-all \
	env -i HOME="$state" PATH=/usr/bin:/bin \
	"$PASSKEYD_BIN" serve --tpm /dev/tpmrm0 --transport uhid --state-dir "$state" --control '' \
	--prompt approve-all --log-level debug >"$t/passkeyd.log" 2>&1 &
daemon=$!
hidraw=
for _ in $(seq 1 300); do
	for u in /sys/class/hidraw/hidraw*/device/uevent; do
		[ -e "$u" ] && grep -qi '^HID_ID=0003:00001209:00007A55$' "$u" && n=${u#/sys/class/hidraw/} && hidraw=/dev/${n%%/*}
	done
	[ -n "$hidraw" ] && [ -c "$hidraw" ] && break
	hidraw=
	kill -0 "$daemon" 2>/dev/null || break
	sleep 0.1
done
if [ -z "$hidraw" ]; then
	for c in "${checks[@]}"; do fail "$c" "passkeyd did not come up: $(tail -c 400 "$t/passkeyd.log")"; done
	exit 1
fi

# --- Xvfb, the page's server, Firefox -----------------------------------
display=:99
Xvfb "$display" -screen 0 1280x800x24 -nolisten tcp -noreset >"$t/xvfb.log" 2>&1 &
xvfb=$!
export DISPLAY=$display
for _ in $(seq 1 100); do
	[ -e /tmp/.X11-unix/X99 ] && xdotool getdisplaygeometry >/dev/null 2>&1 && break
	sleep 0.1
done

cp "$guest/firefox/index.html" "$guest/browser/rp.js" "$www/"
/usr/bin/python3 -u -m http.server --bind 127.0.0.1 --directory "$www" 8000 >"$log" 2>&1 &
srv=$!
for _ in $(seq 1 100); do
	(exec 3<>/dev/tcp/127.0.0.1/8000) 2>/dev/null && break
	sleep 0.1
done

profile=$t/profile
mkdir -p "$profile"
cp "$guest/firefox/user.js" "$profile/"
# Bounded: the whole stage may take this long (Firefox starts in most of
# a minute under TCG; the page bounds each call to 60 s).
ff_bound=300
setsid env HOME="$t/home" MOZ_CRASHREPORTER_DISABLE=1 MOZ_DISABLE_AUTO_SAFE_MODE=1 \
	timeout -k 5 "$ff_bound" /usr/lib/firefox-esr/firefox-esr --no-remote --new-instance --profile "$profile" \
	http://localhost:8000/index.html >"$t/firefox.log" 2>&1 &
firefox=$!

# reported CHECK: the page has fetched /report?check=CHECK.
reported() { grep -q "GET /report?check=$1[& ]" "$log"; }
# shot NAME: a screenshot of the whole screen, $art/NAME.png.
shot() { import -display "$display" -window root "$art/$1.png" 2>>"$t/import.log"; }
# results: how many results the page has reported.
results() { grep -c 'GET /report?check=[a-z-]*&result=' "$log"; }
# pixel X Y: the colour at X,Y on the screen, as ImageMagick names it.
pixel() { import -display "$display" -window root -crop "1x1+$1+$2" -depth 8 txt:- 2>/dev/null | awk 'NR==2{print $3}'; }
# windows: the names of the visible X windows (Firefox's PIN dialog is
# none of them: it is drawn inside the browser window).
windows() {
	xdotool search --onlyvisible --name . 2>/dev/null | while read -r w; do
		printf '"%s" ' "$(xdotool getwindowname "$w" 2>/dev/null)"
	done
}
# answer WHAT N: the page announced a dialog (the Nth).
answer() {
	local what=$1 n=$2 before t0 try
	before=$(results)
	t0=$(now)
	case $what in
	pin)
		for try in 1 2 3; do
			# Firefox's PIN dialog is tab-modal: it dims the page.
			local found= stop
			stop=$(awk -v n="$(now)" 'BEGIN{print n+45}')
			while awk -v n="$(now)" -v e="$stop" 'BEGIN{exit !(n < e)}'; do
				if [ "$(pixel 576 640)" != "#FFFFFF" ]; then found=1; break; fi
				[ "$(results)" -gt "$before" ] && return 0
				sleep 0.5
			done
			if [ -z "$found" ]; then
				say "no PIN dialog within 45s"
				shot "firefox-$what-$n-missing"
				return 1
			fi
			sleep 1
			shot "firefox-$what-$n-$try"
			say "$what dialog $n (try $try) after $(since "$t0")s; windows: $(windows)"
			[ -n "$pin_shot" ] || pin_shot=$art/firefox-$what-$n-$try.png
			xdotool mousemove 576 600
			xdotool type --delay 80 "$pin"
			xdotool key Return
			for _ in $(seq 1 40); do
				[ "$(results)" -gt "$before" ] && return 0
				sleep 0.5
			done
		done
		;;
	chooser)
		# A doorhanger ("Multiple accounts found for localhost"): the
		# first account on its secondary button, the others behind its
		# arrow, Cancel as the primary. Recognised by its account
		# button, cancelled with Escape. xdotool's clicks on its buttons
		# (no window manager) closed it without acting, after which the
		# call never settled and Firefox refused the page's later calls
		# (see test/vm/README.md); a click on Cancel is only the
		# fallback.
		local found stop l r top bottom account
		stop=$(awk -v n="$(now)" 'BEGIN{print n+45}')
		while awk -v n="$(now)" -v e="$stop" 'BEGIN{exit !(n < e)}'; do
			[ "$(results)" -gt "$before" ] && return 0
			found=$(import -display "$display" -window root -depth 8 ppm:- 2>/dev/null | /usr/bin/python3 "$guest/firefox/doorhanger.py" |
				awk '$1=="primary"{p=$2" "$3" "$4" "$5} $1=="secondary"{s=$2"-"$3} END{if (s != "") print p, s}')
			if [ -n "$found" ]; then
				read -r l top r bottom account <<<"$found"
				shot "firefox-$what-$n"
				chooser=$art/firefox-$what-$n.png
				say "account chooser after $(since "$t0")s: first account's button at x $account, Cancel at x $l-$r, y $top-$bottom"
				xdotool key Escape
				for _ in $(seq 1 20); do
					[ "$(results)" -gt "$before" ] && return 0
					sleep 0.5
				done
				say "Escape did not cancel the chooser; clicking its Cancel"
				xdotool mousemove $(((l + r) / 2)) $(((top + bottom) / 2))
				sleep 1
				xdotool click 1
				for _ in $(seq 1 20); do
					[ "$(results)" -gt "$before" ] && return 0
					sleep 0.5
				done
				shot "firefox-$what-$n-after-click"
				return 1
			fi
			sleep 1
		done
		shot "firefox-$what-$n-missing"
		say "no account chooser within 45s"
		;;
	esac
	return 1
}

ready=
awaits=0
chooser=
pin_shot=
phase1=
deadline=$(awk -v n="$(now)" -v s="$ff_bound" 'BEGIN{print n+s}')
while awk -v n="$(now)" -v e="$deadline" 'BEGIN{exit !(n < e)}'; do
	reported done && break
	kill -0 "$firefox" 2>/dev/null || break
	# The page starts once the key is there (it is, from the start) and
	# Firefox has loaded it.
	if [ -z "$ready" ] && reported ready; then
		ready=$(since "$start")
		touch "$www/go"
		say "page loaded after ${ready}s"
	fi
	if [ -z "$phase1" ] && reported phase1-done; then
		phase1=$(since "$start")
		# The PIN, set as a user would with libfido2's tool (asked twice).
		if printf '%s\n%s\n' "$pin" "$pin" | timeout 60 setsid -w fido2-token -S "$hidraw" >"$t/set-pin.out" 2>&1; then
			say "phase 1 done after ${phase1}s; PIN set with fido2-token -S"
		else
			say "fido2-token -S failed: $(tail -c 300 "$t/set-pin.out")"
		fi
		touch "$www/go-pin"
	fi
	if [ "$(grep -c 'GET /report?check=await&' "$log")" -gt "$awaits" ]; then
		awaits=$((awaits + 1))
		what=$(grep -o 'GET /report?check=await&what=[a-z]*' "$log" | sed -n "${awaits}p")
		answer "${what##*=}" "$awaits"
	fi
	sleep 0.5
done
end=$(now)
shot firefox-end
kill -TERM -- "-$firefox" 2>/dev/null
kill "$srv" "$xvfb" 2>/dev/null
kill -TERM "$daemon" 2>/dev/null
wait "$firefox" "$srv" "$xvfb" "$daemon" 2>/dev/null

for c in "${checks[@]}"; do
	line=$(grep -o "GET /report?check=$c&result=[A-Z]*&detail=[^ ]*" "$log" | tail -1)
	detail=$(/usr/bin/python3 -c 'import sys, urllib.parse; print(urllib.parse.unquote_plus(sys.argv[1]))' "${line#*&detail=}")
	case $c in
	firefox-pin-create-uv) [ -n "$pin_shot" ] && detail="$detail; Firefox's PIN dialog: $pin_shot" ;;
	firefox-account-chooser) [ -n "$chooser" ] && detail="$detail; Firefox's account chooser, cancelled: $chooser" ;;
	esac
	case $line in
	*result=PASS*) pass "$c ($detail)" ;;
	*result=FAIL*) fail "$c" "$detail" ;;
	*) fail "$c" "no report from the page (firefox $(kill -0 "$firefox" 2>/dev/null && echo running || echo exited))" ;;
	esac
done
if grep -q 'result=FAIL' "$log" || ! reported done || [ -n "${VERBOSE:-}" ]; then
	grep -o 'GET /report?[^ ]*' "$log" | sed 's/^/VM   firefox http: /'
	tail -30 "$t/firefox.log" | sed 's/^/VM   firefox: /'
	grep -E 'level=(WARN|ERROR)|refused' "$t/passkeyd.log" | tail -20 | sed 's/^/VM   firefox passkeyd: /'
fi
say "page ready after ${ready:-(never)}s, phase 1 done after ${phase1:-(never)}s, stage took $(since "$start")s ($(awk -v s="$start" -v e="$end" 'BEGIN{printf "%.1f", e-s}')s to the page's end); artifacts in $art"
