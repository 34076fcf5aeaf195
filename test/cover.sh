#!/usr/bin/env bash
# cover.sh: Go statement coverage of internal/protocol/ctap2 from its unit
# tests (black-box ones through internal/ctaptest included): the total and
# the per-function figures of the PIN, credential-management, config,
# large-blob and extension handlers. Extra `go test` flags (a build tag such
# as -tags tpmsim) come from GOTESTFLAGS. The profile is left in
# ${COVERPROFILE:-bin/ctap2.cover} for `go tool cover -html`.
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${COVERPROFILE:-bin/ctap2.cover}
mkdir -p "$(dirname "$profile")"
# shellcheck disable=SC2086 # GOTESTFLAGS is a list of flags
CGO_ENABLED=1 go test ${GOTESTFLAGS--tags tpmsim} -count=1 -coverprofile="$profile" ./internal/protocol/ctap2 >/dev/null
funcs=$(go tool cover -func="$profile")
echo "== handler functions (clientpin.go clientpin_command.go credmgmt.go config.go largeblobs.go extensions.go)"
grep -E '/(clientpin|clientpin_command|credmgmt|config|largeblobs|extensions)\.go:' <<<"$funcs" |
	sed -E 's|^.*/internal/protocol/ctap2/||' | awk '{printf "%-32s %-30s %s\n", $1, $2, $3}'
echo "== ctap2 total"
grep '^total:' <<<"$funcs" | awk '{print $NF}'
