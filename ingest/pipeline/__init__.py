"""The web side from accept to broker: the batcher, broker publishing, the per-process runtime."""
