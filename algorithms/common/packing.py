"""Seed packs: K seeds of one run (the same algorithm, task and config) trained in one process, in lockstep.

A GPU runs one small-MLP run nearly idle (kernel launches dominate); a research grid is mostly seeds of the same cell.
A packed algorithm writes its `train_seeds()` once for K >= 1 seeds, and its `train()` is the pack of one:
- `seeded_members`: each seed's networks are built under that seed's RNG, exactly as a lone run builds them, and the
  seed's torch stream continues as a `torch.Generator` of its own, from which every later draw of that seed comes
  (target noise, exploration noise, replay indices). So seed k of a pack draws what its lone run draws.
- `SeedStack`: the K copies of one network, their parameters stacked along a leading seed axis (K, *shape). A call
  maps over that axis with `torch.func.vmap` (inputs (K, B, ...) -> outputs (K, B, ...)): one batched kernel per
  layer for all seeds. With K = 1 it calls the network on the parameters' only slice, the very operations of an
  unpacked run, so a pack of one computes bit for bit what the lone run did before packing existed.
- Losses are reduced per seed, (K,), and summed for one backward pass: a seed's gradients are its own loss's. One
  optimizer over stacked parameters keeps per-element state (Adam's moments), so seeds stay independent; a gradient
  clip must be per seed (`clip_grad_norm_per_seed`), never one global norm over the pack.
- `SeedPack`: the seeds' `RunState`s (one ordinary run directory each: metrics, checkpoints, evaluations) stepped in
  lockstep. Checkpoints are saved together, each seed's slice in its own directory (`SeedStack.seed(k)` and
  `OptimizerSlice` give the lone run's state_dict layout, so a packed seed's checkpoint is an ordinary one: it
  evaluates, and resumes alone or in another pack). A seed whose losses, weights or returns become non-finite is
  recorded as diverged and drops out (its env is no longer stepped, nothing more is logged or saved for it) while the
  others go on.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from torch.func import functional_call, vmap

from algorithms.common.checkpoint import RunInterrupted
from algorithms.common.config import RunConfig
from algorithms.common.logging import TrainResult
from algorithms.common.run import RunState
from algorithms.common.seeding import seed_everything


def same_run_but_seed(cfgs: Sequence[RunConfig]) -> RunConfig:
    """The pack's shared config (the first seed's); ValueError, before any compute, unless the configs differ in their
    seeds alone and no seed is there twice."""
    if not cfgs:
        raise ValueError("a pack needs at least one seed")
    first = cfgs[0]
    for cfg in cfgs[1:]:
        differ = [
            f.name for f in dataclasses.fields(cfg) if f.name != "seed" and getattr(cfg, f.name) != getattr(first, f.name)
        ]
        if type(cfg) is not type(first) or differ:
            raise ValueError(f"the seeds of a pack must share one config; these differ in: {', '.join(differ) or 'type'}")
    seeds = [cfg.seed for cfg in cfgs]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"a pack trains each seed once; got seeds {seeds}")
    return first


def seeded_members(
    seeds: Sequence[int], build: Callable[[], Any], device: torch.device, deterministic: bool
) -> tuple[list[Any], list[torch.Generator]]:
    """For each seed: seed every RNG as a lone run does (`seed_everything`), `build()` its networks (drawing their
    initial weights from the seed's stream), then take the rest of the seed's torch stream as a Generator on `device`
    (a CUDA stream has drawn nothing yet: the networks were built on the CPU). Returns (what `build` made, per seed;
    the seeds' generators)."""
    members, streams = [], []
    for seed in seeds:
        seed_everything(seed, deterministic)
        members.append(build())
        stream = torch.Generator(device=device)
        if device.type == "cpu":
            stream.set_state(torch.get_rng_state())
        else:
            stream.manual_seed(seed)
        streams.append(stream)
    return members, streams


def draw_normal(streams: Sequence[torch.Generator], shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """Standard normal noise (K, *shape), seed k's part drawn from stream k (as its lone run's torch.randn)."""
    return torch.stack([torch.randn(shape, generator=stream, device=device) for stream in streams])


class _Method(nn.Module):
    """Calls a method of the wrapped network by name, so `functional_call` can run any method, not only forward."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, method: str, *inputs: torch.Tensor, **options: Any) -> Any:
        return getattr(self.network, method)(*inputs, **options)


class SeedStack(nn.Module):
    """K copies of one network, one per seed: every parameter and buffer is the members' stacked, (K, *shape), under
    the member's own name. `stack(x)` / `stack.call("method", x, ...)`: inputs (K, B, ...) -> outputs (K, B, ...),
    seed k's slice computed by seed k's weights."""

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        self.seeds = len(members)
        self.bound = _Method(copy.deepcopy(members[0]))
        for name, _ in list(self.bound.named_parameters()):
            module_name, _, leaf = name.rpartition(".")
            stacked = torch.stack([m.get_parameter(name.removeprefix("network.")).detach() for m in members])
            self.bound.get_submodule(module_name)._parameters[leaf] = nn.Parameter(stacked)
        for name, _ in list(self.bound.named_buffers()):
            module_name, _, leaf = name.rpartition(".")
            stacked = torch.stack([m.get_buffer(name.removeprefix("network.")) for m in members])
            self.bound.get_submodule(module_name)._buffers[leaf] = stacked

        self._cache: tuple[dict[str, torch.Tensor], nn.Module | None] | None = None

    def _apply(self, fn: Callable[..., Any], recurse: bool = True) -> SeedStack:
        self._cache = None  # .to() / .cuda() give buffers new tensors: name them again
        return super()._apply(fn, recurse)

    def _tensors(self) -> dict[str, torch.Tensor]:
        """Every stacked parameter and buffer by its name in `bound`."""
        return self._named()[0]

    def _named(self) -> tuple[dict[str, torch.Tensor], nn.Module | None]:
        """(the stacked tensors by name, for one seed the lone network): kept until the module is moved. The lone
        network is a copy of the member whose parameters and buffers are views of the stacks' only slices, so a pack
        of one runs the member's own code with no per-call rebinding (functional_call's would cost a lone TD3 run
        about a fifth of its speed on a CPU); gradients flow through the views to the stacks."""
        if self._cache is None:
            tensors = {**dict(self.bound.named_parameters()), **dict(self.bound.named_buffers())}
            lone = None
            if self.seeds == 1:  # views made with autograd on, wherever the first call comes from (inference mode)
                lone = self._lone_network(tensors)
            self._cache = (tensors, lone)
        return self._cache

    @torch.inference_mode(False)
    @torch.enable_grad()
    def _lone_network(self, tensors: dict[str, torch.Tensor]) -> nn.Module:
        lone = copy.deepcopy(self.bound.network)
        for name, tensor in tensors.items():
            module_name, _, leaf = name.removeprefix("network.").rpartition(".")
            module = lone.get_submodule(module_name)
            module._parameters.pop(leaf, None)
            module._buffers.pop(leaf, None)
            setattr(module, leaf, tensor.squeeze(0))
        return lone

    def _apply_weights(
        self, weights: dict[str, torch.Tensor], method: str, inputs: Sequence[torch.Tensor], options: dict[str, Any]
    ) -> Any:
        """The network's `method` on one seed's `weights`. Shared modules (ActorCritic's CNN torso, which its actor and
        critic both hold) go by one name each: `tie_weights=False`, since functional_call's tied-weights bookkeeping
        leaves one seed's slice in place of the stack after the call."""
        return functional_call(self.bound, weights, (method, *inputs), options, tie_weights=False)

    def forward(self, *inputs: torch.Tensor, **options: Any) -> Any:
        return self.call("forward", *inputs, **options)

    def call(self, method: str, *inputs: torch.Tensor, **options: Any) -> Any:
        """The network's `method` for every seed at once: inputs and outputs carry the leading seed axis; keyword
        `options` (flags such as QEnsemble's `frozen`) go to every seed's call unchanged."""
        tensors, lone = self._named()
        if lone is not None:  # one seed: the lone run's own operations, on the (only) slice of each tensor
            out = getattr(lone, method)(*(x.squeeze(0) for x in inputs), **options)
            return tuple(o[None] for o in out) if isinstance(out, tuple) else out[None]

        def one_seed(weights: dict[str, torch.Tensor], *xs: torch.Tensor) -> Any:
            return self._apply_weights(weights, method, xs, options)

        return vmap(one_seed)(tensors, *inputs)

    def stacked(self, name: str) -> torch.Tensor:
        """The members' parameter or buffer `name` (a member's attribute path), stacked: (K, *shape). For terms a loss
        takes from the weights directly (PPO-KL's log-std); gradients reach the stack."""
        return self._tensors()[f"network.{name}"]

    def member(self, k: int, method: str = "forward") -> Callable[..., Any]:
        """Seed k's network alone (inputs without the seed axis): its evaluation policy."""

        def call(*inputs: torch.Tensor) -> Any:
            tensors, lone = self._named()
            if lone is not None:
                return getattr(lone, method)(*inputs)
            return self._apply_weights({n: t[k] for n, t in tensors.items()}, method, inputs, {})

        return call

    def seed(self, k: int) -> SeedSlice:
        """Seed k's part as a lone run's network: its state_dict, load_state_dict and parameters."""
        return SeedSlice(self, k)


class SeedSlice:
    """Seed k of a `SeedStack`, seen as the lone network: state_dict keys and shapes are the member's own."""

    def __init__(self, stack: SeedStack, k: int) -> None:
        self.stack, self.k = stack, k

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {name.removeprefix("network."): t[self.k].detach().clone() for name, t in self.stack._tensors().items()}

    def load_state_dict(self, saved: dict[str, torch.Tensor]) -> None:
        tensors = {name.removeprefix("network."): t for name, t in self.stack._tensors().items()}
        if saved.keys() != tensors.keys():
            raise KeyError(f"state_dict keys {sorted(saved)} are not the network's {sorted(tensors)}")
        with torch.no_grad():
            for name, t in tensors.items():
                if saved[name].shape != t.shape[1:]:
                    raise ValueError(f"{name}: saved shape {tuple(saved[name].shape)}, network's {tuple(t.shape[1:])}")
                t[self.k].copy_(saved[name])

    def parameters(self) -> list[torch.Tensor]:
        return [p[self.k] for p in self.stack.parameters()]


class OptimizerSlice:
    """Seed k's part of an optimizer over `SeedStack` parameters, as the lone run's optimizer state_dict: per-element
    state (Adam's moments, shaped like the stacked parameter) is sliced; scalar state (Adam's step count) is shared by
    the seeds of a lockstep pack and kept whole."""

    def __init__(self, optimizer: torch.optim.Optimizer, k: int) -> None:
        self.optimizer, self.k = optimizer, k

    def _params(self) -> list[torch.Tensor]:
        return [p for group in self.optimizer.param_groups for p in group["params"]]

    def state_dict(self) -> dict[str, Any]:
        whole = self.optimizer.state_dict()
        state = {}
        for i, p in enumerate(self._params()):
            if i in whole["state"]:
                saved = whole["state"][i]  # moments sliced, the shared step count copied (never aliased)
                state[i] = {name: _copy(value[self.k] if _per_element(value, p) else value) for name, value in saved.items()}
        return {"state": state, "param_groups": whole["param_groups"]}

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        params = self._params()
        saved_ids = [i for group in saved["param_groups"] for i in group["params"]]
        if len(saved_ids) != len(params):
            raise ValueError(f"saved optimizer has {len(saved_ids)} parameters, this one {len(params)}")
        for group, saved_group in zip(self.optimizer.param_groups, saved["param_groups"]):
            group.update({key: value for key, value in saved_group.items() if key != "params"})
        on_device = any(group.get("fused") or group.get("capturable") for group in self.optimizer.param_groups)
        for i, p in zip(saved_ids, params):
            state = self.optimizer.state[p]
            for name, value in saved["state"].get(i, {}).items():
                if isinstance(value, torch.Tensor) and value.dim() > 0:
                    if value.shape != p.shape[1:]:
                        raise ValueError(f"optimizer state {name}: saved shape {tuple(value.shape)}, {tuple(p.shape[1:])}")
                    if name not in state:
                        state[name] = torch.zeros_like(p)
                    with torch.no_grad():
                        state[name][self.k].copy_(value)
                elif isinstance(value, torch.Tensor):  # a step count: on the parameter's device for fused Adam
                    state[name] = value.to(p.device if on_device else value.device, torch.float32).clone()
                else:
                    state[name] = value


def _copy(value: Any) -> Any:
    return value.clone() if isinstance(value, torch.Tensor) else value


def _per_element(value: Any, param: torch.Tensor) -> bool:
    return isinstance(value, torch.Tensor) and value.shape == param.shape and value.dim() > 0


def take_rows(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x (K, R, ...) at each seed's own row indices `index` (K, M): (K, M, ...). Whole rows by index_select (an Atari
    frame stack taken by advanced indexing is copied byte by byte, about 4x slower on the CPU)."""
    seeds, rows = x.shape[:2]
    if seeds == 1:  # the lone run's one index_select
        return x[0].index_select(0, index[0])[None]
    offsets = torch.arange(seeds, device=index.device)[:, None] * rows  # seed k's rows start at k R
    flat = x.reshape(seeds * rows, *x.shape[2:]).index_select(0, (index + offsets).reshape(-1))
    return flat.reshape(seeds, -1, *x.shape[2:])


def clip_grad_norm_per_seed(parameters: Sequence[torch.Tensor], max_norm: float) -> torch.Tensor:
    """Each seed's gradient scaled to a global norm of at most `max_norm` over its own slices, as
    `torch.nn.utils.clip_grad_norm_` would clip that seed's lone run; returns the norms before clipping, (K,)."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if grads and grads[0].shape[0] == 1:  # one seed: the lone run's own clip, to the bit
        return torch.nn.utils.clip_grad_norm_(parameters, max_norm)[None]
    norms = torch.stack([g.flatten(1).norm(dim=1) for g in grads]).norm(dim=0)  # (K,)
    scale = (max_norm / (norms + 1e-6)).clamp(max=1.0)  # (K,)
    for g in grads:
        g.mul_(scale.view(-1, *([1] * (g.dim() - 1))))
    return norms


class SeedPack:
    """K `RunState`s stepped in lockstep (see the module docstring). Use it as a run's `RunState`, with per-seed
    arguments; `live` lists the seeds still training."""

    def __init__(self, runs: Sequence[RunState]) -> None:
        self.runs = list(runs)
        self.diverged: dict[int, FloatingPointError] = {}
        self.live = list(range(len(self.runs)))  # the seeds still training, in order

    def _diverge(self, k: int, exc: FloatingPointError) -> None:
        self.diverged[k] = exc
        self.live = [j for j in self.live if j != k]

    def each(self, action: Callable[[int, RunState], None]) -> None:
        """`action(k, run)` for every live seed; a seed whose action raises FloatingPointError is diverged."""
        for k in self.live:
            try:
                action(k, self.runs[k])
            except FloatingPointError as exc:
                self._diverge(k, exc)

    def restore(self, **values: Any) -> tuple[int, list[dict[str, Any]]]:
        """Every seed from its newest checkpoint (RunState.restore); they must stand at the same step. Returns the step
        and each seed's `values` (the defaults given here on a fresh start, the saved ones on a resume)."""
        restored = [run.restore(**values) for run in self.runs]
        steps = {step for step, _ in restored}
        if len(steps) > 1:
            where = ", ".join(f"seed {run.cfg.seed}: step {step:,}" for run, (step, _) in zip(self.runs, restored))
            raise ValueError(f"the seeds of a pack resume from different checkpoints ({where}); run them apart")
        return restored[0][0], [seed_values for _, seed_values in restored]

    def log(self, step: int, rows: Sequence[dict[str, float]]) -> None:
        """rows[k] to seed k's logger (a non-finite loss diverges that seed)."""
        self.each(lambda k, run: run.logger.log(step, rows[k]))

    def steps_per_second(self, step: int) -> float:
        """Each seed's environment steps per second (the pack's aggregate is K times it)."""
        return self.runs[0].steps_per_second(step)

    def record_episodes(self, k: int, episodes: list[tuple[int, float, int]], step: int) -> None:
        """Seed k's training episodes that ended (RunState.record_episodes)."""
        if episodes:
            try:
                self.runs[k].record_episodes(episodes, step)
            except FloatingPointError as exc:
                self._diverge(k, exc)

    def evaluate_if_due(self, step: int, policies: Sequence[Callable[[np.ndarray], np.ndarray]]) -> None:
        self.each(lambda k, run: run.evaluate_if_due(step, policies[k]))

    def checkpoint_if_due(self, step: int, per_seed: Sequence[dict[str, Any]] | None = None, **values: Any) -> None:
        """All live seeds save together when any seed's checkpointer says a save is due (an interval, a stop request,
        a pause step), so their newest checkpoints stand at one step; a stop or pause is raised after every save.
        `values` are saved with every seed, `per_seed[k]` with seed k alone (PPO-KL's beta)."""
        checkpoints = [self.runs[k].checkpoint for k in self.live if self.runs[k].checkpoint is not None]
        if not any([c.due(step) for c in checkpoints]):  # a list: every checkpointer counts from here
            return
        stop: RunInterrupted | None = None
        for k in self.live:
            try:
                self.runs[k].save(step, **values, **(per_seed[k] if per_seed is not None else {}))
            except FloatingPointError as exc:
                self._diverge(k, exc)
            except RunInterrupted as exc:
                stop = stop or exc
        if stop is not None:
            raise stop

    def finish(self, step: int, policies: Sequence[Callable[[np.ndarray], np.ndarray]]) -> list[TrainResult | Exception]:
        """Each seed's result (RunState.finish), or the FloatingPointError it diverged with."""
        results: dict[int, TrainResult] = {}

        def finish_one(k: int, run: RunState) -> None:
            results[k] = run.finish(step, policies[k])

        self.each(finish_one)
        return [results[k] if k in results else self.diverged[k] for k in range(len(self.runs))]


def lone(results: list[TrainResult | Exception]) -> TrainResult:
    """The result of a pack of one seed (a lone run): its TrainResult, or its divergence raised."""
    (result,) = results
    if isinstance(result, Exception):
        raise result
    return result
