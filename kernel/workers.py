"""The cycle worker pool.

Hand-written rather than ``concurrent.futures.ThreadPoolExecutor`` because a cycle past
its deadline must be abandoned without losing a worker: a Python thread cannot be
killed, so the pool starts a replacement and lets the stuck thread retire whenever (if
ever) its strategy returns.
"""
from __future__ import annotations

import queue
import threading
import time
from typing import Any, Callable


class Job:
    __slots__ = ("fn", "args", "key", "queued_wall", "started_wall", "finished_wall",
                 "abandoned", "result", "error", "done", "meta")

    def __init__(self, fn: Callable[..., Any], args: tuple, key: str, meta: Any = None) -> None:
        self.fn = fn
        self.args = args
        self.key = key
        self.meta = meta
        self.queued_wall = time.monotonic()
        self.started_wall: float | None = None
        self.finished_wall: float | None = None
        self.abandoned = False
        self.result: Any = None
        self.error: BaseException | None = None
        self.done = threading.Event()


class WorkerPool:
    def __init__(self, size: int, on_done: Callable[[Job], None], name: str = "cycle") -> None:
        if size < 1:
            raise ValueError("a pool needs at least one worker")
        self._queue: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._on_done = on_done
        self._name = name
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._retire = 0  # stuck workers that should leave when they come back
        self._n = 0
        self._closed = False
        for _ in range(size):
            self._spawn()

    def _spawn(self) -> None:
        with self._lock:
            self._n += 1
            t = threading.Thread(target=self._run, name=f"{self._name}-{self._n}", daemon=True)
            self._threads.append(t)
        t.start()

    def submit(self, fn: Callable[..., Any], *args: Any, key: str = "", meta: Any = None) -> Job:
        job = Job(fn, args, key, meta)
        self._queue.put(job)
        return job

    def abandon(self, job: Job) -> None:
        """Give up on a job past its deadline and replace the worker stuck in it."""
        if job.abandoned or job.done.is_set():
            return
        job.abandoned = True
        with self._lock:
            self._retire += 1
        self._spawn()

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            job.started_wall = time.monotonic()
            try:
                job.result = job.fn(job, *job.args)
            except BaseException as exc:  # noqa: BLE001 - reported through on_done
                job.error = exc
            job.finished_wall = time.monotonic()
            job.done.set()
            try:
                self._on_done(job)
            except Exception:  # noqa: BLE001 - the callback must never kill a worker
                pass
            if job.abandoned:
                with self._lock:
                    if self._retire > 0:
                        self._retire -= 1
                        return

    def shutdown(self, wait_s: float = 10.0) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            threads = list(self._threads)
        for _ in threads:
            self._queue.put(None)
        deadline = time.monotonic() + wait_s
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
