"""compile and cuda_graphs (algorithms.common.compiling): how a run's config decides what its hot paths become, and
that a step inductor will not capture in a CUDA graph still computes the eager numbers and says why. The capture
itself needs a CUDA device: test_packing's `gpu` test runs it there."""

from __future__ import annotations

import copy

import pytest
import torch
from torch._dynamo.utils import counters

from algorithms import td3
from algorithms.common import compiling
from algorithms.common.compiling import CapturedStep, compiled
from algorithms.common.config import RunConfig


def test_cuda_graphs_without_compile_is_refused_before_anything_runs():
    with pytest.raises(ValueError, match="cuda_graphs captures the compiled steps: set compile=True too"):
        RunConfig(cuda_graphs=True)
    with pytest.raises(ValueError, match="set compile=True too"):
        td3.Config(cuda_graphs=True)
    assert td3.Config(compile=True, cuda_graphs=True).cuda_graphs


def _double(x: torch.Tensor) -> torch.Tensor:
    return 2 * x


def test_the_config_decides_eager_compiled_or_captured(capsys, monkeypatch):
    assert compiled(_double, RunConfig()) is _double
    torch._dynamo.reset()
    counters.clear()
    step = compiled(_double, RunConfig(compile=True))
    assert torch.equal(step(torch.ones(3)), torch.full((3,), 2.0))
    assert counters["frames"]["ok"] == 1 and not counters["inductor"]["cudagraph_skips"]

    # cuda_graphs on the CPU: noted once per device type, compiled without graphs (inductor never asked to capture).
    monkeypatch.setattr(compiling, "_noted_devices", set())
    torch._dynamo.reset()
    counters.clear()
    steps = [compiled(_double, RunConfig(compile=True, cuda_graphs=True)) for _ in range(2)]
    assert not any(isinstance(s, CapturedStep) for s in steps)
    assert torch.equal(steps[0](torch.ones(3)), torch.full((3,), 2.0))
    assert counters["frames"]["ok"] == 1 and not counters["inductor"]["cudagraph_skips"]
    assert capsys.readouterr().err.count("note: cuda_graphs: device cpu has no CUDA graphs; compiled without them") == 1


def test_a_step_inductor_does_not_capture_computes_the_eager_updates_and_says_so_once(capsys):
    """CapturedStep on the CPU: inductor's reduce-overhead mode really declines to capture (a graph without a CUDA
    device), the steps still update the weights as eager ones do, and the warning names the function once."""
    torch.manual_seed(0)
    nets = [torch.nn.Linear(4, 2), None]
    nets[1] = copy.deepcopy(nets[0])
    optimizers = [torch.optim.Adam(net.parameters(), lr=1e-2) for net in nets]

    def update_for(k: int):
        def update(x: torch.Tensor) -> torch.Tensor:
            loss = nets[k](x).square().mean()
            optimizers[k].zero_grad(set_to_none=True)
            loss.backward()
            optimizers[k].step()
            return loss.detach()

        return update

    eager, captured = update_for(0), CapturedStep(update_for(1))
    torch._dynamo.reset()
    counters.clear()
    inputs = torch.randn(3, 8, 4)
    losses = [(eager(x), captured(x)) for x in inputs]
    for eager_loss, captured_loss in losses:
        torch.testing.assert_close(captured_loss, eager_loss, rtol=1e-5, atol=1e-6)
    for p, q in zip(nets[0].parameters(), nets[1].parameters()):
        torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-6)
    assert counters["inductor"]["cudagraph_skips"] >= 1
    warnings = [line for line in capsys.readouterr().err.splitlines() if "runs compiled without CUDA graphs" in line]
    assert len(warnings) == 1 and warnings[0].startswith(f"warning: {__name__}.update runs compiled without CUDA graphs")
    assert captured.fallback and captured.fallback in warnings[0]


def test_inductors_reason_for_not_capturing_reaches_the_warning():
    """The reason comes from inductor's own skip log (a private logger: this fails if a torch release moves it)."""
    from torch._inductor.cudagraph_utils import log_cudagraph_skip_and_bump_counter

    reasons = compiling._skip_reasons()
    before = counters["inductor"]["cudagraph_skips"]
    log_cudagraph_skip_and_bump_counter("skipping cudagraphs due to mutated inputs (1 instances)")
    assert reasons.messages[-1] == "skipping cudagraphs due to mutated inputs (1 instances)"
    assert counters["inductor"]["cudagraph_skips"] == before + 1
