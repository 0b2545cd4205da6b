#!/usr/bin/env bash
# Runs the Python grpcio client against a server: `tests/interop/run.sh HOST:PORT`.
set -euo pipefail
source "$(dirname "$0")/venv.sh"
exec "$venv/bin/python" "$here/client.py" "$1" "$root/proto" "$root/tests/fixtures"
