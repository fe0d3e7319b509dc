"""The step and reduce-on-plateau schedulers against torch's own (StepLR, ReduceLROnPlateau)."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from falv.training.schedule import PlateauTracker, lr_at, scheduled_lr


def _torch_rates(make_scheduler, epochs, metrics=None):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = make_scheduler(opt)
    rates = []
    for epoch in range(epochs):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step(metrics[epoch]) if metrics is not None else sched.step()
    return rates


@given(step_epochs=st.integers(1, 5), gamma=st.sampled_from([0.1, 0.5, 0.9]), epochs=st.integers(1, 20))
def test_step_decay_is_torch_steplr_after_warmup(step_epochs, gamma, epochs):
    expected = _torch_rates(lambda o: torch.optim.lr_scheduler.StepLR(o, step_epochs, gamma), epochs)
    spe, warmup = 3, 6  # 3 steps per epoch, 2 warm-up epochs
    for epoch in range(epochs):
        for k in range(spe):
            rate = scheduled_lr("step", warmup + epoch * spe + k, 999, warmup, 1.0, 0.0, steps_per_epoch=spe,
                                step_epochs=step_epochs, gamma=gamma)
            assert rate == pytest.approx(expected[epoch], rel=1e-9)


@pytest.mark.parametrize("mode,metrics", [
    ("max", [0.1, 0.2, 0.2, 0.2, 0.2, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.4]),
    ("min", [1.0, 0.9, 0.95, 0.95, 0.95, 0.9, 0.9, 0.8, 0.8, 0.8, 0.8, 0.8]),
    ("max", [0.5] * 12),
])
@pytest.mark.parametrize("patience", [0, 1, 2])
def test_plateau_is_torch_reduce_on_plateau(mode, metrics, patience):
    expected = _torch_rates(lambda o: torch.optim.lr_scheduler.ReduceLROnPlateau(
        o, mode=mode, factor=0.5, patience=patience, threshold=0.0, threshold_mode="abs"), len(metrics), metrics)
    tracker, state, best = PlateauTracker(0.5, patience), {}, None
    better = (lambda a, b: a > b) if mode == "max" else (lambda a, b: a < b)
    for epoch, value in enumerate(metrics):
        rate = scheduled_lr("plateau", 100 + epoch, 999, 0, 1.0, 0.0, scale=state.get("lr_scale", 1.0))
        assert rate == pytest.approx(expected[epoch], rel=1e-9), epoch
        improved = best is None or better(value, best)
        best = value if improved else best
        tracker.update(state, improved)


@pytest.mark.parametrize("scheduler", ["cosine", "step", "plateau"])
def test_every_scheduler_warms_up_the_same_way_and_respects_min_lr(scheduler):
    warm = [scheduled_lr(scheduler, s, 100, 10, 1.0, 0.05, step_epochs=1, scale=1e-6) for s in range(10)]
    assert warm == [pytest.approx((s + 1) / 10) for s in range(10)]
    late = [scheduled_lr(scheduler, s, 100, 10, 1.0, 0.05, steps_per_epoch=2, step_epochs=1, gamma=0.1,
                         scale=1e-6) for s in range(10, 100)]
    assert min(late) >= 0.05 - 1e-12
    assert scheduled_lr("cosine", 50, 100, 10, 1.0, 0.05) == lr_at(50, 100, 10, 1.0, 0.05)


def test_unknown_scheduler_and_bad_plateau_settings_are_refused():
    with pytest.raises(ValueError, match="valid values: cosine, step, plateau"):
        scheduled_lr("linear", 0, 10, 0, 1.0)
    with pytest.raises(ValueError):
        PlateauTracker(1.5, 2)
