// The page's script, bundled by esbuild with the real @segment/analytics-next: a web app
// sending to the sidecar from another origin. tests/test_js_clients.py drives it.
import { AnalyticsBrowser } from "@segment/analytics-next";

window.sendAll = async ({ writeKey, daemon, user, batching, cdnForm }) => {
  const host = daemon.replace(/^https?:\/\//, "");
  const segment = batching
    ? { deliveryStrategy: { strategy: "batching", config: { size: 5, timeout: 200 } } }
    : {};
  const settings = cdnForm
    ? { writeKey, cdnURL: daemon }
    : {
        writeKey,
        cdnSettings: {
          integrations: {
            "Segment.io": { apiKey: writeKey, apiHost: `${host}/v1`, protocol: "http" },
          },
        },
      };
  const [analytics] = await AnalyticsBrowser.load(settings, {
    integrations: { "Segment.io": { apiHost: `${host}/v1`, protocol: "http", ...segment } },
    disableClientPersistence: true,
  });
  // An anonymous visitor first, then the sign-up that names them.
  await analytics.track("Viewed Pricing");
  await analytics.identify(user, { email: `${user}@example.test`, createdAt: 1700000000 });
  await analytics.group(`acc-${user}`, { name: "Acme", mrr: "9900" });
  await analytics.track("Report Created");
  await analytics.track("Report Created");
  await analytics.page("Docs", "Home");
  await analytics.screen("Dashboard");
  await analytics.alias(user);
  return "sent";
};

// What any page could try against a daemon on the visitor's machine.
window.sneak = async ({ daemon }) => {
  const body = JSON.stringify({ userId: "intruder", event: "Sneaked In" });
  const results = [navigator.sendBeacon(`${daemon}/v1/t`, body)];
  for (const init of [
    { method: "POST", body, keepalive: true, headers: { "Content-Type": "application/json" } },
    { method: "POST", body, mode: "no-cors" },
  ]) {
    try {
      const answer = await fetch(`${daemon}/v1/t`, init);
      results.push(answer.status);
    } catch (error) {
      results.push(String(error));
    }
  }
  return results;
};
