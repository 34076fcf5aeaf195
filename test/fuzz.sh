#!/usr/bin/env bash
# Runs every Go fuzz target for a bounded time each (default 20s).
set -euo pipefail
cd "$(dirname "$0")/.."
# Test flags from the Makefile (GOTESTFLAGS: the tpmsim tag, which compiles
# in the TPM simulator); run on its own, the same. cgo: the simulator is C.
read -ra testflags <<<"${GOTESTFLAGS--tags tpmsim}"
export CGO_ENABLED=1
t=${1:-20s}
for pkg in $(go list ./...); do
	dir=$(go list -f '{{.Dir}}' "$pkg")
	for target in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/^func //'); do
		echo "== $pkg $target ($t)"
		go test "${testflags[@]}" -run '^$' -fuzz "^${target}\$" -fuzztime "$t" "$pkg"
	done
done
