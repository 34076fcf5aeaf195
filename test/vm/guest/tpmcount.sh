#!/bin/bash
# Runs in the VM as root (guest/init, through run.sh with
# PASSKEYD_VM_GUEST): the TPM-command count of test/vm/tpmcount.sh.
#
# passkeyd runs as its unit would (uid 990, --tpm /dev/tpmrm0, uhid) and
# libfido2's tools drive it through /dev/hidrawN, phase by phase, N
# operations each. Before and after each phase the script sends one marker
# command of its own to /dev/tpmrm0: TPM2_GetRandom with bytesRequested
# 0x7A00+phase, a value passkeyd never asks for. swtpm logs every command
# it executes; the host cuts its log at the markers and counts what lies
# between, the kernel resource manager's ContextSave/ContextLoad/
# FlushContext included. The marker's own open file has nothing loaded, so
# it adds no resource-manager commands.
#
# Prints "E2E PASS tpmcount-PHASE" per phase that ran its N operations.
set -u
work=$1
# shellcheck source=/dev/null
. "$work/env" # PASSKEYD_BIN, SVC_UID, SVC_GID, TPMCOUNT_N
n=${TPMCOUNT_N:-5}
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/tmp/home LC_ALL=C.UTF-8
mkdir -p "$HOME"
t=/tmp/tpmcount
mkdir -p "$t"
cd "$t" || exit 1
pin=271828

pass() { echo "E2E PASS $1"; }
fail() { echo "E2E FAIL $1: $(printf '%s' "$2" | tr '\n' '|' | cut -c1-600)"; }

# mark PHASE: TPM2_GetRandom(0x7A00+PHASE) on a file of its own. The
# response is read (one read: the whole response) so the next write on a
# fresh open never sees a pending one.
mark() {
	local lo
	lo=$(printf '\\x%02x' "$1")
	exec 3<>/dev/tpmrm0 || return 1
	# shellcheck disable=SC2059
	printf "\\x80\\x01\\x00\\x00\\x00\\x0c\\x00\\x00\\x01\\x7b\\x7a$lo" >&3
	dd bs=4096 count=1 <&3 >/dev/null 2>&1
	exec 3>&-
	echo "VM tpmcount mark $1"
}

state=/run/lib/passkeyd
runtime=/run/passkeyd
install -d -m 0755 /run/lib
install -d -m 0700 -o "$SVC_UID" -g "$SVC_GID" "$state"
install -d -m 0755 -o "$SVC_UID" -g "$SVC_GID" "$runtime"
for dev in /dev/uhid /dev/tpmrm0; do
	chown "root:$SVC_GID" "$dev"
	chmod 0660 "$dev"
done

daemon=
hidraw=
find_hidraw() {
	hidraw=
	local u nd
	for _ in $(seq 1 600); do
		for u in /sys/class/hidraw/hidraw*/device/uevent; do
			[ -e "$u" ] || continue
			if grep -qi '^HID_ID=0003:00001209:00007A55$' "$u"; then
				nd=${u#/sys/class/hidraw/}
				hidraw=/dev/${nd%%/*}
			fi
		done
		[ -n "$hidraw" ] && [ -c "$hidraw" ] && return 0
		kill -0 "$daemon" 2>/dev/null || return 1
		sleep 0.1
	done
	return 1
}
start_daemon() {
	setpriv --reuid="$SVC_UID" --regid="$SVC_GID" --clear-groups --no-new-privs --inh-caps=-all --bounding-set=-all \
		env -i HOME="$state" PATH=/usr/bin:/bin \
		"$PASSKEYD_BIN" serve --tpm /dev/tpmrm0 --transport uhid --state-dir "$state" \
		--control "$runtime/control.sock" --prompt approve-all --log-level info "$@" >>/tmp/passkeyd.log 2>&1 &
	daemon=$!
	find_hidraw || return 1
	# The hidraw node appears once the device is created; give the
	# daemon a moment to finish whatever it does after that.
	sleep 2
}
stop_daemon() {
	kill -TERM "$daemon"
	wait "$daemon"
}

b64rand() { head -c "$1" /dev/urandom | base64 -w0; }
cred_in() { printf '%s\n%s\n%s\n%s\n' "$(b64rand 32)" "$1" "$2" "$(b64rand 16)"; }
assert_in() { printf '%s\n%s\n%s\n' "$(b64rand 32)" "$1" "$(sed -n 5p "$2")"; }

# phase ID NAME CMD...: CMD n times after mark ID, then mark idle (0x7f);
# CMD gets the iteration number as its argument. The host attributes the
# commands between a mark and the next to the first one's phase.
phase() {
	local id=$1 name=$2 i
	shift 2
	mark "$id"
	for i in $(seq 1 "$n"); do
		if ! "$@" "$i" >"$t/$name.out" 2>&1; then
			mark 0x7f
			fail "tpmcount-$name" "iteration $i: $(tail -c 400 "$t/$name.out")"
			return 1
		fi
	done
	mark 0x7f
	pass "tpmcount-$name"
}

# Each start-up is a fresh daemon on the same state: the first run (which
# creates the device secrets) is not counted. Start-up (mark 0x10) and stop
# (mark 0x11) are counted apart.
first_start() { start_daemon && stop_daemon; }
startups() {
	local i
	for i in $(seq 1 "$n"); do
		mark 0x10
		start_daemon || return 1
		mark 0x11
		stop_daemon
	done
	mark 0x7f
}
make_cred() { cred_in bench.example "user$1" >cred.in && fido2-cred -M -i cred.in -o cred.out "$hidraw" es256; }
make_cred_rk() { cred_in bench.example "rk$1" >rk.in && fido2-cred -M -r -i rk.in -o rk.out "$hidraw" es256; }
get_assert() { assert_in bench.example cred.out >assert.in && fido2-assert -G -i assert.in -o assert.out "$hidraw"; }
get_assert_pin() {
	assert_in bench.example cred.out >assert.in &&
		printf '%s\n' "$pin" | setsid -w fido2-assert -G -v -i assert.in -o assert.out "$hidraw"
}

if ! first_start; then
	fail tpmcount-startup "the daemon did not start: $(tail -c 600 /tmp/passkeyd.log)"
	echo "E2E DONE"
	exit 0
fi
grep -m1 'TPM ready' /tmp/passkeyd.log | sed 's/^/VM tpmcount daemon: /'
if startups; then
	pass tpmcount-startup
	pass tpmcount-stop
else
	fail tpmcount-startup "$(tail -c 600 /tmp/passkeyd.log)"
fi
start_daemon || fail tpmcount-daemon "$(tail -c 600 /tmp/passkeyd.log)"
phase 0x20 makeCredential make_cred
phase 0x30 makeCredential-rk make_cred_rk
phase 0x40 getAssertion get_assert
# The PIN: getAssertion with UV through clientPIN (getPinUvAuthToken:
# the PIN object unsealed over a salted session, then the signature).
if printf '%s\n%s\n' "$pin" "$pin" | setsid -w fido2-token -S "$hidraw" >"$t/setpin.out" 2>&1; then
	phase 0x50 getAssertion-pin get_assert_pin
else
	fail tpmcount-getAssertion-pin "fido2-token -S: $(tail -c 400 "$t/setpin.out")"
fi
stop_daemon
echo "E2E DONE"
