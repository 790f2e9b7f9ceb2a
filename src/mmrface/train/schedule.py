"""Learning-rate schedule: linear warm-up, then constant or cosine decay to `lr_final` x peak;
`from_step`, a setting that changes at given steps (`train.fidelity_full_from`); `objective_changes`,
the steps where the loss changes on purpose (the divergence guard starts fresh medians there).

The factor is a pure function of the step, so a resumed run sets exactly the learning rates an
uninterrupted one would have had (nothing to store in the checkpoint).
"""

from __future__ import annotations

import math


def lr_factor(step: int, total: int, warmup: int = 0, schedule: str = "constant", final: float = 0.1) -> float:
    """Multiplier of the peak learning rate at 0-based `step` of a `total`-step run."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    if schedule != "cosine":
        raise ValueError(f"unknown lr schedule {schedule!r}")
    span = max(total - warmup, 1)
    t = min(max(step - warmup, 0) / span, 1.0)
    return final + (1.0 - final) * 0.5 * (1.0 + math.cos(math.pi * t))


def from_step(points: dict[int, float], step: int, default: float) -> float:
    """A piecewise-constant setting: the value of the last `{start: value}` with start <= step."""
    value = default
    for start in sorted(points):
        if step >= start:
            value = points[start]
    return value


def objective_changes(fidelity_full_from: dict, loss_schedule: dict) -> set[int]:
    """Steps > 0 where the training objective changes by design: a `train.fidelity_full_from` step or a
    step of the validated loss schedule (`Objectives.schedule`: {name: [(step, weight), ...]})."""
    steps = set(fidelity_full_from or {})
    for points in loss_schedule.values():
        steps |= {start for start, _ in points}
    return {s for s in steps if s > 0}
