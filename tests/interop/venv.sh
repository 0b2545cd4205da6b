# Sourced by run.sh, grpcurl.sh and buf.sh: makes $venv, the interop virtual environment
# under target/ (grpcio, grpcio-tools, grpcurl, buf), on first use. Tests run in parallel,
# so one at a time makes it (flock, util-linux).
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="$root/target/interop-venv"
mkdir -p "$root/target"
(
  flock 9
  if ! [ -x "$venv/bin/grpcurl" ] || ! [ -x "$venv/bin/buf" ] || ! "$venv/bin/python" -c "import grpc, grpc_tools" 2>/dev/null; then
    [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"
  fi
) 9>"$root/target/interop-venv.lock"
