"""The buttons: each calls the CLI's function and changes Redis or the volume as the CLI does."""

from __future__ import annotations

from starlette.testclient import TestClient

from bot.config import BotConfig
from bot.rules import opted_out_authors
from bot.state import BotState
from infra.retrain_queue import RetrainQueue
from tests.support.browser import csrf_of, seed_full
from tests.support.training_data import write_dataset
from training.dataset import dataset_path
from training.publish import read_latest


def _csrf(client: TestClient) -> str:
    return csrf_of(client.get("/models").text)


def test_removing_an_opt_out_opts_the_author_back_in(
    logged_in: TestClient, config: BotConfig, state: BotState
) -> None:
    seed_full(config, state, history=0)
    page = logged_in.get("/opt-outs").text
    assert "@alice_optout" in page and "@bob_optout" in page
    response = logged_in.post(
        "/opt-outs/remove", data={"csrf": csrf_of(page), "handle": "alice_optout"}
    )
    assert response.status_code == 200
    assert "@alice_optout opted back in" in response.text
    assert set(opted_out_authors(state)) == {"502"}
    again = logged_in.post(
        "/opt-outs/remove", data={"csrf": csrf_of(page), "handle": "alice_optout"}
    )
    assert "@alice_optout has not opted out" in again.text
    assert set(opted_out_authors(state)) == {"502"}


def test_rollback_asks_first_and_changes_nothing_until_confirmed(
    logged_in: TestClient, config: BotConfig, state: BotState
) -> None:
    seeded = seed_full(config, state, history=0)
    newer, older = seeded.versions
    asked = logged_in.post("/models/rollback", data={"csrf": _csrf(logged_in)})
    assert asked.status_code == 200
    assert "Roll back the model?" in asked.text
    assert f"<strong>{newer}</strong>" in asked.text and f"<strong>{older}</strong>" in asked.text
    assert 'name="confirm" value="yes"' in asked.text
    assert read_latest(config.model_dir) == newer
    assert newer not in state.bad_versions()


def test_a_confirmed_rollback_points_latest_back_and_marks_the_version_bad(
    logged_in: TestClient, config: BotConfig, state: BotState
) -> None:
    seeded = seed_full(config, state, history=0)
    newer, older = seeded.versions
    done = logged_in.post("/models/rollback", data={"csrf": _csrf(logged_in), "confirm": "yes"})
    assert done.status_code == 200
    assert f"LATEST now names {older} (was {newer}, recorded as bad)" in done.text
    assert read_latest(config.model_dir) == older
    assert state.bad_versions()[newer] == "rolled back by the operator"
    nothing_left = logged_in.post(
        "/models/rollback", data={"csrf": _csrf(logged_in), "confirm": "yes"}
    )
    assert "no good version older than" in nothing_left.text
    assert read_latest(config.model_dir) == older


def test_a_retrain_request_queues_a_job_as_parrotbot_retrain_does(
    logged_in: TestClient, config: BotConfig, state: BotState
) -> None:
    refused = logged_in.post("/models/retrain", data={"csrf": _csrf(logged_in)})
    assert "nothing to train on yet" in refused.text
    queue = RetrainQueue(state.redis, config.account)
    assert queue.list_jobs(5) == []
    write_dataset(dataset_path(config.data_dir, config.targets[0].handle), 20)
    queued = logged_in.post("/models/retrain", data={"csrf": _csrf(logged_in)})
    (job,) = queue.list_jobs(5)
    assert f"queued job {job.id}" in queued.text
    assert job.trigger == "console"
    merged = logged_in.post("/models/retrain", data={"csrf": _csrf(logged_in)})
    assert f"merged into waiting job {job.id}" in merged.text
    assert len(queue.list_jobs(5)) == 1
