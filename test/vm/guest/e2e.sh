#!/bin/bash
# Runs in the VM as root, chrooted into the host's root (see guest/init):
# starts passkeyd the way its systemd unit would (unprivileged, with only
# /dev/uhid and /dev/tpmrm0 opened up to it) and drives it through
# /dev/hidrawN with clients nobody here wrote. Each check prints one line
# on the console, "E2E PASS name" or "E2E FAIL name: reason"; "E2E DONE"
# says the list is complete.
set -u
work=$1
repo=$2
# shellcheck source=/dev/null
. "$work/env" # PASSKEYD_BIN, BROWSER, SVC_UID, SVC_GID
guest=$repo/test/vm/guest
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/tmp/home LC_ALL=C.UTF-8
mkdir -p "$HOME"
t=/tmp/e2e
mkdir -p "$t"
cd "$t" || exit 1

failures=0
pass() { echo "E2E PASS $1"; }
fail() {
	failures=$((failures + 1))
	local name=$1
	shift
	echo "E2E FAIL $name: $(printf '%s' "$*" | tr '\n' '|' | cut -c1-600)"
}
elapsed() { cut -d' ' -f1 /proc/uptime; }
# run NAME SECONDS CMD...: runs CMD with a bound, output in $t/NAME.out.
run() {
	local name=$1 secs=$2
	shift 2
	local rc=0
	timeout -k 5 "$secs" "$@" >"$t/$name.out" 2>&1 || rc=$?
	if [ -n "${VERBOSE:-}" ]; then
		echo "VM \$ $*  (exit $rc)"
		sed "s/^/VM   $name: /" "$t/$name.out"
	fi
	return $rc
}
out() { tail -c 400 "$t/$1.out"; }

# --- The daemon, as its unit would run it --------------------------------
state=/run/passkeyd # StateDirectory-like, on this VM's tmpfs
install -d -m 0700 -o "$SVC_UID" -g "$SVC_GID" "$state"
for dev in /dev/uhid /dev/tpmrm0; do
	if [ ! -c "$dev" ]; then
		fail vm-devices "$dev is missing"
		echo "E2E DONE"
		exit 0
	fi
	chown "root:$SVC_GID" "$dev"
	chmod 0660 "$dev"
done

# Before the real daemon: a uid outside the group gets a one-line error
# naming the fix.
if run uhid-permission-error 60 setpriv --reuid=$((SVC_UID + 1)) --regid=$((SVC_GID + 1)) --clear-groups \
	"$PASSKEYD_BIN" serve --tpm sim --transport uhid --state-dir /tmp/noperm --prompt deny --log-level error; then
	fail uhid-permission-error "passkeyd started without access to /dev/uhid"
elif [ "$(wc -l <"$t/uhid-permission-error.out")" = 1 ] &&
	grep -q '^passkeyd: open /dev/uhid: permission denied: run passkeyd as a member of the group owning /dev/uhid' "$t/uhid-permission-error.out"; then
	pass uhid-permission-error
else
	fail uhid-permission-error "$(out uhid-permission-error)"
fi

daemon_log=/tmp/passkeyd.log
setpriv --reuid="$SVC_UID" --regid="$SVC_GID" --clear-groups --no-new-privs \
	--inh-caps=-all --bounding-set=-all \
	env -i HOME="$state" PATH=/usr/bin:/bin \
	"$PASSKEYD_BIN" serve --tpm /dev/tpmrm0 --transport uhid --state-dir "$state" \
	--prompt approve-all --log-level debug >"$daemon_log" 2>&1 &
daemon=$!

# The hidraw node the daemon's device got, found by its HID_ID rather than
# by guessing hidraw0.
hidraw=
for _ in $(seq 1 300); do
	for u in /sys/class/hidraw/hidraw*/device/uevent; do
		[ -e "$u" ] || continue
		if grep -qi '^HID_ID=0003:00001209:00007A55$' "$u"; then
			n=${u#/sys/class/hidraw/}
			hidraw=/dev/${n%%/*}
		fi
	done
	[ -n "$hidraw" ] && [ -c "$hidraw" ] && break
	kill -0 "$daemon" 2>/dev/null || break
	sleep 0.1
done
if [ -z "$hidraw" ]; then
	fail daemon-device "no hidraw node with HID_ID 0003:1209:7A55 after 30s; daemon log: $(tail -c 600 "$daemon_log")"
	echo "E2E DONE"
	exit 0
fi
uevent=$(cat "/sys/class/hidraw/${hidraw#/dev/}/device/uevent")
if grep -q '^HID_NAME=passkeyd virtual FIDO2 key$' <<<"$uevent" && grep -q '^HID_UNIQ=passkeyd$' <<<"$uevent"; then
	pass "daemon-device ($hidraw up at $(elapsed)s)"
else
	fail daemon-device "unexpected uevent: $uevent"
fi

uid=$(awk '/^Uid:/{print $2}' "/proc/$daemon/status" 2>/dev/null)
caps=$(awk '/^CapEff:/{print $2}' "/proc/$daemon/status" 2>/dev/null)
if [ "$uid" = "$SVC_UID" ] && [ "$caps" = 0000000000000000 ]; then
	pass daemon-unprivileged
else
	fail daemon-unprivileged "uid $uid, effective capabilities $caps"
fi

# --- libfido2: fido2-token, fido2-cred, fido2-assert ----------------------
if run fido2-token-L 60 fido2-token -L && grep -qi "^$hidraw: vendor=0x1209, product=0x7a55" "$t/fido2-token-L.out"; then
	pass fido2-token-L
else
	fail fido2-token-L "$(out fido2-token-L)"
fi

if run fido2-token-I 60 fido2-token -I "$hidraw" &&
	grep -q 'FIDO_2_0' "$t/fido2-token-I.out" &&
	grep -q '^aaguid: 9d72ba2f2f524f5dbc83aa03438c7636' "$t/fido2-token-I.out"; then
	pass fido2-token-I
else
	fail fido2-token-I "$(out fido2-token-I)"
fi

b64rand() { head -c "$1" /dev/urandom | base64 -w0; }
# fido2-cred -M input: client data hash, RP ID, user name, user ID.
printf '%s\n%s\n%s\n%s\n' "$(b64rand 32)" e2e.example "alice" "$(b64rand 16)" >cred.in
if run fido2-cred-M 60 fido2-cred -M -i cred.in -o cred.out "$hidraw" es256 &&
	run fido2-cred-V 60 fido2-cred -V -i cred.out -o cred.pub es256; then
	pass fido2-cred-M-V
else
	fail fido2-cred-M-V "$(out fido2-cred-M) $(out fido2-cred-V 2>/dev/null)"
fi

# fido2-assert -G input: client data hash, RP ID, credential ID (line 5 of
# the -M output).
if [ -s cred.pub ]; then
	printf '%s\n%s\n%s\n' "$(b64rand 32)" e2e.example "$(sed -n 5p cred.out)" >assert.in
	if run fido2-assert-G 60 fido2-assert -G -p -i assert.in -o assert.out "$hidraw" &&
		run fido2-assert-V 60 fido2-assert -V -p -i assert.out cred.pub es256; then
		pass fido2-assert-G-V
	else
		fail fido2-assert-G-V "$(out fido2-assert-G) $(out fido2-assert-V 2>/dev/null)"
	fi
else
	fail fido2-assert-G-V "no credential from fido2-cred"
fi

# --- OpenSSH: an ecdsa-sk key, a signature, its verification ---------------
echo "signed in a VM by passkeyd" >msg
if run ssh-keygen-sk 90 ssh-keygen -q -t ecdsa-sk -f "$t/id_sk" -N '' -C e2e </dev/null &&
	run ssh-sign 90 ssh-keygen -q -Y sign -f "$t/id_sk" -n file msg </dev/null &&
	printf 'e2e@passkeyd %s\n' "$(cut -d' ' -f1,2 id_sk.pub)" >allowed_signers &&
	run ssh-verify 60 ssh-keygen -Y verify -f allowed_signers -I e2e@passkeyd -n file -s msg.sig <msg; then
	pass ssh-ecdsa-sk-sign-verify
else
	fail ssh-ecdsa-sk-sign-verify "$(cat "$t"/ssh-*.out 2>/dev/null | tail -c 500)"
fi

# --- python-fido2: Fido2Client against Fido2Server -------------------------
if run python-fido2 120 /usr/bin/python3 "$guest/python_e2e.py" "$hidraw"; then
	pass python-fido2-register-authenticate
else
	fail python-fido2-register-authenticate "$(out python-fido2)"
fi

# --- Chromium ---------------------------------------------------------------
if [ "$BROWSER" = 1 ]; then
	bash "$guest/browser.sh" "$guest" "$hidraw"
fi

# --- Shutdown: SIGTERM ends the daemon cleanly and unplugs the device -----
kill -TERM "$daemon"
gone=
for _ in $(seq 1 100); do
	if ! kill -0 "$daemon" 2>/dev/null && [ ! -e "$hidraw" ]; then
		gone=1
		break
	fi
	sleep 0.1
done
wait "$daemon"
rc=$?
if [ -n "$gone" ] && [ "$rc" = 0 ]; then
	pass daemon-sigterm-unplugs
else
	fail daemon-sigterm-unplugs "exit status $rc, $hidraw still present: $([ -e "$hidraw" ] && echo yes || echo no)"
fi

if grep -q 'level=ERROR' "$daemon_log"; then
	echo "VM daemon logged errors:"
	grep 'level=ERROR' "$daemon_log" | head -20 | sed 's/^/VM   /'
fi
if [ "$failures" != 0 ] || [ -n "${VERBOSE:-}" ]; then
	sed 's/^/VM daemon: /' "$daemon_log"
fi
echo "VM guest checks done at $(elapsed)s"
echo "E2E DONE"
