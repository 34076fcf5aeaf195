#!/bin/bash
# Prints the package version, valid for Debian and RPM, derived from git:
#   HEAD tagged vX.Y.Z      -> X.Y.Z
#   after a tag vX.Y.Z      -> X.Y.Z+gitYYYYMMDD.HASH   (sorts after X.Y.Z)
#   no tag                  -> 0.0~gitYYYYMMDD.HASH
# with ".dirty" appended when the work tree has uncommitted changes.
# YYYYMMDD is HEAD's commit date (UTC), so versions of later commits sort
# later. Without git: 0.0~unknown. Override with make deb VERSION=...
set -euo pipefail
cd "$(dirname "$0")/.."
if ! git rev-parse --verify -q HEAD >/dev/null 2>&1; then
	echo 0.0~unknown
	exit 0
fi
date=$(TZ=UTC git log -1 --format=%cd --date=format-local:%Y%m%d)
hash=$(git rev-parse --short=7 HEAD)
dirty=
git diff --quiet HEAD 2>/dev/null || dirty=.dirty
if tag=$(git describe --tags --exact-match --match 'v[0-9]*' 2>/dev/null); then
	echo "${tag#v}$dirty"
elif tag=$(git describe --tags --abbrev=0 --match 'v[0-9]*' 2>/dev/null); then
	echo "${tag#v}+git$date.$hash$dirty"
else
	echo "0.0~git$date.$hash$dirty"
fi
