#!/usr/bin/env bash
# Installs every protoc plugin that buf.gen.yaml runs, at pinned versions, into
# a cache directory (default: .cache/plugins in the repository; gitignored).
#
# buf's remote plugins are not used: each plugin comes from its own language's
# package registry (PyPI, the Go module proxy, Maven Central, npm), so
# generation works on a machine that reaches only those. The script is
# idempotent: a plugin already present at its pinned version is left alone,
# and a changed pin installs next to the old one (the version is part of the
# file or directory name), so switching branches never mixes versions.
#
# Usage: tools/install-plugins.sh [CACHE_DIR]
# Prints the directory to put first on PATH when it is done (CACHE_DIR/bin).
set -euo pipefail

# ---- Pinned versions: change them here, then run `make stubs` and commit. ----
# Python: grpcio-tools bundles protoc 35.1 and the Python/.pyi/grpc generators.
# Its gencode needs protobuf>=7.35.1 and grpcio>=1.85.0 at run time
# (tests/test_stub_compat.py holds pyproject.toml to that).
GRPCIO_TOOLS_VERSION=1.85.0
# Go: messages (google.golang.org/protobuf) and services (grpc-go's generator).
PROTOC_GEN_GO_VERSION=v1.36.12
PROTOC_GEN_GO_GRPC_VERSION=v1.6.2
# Java: protoc's built-in Java generator (runtime protobuf-java 4.35.1, same
# release) and grpc-java's generator. 1.83.1 is the newest grpc-java generator
# whose linux-x86_64 executable Maven Central serves; generated code from it
# runs on the newer grpc-java runtime the client pom pins (1.85.1).
PROTOC_VERSION=4.35.1
PROTOC_GEN_GRPC_JAVA_VERSION=1.83.1
# TypeScript: ts-proto and buf itself are pinned in tools/package.json and
# installed by `npm ci --prefix tools` (see mk/stubs.mk).

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${1:-${ROOT}/.cache/plugins}"
mkdir -p "${CACHE}"
CACHE="$(cd "${CACHE}" && pwd)"
BIN="${CACHE}/bin"
mkdir -p "${BIN}"

# say: a progress line for work being done; note: what is already in place, only when VERBOSE=1.
WORKED=0
say() { WORKED=1; printf 'install-plugins: %s\n' "$*"; }
note() { [[ "${VERBOSE:-0}" == 1 ]] && say "$@"; return 0; }

case "$(uname -s)-$(uname -m)" in
  Linux-x86_64) MAVEN_CLASSIFIER=linux-x86_64 ;;
  Linux-aarch64) MAVEN_CLASSIFIER=linux-aarch_64 ;;
  Darwin-x86_64) MAVEN_CLASSIFIER=osx-x86_64 ;;
  Darwin-arm64) MAVEN_CLASSIFIER=osx-aarch_64 ;;
  *) echo "install-plugins: unsupported platform $(uname -s)-$(uname -m)" >&2; exit 1 ;;
esac

# link NAME TARGET: makes BIN/NAME point at TARGET (relative, so the cache can move).
link() {
  local name="$1" target="$2"
  if [[ "$(readlink "${BIN}/${name}" 2>/dev/null || true)" != "${target}" ]]; then
    ln -sfn "${target}" "${BIN}/${name}"
    note "bin/${name} -> ${target}"
  fi
}

# ---- Python: a private virtualenv with the pinned grpcio-tools. ----
# buf.gen.yaml runs `python3 tools/protoc_gen_python_grpcio.py`; mk/stubs.mk puts
# this venv's bin/ first on PATH so that `python3` is this interpreter.
PY_VENV="${CACHE}/python-grpcio-tools-${GRPCIO_TOOLS_VERSION}"
if [[ -x "${PY_VENV}/bin/python3" ]] \
  && "${PY_VENV}/bin/python3" -c "import importlib.metadata as m, sys; sys.exit(m.version('grpcio-tools') != '${GRPCIO_TOOLS_VERSION}')" 2>/dev/null; then
  note "grpcio-tools ${GRPCIO_TOOLS_VERSION}: present"
else
  say "grpcio-tools ${GRPCIO_TOOLS_VERSION}: creating ${PY_VENV}"
  rm -rf "${PY_VENV}"
  python3 -m venv "${PY_VENV}"
  "${PY_VENV}/bin/python3" -m pip install --quiet --disable-pip-version-check \
    "grpcio-tools==${GRPCIO_TOOLS_VERSION}"
fi
ln -sfn "python-grpcio-tools-${GRPCIO_TOOLS_VERSION}" "${CACHE}/python"

# ---- Go: `go install` into a versioned GOBIN, then link into bin/. ----
go_plugin() {
  local name="$1" pkg="$2" version="$3"
  local dir="${CACHE}/go/${name}-${version}"
  if [[ -x "${dir}/${name}" ]]; then
    note "${name} ${version}: present"
  else
    command -v go >/dev/null || { echo "install-plugins: go is required for ${name}" >&2; exit 1; }
    say "${name} ${version}: go install ${pkg}@${version}"
    mkdir -p "${dir}"
    # One "go: downloading" line per module is noise: show it only when the install fails.
    local out
    if ! out="$(GOBIN="${dir}" GOFLAGS=-mod=mod go install "${pkg}@${version}" 2>&1)"; then
      printf '%s\n' "${out}" >&2
      echo "install-plugins: go install ${pkg}@${version} failed" >&2
      exit 1
    fi
  fi
  link "${name}" "../go/${name}-${version}/${name}"
}
go_plugin protoc-gen-go google.golang.org/protobuf/cmd/protoc-gen-go "${PROTOC_GEN_GO_VERSION}"
go_plugin protoc-gen-go-grpc google.golang.org/grpc/cmd/protoc-gen-go-grpc "${PROTOC_GEN_GO_GRPC_VERSION}"

# ---- Java: native executables published on Maven Central. ----
maven_exe() {
  local name="$1" coords="$2" version="$3"
  local file="${CACHE}/maven/${name}-${version}-${MAVEN_CLASSIFIER}.exe"
  if [[ -x "${file}" ]]; then
    note "${name} ${version}: present"
  else
    command -v mvn >/dev/null || { echo "install-plugins: mvn is required for ${name}" >&2; exit 1; }
    say "${name} ${version}: mvn dependency:copy ${coords}:${version}:exe:${MAVEN_CLASSIFIER}"
    mkdir -p "${CACHE}/maven"
    # Maven's output is shown only when it fails (it is noise otherwise).
    local out
    if ! out="$(mvn -B -q -Dstyle.color=never \
      org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy \
      "-Dartifact=${coords}:${version}:exe:${MAVEN_CLASSIFIER}" \
      "-DoutputDirectory=${CACHE}/maven" -Dmdep.overWriteReleases=true 2>&1)"; then
      printf '%s\n' "${out}" >&2
      echo "install-plugins: could not fetch ${coords}:${version}:exe:${MAVEN_CLASSIFIER} from Maven Central" >&2
      exit 1
    fi
    chmod +x "${file}"
  fi
  link "${name}" "../maven/$(basename "${file}")"
}
maven_exe protoc com.google.protobuf:protoc "${PROTOC_VERSION}"
maven_exe protoc-gen-grpc-java io.grpc:protoc-gen-grpc-java "${PROTOC_GEN_GRPC_JAVA_VERSION}"

if [[ "${WORKED}" == 1 ]]; then say "done; plugins are in ${BIN}"; fi
