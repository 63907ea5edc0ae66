"""Test harness: holds a run at a known point, so a kill or a signal lands there on any machine speed.

Python imports `sitecustomize` at start-up from the path, so a test that puts this folder first on PYTHONPATH and sets
RLGRID_HOLD_DIR reaches every process of the run it starts (the `rlgrid` command, grid workers, submitit jobs).
In each such process, once it has saved RLGRID_HOLD_AFTER_SAVES checkpoints (default 1; 0: hold at the first step),
the next `Checkpointer.due()` at a later step writes `held-<pid>.json` (pid, checkpoint directory, newest checkpoint
step) into RLGRID_HOLD_DIR and waits there: past its newest checkpoint, with work done since, not finished. The wait
ends when a stop is requested (SIGINT/SIGTERM: the run then checkpoints and stops, as from any safe point), unless
RLGRID_HOLD_IGNORES_STOP=1 (a run stuck away from a safe point: only a second signal or SIGKILL ends it; once the
first signal has been handled, `stop-seen-<pid>` appears in RLGRID_HOLD_DIR).
A run is held once (a retry or a resume of it runs through), and only if its checkpoint directory contains
RLGRID_HOLD_ONLY (default: any run).
"""

import os

if os.environ.get("RLGRID_HOLD_DIR"):
    import json
    import time
    from pathlib import Path

    from algorithms.common import checkpoint as _checkpoint

    _hold_dir = Path(os.environ["RLGRID_HOLD_DIR"])
    _after_saves = int(os.environ.get("RLGRID_HOLD_AFTER_SAVES", "1"))
    _ignores_stop = os.environ.get("RLGRID_HOLD_IGNORES_STOP") == "1"
    _only = os.environ.get("RLGRID_HOLD_ONLY", "")
    _saves = 0
    _held = False
    _save, _due = _checkpoint.Checkpointer.save, _checkpoint.Checkpointer.due

    def _counting_save(self, step, *args, **kwargs):
        global _saves
        _saves += 1
        return _save(self, step, *args, **kwargs)

    def _holding_due(self, step):
        global _held
        if (
            not _held
            and _saves >= _after_saves
            and _only in str(self.directory)
            and step > _checkpoint.newest_checkpoint_step(self.directory)
            and not any(json.loads(p.read_text())["directory"] == str(self.directory) for p in _hold_dir.glob("held-*.json"))
        ):
            _held = True
            newest = _checkpoint.newest_checkpoint_step(self.directory)
            record = {"pid": os.getpid(), "directory": str(self.directory), "step": newest, "at_step": step}
            tmp = _hold_dir / f".held-{os.getpid()}.json"
            tmp.write_text(json.dumps(record))
            tmp.rename(_hold_dir / f"held-{os.getpid()}.json")
            while _ignores_stop or not self.stop_requested:
                if self.stop_requested and not (seen := _hold_dir / f"stop-seen-{os.getpid()}").exists():
                    seen.touch()  # the first signal was handled: the test may send the second
                time.sleep(0.01)
        return _due(self, step)

    _checkpoint.Checkpointer.save = _counting_save
    _checkpoint.Checkpointer.due = _holding_due
