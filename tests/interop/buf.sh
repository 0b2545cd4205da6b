#!/usr/bin/env bash
# Runs buf (from PyPI's buf-bin) with the given arguments, from the repository root.
set -euo pipefail
source "$(dirname "$0")/venv.sh"
cd "$root"
exec "$venv/bin/buf" "$@"
