#!/usr/bin/env bash
# Installs the packages the tests and the demo need, when missing.
# As root it uses apt; otherwise it says what to install. In CI (CI=true)
# a missing package is an error, never a silent skip.
set -euo pipefail
pkgs=()
command -v swtpm >/dev/null 2>&1 || pkgs+=(swtpm swtpm-tools)
/usr/bin/python3 -c 'import fido2' >/dev/null 2>&1 || pkgs+=(python3-fido2)
# libfido2's own verification (fido2-cred -V) of ctap2's attestation tests.
command -v fido2-cred >/dev/null 2>&1 || pkgs+=(fido2-tools)
command -v tmux >/dev/null 2>&1 || pkgs+=(tmux)
command -v pinentry-curses >/dev/null 2>&1 || pkgs+=(pinentry-curses)
[ -e /usr/include/openssl/ssl.h ] || pkgs+=(libssl-dev)
# The polkit and session tests: a private bus with python3-dbusmock on it.
command -v dbus-daemon >/dev/null 2>&1 || pkgs+=(dbus-daemon)
/usr/bin/python3 -c 'import dbusmock' >/dev/null 2>&1 || pkgs+=(python3-dbusmock)
command -v gcc >/dev/null 2>&1 || pkgs+=(gcc)
# The SimpleWebAuthn test (test/simplewebauthn_test.go runs `npm ci` itself):
# node >= 20, which @simplewebauthn/server 14 requires (Debian 12's nodejs
# is 18: the test says so; NodeSource's nodejs 20 includes npm).
command -v node >/dev/null 2>&1 || pkgs+=(nodejs)
command -v npm >/dev/null 2>&1 || pkgs+=(npm)
[ ${#pkgs[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
	echo "deps: installing ${pkgs[*]}" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get install -y -q "${pkgs[@]}" >/dev/null 2>&1 ||
		{ apt-get update -q >/dev/null && apt-get install -y -q "${pkgs[@]}" >/dev/null; }
	exit 0
fi
echo "deps: missing ${pkgs[*]}: install them (apt-get install ${pkgs[*]})" >&2
[ "${CI:-}" = true ] && exit 1
exit 0
