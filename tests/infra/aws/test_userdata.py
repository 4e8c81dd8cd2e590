"""The instance's user-data: shellcheck-clean, and run under bash against stand-ins.

The metadata service is a small HTTP server that insists on IMDSv2 tokens; `aws`, `mount`,
`mkfs`, `blkid`, `lsblk`, `umount`, `shutdown` and the trainer are stub executables on PATH that
record their calls (the `aws` stub keeps "S3" in a folder).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from infra.aws.userdata import UserDataParams, render
from tests.support.daemon_process import wait_until

VOLUME_ID = "vol-0123456789abcdef0"
INSTANCE_ID = "i-0feedface0000001"
FLEET_ID = "fleet-11111111-2222-3333-4444-555555555555"
JOB = "20260101T000000Z-abc123"
S3_JOB = f"s3://bucket/parrotbot/acct/jobs/{JOB}"


@dataclass
class Metadata:
    """What the fake metadata service answers, and what it was asked."""

    notice: bool = False
    tokens: set[str] = field(default_factory=set)
    gets: list[tuple[str, bool]] = field(default_factory=list)
    puts: int = 0


def metadata_handler(state: Metadata) -> type[BaseHTTPRequestHandler]:
    tags = {"parrotbot:volume": VOLUME_ID, "parrotbot:fleet": FLEET_ID}

    class Handler(BaseHTTPRequestHandler):
        def do_PUT(self) -> None:
            if self.path != "/latest/api/token" or not self.headers.get(
                "X-aws-ec2-metadata-token-ttl-seconds"
            ):
                return self._send(400, "")
            token = secrets.token_hex(8)
            state.tokens.add(token)
            state.puts += 1
            return self._send(200, token)

        def do_GET(self) -> None:
            valid = self.headers.get("X-aws-ec2-metadata-token") in state.tokens
            state.gets.append((self.path, valid))
            if not valid:
                return self._send(401, "")
            path = self.path.removeprefix("/latest/meta-data/")
            if path == "instance-id":
                return self._send(200, INSTANCE_ID)
            if path.startswith("tags/instance/") and path.split("/")[-1] in tags:
                return self._send(200, tags[path.split("/")[-1]])
            if path == "spot/instance-action" and state.notice:
                return self._send(200, json.dumps({"action": "terminate", "time": "soon"}))
            return self._send(404, "")

        def _send(self, code: int, body: str) -> None:
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args: object) -> None:
            pass

    return Handler


@pytest.fixture
def metadata() -> Iterator[tuple[str, Metadata]]:
    state = Metadata()
    server = ThreadingHTTPServer(("127.0.0.1", 0), metadata_handler(state))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", state
    server.shutdown()
    server.server_close()


AWS_STUB = r"""
import os, shutil, sys
from pathlib import Path
args = sys.argv[1:]
with open(os.environ["STUB_LOG"], "a") as log:
    log.write("aws " + " ".join(args) + "\n")
root = Path(os.environ["FAKE_S3"])
def local(url):
    return root / url[len("s3://"):] if url.startswith("s3://") else Path(url)
if args[:2] == ["s3", "cp"]:
    rest, excluded, plain = args[2:], set(), []
    for i, arg in enumerate(rest):
        if arg == "--exclude":
            excluded.add(rest[i + 1])
        elif arg.startswith("--") or (i and rest[i - 1] == "--exclude"):
            continue
        else:
            plain.append(arg)
    source, target = plain
    if source == "-":
        local(target).parent.mkdir(parents=True, exist_ok=True)
        local(target).write_bytes(sys.stdin.buffer.read())
    elif "--recursive" in rest:
        for path in sorted(local(source).rglob("*")):
            if path.is_file() and path.name not in excluded:
                dest = local(target) / path.relative_to(local(source))
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, dest)
                with open(os.environ["STUB_LOG"], "a") as log:
                    log.write(f"copied {dest}\n")
    else:
        local(target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(local(source), local(target))
        with open(os.environ["STUB_LOG"], "a") as log:
            log.write(f"copied {local(target)}\n")
"""

TRAINER_STUB = r"""
import json, os, signal, sys, time
from pathlib import Path
def note(text):
    with open(os.environ["STUB_LOG"], "a") as log:
        log.write(text + "\n")
if "--help" in sys.argv:
    print("usage: python -m training.train --request REQUEST [--resume]")
    sys.exit(0)
note("trainer " + " ".join(sys.argv[1:]))
request = json.loads(Path(sys.argv[sys.argv.index("--request") + 1]).read_text())
mode = os.environ["STUB_TRAINER"]
if mode == "fail":
    sys.exit(3)
if mode == "wait":
    signal.signal(signal.SIGTERM, lambda *_: (note("trainer got SIGTERM"), sys.exit(0)))
    note("trainer waiting")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        time.sleep(0.05)
    sys.exit(9)
model = Path(request["checkpoints_dir"]) / request["model_kind"]
version = model / "v1"
(version / "weights").mkdir(parents=True)
(version / "weights" / "w.bin").write_bytes(b"w")
(version / "vocab.json").write_text("{}")
(version / "manifest.json").write_text("{}")
(model / "LATEST").write_text("v1\n")
"""


@dataclass
class Box:
    """One run's sandbox: stub folder, fake S3, volume mount point, call log."""

    root: Path
    imds_url: str
    state: Metadata

    @property
    def log(self) -> Path:
        return self.root / "calls.log"

    @property
    def s3(self) -> Path:
        return self.root / "s3"

    @property
    def mount_dir(self) -> Path:
        return self.root / "mnt"

    def calls(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []

    def index(self, prefix: str) -> int:
        return next(i for i, line in enumerate(self.calls()) if line.startswith(prefix))

    def script(self, max_run_seconds: int = 3600) -> Path:
        params = UserDataParams(
            job_id=JOB,
            attempt=1,
            region="us-east-1",
            s3_job=S3_JOB,
            model_kind="char_rnn",
            mount_dir=str(self.mount_dir),
            max_run_seconds=max_run_seconds,
            python=str(self.root / "bin" / "trainer"),
            bootstrap=('echo bootstrapped >>"$STUB_LOG"',),
            notice_poll_seconds=1,
            imds_url=self.imds_url,
            dev_dir=str(self.root / "dev"),
            poll_seconds=1,
            tag_wait_tries=3,
        )
        path = self.root / "userdata.sh"
        path.write_text(render(params))
        return path

    def start(
        self, trainer: str, *, formatted: bool = False, max_run_seconds: int = 3600
    ) -> subprocess.Popen[str]:
        env = {
            "PATH": f"{self.root / 'bin'}:{os.environ['PATH']}",
            "STUB_LOG": str(self.log),
            "FAKE_S3": str(self.s3),
            "STUB_TRAINER": trainer,
            "BLKID_FORMATTED": "1" if formatted else "0",
            "HOME": str(self.root),
        }
        return subprocess.Popen(
            ["bash", str(self.script(max_run_seconds))],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )


def _stub(path: Path, body: str) -> None:
    path.write_text(body)
    path.chmod(0o755)


@pytest.fixture
def box(tmp_path: Path, metadata: tuple[str, Metadata]) -> Box:
    url, state = metadata
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _stub(bin_dir / "aws", f"#!{sys.executable}\n{AWS_STUB}")
    _stub(bin_dir / "trainer", f"#!{sys.executable}\n{TRAINER_STUB}")
    for name in ("mount", "umount", "mkfs", "shutdown"):
        _stub(bin_dir / name, f'#!/bin/bash\necho "{name} $*" >>"$STUB_LOG"\n')
    _stub(
        bin_dir / "blkid",
        '#!/bin/bash\necho "blkid $*" >>"$STUB_LOG"\n[ "$BLKID_FORMATTED" = 1 ]\n',
    )
    serial = VOLUME_ID.replace("-", "")
    _stub(bin_dir / "lsblk", f'#!/bin/bash\nprintf "nvme0n1 volroot\\nnvme1n1 {serial}\\n"\n')
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev" / "nvme1n1").touch()
    job = tmp_path / "s3" / S3_JOB.removeprefix("s3://")
    (job / "datasets").mkdir(parents=True)
    (job / "datasets" / "poorrichard.jsonl").write_text('{"id": "1", "text": "a"}\n')
    request = {
        "model_kind": "char_rnn",
        "checkpoints_dir": str(tmp_path / "mnt" / "jobs" / JOB / "checkpoints"),
    }
    (job / "request.json").write_text(json.dumps(request))
    package = tmp_path / "code" / "training"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    with tarfile.open(job / "code.tar.gz", "w:gz") as archive:
        archive.add(package, arcname="training")
    return Box(tmp_path, url, state)


def test_the_rendered_user_data_passes_shellcheck(tmp_path: Path) -> None:
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed and could not be here (.ci/run installs it)")
    script = render(
        UserDataParams(
            job_id=JOB, attempt=2, region="eu-west-1", s3_job=S3_JOB, model_kind="char_rnn",
            mount_dir="/mnt/parrotbot", max_run_seconds=7200,
            bootstrap=("python3 -m pip install 'structlog>=24.1'",),
        )
    )  # fmt: skip
    path = tmp_path / "userdata.sh"
    path.write_text(script)
    result = subprocess.run(
        ["shellcheck", "--shell=bash", "--severity=style", str(path)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout
    assert "ATTEMPT=2" in script and "'structlog>=24.1'" in script


def test_a_finished_run_publishes_manifest_last_and_ends_the_instance(box: Box) -> None:
    process = box.start("publish")
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 0, output
    calls = box.calls()
    # Attach, then find the device by serial, format it only because blkid found it blank.
    assert (
        f"aws ec2 attach-volume --volume-id {VOLUME_ID} --instance-id {INSTANCE_ID}"
        in "\n".join(calls)
    )
    assert f"mkfs -t ext4 -L parrotbot {box.root}/dev/nvme1n1" in calls
    assert box.index("aws ec2 attach-volume") < box.index("mkfs") < box.index("mount ")
    assert "bootstrapped" in calls
    trainer = next(line for line in calls if line.startswith("trainer "))
    assert trainer.endswith(f"--request {box.mount_dir}/jobs/{JOB}/request.json --resume")

    version = box.s3 / S3_JOB.removeprefix("s3://") / "versions" / "char_rnn" / "v1"
    uploads = [line for line in calls if line.startswith(f"copied {version}")]
    assert uploads[-1] == f"copied {version}/manifest.json", "the manifest goes last"
    assert {f"copied {version}/vocab.json", f"copied {version}/weights/w.bin"} <= set(uploads)
    status = box.s3 / S3_JOB.removeprefix("s3://") / "status" / "attempt-1"
    assert status.read_text().strip() == "done v1"

    # Then: unmount, detach (with instance and device), delete the fleet, terminate, shut down.
    order = [
        "umount",
        "aws ec2 detach-volume",
        "aws ec2 delete-fleets",
        "aws ec2 terminate-instances",
        "shutdown -h now",
    ]
    positions = [box.index(step) for step in order]
    assert positions == sorted(positions) and box.index("umount") > box.index(
        f"copied {version}/manifest.json"
    )
    assert f"--fleet-ids {FLEET_ID} --terminate-instances" in "\n".join(calls)
    detach = next(line for line in calls if line.startswith("aws ec2 detach-volume"))
    assert f"--instance-id {INSTANCE_ID}" in detach and "--device /dev/sdf" in detach
    # IMDSv2 only: tokens were fetched, and no read went without one.
    assert box.state.puts > 0 and box.state.gets and all(valid for _path, valid in box.state.gets)


def test_a_spot_notice_stops_the_trainer_and_the_instance_cleans_up(box: Box) -> None:
    process = box.start("wait", formatted=True)
    wait_until(
        lambda: "trainer waiting" in box.calls(), timeout=30, message="trainer never started"
    )
    box.state.notice = True  # AWS announces the interruption
    output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output
    calls = box.calls()
    assert "trainer got SIGTERM" in calls
    assert not any(line.startswith("mkfs") for line in calls), "a formatted volume is not wiped"
    status = box.s3 / S3_JOB.removeprefix("s3://") / "status" / "attempt-1"
    assert status.read_text().strip() == "interrupted"
    assert not (box.s3 / S3_JOB.removeprefix("s3://") / "versions").exists()
    assert box.index("umount") < box.index("aws ec2 detach-volume") < box.index("shutdown -h now")
    assert (box.s3 / S3_JOB.removeprefix("s3://") / "logs" / "attempt-1.log").exists()


def test_a_failed_trainer_is_reported_and_the_instance_still_ends(box: Box) -> None:
    process = box.start("fail", formatted=True)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 0, output
    status = box.s3 / S3_JOB.removeprefix("s3://") / "status" / "attempt-1"
    assert status.read_text().strip() == "failed 3"
    assert "shutdown -h now" in box.calls()


def test_the_instance_schedules_its_own_end_at_boot(box: Box) -> None:
    """Before anything that could hang: a shutdown after max run time, tag wait and margin."""
    process = box.start("publish", max_run_seconds=7200)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 0, output
    calls = box.calls()
    backstop = next(line for line in calls if line.startswith("shutdown -h +"))
    minutes = int(backstop.split()[2].removeprefix("+"))
    # 3 tag tries of 1 s, 7200 s of training and its minute of grace, 30 min of margin.
    assert minutes == -(-(3 + 7200 + 60 + 30 * 60) // 60)
    assert box.index("shutdown -h +") < box.index("aws ec2 attach-volume")
    assert calls[-1] == "shutdown -h now"


def test_a_trainer_over_its_max_run_time_is_stopped_and_the_instance_ends(box: Box) -> None:
    # The trainer would wait 60 s; `timeout` sends it SIGTERM after 1 s, no launcher needed.
    process = box.start("wait", formatted=True, max_run_seconds=1)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 0, output
    calls = box.calls()
    assert "trainer got SIGTERM" in calls
    status = box.s3 / S3_JOB.removeprefix("s3://") / "status" / "attempt-1"
    assert status.read_text().strip().startswith("failed timeout"), status.read_text()
    assert box.index("umount") < box.index("aws ec2 detach-volume") < box.index("shutdown -h now")


def test_a_max_run_time_that_is_not_positive_is_refused() -> None:
    params = UserDataParams(
        job_id=JOB, attempt=1, region="us-east-1", s3_job=S3_JOB, model_kind="char_rnn",
        mount_dir="/mnt/parrotbot", max_run_seconds=0,
    )  # fmt: skip
    with pytest.raises(ValueError, match="max_run_seconds"):
        render(params)
