// Drives Debian's Firefox ESR (headless, over WebDriver BiDi) through the voice search
// page: holds the button for HOLD_MS while Firefox's fake microphone plays its tone, so
// that the page records Ogg Opus and streams it over the WebSocket. Prints what the page
// showed as JSON.
//
// node firefox.mjs URL HOLD_MS

import puppeteer from "puppeteer-core";

const [url, holdMs] = process.argv.slice(2);
const ANSWER_TIMEOUT_MS = 120_000;

const browser = await puppeteer.launch({
  browser: "firefox",
  executablePath: process.env.FIREFOX ?? "/usr/bin/firefox-esr",
  headless: true,
  extraPrefsFirefox: {
    "media.navigator.streams.fake": true,
    "media.navigator.permission.disabled": true,
    // The machine's network is closed: without these Firefox keeps dialing out.
    "app.update.enabled": false,
    "network.captive-portal-service.enabled": false,
    "network.connectivity-service.enabled": false,
  },
});
try {
  const page = await browser.newPage();
  const consoleErrors = [];
  page.on("console", (message) => {
    if (message.type() === "error") consoleErrors.push(message.text());
  });
  page.on("pageerror", (error) => consoleErrors.push(String(error)));
  await page.goto(url);
  // The page's CSP forbids the evaluated code waitForFunction would run; poll instead.
  const reached = async (states, timeoutMs) => {
    const end = Date.now() + timeoutMs;
    for (;;) {
      const state = await page.evaluate(() => document.body.dataset.state);
      if (states.includes(state)) return state;
      if (Date.now() > end) throw new Error(`the page is still "${state}"`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  };
  const button = await (await page.$("#talk")).boundingBox();
  await page.mouse.move(button.x + button.width / 2, button.y + button.height / 2);
  await page.mouse.down();
  await reached(["recording", "error"], ANSWER_TIMEOUT_MS);
  await new Promise((resolve) => setTimeout(resolve, Number(holdMs)));
  await page.mouse.up();
  await reached(["done", "error"], ANSWER_TIMEOUT_MS);
  const shown = await page.evaluate(() => ({
    state: document.body.dataset.state,
    path: document.body.dataset.path,
    status: document.getElementById("status").textContent,
    latency: document.getElementById("latency").textContent,
  }));
  console.log(JSON.stringify({ shown, consoleErrors }));
} finally {
  await browser.close();
}
