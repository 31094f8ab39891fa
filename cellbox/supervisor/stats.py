"""Server counters for ``server/stats``."""

from __future__ import annotations

import time
from collections import Counter

from cellbox.protocol.messages import ServerStats


class Stats:
    def __init__(self) -> None:
        self.started = time.monotonic()
        self.created = 0
        self.closed = 0
        self.respawned = 0
        self.evals: Counter[str] = Counter()
        self.kills: Counter[str] = Counter()
        self.detections: Counter[str] = Counter()

    def count_eval(self, status: str) -> None:
        self.evals[status] += 1

    def count_kill(self, cause: str) -> None:
        self.kills[cause] += 1

    def count_detections(self, counters: dict[str, int]) -> None:
        for name, n in counters.items():
            if n:
                self.detections[name] += n

    def snapshot(self, open_sessions: int) -> ServerStats:
        evals = {s: self.evals.get(s, 0) for s in ("ok", "error", "interrupted", "timeout", "killed")}
        detections = {
            k: self.detections.get(k, 0)
            for k in ("detected_blocking_import", "detected_blocking_call", "missed_attribute_chain")
        }
        detections.update(self.detections)
        return ServerStats(
            sessions={"open": open_sessions, "created": self.created, "closed": self.closed},
            evals=evals,
            kills=dict(self.kills),
            children_respawned=self.respawned,
            detections=detections,
            uptime_seconds=round(time.monotonic() - self.started, 3),
        )
