#!/bin/bash
# Builds passkeyd's packages with nfpm (packaging/nfpm.yaml): make deb,
# make rpm. Usage: packaging/build.sh deb|rpm [OUTDIR]   (default: .)
#
# The binaries are built static (CGO_ENABLED=0: the production daemon
# needs no cgo; only the in-process TPM simulator of the tests does),
# stamped with VERSION (default: packaging/version.sh). Shell completions
# and manual pages come from the binaries themselves. Everything generated
# goes to build/pkg; nothing generated is committed.
#
# nfpm runs as a Go tool at a fixed version (go run ...@v2.45.2, from the
# Go module proxy), so it is not a dependency of the main module.
set -euo pipefail
cd "$(dirname "$0")/.."
packager=${1:?usage: packaging/build.sh deb|rpm [OUTDIR]}
outdir=${2:-.}
case $packager in deb | rpm) ;; *)
	echo "usage: packaging/build.sh deb|rpm [OUTDIR]" >&2
	exit 2
	;;
esac
GO=${GO:-go}
NFPM=${NFPM:-github.com/goreleaser/nfpm/v2/cmd/nfpm@v2.45.2}
VERSION=${VERSION:-$(packaging/version.sh)}
export VERSION
# Reproducible dates in the manual pages.
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}
export SOURCE_DATE_EPOCH

b=build/pkg
# PKG_REUSE=1 packages what the previous run built (the system test makes
# a second, higher-versioned package of the same binaries for its upgrade).
if [ "${PKG_REUSE:-}" != 1 ] || [ ! -x "$b/passkeyd" ]; then
	rm -rf "$b"
	mkdir -p "$b/completions" "$b/man"
	CGO_ENABLED=0 "$GO" build -trimpath \
		-ldflags "-X github.com/passkeyd/passkeyd/internal/buildinfo.Version=$VERSION" \
		-o "$b/" ./cmd/passkeyd ./cmd/passkeyctl
	for cmd in passkeyd passkeyctl; do
		"$b/$cmd" completion bash >"$b/completions/$cmd.bash"
		"$b/$cmd" completion zsh >"$b/completions/_$cmd"
		"$b/$cmd" completion fish >"$b/completions/$cmd.fish"
		"$b/$cmd" man "$b/man"
	done
	gzip -n -9 "$b"/man/*.1
fi

mkdir -p "$outdir"
"$GO" run "$NFPM" package --config packaging/nfpm.yaml --packager "$packager" --target "$outdir/" >&2
case $packager in
deb) f=$outdir/passkeyd_${VERSION}_amd64.deb ;;
rpm) f=$(ls -t "$outdir"/passkeyd-*.rpm | head -1) ;;
esac
[ -f "$f" ] || {
	echo "build.sh: nfpm wrote no $f" >&2
	exit 1
}
echo "$f"
