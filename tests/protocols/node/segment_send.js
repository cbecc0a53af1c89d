// Send one track event per id through @segment/analytics-node, the real SDK, then close and
// flush it. Reads {url, key, ids, timeoutMs} as JSON on stdin; writes a JSON report on stdout:
// {delivered: [ids], failed: [{id, reason}]}. The Python driver asserts on the report.
'use strict'

const { Analytics } = require('@segment/analytics-node')

function readStdin() {
  return new Promise((resolve, reject) => {
    const chunks = []
    process.stdin.on('data', (chunk) => chunks.push(chunk))
    process.stdin.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')))
    process.stdin.on('error', reject)
  })
}

async function main() {
  const { url, key, ids, timeoutMs } = JSON.parse(await readStdin())
  const analytics = new Analytics({
    writeKey: key,
    host: url,
    flushAt: 100,
    flushInterval: 500,
    // The gateway holds a request while its broker is paused; answer it rather than cut it.
    httpRequestTimeout: 30000,
    // 503s back off 0.5 s doubling to 60 s, counted; 429 with Retry-After waits as told.
    maxRetries: 20,
    maxTotalBackoffDuration: Math.ceil(timeoutMs / 1000),
    maxRateLimitDuration: Math.ceil(timeoutMs / 1000),
  })
  const delivered = []
  const failed = []
  analytics.on('track', (ctx) => delivered.push(ctx.event.messageId))
  analytics.on('error', (error) => {
    failed.push({
      id: error.ctx ? error.ctx.event.messageId : null,
      reason: String(error.reason),
    })
  })
  ids.forEach((id, number) => {
    analytics.track({
      userId: `user-${number % 50}`,
      event: 'Driver Event',
      properties: { n: number },
      messageId: id,
    })
  })
  await analytics.closeAndFlush({ timeout: timeoutMs })
  process.stdout.write(JSON.stringify({ delivered, failed }))
}

main().catch((error) => {
  process.stderr.write(String(error && error.stack ? error.stack : error))
  process.exit(1)
})
