"""The feature cache: when a span may train the head on features computed once
(recipe_lang/resolve/cache.py), and that the runtime and the compiled script then
give the numbers of an uncached run, running the frozen part once per span."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_compile import compile_to, script_ok
from test_run import assert_rows_close, interrupted_run, metrics, run_ok, weights, write_recipe

import recipe_lang
import runtime.cache
from recipe_lang.resolve import resolve
from recipe_lang.resolve.table import plan_table
from runtime.trainer import Trainer

PROBE = """recipe "probe"
seed 3
model {
  backbone resnet18
  head mlp(classes=4, hidden=16, dropout=0.3)
}
data {
  train imagefolder("data/train")
  val imagefolder("data/val")
  batch_size 8
  train_transforms resize(32)
  eval_transforms resize(36), center_crop(32)
}
train {
  epochs 4
  optimizer adamw
  lr 1e-3, head=1e-2
  schedule cosine(warmup=1)
  freeze all except head
  at epoch 3 unfreeze layer4
  label_smoothing 0.1
}
evaluate {
  metrics loss, accuracy, macro_f1
  best accuracy
}
"""


pytestmark = pytest.mark.usefixtures("one_thread")


def plan_of(text: str, *overrides):
    return resolve(recipe_lang.parse(text, "probe.ftr", list(overrides)), data=False, weights_file=False)


# --- when a span is cached -----------------------------------------------------------


def test_a_probe_on_fixed_transforms_is_cached_until_the_backbone_thaws():
    plan = plan_of(PROBE)
    assert [p.cache for p in plan.phases] == [True, False]
    assert plan_table(plan).endswith("feature cache: epochs 1-2 compute the input of fc once, then train on it\n")


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        (
            ["data.train_transforms=random_resized_crop(32)"],
            "train transforms draw random numbers (random_resized_crop)",
        ),
        (["data.eval_transforms=hflip(p=0)"], "eval transforms draw random numbers (hflip)"),
        (["data.skip_bad_images=true"], "skip_bad_images changes which images share a batch"),
        (["train.cache=false"], "cache false"),
        (["model.backbone=efficientnet_b0"], "features.2.0.stochastic_depth (StochasticDepth p=0.0125)"),
        (["model.backbone=mobilenet_v3_small"], "classifier.2 (Dropout p=0.2) draw random numbers in train mode"),
    ],
)
def test_what_keeps_every_span_uncached(overrides, reason):
    plan = plan_of(PROBE.replace("at epoch 3 unfreeze layer4\n", ""), *overrides)
    assert not any(p.cache for p in plan.phases)
    assert reason in plan_table(plan).splitlines()[-1]


def test_batchnorm_in_train_mode_or_a_trained_backbone_keeps_a_span_uncached():
    assert [p.cache for p in plan_of(PROBE, "train.batchnorm=train").phases] == [False, False]
    assert [p.cache for p in plan_of(PROBE, "train.batchnorm=trainable").phases] == [False, False]
    assert [p.cache for p in plan_of(PROBE, "train.freeze=layer1").phases] == [False, False]
    table = plan_table(plan_of(PROBE, "train.freeze=layer1"))
    assert table.splitlines()[-1].startswith("feature cache: none; more than the head trains")


def test_color_jitter_of_nothing_is_fixed_and_vit_has_no_random_modules():
    plan = plan_of(PROBE, "data.train_transforms=resize(32), color_jitter(), grayscale(3)")
    assert plan.phases[0].cache
    probe = PROBE.replace("at epoch 3 unfreeze layer4\n", "")
    vit = plan_of(
        probe, "model.backbone=vit_b_16", "data.train_transforms=resize(224)", "data.eval_transforms=resize(224)"
    )
    assert vit.phases[0].cache and vit.classifier.path == "heads.head"


# --- the same numbers, the frozen part run once a span -----------------------------------


@pytest.fixture
def probe(image_data, monkeypatch) -> Path:
    monkeypatch.chdir(image_data)
    return write_recipe(image_data, PROBE)


def test_cached_run_equals_uncached_run_and_skips_the_backbone(probe, capsys):
    """Head dropout, a thaw after the cached span, best.pt: the cache changes no number."""
    uncached = run_ok(capsys, probe, "uncached", "--set", "train.cache=false")
    cached = run_ok(capsys, probe, "cached")
    assert_rows_close(metrics("cached"), metrics("uncached"), rel=1e-5)
    assert cached["best"] == uncached["best"]
    for name in ("model.pt", "best.pt"):
        a, b = weights(Path("cached") / name), weights(Path("uncached") / name)
        assert all(torch.allclose(a[k].float(), b[k].float(), rtol=1e-5, atol=1e-7) for k in b), name

    plan = resolve(recipe_lang.load(probe))
    trainer = Trainer(plan, Path("counted"))
    trainer.setup()
    calls = []
    trainer.model.layer1.register_forward_hook(lambda *_: calls.append(1))
    Path("counted").mkdir()
    trainer.train()
    train_batches, val_batches = 4, 2  # 32 train and 12 val images in batches of 8
    once = train_batches + val_batches  # epochs 1-2: each image once for the span
    assert len(calls) == once + 2 * (train_batches + val_batches)  # epochs 3-4: every batch


def test_features_past_the_memory_limit_go_to_a_file_that_is_removed(probe, capsys, monkeypatch):
    run_ok(capsys, probe, "in-memory")
    files = []
    close = runtime.cache.FeatureCache.close

    def recording_close(self):
        files.extend(self.files)
        close(self)

    monkeypatch.setattr(runtime.cache, "MEMORY_LIMIT", 0)
    monkeypatch.setattr(runtime.cache.FeatureCache, "close", recording_close)
    run_ok(capsys, probe, "on-disk")
    assert len(files) == 2  # train and val features of the cached span
    assert all(path.parent.resolve() == Path("on-disk").resolve() for path in files)
    assert not any(path.exists() for path in files)
    assert_rows_close(metrics("on-disk"), metrics("in-memory"))


def test_resume_inside_a_cached_span(probe, capsys):
    """Stopped after epoch 1 of the cached span, resumed (the features computed again):
    the numbers of a run that never stopped."""
    run_ok(capsys, probe, "full")
    assert interrupted_run(probe, "stopped", epoch=1) == 130
    assert len(metrics("stopped")) == 1
    summary = run_ok(capsys, probe, "stopped", "--resume")
    assert_rows_close(metrics("stopped"), metrics("full"))
    assert summary["best"] == json.loads(Path("full/summary.json").read_text())["best"]


def test_compiled_script_caches_as_the_runtime_does(probe, capsys):
    script = compile_to(capsys, probe, "t.py")
    assert "class FeatureCache:" in script and '"cache": True' in script
    run_ok(capsys, probe, "ftr")
    script_ok(capsys, "t.py", "script")
    assert_rows_close(metrics("script"), metrics("ftr"))
    assert (
        json.loads(Path("script/summary.json").read_text())["best"]
        == json.loads(Path("ftr/summary.json").read_text())["best"]
    )
    uncached = compile_to(capsys, probe, "u.py", "--set", "train.cache=false")
    assert "FeatureCache" not in uncached and '"cache"' not in uncached
