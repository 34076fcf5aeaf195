#!/bin/bash
# Shared by test/vm/run.sh (the quick e2e VM: busybox init chrooting into
# the host root) and test/vm/system.sh (a booted system: the host root as
# the lower layer of an overlay, systemd as PID 1). Sourced, not run.
#
# The caller sets before sourcing: tag (prefix of its messages), and
# defines missing_pkgs (prints the apt packages it lacks). Then, in order:
#   vm_prereqs            install what missing_pkgs lists (root + apt) or
#                         report it missing (CI: failure, else exit 77)
#   vm_kernel             Debian's current kernel, cached in test/vm/cache:
#                         sets kdir, vmlinuz, kver
#   vm_workdir            $work under /var/tmp (the guest sees it), removed
#                         on exit unless PASSKEYD_VM_KEEP=1
#   vm_initramfs INIT M.. static busybox, INIT as /init, modules M.. and
#                         their dependencies (in load order in
#                         /modules/order): $work/initrd.gz
#   vm_swtpm              swtpm as the guest's TPM ($work/tpm/ctrl); with
#                         PASSKEYD_VM_SWTPM_LOG=PATH it logs every command
#                         and response it executes to PATH (level 20)
#   vm_qemu TIMEOUT APPEND [QEMU ARGS..]
#                         the VM, the console to stdout (\r removed) and to
#                         $work/console.log; qemu's exit status in
#                         $work/qemu.rc (vm_qemu usually runs in a pipeline)
# Prerequisite and fatal errors: missing, die.
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=$here/cache
start=$(date +%s.%N)

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

vm_prereqs() {
	local pkgs
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
}

# The package linux-image-amd64 currently points at; a cached one when apt
# cannot say (offline).
vm_kernel() {
	local kpkg debs deb vmlinuzes
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
}

# Not under /tmp: the guest mounts its own tmpfs there, and reads this
# directory through the host root.
swtpm_pid=
vm_workdir() {
	work=$(mktemp -d /var/tmp/passkeyd-vm.XXXXXX)
	chmod 0755 "$work"
	trap vm_cleanup EXIT
}
vm_cleanup() {
	if [ -n "$swtpm_pid" ]; then kill "$swtpm_pid" 2>/dev/null || true; fi
	if [ "${PASSKEYD_VM_KEEP:-}" = 1 ]; then
		say "kept $work"
	else
		rm -rf "$work"
	fi
}

# No modinfo/depmod needed: dependencies come from each module's
# "depends=" field, loaded in dependency order.
vm_initramfs() {
	local init=$1 m
	shift
	declare -A kopath=() seen=()
	local order=() f n
	while IFS= read -r f; do
		n=${f##*/}
		n=${n%.ko}
		kopath[${n//-/_}]=$f
	done < <(find "$kdir/lib/modules/$kver" -name '*.ko')
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
	for m in "$@"; do add_module "$m"; done

	local ird=$work/initramfs
	mkdir -p "$ird/bin" "$ird/modules"
	cp /bin/busybox "$ird/bin/busybox"
	cp "$init" "$ird/init"
	chmod 0755 "$ird/init"
	for m in "${order[@]}"; do cp "${kopath[$m]}" "$ird/modules/$m.ko"; done
	printf '%s\n' "${order[@]}" >"$ird/modules/order"
	(cd "$ird" && find . | cpio -o -H newc --quiet | gzip -1) >"$work/initrd.gz"
}

vm_swtpm() {
	mkdir -p "$work/tpm"
	swtpm_setup --tpm2 --tpmstate "$work/tpm" --overwrite >"$work/swtpm_setup.log" 2>&1 ||
		die "swtpm_setup failed: $(tail -3 "$work/swtpm_setup.log")"
	local log=file="$work/swtpm.log",level=1
	# Level 20: one "SWTPM_IO_Read" (the command's bytes) and one
	# "SWTPM_IO_Write" (the response's) per command executed
	# (test/vm/tpmcount.sh counts them).
	[ -n "${PASSKEYD_VM_SWTPM_LOG:-}" ] && log=file="$PASSKEYD_VM_SWTPM_LOG",level=20
	swtpm socket --tpm2 --tpmstate dir="$work/tpm" --ctrl type=unixio,path="$work/tpm/ctrl" \
		--terminate --log "$log" &
	swtpm_pid=$!
	for _ in $(seq 1 100); do
		[ -S "$work/tpm/ctrl" ] && break
		sleep 0.05
	done
	[ -S "$work/tpm/ctrl" ] || die "swtpm did not create its control socket"
}

# vm_qemu TIMEOUT APPEND [QEMU ARGS..]: the host root over 9p (read-only),
# swtpm as tpm-tis, the serial console on stdout. cryptomgr.notests: the
# kernel's crypto self-tests cost boot time under TCG, and once hung the
# boot for good (a soft lockup in cryptomgr_test).
vm_qemu() {
	local secs=$1 append=$2
	shift 2
	set +e
	timeout -k 10 "$secs" qemu-system-x86_64 \
		-accel tcg -cpu max -smp 2 -m 2048 \
		-display none -monitor none -serial stdio -no-reboot \
		-kernel "$vmlinuz" -initrd "$work/initrd.gz" \
		-append "console=ttyS0 panic=-1 cryptomgr.notests=1 $append" \
		-virtfs local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap \
		-chardev socket,id=chrtpm,path="$work/tpm/ctrl" -tpmdev emulator,id=tpm0,chardev=chrtpm \
		-device tpm-tis,tpmdev=tpm0 "$@" \
		</dev/null 2>"$work/qemu.err" | stdbuf -oL tr -d '\r' | tee "$work/console.log"
	echo "${PIPESTATUS[0]}" >"$work/qemu.rc"
	set -e
}

# vm_tally CONSOLE N: sets passed and failed from the guest's E2E lines; a
# run that never printed "E2E DONE" (timed out after $vm_timeout, or the
# guest stopped: $qemu_rc) is one more failure, reported with the last N
# console lines and qemu's errors ($work/qemu.err).
vm_tally() {
	local console=$1 n=$2
	passed=$(grep -c '^E2E PASS ' "$console" || true)
	failed=$(grep -c '^E2E FAIL ' "$console" || true)
	# Once more at the end, where a log cut to its head and tail keeps
	# them (CI's report of a long run drops the middle).
	grep -a '^E2E FAIL ' "$console" | cut -c1-400 | sed "s/^/$tag: failed: /" >&2 || true
	if ! grep -q '^E2E DONE' "$console"; then
		failed=$((failed + 1))
		if [ "$qemu_rc" = 124 ] || [ "$qemu_rc" = 137 ]; then
			say "FAIL vm: timed out after ${vm_timeout}s (PASSKEYD_VM_TIMEOUT); last console lines:"
		else
			say "FAIL vm: the guest stopped before finishing (qemu exit $qemu_rc); last console lines:"
		fi
		tail -"$n" "$console" | sed "s/^/$tag:   /" >&2
		if [ -s "$work/qemu.err" ]; then sed "s/^/$tag: qemu: /" "$work/qemu.err" >&2; fi
	fi
}
