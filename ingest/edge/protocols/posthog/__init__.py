"""PostHog capture: /batch/, /capture/, /e/ and /i/v0/e/, as the PostHog SDKs send them."""
