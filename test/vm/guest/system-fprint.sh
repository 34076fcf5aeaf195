# shellcheck shell=bash
# The fingerprint stage of the system test VM: built-in UV through polkit,
# proven with a fingerprint. Sourced by system-checks.sh (near its end,
# before remove/purge; alone with PASSKEYD_VM_ONLY=fprint), with its
# helpers in scope: run, pass, fail, wait_for, key_up (sets $hidraw),
# journal, out, stage, "${ua[@]}", $user $uid $uhome $t $guest.
#
# What it sets up, all at run time (the guest's root is a tmpfs overlay,
# every edit is thrown away at power-off; the stage still restores what
# the later stages and checks rely on):
#  - passkeyd with prompt = "polkit": every question (presence and UV) is
#    polkit's CheckAuthorization for org.passkeyd.verify-user about the
#    active seat0 session, whatever prompt and users the package ships;
#  - fprintd with libfprint's virtual device (FP_VIRTUAL_DEVICE, a drop-in
#    for fprintd.service): the driver listens on a unix socket and takes
#    one command per connection; "SCAN ID" is a finger touching the reader,
#    and a verify matches when ID is the enrolled print's ID. Measured
#    (libfprint 1.94.5): a SCAN queued before the device is opened is
#    eaten by the open, and a verify waits for a SCAN for as long as it
#    runs, so the test presents a finger only once fprintd's device says
#    finger-needed, as a person would touch the reader when asked;
#  - alice's finger enrolled (by root, for alice: fprintd-enroll -f FINGER
#    alice; enrolling as herself needs net.reactivated.fprint.device.enroll,
#    auth_self_keep, i.e. her password first);
#  - `auth sufficient pam_fprintd.so max-tries=1 timeout=10` first in
#    /etc/pam.d/polkit-1 (Debian's polkitd ships /usr/lib/pam.d/polkit-1,
#    which includes common-auth: pam_unix; a file in /etc/pam.d overrides
#    it): the finger, and after a failed one the password;
#  - pkttyagent, polkit's text agent, registered for exactly the subject
#    passkeyd asks about. passkeyd names the session by its leader process
#    (login, running as root) with the session's uid, and polkitd looks an
#    agent up first by that process, then by its session. pkttyagent
#    registers only for a process, never for a session: `pkttyagent
#    --process LEADER`. polkitd accepts that registration only from the
#    process's owner or root, and login is root's, so the agent runs as
#    root (tried as alice first: the refusal is logged); it still
#    authenticates the identity polkitd names for auth_self, alice, through
#    PAM's polkit-1 stack, which is what is under test. It needs a
#    controlling terminal: script(1) gives it a pty, its transcript is
#    $fpd/agent.out and the FIFO $fpd/agent.in is its keyboard.
#
# Checks: fprint-enrol, fprint-uv-match, fprint-uv-nomatch.

stage "fingerprint: fprintd's virtual device, pam_fprintd in polkit-1, pkttyagent for $user's session"
fp_failures=$failures
fpd=$t/fprint
mkdir -p "$fpd"
fp_sock=/run/fprint-virtual/device.sock
fp_finger=alice-right-index # the print's ID on the virtual device
fp_other=alice-left-thumb   # a finger never enrolled
fp_conf=/etc/passkeyd/passkeyd.conf
fp_pam=/etc/pam.d/polkit-1
fp_agent=

# fp_send CMD...: one command per connection, as the driver reads them.
fp_send() {
	/usr/bin/python3 - "$fp_sock" "$@" <<'EOF'
import socket, sys
for cmd in sys.argv[2:]:
    s = socket.socket(socket.AF_UNIX)
    s.connect(sys.argv[1])
    s.sendall(cmd.encode())
    s.shutdown(socket.SHUT_WR)
    s.recv(64)
    s.close()
EOF
}
fp_dev=
fp_needed() {
	[ -S "$fp_sock" ] && [ -n "$fp_dev" ] &&
		[ "$(busctl get-property net.reactivated.Fprint "$fp_dev" net.reactivated.Fprint.Device finger-needed 2>/dev/null)" = "b true" ]
}
# fp_touch ID TIMES: when the reader asks for a finger, present ID; TIMES
# times (0: until killed), each once the reader has stopped asking. Each
# touch is a line in $fpd/touches.
fp_touch() {
	local id=$1 n=$2 i=0
	while [ "$n" = 0 ] || [ "$i" -lt "$n" ]; do
		while ! fp_needed; do sleep 0.2; done
		fp_send "SCAN $id" && echo "$id $(cut -d' ' -f1 /proc/uptime)" >>"$fpd/touches"
		i=$((i + 1))
		for _ in $(seq 1 50); do fp_needed || break; sleep 0.2; done
	done
}
touches() { wc -l 2>/dev/null <"$fpd/touches" || echo 0; }
# fp_type_at PROMPT TEXT: types TEXT into the agent's terminal once its
# transcript (after offset $fp_off) shows PROMPT.
fp_type_at() {
	local i
	for i in $(seq 1 300); do
		if tail -c +"$((fp_off + 1))" "$fpd/agent.out" | grep -q "$1"; then
			printf '%s\n' "$2" >"$fpd/agent.in"
			echo "typed at $(cut -d' ' -f1 /proc/uptime)" >>"$fpd/typed"
			return 0
		fi
		sleep 0.2
	done
	return 1
}
# What the agent showed since offset $fp_off, on one line.
agent_since() { tail -c +"$((fp_off + 1))" "$fpd/agent.out" 2>/dev/null | tr -d '\r' | sed 's/\x1b\[[0-9;]*m//g' | tr '\n' '|' | cut -c1-1500; }
polkit_lines() { journal | grep -c "polkit: $1" || true; }

# --- passkeyd: prompt = "polkit" ------------------------------------------
cp -p "$fp_conf" "$fpd/passkeyd.conf.saved"
# The key belongs before the first [table] (a key after [policy] would be
# policy's).
awk 'BEGIN{done=0} /^prompt *=/{next} /^\[/ && !done {print "prompt = \"polkit\""; done=1} {print} END{if(!done) print "prompt = \"polkit\""}' \
	"$fpd/passkeyd.conf.saved" >"$fp_conf"
# Up for alice: the service active, its hidraw node there with alice's
# uaccess ACL (a restart makes a new node; udev sets the ACL after).
fp_key_up() { key_up && getfacl -p "$hidraw" 2>/dev/null | grep -qx "user:$user:rw-"; }
fp_ready=1
if ! run fp-restart 120 systemctl restart passkeyd || ! wait_for 60 fp_key_up ||
	! run fp-info 30 passkeyctl info || ! grep -qE '^Prompt: +polkit$' "$t/fp-info.out"; then
	fp_ready=
	echo "VM fprint: passkeyd with prompt = polkit: $(out fp-restart) $(out fp-info)"
fi

# --- fprintd with the virtual device; alice's finger -----------------------
mkdir -p /etc/systemd/system/fprintd.service.d
cat >/etc/systemd/system/fprintd.service.d/virtual-device.conf <<EOF
[Service]
Environment=FP_VIRTUAL_DEVICE=$fp_sock
Environment="G_MESSAGES_DEBUG=fprintd libfprint-virtual_device"
RuntimeDirectory=fprint-virtual
ExecStart=
ExecStart=/usr/libexec/fprintd --no-timeout
EOF
rm -f "$fpd/touches"
if run fp-fprintd 120 sh -c 'systemctl daemon-reload && systemctl restart fprintd' &&
	fp_dev=$(busctl call net.reactivated.Fprint /net/reactivated/Fprint/Manager net.reactivated.Fprint.Manager GetDefaultDevice 2>&1 | sed -n 's/^o "\(.*\)"$/\1/p') &&
	[ -n "$fp_dev" ]; then
	# Five stages (the virtual driver's default), the same finger each
	# time: once the enrolment asks, the five touches are queued at once.
	(
		while ! fp_needed; do sleep 0.2; done
		for _ in 1 2 3 4 5; do fp_send "SCAN $fp_finger" && echo "$fp_finger" >>"$fpd/touches"; done
	) &
	fp_feeder=$!
	if run fp-enroll 120 fprintd-enroll -f right-index-finger "$user" && grep -q 'enroll-completed' "$t/fp-enroll.out" &&
		run fp-list 30 fprintd-list "$user" && grep -q 'right-index-finger' "$t/fp-list.out"; then
		pass "fprint-enrol ($user's right-index-finger on $(busctl get-property net.reactivated.Fprint "$fp_dev" net.reactivated.Fprint.Device name 2>/dev/null | cut -d' ' -f2-): $(grep -c 'enroll-stage-passed' "$t/fp-enroll.out") stages passed, then enroll-completed, $(touches) touches; fprintd-list shows it)"
	else
		fail fprint-enrol "$(out fp-enroll) $(out fp-list)"
		fp_ready=
	fi
	kill "$fp_feeder" 2>/dev/null || true
	wait "$fp_feeder" 2>/dev/null || true
else
	fail fprint-enrol "fprintd: $(out fp-fprintd) device '$fp_dev'; $(systemctl status fprintd --no-pager 2>&1 | tail -5)"
	fp_ready=
fi

# --- PAM: the finger first, then the password --------------------------------
fp_pam_saved=
[ -e "$fp_pam" ] && cp -p "$fp_pam" "$fpd/polkit-1.saved" && fp_pam_saved=1
{
	echo '#%PAM-1.0'
	echo 'auth sufficient pam_fprintd.so max-tries=1 timeout=10'
	grep -v '^#%PAM' "$([ -n "$fp_pam_saved" ] && echo "$fpd/polkit-1.saved" || echo /usr/lib/pam.d/polkit-1)" || true
} >"$fpd/polkit-1.new"
mv "$fpd/polkit-1.new" "$fp_pam"
sed 's/^/VM fprint: polkit-1: /' "$fp_pam"
# alice needs a password for the fallback to mean something: a locked
# account ("!" in shadow) refuses every password anyway.
cp -p /etc/shadow "$fpd/shadow.saved"
fp_pw=fp-$(head -c 9 /dev/urandom | base64 | tr -dc 'a-zA-Z0-9')
echo "$user:$fp_pw" | chpasswd || echo "VM fprint: chpasswd failed"

# --- the agent for alice's session ------------------------------------------
fp_session=
for s in $(loginctl list-sessions --no-legend | awk -v u="$user" '$3 == u {print $1}'); do
	if [ "$(loginctl show-session "$s" -p Seat --value)" = seat0 ] && [ "$(loginctl show-session "$s" -p Type --value)" = tty ]; then
		fp_session=$s
	fi
done
# Her session must be the active one: the user-switch stages may have
# left another VT in front.
if [ -n "$fp_session" ] && [ "$(loginctl show-session "$fp_session" -p Active --value)" != yes ]; then
	fp_vt=$(loginctl show-session "$fp_session" -p VTNr --value || true)
	chvt "${fp_vt:-1}" || true
	wait_for 30 sh -c "[ \"\$(loginctl show-session $fp_session -p Active --value)\" = yes ]" || true
	wait_for 60 fp_key_up || true
fi
fp_leader=$([ -n "$fp_session" ] && loginctl show-session "$fp_session" -p Leader --value || true)
registered() { journalctl -u polkit.service -o cat --no-pager 2>/dev/null | grep -c "Registered Authentication Agent for unix-process:$fp_leader:" || true; }
fp_start_agent() {
	local as=$1 before
	before=$(registered)
	rm -f "$fpd/agent.in" "$fpd/agent.out"
	mkfifo "$fpd/agent.in"
	# Held open for writing here, so the agent's keyboard never sees EOF.
	exec 8<>"$fpd/agent.in"
	if [ "$as" = root ]; then
		setsid script -qfec "pkttyagent --process $fp_leader" /dev/null <"$fpd/agent.in" >"$fpd/agent.out" 2>&1 &
	else
		setsid runuser -u "$as" -- script -qfec "pkttyagent --process $fp_leader" /dev/null <"$fpd/agent.in" >"$fpd/agent.out" 2>&1 &
	fi
	fp_agent=$!
	# Registered: polkitd's journal says so. A refused registration ends
	# pkttyagent ("Error registering authentication agent").
	for _ in $(seq 1 150); do
		[ "$(registered)" -gt "$before" ] && return 0
		kill -0 "$fp_agent" 2>/dev/null || break
		sleep 0.2
	done
	if kill -0 "$fp_agent" 2>/dev/null && ! grep -q 'Error' "$fpd/agent.out"; then
		echo "VM fprint: pkttyagent as $as still running after 30 s, no line in polkitd's journal: taken as registered"
		return 0
	fi
	echo "VM fprint: pkttyagent --process $fp_leader as $as: not registered: $(tr -d '\r' <"$fpd/agent.out" | tr '\n' '|' | cut -c1-300)"
	kill -- -"$fp_agent" 2>/dev/null || kill "$fp_agent" 2>/dev/null || true
	wait "$fp_agent" 2>/dev/null || true
	exec 8>&-
	fp_agent=
	return 1
}
fp_agent_as=
if [ -n "$fp_leader" ] && [ "$fp_leader" != 0 ]; then
	for as in "$user" root; do
		if fp_start_agent "$as"; then
			fp_agent_as=$as
			break
		fi
	done
fi
[ -n "$fp_agent_as" ] || fp_ready=

# --- the checks ---------------------------------------------------------------
fw=$uhome/fprint
install -d -o "$user" -g "$user" "$fw"
fp_rand() { head -c "$1" /dev/urandom | base64 -w0; }
printf '%s\n%s\n%s\n%s\n' "$(fp_rand 32)" fprint.example "$user" "$(fp_rand 16)" >"$fw/cred.in"
chown "$user:$user" "$fw/cred.in"
# fp_op NAME CMD...: CMD as alice while the reader is touched with
# $fp_touching (every time it asks) and the password typed if
# $fp_typing is set; the agent's transcript since then in $fpd/NAME.agent.
fp_op() {
	local name=$1 feeder typer= rc=0
	shift
	fp_off=$(stat -c %s "$fpd/agent.out" 2>/dev/null || echo 0)
	(fp_touch "$fp_touching" "$fp_times") &
	feeder=$!
	if [ -n "${fp_typing:-}" ]; then
		(fp_type_at 'Password:' "$fp_typing") &
		typer=$!
	fi
	run "$name" 90 "${ua[@]}" "$@" || rc=$?
	kill "$feeder" $typer 2>/dev/null || true
	wait "$feeder" $typer 2>/dev/null || true
	agent_since >"$fpd/$name.agent" || true
	return $rc
}
authdata_flags() { sed -n 3p "$1" | base64 -d 2>/dev/null | od -An -tx1 -j34 -N1 | tr -d ' '; }

if [ -n "$fp_ready" ]; then
	verified=$(polkit_lines 'user verified')
	rm -f "$fpd/touches" "$fpd/typed"
	fp_touching=$fp_finger fp_times=0 fp_typing=
	ok=
	if fp_op fp-cred fido2-cred -M -r -v -i "$fw/cred.in" -o "$fw/cred.out" "$hidraw" es256 &&
		run fp-cred-V 60 "${ua[@]}" fido2-cred -V -v -i "$fw/cred.out" -o "$fw/cred.pub" es256; then
		printf '%s\n%s\n%s\n' "$(fp_rand 32)" fprint.example "$(sed -n 5p "$fw/cred.out")" >"$fw/assert.in"
		chown "$user:$user" "$fw/assert.in"
		# -t uv=true, not -v: -v also asks for the FIDO PIN when one is set
		# (the earlier stages set alice's); uv=true alone makes libfido2 get
		# a token with getPinUvAuthTokenUsingUvWithPermissions.
		if fp_op fp-assert fido2-assert -G -t uv=true -i "$fw/assert.in" -o "$fw/assert.out" "$hidraw" &&
			run fp-assert-V 60 "${ua[@]}" fido2-assert -V -v -i "$fw/assert.out" "$fw/cred.pub" es256; then
			ok=1
		fi
	fi
	flags=$(authdata_flags "$fw/assert.out" 2>/dev/null || true)
	transcript=$(cat "$fpd/fp-cred.agent" "$fpd/fp-assert.agent" 2>/dev/null || true)
	# UV (0x04) and UP (0x01) in the assertion's flags; the agent showed
	# pam_fprintd's request and never a password prompt; nothing typed.
	if [ -n "$ok" ] && [ -n "$flags" ] && [ $((0x$flags & 0x05)) = 5 ] &&
		grep -qiE 'finger' <<<"$transcript" && ! grep -q 'Password:' <<<"$transcript" &&
		grep -q 'AUTHENTICATION COMPLETE' <<<"$transcript" && [ ! -e "$fpd/typed" ] &&
		[ "$(polkit_lines 'user verified')" -ge $((verified + 2)) ]; then
		pass "fprint-uv-match (fido2-cred -M -r -v and fido2-assert -G -t uv=true as $user, each verified by the enrolled finger through polkit: $(touches) touches, no password typed; signature verified with UV required, flags 0x$flags; agent: $(grep -oiE '(swipe|place) your [a-z ]*finger[^|]*' <<<"$transcript" | head -1); agent as $fp_agent_as)"
	else
		fail fprint-uv-match "flags '$flags'; $(out fp-cred) $(out fp-cred-V) $(out fp-assert) $(out fp-assert-V); touches $(touches); agent: $transcript"
	fi

	# Another finger: pam_fprintd says no match, pam_unix asks for the
	# password, a wrong one fails: polkitd answers not authorised (not
	# dismissed), which passkeyd maps to CTAP2_ERR_UV_INVALID (0x3F,
	# internal/protocol/ctap2 systemVerify; libfido2: FIDO_ERR_UV_INVALID).
	notverified=$(polkit_lines 'user not verified')
	rm -f "$fpd/touches" "$fpd/typed"
	printf '%s\n%s\n%s\n' "$(fp_rand 32)" fprint.example "$(sed -n 5p "$fw/cred.out" 2>/dev/null)" >"$fw/assert2.in"
	chown "$user:$user" "$fw/assert2.in"
	fp_touching=$fp_other fp_times=1 fp_typing="wrong-$fp_pw"
	if ! fp_op fp-nomatch fido2-assert -G -t uv=true -i "$fw/assert2.in" -o "$fw/assert2.out" "$hidraw" &&
		grep -q 'FIDO_ERR_UV_INVALID' "$t/fp-nomatch.out" &&
		grep -q 'Failed to match fingerprint' "$fpd/fp-nomatch.agent" && grep -q 'Password:' "$fpd/fp-nomatch.agent" &&
		grep -q 'AUTHENTICATION FAILED' "$fpd/fp-nomatch.agent" && [ -e "$fpd/typed" ] &&
		[ "$(polkit_lines 'user not verified')" -gt "$notverified" ]; then
		pass "fprint-uv-nomatch (another finger: 'Failed to match fingerprint', then the password prompt; a wrong password: polkit not authorised -> $(grep -o 'FIDO_ERR_[A-Z_]*' "$t/fp-nomatch.out" | head -1) (CTAP2_ERR_UV_INVALID 0x3F))"
	else
		fail fprint-uv-nomatch "$(out fp-nomatch); touches $(touches); typed: $(cat "$fpd/typed" 2>/dev/null); agent: $(cat "$fpd/fp-nomatch.agent" 2>/dev/null)"
	fi
else
	fail fprint-uv-match "not run: the set-up failed (agent: '${fp_agent_as:-none}', session '$fp_session', leader '$fp_leader')"
	fail fprint-uv-nomatch "not run: the set-up failed"
fi
if [ "$failures" != "$fp_failures" ] || [ -n "${VERBOSE:-}" ]; then
	tr -d '\r' <"$fpd/agent.out" 2>/dev/null | tail -40 | sed 's/^/VM fprint agent: /' || true
	cat "$fpd/touches" 2>/dev/null | sed 's/^/VM fprint touch: /' || true
	journal | tail -25 | sed 's/^/VM journal passkeyd: /' || true
	journalctl -u fprintd -o cat --no-pager 2>/dev/null | grep -vi temperature | tail -30 | sed 's/^/VM journal fprintd: /' || true
	journalctl -u polkit -o cat --no-pager 2>/dev/null | tail -15 | sed 's/^/VM journal polkit: /' || true
fi

# --- restore: the agent gone, PAM, the password, the configuration ---------
if [ -n "$fp_agent" ]; then
	kill -- -"$fp_agent" 2>/dev/null || kill "$fp_agent" 2>/dev/null || true
	wait "$fp_agent" 2>/dev/null || true
	exec 8>&-
fi
if [ -n "$fp_pam_saved" ]; then cp -p "$fpd/polkit-1.saved" "$fp_pam"; else rm -f "$fp_pam"; fi
cp -p "$fpd/shadow.saved" /etc/shadow
cp -p "$fpd/passkeyd.conf.saved" "$fp_conf"
run fp-restore 120 systemctl restart passkeyd || true
wait_for 60 fp_key_up || echo "VM fprint: the key is not up for $user again after the restore: $(systemctl is-active passkeyd 2>&1) $hidraw"
true
