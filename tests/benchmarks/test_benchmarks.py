"""The benchmark run as a test (excluded from the default run): `make benchmarks`."""

from __future__ import annotations

import json

import pytest

from tests.benchmarks import run_benchmarks

pytestmark = [pytest.mark.benchmark, pytest.mark.timeout(3600)]


def test_benchmarks_write_results_and_the_readme_table() -> None:
    assert run_benchmarks.main([]) == 0
    results = json.loads(run_benchmarks.RESULTS.read_text())
    for key in (
        "speedup_vs_huggingtweets_to_loss",
        "useful_tokens_ratio_vs_run_clm",
    ):
        assert key in results["gpt2"]
    assert results["char_rnn"]["chars_per_s_ratio_vs_keras_baseline"] > 0
    assert run_benchmarks.BEGIN in run_benchmarks.TABLE_PAGE.read_text()


def test_serving_benchmarks_write_their_sections() -> None:
    from tests.benchmarks import serving

    assert serving.main([]) == 0
    results = json.loads(serving.RESULTS.read_text())
    assert results["generation"]["accepted_tweets_per_s_ratio"] > 0
    assert results["hot_swap"]["failed_requests"] == 0
    assert results["novelty"]["copies_after_filter"] == 0


def test_restart_recovery_writes_its_section() -> None:
    """Restart-to-first-reply after SIGKILL on this checkout (about 5 minutes on two cores)."""
    from tests.benchmarks import restart_recovery

    assert restart_recovery.main(["--kills", "20", "--label", "after"]) == 0
    section = json.loads(restart_recovery.RESULTS.read_text())["restart_recovery"]["after"]
    assert section["kills"] == 20
    assert section["taken_over_at_once"] == 20


def test_archive_import_writes_its_section() -> None:
    """A 50,000-tweet X export imports in under 10 s (about 30 s in all, with the code before)."""
    from tests.benchmarks import archive_import

    assert archive_import.main([]) == 0
    section = json.loads(archive_import.RESULTS.read_text())["archive_import"]
    assert section["tweets"] == 50_000 and section["within_target"]


def test_daemon_footprint_writes_its_section() -> None:
    """Cold start and RSS of a daemon, with no model and with a char-RNN worker (~2 minutes)."""
    from tests.benchmarks import daemon_footprint

    assert daemon_footprint.main(["--starts", "3", "--label", "after"]) == 0
    section = json.loads(daemon_footprint.RESULTS.read_text())["daemon_footprint"]["after"]
    assert section["median"]["no_model"]["daemon_rss_mb"] <= 150
    served = section["median"]["char_rnn_published"]
    assert served["daemon_rss_mb"] <= 150 and served["worker_rss_mb"] > 0


def test_console_benchmark_writes_its_section() -> None:
    """Console pages on a full account, and replies while it is polled (~2 minutes)."""
    from tests.benchmarks import console

    assert console.main([]) == 0
    section = json.loads(console.RESULTS.read_text())["console"]
    assert section["worst_p95_ms"] < 50
    assert section["replies"]["polls_per_second"] == 20
