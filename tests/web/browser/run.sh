#!/usr/bin/env bash
# Runs a driver here (drive.mjs in Chromium, firefox.mjs in Firefox) with the given
# arguments. On first use it installs what it needs: the browser from Debian (when
# missing and run as root; .ci/run installs both beforehand) and playwright-core and
# puppeteer-core from npm into node_modules/ here. Tests run in parallel, so one at a
# time installs (flock, util-linux).
#
# run.sh drive.mjs|firefox.mjs ARGS...
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
driver="$1"
shift
case "$driver" in
  drive.mjs) browser="${CHROMIUM:-/usr/bin/chromium}" package=chromium ;;
  firefox.mjs) browser="${FIREFOX:-/usr/bin/firefox-esr}" package=firefox-esr ;;
  *) echo "no driver $driver here" >&2; exit 2 ;;
esac
(
  flock 9
  if ! [ -x "$browser" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      export DEBIAN_FRONTEND=noninteractive
      { apt-get install -y -qq "$package" || { apt-get update -qq && apt-get install -y -qq "$package"; }; } >&2
    else
      echo "no browser at $browser: install Debian's $package package, or set CHROMIUM or FIREFOX" >&2
      exit 1
    fi
  fi
  if ! [ -d "$here/node_modules/playwright-core" ] || ! [ -d "$here/node_modules/puppeteer-core" ]; then
    npm ci --silent --prefix "$here" >&2
  fi
) 9>"$here/.install.lock"
exec node "$here/$driver" "$@"
