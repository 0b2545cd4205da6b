#!/usr/bin/env bash
# Runs the Python grpcio client against a server: `tests/interop/run.sh HOST:PORT`.
# grpcio lives in its own virtual environment under target/, made on first use.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="$root/target/interop-venv"
# Tests run in parallel: one at a time makes the environment (flock, util-linux).
mkdir -p "$root/target"
(
  flock 9
  if ! "$venv/bin/python" -c "import grpc, grpc_tools" 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"
  fi
) 9>"$root/target/interop-venv.lock"
exec "$venv/bin/python" "$here/client.py" "$1" "$root/proto" "$root/tests/fixtures"
