#!/usr/bin/env bash
# Builds the voice-search container image without any image registry:
#
#   deploy/image/build.sh [IMAGE]        (default IMAGE: localhost/voice-search:latest)
#
# The image holds Debian's minbase (dpkg, apt, coreutils, bash: about 130 MB, no man
# pages, docs or locales) with ca-certificates, the stripped binary (the demo catalog is
# compiled in) and the converted model (75 MB).
#
# 1. a minimal Debian bookworm base (the release the binary is built on, so its glibc
#    matches) with mmdebstrap, from this machine's own apt sources (a company mirror works
#    the same way), imported with `podman import`;
# 2. the release binary (`cargo build --release`) and Whisper tiny.en (`models/fetch.sh`,
#    converted at build time, so the image starts with no download and no volume);
# 3. `podman build` of deploy/image/Containerfile: a non-root user, `serve` listening on
#    0.0.0.0 inside the container, a health check (`voice-search health`).
#
# Needs root and Debian's podman, runc and mmdebstrap. Notes for machines like the
# developers' (a sandbox whose cgroups and limits crun refuses): run containers with
# `podman --runtime runc` and explicit `--ulimit nofile=N:N --ulimit nproc=N:N` no higher
# than the shell's hard limits (`ulimit -Hn`, `ulimit -Hu`; podman's defaults ask for
# more than such a sandbox allows), as this script and the image test do. The health
# check needs the Docker image format (OCI images have no HEALTHCHECK), hence `--format
# docker`.
set -euo pipefail
image=${1:-localhost/voice-search:latest}
root=$(cd "$(dirname "$0")/../.." && pwd)
base=localhost/voice-search-base:bookworm

for tool in podman runc mmdebstrap; do
    command -v "$tool" >/dev/null || {
        echo "$tool is missing: apt-get install podman runc mmdebstrap" >&2
        exit 1
    }
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if ! podman image exists "$base"; then
    # The host's apt sources name the mirrors; mmdebstrap reads them as given.
    sources=()
    for file in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
        [ -s "$file" ] && sources+=("$file")
    done
    echo "building the base with mmdebstrap from ${sources[*]}"
    mmdebstrap --quiet --variant=minbase --include=ca-certificates \
        --dpkgopt='path-exclude=/usr/share/man/*' \
        --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-exclude=/usr/share/locale/*' \
        --dpkgopt='path-exclude=/usr/share/info/*' \
        bookworm "$work/base.tar" "${sources[@]}" </dev/null
    podman import --quiet "$work/base.tar" "$base" >/dev/null
    rm "$work/base.tar"
fi

# VOICE_SEARCH_BINARY: a release binary built already (the image test passes the one
# cargo built for it, as cargo holds its build folder while tests run).
binary=${VOICE_SEARCH_BINARY:-}
if [ -z "$binary" ]; then
    (cd "$root" && cargo build --release --quiet)
    binary=$root/target/release/voice-search
fi
(cd "$root" && models/fetch.sh >/dev/null)
cp "$binary" "$work/voice-search"
strip "$work/voice-search"
mkdir "$work/whisper-tiny.en"
for file in config.json model.safetensors tokenizer.json generation_config.json preprocessor_config.json; do
    [ -f "$root/models/whisper-tiny.en/$file" ] && cp "$root/models/whisper-tiny.en/$file" "$work/whisper-tiny.en/"
done
cp "$root/deploy/image/Containerfile" "$work/Containerfile"
# Readable by the image's unprivileged user whatever the checkout's umask was.
chmod -R a+rX "$work"

podman build --quiet --format docker --runtime runc --build-arg "BASE=$base" \
    --ulimit "nofile=$(ulimit -Hn):$(ulimit -Hn)" --ulimit nproc=4096:4096 \
    --tag "$image" "$work" >/dev/null
size=$(podman image inspect "$image" --format '{{.Size}}')
echo "$image $((size / 1000000)) MB"
