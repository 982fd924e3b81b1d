#!/usr/bin/env bash
# Fails when the contract in the working tree breaks the wire or JSON form of
# an earlier published contract (buf breaking, rules from buf.yaml: WIRE_JSON).
#
# The baseline, first match wins:
#   1. $BREAKING_AGAINST, any buf input (e.g. `.git#tag=v1.2.0`, a directory);
#   2. the newest release tag (v*) before HEAD: the last released contract;
#   3. off main (a feature branch): the commit where it forked from main;
#   4. on main with no release yet: the first commit that holds the contract.
#      datafly.bluecore.v1 is a published version, so everything committed
#      since it appeared must stay compatible with it; comparing against the
#      parent commit alone would miss a break made earlier in a series of
#      commits. To accept an intended break before a release, tag the release
#      (or set BREAKING_AGAINST) and say why in docs/decisions.md.
# When no baseline exists at all (the contract is not committed yet) the
# script says so and succeeds: there is no earlier contract to break.
#
# The baseline's proto/ and buf.yaml are taken with `git archive` into a
# scratch directory, so this works in any clone (no remote, no network) as
# long as the history is not shallow.
#
# Usage: tools/proto-breaking.sh BUF [SCRATCH_DIR]
set -euo pipefail

BUF="${1:?usage: tools/proto-breaking.sh BUF [SCRATCH_DIR]}"
SCRATCH="${2:-.cache/proto-breaking}"
PROTO_DIR=proto

say() { printf 'proto-breaking: %s\n' "$*"; }

if [[ -n "${BREAKING_AGAINST:-}" ]]; then
  say "baseline: BREAKING_AGAINST=${BREAKING_AGAINST}"
  exec "${BUF}" breaking --against "${BREAKING_AGAINST}"
fi

if ! git rev-parse --verify --quiet HEAD >/dev/null; then
  say "no commit yet, so no earlier contract exists to compare with; nothing to check."
  exit 0
fi
if [[ "$(git rev-parse --is-shallow-repository)" == "true" ]]; then
  echo "proto-breaking: this clone is shallow; fetch the history (git fetch --unshallow) so the baseline can be found" >&2
  exit 1
fi

base="" why=""
# 2. The last release before this commit (HEAD itself may be the release being made).
if git rev-parse --verify --quiet HEAD^ >/dev/null; then
  tag="$(git describe --tags --abbrev=0 --match 'v[0-9]*' HEAD^ 2>/dev/null || true)"
  if [[ -n "${tag}" ]]; then
    base="$(git rev-list -n 1 "${tag}")" why="last release tag ${tag}"
  fi
fi
# 3. A branch other than main: where it forked from main.
if [[ -z "${base}" ]]; then
  branch="$(git symbolic-ref --quiet --short HEAD || true)"
  if [[ "${branch}" != "main" ]]; then
    for main_ref in main origin/main; do
      if git rev-parse --verify --quiet "${main_ref}" >/dev/null; then
        fork="$(git merge-base HEAD "${main_ref}" || true)"
        if [[ -n "${fork}" && "${fork}" != "$(git rev-parse HEAD)" ]]; then
          base="${fork}" why="fork point from ${main_ref}"
        fi
        break
      fi
    done
  fi
fi
# 4. The first commit that holds the contract.
if [[ -z "${base}" ]]; then
  # No `| head` here: with pipefail, git's SIGPIPE would end the script.
  first="$(git rev-list --reverse HEAD -- "${PROTO_DIR}")"
  first="${first%%$'\n'*}"
  if [[ -z "${first}" ]]; then
    say "no commit holds ${PROTO_DIR}/ yet, so no earlier contract exists to compare with; nothing to check."
    exit 0
  fi
  base="${first}" why="first commit of the contract (no release tag yet)"
fi

if ! git cat-file -e "${base}:${PROTO_DIR}" 2>/dev/null; then
  say "the baseline $(git rev-parse --short "${base}") (${why}) has no ${PROTO_DIR}/; nothing to compare with."
  exit 0
fi

rm -rf "${SCRATCH}"
mkdir -p "${SCRATCH}"
paths=("${PROTO_DIR}")
if git cat-file -e "${base}:buf.yaml" 2>/dev/null; then
  paths+=(buf.yaml)
fi
git archive "${base}" "${paths[@]}" | tar -x -C "${SCRATCH}"
against="${SCRATCH}"
[[ -f "${SCRATCH}/buf.yaml" ]] || against="${SCRATCH}/${PROTO_DIR}"

if [[ "$(git rev-parse "${base}")" == "$(git rev-parse HEAD)" ]]; then
  why="${why}; that is HEAD itself, so only uncommitted changes can break it"
fi
say "comparing the working tree with $(git rev-parse --short "${base}") (${why})"
if ! "${BUF}" breaking --against "${against}"; then
  say "the change above breaks clients built against $(git rev-parse --short "${base}") (${why})."
  say "Add new fields, messages or RPCs instead of changing or removing old ones (reserve what you remove)."
  exit 1
fi
say "no wire- or JSON-breaking change"
