// The voice search page: records an utterance with MediaRecorder (Opus) and streams it,
// a chunk every quarter second, over the server's WebSocket twin of StreamingVoiceSearch,
// showing interim transcripts and hits while the button is held and the final once it is
// released, with how long that took. Where no socket opens (or when asked in the
// settings) the whole recording goes in one gRPC-Web call instead. Typed queries go to
// the Search RPC over gRPC-Web.

import { create, fromBinary, toBinary, type MessageInitShape } from "@bufbuild/protobuf";
import { ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { HitSource, Search, type Hit } from "./gen/voicesearch/v1/search_pb";
import {
  AudioEncoding,
  StreamingVoiceSearchRequestSchema,
  StreamingVoiceSearchResponseSchema,
  VoiceSearch,
  type StreamingVoiceSearchRequest,
  type UtteranceResult,
  type WordInfo,
} from "./gen/voicesearch/v1/voice_search_pb";
import type { Duration } from "@bufbuild/protobuf/wkt";

/** The server refuses longer utterances (its default `max_utterance_seconds`). */
const MAX_RECORDING_MS = 29_000;
/** A press shorter than this is a tap: recording goes on until the next tap. */
const TAP_MS = 300;
const HITS = 5;
const KEY_STORAGE = "voice-search-api-key";
/** The server's WebSocket stream, and the subprotocol it speaks. */
const STREAM_PATH = "/v1/stream";
const STREAM_PROTOCOL = "voicesearch.v1";
/** A socket closed with this plus a gRPC status code ended with that status. */
const STATUS_CLOSE_BASE = 4000;
/** How often the recorder hands over what it has heard, to go out on the socket. */
const CHUNK_MS = 250;
/** Words decoded with a lower probability are shown as unsure. */
const UNSURE_BELOW = 0.5;

const element = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
const talk = element<HTMLButtonElement>("talk");
const status = element<HTMLParagraphElement>("status");
const transcript = element<HTMLParagraphElement>("transcript");
const latency = element<HTMLParagraphElement>("latency");
const hits = element<HTMLOListElement>("hits");
const typed = element<HTMLFormElement>("typed");
const query = element<HTMLInputElement>("query");
const apiKey = element<HTMLInputElement>("api-key");
const oneShot = element<HTMLInputElement>("one-shot");

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
  const stream = oneShot.checked || !("WebSocket" in window) ? undefined : openStream(format.encoding);
  document.body.dataset.interims = "0";
  recorder = new MediaRecorder(microphone, { mimeType: format.mimeType });
  recorder.ondataavailable = (event) => {
    chunks.push(event.data);
    stream?.send(event.data);
  };
  recorder.onstop = () => {
    microphone.getTracks().forEach((track) => track.stop());
    const clip = new Blob(chunks, { type: format.mimeType });
    if (stream) stream.finish(clip);
    else void send(clip, format.encoding);
  };
  recorder.start(stream ? CHUNK_MS : undefined);
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

/** A spoken query streaming over the socket while it is recorded. */
interface Streaming {
  /** Sends a chunk of the recording. */
  send(chunk: Blob): void;
  /** The recording ended (`clip` is all of it): asks for the final. */
  finish(clip: Blob): void;
}

/**
 * Opens the socket for one utterance and sends its config. Frames go out in the order
 * they were given, each after the socket opened and the one before it was sent. Should
 * the socket not open at all (a proxy that does not pass WebSockets), the recording goes
 * in one gRPC-Web call when it ends.
 */
function openStream(encoding: AudioEncoding): Streaming {
  document.body.dataset.path = "websocket";
  const key = apiKey.value.trim();
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const protocols = key ? [STREAM_PROTOCOL, `bearer.${key}`] : [STREAM_PROTOCOL];
  const socket = new WebSocket(`${scheme}//${location.host}${STREAM_PATH}`, protocols);
  socket.binaryType = "arraybuffer";
  let opened = false;
  let settled = false;
  let releasedAt = 0;
  let clip: Blob | undefined;
  let queue = new Promise<void>((resolve) => socket.addEventListener("open", () => resolve()));
  const sendFrame = (message: () => Promise<StreamingVoiceSearchRequest>) => {
    queue = queue.then(async () => {
      const frame = toBinary(StreamingVoiceSearchRequestSchema, await message());
      if (socket.readyState === WebSocket.OPEN) socket.send(frame);
    });
  };
  const request = (value: MessageInitShape<typeof StreamingVoiceSearchRequestSchema>["request"]) =>
    create(StreamingVoiceSearchRequestSchema, { request: value });

  socket.onopen = () => (opened = true);
  socket.onmessage = (event) => {
    const result = fromBinary(StreamingVoiceSearchResponseSchema, new Uint8Array(event.data)).result;
    if (!result || settled) return;
    if (!result.isFinal) return showInterim(result);
    settled = true;
    socket.close(1000);
    showResult(result, performance.now() - releasedAt);
  };
  socket.onclose = (event) => {
    if (settled) return;
    settled = true;
    if (!opened) {
      document.body.dataset.path = "grpc-web";
      if (clip) void send(clip, encoding);
    } else if (event.code >= STATUS_CLOSE_BASE) {
      fail(`The server said ${codeName(event.code - STATUS_CLOSE_BASE)}: ${event.reason}`);
    } else {
      fail(`The connection closed before the answer came (code ${event.code}).`);
    }
  };
  sendFrame(async () =>
    request({
      case: "config",
      value: {
        recognition: { encoding, interimResults: true, enableWordTimeOffsets: true },
        search: { maxHits: HITS, searchInterim: true },
      },
    }),
  );
  return {
    send: (chunk) =>
      sendFrame(async () => request({ case: "audio", value: new Uint8Array(await chunk.arrayBuffer()) })),
    finish: (recorded) => {
      clip = recorded;
      releasedAt = performance.now();
      if (settled && !opened) return void send(recorded, encoding);
      if (settled) return;
      setState("waiting");
      status.textContent = "Searching…";
      sendFrame(async () => request({ case: "endOfUtterance", value: {} }));
    },
  };
}

/** What was heard so far, while the person is still speaking. */
function showInterim(result: UtteranceResult) {
  const text = result.transcript?.text ?? "";
  if (!text) return;
  transcript.textContent = `${text}…`;
  transcript.className = "interim";
  if (result.hits.length) hits.replaceChildren(...result.hits.map(hitItem));
  document.body.dataset.interims = String(Number(document.body.dataset.interims ?? 0) + 1);
}

/** A final result, `elapsedMs` after the button was released. */
function showResult(result: UtteranceResult, elapsedMs: number) {
  const text = result.transcript?.text ?? "";
  query.value = text;
  show(text || "(no speech heard)", result.hits, elapsedMs, result.audio?.durationSeconds ?? 0);
  const words = result.transcript?.words ?? [];
  if (words.length) transcript.replaceChildren(...timedWords(words, result.hits[0]?.title ?? ""));
}

/**
 * The transcript's words, each telling when it was said and how sure the recognizer was;
 * the words of the first hit's title (the recognized name) are marked, and unsure words
 * underlined.
 */
function timedWords(words: WordInfo[], title: string): Node[] {
  const bare = (word: string) => word.toLowerCase().replace(/[^\p{L}\p{N}]/gu, "");
  const named = new Set(title.split(/\s+/).map(bare).filter(Boolean));
  const seconds = (offset?: Duration) => Number(offset?.seconds ?? 0n) + (offset?.nanos ?? 0) / 1e9;
  return words.flatMap((word, i) => {
    const span = document.createElement(named.has(bare(word.word)) ? "mark" : "span");
    span.textContent = word.word;
    span.className = word.confidence < UNSURE_BELOW ? "word unsure" : "word";
    const [start, end] = [seconds(word.startOffset), seconds(word.endOffset)];
    span.title = `${start.toFixed(2)}–${end.toFixed(2)} s, ${Math.round(word.confidence * 100)}% sure`;
    return i ? [document.createTextNode(" "), span] : [span];
  });
}

async function send(clip: Blob, encoding: AudioEncoding) {
  document.body.dataset.path = "grpc-web";
  setState("waiting");
  status.textContent = "Searching…";
  const sent = performance.now();
  try {
    const { result } = await voice.voiceSearch({
      config: { recognition: { encoding, enableWordTimeOffsets: true }, search: { maxHits: HITS } },
      audio: new Uint8Array(await clip.arrayBuffer()),
    });
    if (!result) return fail("The server sent no result.");
    showResult(result, performance.now() - sent);
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
  transcript.className = "";
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
