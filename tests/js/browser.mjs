// Drives headless Chromium (Debian's, through playwright-core) on a page served from
// another origin than the daemon: node browser.mjs PAGE_URL FUNCTION JSON_ARGUMENT
import { chromium } from "playwright-core";

const [pageUrl, name, argument] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});
try {
  const page = await browser.newPage();
  const problems = [];
  page.on("pageerror", (error) => problems.push(String(error)));
  await page.goto(pageUrl);
  const result = await page.evaluate(
    async ([fn, arg]) => window[fn](arg),
    [name, JSON.parse(argument)],
  );
  await page.waitForTimeout(1500); // batches and beacons leave after the calls return
  await page.close(); // a page leaving flushes what a batching queue still holds
  console.log(JSON.stringify({ result, problems }));
} finally {
  await browser.close();
}
