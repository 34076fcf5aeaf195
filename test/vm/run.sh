#!/usr/bin/env bash
# End-to-end test of passkeyd as a real USB FIDO key.
#
# Boots Debian's kernel under qemu (TCG: no KVM needed) with the host's
# root shared read-only over 9p and swtpm as the guest's TPM, loads uhid,
# starts the freshly built daemon as an unprivileged user on /dev/tpmrm0
# and /dev/uhid, and drives /dev/hidrawN with fido2-tools, OpenSSH,
# python-fido2, headless Chromium and Firefox under Xvfb (guest/e2e.sh).
# Results come back over the serial console; this script prints them, then
# "N passed, M failed", and exits non-zero on any failure, a missing result
# or a timeout.
#
# Usage: test/vm/run.sh          (make e2e; go test ./test/vm)
#        test/vm/run.sh --demo   (make demo on a machine without /dev/uhid)
#
# --demo boots the same VM but runs test/demo/demo.sh in it (guest/demo.sh):
# the walkthrough a newcomer sees, printed without the VM's own lines.
#
# Environment:
#   PASSKEYD_BIN=PATH       daemon to test instead of building ./cmd/passkeyd
#                           (built with -tags tpmsim: two checks use --tpm sim)
#   PASSKEYD_VM_BROWSER=0   skip the Chromium checks
#   PASSKEYD_VM_FIREFOX=0   skip the Firefox checks (guest/firefox.sh)
#   PASSKEYD_VM_TIMEOUT=S   bound on the whole VM run (default 1200 s: about 300 s unloaded,
#                           more than twice that beside other tests on 2 cores)
#   PASSKEYD_VM_KEEP=1      keep the work directory (console log, swtpm log,
#                           artifacts/: screenshots of Firefox's dialogs)
#   PASSKEYD_VM_SWTPM_LOG=PATH  swtpm logs every command to PATH (test/vm/tpmcount.sh)
#   PASSKEYD_VM_GUEST=PATH  run this script in the guest instead of
#                           guest/e2e.sh (arguments: work dir, repository)
#   VERBOSE=1               print the whole console and the daemon's log
#   CI=true                 a missing prerequisite is a failure, not a skip
#
# Exit status: 0 all passed, 1 failure, 77 prerequisites missing and not
# installable (not in CI; go test reports a skip).
#
# It installs what it needs with apt when run as root (qemu-system-x86,
# swtpm, fido2-tools, python3-fido2, busybox-static, cpio, openssh-client,
# cryptsetup-bin, libpam-u2f, pamu2fcfg, pamtester, chromium, firefox-esr,
# xvfb, xdotool, imagemagick) and caches Debian's current kernel
# (linux-image-amd64's dependency, fetched with apt-get download) in
# test/vm/cache/.
set -euo pipefail

browser=${PASSKEYD_VM_BROWSER:-1}
firefox=${PASSKEYD_VM_FIREFOX:-1}
demo=
guest=${PASSKEYD_VM_GUEST:-$(cd "$(dirname "$0")" && pwd)/guest/e2e.sh}
case ${1:-} in
--demo)
	demo=1
	browser=0
	firefox=0
	guest=$(cd "$(dirname "$0")" && pwd)/guest/demo.sh
	;;
"") ;;
*)
	echo "usage: $0 [--demo]" >&2
	exit 2
	;;
esac
vm_timeout=${PASSKEYD_VM_TIMEOUT:-1200}
svc_uid=990 # the daemon's user and group in the guest, as a unit's User=
svc_gid=990
owner_uid=1000 # the person the key serves (--owner): runs the prompt agent
tag=e2e
[ -n "$demo" ] && tag=demo
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
guest=$(cd "$(dirname "$guest")" && pwd)/$(basename "$guest")

# --- Prerequisites ----------------------------------------------------------
missing_pkgs() {
	local p=()
	command -v qemu-system-x86_64 >/dev/null || p+=(qemu-system-x86)
	command -v swtpm >/dev/null || p+=(swtpm)
	command -v swtpm_setup >/dev/null || p+=(swtpm-tools)
	command -v fido2-token >/dev/null || p+=(fido2-tools)
	/usr/bin/python3 -c 'import fido2' >/dev/null 2>&1 || p+=(python3-fido2)
	# A static busybox: the initramfs has no libc.
	case $([ -x /bin/busybox ] && LC_ALL=C ldd /bin/busybox 2>&1) in
	*"not a dynamic executable"*) ;;
	*) p+=(busybox-static) ;;
	esac
	command -v cpio >/dev/null || p+=(cpio)
	command -v ssh-keygen >/dev/null || p+=(openssh-client)
	# pam-u2f: pamu2fcfg, pam_u2f.so and a PAM client to drive it.
	command -v pamu2fcfg >/dev/null || p+=(pamu2fcfg)
	[ -e /lib/x86_64-linux-gnu/security/pam_u2f.so ] || [ -e /usr/lib/x86_64-linux-gnu/security/pam_u2f.so ] || p+=(libpam-u2f)
	command -v pamtester >/dev/null || p+=(pamtester)
	# LUKS2 for the systemd-cryptenroll check (systemd-cryptenroll and
	# systemd-cryptsetup come with systemd itself).
	command -v cryptsetup >/dev/null || [ -x /usr/sbin/cryptsetup ] || p+=(cryptsetup-bin)
	command -v setpriv >/dev/null || p+=(util-linux)
	# The daemon is built with cgo and the tpmsim tag: the in-process TPM
	# simulator serves the checks of its error messages.
	command -v gcc >/dev/null || p+=(gcc)
	[ -e /usr/include/openssl/ssl.h ] || p+=(libssl-dev)
	if [ "$browser" = 1 ] && [ ! -x /usr/lib/chromium/chromium ]; then p+=(chromium); fi
	# Firefox under a virtual X server; xdotool types the PIN into its
	# dialog, ImageMagick's import photographs it.
	if [ "$firefox" = 1 ]; then
		[ -x /usr/lib/firefox-esr/firefox-esr ] || p+=(firefox-esr)
		command -v Xvfb >/dev/null || p+=(xvfb)
		command -v xdotool >/dev/null || p+=(xdotool)
		[ -x /usr/bin/import ] || p+=(imagemagick)
	fi
	echo "${p[@]}"
}

vm_prereqs

# --- Kernel: Debian's, cached ------------------------------------------------
vm_kernel

# --- Work directory -----------------------------------------------------------
vm_workdir

# --- The binaries ---------------------------------------------------------------
# The daemon; passkeyctl, whose prompt agent runs in the guest as the
# owner; the test pinentry the agent shows prompts through (it speaks
# Assuan, answers GETPIN with $FAKE_PIN and CONFIRM with OK).
bins=(./cmd/passkeyctl ./internal/daemon/pinentry/testdata/fakepinentry)
[ -z "${PASSKEYD_BIN:-}" ] && bins+=(./cmd/passkeyd)
# -tags tpmsim: the guest's error-message checks run passkeyd --tpm sim.
(cd "$repo" && CGO_ENABLED=1 go build -tags tpmsim -o "$work/" "${bins[@]}") || die "go build ${bins[*]} failed"
[ -n "${PASSKEYD_BIN:-}" ] && cp "$PASSKEYD_BIN" "$work/passkeyd"
chmod 0755 "$work" "$work/passkeyd" "$work/passkeyctl" "$work/fakepinentry"
cat >"$work/env" <<EOF
PASSKEYD_BIN=$work/passkeyd
PASSKEYCTL_BIN=$work/passkeyctl
FAKEPINENTRY_BIN=$work/fakepinentry
BROWSER=$browser
FIREFOX=$firefox
SVC_UID=$svc_uid
SVC_GID=$svc_gid
OWNER_UID=$owner_uid
VERBOSE=${VERBOSE:-}
TPMCOUNT_N=${TPMCOUNT_N:-}
EOF
say "passkeyd, passkeyctl and fakepinentry built ($(since)s)"

# The guest sees the host's root but mounts its own tmpfs on /tmp and /run,
# so a checkout there (a CI clone in /tmp) would be invisible to it: the
# scripts it runs are copied into the work directory (under /var/tmp), and
# the guest's "repository" is that copy.
vmrepo=$work/repo
mkdir -p "$vmrepo/test/vm" "$vmrepo/test/demo"
cp -R "$here/guest" "$vmrepo/test/vm/"
cp "$repo/test/demo/demo.sh" "$vmrepo/test/demo/"
case $guest in
"$here"/guest/*) vmguest=$vmrepo/test/vm/guest/${guest#"$here"/guest/} ;;
*)
	vmguest=$work/guest-script
	cp "$guest" "$vmguest"
	;;
esac
chmod -R a+rX "$vmrepo"

# --- Initramfs: static busybox, our init, the modules it needs ------------------
# loop, device-mapper, dm-crypt, xts (over ecb: nothing here autoloads
# crypto templates, there is no modprobe) and AF_ALG skciphers: the LUKS2
# volume that systemd-cryptenroll enrolls the key into.
vm_initramfs "$here/guest/init" virtio_pci 9pnet_virtio 9p hid_generic uhid loop dm_mod dm_crypt ecb xts algif_skcipher

# --- swtpm: the guest's TPM -----------------------------------------------------
vm_swtpm
say "kernel $kver, initramfs and swtpm ready ($(since)s)"

# --- The VM -------------------------------------------------------------------
# The host root is read-only in the guest: $work/artifacts is shared
# writable (guest/init mounts it over its path), for what the guest keeps
# (screenshots of Firefox's dialogs).
mkdir -p "$work/artifacts"
console=$work/console.log
vm_qemu "$vm_timeout" "quiet loglevel=3 vmtest.work=$work vmtest.repo=$vmrepo vmtest.guest=$vmguest" \
	-virtfs local,path="$work/artifacts",mount_tag=artifacts,security_model=none,multidevs=remap |
	if [ -n "${VERBOSE:-}" ]; then
		cat >&2
	elif [ -n "$demo" ]; then
		# The walkthrough on stdout as the guest prints it; a failure
		# on stderr.
		while IFS= read -r line; do
			case $line in
			"DEMO "*) printf '%s\n' "${line#DEMO }" ;;
			"DEMO") echo ;;
			"E2E FAIL"*) printf '%s\n' "$line" >&2 ;;
			esac
		done
	else
		grep --line-buffered -E '^(E2E|VM) ' >&2 || true
	fi
qemu_rc=$(cat "$work/qemu.rc" 2>/dev/null || echo "?")
elapsed=$(since)

vm_tally "$console" 25
if [ -n "$demo" ]; then
	if [ "$failed" = 0 ] && [ "$passed" -gt 0 ]; then
		say "the VM run took ${elapsed}s"
		exit 0
	fi
	say "FAILED (VERBOSE=1 shows the VM's console and the daemon's log)"
	exit 1
fi
say "whole run ${elapsed}s"
echo "$passed passed, $failed failed"
[ "$failed" = 0 ] && [ "$passed" -gt 0 ]
