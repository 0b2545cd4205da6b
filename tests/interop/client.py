"""An independent gRPC client (Python grpcio) for StreamingVoiceSearch.

Generates its stubs from the repository's proto files at run time, streams a fixture as
a phone would and checks the transcript, the hits and the status of a bad stream. Exits
non-zero with a message on the first mismatch.

Usage: client.py HOST:PORT PROTO_DIR FIXTURE_DIR
"""

import importlib
import os
import sys
import tempfile

import grpc
from grpc_tools import protoc


def generate_stubs(proto_dir, out_dir):
    import grpc_tools

    well_known = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    files = [
        os.path.join("voicesearch", "v1", name)
        for name in sorted(os.listdir(os.path.join(proto_dir, "voicesearch", "v1")))
        if name.endswith(".proto")
    ]
    args = ["protoc", f"-I{proto_dir}", f"-I{well_known}", f"--python_out={out_dir}",
            f"--grpc_python_out={out_dir}", *files]
    if protoc.main(args) != 0:
        sys.exit("protoc failed on the repository's protos")
    sys.path.insert(0, out_dir)
    pb = importlib.import_module("voicesearch.v1.voice_search_pb2")
    stubs = importlib.import_module("voicesearch.v1.voice_search_pb2_grpc")
    return pb, stubs


def check(condition, message):
    if not condition:
        sys.exit(f"interop check failed: {message}")


def main():
    address, proto_dir, fixtures = sys.argv[1:4]
    with tempfile.TemporaryDirectory() as out_dir:
        pb, stubs = generate_stubs(proto_dir, out_dir)
        with grpc.insecure_channel(address) as channel:
            client = stubs.VoiceSearchStub(channel)
            with open(os.path.join(fixtures, "q0006.wav"), "rb") as f:
                wav = f.read()

            def good_stream():
                yield pb.StreamingVoiceSearchRequest(
                    config=pb.StreamingVoiceSearchConfig(
                        recognition=pb.RecognitionConfig(encoding=pb.WAV),
                        search=pb.SearchOptions(max_hits=3),
                    )
                )
                for start in range(0, len(wav), 3200):
                    yield pb.StreamingVoiceSearchRequest(audio=wav[start:start + 3200])
                yield pb.StreamingVoiceSearchRequest(end_of_utterance=pb.EndOfUtterance())

            responses = list(client.StreamingVoiceSearch(good_stream(), timeout=60))
            finals = [r for r in responses if r.result.is_final]
            check(len(finals) == 1, f"expected one final result, got {responses}")
            result = finals[0].result
            text = result.transcript.text.lower()
            check(text.startswith("weather in") and "germany" in text, f"transcript {text!r}")
            check(result.hits and result.hits[0].id == "dus", f"hits {list(result.hits)}")
            check(finals[0].utterance_index == 0, "utterance index")

            def audio_first():
                yield pb.StreamingVoiceSearchRequest(audio=b"\0\0")

            try:
                list(client.StreamingVoiceSearch(audio_first(), timeout=60))
                check(False, "audio before the config was accepted")
            except grpc.RpcError as error:
                check(error.code() == grpc.StatusCode.INVALID_ARGUMENT,
                      f"status {error.code()} {error.details()}")
                check("config" in error.details(), f"message {error.details()!r}")
    print("interop ok:", text, "->", result.hits[0].id)


if __name__ == "__main__":
    main()
