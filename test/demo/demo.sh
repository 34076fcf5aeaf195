#!/usr/bin/env bash
# `make demo`: passkeyd doing its main job, step by step. It starts the
# daemon as a USB security key (through /dev/uhid, keys in the TPM, or a
# private software TPM when there is none), lets the kernel create the
# /dev/hidrawN node, registers a passkey and signs in with it through
# libfido2's fido2-cred and fido2-assert (what browsers, ssh and
# systemd-cryptenroll use too), lists it with passkeyctl, and stops.
#
# Without a writable /dev/uhid (no uhid module, or not root) the same
# walkthrough runs inside a small VM: test/vm/run.sh --demo boots Debian's
# kernel under qemu with a software TPM and runs this script in it.
# test/vm/guest/e2e.sh runs this script too ("make-demo" check), so the
# e2e test proves the walkthrough.
#
#   PASSKEYD_BIN=path, PASSKEYCTL_BIN=path   use these binaries (default: build)
#   VERBOSE=1    also print the daemon's log
#   DEMO_KEEP=1  keep the temporary directory (daemon log, state)
#   DEMO_IN_VM=1 set by the VM: never start another VM
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
rp=demo.example
user=alice

say() { printf '%s\n' "$*"; }
die() {
	printf 'demo: %s\n' "$*" >&2
	exit 1
}
# step TITLE: a numbered heading.
n=0
step() {
	n=$((n + 1))
	say
	say "$n. $*"
}
# show CMD...: prints the command, runs it, prints its output indented;
# fails the demo when it fails. show_as LABEL CMD... prints LABEL instead.
show() { show_as "$*" "$@"; }
show_as() {
	say "   \$ $1"
	shift
	local out rc=0
	out=$("$@" 2>&1) || rc=$?
	[ -z "$out" ] || printf '%s\n' "$out" | sed 's/^/     /'
	[ "$rc" = 0 ] || die "$1 failed (exit status $rc)"
}

# --- Where to run ---------------------------------------------------------------
if [ ! -c /dev/uhid ] || [ ! -w /dev/uhid ]; then
	[ -z "${DEMO_IN_VM:-}" ] || die "no writable /dev/uhid in the VM"
	if [ -c /dev/uhid ]; then why="/dev/uhid is not writable for you"; else why="this machine has no /dev/uhid (the uhid kernel module is not loaded or not built)"; fi
	say "passkeyd presents a USB security key through /dev/uhid, but $why."
	say "So the demo runs inside a small virtual machine instead: Debian's kernel under"
	say "qemu, a software TPM (swtpm) as its TPM, this machine's files shared read-only."
	say "Booting it takes a minute or two; its output follows."
	exec "$root/test/vm/run.sh" --demo
fi

# --- Prerequisites ---------------------------------------------------------------
missing() {
	local m=()
	command -v fido2-token >/dev/null 2>&1 || m+=(fido2-tools)
	if [ ! -e /dev/tpmrm0 ]; then
		command -v swtpm >/dev/null 2>&1 || m+=(swtpm)
		command -v swtpm_setup >/dev/null 2>&1 || m+=(swtpm-tools)
	fi
	echo "${m[*]:-}"
}
if [ -n "$(missing)" ] && [ -z "${DEMO_IN_VM:-}" ] && [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
	pkgs=$(missing)
	say "demo: installing $pkgs ..."
	export DEBIAN_FRONTEND=noninteractive
	# shellcheck disable=SC2086
	apt-get install -y -q $pkgs >/dev/null 2>&1 ||
		{ apt-get update -q >/dev/null && apt-get install -y -q $pkgs >/dev/null; } ||
		die "apt-get install $pkgs failed"
fi
[ -z "$(missing)" ] || die "missing $(missing): install them (apt-get install $(missing))"

# --- Workspace and cleanup ---------------------------------------------------------
tmp=$(mktemp -d "${TMPDIR:-/tmp}/passkeyd-demo.XXXXXX")
pid=
cleanup() {
	local rc=$?
	if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
		kill -TERM "$pid" 2>/dev/null || true
		for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	fi
	if { [ "$rc" -ne 0 ] || [ -n "${VERBOSE:-}" ]; } && [ -s "$tmp/passkeyd.log" ]; then
		say
		say "--- the daemon's log ---"
		if [ -n "${VERBOSE:-}" ]; then cat "$tmp/passkeyd.log"; else tail -n 20 "$tmp/passkeyd.log"; fi
	fi
	if [ "${DEMO_KEEP:-}" = 1 ]; then
		say "demo: kept $tmp"
	else
		rm -rf "$tmp"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
cd "$tmp"

# --- Binaries ----------------------------------------------------------------------
bin=${PASSKEYD_BIN:-}
ctl=${PASSKEYCTL_BIN:-}
if [ -z "$bin" ] || [ -z "$ctl" ]; then
	say "Building passkeyd and passkeyctl ..."
	(cd "$root" && go build -o "$tmp/" ./cmd/passkeyd ./cmd/passkeyctl) || die "go build failed"
	bin=${bin:-$tmp/passkeyd}
	ctl=${ctl:-$tmp/passkeyctl}
fi

# find_hidraw: the hidraw node of passkeyd's device (USB 1209:7A55).
find_hidraw() {
	local u
	for u in /sys/class/hidraw/hidraw*/device/uevent; do
		[ -e "$u" ] || continue
		if grep -qi '^HID_ID=0003:00001209:00007A55$' "$u"; then
			u=${u#/sys/class/hidraw/}
			echo "/dev/${u%%/*}"
			return 0
		fi
	done
	return 1
}
[ -z "$(find_hidraw)" ] || die "a passkeyd key is already plugged in ($(find_hidraw)); stop that daemon first"

say "passkeyd demo: a FIDO2 security key whose keys live in the TPM."
say "Every step below is what a browser, ssh or systemd-cryptenroll does with a USB"
say "security key, here with libfido2's command-line tools."

# --- 1. The daemon ------------------------------------------------------------------
step "Start passkeyd. It creates a USB security key through /dev/uhid. In this demo"
say "   every request is approved automatically (--prompt approve-all); normally"
say "   you confirm each one, and type the key's PIN, in a prompt on your desktop."
say "   \$ passkeyd serve --transport uhid --tpm device-or-swtpm --prompt approve-all ..."
mkdir -m 0700 "$tmp/state"
"$bin" serve --state-dir "$tmp/state" --tpm device-or-swtpm --transport uhid --prompt approve-all \
	--control "$tmp/control.sock" --owner "$(id -u)" --log-level info 2>"$tmp/passkeyd.log" &
pid=$!
hidraw=
for _ in $(seq 150); do
	kill -0 "$pid" 2>/dev/null || { wait "$pid" || true; die "passkeyd exited during start-up: $(tail -n 3 "$tmp/passkeyd.log")"; }
	hidraw=$(find_hidraw) && [ -c "$hidraw" ] && break
	hidraw=
	sleep 0.1
done
[ -n "$hidraw" ] || die "no hidraw node for passkeyd's key after 15 s"
tpm=$(sed -n 's/.*msg="TPM ready" kind=\([^ ]*\).*/\1/p' "$tmp/passkeyd.log" | head -1)
case $tpm in
device:*) tpm="the TPM at ${tpm#device:}" ;;
swtpm*) tpm="a private software TPM (swtpm; this machine has no usable TPM: a copy of its state dir would be a copy of your passkeys)" ;;
"") tpm="the TPM" ;;
esac
say "   passkeyd is running; its keys are made and used inside $tpm."

step "The kernel saw a new USB security key plugged in and created $hidraw for it:"
uevent=/sys/class/hidraw/${hidraw#/dev/}/device/uevent
sed -n 's/^HID_ID=/     bus:vendor:product  /p; s/^HID_NAME=/     name                /p' "$uevent"

step "libfido2 lists the security keys it finds (as browsers and ssh do):"
show fido2-token -L

# --- 2. Registration --------------------------------------------------------------
step "Register a passkey for the website $rp, user $user. The website sends a"
say "   challenge; fido2-cred hands its hash, the site's name and the user to the key,"
say "   which makes a new key pair in the TPM and signs the result (attestation)."
printf '%s\n%s\n%s\n%s\n' "$(head -c 32 /dev/urandom | base64 -w0)" "$rp" "$user" "$(head -c 16 /dev/urandom | base64 -w0)" >cred.in
show fido2-cred -M -r -i cred.in -o cred.out "$hidraw" es256
say "     new credential ID: $(sed -n 5p cred.out | cut -c1-24)..."

step "The website checks that registration (fido2-cred -V) and keeps the public key:"
show fido2-cred -V -i cred.out -o cred.pub es256
sed -n '2,$p' cred.pub | sed 's/^/     /'

# --- 3. Sign-in --------------------------------------------------------------------
step "Sign in to $rp: a new challenge, signed by the passkey's private key in the TPM:"
printf '%s\n%s\n%s\n' "$(head -c 32 /dev/urandom | base64 -w0)" "$rp" "$(sed -n 5p cred.out)" >assert.in
show fido2-assert -G -p -i assert.in -o assert.out "$hidraw"
say "     signature: $(sed -n 4p assert.out | cut -c1-24)..."

step "The website verifies the signature with the public key it kept (fido2-assert -V):"
show fido2-assert -V -p -i assert.out cred.pub es256
say "     signature valid: $user is signed in to $rp."

# --- 4. Management -------------------------------------------------------------------
step "passkeyctl lists the passkeys passkeyd holds (a discoverable credential, so"
say "   the key itself remembers the site and the user):"
show_as "passkeyctl list" "$ctl" --control "$tmp/control.sock" list

# --- 5. Stop -------------------------------------------------------------------------
step "Stop passkeyd: the key is unplugged and $hidraw disappears."
kill -TERM "$pid"
status=0
wait "$pid" || status=$?
pid=
[ "$status" -eq 0 ] || die "passkeyd exited with status $status after SIGTERM"
for _ in $(seq 50); do [ -e "$hidraw" ] || break; sleep 0.1; done
[ ! -e "$hidraw" ] || die "$hidraw is still there after passkeyd stopped"
say "   passkeyd stopped; $hidraw is gone. The demo's keys and state are removed."
