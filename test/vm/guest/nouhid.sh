#!/bin/bash
# Runs in the VM, chrooted into the host root, before the uhid module is
# loaded: passkeyd must fail with one line that names the fix.
set -u
work=$1
# shellcheck source=/dev/null
. "$work/env"

out=$(timeout 60 "$PASSKEYD_BIN" serve --tpm sim --transport uhid --state-dir /tmp/nouhid --prompt deny --control '' --log-level error 2>&1)
rc=$?
want='passkeyd: open /dev/uhid: no such file or directory: load the uhid kernel module (modprobe uhid'
if [ "$rc" = 1 ] && [ "$(printf '%s\n' "$out" | wc -l)" = 1 ] && [[ $out == "$want"* ]]; then
	echo "E2E PASS uhid-missing-module-error"
else
	echo "E2E FAIL uhid-missing-module-error: exit $rc, output: $(printf '%s' "$out" | tr '\n' '|')"
fi
