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
set -euo pipefail

say() { echo "passkeyd: $*"; }
warn() { echo "passkeyd: warning: $*" >&2; }
booted() { [ -d /run/systemd/system ]; }

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
	systemd-sysusers passkeyd.conf || warn "systemd-sysusers passkeyd.conf failed"
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

case $action in
install)
	systemctl enable passkeyd.service || warn "systemctl enable passkeyd.service failed"
	systemctl --global enable passkeyctl-agent.service || warn "systemctl --global enable passkeyctl-agent.service failed"
	if booted; then
		# A machine without a TPM gets a failed unit and one journal line
		# saying so, not a failed package installation.
		systemctl start passkeyd.service ||
			warn "passkeyd did not start; journalctl -u passkeyd says why"
	fi
	;;
upgrade)
	if booted; then
		systemctl try-restart passkeyd.service ||
			warn "passkeyd did not restart; journalctl -u passkeyd says why"
	fi
	;;
esac

# Whose passkeys the running daemon serves, in its own words (passkeyctl
# info's Users line; the control socket appears a moment after the start,
# the unit is Type=exec). In seat mode, the default where logind runs, each
# user at the seat has their own and nothing needs configuring; in owner
# mode (no logind, or users = "owner") only the owner's agent can answer
# the prompts, so an install without one says what to set.
users_line() {
	local i line
	for i in $(seq 1 20); do
		line=$(passkeyctl info 2>/dev/null | sed -n 's/^Users:[[:space:]]*//p')
		if [ -n "$line" ]; then
			echo "$line"
			return 0
		fi
		sleep 0.5
	done
	return 1
}
users=
if booted && systemctl -q is-active passkeyd.service; then
	users=$(users_line) || users=
fi
case $users in
seat:*)
	say "each user at the seat has their own passkeys; 'passkeyctl info' shows the details"
	;;
*)
	if [ -n "$users" ] || grep -Eq '^[[:space:]]*users[[:space:]]*=[[:space:]]*"owner"' /etc/passkeyd/passkeyd.conf 2>/dev/null; then
		if ! grep -Eq '^[[:space:]]*owner[[:space:]]*=[[:space:]]*"[^"]+"' /etc/passkeyd/passkeyd.conf 2>/dev/null; then
			say "no owner set: nobody can answer its prompts. As root, set owner = \"YOUR_USER_NAME\""
			say "in /etc/passkeyd/passkeyd.conf, then: systemctl restart passkeyd"
		fi
	fi
	;;
esac
exit 0
