"""The Logger protocol and the loggers that need nothing outside the standard library.

Algorithms report only through `logger.log(step, metrics)`; `step` is environment steps summed over env
copies. Metric names follow CleanRL (`charts/episodic_return`, `losses/value_loss`, `eval/episodic_return`).
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, TextIO, runtime_checkable


@runtime_checkable
class Logger(Protocol):
    def log(self, step: int, metrics: dict[str, float]) -> None: ...

    def close(self) -> None: ...


@dataclass
class TrainResult:
    """What `train()` returns; the runner writes it as `result.json`."""

    global_step: int
    wall_time_s: float
    steps_per_second: float
    final_eval_return: float | None = None
    eval_returns: list[tuple[int, float]] = field(default_factory=list)
    last_episodic_returns: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class NullLogger:
    def log(self, step: int, metrics: dict[str, float]) -> None:
        pass

    def close(self) -> None:
        pass


class RecordingLogger:
    """Keeps every (step, metrics) pair in memory: for tests and notebooks."""

    def __init__(self) -> None:
        self.records: list[tuple[int, dict[str, float]]] = []

    def log(self, step: int, metrics: dict[str, float]) -> None:
        self.records.append((step, dict(metrics)))

    def close(self) -> None:
        pass

    def series(self, key: str) -> list[tuple[int, float]]:
        return [(step, m[key]) for step, m in self.records if key in m]


def format_duration(seconds: float) -> str:
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class ConsoleLogger:
    """Progress display: steps done, steps/s, latest episodic and eval return, ETA.

    On a terminal the line is redrawn in place at most `tty_interval_s` apart; when output is a file or
    a pipe (cluster logs) one line is written every `log_interval_s`, so logs do not flood.
    """

    def __init__(
        self,
        total_steps: int | None = None,
        prefix: str = "",
        stream: TextIO | None = None,
        log_interval_s: float = 30.0,
        tty_interval_s: float = 0.5,
    ) -> None:
        self.total_steps = total_steps
        self.prefix = prefix
        self.stream = stream or sys.stdout
        self.is_tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval = tty_interval_s if self.is_tty else log_interval_s
        self.start_time = time.perf_counter()
        self.first_step: int | None = None
        self.last_print = -math.inf
        self.step = 0
        self.episodic_return: float | None = None
        self.eval_return: float | None = None
        self.printed_step: int | None = None
        self.line_open = False  # a terminal line drawn without its newline yet

    def log(self, step: int, metrics: dict[str, float]) -> None:
        if self.first_step is None:  # the rate is measured from the first step seen (resumed runs too)
            self.first_step, self.last_print = step, time.perf_counter()
        self.step = step
        self.episodic_return = metrics.get("charts/episodic_return", self.episodic_return)
        if "eval/episodic_return" in metrics:
            self.eval_return = metrics["eval/episodic_return"]
            self._print(force=True)
        elif time.perf_counter() - self.last_print >= self.interval:
            self._print()

    def _line(self) -> str:
        elapsed = time.perf_counter() - self.start_time
        rate = (self.step - (self.first_step or 0)) / elapsed if elapsed > 0 else 0.0
        parts = [f"{self.prefix}step {self.step:,}" + (f"/{self.total_steps:,}" if self.total_steps else "")]
        parts.append(f"{rate:,.0f} steps/s")
        if self.episodic_return is not None:
            parts.append(f"return {self.episodic_return:.1f}")
        if self.eval_return is not None:
            parts.append(f"eval {self.eval_return:.1f}")
        if self.total_steps and rate > 0:
            parts.append(f"ETA {format_duration((self.total_steps - self.step) / rate)}")
        return " | ".join(parts)

    def _print(self, force: bool = False) -> None:
        self.last_print, self.printed_step = time.perf_counter(), self.step
        if self.is_tty:
            self.stream.write("\r\033[K" + self._line() + ("\n" if force else ""))
            self.line_open = not force
        else:
            self.stream.write(self._line() + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.printed_step != self.step:
            self._print(force=True)
        elif self.line_open:
            self.stream.write("\n")
            self.stream.flush()
