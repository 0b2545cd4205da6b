#!/usr/bin/env bash
# Builds the page's script into dist/app.js (checked in, so that building the server needs
# neither Node.js nor the network; the server embeds it beside src/index.html): message
# types generated from ../proto, the page's code type-checked, then one bundle of it and
# its libraries.
set -euo pipefail
cd "$(dirname "$0")"
npm ci --silent
npx buf generate
npx tsc -p .
npx esbuild src/main.ts --bundle --minify --format=iife --target=es2022 --legal-comments=eof --outfile=dist/app.js
