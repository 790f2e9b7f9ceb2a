"""Divergence guard: stop a run whose losses blow up, before the blow-up reaches a checkpoint.

A NaN or infinite loss is caught at once. A *finite* blow-up is caught too: a term whose value is
more than `factor` times its running median over the last `window` steps (and above a small
absolute floor, so a loss near zero that doubles is not a blow-up) marks the step as a blow-up.
A single term must also exceed the running median of the step's `total`: a term that stays below
what a whole step typically costs cannot wreck the run, however far it moves from its own median
(the low-pass term went from 0.003 to 0.07, 24x, when a run started training w < 1 again).
The update of such a step is skipped (one bad batch cannot wreck the weights); `patience`
blow-up steps in a row stop the run, naming the loss, with the last checkpoint written before
the blow-up kept as the one to resume from. Medians only learn from accepted steps, so a planned
change of the objective (a step of `train.fidelity_full_from` or `loss.schedule`) starts them
afresh (`restart`): the new values are judged once `RESTART_HISTORY` of them are in.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

MIN_HISTORY = 1  # accepted values a term needs before it is judged (a blow-up can start at step 2)
ABS_FLOOR = 1e-3  # values below this are never a blow-up
RESTART_HISTORY = 20  # accepted values a term needs after a restart before it is judged
TOTAL = "total"  # the step's weighted sum: a single term below its running median is no blow-up


@dataclass
class Verdict:
    ok: bool  # apply this step
    stop: bool = False  # stop the run
    reason: str = ""


@dataclass
class DivergenceGuard:
    factor: float = 20.0  # 0 turns the finite check off (NaN/inf are always caught)
    window: int = 200
    patience: int = 3
    history: dict[str, deque] = field(default_factory=dict)
    strikes: int = 0
    min_history: int = MIN_HISTORY

    def check(self, values: dict[str, float]) -> Verdict:
        for name, v in values.items():
            if not math.isfinite(v):
                return Verdict(False, True, f"loss '{name}' is {v}")
        bad = []
        if self.factor > 0:
            total = self._median(TOTAL)
            for name, v in values.items():
                med = self._median(name)
                if med is None or (name != TOTAL and total is not None and v <= total):
                    continue
                if v > ABS_FLOOR and v > self.factor * max(med, ABS_FLOOR / self.factor):
                    bad.append(f"loss '{name}' is {v:.4g}, {v / max(med, 1e-12):.0f}x its running median {med:.4g}")
        if bad:
            self.strikes += 1
            stop = self.strikes >= self.patience
            return Verdict(False, stop, "; ".join(bad) + (f" ({self.strikes} steps in a row)" if stop else ""))
        self.strikes = 0
        for name, v in values.items():
            self.history.setdefault(name, deque(maxlen=self.window)).append(v)
        return Verdict(True)

    def _median(self, name: str) -> float | None:
        hist = self.history.get(name)
        if hist is None or len(hist) < self.min_history:
            return None
        return sorted(hist)[len(hist) // 2]

    def restart(self) -> None:
        """Forget the medians (the objective changes on purpose); NaN/inf are still caught at once."""
        self.history, self.strikes, self.min_history = {}, 0, RESTART_HISTORY

    def state_dict(self) -> dict:
        return {"history": {k: list(v) for k, v in self.history.items()}, "strikes": self.strikes,
                "min_history": self.min_history}

    def load_state_dict(self, state: dict) -> None:
        self.history = {k: deque(v, maxlen=self.window) for k, v in state.get("history", {}).items()}
        self.strikes = int(state.get("strikes", 0))
        self.min_history = int(state.get("min_history", MIN_HISTORY))
