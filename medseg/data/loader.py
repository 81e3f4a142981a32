"""Training batches by step number, optionally prepared ahead by a few loader threads.

Batch ``k`` of a run is drawn with its own generator, seeded from ``(seed, k)``. So:

- a batch does not depend on which thread made it, or on how many threads there are:
  ``workers=0`` and ``workers=2`` train on the same batches;
- resuming at step ``k`` needs no saved sampler state;
- under DDP, rank ``r`` passes ``seed + r`` and draws different patches from the other ranks.

The workers only crop (the sampler's job: index the, possibly memory-mapped, arrays and
stack the patches); augmentation runs on the training device, batched, in the training loop.
Threads rather than processes: cropping is NumPy copying, which releases the GIL, and
threads share the memory maps without pickling them.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from medseg.data.sampling import PatchSampler


def batch_rng(seed: int, step: int) -> np.random.Generator:
    """The generator that draws batch ``step`` of a run seeded with ``seed``."""
    return np.random.default_rng([int(seed), int(step)])


class BatchLoader:
    """``get(step)`` → ``(x (B, C, *patch) float32, y (B, *patch) int64)`` NumPy arrays.

    Args:
        sampler: draws the patches.
        batch_size: patches per batch.
        seed: the run's sampling seed (``seed + rank`` under DDP).
        workers: loader threads (0: draw in the caller's thread when asked).
        prefetch: batches prepared ahead per worker.
    """

    def __init__(self, sampler: PatchSampler, batch_size: int, seed: int, workers: int = 0, prefetch: int = 2):
        if workers < 0:
            raise ValueError(f"workers must not be negative, got {workers}")
        self.sampler, self.batch_size, self.seed = sampler, batch_size, seed
        self.workers = workers
        self.depth = max(1, workers * prefetch)
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="medseg-loader") if workers else None
        self._pending: dict[int, Future] = {}

    def draw(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """Batch ``step``, drawn now in this thread."""
        return self.sampler.batch(self.batch_size, batch_rng(self.seed, step))

    def get(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """Batch ``step``; with workers, also queues the next ones."""
        if self._pool is None:
            return self.draw(step)
        stale = [k for k in self._pending if k < step or k >= step + self.depth]
        for k in stale:  # a jump (resume, or a benchmark calling out of order)
            self._pending.pop(k).cancel()
        for k in range(step, step + self.depth):
            if k not in self._pending:
                self._pending[k] = self._pool.submit(self.draw, k)
        return self._pending.pop(step).result()

    def close(self) -> None:
        if self._pool is not None:
            for f in self._pending.values():
                f.cancel()
            self._pending.clear()
            self._pool.shutdown(wait=True)
            self._pool = None

    def __del__(self) -> None:  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:
            pass
