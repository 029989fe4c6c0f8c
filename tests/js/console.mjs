// Drives the sidecar's console in headless Chromium (Debian's, through playwright-core):
//   node console.mjs JSON_ARGUMENT
// with {console, daemon, message, today, todayTotal, before?, foreign?, replay?, screenshot?}.
// It opens the console, sends the messages `before` and then the track `message` to the daemon,
// waits until the live view shows it and the day chart counts `todayTotal` today, has a page of
// another origin try to replay every dead letter, clicks Replay on dead letter `replay`, and
// prints what it saw as one JSON line.
import { chromium } from "playwright-core";

const argument = JSON.parse(process.argv[2]);
const TIMEOUT_MS = 20000;
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync"],
});
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  const problems = [];
  page.on("pageerror", (error) => problems.push(String(error)));
  page.on("console", (message) => {
    if (message.type() === "error") problems.push(message.text());
  });
  await page.goto(argument.console);
  await page.waitForFunction(() => document.getElementById("state").textContent !== "loading",
    null, { timeout: TIMEOUT_MS });

  for (const body of [...(argument.before || []), { type: "track", ...argument.message }]) {
    const sent = await fetch(`${argument.daemon}/v1/batch`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ batch: [body] }),
    });
    if (!sent.ok) throw new Error(`the daemon answered ${sent.status} to ${JSON.stringify(body)}`);
  }
  const row = page.locator(`tr.event[data-message-id="${argument.message.messageId}"]`);
  await row.waitFor({ timeout: TIMEOUT_MS });
  const seen = (await row.innerText()).replace(/\s+/g, " ").trim();

  const today = `#days rect[data-day="${argument.today}"]`;
  await page.waitForFunction(([selector, total]) => [...document.querySelectorAll(selector)]
    .reduce((sum, rect) => sum + Number(rect.dataset.value), 0) >= total,
  [today, argument.todayTotal], { timeout: TIMEOUT_MS });
  const chart = await page.$$eval(today, (rects) => rects.map((r) => r.textContent));

  let foreign = null;
  if (argument.foreign) {
    const other = await context.newPage();
    await other.goto(argument.foreign);
    // A form-like POST needs no preflight: only the console's own check can stop it.
    foreign = await other.evaluate(async (url) => {
      try {
        await fetch(url, { method: "POST", mode: "no-cors", body: "{}" });
        return "sent";
      } catch (error) {
        return `failed: ${error}`;
      }
    }, `${argument.daemon}/console/api/dead-letters/replay`);
    await other.close();
  }

  let replayed = null;
  if (argument.replay !== undefined) {
    await page.click(`button[data-replay="${argument.replay}"]`);
    const result = page.locator("#replay-result");
    await page.waitForFunction(() => /accepted|failed/.test(
      document.getElementById("replay-result").textContent), null, { timeout: TIMEOUT_MS });
    replayed = await result.innerText();
    await page.waitForSelector(`tr[data-letter="${argument.replay}"]`,
      { state: "detached", timeout: TIMEOUT_MS });
  }
  if (argument.screenshot) {
    await page.locator(`tr.event[data-message-id="${argument.message.messageId}"] details`)
      .evaluate((details) => { details.open = true; });
    await page.screenshot({ path: argument.screenshot, fullPage: true });
  }
  console.log(JSON.stringify({ seen, chart, foreign, replayed, problems }));
} finally {
  await browser.close();
}
