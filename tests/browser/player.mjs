// Drives the demo player (and, when given, the React example) in the system's
// headless Chromium through playwright-core, as tests/test_browser.py asks.
//
//   node player.mjs '{"chromium": "/usr/bin/chromium", "base": "http://127.0.0.1:PORT",
//                     "playerUrl": "http://127.0.0.1:PORT/demo/#token=…", "apiToken": "…",
//                     "screenshot": "player.png", "reactUrl": "http://127.0.0.1:PORT2/?server=…"}'
//
// Without playerUrl only the React example is checked; without reactUrl, only the player.
//
// Prints one JSON document: {"checks": {name: {ok, ...details}}, "consoleErrors": [...]}; exits 0
// when every check passed.  Each wait is bounded; nothing here sleeps for a fixed time to pass.

import { chromium } from "playwright-core";

const config = JSON.parse(process.argv[2]);
const base = config.base;
const WAIT_MS = 20000;
const checks = {};
const consoleErrors = [];

const api = async (path, init = {}) => {
  const response = await fetch(`${base}${path}`, {
    ...init,
    headers: { Authorization: `Bearer ${config.apiToken}`, "Content-Type": "application/json", ...init.headers },
  });
  return { status: response.status, body: await response.json() };
};

async function check(name, body) {
  const started = Date.now();
  try {
    checks[name] = { ok: true, ...(await body()) };
  } catch (error) {
    checks[name] = { ok: false, error: String(error?.message ?? error) };
  }
  checks[name].ms = Date.now() - started; // for whoever wonders where the time goes
}

/** Wait until the audio element plays past *atLeast* seconds; its state then. */
async function playingPast(page, atLeast) {
  await page.waitForFunction(
    (t) => {
      const a = document.getElementById("audio");
      return a.currentTime > t && !a.paused && a.readyState >= 3;
    },
    atLeast,
    { timeout: WAIT_MS },
  );
  return page.evaluate(() => {
    const a = document.getElementById("audio");
    return { currentTime: a.currentTime, duration: a.duration, src: a.currentSrc };
  });
}

/** Count the pixels of a PNG screenshot that differ from *background* (decoded in a blank page). */
async function nonBackgroundPixels(decoder, png, background) {
  return decoder.evaluate(
    async ({ b64, bg }) => {
      const blob = await (await fetch(`data:image/png;base64,${b64}`)).blob();
      const bitmap = await createImageBitmap(blob);
      const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
      const ctx = canvas.getContext("2d");
      ctx.drawImage(bitmap, 0, 0);
      const data = ctx.getImageData(0, 0, bitmap.width, bitmap.height).data;
      let count = 0;
      for (let i = 0; i < data.length; i += 4) {
        const d = Math.abs(data[i] - bg[0]) + Math.abs(data[i + 1] - bg[1]) + Math.abs(data[i + 2] - bg[2]);
        if (d > 60) count++;
      }
      return { count, total: bitmap.width * bitmap.height };
    },
    { b64: png.toString("base64"), bg: background },
  );
}

async function checkPlayer(page, decoder) {
  const tracks = (await api("/api/v1/tracks?limit=100")).body.items;
  const byExt = (ext) => tracks.find((t) => t.path.endsWith(ext));
  const hlsTrack = byExt(".flac");
  const progressiveTrack = byExt(".wav") ?? byExt(".mp3");
  const seekTrack = byExt(".ogg") ?? byExt(".opus");
  const button = (track) => page.locator(`#tracks button[data-path="${track.path.replace(/"/g, '\\"')}"]`);

  await check("page loads", async () => {
    await page.goto(config.playerUrl);
    await page.waitForSelector("#tracks button", { timeout: WAIT_MS });
    await page.waitForFunction(() => document.getElementById("socket").textContent === "events: ready", null, {
      timeout: WAIT_MS,
    });
    const hashGone = !(await page.evaluate(() => location.hash.includes("token=")));
    if (!hashGone) throw new Error("the token stayed in the address bar");
    return { tracks: await page.locator("#tracks button").count(), who: await page.textContent("#who") };
  });

  await check("hls.js plays", async () => {
    await button(hlsTrack).click();
    const state = await playingPast(page, 1.5);
    if (!state.src.startsWith("blob:")) throw new Error(`not through MediaSource: ${state.src}`);
    if (Math.abs(state.duration - hlsTrack.duration_s) > 0.5) {
      throw new Error(`duration ${state.duration} != ${hlsTrack.duration_s}`);
    }
    return { ...state, expected: hlsTrack.duration_s };
  });

  await check("waveform renders", async () => {
    await page.waitForFunction((p) => document.body.dataset.waveform === p, hlsTrack.path, { timeout: WAIT_MS });
    await page.waitForSelector("#zoomview canvas", { timeout: WAIT_MS });
    const png = await page.locator("#zoomview").screenshot();
    const pixels = await nonBackgroundPixels(decoder, png, [0xfb, 0xfc, 0xfe]);
    if (pixels.count < pixels.total * 0.02) throw new Error(`only ${pixels.count} of ${pixels.total} pixels drawn`);
    // Zoom: out one level, then back in.
    await page.click("#zoom-out");
    await page.waitForFunction(() => document.body.dataset.zoom === "512", null, { timeout: WAIT_MS });
    await page.click("#zoom-in");
    await page.waitForFunction(() => document.body.dataset.zoom === "256", null, { timeout: WAIT_MS });
    // Click-to-seek: a click at 3/4 of the overview moves the playhead there.
    const box = await page.locator("#overview").boundingBox();
    await page.mouse.click(box.x + box.width * 0.75, box.y + box.height / 2);
    await page.waitForFunction((d) => document.getElementById("audio").currentTime > d * 0.6, hlsTrack.duration_s, {
      timeout: WAIT_MS,
    });
    return pixels;
  });

  await check("progressive transcode plays", async () => {
    await page.selectOption("#mode", "progressive");
    await page.selectOption("#format", "mp3:128");
    await button(progressiveTrack).click();
    await page.waitForFunction(() => document.getElementById("audio").currentSrc.includes("format=mp3"), null, {
      timeout: WAIT_MS,
    });
    const state = await playingPast(page, 1.5);
    if (Math.abs(state.duration - progressiveTrack.duration_s) > 0.5) {
      throw new Error(`duration ${state.duration} != ${progressiveTrack.duration_s}`);
    }
    return { ...state, expected: progressiveTrack.duration_s };
  });

  await check("seek into a never-seen transcode", async () => {
    await page.selectOption("#format", "aac:96");
    await button(seekTrack).click();
    await page.waitForFunction(() => document.getElementById("audio").currentSrc.includes("format=aac"), null, {
      timeout: WAIT_MS,
    });
    await page.waitForFunction(() => document.getElementById("audio").readyState >= 1, null, { timeout: WAIT_MS });
    const target = Math.floor(seekTrack.duration_s * 0.6);
    await page.evaluate((t) => (document.getElementById("audio").currentTime = t), target);
    const state = await playingPast(page, target + 1);
    return { ...state, target };
  });

  await check("notification appears", async () => {
    const sub = await page.evaluate(() => document.getElementById("who").textContent.split(" ")[0]);
    const sent = await api("/api/v1/notifications", {
      method: "POST",
      body: JSON.stringify({
        template: "new-release",
        user_ids: [sub],
        channels: ["websocket"],
        data: { artist: "Browser Test", album: "Headless", track_count: 3 },
      }),
    });
    if (sent.status !== 202) throw new Error(`POST answered ${sent.status}: ${JSON.stringify(sent.body)}`);
    await page.waitForSelector(".toast >> text=New from Browser Test", { timeout: WAIT_MS });
    return { id: sent.body.id };
  });

  if (config.screenshot) {
    await page.selectOption("#mode", "hls");
    await button(hlsTrack).click();
    await playingPast(page, 1);
    await page.waitForFunction((p) => document.body.dataset.waveform === p, hlsTrack.path, { timeout: WAIT_MS });
    await page.evaluate(() => document.getElementById("audio").currentTime = 12);
    await playingPast(page, 13);
    await page.click("#analytics-refresh");
    await page.waitForTimeout(500); // let the analytics panel paint (screenshot only, not a check)
    await page.screenshot({ path: config.screenshot });
  }

}

const browser = await chromium.launch({
  executablePath: config.chromium,
  // No sandbox (CI runs as root); nothing that reaches out to the network on its own.
  args: [
    "--autoplay-policy=no-user-gesture-required",
    "--no-sandbox",
    "--mute-audio",
    "--disable-gpu",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});
try {
  const context = await browser.newContext({ viewport: { width: 1440, height: 1000 } });
  const page = await context.newPage();
  page.on("console", (message) => {
    if (message.type() === "error") consoleErrors.push(`${message.text()} @ ${message.location().url}`);
  });
  page.on("pageerror", (error) => consoleErrors.push(`pageerror: ${error.message}`));
  const decoder = await context.newPage(); // about:blank: no CSP, decodes screenshots

  if (config.playerUrl) await checkPlayer(page, decoder);

  if (config.reactUrl) {
    await check("react example plays", async () => {
      const react = await context.newPage();
      react.on("console", (m) => m.type() === "error" && consoleErrors.push(`react: ${m.text()}`));
      react.on("pageerror", (e) => consoleErrors.push(`react pageerror: ${e.message}`));
      await react.goto(config.reactUrl);
      await react.locator("button.track").first().click({ timeout: WAIT_MS });
      await react.waitForFunction(
        () => {
          const a = document.querySelector("audio");
          return a && a.currentTime > 1 && !a.paused;
        },
        null,
        { timeout: WAIT_MS },
      );
      return react.evaluate(() => ({ currentTime: document.querySelector("audio").currentTime }));
    });
  }
} finally {
  await browser.close();
}

const ok = Object.values(checks).every((c) => c.ok) && consoleErrors.length === 0;
console.log(JSON.stringify({ ok, checks, consoleErrors }, null, 1));
process.exit(ok ? 0 : 1);
