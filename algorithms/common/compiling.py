"""An algorithm's hot paths, compiled: a file wraps its acting, loss or update functions in `compiled(fn, cfg)` (its
docstring says which), and the run's config decides what that means.

- `compile=False`: `fn` itself.
- `compile=True`: `torch.compile(fn)` (inductor: fused kernels, fewer Python calls).
- `compile=True, cuda_graphs=True` on a CUDA device: `torch.compile(fn, mode="reduce-overhead")`. Inductor records
  each graph of `fn` (forward, backward, the optimizer step where `fn` takes one) into a CUDA graph on its first calls
  and replays it from then on: one launch for a whole step instead of one per kernel, which is what a small network
  on a GPU waits for (launches, not arithmetic, set its speed). Capture needs static shapes (every file's batches and
  env counts are fixed), inputs on the GPU, and optimizer state on the GPU: the files' fused Adam keeps its step
  count there, and torch.compile makes a traced optimizer capturable when its parameters are on CUDA.
  A replay writes its outputs into the same memory every time, so each call starts a new step
  (`torch.compiler.cudagraph_mark_step_begin`) and returns clones: a caller may keep a loss past the next update.
  What inductor cannot capture (a CPU tensor among the inputs, a mutated input that is not a parameter, ...) it runs
  compiled but uncaptured, and logs why; `compiled` prints that reason once per function, on stderr, so a run never
  loses its graphs silently.
  On a device other than CUDA, `cuda_graphs` is noted once and the functions are compiled without graphs.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any

import torch
from torch.utils._pytree import tree_map_only

from algorithms.common.config import RunConfig

_noted_devices: set[str] = set()


def compiled(fn: Callable[..., Any], cfg: RunConfig) -> Callable[..., Any]:
    """`fn` as `cfg` asks for it (module docstring): itself, torch.compile'd, or compiled and captured in CUDA graphs."""
    if not cfg.compile:
        return fn
    if not cfg.cuda_graphs:
        return torch.compile(fn)
    device = torch.device(cfg.device)
    if device.type != "cuda":
        if device.type not in _noted_devices:
            _noted_devices.add(device.type)
            print(f"note: cuda_graphs: device {cfg.device} has no CUDA graphs; compiled without them", file=sys.stderr)
        return torch.compile(fn)
    return CapturedStep(fn)


class _SkipReasons(logging.Handler):
    """Collects inductor's "skipping cudagraphs due to ..." warnings (its `cudagraphs` log artifact, off by default:
    a handler on that logger itself still receives them)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


_reasons: _SkipReasons | None = None


def _skip_reasons() -> _SkipReasons:
    global _reasons
    if _reasons is None:
        from torch._inductor import cudagraph_utils

        _reasons = _SkipReasons()
        for name in ("cudagraphs_log", "perf_hint_log"):  # where torch >= 2.6 and older releases log the skips
            if isinstance(getattr(cudagraph_utils, name, None), logging.Logger):
                getattr(cudagraph_utils, name).addHandler(_reasons)
    return _reasons


def _skips() -> int:
    """How many graphs inductor has declined to capture in this process."""
    from torch._dynamo.utils import counters

    return counters["inductor"]["cudagraph_skips"]


class CapturedStep:
    """`fn` compiled in mode "reduce-overhead" (CUDA graphs). Each call starts a new CUDA graph step, returns clones of
    the outputs, and the first time inductor declines to capture a graph of `fn`, prints which function and why."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.name = f"{fn.__module__}.{fn.__name__}"
        self.step = torch.compile(fn, mode="reduce-overhead")
        self.reasons = _skip_reasons()
        self.fallback: str | None = None  # why fn runs uncaptured, once inductor has said so

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        torch.compiler.cudagraph_mark_step_begin()
        skips, messages = _skips(), len(self.reasons.messages)
        out = self.step(*args, **kwargs)
        if _skips() != skips and self.fallback is None:
            said = self.reasons.messages[messages:]
            self.fallback = "; ".join(said) if said else "inductor gave no reason (it gives none for a graph on the CPU)"
            print(f"warning: {self.name} runs compiled without CUDA graphs: {self.fallback}", file=sys.stderr, flush=True)
        return tree_map_only(torch.Tensor, torch.Tensor.clone, out)
