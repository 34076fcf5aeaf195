#!/usr/bin/env bash
# make bench: CTAP operations end to end through CTAPHID, next to the TPM
# floor for the same work measured in the same run (x-floor = ratio of
# medians), the TPM commands each operation costs at the TPM through the
# kernel's resource manager (counted in the VM, test/vm/tpmcount.sh, with a
# modelled real-TPM latency), the 10,000-credential scale run (in process,
# then a passkeyd process's peak RSS: rss-*-MB, VmHWM), then the TPM and
# store micro-benchmarks. PASSKEYD_BENCH_SCALE_DIR=DIR keeps the scale run's
# filled state dir for the next run.
set -euo pipefail
cd "$(dirname "$0")/.."
# Test flags from the Makefile (GOTESTFLAGS: the tpmsim tag, which compiles
# in the TPM simulator); run on its own, the same. cgo: the simulator is C.
read -ra testflags <<<"${GOTESTFLAGS--tags tpmsim}"
export CGO_ENABLED=1
n=${BENCH_N:-300x}
echo "== end to end vs TPM floor (swtpm; x-floor = median / floor median)"
go test "${testflags[@]}" -run '^$' -bench 'GetAssertion|MakeCredential' -benchtime "$n" ./test/bench/ | grep -E '^Benchmark'
echo "== TPM commands per operation at the TPM through /dev/tpmrm0 (VM: swtpm's command log, the kernel resource manager's"
echo "   ContextSave/ContextLoad/FlushContext included; model-ms is a MODEL of a real TPM's time, not a measurement:"
echo "   Sign 200 ms (Chrome field data p50), CreatePrimary 240 ms (systemd), the rest assumed: test/vm/tpmcount.sh)"
# One VM at a time on this machine (the lock every VM run takes).
rc=0
flock /tmp/passkeyd-vm.lock test/vm/tpmcount.sh || rc=$?
case $rc in
0) ;;
77) echo "(skipped: the VM's prerequisites are missing)" ;;
*) echo "(the VM count failed: exit $rc)" ;;
esac
echo "== scale: 10,000 discoverable credentials over 1,000 RPs"
go test "${testflags[@]}" -run '^$' -bench 'Scale' -benchtime 5x -timeout 20m ./test/bench/ | grep -E '^Benchmark'
echo "== TPM floors and store"
go test "${testflags[@]}" -run '^$' -bench . -benchtime "$n" ./internal/hardware/tpm/ ./internal/hardware/keystore/ | grep -E '^Benchmark'
