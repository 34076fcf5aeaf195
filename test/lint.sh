#!/usr/bin/env bash
# gofmt, go vet and staticcheck; fails on any finding.
set -euo pipefail
cd "$(dirname "$0")/.."
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then
	echo "gofmt would change:" >&2
	echo "$unformatted" >&2
	exit 1
fi
# Both builds: the production one, and the test one with the TPM simulator
# (tag tpmsim), so that both sim.go and nosim.go are checked.
staticcheck=$(go env GOPATH)/bin/staticcheck
if [ ! -x "$staticcheck" ]; then
	go install honnef.co/go/tools/cmd/staticcheck@v0.8.2
fi
for tags in '' tpmsim; do
	go vet -tags "$tags" ./...
	"$staticcheck" -tags "$tags" ./...
done
echo "lint: clean"
