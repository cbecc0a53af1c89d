"""The web side from accept to broker: the batcher, broker publishing, and the per-process runtime."""
