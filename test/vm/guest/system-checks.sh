#!/bin/bash
# Runs as root in the system test VM (test/vm/system.sh), as the service
# passkeyd-vm-checks.service of a booted Debian whose PID 1 is systemd
# (guest/system-init): installs passkeyd's .deb with apt and checks what a
# person would check, with alice logged in on tty1 (logind seat session) and
# bob, who is not logged in. Client commands run AS alice (runuser), never
# as root. Each check prints "E2E PASS name" or "E2E FAIL name: reason" on
# the serial console; "E2E DONE" ends the list, then the VM powers off.
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
uhome=/home/$user
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
finish() {
	local rc=$?
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
journal() { journalctl -u passkeyd.service -o cat --no-pager 2>/dev/null || true; }
count() { journal | grep -c "$1" || true; }
agent_connected() { [ "$(count "prompt agent connected.* uid=$uid")" -gt "$1" ]; }
# The passkeys alice sees: the ID column of passkeyctl list (LAST USED
# changes with every sign-in).
listing() { "${ua[@]}" passkeyctl list 2>&1 | awk 'NR > 1 {print $NF}' | sort || true; }

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
seat_session() {
	local s
	for s in $(loginctl list-sessions --no-legend | awk -v u="$user" '$3 == u {print $1}'); do
		if [ "$(loginctl show-session "$s" -p Seat --value)" = seat0 ] &&
			[ "$(loginctl show-session "$s" -p TTY --value)" = tty1 ] &&
			[ "$(loginctl show-session "$s" -p Active --value)" = yes ]; then
			session=$s
			return 0
		fi
	done
	return 1
}
if wait_for 120 seat_session && wait_for 60 systemctl is-active -q "user@$uid.service"; then
	pass "seat-session ($user: session $session on seat0, tty1, active; user@$uid.service running)"
else
	fail seat-session "$(loginctl list-sessions --no-legend 2>&1); user@$uid: $(systemctl is-active "user@$uid.service" 2>&1)"
fi

# ===========================================================================
stage "install: apt install ./passkeyd_*.deb, then the owner in /etc/passkeyd/passkeyd.conf"
if run_live apt-install 600 apt install -y "$DEB1" &&
	[ "$(dpkg-query -W -f '${Status} ${Version}' passkeyd)" = "install ok installed $V1" ]; then
	pass "apt-install (${DEB1##*/} on the clean system)"
else
	fail apt-install "$(out apt-install)"
fi
# The README's next step: name the owner in the configuration file (a
# conffile: upgrades keep the edit) and restart.
sed -i "s/^#owner = \"\"/owner = \"$user\"/" /etc/passkeyd/passkeyd.conf
if grep -qx "owner = \"$user\"" /etc/passkeyd/passkeyd.conf && run_live owner-restart 120 systemctl restart passkeyd; then
	pass "config-owner (owner = \"$user\" in /etc/passkeyd/passkeyd.conf, service restarted)"
else
	fail config-owner "$(grep -n owner /etc/passkeyd/passkeyd.conf 2>&1); $(out owner-restart)"
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

acl_ok() { getfacl -p "$hidraw" 2>/dev/null | grep -qx "user:$user:rw-"; }
if [ -n "$hidraw" ] && wait_for 10 acl_ok; then
	pass "hidraw-uaccess-acl ($hidraw: $(getfacl -p "$hidraw" 2>/dev/null | grep '^user:' | tr '\n' ' '))"
else
	fail hidraw-uaccess-acl "$(getfacl -p "$hidraw" 2>&1); $(udevadm info "$hidraw" 2>&1 | grep -E 'TAGS|SECURITY')"
fi
# bob has no seat session: opening the node fails with EACCES.
if [ -n "$hidraw" ] && ! run other-user-open 20 runuser -u "$other" -- sh -c "exec 3<>$hidraw" &&
	grep -q 'Permission denied' "$t/other-user-open.out"; then
	pass "hidraw-other-user-denied ($other, not logged in: $(tr -d '\n' <"$t/other-user-open.out" | sed 's/.*: //'))"
else
	fail hidraw-other-user-denied "$(out other-user-open)"
fi

# Chromium (as alice) starts now and waits for "go" (browser.sh): its
# start-up overlaps the CLI checks.
browser_job=
if [ "$BROWSER" = 1 ]; then
	rm -rf /tmp/www /tmp/http.log /tmp/chromium.log
	timeout -k 5 420 runuser -u "$user" -- env -i HOME="$uhome" PATH=/usr/bin:/bin LANG=C.UTF-8 \
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
	n=$(grep -c '^CONFIRM' "$uhome/pinentry.log" 2>/dev/null) || true
	echo "${n:-0}"
}

# ===========================================================================
stage "alice registers and signs in: fido2-tools, OpenSSH"
w=$uhome/work
install -d -o "$user" -g "$user" "$w"
cred_in() { printf '%s\n%s\n%s\n%s\n' "$(b64rand 32)" "$1" "$2" "$(b64rand 16)"; }
assert_in() { printf '%s\n%s\n%s\n' "$(b64rand 32)" "$1" "$(sed -n 5p "$2")"; }
cred_in system.example "$user" >"$w/cred.in"
chown "$user:$user" "$w/cred.in"
if run fido2-token-L 60 "${ua[@]}" fido2-token -L && grep -qi "^$hidraw: vendor=0x1209, product=0x7a55" "$t/fido2-token-L.out"; then
	pass "fido2-token-L-user ($user finds $hidraw)"
else
	fail fido2-token-L-user "$(out fido2-token-L)"
fi
c0=$(confirms)
if run cred-M 60 "${ua[@]}" fido2-cred -M -r -i "$w/cred.in" -o "$w/cred.out" "$hidraw" es256 &&
	run cred-V 60 "${ua[@]}" fido2-cred -V -i "$w/cred.out" -o "$w/cred.pub" es256; then
	pass "fido2-cred-user (a discoverable credential for system.example, as $user)"
else
	fail fido2-cred-user "$(out cred-M) $(out cred-V)"
fi
assert() {
	assert_in system.example "$w/cred.out" >"$w/assert.in" &&
		chown "$user:$user" "$w/assert.in" &&
		run "$1-G" 60 "${ua[@]}" fido2-assert -G -p -i "$w/assert.in" -o "$w/assert.out" "$hidraw" &&
		run "$1-V" 60 "${ua[@]}" fido2-assert -V -p -i "$w/assert.out" "$w/cred.pub" es256
}
if [ -s "$w/cred.pub" ] && assert assert; then
	pass "fido2-assert-user (signed in, signature verified)"
else
	fail fido2-assert-user "$(out assert-G) $(out assert-V)"
fi
if [ "$(confirms)" -gt "$c0" ]; then
	pass "agent-answers-prompt (presence confirmed through the agent's pinentry $(($(confirms) - c0)) time(s))"
else
	fail agent-answers-prompt "the test pinentry confirmed nothing: $(cat "$uhome/pinentry.log" 2>&1 | tail -c 300)"
fi
echo "signed in a booted VM" >"$w/msg"
chown "$user:$user" "$w/msg"
if run ssh-keygen 90 "${ua[@]}" ssh-keygen -q -t ecdsa-sk -f "$w/id_sk" -N '' -C "$user@vm" &&
	run ssh-sign 90 "${ua[@]}" ssh-keygen -q -Y sign -f "$w/id_sk" -n file "$w/msg" &&
	run ssh-signers 10 "${ua[@]}" sh -c "printf '$user@vm %s\n' \"\$(cut -d' ' -f1,2 $w/id_sk.pub)\" >$w/allowed" &&
	run ssh-verify 60 "${ua[@]}" sh -c "ssh-keygen -Y verify -f $w/allowed -I $user@vm -n file -s $w/msg.sig <$w/msg"; then
	pass "ssh-ecdsa-sk-user (ssh-keygen -t ecdsa-sk, -Y sign, -Y verify as $user)"
else
	fail ssh-ecdsa-sk-user "$(cat "$t"/ssh-*.out 2>/dev/null | tail -c 500)"
fi
# The PIN: Chromium wants user verification for a discoverable passkey,
# which the key then offers through the agent (built-in UV).
if printf '%s\n%s\n' "$pin" "$pin" | run set-pin 60 "${ua[@]}" fido2-token -S "$hidraw" &&
	run token-I 60 "${ua[@]}" fido2-token -I "$hidraw" && grep -qE '^options: .*(^|, )uv(,|$)' "$t/token-I.out"; then
	pass "fido2-token-set-pin-user (options: $(grep '^options:' "$t/token-I.out" | cut -c10-))"
else
	fail fido2-token-set-pin-user "$(out set-pin) $(grep '^options' "$t/token-I.out" 2>/dev/null || true)"
fi

if [ -n "$browser_job" ]; then
	stage "Chromium as $user"
	touch /tmp/www/go || true
	brc=0
	wait "$browser_job" || brc=$?
	# browser.sh prints the browser-* lines itself; killed by its bound it
	# printed none.
	[ "$brc" = 0 ] || fail browser "browser.sh exited $brc (124: its 420 s bound) before reporting"
fi

if run list 30 "${ua[@]}" passkeyctl list && grep -q 'system\.example' "$t/list.out"; then
	pass "passkeyctl-list-user ($(grep -cE '^ +[a-z]' "$t/list.out" || true) lines: $(awk 'NR>1{print $1}' "$t/list.out" | sort -u | tr '\n' ' '))"
else
	fail passkeyctl-list-user "$(out list)"
fi
sed 's/^/VM passkeyctl list: /' "$t/list.out"
before_list=$(listing)

# ===========================================================================
stage "restart, upgrade"
connected=$(count "prompt agent connected.* uid=$uid")
started=$(count '^Started passkeyd')
if run restart 60 systemctl restart passkeyd && wait_for 30 key_up &&
	wait_for 30 agent_connected "$connected" && assert restart &&
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
		wait_for 30 agent_connected "$connected" && assert upgrade && [ "$(listing)" = "$before_list" ]; then
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
	journal | tail -40 | sed 's/^/VM journal passkeyd: /'
	"${ua[@]}" journalctl --user -u passkeyctl-agent -o cat --no-pager 2>/dev/null | tail -20 | sed 's/^/VM journal agent: /' || true
fi
