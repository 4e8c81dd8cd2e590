"""train.log (a CSV whose first two columns are step and training loss), plots, and progress.

The column order is a promise to operators who still type ``plot "train.log" using 1:2``
in gnuplot: step first, training loss second. Empty cells mean "not measured at this step"
(validation runs only every N steps).
"""

from __future__ import annotations

import csv
import math
import sys
import time
from pathlib import Path
from typing import Any

import structlog

from training.files import atomic_write

log = structlog.get_logger(__name__)

LOG_NAME = "train.log"
PLOT_NAME = "loss.png"
COLUMNS = ("step", "train_loss", "val_loss", "lr", "tokens_per_s", "elapsed_s")


class TrainLog:
    """Appends one row per logged step; flushed per row so a crash loses at most one."""

    def __init__(self, run_dir: Path, *, resume_step: int | None = None) -> None:
        self.path = Path(run_dir) / LOG_NAME
        keep: list[dict[str, float | None]] = []
        if resume_step is not None and self.path.exists():
            # Rows past the checkpoint we resume from describe steps that will be redone.
            keep = [r for r in read_rows(self.path) if r["step"] <= resume_step]  # type: ignore[operator]
        self._rewrite(keep)

    def _rewrite(self, rows: list[dict[str, float | None]]) -> None:
        with self.path.open("w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(COLUMNS)
            for row in rows:
                writer.writerow([_cell(row[c]) for c in COLUMNS])

    def append(self, **values: float | None) -> None:
        with self.path.open("a", newline="", encoding="utf-8") as f:
            csv.writer(f).writerow([_cell(values.get(c)) for c in COLUMNS])


def _cell(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, int) or (float(value).is_integer() and abs(value) < 1e15):
        return str(int(value))
    return f"{value:.6g}"


def read_rows(path: Path) -> list[dict[str, float | None]]:
    """Parse a train.log; a missing or malformed file is a ValueError naming the file and line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ValueError(f"{path}: cannot read train.log ({e.strerror or e})") from e
    reader = csv.reader(text.splitlines())
    header = next(reader, None)
    if header is None or tuple(header[:2]) != COLUMNS[:2]:
        raise ValueError(f"{path}: not a train.log (the header must start with step,train_loss)")
    rows = []
    for lineno, cells in enumerate(reader, start=2):
        try:
            values = [float(c) if c else None for c in cells]
        except ValueError as e:
            raise ValueError(f"{path}:{lineno}: not a number ({e})") from e
        row = dict(zip(header, values, strict=False))
        if row.get("step") is None:
            raise ValueError(f"{path}:{lineno}: missing step")
        rows.append(row)
    return rows


def find_log(run: Path) -> Path:
    """Accept a train.log, a run folder or a published version folder."""
    run = Path(run)
    path = run if run.is_file() else run / LOG_NAME
    if not path.is_file():
        raise ValueError(f"{run}: no {LOG_NAME} there (give a run or version folder)")
    return path


def _series(rows: list[dict[str, float | None]], column: str) -> tuple[list[float], list[float]]:
    pairs = [(r["step"], r.get(column)) for r in rows if r.get(column) is not None]
    return [float(s) for s, _ in pairs], [float(v) for _, v in pairs]  # type: ignore[arg-type]


def save_plot(log_path: Path, png_path: Path | None = None) -> Path:
    """Draw train and validation loss against step into a PNG next to the log."""
    import matplotlib

    matplotlib.use("Agg")  # no display on a training box
    import matplotlib.pyplot as plt

    rows = read_rows(log_path)
    png_path = png_path or Path(log_path).with_name(PLOT_NAME)
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    for column, label in (("train_loss", "train"), ("val_loss", "validation")):
        xs, ys = _series(rows, column)
        if xs:
            ax.plot(xs, ys, label=label, marker="o" if column == "val_loss" else None)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats per token or character)")
    ax.set_title(Path(log_path).parent.name)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    try:  # a viewer (or the publish that copies it) never reads a half-drawn PNG
        atomic_write(png_path, lambda f: fig.savefig(f, format="png"))
    finally:
        plt.close(fig)
    return png_path


def terminal_plot(log_path: Path, *, width: int | None = None, height: int | None = None) -> str:
    """The same curves as text, for ``parrotbot plot RUN`` on a terminal or over ssh."""
    import plotext as plt

    rows = read_rows(log_path)
    plt.clear_figure()
    if width and height:
        plt.plotsize(width, height)
    for column, label in (("train_loss", "train"), ("val_loss", "validation")):
        xs, ys = _series(rows, column)
        if xs:
            plt.plot(xs, ys, label=label)
    plt.title(f"{Path(log_path).parent.name}: loss")
    plt.xlabel("step")
    return str(plt.build())


class Progress:
    """A tqdm bar on a terminal; structlog lines every ``every`` steps otherwise."""

    def __init__(self, total: int, initial: int, *, every: int = 10, name: str = "train") -> None:
        self.every = max(1, every)
        self.name = name
        self._bar: Any = None
        self._last = time.monotonic()
        if sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=initial, desc=name, unit="step", file=sys.stderr)

    def update(self, step: int, **metrics: float) -> None:
        if self._bar is not None:
            self._bar.update(step - self._bar.n)
            self._bar.set_postfix({k: f"{v:.4g}" for k, v in metrics.items()}, refresh=False)
        elif step % self.every == 0:
            log.info(f"{self.name}.progress", step=step, **metrics)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
