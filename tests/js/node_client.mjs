// The real @segment/analytics-node (and the old analytics-node) sending a mix of calls to
// the daemon: node node_client.mjs new|old|steady DAEMON_URL WRITE_KEY PREFIX
import { Analytics } from "@segment/analytics-node";
import OldAnalytics from "analytics-node";

const [flavour, host, writeKey, prefix] = process.argv.slice(2);
const calls = (analytics) => {
  for (let i = 0; i < 30; i++) {
    const userId = `${prefix}-${i % 3}`;
    analytics.track({ userId, event: "Report Created" });
    if (i % 10 === 0) {
      analytics.identify({ userId, traits: { plan: "pro", seat: i } });
      analytics.page({ userId, name: "Home" });
    }
  }
  analytics.group({ userId: `${prefix}-0`, groupId: `${prefix}-acc`, traits: { name: "Acme" } });
};
if (flavour === "steady") {
  // One track every 50 ms, each its own request, across a restart of the daemon.
  const analytics = new Analytics({ writeKey, host, maxEventsInBatch: 1, maxRetries: 20 });
  analytics.on("error", (error) => console.error(String(error)));
  for (let i = 0; i < 60; i++) {
    analytics.track({ userId: prefix, event: "Beat", messageId: `${prefix}-${i}` });
    if (i === 0) console.log("started");
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  await analytics.closeAndFlush({ timeout: 60000 });
} else if (flavour === "new") {
  const analytics = new Analytics({ writeKey, host, maxRetries: 10, flushInterval: 200 });
  analytics.on("error", (error) => console.error(String(error)));
  calls(analytics);
  await analytics.closeAndFlush({ timeout: 30000 });
} else {
  const analytics = new OldAnalytics(writeKey, { host, flushAt: 5, retryCount: 10 });
  calls(analytics);
  await new Promise((resolve, reject) =>
    analytics.flush((error) => (error ? reject(error) : resolve())),
  );
}
console.log("done");
