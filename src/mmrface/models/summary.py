"""Model summaries: parameters, FLOPs and forward time per part (`mmrface info`, benchmarks).

FLOPs are counted by torch's own FlopCounterMode on a real forward pass (convolutions, grouped
convolutions and matrix products: 2 FLOPs per multiply-add; element-wise ops are not counted), so
the numbers are what the network does, not an estimate from a formula.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


@dataclass
class PartStats:
    name: str
    params: int
    trainable: int
    gflops: float | None = None


def count_params(module: nn.Module) -> tuple[int, int]:
    total = sum(p.numel() for p in module.parameters())
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    return total, trainable


def flops_by_part(model: nn.Module, inputs: tuple, parts: dict[str, nn.Module], **kwargs) -> tuple[float, dict[str, float]]:
    """Total FLOPs of `model(*inputs, **kwargs)` and the share of each named sub-module."""
    counter = FlopCounterMode(display=False, depth=None)
    with torch.no_grad(), counter:
        model(*inputs, **kwargs)
    counts = counter.get_flop_counts()
    names = {id(m): n for n, m in model.named_modules()}
    root = type(model).__name__
    by_part = {}
    for label, module in parts.items():
        qualified = f"{root}.{names[id(module)]}" if names.get(id(module)) else root
        by_part[label] = float(sum(counts.get(qualified, {}).values()))
    return float(counter.get_total_flops()), by_part


def time_forward(model: nn.Module, inputs: tuple, repeats: int = 3, warmup: int = 1, **kwargs) -> float:
    """Median wall time in seconds of `model(*inputs)` under no_grad, after warm-up."""
    times = []
    with torch.no_grad():
        for i in range(warmup + repeats):
            t0 = time.perf_counter()
            model(*inputs, **kwargs)
            if i >= warmup:
                times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]


def format_table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(r, widths))) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), sep] + [line(r) for r in rows])
