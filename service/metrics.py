"""The service's figures in Prometheus' text format (``GET /metrics``).

Counters and histograms follow the committed events, as the dashboard's counts do: a job's
wait (queued → running) and run (running → its end) are timed from its own events. Gauges are
read when scraped, from what the service holds anyway: no query, however many jobs are stored.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from .jobs import TERMINAL, Event

# from a no-op's milliseconds to an import's hours
DURATION_BUCKETS_S = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 14400,
)  # fmt: skip
_TERMINAL = frozenset(s.value for s in TERMINAL)


class Metrics:
    """One service's metrics, on a registry of its own (several apps may share a process)."""

    def __init__(
        self,
        *,
        jobs_by_queue: Callable[[], Mapping[str, Mapping[str, int]]],
        workers: Callable[[], list[dict[str, Any]]],
        replaced: Callable[[], Mapping[str, int]],
        streams: Callable[[], int],
        streams_dropped: Callable[[], int],
    ) -> None:
        self.registry = CollectorRegistry()
        self._finished = Counter(
            "conveyor_jobs_finished", "Jobs that reached an end", ["task", "state"],
            registry=self.registry,
        )  # fmt: skip
        self._submits = Counter(
            "conveyor_submits", "Jobs submitted (made)", ["task"], registry=self.registry
        )
        self._duration = Histogram(
            "conveyor_job_duration_seconds", "A run, from its start to its end", ["task"],
            buckets=DURATION_BUCKETS_S, registry=self.registry,
        )  # fmt: skip
        self._wait = Histogram(
            "conveyor_job_wait_seconds", "From queued to started", ["task"],
            buckets=DURATION_BUCKETS_S, registry=self.registry,
        )  # fmt: skip
        self.registry.register(_Held(jobs_by_queue, workers, replaced, streams, streams_dropped))
        self._queued_at: dict[str, float] = {}  # job id → when it was queued (until it starts)
        self._started_at: dict[str, float] = {}  # job id → when it started (until it ends)

    def observe(self, events: Iterable[Event]) -> None:
        """Follow committed events (the store's ``on_commit``)."""
        for event in events:
            if event.kind != "state":
                continue
            data = event.data
            task, state = data["task"], data["state"]
            if data.get("from") is None:
                self._submits.labels(task).inc()
            if state == "queued":
                self._queued_at[event.job_id] = event.at
            elif state == "running":
                self._started_at[event.job_id] = event.at
                queued_at = self._queued_at.pop(event.job_id, None)
                if queued_at is not None:
                    self._wait.labels(task).observe(max(0.0, event.at - queued_at))
            if data.get("from") == "running":
                started_at = self._started_at.pop(event.job_id, None)
                if started_at is not None:
                    self._duration.labels(task).observe(max(0.0, event.at - started_at))
            if state in _TERMINAL:
                self._finished.labels(task, state).inc()
                self._queued_at.pop(event.job_id, None)

    def text(self) -> bytes:
        return generate_latest(self.registry)


class _Held(Collector):
    """The gauges: read at each scrape."""

    def __init__(
        self,
        jobs_by_queue: Callable[[], Mapping[str, Mapping[str, int]]],
        workers: Callable[[], list[dict[str, Any]]],
        replaced: Callable[[], Mapping[str, int]],
        streams: Callable[[], int],
        streams_dropped: Callable[[], int],
    ) -> None:
        self._jobs_by_queue = jobs_by_queue
        self._workers = workers
        self._replaced = replaced
        self._streams = streams
        self._streams_dropped = streams_dropped

    def collect(self) -> Iterator[Any]:
        jobs = GaugeMetricFamily("conveyor_jobs", "Stored jobs", labels=["state", "queue"])
        for queue, counts in sorted(self._jobs_by_queue().items()):
            for state, n in sorted(counts.items()):
                jobs.add_metric([state, queue], n)
        yield jobs
        workers = GaugeMetricFamily("conveyor_workers", "Worker processes", labels=["state"])
        states = {"busy": 0, "idle": 0, "starting": 0}
        for worker in self._workers():
            state = "busy" if worker["job_id"] else "idle" if worker["ready"] else "starting"
            states[state] += 1
        for state, n in states.items():
            workers.add_metric([state], n)
        yield workers
        restarts = CounterMetricFamily(
            "conveyor_worker_restarts", "Workers replaced, by why", labels=["reason"]
        )
        replaced = self._replaced()
        for reason in ("jobs", "memory", "killed", "died"):
            restarts.add_metric([reason], replaced.get(reason, 0))
        yield restarts
        yield GaugeMetricFamily("conveyor_sse_clients", "Open event streams", value=self._streams())
        yield CounterMetricFamily(
            "conveyor_sse_dropped",
            "Event streams dropped for a client that stopped reading",
            value=self._streams_dropped(),
        )
