#!/usr/bin/env bash
# End-to-end test of passkeyd as a real USB FIDO key.
#
# Boots Debian's kernel under qemu (TCG: no KVM needed) with the host's
# root shared read-only over 9p and swtpm as the guest's TPM, loads uhid,
# starts the freshly built daemon as an unprivileged user on /dev/tpmrm0
# and /dev/uhid, and drives /dev/hidrawN with fido2-tools, OpenSSH,
# python-fido2 and headless Chromium (guest/e2e.sh). Results come back over
# the serial console; this script prints them, then "N passed, M failed",
# and exits non-zero on any failure, a missing result or a timeout.
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
#   PASSKEYD_VM_TIMEOUT=S   bound on the whole VM run (default 420 s)
#   PASSKEYD_VM_KEEP=1      keep the work directory (console log, swtpm log)
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
# cryptsetup-bin, chromium) and caches Debian's current kernel (linux-image-amd64's
# dependency, fetched with apt-get download) in test/vm/cache/.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=$here/cache
browser=${PASSKEYD_VM_BROWSER:-1}
demo=
guest=${PASSKEYD_VM_GUEST:-$here/guest/e2e.sh}
case ${1:-} in
--demo)
	demo=1
	browser=0
	guest=$here/guest/demo.sh
	;;
"") ;;
*)
	echo "usage: $0 [--demo]" >&2
	exit 2
	;;
esac
guest=$(cd "$(dirname "$guest")" && pwd)/$(basename "$guest")
vm_timeout=${PASSKEYD_VM_TIMEOUT:-420}
svc_uid=990 # the daemon's user and group in the guest, as a unit's User=
svc_gid=990
owner_uid=1000 # the person the key serves (--owner): runs the prompt agent
start=$(date +%s.%N)

tag=e2e
[ -n "$demo" ] && tag=demo
say() { echo "$tag: $*" >&2; }
since() { awk -v s="$start" -v n="$(date +%s.%N)" 'BEGIN{printf "%.1f", n-s}'; }
die() {
	say "$*"
	echo "0 passed, 1 failed"
	exit 1
}
# missing: a prerequisite is missing and cannot be had: a failure in CI, a
# skip (exit 77) elsewhere.
missing() {
	[ "${CI:-}" = true ] && die "missing prerequisite: $*"
	say "skipped: $*"
	exit 77
}


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
	# LUKS2 for the systemd-cryptenroll check (systemd-cryptenroll and
	# systemd-cryptsetup come with systemd itself).
	command -v cryptsetup >/dev/null || [ -x /usr/sbin/cryptsetup ] || p+=(cryptsetup-bin)
	command -v setpriv >/dev/null || p+=(util-linux)
	# The daemon is built with cgo and the tpmsim tag: the in-process TPM
	# simulator serves the checks of its error messages.
	command -v gcc >/dev/null || p+=(gcc)
	[ -e /usr/include/openssl/ssl.h ] || p+=(libssl-dev)
	if [ "$browser" = 1 ] && [ ! -x /usr/lib/chromium/chromium ]; then p+=(chromium); fi
	echo "${p[@]}"
}

pkgs=$(missing_pkgs)
if [ -n "$pkgs" ]; then
	if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
		say "installing $pkgs"
		export DEBIAN_FRONTEND=noninteractive
		# shellcheck disable=SC2086
		apt-get install -y -q --no-install-recommends $pkgs >/dev/null 2>&1 ||
			{ apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends $pkgs >/dev/null; } ||
			true
		pkgs=$(missing_pkgs)
	fi
	if [ -n "$pkgs" ]; then
		missing "$pkgs (run as root to install them, or apt-get install $pkgs)"
	fi
fi

# --- Kernel: Debian's, cached ------------------------------------------------
# The package linux-image-amd64 currently points at; a cached one when apt
# cannot say (offline).
kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}' || true)
kdir=
if [ -n "$kpkg" ]; then
	kdir=$cache/$kpkg
	if [ ! -d "$kdir/boot" ]; then
		say "fetching $kpkg"
		mkdir -p "$cache/dl"
		rm -rf "$kdir.tmp"
		if ! (cd "$cache/dl" && apt-get download "$kpkg" >/dev/null 2>&1); then
			missing "the guest kernel: apt-get download $kpkg failed"
		fi
		debs=("$cache/dl/${kpkg}"_*.deb)
		deb=${debs[0]}
		dpkg -x "$deb" "$kdir.tmp" || die "dpkg -x $deb failed"
		rm -f "$deb"
		mv "$kdir.tmp" "$kdir"
	fi
else
	kdir=$(printf '%s\n' "$cache"/linux-image-*/boot | sort -V | tail -1)
	kdir=${kdir%/boot}
	[ -d "$kdir/boot" ] || kdir=
	[ -n "$kdir" ] || missing "the guest kernel: apt-cache cannot resolve linux-image-amd64 and $cache has none"
fi
vmlinuzes=("$kdir"/boot/vmlinuz-*)
vmlinuz=${vmlinuzes[0]}
[ -f "$vmlinuz" ] || die "no vmlinuz in $kdir/boot"
kver=${vmlinuz##*/vmlinuz-}

# --- Work directory -----------------------------------------------------------
# Not under /tmp: the guest mounts its own tmpfs there, and reads this
# directory through the host root.
work=$(mktemp -d /var/tmp/passkeyd-vm.XXXXXX)
swtpm_pid=
cleanup() {
	if [ -n "$swtpm_pid" ]; then kill "$swtpm_pid" 2>/dev/null || true; fi
	if [ "${PASSKEYD_VM_KEEP:-}" = 1 ]; then
		say "kept $work"
	else
		rm -rf "$work"
	fi
}
trap cleanup EXIT

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
SVC_UID=$svc_uid
SVC_GID=$svc_gid
OWNER_UID=$owner_uid
VERBOSE=${VERBOSE:-}
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
# No modinfo/depmod here: dependencies come from each module's "depends="
# field, loaded in dependency order.
declare -A kopath=()
while IFS= read -r f; do
	n=${f##*/}
	n=${n%.ko}
	kopath[${n//-/_}]=$f
done < <(find "$kdir/lib/modules/$kver" -name '*.ko')
declare -A seen=()
order=()
add_module() {
	local m=${1//-/_} f dep
	[ -n "${seen[$m]:-}" ] && return 0
	seen[$m]=1
	f=${kopath[$m]:-}
	[ -n "$f" ] || die "module $m not found in $kdir"
	for dep in $(tr '\0' '\n' <"$f" | sed -n 's/^depends=//p' | tr ',' ' '); do
		add_module "$dep"
	done
	order+=("$m")
}
# loop, device-mapper, dm-crypt, xts (over ecb: nothing here autoloads
# crypto templates, there is no modprobe) and AF_ALG skciphers: the LUKS2
# volume that systemd-cryptenroll enrolls the key into.
for m in virtio_pci 9pnet_virtio 9p hid_generic uhid loop dm_mod dm_crypt ecb xts algif_skcipher; do add_module "$m"; done

ird=$work/initramfs
mkdir -p "$ird/bin" "$ird/modules"
cp /bin/busybox "$ird/bin/busybox"
cp "$here/guest/init" "$ird/init"
chmod 0755 "$ird/init"
for m in "${order[@]}"; do cp "${kopath[$m]}" "$ird/modules/$m.ko"; done
printf '%s\n' "${order[@]}" >"$ird/modules/order"
(cd "$ird" && find . | cpio -o -H newc --quiet | gzip -1) >"$work/initrd.gz"

# --- swtpm: the guest's TPM -----------------------------------------------------
mkdir -p "$work/tpm"
swtpm_setup --tpm2 --tpmstate "$work/tpm" --overwrite >"$work/swtpm_setup.log" 2>&1 ||
	die "swtpm_setup failed: $(tail -3 "$work/swtpm_setup.log")"
swtpm socket --tpm2 --tpmstate dir="$work/tpm" --ctrl type=unixio,path="$work/tpm/ctrl" \
	--terminate --log file="$work/swtpm.log",level=1 &
swtpm_pid=$!
for _ in $(seq 1 100); do
	[ -S "$work/tpm/ctrl" ] && break
	sleep 0.05
done
[ -S "$work/tpm/ctrl" ] || die "swtpm did not create its control socket"
say "kernel $kver, initramfs and swtpm ready ($(since)s)"

# --- The VM -------------------------------------------------------------------
console=$work/console.log
# cryptomgr.notests: the kernel's crypto self-tests cost boot time under
# TCG, and once hung the boot for good (a soft lockup in cryptomgr_test).
set +e
timeout -k 10 "$vm_timeout" qemu-system-x86_64 \
	-accel tcg -cpu max -smp 2 -m 2048 \
	-display none -monitor none -serial stdio -no-reboot \
	-kernel "$vmlinuz" -initrd "$work/initrd.gz" \
	-append "console=ttyS0 panic=-1 quiet loglevel=3 cryptomgr.notests=1 vmtest.work=$work vmtest.repo=$vmrepo vmtest.guest=$vmguest" \
	-virtfs local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap \
	-chardev socket,id=chrtpm,path="$work/tpm/ctrl" -tpmdev emulator,id=tpm0,chardev=chrtpm \
	-device tpm-tis,tpmdev=tpm0 \
	</dev/null 2>"$work/qemu.err" | stdbuf -oL tr -d '\r' | tee "$console" |
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
		grep --line-buffered -E '^(E2E|VM) ' >&2
	fi
qemu_rc=${PIPESTATUS[0]}
set -e
elapsed=$(since)

passed=$(grep -c '^E2E PASS ' "$console" || true)
failed=$(grep -c '^E2E FAIL ' "$console" || true)
if ! grep -q '^E2E DONE' "$console"; then
	failed=$((failed + 1))
	if [ "$qemu_rc" = 124 ] || [ "$qemu_rc" = 137 ]; then
		say "FAIL vm: timed out after ${vm_timeout}s (PASSKEYD_VM_TIMEOUT); last console lines:"
	else
		say "FAIL vm: the guest stopped before finishing (qemu exit $qemu_rc); last console lines:"
	fi
	tail -25 "$console" | sed "s/^/$tag:   /" >&2
	[ -s "$work/qemu.err" ] && sed "s/^/$tag: qemu: /" "$work/qemu.err" >&2
fi
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
