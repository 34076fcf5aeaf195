#!/bin/bash
# passkeyd's prerm (deb) and %preun (rpm), from packaging/nfpm.yaml.
# Arguments: deb "remove" or "upgrade NEW-VERSION" (and failed-upgrade,
# deconfigure), rpm "0" (erase) or "1" (upgrade).
#
# Removal: stop the service, disable it and the prompt agent. An upgrade
# stops nothing: the new package's postinst restarts the service once.
# The passkeys in /var/lib/passkeyd are never touched. DPKG_ROOT: as in
# postinstall.sh.
set -euo pipefail

root=${DPKG_ROOT:-}

case "${1:-}" in
remove | 0)
	if [ -d "$root/run/systemd/system" ]; then
		systemctl stop passkeyd.service || true
	fi
	systemctl disable passkeyd.service ${root:+--root="$root"} || true
	systemctl --global disable passkeyctl-agent.service ${root:+--root="$root"} || true
	;;
*) ;;
esac
exit 0
