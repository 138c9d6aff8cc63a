"""`backbone timm("name")`: timm's models resolved, run and compiled as torchvision's are.

Checked against timm itself (its own model's modules and parameters, its own eval
transforms), on its tiny test models; nothing is downloaded: `weights default` is
followed up to timm's hub loader, which is replaced by a local state dict.
"""

from __future__ import annotations

import functools
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from test_compile_parity import ftr_in, run_isolated
from test_run import assert_rows_close, metrics
from torch import nn
from torchvision import transforms as v1

import recipe_lang
from recipe_lang import RecipeError
from recipe_lang.cli import main
from recipe_lang.recipe import CenterCrop, Resize
from recipe_lang.resolve import resolve
from recipe_lang.resolve.plan import Classifier
from recipe_lang.resolve.table import plan_table
from runtime.model import build_model

ROOT = Path(__file__).resolve().parent.parent

RECIPE = """recipe "timm-test"
seed 3

model {{
  backbone timm("{name}")
  weights {weights}
  head {head}
}}

data {{
  train synthetic(classes=3, size=32, count=12)
  val split(0.25)
  batch_size 4
  eval_transforms {eval_transforms}
  normalize {normalize}
}}

groups {{
  late = {late}
}}

train {{
  epochs 2
  freeze all except head, late
  lr head=1e-3, late=1e-4
}}
"""


def recipe_text(
    name="test_convnext",
    weights="none",
    head="linear(classes=3)",
    eval_transforms="resize(36), center_crop(32)",
    normalize="imagenet",
    late="stages[-1:]",
) -> str:
    return RECIPE.format(
        name=name, weights=weights, head=head, eval_transforms=eval_transforms, normalize=normalize, late=late
    )


def plan_of(text: str, **kwargs):
    return resolve(recipe_lang.parse(text, "timm.ftr"), **kwargs)


def errors_of(text: str) -> list[tuple[int, int, str, str | None]]:
    with pytest.raises(RecipeError) as info:
        plan_of(text)
    return [(d.span.line, d.span.column, d.message, d.hint) for d in info.value.errors]


@functools.cache
def timm_model(name: str) -> nn.Module:
    """timm's own model, untouched, on the meta device."""
    with torch.device("meta"):
        return timm.create_model(name)


def state_file(path: Path, name: str, seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    state = timm.create_model(name).state_dict()
    torch.save(state, path)
    return state


# --- the model and its head ------------------------------------------------------


def test_convnext_s_head_fc_is_replaced_behind_timm_s_pooling_and_norm():
    plan = plan_of(recipe_text())
    assert plan.library == "timm" and plan.backbone == "test_convnext"
    assert plan.classifier == Classifier(
        path="head.fc", in_features=64, out_features=1000, adapter="none", replaced=True
    )
    assert plan.classifier.path == timm_model("test_convnext").pretrained_cfg["classifier"]
    assert plan.group("head").params == ["head.fc.weight", "head.fc.bias"]
    own = [n for n, _ in timm_model("test_convnext").named_parameters()]
    assert [p for g in plan.groups for p in g.params if not p.startswith("head.fc.")] == [
        p for p in own if not p.startswith("head.fc.") and p.startswith("stages.3.")
    ] + [p for p in own if not p.startswith(("head.fc.", "stages.3."))]
    assert plan.total_params == sum(p.numel() for p in timm_model("test_convnext").parameters()) - 1000 * 65 + 3 * 65


def test_an_mlp_head_replaces_a_vit_s_head_with_its_widths():
    plan = plan_of(
        recipe_text(name="test_vit", head="mlp(classes=3, hidden=[16])", late="blocks[-1:]")
        .replace("resize(36), center_crop(32)", "resize(160), center_crop(160)")
        .replace("size=32", "size=160")
    )
    assert plan.classifier.path == "head" and plan.classifier.in_features == 64
    assert plan.group("head").params == ["head.0.weight", "head.0.bias", "head.2.weight", "head.2.bias"]
    assert "head: mlp 64 -> 16 -> 3 (relu), replaces head" in plan_table(plan)


def test_the_last_stage_selected_by_slice_is_timm_s_last_stage():
    plan = plan_of(recipe_text(late="stages[-1:], head.norm"))
    model = timm_model("test_convnext")
    expected = [f"stages.3.{n}" for n, _ in model.stages[3].named_parameters()]
    expected += [f"head.norm.{n}" for n, _ in model.head.norm.named_parameters()]
    assert plan.group("late").params == expected
    assert plan.phases[0].numel == sum(model.get_parameter(p).numel() for p in expected) + 3 * 64 + 3


def test_a_selector_naming_no_timm_module_is_placed_and_suggests_one():
    ((line, column, message, hint),) = errors_of(recipe_text(late="stage[-1:]"))
    assert (line, column) == (19, 10)
    assert "stage" in message and "stages" in (hint or "")


def test_a_model_that_combines_two_classifiers_is_refused_at_the_head():
    text = recipe_text(name="deit_tiny_distilled_patch16_224", late="blocks[-1:]")
    ((line, column, message, hint),) = errors_of(text)
    assert (line, column) == (7, 8)
    assert message == ("VisionTransformerDistilled combines 2 classifiers (head, head_dist); a new head replaces one")
    assert hint == "choose a timm model with one classifier (no distillation or auxiliary head)"


# --- names, weights and their preset ----------------------------------------------


def test_an_unknown_name_is_an_error_at_the_backbone_with_timm_s_closest_name():
    assert errors_of(recipe_text(name="convnext_tny")) == [
        (5, 12, "timm has no model 'convnext_tny'", "did you mean 'convnext_tiny'?")
    ]


def test_an_unknown_pretrained_tag_is_named_with_the_tags_there_are():
    ((line, column, message, hint),) = errors_of(recipe_text(name="test_convnext.r16_in1k"))
    assert (line, column, message) == (5, 12, "timm has no pretrained tag 'r16_in1k' for test_convnext")
    assert hint == "did you mean 'test_convnext.r160_in1k'?"


def test_a_weights_enum_member_points_to_the_tag_in_the_name():
    assert errors_of(recipe_text(weights='"r160_in1k"')) == [
        (
            6,
            11,
            "a timm model has no weights enum: its pretrained tag is part of its name",
            'write backbone timm("test_convnext.r160_in1k") and weights default',
        )
    ]


def test_weights_default_of_a_model_timm_has_no_weights_for_is_an_error_at_weights():
    assert errors_of(recipe_text(name="convnext_atto_rms", weights="default")) == [
        (6, 11, "timm has no pretrained weights for convnext_atto_rms", "use weights none, or file(...)")
    ]


def test_weights_default_pins_the_tag_and_takes_timm_s_eval_preset():
    plan = plan_of(recipe_text(weights="default", eval_transforms="weights", normalize="weights"))
    assert plan.weights.enum == "test_convnext.r160_in1k"
    assert plan.preprocess.eval == [Resize(size=168, interpolation="bicubic"), CenterCrop(size=160)]
    assert plan.preprocess.mean == plan.preprocess.std == [0.5, 0.5, 0.5]
    assert "test_convnext with test_convnext.r160_in1k weights" in plan_table(plan)


@pytest.mark.parametrize("name, late", [("test_convnext", "stages[-1:]"), ("resnet10t.c3_in1k", "layer4")])
def test_the_preset_is_timm_s_own_eval_transform(name, late):
    text = recipe_text(name=name, weights="default", eval_transforms="weights", normalize="weights", late=late)
    plan = plan_of(text)
    config = timm.data.resolve_data_config({}, model=timm_model(name))
    resize, crop, _, normalize = timm.data.create_transform(**config).transforms
    assert isinstance(resize, v1.Resize) and isinstance(crop, v1.CenterCrop)
    ftr_resize, ftr_crop = plan.preprocess.eval
    assert ftr_resize.size == resize.size and ftr_resize.interpolation == resize.interpolation.value
    assert [ftr_crop.size] * 2 == list(crop.size)
    assert plan.preprocess.mean == pytest.approx(normalize.mean.tolist())
    assert plan.preprocess.std == pytest.approx(normalize.std.tolist())


def test_a_vit_s_fixed_size_is_checked_on_the_meta_device():
    ((line, column, message, hint),) = errors_of(recipe_text(name="vit_tiny_patch16_224", late="blocks[-1:]"))
    assert (line, column, message) == (11, 9, "vit_tiny_patch16_224 cannot take 32x32 images")  # synthetic(size=32)
    assert hint == "vit_tiny_patch16_224 takes only 224x224 images: resize or crop to that size"


# --- weights files ----------------------------------------------------------------


def test_a_file_of_the_same_model_fits_but_its_old_classifier(tmp_path):
    path = tmp_path / "convnext.pt"
    state = state_file(path, "test_convnext", seed=11)
    plan = plan_of(recipe_text(weights=f'file("{path.as_posix()}")'))
    assert plan.weights.ignored_keys == ["head.fc.bias", "head.fc.weight"]
    assert plan.weights.loaded == [k for k in state if not k.startswith("head.fc.")]
    assert not (plan.weights.missing or plan.weights.unexpected or plan.weights.misshapen)
    torch.manual_seed(plan.seed)
    model = build_model(plan)
    for key in plan.weights.loaded:
        assert torch.equal(model.state_dict()[key], state[key]), key
    assert model.head.fc.weight.shape == (3, 64)


def test_a_file_of_another_model_does_not_fit_and_says_why(tmp_path):
    path = tmp_path / "resnet.pt"
    state_file(path, "test_resnet", seed=11)
    ((line, column, message, hint),) = errors_of(recipe_text(weights=f'file("{path.as_posix()}")'))
    assert (line, column, message) == (6, 11, f"'{path.as_posix()}' does not fit test_convnext")
    assert hint == "fix key= or strip=, or add strict=false to load what fits"


def test_weights_default_loads_timm_s_pretrained_file_then_draws_the_head(monkeypatch, tmp_path):
    """The path up to the download: timm asks its hub loader for the pinned tag's
    file; the backbone is drawn, then overwritten, then the head drawn."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    pretrained = state_file(tmp_path / "hub.pt", "test_convnext", seed=99)
    asked = []

    def hub_file(model_id, *args, **kwargs):
        asked.append(model_id)
        return dict(pretrained)

    monkeypatch.setattr(timm.models._builder, "load_state_dict_from_hf", hub_file)
    plan = plan_of(recipe_text(weights="default"))
    torch.manual_seed(plan.seed)
    model = build_model(plan)
    assert asked == ["timm/test_convnext.r160_in1k"]
    for key, value in pretrained.items():
        if not key.startswith("head.fc."):
            assert torch.equal(model.state_dict()[key], value), key
    torch.manual_seed(plan.seed)
    timm.create_model("test_convnext")  # the backbone's init, which the pretrained weights replace
    head = nn.Linear(64, 3)
    assert torch.equal(model.head.fc.weight, head.weight) and torch.equal(model.head.fc.bias, head.bias)


# --- timm is optional --------------------------------------------------------------


def test_without_timm_a_timm_recipe_gets_one_error_naming_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # `import timm` fails as if it were not installed
    assert errors_of(recipe_text()) == [
        (5, 12, "backbone timm(...) needs timm, which is not installed", "pip install 'ftr[timm]' (or timm)")
    ]


def test_the_syntax_check_and_a_torchvision_check_import_no_timm():
    probe = (
        "import sys\n"
        "from recipe_lang.cli import main\n"
        "assert main(['check', '--syntax', sys.argv[1]]) == 0\n"
        "assert 'timm' not in sys.modules and 'torch' not in sys.modules\n"
        "assert main(['check', '--no-data', sys.argv[2]]) == 0\n"
        "assert 'torch' in sys.modules and 'timm' not in sys.modules\n"
    )
    recipes = ROOT / "recipes"
    done = subprocess.run(
        [sys.executable, "-c", probe, recipes / "timm_convnext_tiny.ftr", recipes / "seed_resnet18.ftr"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr


# --- the commands ------------------------------------------------------------------


def test_check_and_plan_of_the_timm_recipe(capsys):
    path = str(ROOT / "recipes" / "timm_convnext_tiny.ftr")
    assert main(["check", "--no-data", path]) == 0
    assert "convnext_tiny, 27.86M parameters; 3 groups (head, late, early); 2 spans over 20 epochs" in (
        capsys.readouterr().out
    )
    assert main(["plan", "--no-data", path]) == 0
    out = capsys.readouterr().out
    assert out.startswith("timm-convnext-tiny: convnext_tiny with convnext_tiny.in12k_ft_in1k weights, 27.86M")
    assert "head: linear 768 -> 47, replaces head.fc\n" in out


def test_the_compiled_script_imports_timm_and_writes_ftr_run_s_numbers(tmp_path, one_thread):
    """test_resnet from a weights file, an mlp head at its fc: ftr run and the script, number for number."""
    state_file(tmp_path / "resnet.pt", "test_resnet", seed=5)
    recipe = tmp_path / "timm.ftr"
    recipe.write_text(recipe_text(name="test_resnet", weights='file("resnet.pt")', head="mlp(classes=3, hidden=[8])"))
    # 12 training images: no batch of one, which BatchNorm cannot take on 1x1 maps
    recipe.write_text(recipe.read_text().replace("stages[-1:]", "layer4").replace("count=12", "count=16"))
    code, err = ftr_in(tmp_path, "run", recipe, "--out", "run", "--device", "cpu", "--quiet")
    assert code == 0, err
    code, err = ftr_in(tmp_path, "compile", recipe, "-o", "train.py")
    assert code == 0, err
    script = (tmp_path / "train.py").read_text()
    assert "import timm\n" in script and "recipe_lang" not in script
    assert 'model = timm.create_model("test_resnet")\n' in script
    done = run_isolated(tmp_path / "train.py", "--out", "script", "--device", "cpu", "--quiet", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-4000:]
    assert_rows_close(metrics(tmp_path / "script"), metrics(tmp_path / "run"))
    assert [row["epoch"] for row in metrics(tmp_path / "run")] == [1, 2]
