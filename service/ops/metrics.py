"""Prometheus metrics read from the job store and the broker at scrape time (no process globals)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily, Metric, SummaryMetricFamily
from prometheus_client.registry import Collector

from jobstore.queue import QUEUES
from jobstore.repositories import jobs as repository
from prunekit.spec.api import JobStatus
from service.core.state import AppState

log = logging.getLogger(__name__)
STATES = tuple(JobStatus)


class JobStoreCollector(Collector):
    def __init__(self, state: AppState) -> None:
        self._state = state

    def describe(self) -> Iterator[Metric]:
        # Without this the registry would call collect() at registration, before migrations ran.
        return iter(())

    def collect(self) -> Iterator[Metric]:
        jobs = GaugeMetricFamily("prunekit_jobs", "Jobs in the store by state and queue.", labels=["state", "queue"])
        stages = SummaryMetricFamily(
            "prunekit_stage_duration_seconds", "Seconds spent per stage by finished jobs.", labels=["stage"]
        )
        with self._state.db.sessionmaker() as session:
            counts = {(s, q): n for s, q, n in repository.count_by_status(session)}
            for s in STATES:
                for q in QUEUES:
                    jobs.add_metric([s, q], counts.get((s, q), 0))
            for stage, count, total in repository.stage_duration_stats(session):
                stages.add_metric([stage], count_value=count, sum_value=total)
        yield jobs
        yield stages

        depth = GaugeMetricFamily("prunekit_queue_depth", "Messages waiting in the broker per queue.", labels=["queue"])
        up = GaugeMetricFamily("prunekit_broker_up", "1 if the broker answered the last scrape.")
        try:
            for q, n in self._state.broker.queue_depths().items():
                depth.add_metric([q], n)
            up.add_metric([], 1)
        except Exception:  # the broker being down is itself what this scrape reports
            log.warning("cannot read queue depth", exc_info=True)
            up.add_metric([], 0)
        yield depth
        yield up


def build_registry() -> tuple[CollectorRegistry, Counter]:
    registry = CollectorRegistry(auto_describe=True)
    requests = Counter(
        "prunekit_http_requests",
        "HTTP requests by method, route and status.",
        ["method", "route", "status"],
        registry=registry,
    )
    return registry, requests
