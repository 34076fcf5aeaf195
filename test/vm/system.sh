#!/usr/bin/env bash
# The install test on a booted system: passkeyd's .deb installed with apt
# on a Debian whose PID 1 is systemd (with udevd, dbus, logind, polkit and a
# user logged in on tty1), checked the way a person would check it.
#
# Boots Debian's kernel under qemu (TCG) with swtpm as the TPM; the guest's
# root is the host's root (9p, read-only) under a tmpfs overlay, where
# guest/system-init prepares users and a boot target and then executes
# /lib/systemd/systemd. guest/system-checks.sh runs as a service there and
# reports each check on the serial console, "E2E PASS name" or "E2E FAIL
# name: reason"; this script prints them, then "N passed, M failed", and
# exits non-zero on a failure, a missing result or a timeout. It builds the
# packages first (make deb at VERSION and at VERSION+upgrade, make rpm) and
# logs `dpkg -c` of the .deb and `rpm -qlp` of the .rpm.
#
# Usage: test/vm/system.sh   (go test ./test/vm -run TestSystem; make test)
#
# Environment:
#   PASSKEYD_VM_BROWSER=0   skip the Chromium checks
#   PASSKEYD_VM_ONLY=fprint only the boot, install and fingerprint checks
#                           (to iterate on guest/system-fprint.sh)
#   PASSKEYD_VM_TIMEOUT=S   bound on the VM run (default 1500 s: about 460 s unloaded,
#                           twice that beside other tests on 2 cores)
#   PASSKEYD_VM_KEEP=1      keep the work directory (console log, packages)
#   VERBOSE=1               print the whole console
#   CI=true                 a missing prerequisite is a failure, not a skip
#
# Exit status: 0 all passed, 1 failure, 77 prerequisites missing and not
# installable (not in CI; go test reports a skip).
set -euo pipefail

tag=system
browser=${PASSKEYD_VM_BROWSER:-1}
vm_timeout=${PASSKEYD_VM_TIMEOUT:-1500}
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"

missing_pkgs() {
	local p=()
	command -v qemu-system-x86_64 >/dev/null || p+=(qemu-system-x86)
	command -v swtpm >/dev/null || p+=(swtpm)
	command -v swtpm_setup >/dev/null || p+=(swtpm-tools)
	case $([ -x /bin/busybox ] && LC_ALL=C ldd /bin/busybox 2>&1) in
	*"not a dynamic executable"*) ;;
	*) p+=(busybox-static) ;;
	esac
	command -v cpio >/dev/null || p+=(cpio)
	# What the guest's system needs: it is this machine's root.
	[ -x /lib/systemd/systemd ] || p+=(systemd)
	command -v udevadm >/dev/null || p+=(udev)
	command -v dbus-daemon >/dev/null || p+=(dbus)
	[ -x /usr/lib/polkit-1/polkitd ] || p+=(polkitd)
	[ -e /lib/x86_64-linux-gnu/security/pam_systemd.so ] || p+=(libpam-systemd)
	command -v depmod >/dev/null || p+=(kmod)
	command -v getfacl >/dev/null || p+=(acl)
	command -v agetty >/dev/null || p+=(util-linux)
	command -v fido2-token >/dev/null || p+=(fido2-tools)
	/usr/bin/python3 -c 'import fido2' 2>/dev/null || p+=(python3-fido2)
	command -v chvt >/dev/null || p+=(kbd)
	command -v script >/dev/null || p+=(bsdutils)
	/usr/bin/python3 -c 'import gi; gi.require_version("PolkitAgent", "1.0")' 2>/dev/null || p+=(python3-gi gir1.2-polkit-1.0)
	command -v chpasswd >/dev/null || p+=(passwd)
	command -v ssh-keygen >/dev/null || p+=(openssh-client)
	command -v rpm >/dev/null || p+=(rpm)
	# The fingerprint stage (guest/system-fprint.sh): fprintd with
	# libfprint's virtual device, pam_fprintd, polkit's text agent under
	# script(1), busctl, python3 (it talks to the virtual device's socket).
	[ -x /usr/libexec/fprintd ] && command -v fprintd-enroll >/dev/null || p+=(fprintd)
	[ -e /lib/x86_64-linux-gnu/security/pam_fprintd.so ] || p+=(libpam-fprintd)
	command -v script >/dev/null || p+=(bsdutils)
	command -v chvt >/dev/null || p+=(kbd)
	[ -x /usr/bin/python3 ] || p+=(python3)
	if [ "$browser" = 1 ] && [ ! -x /usr/lib/chromium/chromium ]; then p+=(chromium); fi
	echo "${p[@]}"
}
vm_prereqs
vm_kernel
# modprobe in the guest reads the kernel's modules.dep (the package ships
# none; its postinst runs depmod): made once, kept in the cache.
kmod=$kdir/lib/modules/$kver
if [ ! -s "$kmod/modules.dep" ]; then
	depmod -b "$kdir" "$kver" || die "depmod -b $kdir $kver failed"
fi
vm_workdir

# --- The packages: two versions of the .deb (the upgrade), the .rpm ---------
# The second .deb and the .rpm package the binaries of the first (PKG_REUSE).
v1=${PASSKEYD_VM_VERSION:-$("$repo/packaging/version.sh")}
v2=$v1+upgrade
mkdir -p "$work/pkg"
deb1=$(VERSION=$v1 "$repo/packaging/build.sh" deb "$work/pkg" 2>"$work/build.log") || die "make deb failed: $(tail -5 "$work/build.log")"
deb2=$(PKG_REUSE=1 VERSION=$v2 "$repo/packaging/build.sh" deb "$work/pkg" 2>>"$work/build.log") || die "make deb (upgrade) failed: $(tail -5 "$work/build.log")"
rpm=$(PKG_REUSE=1 VERSION=$v1 "$repo/packaging/build.sh" rpm "$work/pkg" 2>>"$work/build.log") || die "make rpm failed: $(tail -5 "$work/build.log")"
say "built ${deb1##*/}, ${deb2##*/}, ${rpm##*/} ($(since)s)"
dpkg-deb -f "$deb1" Package Version Depends Recommends | sed "s/^/$tag: deb: /" >&2
dpkg -c "$deb1" | awk '{print $1, $2, $6}' | sed "s/^/$tag: dpkg -c: /" >&2
rpm -qp --qf '%{NAME} %{VERSION}-%{RELEASE} %{ARCH}\n' "$rpm" 2>/dev/null | sed "s/^/$tag: rpm: /" >&2
rpm -qpR "$rpm" 2>/dev/null | sed "s/^/$tag: rpm -qpR: /" >&2
rpm -qlp "$rpm" 2>/dev/null | sed "s/^/$tag: rpm -qlp: /" >&2
rpm -qpc "$rpm" 2>/dev/null | sed "s/^/$tag: rpm -qpc (config): /" >&2

# The test pinentry the agent shows prompts through (answers GETPIN with
# $FAKE_PIN and CONFIRM with OK).
(cd "$repo" && CGO_ENABLED=0 go build -o "$work/" ./internal/daemon/pinentry/testdata/fakepinentry) ||
	die "go build fakepinentry failed"
cat >"$work/env" <<EOT
DEB1=$deb1
DEB2=$deb2
V1=$v1
V2=$v2
FAKEPINENTRY_BIN=$work/fakepinentry
BROWSER=$browser
ONLY=${PASSKEYD_VM_ONLY:-}
VERBOSE=${VERBOSE:-}
EOT
# The guest sees the host's root, so a checkout under /tmp would be
# visible too, but the scripts are copied next to the packages anyway: the
# guest runs exactly what this run built.
vmrepo=$work/repo
mkdir -p "$vmrepo/test/vm"
cp -R "$here/guest" "$vmrepo/test/vm/"
chmod -R a+rX "$work"

vm_initramfs "$here/guest/system-init" virtio_pci 9pnet_virtio 9p overlay
vm_swtpm
say "kernel $kver, initramfs and swtpm ready ($(since)s)"

# --- The VM -------------------------------------------------------------------
boot=$(date +%s.%N)
vm_qemu "$vm_timeout" "quiet loglevel=3 systemd.show_status=error systemd.unit=passkeyd-vm.target vmtest.work=$work vmtest.repo=$vmrepo vmtest.kmod=$kmod" |
	if [ -n "${VERBOSE:-}" ]; then
		cat >&2
	else
		grep --line-buffered -E '^(E2E|VM) ' >&2 || true
	fi
qemu_rc=$(cat "$work/qemu.rc" 2>/dev/null || echo "?")
console=$work/console.log
vm_secs=$(awk -v s="$boot" -v n="$(date +%s.%N)" 'BEGIN{printf "%.1f", n-s}')

vm_tally "$console" 40
say "VM ${vm_secs}s, whole run $(since)s"
echo "$passed passed, $failed failed"
[ "$failed" = 0 ] && [ "$passed" -gt 0 ]
