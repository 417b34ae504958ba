"""Micro-batching of model calls for the service: queries that arrive together are
encoded in one forward pass by a single worker thread (the model is shared read-only,
and only this thread runs it)."""
from __future__ import annotations

import queue
import threading
from concurrent.futures import Future

import numpy as np


class EmbedBatcher:
    def __init__(self, model, max_batch: int = 32, max_wait_s: float = 0.005):
        self.model, self.max_batch, self.max_wait_s = model, max_batch, max_wait_s
        self.q: queue.Queue = queue.Queue()
        self.batches_run = 0
        self.items_run = 0
        self._thread = threading.Thread(target=self._loop, name="embed-batcher", daemon=True)
        self._thread.start()

    def embed_text(self, text: str) -> np.ndarray:
        return self._submit("text", text)

    def embed_image(self, image) -> np.ndarray:
        return self._submit("image", image)

    def _submit(self, kind, payload) -> np.ndarray:
        fut: Future = Future()
        self.q.put((kind, payload, fut))
        return fut.result(timeout=120)

    def _loop(self) -> None:
        while True:
            first = self.q.get()
            pending = [first]
            try:
                while len(pending) < self.max_batch:
                    pending.append(self.q.get(timeout=self.max_wait_s))
            except queue.Empty:
                pass
            for kind in ("text", "image"):
                group = [p for p in pending if p[0] == kind]
                if not group:
                    continue
                try:
                    payloads = [p[1] for p in group]
                    out = self.model.embed_texts(payloads) if kind == "text" else self.model.embed_images(payloads)
                    self.batches_run += 1
                    self.items_run += len(group)
                    for (_, _, fut), row in zip(group, out):
                        fut.set_result(row)
                except Exception as e:  # hand the error to every waiting request
                    for _, _, fut in group:
                        fut.set_exception(e)
