"""runtime.optim against real plans and a real ResNet-18 on the CPU.

Parameter groups are checked against the plan; freezing and thawing against
what torch's own optimizers do (a fresh optimizer on a copy of the parameter
is the reference for "starts with empty state"); rates against the formulas of
recipe_lang/resolve/schedule.py and against values worked out by hand.
"""

from __future__ import annotations

import copy
import functools
import io
import math

import pytest
import torch
from torch import nn

import recipe_lang
from recipe_lang.resolve import architectures, resolve
from recipe_lang.resolve.schedule import schedule_factor, warmup_factor
from runtime.optim import Rates, build_optimizer, clear_state, steps_per_epoch

OPTIMIZERS = {
    "sgd": "sgd(momentum=0.9, nesterov=true, weight_decay=0.1)",
    "adam": "adam(betas=(0.8, 0.99), weight_decay=0.1, eps=1e-6)",
    "adamw": "adamw(betas=(0.85, 0.995), weight_decay=0.1, eps=1e-7)",
    "rmsprop": "rmsprop(alpha=0.9, momentum=0.5, weight_decay=0.1, eps=1e-7)",
}
# a state entry every optimizer creates on a parameter's first step
STATE_KEY = {"sgd": "momentum_buffer", "adam": "exp_avg", "adamw": "exp_avg", "rmsprop": "square_avg"}


def recipe(
    *,
    optimizer: str = "sgd(momentum=0.9)",
    lr: str = "0.001, head=0.01",
    schedule: str = "constant",
    epochs: int = 4,
    train: tuple[str, ...] = ("freeze all except head",),
    groups: tuple[str, ...] = (),
) -> str:
    lines = ['recipe "t"', "model {", "  backbone resnet18", "  head linear(classes=4)", "}"]
    lines += ["data {", "  train synthetic(classes=4)", "}"]
    if groups:
        lines += ["groups {", *(f"  {g}" for g in groups), "}"]
    lines += ["train {", f"  epochs {epochs}", f"  optimizer {optimizer}", f"  lr {lr}", f"  schedule {schedule}"]
    lines += [f"  {t}" for t in train] + ["}"]
    return "\n".join(lines) + "\n"


@functools.cache
def plan_of(text: str):
    return resolve(recipe_lang.parse(text, "t.ftr"), data=False, weights_file=False)


def plan(**kwargs):
    return plan_of(recipe(**kwargs))


def model_for(p, device: str = "cpu") -> nn.Module:
    """The runtime's model for a plan: the builder's model with the head in place
    (on the meta device, enough for rates, it costs nothing)."""
    torch.manual_seed(0)
    model = architectures.build(p.backbone, device=device)
    with torch.device(device):
        head = architectures.make_head(
            p.head.kind, p.head.classes, p.classifier.in_features, adapter=p.classifier.adapter
        )
    architectures.replace_module(model, p.classifier.path, head)
    return model


def enter_epoch(p, model: nn.Module, epoch: int) -> set[str]:
    trainable = set(p.phase_of(epoch).trainable)
    for name, param in model.named_parameters():
        param.requires_grad_(name in trainable)
    return trainable


def train_step(model: nn.Module, optimizer, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(4, 3, 32, 32, generator=g)
    y = torch.randint(0, 4, (4,), generator=g)
    model.train()
    nn.functional.cross_entropy(model(x), y).backward()
    optimizer.step()
    optimizer.zero_grad()


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


# --- param groups -------------------------------------------------------------


@pytest.mark.parametrize("kind", OPTIMIZERS)
def test_param_groups_match_the_plan(kind):
    p = plan(
        optimizer=OPTIMIZERS[kind],
        lr="0.001, head=0.01, top=0.003",
        groups=("top = layer4",),
        train=("freeze all except head", "at epoch 2 unfreeze top warmup=1.5", "no_weight_decay bias, norm"),
    )
    model = model_for(p)
    named = dict(model.named_parameters())
    opt = build_optimizer(p, model)
    assert len(opt.param_groups) == len(p.optimizer_groups) == 6
    for group, og in zip(opt.param_groups, p.optimizer_groups, strict=True):
        assert [id(t) for t in group["params"]] == [id(named[n]) for n in og.params]
        assert group["ftr_group"] == og.group
        assert group["lr"] == group["base_lr"] == p.group(og.group).lr
        assert group["weight_decay"] == og.weight_decay
        assert group["warmups"] == [list(w) for w in og.warmups]
    assert [(g["ftr_group"], g["lr"], g["weight_decay"]) for g in opt.param_groups] == [
        ("head", 0.01, 0.1),
        ("head", 0.01, 0.0),
        ("top", 0.003, 0.1),
        ("top", 0.003, 0.0),
        ("rest", 0.001, 0.1),
        ("rest", 0.001, 0.0),
    ]
    # the no_weight_decay split: biases and norm parameters, nothing else
    norms = {
        f"{path}.{n}" for path, m in model.named_modules() if isinstance(m, nn.BatchNorm2d) for n in ("weight", "bias")
    }
    for group in opt.param_groups:
        names = [n for n, t in named.items() if any(t is q for q in group["params"])]
        no_decay = {n for n in names if n.endswith(".bias") or n in norms}
        assert (group["weight_decay"] == 0.0) == (no_decay == set(names)), names
        assert not no_decay or no_decay == set(names)
    # every parameter exactly once
    assert sorted(id(t) for g in opt.param_groups for t in g["params"]) == sorted(id(t) for t in named.values())
    # the optimizer's own settings
    spec = p.optimizer
    d = opt.param_groups[0]
    if kind == "sgd":
        assert type(opt) is torch.optim.SGD and (d["momentum"], d["nesterov"], d["dampening"]) == (0.9, True, 0)
    elif kind in ("adam", "adamw"):
        assert type(opt) is {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[kind]
        assert d["betas"] == tuple(spec.betas) and d["eps"] == spec.eps and not d["amsgrad"]
    else:
        assert type(opt) is torch.optim.RMSprop
        assert (d["alpha"], d["momentum"], d["eps"], d["centered"]) == (0.9, 0.5, 1e-7, False)


def test_a_group_that_never_trains_and_has_no_rate_is_not_in_the_optimizer():
    p = plan(lr="head=0.01")
    opt = build_optimizer(p, model_for(p))
    assert {g["ftr_group"] for g in opt.param_groups} == {"head"}
    assert sum(len(g["params"]) for g in opt.param_groups) == 2


def test_a_model_that_is_not_the_plans_is_refused():
    p = plan()
    with pytest.raises(ValueError, match="no parameter fc.weight"):
        build_optimizer(p, nn.Linear(3, 4))


def test_extra_group_keys_survive_a_checkpoint_round_trip():
    p = plan(optimizer=OPTIMIZERS["adamw"], groups=("top = layer4",), train=("at epoch 2 freeze top",))
    model = model_for(p)
    opt = build_optimizer(p, model)
    train_step(model, opt)
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    fresh = build_optimizer(p, model)
    for g in fresh.param_groups:
        g["lr"] = 123.0
    fresh.load_state_dict(state)
    for a, b in zip(opt.param_groups, fresh.param_groups, strict=True):
        assert {k: v for k, v in a.items() if k != "params"} == {k: v for k, v in b.items() if k != "params"}
    assert len(fresh.state) == len(opt.state) == len(list(model.parameters()))


# --- freezing and thawing -----------------------------------------------------


@pytest.mark.parametrize("kind", OPTIMIZERS)
def test_frozen_parameters_are_untouched_and_have_no_state(kind):
    """Weight decay 0.1 would move a frozen parameter if torch applied it."""
    p = plan(optimizer=OPTIMIZERS[kind], groups=("top = layer4",), train=("freeze all except head",))
    model = model_for(p)
    opt = build_optimizer(p, model)
    trainable = enter_epoch(p, model, 1)
    assert trainable == {"fc.weight", "fc.bias"}
    before = snapshot(model)
    for step in range(3):
        train_step(model, opt, seed=step)
    named = dict(model.named_parameters())
    for name, param in named.items():
        if name in trainable:
            assert not torch.equal(param, before[name]), name
            assert STATE_KEY[kind] in opt.state[param]
        else:
            assert torch.equal(param, before[name]), name
            assert param.grad is None
            assert param not in opt.state, name


@pytest.mark.parametrize("kind", OPTIMIZERS)
def test_a_thawed_parameter_starts_with_empty_state(kind):
    """At the thaw, layer4 has no state; its first step equals the first step of
    a fresh optimizer, while the head's state carries on."""
    p = plan(
        optimizer=OPTIMIZERS[kind],
        groups=("top = layer4",),
        lr="0.001, head=0.01",
        train=("freeze all except head", "at epoch 2 unfreeze top"),
    )
    model = model_for(p)
    opt = build_optimizer(p, model)
    enter_epoch(p, model, 1)
    for step in range(2):
        train_step(model, opt, seed=step)
    trainable = enter_epoch(p, model, 2)
    named = dict(model.named_parameters())
    thawed = [n for n in p.group("top").params]
    assert set(thawed) <= trainable
    assert all(named[n] not in opt.state for n in thawed)
    head_state = copy.deepcopy(opt.state[named["fc.weight"]])

    # the reference: a fresh optimizer of the same kind on copies, fed the same gradients
    copies = {n: named[n].detach().clone().requires_grad_(True) for n in thawed}
    (top,) = [g for g in opt.param_groups if g["ftr_group"] == "top"]
    assert [id(t) for t in top["params"]] == [id(named[n]) for n in thawed]
    settings = {k: v for k, v in top.items() if k not in ("params", "ftr_group", "base_lr", "warmups")}
    fresh = type(opt)([{"params": list(copies.values()), **settings}])

    g = torch.Generator().manual_seed(9)
    x, y = torch.randn(4, 3, 32, 32, generator=g), torch.randint(0, 4, (4,), generator=g)
    model.train()
    nn.functional.cross_entropy(model(x), y).backward()
    for n in thawed:
        copies[n].grad = named[n].grad.clone()
    opt.step()
    fresh.step()
    for n in thawed:
        assert torch.equal(named[n], copies[n]), n
        for key, value in fresh.state[copies[n]].items():
            assert torch.equal(torch.as_tensor(opt.state[named[n]][key]), torch.as_tensor(value)), (n, key)
    if kind in ("adam", "adamw"):
        assert opt.state[named["layer4.0.conv1.weight"]]["step"].item() == 1
        assert opt.state[named["fc.weight"]]["step"].item() == 3
    assert not torch.equal(opt.state[named["fc.weight"]][STATE_KEY[kind]], head_state[STATE_KEY[kind]])


@pytest.mark.parametrize("kind", OPTIMIZERS)
def test_a_part_that_freezes_keeps_its_state_untouched(kind):
    p = plan(optimizer=OPTIMIZERS[kind], groups=("top = layer4",), train=("at epoch 2 freeze top",))
    model = model_for(p)
    opt = build_optimizer(p, model)
    enter_epoch(p, model, 1)
    train_step(model, opt, seed=0)
    enter_epoch(p, model, 2)
    named = dict(model.named_parameters())
    w = named["layer4.0.conv1.weight"]
    assert w.grad is None  # zero_grad() sets gradients to None: a frozen part has none
    state, value = copy.deepcopy(opt.state[w]), w.detach().clone()
    for step in range(2):
        train_step(model, opt, seed=1 + step)
    assert torch.equal(w, value)
    assert opt.state[w].keys() == state.keys()
    assert all(torch.equal(torch.as_tensor(opt.state[w][k]), torch.as_tensor(v)) for k, v in state.items())


@pytest.mark.parametrize("kind", OPTIMIZERS)
def test_clear_state_makes_a_part_that_thaws_again_start_afresh(kind):
    p = plan(
        optimizer=OPTIMIZERS[kind],
        groups=("top = layer4",),
        train=("at epoch 2 freeze top", "at epoch 3 unfreeze top"),
    )
    model = model_for(p)
    opt = build_optimizer(p, model)
    enter_epoch(p, model, 1)
    train_step(model, opt, seed=0)
    enter_epoch(p, model, 2)
    train_step(model, opt, seed=1)
    enter_epoch(p, model, 3)
    named = dict(model.named_parameters())
    top = [named[n] for n in p.group("top").params]
    assert all(t in opt.state for t in top)  # the stale state is still there
    assert clear_state(opt, top) == len(top)
    assert all(t not in opt.state for t in top)
    assert clear_state(opt, top) == 0
    train_step(model, opt, seed=2)
    if kind in ("adam", "adamw"):
        assert all(opt.state[t]["step"].item() == 1 for t in top)
        assert opt.state[named["fc.weight"]]["step"].item() == 3


# --- steps and rates ------------------------------------------------------------


@pytest.mark.parametrize(
    ("batches", "accumulate", "steps"), [(10, 1, 10), (10, 3, 4), (9, 3, 3), (1, 4, 1), (8, 8, 1), (7, 2, 4)]
)
def test_steps_per_epoch(batches, accumulate, steps):
    assert steps_per_epoch(batches, accumulate) == steps


def rates_over_run(p, spe: int):
    model = model_for(p, device="meta")
    opt = build_optimizer(p, model)
    rates = Rates(p, opt, spe)
    out = []
    for step in range(p.epochs * spe):
        report = rates.set(step)
        out.append(([g["lr"] for g in opt.param_groups], report))
    return opt, rates, out


def expected(p, opt, step: int, spe: int) -> list[float]:
    t, dt = step / spe, 1 / spe
    return [
        g["base_lr"] * schedule_factor(p.schedule, t, p.epochs, dt) * warmup_factor(g["warmups"], t, dt)
        for g in opt.param_groups
    ]


SCHEDULES = [
    "constant",
    "step(every=2, gamma=0.5)",
    "cosine(warmup=1, min_lr=0.1)",
    "linear(warmup=0.5)",
    "onecycle(pct_start=0.25)",
]


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_rates_follow_the_schedule_formulas(schedule):
    p = plan(schedule=schedule, epochs=4)
    spe = 5
    opt, _, run = rates_over_run(p, spe)
    for step, (lrs, report) in enumerate(run):
        assert lrs == expected(p, opt, step, spe)
        assert report == {"head": lrs[0], "rest": lrs[1]}


def test_constant_is_exactly_the_base_rate():
    p = plan(lr="0.001, head=0.0003", schedule="constant", epochs=3)
    _, _, run = rates_over_run(p, 7)
    for lrs, report in run:
        assert lrs == [0.0003, 0.001]
        assert report == {"head": 0.0003, "rest": 0.001}


def test_step_decays_at_epoch_boundaries():
    p = plan(lr="0.1", schedule="step(every=2, gamma=0.5)", epochs=6)
    spe = 3
    _, _, run = rates_over_run(p, spe)
    head = [lrs[0] for lrs, _ in run]
    assert head == [0.1] * 6 + [0.05] * 6 + [0.025] * 6


def test_cosine_with_warmup_and_floor():
    p = plan(lr="0.01", schedule="cosine(warmup=1, min_lr=0.1)", epochs=5)
    spe = 4
    opt, rates, run = rates_over_run(p, spe)
    head = [lrs[0] for lrs, _ in run]
    # warmup ramps with each step's end: 1/4, 2/4, 3/4, 4/4 of the rate
    assert head[:4] == pytest.approx([0.0025, 0.005, 0.0075, 0.01], rel=1e-12)
    assert head[0] > 0
    assert head[4] == pytest.approx(0.01, rel=1e-12)  # the peak, at the end of the warmup
    assert all(a > b for a, b in zip(head[4:], head[5:], strict=False))  # then it only falls
    assert head[-1] > 0.001  # the last step is still above the floor...
    assert head[-1] == pytest.approx(0.001 + 0.009 * 0.5 * (1 + math.cos(math.pi * (3.75 / 4))), rel=1e-12)
    rates.set(5 * spe)  # ...which the run reaches at its end
    assert opt.param_groups[0]["lr"] == pytest.approx(0.001, rel=1e-12)
    # halfway through the decay: midway between peak and floor
    rates.set(3 * spe)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0055, rel=1e-12)


def test_linear_with_warmup():
    p = plan(lr="0.01", schedule="linear(warmup=1)", epochs=3)
    spe = 2
    _, _, run = rates_over_run(p, spe)
    assert [lrs[0] for lrs, _ in run] == pytest.approx([0.005, 0.01, 0.01, 0.0075, 0.005, 0.0025], rel=1e-12)


def test_onecycle_starts_at_a_25th_peaks_and_ends_near_zero():
    p = plan(lr="0.01", schedule="onecycle(pct_start=0.25)", epochs=4)
    spe = 10
    opt, rates, run = rates_over_run(p, spe)
    head = [lrs[0] for lrs, _ in run]
    assert head[0] == pytest.approx(0.01 / 25, rel=1e-12)
    assert max(head) == pytest.approx(0.01, rel=1e-12) and head.index(max(head)) == 10  # at t = 1 = 0.25 * 4
    assert head[-1] < 1e-4
    rates.set(4 * spe)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.01 / 25 / 1e4, rel=1e-9)


def test_thaw_warmup_ramps_only_the_groups_it_covers():
    p = plan(
        lr="0.001, head=0.01",
        groups=("top = layer4",),
        schedule="step(every=3, gamma=0.1)",
        epochs=4,
        train=("freeze all except head", "at epoch 2 unfreeze top warmup=1.5"),
    )
    spe = 4
    opt, _, run = rates_over_run(p, spe)
    names = [g["ftr_group"] for g in opt.param_groups]
    assert names == ["head", "top", "rest"]
    ramped = [bool(g["warmups"]) for g in opt.param_groups]
    assert ramped == [False, True, False]
    for step, (lrs, report) in enumerate(run):
        assert lrs == expected(p, opt, step, spe)
        scheduled = 0.1 ** (step // (3 * spe))
        assert lrs[0] == 0.01 * scheduled
        assert lrs[2] == 0.001 * scheduled
        begun = (step + 1) / spe - 1  # epochs of the ramp done at the end of this step
        ramp = 1.0 if begun < 0 else min(1.0, begun / 1.5)
        assert lrs[1] == pytest.approx(0.001 * scheduled * ramp, rel=1e-12)
        assert report == {"head": lrs[0], "top": lrs[1], "rest": lrs[2]}
    top = [lrs[1] for lrs, _ in run]
    # epoch 2 (steps 4..9): 1/6, 2/6, ... of the rate, full from step 9 on
    assert top[4:10] == pytest.approx([0.001 * k / 6 for k in range(1, 7)], rel=1e-12)
    assert top[4] > 0
    # schedule.py's ramp starts at the END of the step before the thaw: that
    # step (the last of epoch 1, where top is still frozen) reads 0
    assert top[:4] == [0.001, 0.001, 0.001, 0.0]


def test_a_split_group_reports_the_rate_without_thaw_warmup():
    """layer4.0 thaws with a warmup, layer4.1 trains from the start: 'top' is
    split, and lr/top is the rate of the part that is not ramping."""
    p = plan(
        lr="0.001, head=0.01",
        groups=("top = layer4",),
        epochs=3,
        train=("freeze all except head, layer4.1", "at epoch 2 unfreeze layer4.0 warmup=1", "no_weight_decay bias"),
    )
    spe = 2
    opt, _, run = rates_over_run(p, spe)
    top = [(i, bool(g["warmups"])) for i, g in enumerate(opt.param_groups) if g["ftr_group"] == "top"]
    assert [w for _, w in top] == [True, True, False, False]  # the ramping part comes first in layer4's order
    for lrs, report in run:
        assert report["top"] == lrs[top[2][0]] == 0.001
    ramping = [lrs[top[0][0]] for lrs, _ in run]
    # step 1, the last of epoch 1, reads 0: layer4.0 is still frozen then (see above)
    assert ramping == pytest.approx([0.001, 0.0, 0.0005, 0.001, 0.001, 0.001], rel=1e-12)


def test_why_gradients_must_be_set_to_none():
    """The contract the loop relies on: zero_grad() (set_to_none=True). With
    zeroed instead of absent gradients, momentum and weight decay would keep
    moving a part after it froze."""
    p = plan(optimizer=OPTIMIZERS["sgd"], groups=("top = layer4",), train=("at epoch 2 freeze top",))
    model = model_for(p)
    opt = build_optimizer(p, model)
    enter_epoch(p, model, 1)
    train_step(model, opt, seed=0)
    enter_epoch(p, model, 2)
    w = dict(model.named_parameters())["layer4.0.conv1.weight"]
    value = w.detach().clone()
    w.grad = torch.zeros_like(w)  # what zero_grad(set_to_none=False) would leave
    opt.step()
    assert not torch.equal(w, value)
