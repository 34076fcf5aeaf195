#!/bin/bash
# passkeyd's postrm (deb) and %postun (rpm), from packaging/nfpm.yaml.
# Arguments: deb "remove", "purge" (and upgrade, failed-upgrade,
# abort-install, abort-upgrade, disappear), rpm "0" (erase) or "1" (upgrade).
#
# The state directory /var/lib/passkeyd holds every passkey (the store and
# its TPM-sealed secrets): neither remove nor purge deletes it, since
# nothing could bring the passkeys back. Purge removes the configuration
# file (dpkg does that for the conffile) and says what the one command that
# deletes the passkeys would delete. The passkeyd user and its group stay
# as well. DPKG_ROOT: as in postinstall.sh.
set -euo pipefail

root=${DPKG_ROOT:-}
state=$root/var/lib/passkeyd

case "${1:-}" in
remove | purge | 0)
	if [ -d "$root/run/systemd/system" ]; then
		systemctl daemon-reload || true
		udevadm control --reload || true
	fi
	if [ -d "$state" ]; then
		echo "passkeyd: kept $state: it holds your passkeys."
		if [ "$1" = purge ]; then
			n=$(find "$state" -mindepth 1 | wc -l)
			echo "passkeyd: purge does not delete them. 'rm -rf $state' would delete these $n entries, every passkey for good:"
			# head stops reading after 20 lines: find and sed may then die
			# of SIGPIPE, which pipefail would turn into a failed purge.
			find "$state" -mindepth 1 -maxdepth 2 | sed 's/^/passkeyd:   /' | head -20 || true
		else
			echo "passkeyd: reinstalling passkeyd brings them back; purge keeps them too."
		fi
	fi
	;;
*) ;;
esac
exit 0
