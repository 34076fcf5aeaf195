#!/bin/bash
# passkeyd's postinst (deb) and %post (rpm), from packaging/nfpm.yaml: what
# the README's manual install steps do. Arguments: deb "configure
# [OLD-VERSION]" (no OLD-VERSION: first install), rpm "1" (first install)
# or "2" (upgrade).
#
# First install: the passkeyd user, uhid loaded, the udev rules applied to
# /dev/uhid and /dev/tpmrm0, the service enabled and started, the prompt
# agent enabled for every user's graphical session.
# Upgrade: the same, but the service is restarted exactly once here (the
# old prerm does not stop it) and only if it was running; whether it and
# the agent are enabled is left as the administrator has it.
# Where systemd is not PID 1 (a chroot, a container, an image build) only
# the offline steps run: the user and the enablement symlinks.
#
# DPKG_ROOT is dpkg's: the root of the installation acted on, "" for this
# system (dpkg --root with --force-script-chrootless sets it). Every path
# and the offline steps honour it, so that a chrootless install never
# enables the service of the host; test/install runs this script in such a
# root with systemctl and friends stubbed on PATH.
set -euo pipefail

root=${DPKG_ROOT:-}
conf=$root/etc/passkeyd/passkeyd.conf
say() { echo "passkeyd: $*"; }
warn() { echo "passkeyd: warning: $*" >&2; }
booted() { [ -d "$root/run/systemd/system" ]; }
# The offline steps act on $root; plain systemctl for this system.
offline() { "$@" ${root:+--root="$root"}; }

action=install
case "${1:-}" in
configure)
	[ -n "${2:-}" ] && action=upgrade
	;;
1) ;;
[0-9]*) action=upgrade ;;
abort-upgrade | abort-deconfigure) exit 0 ;; # the old prerm stopped nothing
abort-remove) ;;                             # the prerm stopped and disabled it: undo that
*) ;;
esac

if command -v systemd-sysusers >/dev/null; then
	offline systemd-sysusers passkeyd.conf || warn "systemd-sysusers passkeyd.conf failed"
else
	warn "no systemd-sysusers: create the system user and group passkeyd and the group tss yourself"
fi

if booted; then
	udevadm control --reload || warn "udevadm control --reload failed"
	modprobe uhid || warn "modprobe uhid failed: passkeyd needs /dev/uhid (CONFIG_UHID)"
	udevadm trigger --settle --subsystem-match=misc --sysname-match=uhid || true
	udevadm trigger --settle --subsystem-match=tpmrm || true
	systemctl daemon-reload
fi

# started: the service was (re)started here, so it should answer below.
started=no
since=$(date +%s)
case $action in
install)
	offline systemctl enable passkeyd.service || warn "systemctl enable passkeyd.service failed"
	offline systemctl --global enable passkeyctl-agent.service || warn "systemctl --global enable passkeyctl-agent.service failed"
	if booted; then
		# A machine without a TPM gets a failed unit and the daemon's
		# one line saying why (below), not a failed package installation.
		started=yes
		systemctl start passkeyd.service ||
			warn "passkeyd did not start; journalctl -u passkeyd says why"
	fi
	;;
upgrade)
	if booted && systemctl -q is-active passkeyd.service; then
		started=yes
		systemctl try-restart passkeyd.service ||
			warn "passkeyd did not restart; journalctl -u passkeyd says why"
	fi
	;;
esac

# Whose passkeys the running daemon serves, in its own words (passkeyctl
# info's Users line and its owner setting; the control socket appears a
# moment after the start). In seat mode, the default where logind runs,
# each user at the seat has their own and nothing needs configuring; in
# owner mode (no logind, or users = "owner") only the owner's agent can
# answer the prompts, so an install without one says what to set.
#
# The unit is Type=exec: `systemctl start` succeeds as soon as the binary
# runs, also when the daemon then exits at once (no TPM, no /dev/uhid, a
# bad passkeyd.conf) and systemd retries it (the unit is then "activating",
# or "failed" once it gives up). A daemon that does not answer within 10 s
# and is not running is reported here with the line it exited with; one
# that runs but is not answering yet (a slow TPM's first start) is not.
info=
daemon_info() {
	local i out
	for i in $(seq 1 20); do
		out=$(passkeyctl info 2>/dev/null) || out=
		if grep -q '^Users:' <<<"$out"; then
			echo "$out"
			return 0
		fi
		sleep 0.5
	done
	return 1
}
if [ $started = yes ]; then
	if ! info=$(daemon_info); then
		info=
		if systemctl -q is-active passkeyd.service; then
			say "passkeyd is still starting; 'passkeyctl info' shows whose passkeys it serves"
		else
			why=$(journalctl -u passkeyd.service --since "@$since" -o cat --no-pager 2>/dev/null | grep '^passkeyd: ' | tail -1) || why=
			warn "passkeyd is not running${why:+: ${why#passkeyd: }}"
			warn "'systemctl status passkeyd' and 'journalctl -u passkeyd' say more; after fixing it: systemctl restart passkeyd"
		fi
	fi
fi
users=$(sed -n 's/^Users:[[:space:]]*//p' <<<"$info")
case $users in
seat:*)
	say "each user at the seat has their own passkeys; 'passkeyctl info' shows the details"
	;;
*)
	if [ -n "$users" ]; then
		# The daemon's effective owner: info's settings row `  owner  VALUE  SOURCE`.
		owner=$(awk '$1 == "owner" { print $2; exit }' <<<"$info")
		[ "$owner" = '""' ] && owner=
	elif grep -Eq '^[[:space:]]*users[[:space:]]*=[[:space:]]*"owner"' "$conf" 2>/dev/null; then
		owner=$(sed -nE 's/^[[:space:]]*owner[[:space:]]*=[[:space:]]*"([^"]+)".*/\1/p' "$conf" 2>/dev/null) || owner=
	else
		owner=unknown # not running: seat or owner mode is the daemon's to decide
	fi
	if [ -z "$owner" ]; then
		say "no owner set: no user's prompt agent is admitted. As root, set owner = \"YOUR_USER_NAME\""
		say "in /etc/passkeyd/passkeyd.conf, then: systemctl restart passkeyd"
	fi
	;;
esac
exit 0
