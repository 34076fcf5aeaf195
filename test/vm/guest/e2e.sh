#!/bin/bash
# Runs in the VM as root, chrooted into the host's root (see guest/init):
# starts passkeyd the way its systemd unit would (unprivileged, with only
# /dev/uhid and /dev/tpmrm0 opened up to it) and drives it through
# /dev/hidrawN with clients nobody here wrote. Each check prints one line
# on the console, "E2E PASS name" or "E2E FAIL name: reason"; "E2E DONE"
# says the list is complete.
#
# Three stages, each needing its own daemon configuration:
#  1. no PIN, --prompt approve-all: the PIN-less checks;
#  2. the PIN set with fido2-token -S, still approve-all: the daemon then
#     reports no built-in UV, so every client has to verify the user
#     through clientPIN with the PIN it was given (libfido2, OpenSSH,
#     credential management);
#  3. the daemon restarted (the recovery checks) with --prompt agent, the
#     production set-up: passkeyctl agent runs as the owner and shows the
#     prompts through a test pinentry that answers with the PIN, so the
#     key reports built-in UV and Chromium gets a UV token from it.
set -u
work=$1
repo=$2
# shellcheck source=/dev/null
. "$work/env" # PASSKEYD_BIN, PASSKEYCTL_BIN, FAKEPINENTRY_BIN, BROWSER, SVC_UID, SVC_GID, OWNER_UID, VERBOSE
export VERBOSE
guest=$repo/test/vm/guest
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/tmp/home LC_ALL=C.UTF-8
mkdir -p "$HOME"
t=/tmp/e2e
mkdir -p "$t"
cd "$t" || exit 1

pin=271828 # the device PIN from stage 2 on

failures=0
pass() { echo "E2E PASS $1"; }
fail() {
	failures=$((failures + 1))
	local name=$1
	shift
	echo "E2E FAIL $name: $(printf '%s' "$*" | tr '\n' '|' | cut -c1-600)"
}
elapsed() { cut -d' ' -f1 /proc/uptime; }
stage() { echo "VM stage: $* (at $(elapsed)s)"; }
# run NAME SECONDS CMD...: runs CMD with a bound, output in $t/NAME.out.
# Standard input is the caller's; in a new session, so that no client can
# find a controlling terminal and must read its PIN from there.
run() {
	local name=$1 secs=$2
	shift 2
	local rc=0 t0
	t0=$(elapsed)
	timeout -k 5 "$secs" setsid -w "$@" >"$t/$name.out" 2>&1 || rc=$?
	if [ -n "${VERBOSE:-}" ]; then
		echo "VM \$ $*  (exit $rc, $(awk -v a="$t0" -v b="$(elapsed)" 'BEGIN{printf "%.1f", b-a}') s)"
		sed "s/^/VM   $name: /" "$t/$name.out"
	fi
	return $rc
}
# run_pin NAME SECONDS CMD...: run with the PIN on standard input (twice,
# for fido2-token -S), where libfido2's tools read it without a terminal.
# Their prompts (on stderr, no newline) are counted in $t/NAME.prompts and
# taken out of the output.
run_pin() {
	local rc=0
	printf '%s\n%s\n' "$pin" "$pin" | run "$@" || rc=$?
	grep -o 'Enter [^:]*PIN[^:]*: ' "$t/$1.out" | wc -l >"$t/$1.prompts"
	sed -i -E 's/(Enter [^:]*PIN[^:]*: )+//' "$t/$1.out"
	return $rc
}
out() { tail -c 400 "$t/$1.out" 2>/dev/null; }

# OpenSSH asks for PINs through SSH_ASKPASS when there is no terminal; this
# one answers with the PIN and records each prompt.
cat >"$t/askpass" <<EOF
#!/bin/sh
echo "\$*" >>"$t/askpass.log"
echo "$pin"
EOF
chmod 0755 "$t/askpass"
: >"$t/askpass.log"
askpass_pins() { grep -c 'PIN' "$t/askpass.log" || true; }
ssh_env=(env SSH_ASKPASS="$t/askpass" SSH_ASKPASS_REQUIRE=force)

b64rand() { head -c "$1" /dev/urandom | base64 -w0; }

# --- The daemon, as its unit would run it --------------------------------
# StateDirectory= and RuntimeDirectory= of the unit, on this VM's tmpfs
# (the host root is read-only here): the state private to the daemon's
# user, the control socket's directory traversable by everyone.
state=/run/lib/passkeyd
runtime=/run/passkeyd
control=$runtime/control.sock
install -d -m 0755 /run/lib
install -d -m 0700 -o "$SVC_UID" -g "$SVC_GID" "$state"
install -d -m 0755 -o "$SVC_UID" -g "$SVC_GID" "$runtime"
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
	"$PASSKEYD_BIN" serve --tpm sim --transport uhid --state-dir /tmp/noperm --prompt deny --control '' --log-level error; then
	fail uhid-permission-error "passkeyd started without access to /dev/uhid"
elif [ "$(wc -l <"$t/uhid-permission-error.out")" = 1 ] &&
	grep -q '^passkeyd: open /dev/uhid: permission denied: run passkeyd as a member of the group owning /dev/uhid' "$t/uhid-permission-error.out"; then
	pass uhid-permission-error
else
	fail uhid-permission-error "$(out uhid-permission-error)"
fi

daemon=
daemon_log=
daemons=0
hidraw=
# find_hidraw: the hidraw node of the daemon's device, found by its HID_ID
# rather than by guessing hidraw0; waits up to 30 s while the daemon runs.
find_hidraw() {
	hidraw=
	local u n
	for _ in $(seq 1 300); do
		for u in /sys/class/hidraw/hidraw*/device/uevent; do
			[ -e "$u" ] || continue
			if grep -qi '^HID_ID=0003:00001209:00007A55$' "$u"; then
				n=${u#/sys/class/hidraw/}
				hidraw=/dev/${n%%/*}
			fi
		done
		[ -n "$hidraw" ] && [ -c "$hidraw" ] && return 0
		kill -0 "$daemon" 2>/dev/null || return 1
		sleep 0.1
	done
	return 1
}
# start_daemon FLAGS...: passkeyd as uid/gid SVC_UID/SVC_GID with no
# capabilities and no new privileges, its log in $daemon_log; then
# find_hidraw.
start_daemon() {
	daemons=$((daemons + 1))
	daemon_log=/tmp/passkeyd-$daemons.log
	setpriv --reuid="$SVC_UID" --regid="$SVC_GID" --clear-groups --no-new-privs --inh-caps=-all --bounding-set=-all \
		env -i HOME="$state" PATH=/usr/bin:/bin \
		"$PASSKEYD_BIN" serve --tpm /dev/tpmrm0 --transport uhid --state-dir "$state" \
		--control "$control" "$@" --log-level debug >"$daemon_log" 2>&1 &
	daemon=$!
	find_hidraw
}
# stop_daemon: SIGTERM; succeeds when the daemon exits 0 and its hidraw
# node is gone within 10 s. stopped says what happened.
stopped=
stop_daemon() {
	local gone='' rc node=$hidraw
	kill -TERM "$daemon"
	for _ in $(seq 1 100); do
		if ! kill -0 "$daemon" 2>/dev/null && [ ! -e "$node" ]; then
			gone=1
			break
		fi
		sleep 0.1
	done
	wait "$daemon"
	rc=$?
	stopped="exit status $rc, $node still present: $([ -e "$node" ] && echo yes || echo no)"
	[ -n "$gone" ] && [ "$rc" = 0 ]
}
all_logs() { cat /tmp/passkeyd-*.log; }

# Chromium starts now, in the background, and waits for stage 3 (see
# browser.sh): its start-up overlaps the CLI checks.
browser_job=
if [ "$BROWSER" = 1 ]; then
	bash "$guest/browser.sh" "$guest" &
	browser_job=$!
fi

# `make demo`'s walkthrough (test/demo/demo.sh) as a newcomer runs it on a
# machine with /dev/uhid: its own daemon (as root, --tpm device-or-swtpm: here
# /dev/tpmrm0), fido2-token -L, fido2-cred -M/-V, fido2-assert -G/-V,
# passkeyctl list, unplug. On machines without uhid `make demo` boots this
# VM and runs the same script (run.sh --demo).
if run make-demo 120 env PASSKEYD_BIN="$PASSKEYD_BIN" PASSKEYCTL_BIN="$PASSKEYCTL_BIN" DEMO_IN_VM=1 \
	bash "$repo/test/demo/demo.sh" </dev/null &&
	grep -q 'signature valid: alice is signed in to demo.example' "$t/make-demo.out" &&
	grep -qE '^ +demo\.example +alice ' "$t/make-demo.out" &&
	grep -q 'passkeyd stopped; /dev/hidraw[0-9]* is gone' "$t/make-demo.out"; then
	pass "make-demo (the walkthrough of test/demo/demo.sh, $(grep -c '^[0-9]*\. ' "$t/make-demo.out") steps)"
else
	fail make-demo "$(out make-demo)"
fi

# ===========================================================================
stage "1: no PIN, --prompt approve-all"
if ! start_daemon --prompt approve-all; then
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

# What sandboxes see (README, "Sandboxed browsers"): the node hangs below
# the uhid misc device, and no ancestor has the idVendor/idProduct
# attributes that snapd's u2f-devices rules (ATTRS{idVendor}) and a USB
# key's sysfs path (/sys/devices/**/usb*/**) rely on.
node_sys=$(readlink -f "/sys/class/hidraw/${hidraw#/dev/}")
d=$node_sys usb_attr=
while [ "$d" != /sys/devices ] && [ "$d" != / ]; do
	[ -e "$d/idVendor" ] && usb_attr="$usb_attr $d/idVendor"
	d=$(dirname "$d")
done
case "$node_sys" in
/sys/devices/virtual/misc/uhid/0003:1209:7A55.*/hidraw/hidraw*)
	if [ -z "$usb_attr" ] && [ -r "$(dirname "$(dirname "$node_sys")")/report_descriptor" ]; then
		pass "sandbox-uhid-no-usb-parent ($node_sys)"
	else
		fail sandbox-uhid-no-usb-parent "idVendor at:$usb_attr; report_descriptor readable: $(ls -l "$(dirname "$(dirname "$node_sys")")/report_descriptor" 2>&1)"
	fi
	;;
*) fail sandbox-uhid-no-usb-parent "sysfs path $node_sys" ;;
esac

uid=$(awk '/^Uid:/{print $2}' "/proc/$daemon/status" 2>/dev/null)
caps=$(awk '/^CapEff:/{print $2}' "/proc/$daemon/status" 2>/dev/null)
if [ "$uid" = "$SVC_UID" ] && [ "$caps" = 0000000000000000 ]; then
	pass daemon-unprivileged
else
	fail daemon-unprivileged "uid $uid, effective capabilities $caps"
fi

# Feature-report requests answered at once, malformed writes survived.
if run hidraw-edge-cases 30 /usr/bin/python3 "$guest/hidraw_edge.py" "$hidraw"; then
	pass "hidraw-edge-cases ($(tail -1 "$t/hidraw-edge-cases.out"))"
else
	fail hidraw-edge-cases "$(out hidraw-edge-cases)"
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

# fido2-cred -M input: client data hash, RP ID, user name, user ID.
cred_in() { printf '%s\n%s\n%s\n%s\n' "$(b64rand 32)" "$1" "$2" "${3:-$(b64rand 16)}"; }
cred_in e2e.example alice >cred.in
if run fido2-cred-M 60 fido2-cred -M -i cred.in -o cred.out "$hidraw" es256 &&
	run fido2-cred-V 60 fido2-cred -V -i cred.out -o cred.pub es256; then
	pass fido2-cred-M-V
else
	fail fido2-cred-M-V "$(out fido2-cred-M) $(out fido2-cred-V)"
fi

# fido2-assert -G input: client data hash, RP ID, credential ID (line 5 of
# the -M output).
assert_in() { printf '%s\n%s\n%s\n' "$(b64rand 32)" "$1" "$(sed -n 5p "$2")"; }
if [ -s cred.pub ]; then
	assert_in e2e.example cred.out >assert.in
	if run fido2-assert-G 60 fido2-assert -G -p -i assert.in -o assert.out "$hidraw" &&
		run fido2-assert-V 60 fido2-assert -V -p -i assert.out cred.pub es256; then
		pass fido2-assert-G-V
	else
		fail fido2-assert-G-V "$(out fido2-assert-G) $(out fido2-assert-V)"
	fi
else
	fail fido2-assert-G-V "no credential from fido2-cred"
fi

# A discoverable credential made before the PIN and the restart: stage 3
# lists it.
cred_in recovery.example dora >rk.in
if run fido2-cred-M-r 60 fido2-cred -M -r -i rk.in -o rk.out "$hidraw" es256 &&
	run fido2-cred-V-r 60 fido2-cred -V -i rk.out -o rk.pub es256; then
	pass fido2-cred-M-resident
else
	fail fido2-cred-M-resident "$(out fido2-cred-M-r) $(out fido2-cred-V-r)"
fi

# --- OpenSSH: an ecdsa-sk key, a signature, its verification ---------------
echo "signed in a VM by passkeyd" >msg
if run ssh-keygen-sk 90 ssh-keygen -q -t ecdsa-sk -f "$t/id_sk" -N '' -C e2e </dev/null &&
	run ssh-sign 90 ssh-keygen -q -Y sign -f "$t/id_sk" -n file msg </dev/null &&
	printf 'e2e@passkeyd %s\n' "$(cut -d' ' -f1,2 id_sk.pub)" >allowed_signers &&
	run ssh-verify 60 ssh-keygen -Y verify -f allowed_signers -I e2e@passkeyd -n file -s msg.sig <msg; then
	pass ssh-ecdsa-sk-sign-verify
else
	fail ssh-ecdsa-sk-sign-verify "$(cat "$t"/ssh-keygen-sk.out "$t"/ssh-sign.out "$t"/ssh-verify.out 2>/dev/null | tail -c 500)"
fi

# --- python-fido2: Fido2Client against Fido2Server -------------------------
if run python-fido2 120 /usr/bin/python3 "$guest/python_e2e.py" "$hidraw"; then
	pass python-fido2-register-authenticate
else
	fail python-fido2-register-authenticate "$(out python-fido2)"
fi

# ===========================================================================
stage "2: the PIN set, --prompt approve-all (no built-in UV: clientPIN)"
# fido2-token -S asks for the new PIN twice.
if run_pin fido2-token-S 60 fido2-token -S "$hidraw" &&
	run fido2-token-I-pin 60 fido2-token -I "$hidraw" &&
	grep -qE '^options: .*(^|, )clientPin(,|$)' "$t/fido2-token-I-pin.out" &&
	grep -qE '^options: .*(^|, )credMgmt(,|$)' "$t/fido2-token-I-pin.out" &&
	grep -q '^pin retries: 8$' "$t/fido2-token-I-pin.out"; then
	pass "fido2-token-S-set-pin ($(grep '^options:' "$t/fido2-token-I-pin.out"))"
else
	fail fido2-token-S-set-pin "$(out fido2-token-S) $(grep -E '^(options|pin retries)' "$t/fido2-token-I-pin.out" 2>/dev/null)"
fi

# fido2-cred -M -v / fido2-assert -G -v with the PIN on stdin; -V -v
# verifies that the UV flag was signed.
cred_in pin.example frank >cred_uv.in
if run_pin fido2-cred-M-v 60 fido2-cred -M -v -i cred_uv.in -o cred_uv.out "$hidraw" es256 &&
	run fido2-cred-V-v 60 fido2-cred -V -v -i cred_uv.out -o cred_uv.pub es256; then
	pass fido2-cred-M-V-pin
else
	fail fido2-cred-M-V-pin "$(out fido2-cred-M-v) $(out fido2-cred-V-v)"
fi
if [ -s cred_uv.pub ]; then
	assert_in pin.example cred_uv.out >assert_uv.in
	if run_pin fido2-assert-G-v 60 fido2-assert -G -p -v -i assert_uv.in -o assert_uv.out "$hidraw" &&
		run fido2-assert-V-v 60 fido2-assert -V -p -v -i assert_uv.out cred_uv.pub es256; then
		pass fido2-assert-G-V-pin
	else
		fail fido2-assert-G-V-pin "$(out fido2-assert-G-v) $(out fido2-assert-V-v)"
	fi
else
	fail fido2-assert-G-V-pin "no credential from fido2-cred -v"
fi

# OpenSSH: a resident, verify-required key (PIN through SSH_ASKPASS), a
# signature with it, verified, with the UV flag in the signature.
# sig_flags FILE: the authenticator flags in an -sk key's SSHSIG. The blob
# ends with the signature, and an -sk signature ends with the flags byte
# and the 4-byte counter (PROTOCOL.sshsig, PROTOCOL.u2f). ssh-keygen -Y
# verify checks the signature but cannot require UV (verify-required is an
# authorized_keys option, not an allowed_signers one).
sig_flags() {
	sed '1d;$d' "$1" | base64 -d | tail -c 5 | head -c 1 | od -An -tu1 | tr -d ' '
}
# ssh_sign_verify NAME: signs msg with id_rk, verifies the signature and
# that it has UP and UV (0x05); sigflags is the flags byte.
sigflags=
ssh_sign_verify() {
	rm -f msg.sig
	run "$1-sign" 90 "${ssh_env[@]}" ssh-keygen -q -Y sign -f "$t/id_rk" -n file msg </dev/null &&
		run "$1-verify" 60 ssh-keygen -Y verify -f allowed_signers_rk -I e2e-rk@passkeyd -n file -s msg.sig <msg &&
		sigflags=$(sig_flags msg.sig) && [ -n "$sigflags" ] && [ $((sigflags & 5)) = 5 ]
}
if run ssh-keygen-rk 90 "${ssh_env[@]}" ssh-keygen -q -t ecdsa-sk -O resident -O verify-required \
	-O application=ssh:e2e-vm -O user=erin -f "$t/id_rk" -N '' -C e2e-rk </dev/null &&
	printf 'e2e-rk@passkeyd %s\n' "$(cut -d' ' -f1,2 id_rk.pub)" >allowed_signers_rk &&
	ssh_sign_verify ssh-rk; then
	pass "ssh-resident-verify-required (flags $(printf '0x%02x' "$sigflags"); $(askpass_pins) PIN prompts through askpass)"
else
	fail ssh-resident-verify-required "flags ${sigflags:-?}: $(cat "$t"/ssh-keygen-rk.out "$t"/ssh-rk-*.out 2>/dev/null | tail -c 500)"
fi

# --- Credential management (authenticatorCredentialManagement) -------------
# Two discoverable credentials for one RP, made with the PIN.
cm_ok=1
for u in alice bob; do
	uid_b64=$(b64rand 16)
	cred_in cm.example "$u" "$uid_b64" >"cm_$u.in"
	echo "$uid_b64" >"cm_$u.uid"
	run_pin "cm-make-$u" 60 fido2-cred -M -r -v -i "cm_$u.in" -o "cm_$u.out" "$hidraw" es256 || cm_ok=
done
if [ -z "$cm_ok" ]; then
	fail credmgmt-setup "$(out cm-make-alice) $(out cm-make-bob)"
fi
alice_id=$(sed -n 5p cm_alice.out 2>/dev/null)
bob_id=$(sed -n 5p cm_bob.out 2>/dev/null)
bob_uid=$(cat cm_bob.uid)

# Metadata: python-fido2's, recovery.example's, the ssh key's, alice's
# and bob's discoverable credentials.
if run_pin cm-metadata 60 fido2-token -I -c "$hidraw" &&
	grep -q '^existing rk(s): 5$' "$t/cm-metadata.out"; then
	pass "credmgmt-metadata ($(paste -sd' ' "$t/cm-metadata.out"))"
else
	fail credmgmt-metadata "$(out cm-metadata)"
fi

if run_pin cm-rps 60 fido2-token -L -r "$hidraw" &&
	grep -q ' cm.example$' "$t/cm-rps.out" && grep -q ' recovery.example$' "$t/cm-rps.out" &&
	grep -q ' e2e.example$' "$t/cm-rps.out" && grep -q ' ssh:e2e-vm$' "$t/cm-rps.out"; then
	pass "credmgmt-list-rps ($(grep -c '^[0-9]' "$t/cm-rps.out") RPs)"
else
	fail credmgmt-list-rps "$(out cm-rps)"
fi

if run_pin cm-rks 60 fido2-token -L -k cm.example "$hidraw" &&
	grep -qF "$alice_id" "$t/cm-rks.out" && grep -qF "$bob_id" "$t/cm-rks.out" &&
	[ "$(grep -c '^[0-9]' "$t/cm-rks.out")" = 2 ]; then
	pass credmgmt-list-credentials
else
	fail credmgmt-list-credentials "$(out cm-rks)"
fi

# updateUserInformation: bob's name and display name.
if run_pin cm-update 60 fido2-token -S -c -i "$bob_id" -k "$bob_uid" -n robert -p Robert "$hidraw" &&
	run_pin cm-rks-updated 60 fido2-token -L -k cm.example "$hidraw" &&
	grep -F "$bob_id" "$t/cm-rks-updated.out" | grep -qF " Robert $bob_uid "; then
	pass credmgmt-update-user
else
	fail credmgmt-update-user "$(out cm-update) $(out cm-rks-updated)"
fi

# deleteCredential: alice's is gone from the list, and her credential ID
# no longer signs even when an RP presents it.
assert_in cm.example cm_alice.out >cm_alice_assert.in
if run_pin cm-delete 60 fido2-token -D -i "$alice_id" "$hidraw" &&
	run_pin cm-rks-deleted 60 fido2-token -L -k cm.example "$hidraw" &&
	! grep -qF "$alice_id" "$t/cm-rks-deleted.out" && grep -qF "$bob_id" "$t/cm-rks-deleted.out" &&
	! run cm-deleted-assert 60 fido2-assert -G -i cm_alice_assert.in -o /dev/null "$hidraw" </dev/null &&
	grep -q 'FIDO_ERR_NO_CREDENTIALS' "$t/cm-deleted-assert.out"; then
	pass credmgmt-delete
else
	fail credmgmt-delete "$(out cm-delete) $(out cm-rks-deleted) $(out cm-deleted-assert)"
fi

# ssh-keygen -K: the resident ssh key comes back with the PIN.
mkdir -p "$t/dl"
if (cd "$t/dl" && run ssh-keygen-K 90 "${ssh_env[@]}" ssh-keygen -K -N '' </dev/null) &&
	dl_pub=$(cat "$t"/dl/id_*_rk*.pub 2>/dev/null) &&
	[ "$(cut -d' ' -f1,2 <<<"$dl_pub")" = "$(cut -d' ' -f1,2 id_rk.pub)" ]; then
	pass "ssh-keygen-K-download ($(cd "$t/dl" && ls -- *.pub))"
else
	fail ssh-keygen-K-download "$(out ssh-keygen-K) $(ls "$t/dl")"
fi

# --- hmac-secret: fido2-cred -M -h, fido2-assert -G -h with fixed salts ----
# The output for a salt is the same every time, different with UV than
# without (CTAP 2.1 §12.5: two CredRandoms), and different for another
# salt. fido2-assert -V -h checks that the extension data was signed.
# hmac_get NAME SALT [-v]: an assertion with hmac-secret for the hmac
# credential, verified; hmac is the 32-byte output in base64.
hmac=
hmac_get() {
	local name=$1 salt=$2 uvflag=${3:-}
	hmac=
	printf '%s\n%s\n%s\n%s\n' "$(b64rand 32)" hmac.example "$(sed -n 5p hmac.out)" "$salt" >"$name.in"
	run_pin "$name" 60 fido2-assert -G -h -p $uvflag -i "$name.in" -o "$name.out" "$hidraw" || return 1
	head -4 "$name.out" >"$name.v"
	run "$name-V" 60 fido2-assert -V -h -p $uvflag -i "$name.v" hmac.pub es256 || return 1
	# Not resident: line 5 is the hmac-secret output.
	hmac=$(sed -n 5p "$name.out")
	[ "$(printf '%s' "$hmac" | base64 -d 2>/dev/null | wc -c)" = 32 ]
}
salt1=$(b64rand 32)
salt2=$(b64rand 32)
cred_in hmac.example henry >hmac.in
if run fido2-cred-M-h 60 fido2-cred -M -h -i hmac.in -o hmac.out "$hidraw" es256 </dev/null &&
	run fido2-cred-V-h 60 fido2-cred -V -h -i hmac.out -o hmac.pub es256 &&
	hmac_get hmac-a "$salt1" && a1=$hmac &&
	hmac_get hmac-b "$salt1" && a2=$hmac &&
	hmac_get hmac-uv-a "$salt1" -v && u1=$hmac &&
	hmac_get hmac-uv-b "$salt1" -v && u2=$hmac &&
	hmac_get hmac-c "$salt2" && b1=$hmac; then
	if [ "$a1" = "$a2" ] && [ "$u1" = "$u2" ] && [ "$a1" != "$u1" ] && [ "$a1" != "$b1" ] && [ "$u1" != "$b1" ]; then
		pass "hmac-secret (32-byte output: same for the same salt twice, with UV and without; differs with UV and for another salt)"
	else
		fail hmac-secret "outputs: salt1 $a1 / $a2, salt1+UV $u1 / $u2, salt2 $b1"
	fi
else
	fail hmac-secret "$(cat "$t"/fido2-cred-M-h.out "$t"/fido2-cred-V-h.out "$t"/hmac-*.out 2>/dev/null | tail -c 500)"
fi

# --- Large blobs: a blob for a discoverable credential's largeBlobKey ------
# fido2-cred -M -b asks for the key; fido2-token -S/-G/-D -b -n RPID find
# the credential (and its key) through credential management, and write,
# read and delete the blob in the authenticator's large-blob array.
cred_in lb.example ivy >lb.in
{
	echo "a large blob for lb.example, stored by passkeyd in the VM"
	head -c 700 /dev/urandom | base64 -w0
	echo
} >blob.in
# lb_listed NAME: fido2-token -L -b listed exactly one blob (index,
# ciphertext size, original size, credential ID, RP ID) of the blob's
# original size. fido2-token 1.12 prints "<unknown>" for its credential and
# RP: its listing inflates entries as zlib (RFC 1950) only, while libfido2
# 1.12 itself writes raw deflate (RFC 1951), which -G decodes; the entry
# does decrypt with lb.example's largeBlobKey (checked with python-fido2's
# LargeBlobs: raw deflate, original size).
lb_listed() {
	awk -v n="$(wc -c <blob.in)" '/^[0-9]+: / {e++; if ($3 == n) ok++} END {exit !(e == 1 && ok == 1)}' "$t/$1.out"
}
lb_ok=
if run_pin lb-make 60 fido2-cred -M -r -v -b -i lb.in -o lb.out "$hidraw" es256 &&
	lb_key=$(tail -1 lb.out) && [ "$(printf '%s' "$lb_key" | base64 -d 2>/dev/null | wc -c)" = 32 ] &&
	printf '%s\n' "$lb_key" >lb.key &&
	run_pin lb-set 60 fido2-token -S -b -n lb.example blob.in "$hidraw" &&
	run_pin lb-get 60 fido2-token -G -b -n lb.example blob.out "$hidraw" && cmp -s blob.in blob.out &&
	run_pin lb-get-k 60 fido2-token -G -b -k lb.key blob.out-k "$hidraw" && cmp -s blob.in blob.out-k &&
	run_pin lb-list 60 fido2-token -L -b "$hidraw" && lb_listed lb-list; then
	lb_ok=1
else
	fail large-blob-set-get-delete "$(cat "$t"/lb-*.out 2>/dev/null | tail -c 500)"
fi
if [ -n "$lb_ok" ]; then
	if run_pin lb-delete 60 fido2-token -D -b -n lb.example "$hidraw" &&
		! run_pin lb-get-deleted 60 fido2-token -G -b -n lb.example blob.gone "$hidraw" && [ ! -s blob.gone ] &&
		run_pin lb-list-deleted 60 fido2-token -L -b "$hidraw" && ! grep -qE '^[0-9]+: ' "$t/lb-list-deleted.out"; then
		pass "large-blob-set-get-delete ($(wc -c <blob.in)-byte blob byte-identical through -n lb.example and through the largeBlobKey from fido2-cred -M -b; gone after -D -b)"
	else
		fail large-blob-set-get-delete "deleting: $(cat "$t"/lb-delete.out "$t"/lb-get-deleted.out "$t"/lb-list-deleted.out 2>/dev/null | tail -c 500)"
	fi
fi

# --- systemd-cryptenroll: a LUKS2 volume unlocked with the key -------------
# A LUKS2 image on a loop device (on this VM's tmpfs) gets a FIDO2 key
# slot: systemd-cryptenroll makes an hmac-secret credential, presence from
# the prompt (approve-all here); systemd-cryptsetup then unlocks it with
# fido2-device=auto, headless, and the mapping appears.
# --fido2-with-client-pin=no: Debian 12's systemd 252 does not ask for the
# PIN at enrollment when the key can make the credential without it
# (makeCredUvNotRqd, as CTAP 2.1 keys such as the YubiKey 5 do), so it
# stores the hmac-secret output without UV, yet asks for the PIN at unlock
# and then gets the output with UV: CTAP 2.1 makes the two differ, and the
# slot never opens (systemd issue #31443). See README.md.
luks_img=/tmp/luks.img
luks_name=passkeyd-e2e
export DM_DISABLE_UDEV=1 # no udevd here: libdevmapper creates the nodes itself
printf 'e2e-passphrase' >luks.pass
truncate -s 24M "$luks_img"
loopdev=
if loopdev=$(losetup --find --show "$luks_img" 2>"$t/losetup.out") &&
	run luks-format 120 cryptsetup luksFormat -q --type luks2 --pbkdf pbkdf2 --pbkdf-force-iterations 1000 \
		--key-file luks.pass "$loopdev" &&
	chmod 0600 luks.pass &&
	run luks-enroll 120 systemd-cryptenroll --unlock-key-file="$t/luks.pass" \
		--fido2-device="$hidraw" --fido2-with-client-pin=no --fido2-with-user-presence=yes "$loopdev" </dev/null &&
	run luks-dump 60 cryptsetup luksDump "$loopdev" && grep -q 'systemd-fido2' "$t/luks-dump.out" &&
	run luks-token 60 cryptsetup token export --token-id 0 "$loopdev" &&
	grep -q '"fido2-up-required":true' "$t/luks-token.out" && grep -q '"fido2-clientPin-required":false' "$t/luks-token.out"; then
	pass "cryptenroll-fido2 ($(grep -o 'New FIDO2 token enrolled as key slot [0-9]*' "$t/luks-enroll.out"); token systemd-fido2, presence required)"
	if run luks-attach 120 /lib/systemd/systemd-cryptsetup attach "$luks_name" "$loopdev" - \
		fido2-device=auto,headless=true,token-timeout=30 </dev/null &&
		[ -b "/dev/mapper/$luks_name" ] &&
		run luks-status 30 cryptsetup status "$luks_name" && grep -q 'type:    LUKS2' "$t/luks-status.out"; then
		pass "cryptsetup-unlock-fido2 (/dev/mapper/$luks_name from $loopdev, $(grep -o 'cipher: *[^ ]*' "$t/luks-status.out" | tr -s ' '))"
	else
		fail cryptsetup-unlock-fido2 "$(out luks-attach) $(out luks-status)"
	fi
	[ -e "/dev/mapper/$luks_name" ] && cryptsetup close "$luks_name" >/dev/null 2>&1
else
	fail cryptenroll-fido2 "$(cat "$t/losetup.out" 2>/dev/null) $(out luks-format) $(out luks-enroll) $(grep -i token "$t/luks-dump.out" 2>/dev/null) $(out luks-token)"
fi
[ -n "$loopdev" ] && losetup -d "$loopdev" 2>/dev/null
rm -f "$luks_img"

# ===========================================================================
stage "3: restart with --prompt agent (the owner's passkeyctl agent, pinentry)"
# Recovery: SIGTERM unplugs the key; the new daemon plugs it in again with
# the same credentials.
old_hidraw=$hidraw
if ! stop_daemon; then
	fail daemon-restart-replug "SIGTERM: $stopped"
elif ! start_daemon --prompt agent --owner "$OWNER_UID"; then
	fail daemon-restart-replug "no hidraw node after the restart; daemon log: $(tail -c 600 "$daemon_log")"
	echo "E2E DONE"
	exit 0
else
	pass "daemon-restart-replug ($old_hidraw gone at SIGTERM, $hidraw back at $(elapsed)s)"
fi

# The owner's prompt agent: passkeyctl agent as OWNER_UID, showing prompts
# through the test pinentry, which confirms presence and types the PIN.
owner_home=/tmp/owner
install -d -m 0700 -o "$OWNER_UID" -g "$OWNER_UID" "$owner_home"
pinentry_log=$owner_home/pinentry.log
agent_log=/tmp/agent.log
agent=
# start_agent FLAGS...: starts it and waits up to 10 s for the daemon to
# log it. The host's /etc/passwd (read-only here) has no passkeyd account,
# so the agent is told the daemon's uid with --daemon-user, as on a system
# whose unit runs passkeyd under another name.
start_agent() {
	setpriv --reuid="$OWNER_UID" --regid="$OWNER_UID" --clear-groups --no-new-privs \
		env -i HOME="$owner_home" PATH=/usr/bin:/bin LANG=C.UTF-8 \
		FAKE_PIN="$pin" FAKE_LOG="$pinentry_log" \
		"$PASSKEYCTL_BIN" --control "$control" agent --pinentry "$FAKEPINENTRY_BIN" "$@" >>"$agent_log" 2>&1 &
	agent=$!
	for _ in $(seq 1 100); do
		grep -q "msg=\"prompt agent connected\" uid=$OWNER_UID" "$daemon_log" && return 0
		kill -0 "$agent" 2>/dev/null || return 1
		sleep 0.1
	done
	return 1
}
agent_state() {
	if kill -0 "$agent" 2>/dev/null; then
		echo "agent running"
	else
		wait "$agent"
		echo "agent exited $?"
	fi
}
# Without --daemon-user the agent trusts root, itself and the passkeyd
# account only: a socket served by uid SVC_UID (no such account here) is
# refused at once, exit status 78 (the user unit's RestartPreventExitStatus),
# and no prompt is shown. That check is what stops a spoofed socket from
# phishing the PIN.
refuse_rc=0
setpriv --reuid="$OWNER_UID" --regid="$OWNER_UID" --clear-groups --no-new-privs \
	env -i HOME="$owner_home" PATH=/usr/bin:/bin LANG=C.UTF-8 FAKE_PIN="$pin" FAKE_LOG="$pinentry_log" \
	timeout 20 "$PASSKEYCTL_BIN" --control "$control" agent --pinentry "$FAKEPINENTRY_BIN" >"$t/agent-refused.out" 2>&1 || refuse_rc=$?
if [ "$refuse_rc" = 78 ] &&
	grep -qF "refusing to talk to $control: served by uid $SVC_UID, not the passkeyd service; trusted are root, you (uid $OWNER_UID); if passkeyd" "$t/agent-refused.out" &&
	[ ! -e "$pinentry_log" ] && ! grep -q "prompt agent connected" "$daemon_log"; then
	pass "prompt-agent-refuses-unknown-daemon (exit 78)"
else
	fail prompt-agent-refuses-unknown-daemon "exit $refuse_rc: $(tail -c 400 "$t/agent-refused.out")"
fi
if start_agent --daemon-user "$SVC_UID"; then
	pass "prompt-agent-connected (agent uid $OWNER_UID, daemon uid $SVC_UID: the unit's layout, --daemon-user $SVC_UID)"
else
	fail prompt-agent-connected "$(agent_state): $(tail -c 400 "$agent_log")"
fi
getpins() { grep -c '^GETPIN' "$pinentry_log" 2>/dev/null || true; }
confirms() { grep -c '^CONFIRM' "$pinentry_log" 2>/dev/null || true; }

# A credential from stage 1 still signs (presence through the agent).
if [ -s cred.pub ]; then
	assert_in e2e.example cred.out >assert2.in
	if run restart-assert-G 60 fido2-assert -G -p -i assert2.in -o assert2.out "$hidraw" </dev/null &&
		run restart-assert-V 60 fido2-assert -V -p -i assert2.out cred.pub es256; then
		pass "restart-credential-authenticates (presence confirmed through the agent: $(confirms) CONFIRM)"
	else
		fail restart-credential-authenticates "$(out restart-assert-G) $(out restart-assert-V)"
	fi
else
	fail restart-credential-authenticates "no credential from stage 1"
fi
# The discoverable one from stage 1 is still listed.
if run_pin restart-list 60 fido2-token -L -k recovery.example "$hidraw" &&
	grep -qF "$(sed -n 5p rk.out)" "$t/restart-list.out"; then
	pass restart-discoverable-listed
else
	fail restart-discoverable-listed "$(out restart-list)"
fi

# With a prompt that takes the PIN, the key reports built-in UV.
if run fido2-token-I-uv 60 fido2-token -I "$hidraw" </dev/null &&
	grep -qE '^options: .*(^|, )uv(,|$)' "$t/fido2-token-I-uv.out" &&
	grep -qE '^options: .*(^|, )clientPin(,|$)' "$t/fido2-token-I-uv.out"; then
	pass fido2-token-I-builtin-uv
else
	fail fido2-token-I-builtin-uv "$(grep '^options' "$t/fido2-token-I-uv.out" 2>/dev/null || out fido2-token-I-uv)"
fi

# uv_path NAME BEFORE: which way a client verified the user: built-in UV
# (the agent's pinentry was asked for the PIN) or clientPIN (the client
# read the PIN from stdin).
uv_path() {
	local asked=$(($(getpins) - $2)) prompted
	prompted=$(cat "$t/$1.prompts")
	if [ "$asked" -gt 0 ] && [ "$prompted" = 0 ]; then
		echo "built-in UV: the agent's pinentry gave the PIN $asked time(s)"
	elif [ "$asked" = 0 ] && [ "$prompted" -gt 0 ]; then
		echo "clientPIN: the PIN from stdin"
	else
		echo "pinentry asked $asked time(s), the client prompted $prompted time(s)"
	fi
}
cred_in uv.example grace >cred_bu.in
n=$(getpins)
if run_pin fido2-cred-M-bu 60 fido2-cred -M -v -i cred_bu.in -o cred_bu.out "$hidraw" es256 &&
	run fido2-cred-V-bu 60 fido2-cred -V -v -i cred_bu.out -o cred_bu.pub es256; then
	pass "fido2-cred-M-V-agent ($(uv_path fido2-cred-M-bu "$n"))"
else
	fail fido2-cred-M-V-agent "$(out fido2-cred-M-bu) $(out fido2-cred-V-bu)"
fi
if [ -s cred_bu.pub ]; then
	assert_in uv.example cred_bu.out >assert_bu.in
	n=$(getpins)
	if run_pin fido2-assert-G-bu 60 fido2-assert -G -p -v -i assert_bu.in -o assert_bu.out "$hidraw" &&
		run fido2-assert-V-bu 60 fido2-assert -V -p -v -i assert_bu.out cred_bu.pub es256; then
		pass "fido2-assert-G-V-agent ($(uv_path fido2-assert-G-bu "$n"))"
	else
		fail fido2-assert-G-V-agent "$(out fido2-assert-G-bu) $(out fido2-assert-V-bu)"
	fi
else
	fail fido2-assert-G-V-agent "no credential from fido2-cred -v"
fi

# The verify-required ssh key signs again after the restart.
n=$(getpins)
a=$(askpass_pins)
if [ -s id_rk.pub ] && ssh_sign_verify ssh-rk2; then
	pass "ssh-verify-required-sign-agent (flags $(printf '0x%02x' "$sigflags"); PIN prompts: askpass $(($(askpass_pins) - a)), pinentry $(($(getpins) - n)))"
else
	fail ssh-verify-required-sign-agent "flags ${sigflags:-?}: $(cat "$t"/ssh-rk2-*.out 2>/dev/null | tail -c 500)"
fi

# --- pam-u2f: pamu2fcfg registrations, pam_u2f.so through pamtester -------
stage "3: pam-u2f"
# shellcheck source=pamu2f.sh
. "$guest/pamu2f.sh"

# --- Chromium: discoverable passkeys need UV, which it gets from the key ----
if [ -n "$browser_job" ]; then
	n=$(getpins)
	touch /tmp/www/go
	wait "$browser_job"
	echo "VM chromium: the agent's pinentry gave the PIN $(($(getpins) - n)) time(s)"
fi

# --- Shutdown: SIGTERM ends the daemon cleanly and unplugs the device -----
if stop_daemon; then
	pass daemon-sigterm-unplugs
else
	fail daemon-sigterm-unplugs "$stopped"
fi
kill -TERM "$agent" 2>/dev/null
wait "$agent" 2>/dev/null

# Firefox under Xvfb, its own daemon from a key without a PIN (firefox.sh).
bash "$guest/firefox.sh" "$work" "$repo"

if all_logs | grep -q 'level=ERROR'; then
	echo "VM daemon logged errors:"
	all_logs | grep 'level=ERROR' | head -20 | sed 's/^/VM   /'
fi
if [ "$failures" != 0 ] || [ -n "${VERBOSE:-}" ]; then
	for f in /tmp/passkeyd-*.log; do sed "s/^/VM daemon ${f#/tmp/passkeyd-}: /" "$f"; done
	sed 's/^/VM agent: /' "$agent_log"
	sed 's/^/VM pinentry: /' "$pinentry_log" 2>/dev/null
fi
echo "VM guest checks done at $(elapsed)s"
echo "E2E DONE"
