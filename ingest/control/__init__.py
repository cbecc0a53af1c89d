"""The control plane: sources and keys, rate limits, receipts, stats, metrics and readiness."""
