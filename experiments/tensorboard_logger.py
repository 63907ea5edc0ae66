"""TensorBoard event files of a run (`--tensorboard`), as CleanRL writes them, next to metrics.jsonl.

Every `log(step, metrics)` becomes one scalar per metric, under the metric's own name (`charts/episodic_return`,
`losses/...`, `eval/episodic_return`) at its env step, through torch's `SummaryWriter`, into `<run>/tensorboard/`:
what metrics.jsonl holds, in TensorBoard's format (which stores scalars as float32).
`tensorboard --logdir runs/<suite>` shows every run of a suite.

A resumed run. Each process writes an event file of its own into the same folder. A resume logs again what was logged
after the checkpoint it resumes from (metrics.jsonl drops those lines); its event file therefore starts with a purge
at the first step after that checkpoint (SummaryWriter's `purge_step`, a SessionLog START event: TensorBoard drops the
points the earlier files have from that step on), so no step shows twice. TensorBoard reads a folder's event files in
the order of their names, which begin with the second they were made in; a new file is made once the clock has passed
the second of the newest one there (a wait of at most a second, for a run resumed within the second it stopped), so a
purge always follows what it purges. The events are flushed with every checkpoint, so whatever a resume keeps is on
disk. A run that has no event files yet although it has metrics (`--tensorboard` first given to a resumed run) gets
metrics.jsonl's lines so far first.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

EVENT_FILE_PREFIX = "events.out.tfevents."
MAX_CLOCK_WAIT_S = 5.0
"""the longest wait for the clock to pass the newest event file's second (longer: another machine's clock is ahead)"""


def check_tensorboard() -> None:
    """ValueError naming what to install when TensorBoard's writer cannot be imported (checked before any compute)."""
    try:
        import tensorboard  # noqa: F401
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError as exc:
        raise ValueError(f"--tensorboard needs TensorBoard ({exc}): pip install -e '.[tensorboard]'") from None


def event_files(directory: Path) -> list[Path]:
    """The event files in `directory`, in the order TensorBoard reads them (by name)."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.name.startswith(EVENT_FILE_PREFIX))


def _created_second(path: Path) -> int:
    """The second an event file was made in, from its name (`events.out.tfevents.<10-digit seconds>.<host>...`)."""
    try:
        return int(path.name[len(EVENT_FILE_PREFIX) :].split(".", 1)[0])
    except ValueError:
        return 0


class TensorBoardLogger:
    """A Logger writing TensorBoard scalars into `directory`. `resume_step`: the checkpoint step this process resumes
    from (None: a fresh start); `metrics_file`: the run's metrics.jsonl, replayed when the folder has no event file yet."""

    def __init__(self, directory: Path, resume_step: int | None = None, metrics_file: Path | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        directory = Path(directory)
        earlier = event_files(directory)
        if earlier:
            newest = max(_created_second(p) for p in earlier)
            if newest - time.time() > MAX_CLOCK_WAIT_S:
                print(
                    f"warning: an event file in {directory} is dated ahead of this machine's clock; TensorBoard may show "
                    "points of the run's earlier processes that this one logs again",
                    file=sys.stderr,
                )
            else:
                while int(time.time()) <= newest:
                    time.sleep(0.05)
        # Steps after the checkpoint are logged again: hide the earlier files' points from there on (all of them when
        # the run starts over, having never checkpointed).
        purge_step = (resume_step + 1 if resume_step is not None else 0) if earlier else None
        self.writer = SummaryWriter(log_dir=str(directory), purge_step=purge_step)
        if not earlier and metrics_file is not None and Path(metrics_file).is_file():
            for line in Path(metrics_file).read_text().splitlines():
                if line.strip():
                    record = json.loads(line)
                    step, wall_time = record.pop("step"), record.pop("time", None)
                    self._write(step, record, wall_time)

    def _write(self, step: int, metrics: dict[str, Any], wall_time: float | None = None) -> None:
        wall_time = time.time() if wall_time is None else wall_time
        for name, value in metrics.items():  # numbers only, as metrics.jsonl's
            self.writer.add_scalar(name, float(value), global_step=step, walltime=wall_time)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        self._write(step, metrics)

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
