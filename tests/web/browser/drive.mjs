// Drives Debian's Chromium (headless) through the voice search page: a typed query, then
// a spoken one from a fake microphone that plays a WAV file (from its start on each
// recording), held down on the button for as long as the clip lasts, first sent whole
// over gRPC-Web and then streamed over the WebSocket. Prints what the page showed as JSON
// and saves a screenshot.
//
// node drive.mjs URL CLIP.wav HOLD_MS SCREENSHOT.png TYPED_QUERY

import { chromium } from "playwright-core";

const [url, clip, holdMs, screenshot, typedQuery] = process.argv.slice(2);
const ANSWER_TIMEOUT_MS = 120_000;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    // The machine's network is closed: without these Chromium keeps dialing Google.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    `--use-file-for-fake-audio-capture=${clip}%noloop`,
  ],
});
try {
  const page = await browser.newPage({ viewport: { width: 720, height: 820 } });
  const consoleErrors = [];
  page.on("console", (message) => {
    if (message.type() === "error") consoleErrors.push(message.text());
  });
  page.on("pageerror", (error) => consoleErrors.push(String(error)));
  await page.goto(url);

  const shown = async () =>
    page.evaluate(() => ({
      state: document.body.dataset.state,
      status: document.getElementById("status").textContent,
      transcript: document.getElementById("transcript").textContent,
      latency: document.getElementById("latency").textContent,
      // The transcript's words that carry their times, and those marked as the name.
      timedWords: document.querySelectorAll("#transcript [title]").length,
      marked: [...document.querySelectorAll("#transcript mark")].map((mark) => mark.textContent),
      hits: [...document.querySelectorAll("#hits li")].map((item) => ({
        title: item.querySelector(".title").textContent,
        category: item.querySelector(".category").textContent,
        snippet: item.querySelector(".snippet").textContent,
      })),
    }));
  const answered = () =>
    page.waitForFunction(() => ["done", "error"].includes(document.body.dataset.state), null, {
      timeout: ANSWER_TIMEOUT_MS,
    });

  await page.fill("#query", typedQuery);
  await page.click("#typed button");
  await answered();
  const typed = await shown();
  await page.evaluate(() => (document.body.dataset.state = "idle"));

  // Holds the button for the clip's length and waits for the answer: streamed over the
  // WebSocket, or sent whole over gRPC-Web when `whole`.
  const speak = async (whole) => {
    await page.evaluate((whole) => {
      document.body.dataset.state = "idle";
      document.getElementById("one-shot").checked = whole;
    }, whole);
    const button = await page.locator("#talk").boundingBox();
    await page.mouse.move(button.x + button.width / 2, button.y + button.height / 2);
    await page.mouse.down();
    await page.waitForFunction(() => document.body.dataset.state === "recording");
    await page.waitForTimeout(Number(holdMs));
    // Interim results shown while the button was held.
    const interimsBeforeRelease = Number(await page.evaluate(() => document.body.dataset.interims));
    await page.mouse.up();
    await answered();
    return {
      ...(await shown()),
      path: await page.evaluate(() => document.body.dataset.path),
      interimsBeforeRelease,
    };
  };
  const whole = await speak(true);
  const spoken = await speak(false);
  await page.screenshot({ path: screenshot });
  console.log(JSON.stringify({ typed, spoken, whole, consoleErrors }));
} finally {
  await browser.close();
}
