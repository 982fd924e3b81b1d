#!/usr/bin/env bash
# Builds ghz (the gRPC load tool, github.com/bojand/ghz) at a pinned release into the repo's
# tool cache, once: .cache/tools/ghz-<version>/ghz. bench/run.py --ghz uses it.
# Needs Go (1.18 or newer) and the Go module proxy; prints the binary's path on success.
set -euo pipefail

GHZ_VERSION="${GHZ_VERSION:-v0.120.0}"
root="$(cd "$(dirname "$0")/.." && pwd)"
dest="$root/.cache/tools/ghz-$GHZ_VERSION"

if [[ -x "$dest/ghz" ]]; then
  echo "$dest/ghz"
  exit 0
fi
if ! command -v go >/dev/null; then
  echo "install-ghz: Go is not installed; cannot build ghz $GHZ_VERSION" >&2
  exit 1
fi
echo "==> building ghz $GHZ_VERSION into ${dest#"$root"/} (go install, a few minutes the first time)" >&2
mkdir -p "$dest"
# GOFLAGS from the caller (e.g. -mod=vendor) must not leak into a build outside any module.
# -X main.version: `ghz --version` then names the release instead of "dev".
GOBIN="$dest" GOFLAGS=-buildvcs=false \
  go install -ldflags="-X main.version=$GHZ_VERSION" "github.com/bojand/ghz/cmd/ghz@$GHZ_VERSION" >&2
"$dest/ghz" --version >&2
echo "$dest/ghz"
