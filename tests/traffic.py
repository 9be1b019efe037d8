"""Steady load through the simulated data plane, for tests that assert no request fails while something changes."""

from __future__ import annotations

import threading
import time

import requests


def cluster_of(reply: requests.Response) -> str:
    """The cluster whose pod answered (the simulator's ``X-Sim-Backend`` header: ``cluster/pod``)."""
    return reply.headers["X-Sim-Backend"].split("/", 1)[0]


class Load:
    """Requests at ``rate`` per second on a fixed schedule, in a thread: (time sent, status, cluster or error)."""

    def __init__(self, url: str, rate: float = 20.0) -> None:
        self.url, self.rate = url, rate
        self.log: list[tuple[float, int, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        with requests.Session() as s:
            began = time.monotonic()
            i = 0
            while not self._stop.is_set():
                sent = time.monotonic()
                try:
                    r = s.get(f"{self.url}/", timeout=5)
                    self.log.append((sent, r.status_code, cluster_of(r) if r.status_code == 200 else r.text[:80]))
                except requests.RequestException as exc:
                    self.log.append((sent, 0, type(exc).__name__))
                i += 1
                self._stop.wait(max(0.0, began + i / self.rate - time.monotonic()))

    def hold(self, seconds: float) -> None:
        """Let the load run this long (a window of traffic, not a wait for a state)."""
        self._stop.wait(seconds)

    def spans(self, start: float, end: float) -> bool:
        """Whether requests were sent from no later than ``start`` until no earlier than ``end`` (monotonic
        times): the load covered that whole window, whatever its length."""
        return bool(self.log) and self.log[0][0] <= start and self.log[-1][0] >= end

    @property
    def failed(self) -> list[tuple[float, int, str]]:
        return [x for x in self.log if x[1] != 200]
