// The voice search page: records one utterance with MediaRecorder (Opus), sends it to the
// server that served the page through gRPC-Web, and shows the transcript, the hits and
// how long the answer took. Typed queries go to the Search RPC the same way.

import { ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { HitSource, Search, type Hit } from "./gen/voicesearch/v1/search_pb";
import { AudioEncoding, VoiceSearch } from "./gen/voicesearch/v1/voice_search_pb";

/** The server refuses longer utterances (its default `max_utterance_seconds`). */
const MAX_RECORDING_MS = 29_000;
/** A press shorter than this is a tap: recording goes on until the next tap. */
const TAP_MS = 300;
const HITS = 5;
const KEY_STORAGE = "voice-search-api-key";

const element = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
const talk = element<HTMLButtonElement>("talk");
const status = element<HTMLParagraphElement>("status");
const transcript = element<HTMLParagraphElement>("transcript");
const latency = element<HTMLParagraphElement>("latency");
const hits = element<HTMLOListElement>("hits");
const typed = element<HTMLFormElement>("typed");
const query = element<HTMLInputElement>("query");
const apiKey = element<HTMLInputElement>("api-key");

apiKey.value = localStorage.getItem(KEY_STORAGE) ?? "";
apiKey.addEventListener("change", () => localStorage.setItem(KEY_STORAGE, apiKey.value.trim()));

const withKey: Interceptor = (next) => (request) => {
  const key = apiKey.value.trim();
  if (key) request.header.set("authorization", `Bearer ${key}`);
  return next(request);
};
const transport = createGrpcWebTransport({ baseUrl: location.origin, interceptors: [withKey] });
const voice = createClient(VoiceSearch, transport);
const search = createClient(Search, transport);

/** What the page is doing; the body's `data-state` shows it (and tests wait on it). */
type State = "idle" | "starting" | "recording" | "waiting" | "done" | "error";
const setState = (state: State) => (document.body.dataset.state = state);

/** Chrome and Edge record WebM, Firefox Ogg; both hold Opus, which the server decodes. */
function recordingFormat(): { mimeType: string; encoding: AudioEncoding } | undefined {
  const formats = [
    { mimeType: "audio/webm;codecs=opus", encoding: AudioEncoding.WEBM_OPUS },
    { mimeType: "audio/ogg;codecs=opus", encoding: AudioEncoding.OGG_OPUS },
  ];
  return formats.find((format) => MediaRecorder.isTypeSupported(format.mimeType));
}

let recorder: MediaRecorder | undefined;
let pressedAt = 0;
/** Whether the press that started the recording is still down. */
let holding = false;
let tapMode = false;
let stopWhenStarted = false;
let limitTimer: number | undefined;

async function startRecording() {
  const format = recordingFormat();
  if (!format) return fail("This browser cannot record Opus audio (try Chrome or Firefox).");
  setState("starting");
  stopWhenStarted = false;
  let microphone: MediaStream;
  try {
    // The server normalizes loudness itself; the browser's gain and noise suppression
    // would only distort what the recognizer hears.
    microphone = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: true, autoGainControl: false, noiseSuppression: false },
    });
  } catch (error) {
    return fail(`No microphone: ${(error as Error).message}`);
  }
  const chunks: Blob[] = [];
  recorder = new MediaRecorder(microphone, { mimeType: format.mimeType });
  recorder.ondataavailable = (event) => chunks.push(event.data);
  recorder.onstop = () => {
    microphone.getTracks().forEach((track) => track.stop());
    void send(new Blob(chunks, { type: format.mimeType }), format.encoding);
  };
  recorder.start();
  setState("recording");
  talk.textContent = tapMode ? "Tap to stop" : "Release to search";
  status.className = "";
  status.textContent = "Listening…";
  limitTimer = window.setTimeout(stopRecording, MAX_RECORDING_MS);
  if (stopWhenStarted) stopRecording();
}

function stopRecording() {
  window.clearTimeout(limitTimer);
  if (document.body.dataset.state === "starting") {
    stopWhenStarted = true;
    return;
  }
  if (recorder?.state === "recording") recorder.stop();
  recorder = undefined;
  tapMode = false;
  talk.textContent = "Hold to speak";
}

async function send(clip: Blob, encoding: AudioEncoding) {
  setState("waiting");
  status.textContent = "Searching…";
  const sent = performance.now();
  try {
    const { result } = await voice.voiceSearch({
      config: { recognition: { encoding }, search: { maxHits: HITS } },
      audio: new Uint8Array(await clip.arrayBuffer()),
    });
    const text = result?.transcript?.text ?? "";
    query.value = text;
    const seconds = result?.audio?.durationSeconds ?? 0;
    show(text || "(no speech heard)", result?.hits ?? [], performance.now() - sent, seconds);
  } catch (error) {
    fail(describe(error));
  }
}

async function searchTyped(text: string) {
  setState("waiting");
  const sent = performance.now();
  try {
    const answer = await search.search({ query: text, pageSize: HITS });
    show(text, answer.hits, performance.now() - sent);
  } catch (error) {
    fail(describe(error));
  }
}

function show(heard: string, found: Hit[], elapsedMs: number, audioSeconds = 0) {
  transcript.textContent = heard;
  const heardFor = audioSeconds > 0 ? ` for ${audioSeconds.toFixed(1)} s of audio` : "";
  latency.textContent = `answered in ${Math.round(elapsedMs)} ms${heardFor}`;
  hits.replaceChildren(...found.map(hitItem));
  status.className = "";
  status.textContent = found.length ? "" : "Nothing in the catalog matched.";
  setState("done");
}

const FOUND_BY: Partial<Record<HitSource, string>> = {
  [HitSource.TEXT]: "found by text search",
  [HitSource.SOUND_ALIKE]: "found as a name that sounds alike",
  [HitSource.ACOUSTIC]: "heard by the recognizer among the catalog's names",
};

function hitItem(hit: Hit): HTMLLIElement {
  const item = document.createElement("li");
  const title = document.createElement("span");
  title.className = "title";
  title.textContent = hit.title;
  const category = document.createElement("span");
  category.className = "category";
  category.textContent = hit.category;
  item.append(title, category);
  if (hit.confidence > 0) {
    const confidence = document.createElement("span");
    confidence.className = "confidence";
    confidence.textContent = hit.confidence < 0.01 ? "<1%" : `${Math.round(hit.confidence * 100)}%`;
    confidence.title = `how likely this is what was meant; ${FOUND_BY[hit.source] ?? ""}`;
    item.append(confidence);
  }
  const snippet = document.createElement("div");
  snippet.className = "snippet";
  snippet.append(...snippetNodes(hit.snippet));
  item.append(snippet);
  return item;
}

/** The snippet's text with its `<b>` matches bold, built as nodes: never parsed as HTML. */
function snippetNodes(snippet: string): Node[] {
  const unescape = (text: string) =>
    text.replaceAll("&lt;", "<").replaceAll("&gt;", ">").replaceAll("&amp;", "&");
  let bold = false;
  const nodes: Node[] = [];
  for (const piece of snippet.split(/(<\/?b>)/)) {
    if (piece === "<b>" || piece === "</b>") {
      bold = piece === "<b>";
    } else if (piece) {
      const text = document.createTextNode(unescape(piece));
      if (bold) {
        const strong = document.createElement("b");
        strong.append(text);
        nodes.push(strong);
      } else {
        nodes.push(text);
      }
    }
  }
  return nodes;
}

function describe(error: unknown): string {
  const failure = ConnectError.from(error);
  return `The server said ${failure.code === undefined ? "" : codeName(failure.code)}: ${failure.rawMessage}`;
}

/** gRPC's own names for the codes, as the server's docs use them. */
function codeName(code: number): string {
  const names = [
    "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
    "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
    "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
    "UNAUTHENTICATED",
  ];
  return names[code] ?? `code ${code}`;
}

function fail(message: string) {
  status.className = "error";
  status.textContent = message;
  talk.textContent = "Hold to speak";
  setState("error");
}

talk.addEventListener("pointerdown", (event) => {
  talk.setPointerCapture(event.pointerId);
  if (tapMode) return stopRecording();
  const state = document.body.dataset.state;
  if (state === "starting" || state === "recording" || state === "waiting") return;
  pressedAt = performance.now();
  holding = true;
  void startRecording();
});
talk.addEventListener("pointerup", () => {
  if (!holding) return;
  holding = false;
  if (performance.now() - pressedAt < TAP_MS) {
    tapMode = true;
    talk.textContent = "Tap to stop";
    return;
  }
  stopRecording();
});
talk.addEventListener("pointercancel", () => {
  holding = false;
  stopRecording();
});

typed.addEventListener("submit", (event) => {
  event.preventDefault();
  const text = query.value.trim();
  if (text) void searchTyped(text);
});
