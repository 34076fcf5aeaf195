#!/bin/bash
# Runs in the VM for `test/vm/run.sh --demo` (make demo on a machine
# without /dev/uhid), chrooted into the host root like e2e.sh: the
# walkthrough of test/demo/demo.sh on the VM's /dev/uhid and TPM, with the
# binaries run.sh built. Every line goes to the console prefixed "DEMO ",
# which run.sh prints without the prefix; then "E2E PASS demo" or
# "E2E FAIL demo" and "E2E DONE".
set -u
work=$1
repo=$2
# shellcheck source=/dev/null
. "$work/env" # PASSKEYD_BIN, PASSKEYCTL_BIN, VERBOSE
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/tmp/home LC_ALL=C.UTF-8
mkdir -p "$HOME"
rc=0
PASSKEYD_BIN=$PASSKEYD_BIN PASSKEYCTL_BIN=$PASSKEYCTL_BIN VERBOSE=$VERBOSE DEMO_IN_VM=1 \
	bash "$repo/test/demo/demo.sh" 2>&1 | sed -u 's/^/DEMO /' || true
rc=${PIPESTATUS[0]}
if [ "$rc" = 0 ]; then
	echo "E2E PASS demo"
else
	echo "E2E FAIL demo: test/demo/demo.sh exited $rc"
fi
echo "E2E DONE"
