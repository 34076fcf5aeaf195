#!/bin/bash
# Runs as root in the system test VM (test/vm/system.sh), as the service
# passkeyd-vm-checks.service of a booted Debian whose PID 1 is systemd
# (guest/system-init): installs passkeyd's .deb with apt, with its shipped
# configuration (users = "auto": seat mode; prompt = "polkit+agent"), and
# checks what a person would check, with alice logged in on tty1 and bob on
# tty2 (logind seat sessions; the active one follows the VT, switched with
# chvt), each with polkit's text agent registered for their session, whose
# password prompts the test answers. Client commands run AS alice or bob
# (runuser), never as root. Each check prints "E2E PASS name" or "E2E FAIL
# name: reason" on the serial console; "E2E DONE" ends the list, then the
# VM powers off.
#
# set -e is on: every check's commands sit in if/|| conditions; anything
# else failing ends the script, which the host reports (no E2E DONE).
set -euo pipefail
work=$1
repo=$2
# shellcheck source=/dev/null
. "$work/env" # DEB1 DEB2 V1 V2 FAKEPINENTRY_BIN BROWSER ONLY VERBOSE
export VERBOSE
guest=$repo/test/vm/guest
export PATH=/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C.UTF-8 HOME=/root DEBIAN_FRONTEND=noninteractive
t=/root/checks
mkdir -p "$t"
cd "$t"

pin=271828
user=alice
uid=1100
other=bob
ouid=1101
opin=314159
uhome=/home/$user
ohome=/home/$other
# The login passwords (guest/system-init sets them with chpasswd).
declare -A password=([alice]=alice-wonderland-1100 [bob]=bob-builder-1101)
failures=0
pass() { echo "E2E PASS $1"; }
fail() {
	failures=$((failures + 1))
	local name=$1
	shift
	echo "E2E FAIL $name: $(printf '%s' "$*" | tr '\n' '|' | cut -c1-700)"
}
elapsed() { cut -d' ' -f1 /proc/uptime; }
stage() { echo "VM stage: $* (at $(elapsed)s)"; }
bg_pids=()
finish() {
	local rc=$?
	[ ${#bg_pids[@]} = 0 ] || kill "${bg_pids[@]}" 2>/dev/null || true
	echo "VM checks ended at $(elapsed)s (status $rc, $failures failed)"
	echo "E2E DONE"
	sync
	systemctl poweroff --force --force >/dev/null 2>&1 || echo o >/proc/sysrq-trigger
}
trap finish EXIT

# run NAME SECONDS CMD...: CMD bounded, in a new session (no controlling
# terminal: libfido2 reads the PIN from stdin), output in $t/NAME.out.
run() {
	local name=$1 secs=$2 rc=0
	shift 2
	timeout -k 5 "$secs" setsid -w "$@" >"$t/$name.out" 2>&1 || rc=$?
	if [ -n "${VERBOSE:-}" ]; then
		echo "VM \$ $*  (exit $rc)"
		sed "s/^/VM   $name: /" "$t/$name.out"
	fi
	return $rc
}
# run_live NAME SECONDS CMD...: run, with each output line also on the
# console as it comes, stamped with the guest's uptime (apt and the
# maintainer scripts: where the time goes).
run_live() {
	local name=$1 secs=$2 rc=0
	shift 2
	echo "VM \$ $*"
	{
		timeout -k 5 "$secs" setsid -w "$@" </dev/null 2>&1 || rc=$?
		echo "$rc" >"$t/$name.rc"
	} | tee "$t/$name.out" | while IFS= read -r l; do echo "VM   [$(elapsed)] $name: $l"; done
	rc=$(cat "$t/$name.rc")
	echo "VM   $name: exit $rc at $(elapsed)s"
	return "$rc"
}
out() { tail -c 500 "$t/$1.out" 2>/dev/null || true; }
# "${ua[@]}" CMD...: CMD as alice with the environment of her session (her
# runtime directory and session bus, for systemctl --user).
ua=(runuser -u "$user" -- env -i HOME="$uhome" USER="$user" LOGNAME="$user" PATH=/usr/bin:/bin LANG=C.UTF-8
	XDG_RUNTIME_DIR="/run/user/$uid" DBUS_SESSION_BUS_ADDRESS="unix:path=/run/user/$uid/bus")
# "${ub[@]}" CMD...: the same for bob.
ub=(runuser -u "$other" -- env -i HOME="$ohome" USER="$other" LOGNAME="$other" PATH=/usr/bin:/bin LANG=C.UTF-8
	XDG_RUNTIME_DIR="/run/user/$ouid" DBUS_SESSION_BUS_ADDRESS="unix:path=/run/user/$ouid/bus")
# wait_for SECONDS CMD...: polls CMD every 0.2 s until it succeeds.
wait_for() {
	local secs=$1 i
	shift
	for ((i = 0; i < secs * 5; i++)); do
		"$@" >/dev/null 2>&1 && return 0
		sleep 0.2
	done
	return 1
}
b64rand() { head -c "$1" /dev/urandom | base64 -w0; }

# The hidraw node of passkeyd's device, by its HID_ID.
hidraw=
find_hidraw() {
	local u n
	hidraw=
	for u in /sys/class/hidraw/hidraw*/device/uevent; do
		[ -e "$u" ] || continue
		if grep -qi '^HID_ID=0003:00001209:00007A55$' "$u"; then
			n=${u#/sys/class/hidraw/}
			hidraw=/dev/${n%%/*}
		fi
	done
	[ -n "$hidraw" ] && [ -c "$hidraw" ]
}
# The key is up: the service active and its hidraw node present.
key_up() { systemctl is-active -q passkeyd && find_hidraw; }
# The HID device behind the node (0003:1209:7A55.NNNN): a new one after
# every re-creation, even when the hidraw number is reused.
hid_device() { basename "$(readlink -f "/sys/class/hidraw/${hidraw#/dev/}/device" 2>/dev/null)"; }
journal() { journalctl -u passkeyd.service -o cat --no-pager 2>/dev/null || true; }
count() { journal | grep -c "$1" || true; }
agent_connected() { [ "$(count "prompt agent connected.* uid=${2:-$uid}")" -gt "$1" ]; }
# The passkeys alice sees: the ID column of passkeyctl list (LAST USED
# changes with every sign-in).
listing() { "${ua[@]}" passkeyctl list 2>&1 | awk 'NR > 1 {print $NF}' | sort || true; }

# polkit's text agents. Each user's login shell runs polkit's text listener
# for the session under script(1) (guest/system-init, guest/
# polkit_session_agent.py): its tty output is ~/.polkit-agent.log, its
# input what is appended to ~/.polkit-agent.in. pk_answerer USER answers
# every new "Password:" prompt there with the line in $t/pk-USER.answer
# (the right password unless a check says otherwise). The listener turns
# echo off with TCSAFLUSH after printing the prompt, discarding input that
# came before: the answer waits a second, and is sent once more when no
# outcome appears (a second copy is discarded by the next prompt's flush).
pk_count() { grep -c "$2" "/home/$1/.polkit-agent.log" 2>/dev/null || true; }
pk_prompts() { pk_count "$1" 'Password:'; }
pk_outcomes() { pk_count "$1" '==== AUTHENTICATION \(COMPLETE\|FAILED\)'; }
pk_more() { [ "$(pk_outcomes "$1")" -gt "$2" ]; }
pk_answer() { printf '%s\n' "$2" >"$t/pk-$1.answer"; }
pk_answerer() {
	local u=$1 seen=0 n done0 i
	while :; do
		n=$(pk_prompts "$u")
		if [ "$n" -gt "$seen" ]; then
			seen=$n
			done0=$(pk_outcomes "$u")
			for i in 1 2; do
				sleep 1
				cat "$t/pk-$u.answer" >>"/home/$u/.polkit-agent.in"
				if wait_for 8 pk_more "$u" "$done0"; then break; fi
			done
		fi
		sleep 0.3
	done
}

# The seat: logind's active session on seat0 and the session of USER on TTY.
active_session() { loginctl show-seat seat0 -p ActiveSession --value 2>/dev/null; }
session_of() {
	local s
	for s in $(loginctl list-sessions --no-legend | awk -v u="$1" '$3 == u {print $1}'); do
		if [ "$(loginctl show-session "$s" -p Seat --value)" = seat0 ] &&
			[ "$(loginctl show-session "$s" -p TTY --value)" = "$2" ]; then
			echo "$s"
			return 0
		fi
	done
	return 1
}
is_active() { [ -n "$1" ] && [ "$(active_session)" = "$1" ]; }
no_active() { [ -z "$(active_session)" ]; }
# acl_for USER: the node's ACL names USER (and nobody else).
acl_for() { [ "$(getfacl -p "$hidraw" 2>/dev/null | grep '^user:.*:' | grep -v '^user::')" = "user:$1:rw-" ]; }
# switched_to USER OLDDEV: a new HID device is up (not OLDDEV), with USER's ACL.
switched_to() { key_up && [ "$(hid_device)" != "$2" ] && acl_for "$1"; }
unplugged() { ! find_hidraw; }

# ===========================================================================
stage "boot: systemd, udev, dbus, logind, polkit, alice on tty1"
state=$(timeout 120 systemctl is-system-running --wait 2>/dev/null || true)
if [ "$(cat /proc/1/comm)" = systemd ] && { [ "$state" = running ] || [ "$state" = degraded ]; }; then
	pass "systemd-pid1 (systemd $(systemctl --version | awk 'NR==1{print $2}'), $state at $(elapsed)s)"
else
	fail systemd-pid1 "PID 1 is $(cat /proc/1/comm), state $state"
fi
if [ "$state" = degraded ]; then
	systemctl --failed --no-legend --plain | sed 's/^/VM failed unit: /'
fi
run polkit 60 systemctl start polkit.service || true
down=
for u in systemd-journald systemd-udevd dbus systemd-logind polkit; do
	systemctl is-active -q "$u.service" || down="$down $u"
done
if [ -z "$down" ]; then
	pass "system-services (journald, udevd, dbus, logind, polkitd active)"
else
	fail system-services "not active:$down; $(out polkit)"
fi

session=
osession=
seat_sessions() {
	session=$(session_of "$user" tty1) && osession=$(session_of "$other" tty2) && is_active "$session"
}
if wait_for 120 seat_sessions && wait_for 60 systemctl is-active -q "user@$uid.service"; then
	pass "seat-sessions ($user: session $session on seat0, tty1, active; $other: session $osession on tty2, $(loginctl show-session "$osession" -p State --value); user@$uid.service running)"
else
	fail seat-sessions "$(loginctl list-sessions --no-legend 2>&1); active: $(active_session); user@$uid: $(systemctl is-active "user@$uid.service" 2>&1)"
fi
# polkit's text agent in each session, registered for that session
# (guest/polkit_session_agent.py, started by the login shell).
agents_in_sessions() {
	grep -q "^registered for session $session" "$uhome/.polkit-agent.log" 2>/dev/null &&
		grep -q "^registered for session $osession" "$ohome/.polkit-agent.log" 2>/dev/null
}
if wait_for 90 agents_in_sessions; then
	pass "polkit-agents (polkit's text agent registered for $user's session $session and for $other's session $osession)"
else
	fail polkit-agents "$(ps -eo user,pid,args | grep -E '[p]olkit_session_agent|[s]cript' | tr '\n' '|'); $(tail -c 300 "$uhome/.polkit-agent.log" 2>&1)"
fi
for u in "$user" "$other"; do
	pk_answer "$u" "${password[$u]}"
	pk_answerer "$u" &
	bg_pids+=($!)
done

# ===========================================================================
stage "install: apt install ./passkeyd_*.deb, nothing configured"
if run_live apt-install 600 apt install -y "$DEB1" &&
	[ "$(dpkg-query -W -f '${Status} ${Version}' passkeyd)" = "install ok installed $V1" ] &&
	grep -q '^passkeyd: each user at the seat has their own passkeys' "$t/apt-install.out" &&
	! grep -q 'no owner set' "$t/apt-install.out"; then
	# The postinst asks the daemon whose passkeys it serves: seat mode
	# here, so it must not ask for an owner (packaging/scripts/postinstall.sh).
	pass "apt-install (${DEB1##*/} on the clean system; the postinst: \"$(grep -m1 '^passkeyd: each user' "$t/apt-install.out")\")"
else
	fail apt-install "$(out apt-install)"
fi
if wait_for 30 key_up; then
	pass "service-active (systemctl is-active passkeyd: $(systemctl is-active passkeyd); is-enabled: $(systemctl is-enabled passkeyd); $hidraw)"
else
	fail service-active "$(systemctl status passkeyd --no-pager 2>&1 | tail -15)"
fi
# PASSKEYD_VM_ONLY=fprint (system.sh): the fingerprint stage alone.
if [ "${ONLY:-}" = fprint ]; then
	. "$guest/system-fprint.sh"
	exit 0
fi
svc_user=$(ps -o user= -p "$(systemctl show -p MainPID --value passkeyd)" 2>/dev/null || true)
if [ "$svc_user" = passkeyd ]; then
	pass "service-user (the daemon runs as passkeyd)"
else
	fail service-user "runs as '${svc_user}'"
fi
if [ "$(stat -c '%U:%G %a' /dev/uhid 2>&1)" = "root:passkeyd 660" ]; then
	pass "uhid-permissions (/dev/uhid root:passkeyd 0660; uhid loaded: $(grep -c '^uhid ' /proc/modules))"
else
	fail uhid-permissions "$(stat -c '%U:%G %a' /dev/uhid 2>&1)"
fi
if [ "$(stat -c '%U:%G %a' /dev/tpmrm0 2>&1)" = "root:tss 660" ]; then
	pass "tpmrm-permissions (/dev/tpmrm0 root:tss 0660)"
else
	fail tpmrm-permissions "$(stat -c '%U:%G %a' /dev/tpmrm0 2>&1)"
fi

# polkit's action, from the package: polkitd picks up the new file.
pk_action() { pkaction --action-id org.passkeyd.verify-user --verbose 2>&1 | grep -qE 'implicit active: +auth_self$'; }
if [ -f /usr/share/polkit-1/actions/org.passkeyd.policy ] && wait_for 30 pk_action; then
	pass "polkit-action (org.passkeyd.verify-user: $(pkaction --action-id org.passkeyd.verify-user --verbose | grep -E 'implicit (any|inactive|active)' | tr -s ' ' | tr '\n' ';'))"
else
	fail polkit-action "$(ls -l /usr/share/polkit-1/actions/org.passkeyd.policy 2>&1); $(pkaction --action-id org.passkeyd.verify-user --verbose 2>&1 | tail -5)"
fi
# The shipped configuration, unedited: seat mode and polkit+agent are the
# defaults (every key of the file is commented out).
if [ -z "$(grep -vE '^[[:space:]]*(#|$|\[policy\])' /etc/passkeyd/passkeyd.conf)" ] &&
	run info 30 "${ua[@]}" passkeyctl info && grep -qE '^Users: +seat: ' "$t/info.out" &&
	grep -qE '^Prompt: +polkit\+agent$' "$t/info.out" &&
	[ "$(count 'passkeyd serving the active user at seat0')" -ge 1 ]; then
	pass "default-config (passkeyd.conf as shipped; passkeyctl info: $(grep -E '^(Users|Prompt|Built-in UV)' "$t/info.out" | tr -s ' ' | tr '\n' ';'))"
else
	fail default-config "$(grep -vE '^[[:space:]]*(#|$)' /etc/passkeyd/passkeyd.conf | tr '\n' ' '); $(out info)"
fi

if [ -n "$hidraw" ] && wait_for 10 acl_for "$user"; then
	pass "hidraw-uaccess-acl ($hidraw: $(getfacl -p "$hidraw" 2>/dev/null | grep '^user:' | tr '\n' ' '))"
else
	fail hidraw-uaccess-acl "$(getfacl -p "$hidraw" 2>&1); $(udevadm info "$hidraw" 2>&1 | grep -E 'TAGS|SECURITY')"
fi
# bob's session is not the active one: opening the node fails with EACCES.
if [ -n "$hidraw" ] && ! run other-user-open 20 runuser -u "$other" -- sh -c "exec 3<>$hidraw" &&
	grep -q 'Permission denied' "$t/other-user-open.out"; then
	pass "hidraw-other-user-denied ($other, logged in on tty2 but not active: $(tr -d '\n' <"$t/other-user-open.out" | sed 's/.*: //'))"
else
	fail hidraw-other-user-denied "$(out other-user-open)"
fi

# Chromium (as alice) starts now and waits for "go" (browser.sh): its
# start-up overlaps the CLI checks. browser.sh bounds the ceremonies from
# "go" on itself; the bound here only stops a hung script, so it must not
# count the checks in between, which take minutes more on a loaded host.
browser_job=
if [ "$BROWSER" = 1 ]; then
	rm -rf /tmp/www /tmp/http.log /tmp/chromium.log
	timeout -k 5 1200 runuser -u "$user" -- env -i HOME="$uhome" PATH=/usr/bin:/bin LANG=C.UTF-8 \
		bash "$guest/browser.sh" "$guest" &
	browser_job=$!
fi

# ===========================================================================
stage "the agent: passkeyctl-agent.service in alice's user manager"
# Enabled for every user by the package (systemctl --global enable), for
# graphical-session.target, which a text login never reaches: the test
# starts it by hand, with the test pinentry (a drop-in, as a user would
# set their own pinentry).
enabled=$("${ua[@]}" systemctl --user is-enabled passkeyctl-agent.service 2>&1 || true)
dropin=$uhome/.config/systemd/user/passkeyctl-agent.service.d
mkdir -p "$dropin"
cat >"$dropin/test-pinentry.conf" <<EOF
[Service]
ExecStart=
ExecStart=/usr/bin/passkeyctl agent --pinentry $FAKEPINENTRY_BIN
Environment=FAKE_PIN=$pin FAKE_LOG=$uhome/pinentry.log
EOF
chown -R "$user:$user" "$uhome/.config"
connected=$(count "prompt agent connected.* uid=$uid")
if [ "$enabled" = enabled ] &&
	run agent-start 60 "${ua[@]}" sh -c 'systemctl --user daemon-reload && systemctl --user start passkeyctl-agent.service' &&
	wait_for 30 agent_connected "$connected"; then
	pass "agent-user-unit (is-enabled --user: $enabled; active in user@$uid; the daemon logged it connected)"
else
	fail agent-user-unit "is-enabled: $enabled; $(out agent-start); $("${ua[@]}" systemctl --user status passkeyctl-agent --no-pager 2>&1 | tail -5)"
fi
confirms() {
	local n
	n=$(grep -c '^CONFIRM' "${1:-$uhome}/pinentry.log" 2>/dev/null) || true
	echo "${n:-0}"
}
# A second agent of alice's (a stray process of hers) is refused while the
# first is connected, and exits 78 (retrying cannot help).
refused=$(count "prompt agent refused.* uid=$uid")
rc=0
run agent-second 30 "${ua[@]}" passkeyctl agent --pinentry "$FAKEPINENTRY_BIN" || rc=$?
if [ "$rc" = 78 ] && [ "$(count "prompt agent refused.* uid=$uid")" -gt "$refused" ] && agent_connected 0; then
	pass "agent-second-refused (a second agent of $user: exit $rc, \"$(tail -1 "$t/agent-second.out" | cut -c1-160)\"; the first stays connected)"
else
	fail agent-second-refused "exit $rc; $(out agent-second); $(journal | grep 'prompt agent' | tail -3)"
fi
# bob's agent, started now while alice is active: refused, it keeps
# retrying and is admitted once bob's session is the active one (below).
install -d -o "$other" -g "$other" "$ohome/work"
refused=$(count "prompt agent refused.* uid=$ouid")
"${ub[@]}" FAKE_PIN=$opin FAKE_LOG=$ohome/pinentry.log passkeyctl agent --pinentry "$FAKEPINENTRY_BIN" >"$t/agent-bob.out" 2>&1 &
bg_pids+=($!)
refused_more() { [ "$(count "prompt agent refused.* uid=$1")" -gt "$2" ]; }
if wait_for 20 refused_more "$ouid" "$refused" && ! agent_connected 0 "$ouid"; then
	pass "agent-inactive-user-refused ($other's agent while $user is active: \"$(journal | grep "prompt agent refused.* uid=$ouid" | tail -1 | grep -o 'why=.*' | cut -c1-160)\")"
else
	fail agent-inactive-user-refused "$(journal | grep 'prompt agent' | tail -3); $(tail -c 300 "$t/agent-bob.out")"
fi

# ===========================================================================
stage "alice registers and signs in: UV through polkit (no PIN), fido2-tools, OpenSSH"
w=$uhome/work
install -d -o "$user" -g "$user" "$w"
cred_in() { printf '%s\n%s\n%s\n%s\n' "$(b64rand 32)" "$1" "$2" "$(b64rand 16)"; }
assert_in() { printf '%s\n%s\n%s\n' "$(b64rand 32)" "$1" "$(sed -n 5p "$2")"; }
# input files in DIR owned by U
owned() { chown "$1:$1" "${@:2}"; }
cred_in system.example "$user" >"$w/cred.in"
cred_in system.example "$user-server-side" >"$w/cred2.in"
owned "$user" "$w/cred.in" "$w/cred2.in"
if run fido2-token-L 60 "${ua[@]}" fido2-token -L && grep -qi "^$hidraw: vendor=0x1209, product=0x7a55" "$t/fido2-token-L.out"; then
	pass "fido2-token-L-user ($user finds $hidraw)"
else
	fail fido2-token-L-user "$(out fido2-token-L)"
fi
# Built-in UV through polkit, and no PIN set (libfido2 prints noclientPin).
options() { grep '^options:' "$t/$1.out" | cut -c10-; }
if run token-I0 60 "${ua[@]}" fido2-token -I "$hidraw" && grep -qE '^options: .*(^|, )uv(,|$)' "$t/token-I0.out" &&
	grep -qE '^options: .*noclientPin' "$t/token-I0.out"; then
	pass "getinfo-builtin-uv (options: $(options token-I0))"
else
	fail getinfo-builtin-uv "$(out token-I0)"
fi
# A discoverable credential is created only with UV on an authenticator
# protected by UV (CTAP 2.1 §6.1.2 step 6: PUAT_REQUIRED otherwise): -v makes
# libfido2 get a token with getPinUvAuthTokenUsingUvWithPermissions, which
# the daemon answers through polkit: the text agent of alice's session asks for
# her password (pk_answerer types it).
p0=$(pk_prompts "$user")
o0=$(pk_prompts "$other")
if run cred-M 90 "${ua[@]}" fido2-cred -M -r -v -i "$w/cred.in" -o "$w/cred.out" "$hidraw" es256 &&
	run cred-V 60 "${ua[@]}" fido2-cred -V -v -i "$w/cred.out" -o "$w/cred.pub" es256 &&
	[ "$(pk_prompts "$user")" -gt "$p0" ] && [ "$(pk_prompts "$other")" = "$o0" ]; then
	pass "fido2-cred-uv-polkit (discoverable, fido2-cred -M -r -v: polkit asked $user's agent $(($(pk_prompts "$user") - p0)) time(s), $other's none; attestation verified with the UV flag)"
else
	fail fido2-cred-uv-polkit "$(out cred-M) $(out cred-V); agent: $(tail -c 300 "$uhome/.polkit-agent.log"); $(journal | grep 'polkit' | tail -3)"
fi
# What alice's agent showed (its colours dropped; awk ends the last line,
# which the agent leaves open, so the next E2E line starts a line).
tail -n 8 "$uhome/.polkit-agent.log" | awk '{ gsub(/\033\[[0-9;]*m/, ""); print "VM polkit agent alice: " $0 }'
# A non-discoverable credential needs no UV (makeCredUvNotRqd): presence
# through the session agent (the test pinentry confirms).
c0=$(confirms)
if run cred2-M 60 "${ua[@]}" fido2-cred -M -i "$w/cred2.in" -o "$w/cred2.out" "$hidraw" es256 &&
	run cred2-V 60 "${ua[@]}" fido2-cred -V -i "$w/cred2.out" -o "$w/cred2.pub" es256; then
	pass "fido2-cred-server-side-user (non-discoverable, as $user, no UV)"
else
	fail fido2-cred-server-side-user "$(out cred2-M) $(out cred2-V)"
fi
# assert NAME CRED PUB: a sign-in with CRED's ID (an allow list), presence
# only, the signature verified.
assert() {
	assert_in system.example "$w/$2.out" >"$w/$1.in" && owned "$user" "$w/$1.in" &&
		run "$1-G" 60 "${ua[@]}" fido2-assert -G -p -i "$w/$1.in" -o "$w/$1.out" "$hidraw" &&
		run "$1-V" 60 "${ua[@]}" fido2-assert -V -p -i "$w/$1.out" "$w/$2.pub" es256
}
if [ -s "$w/cred.pub" ] && assert assert cred && [ -s "$w/cred2.pub" ] && assert assert2 cred2; then
	pass "fido2-assert-user (both credentials sign in by ID, signatures verified)"
else
	fail fido2-assert-user "$(out assert-G) $(out assert-V) $(out assert2-G) $(out assert2-V)"
fi
if [ "$(confirms)" -gt "$c0" ]; then
	pass "agent-answers-prompt (presence confirmed through the agent's pinentry $(($(confirms) - c0)) time(s))"
else
	fail agent-answers-prompt "the test pinentry confirmed nothing: $(cat "$uhome/pinentry.log" 2>&1 | tail -c 300)"
fi
# A discoverable sign-in with UV: python-fido2 gets the token through
# built-in UV (polkit), no PIN anywhere; fido2-assert -V -v checks the
# signature and the UP and UV flags.
uv_assert() { # NAME: a command line for run, as alice, writing $w/NAME.out
	uvcmd=("${ua[@]}" /usr/bin/python3 "$guest/uv_assert.py" "$hidraw" system.example "$(b64rand 32)" "$w/$1.out")
}
p0=$(pk_prompts "$user")
uv_assert uv-assert
if run uv-assert 90 "${uvcmd[@]}" && grep -q '^OK flags=' "$t/uv-assert.out" &&
	run uv-assert-V 60 "${ua[@]}" fido2-assert -V -p -v -i "$w/uv-assert.out" "$w/cred.pub" es256 &&
	[ "$(pk_prompts "$user")" -gt "$p0" ]; then
	pass "polkit-uv-assert (getPinUvAuthTokenUsingUvWithPermissions through polkit, $user's password typed into her polkit agent: $(head -1 "$t/uv-assert.out"); signature, UP and UV verified)"
else
	fail polkit-uv-assert "$(out uv-assert) $(out uv-assert-V); agent: $(tail -c 300 "$uhome/.polkit-agent.log"); $(journal | grep 'polkit' | tail -3)"
fi
# A wrong password: the agent reports the failure, polkit answers "not
# authorized", and the key answers CTAP2_ERR_UV_INVALID (0x3F).
pk_answer "$user" "not-${password[$user]}"
f0=$(pk_count "$user" 'AUTHENTICATION FAILED')
rc=0
uv_assert uv-wrong
run uv-wrong 90 "${uvcmd[@]}" || rc=$?
pk_answer "$user" "${password[$user]}"
if [ "$rc" = 2 ] && grep -qx 'CTAP 0x3F UV_INVALID' "$t/uv-wrong.out" && [ "$(pk_count "$user" 'AUTHENTICATION FAILED')" -gt "$f0" ]; then
	pass "polkit-wrong-password (the agent: AUTHENTICATION FAILED; the key: $(head -1 "$t/uv-wrong.out"))"
else
	fail polkit-wrong-password "exit $rc: $(out uv-wrong); agent: $(tail -c 300 "$uhome/.polkit-agent.log")"
fi
if run token-I1 60 "${ua[@]}" fido2-token -I "$hidraw" && grep -qE '^options: .*noclientPin' "$t/token-I1.out"; then
	pass "no-pin-needed (registered and signed in with UV through polkit; still no FIDO PIN: $(options token-I1 | grep -o 'noclientPin'))"
else
	fail no-pin-needed "$(out token-I1)"
fi
echo "signed in a booted VM" >"$w/msg"
owned "$user" "$w/msg"
if run ssh-keygen 90 "${ua[@]}" ssh-keygen -q -t ecdsa-sk -f "$w/id_sk" -N '' -C "$user@vm" &&
	run ssh-sign 90 "${ua[@]}" ssh-keygen -q -Y sign -f "$w/id_sk" -n file "$w/msg" &&
	run ssh-signers 10 "${ua[@]}" sh -c "printf '$user@vm %s\n' \"\$(cut -d' ' -f1,2 $w/id_sk.pub)\" >$w/allowed" &&
	run ssh-verify 60 "${ua[@]}" sh -c "ssh-keygen -Y verify -f $w/allowed -I $user@vm -n file -s $w/msg.sig <$w/msg"; then
	pass "ssh-ecdsa-sk-user (ssh-keygen -t ecdsa-sk, -Y sign, -Y verify as $user, no UV)"
else
	fail ssh-ecdsa-sk-user "$(cat "$t"/ssh-*.out 2>/dev/null | tail -c 500)"
fi
# alice's FIDO PIN (clientPIN, checked by the TPM: every user may set one);
# bob's below is another.
if printf '%s\n%s\n' "$pin" "$pin" | run set-pin 60 "${ua[@]}" fido2-token -S "$hidraw" &&
	run token-I 60 "${ua[@]}" fido2-token -I "$hidraw" && grep -qE '^options: .*(^|, )clientPin' "$t/token-I.out"; then
	pass "fido2-token-set-pin-user (options: $(options token-I))"
else
	fail fido2-token-set-pin-user "$(out set-pin) $(options token-I 2>/dev/null || true)"
fi

if [ -n "$browser_job" ]; then
	stage "Chromium as $user"
	touch /tmp/www/go || true
	brc=0
	wait "$browser_job" || brc=$?
	# browser.sh prints the browser-* lines itself; killed by its bound it
	# printed none.
	[ "$brc" = 0 ] || fail browser "browser.sh exited $brc (124: its 1200 s bound) before reporting"
fi

if run list 30 "${ua[@]}" passkeyctl list && grep -q 'system\.example' "$t/list.out"; then
	pass "passkeyctl-list-user ($(($(wc -l <"$t/list.out") - 1)) passkeys: $(awk 'NR>1{print $1}' "$t/list.out" | sort -u | tr '\n' ' '))"
else
	fail passkeyctl-list-user "$(out list)"
fi
sed 's/^/VM passkeyctl list: /' "$t/list.out"
before_list=$(listing)

# ===========================================================================
stage "two users: chvt 2 makes bob's session the active one"
ow=$ohome/work
# alice holds the node open across the switch (hidraw_hold.py: INIT before,
# INIT again once $w/hold.go exists).
rm -f "$w/hold.go"
"${ua[@]}" /usr/bin/python3 "$guest/hidraw_hold.py" "$hidraw" "$w/hold.go" >"$t/hold.out" 2>&1 &
hold=$!
bg_pids+=($hold)
wait_for 20 grep -q '^before:' "$t/hold.out" || true
dev_a=$(hid_device)
node_a=$hidraw
oconnected=$(count "prompt agent connected.* uid=$ouid")
if chvt 2 && wait_for 30 is_active "$osession" && wait_for 30 switched_to "$other" "$dev_a"; then
	pass "switch-recreates-key (chvt 2: logind's active session $(active_session) ($other); $node_a $dev_a -> $hidraw $(hid_device); ACL $(getfacl -p "$hidraw" 2>/dev/null | grep '^user:.*:' | grep -v '^user::' | tr '\n' ' '))"
else
	fail switch-recreates-key "active: $(active_session); $hidraw $(hid_device); $(getfacl -p "$hidraw" 2>&1 | tr '\n' ' '); $(journal | grep 'seat:' | tail -3)"
fi
touch "$w/hold.go"
wait_for 20 grep -q '^after:' "$t/hold.out" || true
if grep -qx 'before: ok' "$t/hold.out" && grep -qE '^after: E[A-Z]+$' "$t/hold.out"; then
	pass "held-descriptor-fails ($user's descriptor of $node_a, opened before the switch: $(tr '\n' ' ' <"$t/hold.out"))"
else
	fail held-descriptor-fails "$(tr '\n' '|' <"$t/hold.out")"
fi
if [ -n "$hidraw" ] && ! run alice-open 20 runuser -u "$user" -- sh -c "exec 3<>$hidraw" && grep -q 'Permission denied' "$t/alice-open.out"; then
	pass "hidraw-inactive-user-denied ($user, no longer active, cannot open $hidraw)"
else
	fail hidraw-inactive-user-denied "$(out alice-open)"
fi
if wait_for 20 agent_connected "$oconnected" "$ouid"; then
	pass "agent-follows-switch ($other's agent admitted once $other is active; $user's disconnected: $(journal | grep -c "prompt agent refused.* uid=$uid" || true) refusals of $user's agent since)"
else
	fail agent-follows-switch "$(journal | grep 'prompt agent' | tail -4)"
fi
# bob's namespace: no PIN yet (alice's is set), and alice's PIN is not his:
# getPinUvAuthTokenUsingPinWithPermissions with her PIN (guest/pin_token.py).
pin_token() { # NAME PIN: as bob
	run "$1" 60 "${ub[@]}" /usr/bin/python3 "$guest/pin_token.py" "$hidraw" "$2"
}
if run bob-I 60 "${ub[@]}" fido2-token -I "$hidraw" && grep -qE '^options: .*noclientPin' "$t/bob-I.out" &&
	! pin_token bob-alicepin "$pin" && grep -qx 'CTAP 0x35 PIN_NOT_SET' "$t/bob-alicepin.out"; then
	pass "pin-per-user ($other's namespace has no PIN while $user's has one: $(options bob-I | grep -o noclientPin); $user's PIN for $other: $(cat "$t/bob-alicepin.out"))"
else
	fail pin-per-user "$(out bob-I) $(out bob-alicepin)"
fi
if printf '%s\n%s\n' "$opin" "$opin" | run bob-set-pin 60 "${ub[@]}" fido2-token -S "$hidraw" &&
	! pin_token bob-alicepin2 "$pin" && grep -qx 'CTAP 0x31 PIN_INVALID' "$t/bob-alicepin2.out" &&
	pin_token bob-pin "$opin" && grep -qx OK "$t/bob-pin.out"; then
	pass "pin-independent ($other set his own PIN; $user's PIN for $other now: $(cat "$t/bob-alicepin2.out"); his own: $(cat "$t/bob-pin.out"))"
else
	fail pin-independent "$(out bob-set-pin) $(out bob-alicepin2) $(out bob-pin)"
fi
# getAssertion as bob: without an allow list (alice's discoverable
# credential) and with alice's non-discoverable credential's ID: both
# CTAP2_ERR_NO_CREDENTIALS (0x2E).
printf '%s\n%s\n' "$(b64rand 32)" system.example >"$ow/rk.in"
assert_in system.example "$w/cred2.out" >"$ow/id.in"
owned "$other" "$ow/rk.in" "$ow/id.in"
if ! run bob-G-rk 60 "${ub[@]}" fido2-assert -G -r -i "$ow/rk.in" "$hidraw" && grep -q 'FIDO_ERR_NO_CREDENTIALS' "$t/bob-G-rk.out" &&
	! run bob-G-id 60 "${ub[@]}" fido2-assert -G -p -i "$ow/id.in" "$hidraw" && grep -q 'FIDO_ERR_NO_CREDENTIALS' "$t/bob-G-id.out"; then
	pass "other-user-no-credentials ($other's getAssertion for system.example: $(grep -o 'FIDO_ERR_[A-Z_]*' "$t/bob-G-rk.out"); with $user's credential ID: $(grep -o 'FIDO_ERR_[A-Z_]*' "$t/bob-G-id.out"))"
else
	fail other-user-no-credentials "$(out bob-G-rk) $(out bob-G-id)"
fi
# polkit asks the active session: bob's agent, with bob's password.
cred_in bob.example "$other" >"$ow/cred.in"
owned "$other" "$ow/cred.in"
p0=$(pk_prompts "$user")
o0=$(pk_prompts "$other")
if run bob-cred 90 "${ub[@]}" fido2-cred -M -r -v -i "$ow/cred.in" -o "$ow/cred.out" "$hidraw" es256 &&
	[ "$(pk_prompts "$other")" -gt "$o0" ] && [ "$(pk_prompts "$user")" = "$p0" ]; then
	pass "polkit-asks-active-user ($other's discoverable passkey: polkit asked $other's agent, not $user's)"
else
	fail polkit-asks-active-user "$(out bob-cred); bob's agent: $(tail -c 300 "$ohome/.polkit-agent.log")"
fi
if printf '%s\n' "$opin" | run bob-L 60 "${ub[@]}" fido2-token -L -r "$hidraw" &&
	grep -q 'bob\.example' "$t/bob-L.out" && ! grep -q 'system\.example' "$t/bob-L.out"; then
	pass "other-user-sees-none ($other's fido2-token -L -r with his PIN: $(awk '{print $3}' "$t/bob-L.out" | tr '\n' ' ')- none of $user's)"
else
	fail other-user-sees-none "$(out bob-L)"
fi
if run bob-list 30 "${ub[@]}" passkeyctl list && grep -q 'bob\.example' "$t/bob-list.out" && ! grep -q 'system\.example' "$t/bob-list.out" &&
	run alice-list 30 "${ua[@]}" passkeyctl list && grep -q 'system\.example' "$t/alice-list.out" && ! grep -q 'bob\.example' "$t/alice-list.out" &&
	run root-list 30 passkeyctl list --user "$user" && grep -q 'system\.example' "$t/root-list.out" && ! grep -q 'bob\.example' "$t/root-list.out"; then
	pass "passkeyctl-list-per-user ($other: $(awk 'NR>1{print $1}' "$t/bob-list.out" | sort -u | tr '\n' ' '); $user: $(awk 'NR>1{print $1}' "$t/alice-list.out" | sort -u | tr '\n' ' '); root --user $user: $(awk 'NR>1{print $1}' "$t/root-list.out" | sort -u | tr '\n' ' '))"
else
	fail passkeyctl-list-per-user "$(out bob-list) | $(out alice-list) | $(out root-list)"
fi

stage "chvt 1: alice again; chvt 5: nobody"
dev_b=$(hid_device)
connected=$(count "prompt agent connected.* uid=$uid")
if chvt 1 && wait_for 30 is_active "$session" && wait_for 30 switched_to "$user" "$dev_b" &&
	wait_for 30 agent_connected "$connected" && assert back cred && assert back2 cred2; then
	pass "switch-back (chvt 1: $user active, $(hid_device) at $hidraw, her agent reconnected; both her credentials sign in, verified)"
else
	fail switch-back "active: $(active_session); $(hid_device); $(out back-G) $(out back-V) $(out back2-G); $(journal | grep -E 'seat:|prompt agent' | tail -4)"
fi
# A locked screen is nobody at the seat (internal/daemon/session): logind's
# Lock signal for the session (what loginctl lock-session sends the
# desktop's locker) unplugs the key, Unlock plugs it in again.
dev_l=$(hid_device)
connected=$(count "prompt agent connected.* uid=$uid")
if loginctl lock-session "$session" && wait_for 30 unplugged &&
	loginctl unlock-session "$session" && wait_for 30 switched_to "$user" "$dev_l" && wait_for 30 agent_connected "$connected" && assert unlocked cred; then
	pass "locked-screen-unplugged (loginctl lock-session: the key unplugged; unlock-session: $(hid_device) at $hidraw for $user, her credential signs again)"
else
	fail locked-screen-unplugged "node: $hidraw $(hid_device); $(journal | grep -E 'seat:' | tail -3)"
fi
if chvt 5 && wait_for 30 no_active && wait_for 30 unplugged; then
	pass "no-session-unplugged (chvt 5, a VT without a session: no active session on seat0, no hidraw node with HID_ID 0003:00001209:00007A55; $(journal | grep 'seat: key unplugged' | tail -1 | grep -o 'why=.*' | cut -c1-100))"
else
	fail no-session-unplugged "active: $(active_session); node: $hidraw"
fi
connected=$(count "prompt agent connected.* uid=$uid")
chvt 1 || true
if ! { wait_for 30 is_active "$session" && wait_for 30 key_up && wait_for 30 acl_for "$user" && wait_for 30 agent_connected "$connected"; }; then
	fail seat-restore "active: $(active_session); $hidraw"
fi

# ===========================================================================
stage "restart, upgrade"
connected=$(count "prompt agent connected.* uid=$uid")
started=$(count '^Started passkeyd')
if run restart 60 systemctl restart passkeyd && wait_for 30 key_up &&
	wait_for 30 agent_connected "$connected" && assert restart cred &&
	[ "$(listing)" = "$before_list" ]; then
	pass "restart-keeps-passkeys (starts in the journal: $started -> $(count '^Started passkeyd'); the agent reconnected; the credential signs, the list is unchanged)"
else
	fail restart-keeps-passkeys "$(out restart) $(out restart-G) $(listing | tail -c 200)"
fi

connected=$(count "prompt agent connected.* uid=$uid")
started=$(count '^Started passkeyd')
stopped=$(count '^Stopped passkeyd')
ts=$(systemctl show -p ExecMainStartTimestampMonotonic --value passkeyd)
if run_live upgrade 600 apt install -y "$DEB2" &&
	[ "$(dpkg-query -W -f '${Version}' passkeyd)" = "$V2" ] && wait_for 30 key_up; then
	starts=$(($(count '^Started passkeyd') - started))
	stops=$(($(count '^Stopped passkeyd') - stopped))
	ts2=$(systemctl show -p ExecMainStartTimestampMonotonic --value passkeyd)
	if [ "$starts" = 1 ] && [ "$stops" = 1 ] && [ "$ts2" != "$ts" ] &&
		wait_for 30 agent_connected "$connected" && assert upgrade cred && [ "$(listing)" = "$before_list" ]; then
		pass "upgrade-keeps-passkeys-restarts-once ($V1 -> $V2: the service started $starts time(s), stopped $stops time(s); the credential signs, the list is unchanged)"
	else
		fail upgrade-keeps-passkeys-restarts-once "starts $starts, stops $stops, start time $ts -> $ts2; $(out upgrade-G) $(listing | tail -c 200)"
	fi
else
	fail upgrade-keeps-passkeys-restarts-once "$(out upgrade)"
fi

if run security 60 systemd-analyze security --no-pager passkeyd.service; then
	score=$(grep -o 'Overall exposure level for passkeyd.service: .*' "$t/security.out" | sed 's/.*: //')
	pass "systemd-analyze-security (${score:-?})"
else
	fail systemd-analyze-security "$(out security)"
fi

# ===========================================================================
# Other stages on this booted system, with the helpers above in scope (ua,
# ub, run, pass, fail, wait_for, find_hidraw, key_up, pk_answer, ...):
# the fingerprint stage (fprintd's virtual device, pam_fprintd) lives in its
# own script and runs here when present, before the package is removed.
# shellcheck source=/dev/null
[ -f "$guest/system-fprint.sh" ] && . "$guest/system-fprint.sh"

# ===========================================================================
stage "remove, purge"
files=$(find /var/lib/passkeyd -type f | wc -l)
if run_live remove 120 apt remove -y passkeyd && ! systemctl is-active -q passkeyd &&
	! find_hidraw && [ "$(find /var/lib/passkeyd -type f | wc -l)" = "$files" ] && [ "$files" -gt 0 ]; then
	pass "apt-remove-keeps-state (service $(systemctl is-active passkeyd 2>&1 || true), key unplugged, /var/lib/passkeyd kept: $files files)"
else
	fail apt-remove-keeps-state "active: $(systemctl is-active passkeyd 2>&1 || true); hidraw: $hidraw; files $files -> $(find /var/lib/passkeyd -type f 2>/dev/null | wc -l); $(out remove)"
fi
if run_live purge 120 apt purge -y passkeyd && [ ! -e /etc/passkeyd/passkeyd.conf ] &&
	[ "$(find /var/lib/passkeyd -type f | wc -l)" = "$files" ] && grep -q "rm -rf /var/lib/passkeyd" "$t/purge.out"; then
	pass "apt-purge-keeps-state (the config file gone, the passkeys kept, the command to delete them printed)"
else
	fail apt-purge-keeps-state "$(out purge)"
fi

if [ "$failures" != 0 ] || [ -n "${VERBOSE:-}" ]; then
	journal | grep -v 'prompt agent refused' | tail -60 | sed 's/^/VM journal passkeyd: /'
	"${ua[@]}" journalctl --user -u passkeyctl-agent -o cat --no-pager 2>/dev/null | tail -20 | sed 's/^/VM journal agent: /' || true
fi
