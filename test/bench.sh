#!/usr/bin/env bash
# make bench: CTAP operations end to end through CTAPHID, next to the TPM
# floor for the same work measured in the same run (x-floor = ratio of
# medians), the 10,000-credential scale run (in process, then a passkeyd
# process's peak RSS: rss-*-MB, VmHWM), then the TPM and store
# micro-benchmarks. PASSKEYD_BENCH_SCALE_DIR=DIR keeps the scale run's
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
echo "== scale: 10,000 discoverable credentials over 1,000 RPs"
go test "${testflags[@]}" -run '^$' -bench 'Scale' -benchtime 5x -timeout 20m ./test/bench/ | grep -E '^Benchmark'
echo "== TPM floors and store"
go test "${testflags[@]}" -run '^$' -bench . -benchtime "$n" ./internal/hardware/tpm/ ./internal/hardware/keystore/ | grep -E '^Benchmark'
