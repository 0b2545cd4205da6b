#!/usr/bin/env bash
# Runs drive.mjs with the given arguments in Debian's Chromium. On first use it installs
# what it needs: Chromium from Debian (when missing and run as root; .ci/run installs it
# beforehand) and playwright-core from npm into node_modules/ here. Tests run in
# parallel, so one at a time installs (flock, util-linux).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
chromium="${CHROMIUM:-/usr/bin/chromium}"
(
  flock 9
  if ! [ -x "$chromium" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      export DEBIAN_FRONTEND=noninteractive
      { apt-get install -y -qq chromium || { apt-get update -qq && apt-get install -y -qq chromium; }; } >&2
    else
      echo "no Chromium at $chromium: install Debian's chromium package, or set CHROMIUM" >&2
      exit 1
    fi
  fi
  if ! [ -d "$here/node_modules/playwright-core" ]; then
    npm ci --silent --prefix "$here" >&2
  fi
) 9>"$here/.install.lock"
exec node "$here/drive.mjs" "$@"
