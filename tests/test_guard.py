"""Divergence guard and learning-rate schedule: finite blow-ups are caught, spikes skipped."""

import math

import pytest

from mmrface.train.guard import DivergenceGuard
from mmrface.train.schedule import lr_factor


def test_guard_skips_a_spike_and_stops_a_blow_up_naming_the_loss():
    g = DivergenceGuard(factor=20, window=50, patience=3)
    for k in range(30):
        assert g.check({"l1": 0.2 + 0.01 * (k % 3), "total": 0.5}).ok
    spike = g.check({"l1": 9.0, "total": 0.5})
    assert not spike.ok and not spike.stop and "loss 'l1' is 9" in spike.reason
    assert g.check({"l1": 0.21, "total": 0.5}).ok  # one bad batch: skipped, the run goes on
    assert g.history["l1"][-1] == 0.21 and 9.0 not in g.history["l1"]  # medians learn from accepted steps only
    verdicts = [g.check({"l1": v, "total": 0.5}) for v in (413.0, 4e5, 4e11)]
    assert [v.stop for v in verdicts] == [False, False, True]
    assert "loss 'l1' is 4e+11" in verdicts[-1].reason and "3 steps in a row" in verdicts[-1].reason


def test_guard_catches_a_blow_up_at_the_second_step_and_nan_at_once():
    g = DivergenceGuard(factor=20, patience=1)
    assert g.check({"l1": 0.8}).ok
    assert g.check({"l1": 15.0}).ok  # 19x: large, but not a blow-up
    assert g.check({"l1": 4260.0}).stop  # the 512 recipe's old step 3 (docs/training.md)
    assert DivergenceGuard().check({"gan": math.nan}).stop
    assert DivergenceGuard(factor=0).check({"gan": math.inf}).reason == "loss 'gan' is inf"
    off = DivergenceGuard(factor=0)
    assert off.check({"l1": 1.0}).ok and off.check({"l1": 1e9}).ok  # factor 0: NaN/inf only


def test_a_term_far_below_the_total_is_no_blow_up():
    # a real run (mmrface-small-resblock, step 3004): the low-pass term rose 24x when w < 1 came back
    g = DivergenceGuard(factor=20, patience=1)
    for k in range(50):
        assert g.check({"unpaired": 0.003, "l1": 0.14, "total": 0.24 + 0.01 * (k % 2)}).ok
    assert g.check({"unpaired": 0.07, "l1": 0.14, "total": 0.27}).ok
    assert g.check({"unpaired": 0.9, "l1": 0.14, "total": 0.7}).stop  # above a typical total: judged


def test_guard_ignores_small_values_and_round_trips_its_state():
    g = DivergenceGuard(factor=20, patience=2)
    for _ in range(5):
        g.check({"mean_teacher": 1e-5})
    assert g.check({"mean_teacher": 5e-4}).ok  # 50x a near-zero median, but below the floor
    h = DivergenceGuard(factor=20, patience=2)
    h.load_state_dict(g.state_dict())
    assert list(h.history["mean_teacher"]) == list(g.history["mean_teacher"]) and h.strikes == g.strikes


def test_lr_schedule_warmup_then_cosine():
    assert lr_factor(0, 100, warmup=10) == pytest.approx(0.1)
    assert lr_factor(9, 100, warmup=10) == pytest.approx(1.0)
    assert lr_factor(50, 100, warmup=10) == 1.0  # constant after the warm-up
    f = [lr_factor(s, 110, warmup=10, schedule="cosine", final=0.05) for s in range(10, 111)]
    assert f[0] == pytest.approx(1.0) and f[-1] == pytest.approx(0.05)
    assert all(a >= b for a, b in zip(f, f[1:]))  # decays monotonically
    assert f[50] == pytest.approx(0.525)  # half way: the mean of peak and final


def test_loss_schedule_changes_a_weight_from_a_step_on():
    from mmrface.config import load_config
    from mmrface.errors import UserError
    from mmrface.train.objectives import Objectives

    cfg = load_config("tiny", ["model.size=32", "loss.lpips=1.0", "loss.schedule={lpips: [[10, 0.1], [20, 0]]}"])
    obj = Objectives(cfg, has_landmarks=False, has_unpaired=False)
    assert [obj.weight("lpips", s) for s in (0, 9, 10, 19, 20, 99)] == [1.0, 1.0, 0.1, 0.1, 0.0, 0.0]
    assert obj.weight("l1", 50) == 1.0 and "schedule: lpips 0.1 from step 10, 0 from step 20" in "\n".join(obj.report)
    for bad, message in (("{gan: [[5, 1]]}", "the loss is off"), ("{lpipz: [[5, 1]]}", "unknown loss"),
                         ("{lpips: [[20, 1], [10, 0]]}", "ascending"), ("{lpips: 0.1}", "expected")):
        with pytest.raises(UserError, match=message):
            Objectives(load_config("tiny", ["model.size=32", "loss.lpips=1.0", f"loss.schedule={bad}"]), False, False)


def test_a_planned_change_of_the_objective_restarts_the_medians():
    from mmrface.train.schedule import objective_changes

    assert objective_changes({500: 1.0, 3000: 0.7, 0: 0.5}, {"lpips": [[1250, 0.1]]}) == {500, 1250, 3000}
    g = DivergenceGuard(factor=20, patience=1)
    for _ in range(50):
        g.check({"unpaired": 0.003, "total": 0.01})
    g.restart()  # e.g. w < 1 trained again: the term legitimately sits at a new level
    assert all(g.check({"unpaired": 0.2 + 0.01 * k, "total": 0.3}).ok for k in range(30))
    assert g.check({"unpaired": 413.0, "total": 413.0}).stop  # judged again against the new medians
    assert DivergenceGuard().check({"l1": math.inf}).stop
    h = DivergenceGuard()
    h.load_state_dict(g.state_dict())
    assert h.min_history == g.min_history == 20
