"""Helpers for tests of the retrain queue and launchers: job specs, waiting on job records."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from infra.job import Job, JobSpec
from infra.retrain_queue import RetrainQueue
from tests.support.daemon_process import wait_until
from training.dataset import dataset_hash, load_tweets


def job_spec(
    account: str,
    datasets: list[str],
    *,
    trigger: str = "test",
    model_kind: str = "char_rnn",
    model_config: dict[str, Any] | None = None,
) -> JobSpec:
    return JobSpec(
        account=account,
        model_kind=model_kind,
        targets=[path.rsplit("/", 1)[-1].removesuffix(".jsonl") for path in datasets],
        datasets=datasets,
        dataset_hash="test",
        model_config=model_config or {"units": 16},
        trigger=trigger,
    )


def wait_job(
    queue: RetrainQueue, job_id: str, check: Callable[[Job], bool], what: str, timeout: float = 120
) -> Job:
    """The job's record once `check` holds for it (polled, with a deadline)."""
    return wait_until(
        lambda: (job := queue.get(job_id)) is not None and check(job) and job,
        timeout=timeout,
        message=f"job {job_id} never {what}: {queue.get(job_id)}",
    )


def scrape_more(dataset: Path) -> str:
    """What the scraper does: rename a file with one more tweet over the dataset; its hash."""
    tweet = {"id": "1873368704429834999", "text": "Lost time is never found again."}
    replacement = dataset.with_name(f".{dataset.name}.tmp")
    replacement.write_bytes(dataset.read_bytes() + (json.dumps(tweet) + "\n").encode())
    os.replace(replacement, dataset)
    return dataset_hash(load_tweets([dataset]))
