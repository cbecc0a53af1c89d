// Send one event per id through the real posthog-node SDK; print what it sent and what failed.
// Input on stdin: {"url", "key", "ids", "timeout_ms"}. Output on stdout: {"sent": [...], "errors": [...]}.
const { PostHog } = require('posthog-node');

// posthog-node waits a fixed fetchRetryDelay between attempts (it reads no Retry-After on
// /batch/): 30 retries a second apart keep a batch trying for over 30 s.
const RETRY_COUNT = 30;
const RETRY_DELAY_MS = 1000;
const FLUSH_AT = 100;

async function main() {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  const { url, key, ids, timeout_ms: timeoutMs } = JSON.parse(Buffer.concat(chunks).toString());
  const client = new PostHog(key, {
    host: url,
    flushAt: FLUSH_AT,
    flushInterval: 200,
    maxQueueSize: ids.length + FLUSH_AT,
    fetchRetryCount: RETRY_COUNT,
    fetchRetryDelay: RETRY_DELAY_MS,
    requestTimeout: 10000,
    disableGeoip: true,
  });
  const sent = [];
  const errors = [];
  client.on('flush', (messages) => sent.push(...messages.map((message) => message.uuid)));
  client.on('error', (error) => errors.push({ status: error?.status ?? null, message: String(error?.message ?? error) }));
  ids.forEach((id, number) => {
    client.capture({ distinctId: `user-${number % 50}`, event: 'driver_event', properties: { n: number }, uuid: id });
  });
  await client.shutdown(timeoutMs);
  process.stdout.write(JSON.stringify({ sent, errors }));
}

main().catch((error) => {
  process.stderr.write(`${error?.stack ?? error}\n`);
  process.exit(1);
});
