"""The resolver against real torchvision architectures (built on the meta device).

Selectors, groups and phases are checked against what torchvision itself says
about the model (`named_parameters()` / `named_modules()` of the builder's own
model on the meta device), never against the resolver's helpers. Every resolver
error is checked with its position (line:column) and its message, hint and notes.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

import recipe_lang
from recipe_lang import RecipeError
from recipe_lang.cli import main
from recipe_lang.resolve import resolve
from recipe_lang.resolve.plan import Plan
from recipe_lang.resolve.table import plan_table

RECIPES = Path(__file__).resolve().parent.parent / "recipes"

# the module each builder's own classifier sits at (what a `head` replaces)
CLASSIFIER = {
    "resnet18": "fc",
    "resnet50": "fc",
    "vgg11": "classifier.6",
    "mobilenet_v3_small": "classifier.3",
    "efficientnet_b0": "classifier.1",
    "convnext_tiny": "classifier.2",
    "vit_b_16": "heads.head",
    "swin_t": "head",
    "densenet121": "classifier",
}
BACKBONES = list(CLASSIFIER)
NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)


# --- torchvision's own view of a model ----------------------------------------


@functools.cache
def tv(backbone: str) -> nn.Module:
    """The builder's model, untouched, on the meta device."""
    with torch.device("meta"):
        return torchvision.models.get_model(backbone, weights=None)


def params_of(backbone: str, *paths: str) -> list[str]:
    """Names of the parameters of the modules at `paths`, in the model's order."""
    model = tv(backbone)
    names = {f"{path}.{name}" for path in paths for name, _ in model.get_submodule(path).named_parameters()}
    return [name for name, _ in model.named_parameters() if name in names]


def numel(backbone: str, names) -> int:
    params = dict(tv(backbone).named_parameters())
    return sum(params[name].numel() for name in names)


def backbone_params(backbone: str) -> list[str]:
    """Every parameter but the builder's classifier."""
    head = CLASSIFIER[backbone] + "."
    return [name for name, _ in tv(backbone).named_parameters() if not name.startswith(head)]


def batchnorms(backbone: str, outside: tuple[str, ...] = ()) -> list[str]:
    """BatchNorm module paths, except those under the paths in `outside`."""
    return [
        path
        for path, module in tv(backbone).named_modules()
        if isinstance(module, nn.modules.batchnorm._BatchNorm)
        and not any(path == o or path.startswith(o + ".") for o in outside)
    ]


def batchnorm_params(backbone: str) -> list[str]:
    return params_of(backbone, *batchnorms(backbone))


def no_decay_expected(backbone: str, kinds: tuple[str, ...]) -> set[str]:
    """What `no_weight_decay` should exclude, computed from torchvision's modules
    (the head, a new Linear, contributes only its bias)."""
    out = set()
    if "bias" in kinds:
        out |= {name for name, _ in tv(backbone).named_parameters() if name.endswith(".bias")}
    if "norm" in kinds:
        for path, module in tv(backbone).named_modules():
            if isinstance(module, NORMS):
                out |= {f"{path}.{name}" for name, _ in module.named_parameters()}
    return out


# --- recipes ------------------------------------------------------------------


def make(
    backbone: str = "resnet18",
    *,
    train=("freeze all except head",),
    groups=(),
    lr: str = "1e-3",
    epochs: int = 6,
    weights: str = "none",
    head: str | None = "linear(classes=10)",
    source: str = 'imagefolder("data/train")',
    val: str = "split(0.1)",
    optimizer: str | None = None,
) -> str:
    """A recipe's text; the tests find positions in it with `where`."""
    lines = ['recipe "test"', "", "model {", f"  backbone {backbone}", f"  weights {weights}"]
    if head is not None:
        lines.append(f"  head {head}")
    lines += ["}", "", "data {", f"  train {source}", f"  val {val}", "}", ""]
    if groups:
        lines += ["groups {", *(f"  {g}" for g in groups), "}", ""]
    lines += ["train {", f"  epochs {epochs}", f"  lr {lr}"]
    if optimizer:
        lines.append(f"  optimizer {optimizer}")
    lines += [f"  {t}" for t in train]
    lines += ["}", ""]
    return "\n".join(lines)


def parse(text: str, overrides=()):
    return recipe_lang.parse(text, "test.ftr", overrides)


def plan(backbone: str = "resnet18", **kwargs) -> Plan:
    return resolve(parse(make(backbone, **kwargs)), data=False)


def failure(text: str, **kwargs) -> list:
    """The diagnostics of a recipe that must not resolve."""
    recipe = parse(text)
    with pytest.raises(RecipeError) as info:
        resolve(recipe, **{"data": False, **kwargs})
    return info.value.diagnostics


def one_error(text: str, **kwargs):
    diagnostics = failure(text, **kwargs)
    errors = [d for d in diagnostics if d.is_error]
    assert len(errors) == 1, [d.message for d in errors]
    return errors[0]


def where(text: str, needle: str, nth: int = 0) -> tuple[int, int]:
    """1-based (line, column) of the nth occurrence of needle in text."""
    index = -1
    for _ in range(nth + 1):
        index = text.index(needle, index + 1)
    line = text.count("\n", 0, index) + 1
    column = index - (text.rfind("\n", 0, index) + 1) + 1
    return line, column


def at(diagnostic) -> tuple[int, int]:
    return diagnostic.span.line, diagnostic.span.column


def head_params(p: Plan) -> list[str]:
    return p.group("head").params


def assert_partition(p: Plan) -> None:
    """Every parameter of the model is in exactly one group, and rest is the remainder."""
    owned = [name for g in p.groups for name in g.params]
    assert len(owned) == len(set(owned))
    assert set(owned) == set(backbone_params(p.backbone)) | set(head_params(p))
    assert sum(g.numel for g in p.groups) == p.total_params
    named = {name for g in p.groups if g.name != "rest" for name in g.params}
    order = backbone_params(p.backbone) + head_params(p)
    assert set(p.group("rest").params) == {name for name in order if name not in named}
    assert [g.name for g in p.groups][0] == "head" and p.groups[-1].name == "rest"


def assert_optimizer_groups(p: Plan) -> None:
    """Each trainable parameter (at any epoch) is in exactly one optimizer group,
    and each optimizer group lies inside its recipe group."""
    grouped = [name for og in p.optimizer_groups for name in og.params]
    assert len(grouped) == len(set(grouped))
    ever = {name for phase in p.phases for name in phase.trainable}
    assert ever <= set(grouped)
    for og in p.optimizer_groups:
        assert set(og.params) <= set(p.group(og.group).params)
        assert og.params


# --- selectors ----------------------------------------------------------------

SELECTIONS = [
    # backbone, selector as written, the modules of torchvision's model it covers
    ("resnet18", "layer4", ["layer4"]),
    ("resnet50", "layer3.1", ["layer3.1"]),
    ("resnet50", "layer4.0.downsample", ["layer4.0.downsample"]),
    ("mobilenet_v3_small", "features.12", ["features.12"]),
    ("vgg11", '"features.3"', ["features.3"]),
    ("densenet121", '"features.denseblock4.denselayer16"', ["features.denseblock4.denselayer16"]),
    ("resnet18", '"layer*"', ["layer1", "layer2", "layer3", "layer4"]),
    ("resnet50", '"layer?.0.downsample"', [f"layer{i}.0.downsample" for i in (1, 2, 3, 4)]),
    ("mobilenet_v3_small", '"features.1*"', ["features.1", "features.10", "features.11", "features.12"]),
    ("efficientnet_b0", '"features.1*"', ["features.1"]),
    ("swin_t", '"features.[67]*"', ["features.6", "features.7"]),
    ("densenet121", '"features.norm*"', ["features.norm0", "features.norm5"]),
    ("efficientnet_b0", "features[7:]", ["features.7", "features.8"]),
    ("efficientnet_b0", "features[1:8:3]", ["features.1", "features.4", "features.7"]),
    ("mobilenet_v3_small", "features[:-4]", [f"features.{i}" for i in range(9)]),
    ("vit_b_16", "encoder.layers[-2:]", ["encoder.layers.encoder_layer_10", "encoder.layers.encoder_layer_11"]),
    ("vit_b_16", "encoder.layers[0]", ["encoder.layers.encoder_layer_0"]),
    ("convnext_tiny", "features[-1]", ["features.7"]),
    ("convnext_tiny", "features.5[-3:]", ["features.5.6", "features.5.7", "features.5.8"]),
    ("swin_t", '"features.5"[4:]', ["features.5.4", "features.5.5"]),
    ("densenet121", "features[-2:]", ["features.denseblock4", "features.norm5"]),
    ("vgg11", "classifier[:6]", [f"classifier.{i}" for i in range(6)]),
    ("vgg11", "features[::-1]", [f"features.{i}" for i in range(21)]),
]


@pytest.mark.parametrize(("backbone", "selector", "modules"), SELECTIONS, ids=[f"{b}:{s}" for b, s, _ in SELECTIONS])
def test_selector_covers_the_parameters_of_its_modules(backbone, selector, modules):
    p = plan(backbone, groups=[f"g = {selector}"], train=[f"freeze all except head, {selector}"])
    expected = params_of(backbone, *modules)
    assert expected, "the expectation itself must name parameters"
    group = p.group("g")
    assert group.params == expected
    assert group.numel == numel(backbone, expected)
    # what `ftr plan` shows under "covers" is recipe syntax with the same meaning
    again = plan(backbone, groups=[f"g = {group.covers}"], train=[f"freeze all except head, {selector}"])
    assert again.group("g").params == expected
    # the same selector written straight in freeze ... except
    (phase,) = p.phases
    assert set(phase.trainable) == set(expected) | set(head_params(p))
    assert phase.numel == group.numel + p.group("head").numel
    assert_partition(p)


@pytest.mark.parametrize("backbone", BACKBONES)
def test_head_backbone_and_all(backbone):
    classifier = tv(backbone).get_submodule(CLASSIFIER[backbone])
    p = plan(backbone, groups=["body = backbone"], train=["freeze all except head"])
    assert p.classifier.path == CLASSIFIER[backbone]
    assert p.classifier.in_features == classifier.in_features
    assert p.classifier.out_features == 1000
    path = CLASSIFIER[backbone]
    assert head_params(p) == [f"{path}.weight", f"{path}.bias"]
    assert p.group("head").numel == classifier.in_features * 10 + 10
    assert p.group("body").params == backbone_params(backbone)
    assert p.group("body").numel == numel(backbone, backbone_params(backbone))
    assert p.group("rest").params == [] and p.group("rest").numel == 0
    assert p.total_params == p.group("body").numel + p.group("head").numel
    (phase,) = p.phases
    assert phase.trainable == head_params(p)
    assert_partition(p)


def test_all_and_backbone_as_freeze_selectors():
    frozen_backbone = plan("resnet18", train=["freeze backbone"])
    frozen_all_but_head = plan("resnet18", train=["freeze all except head"])
    assert frozen_backbone.phases == frozen_all_but_head.phases
    everything = plan("resnet18", train=["freeze head except all"])  # nothing is frozen
    assert everything.phases[0].numel == everything.total_params


def test_mlp_head_parameters_are_the_new_modules():
    p = plan("resnet50", head="mlp(classes=37, hidden=[512, 256], dropout=0.3, activation=gelu)")
    expected = nn.Sequential(
        nn.Linear(2048, 512), nn.GELU(), nn.Dropout(0.3),
        nn.Linear(512, 256), nn.GELU(), nn.Dropout(0.3),
        nn.Linear(256, 37),
    )  # fmt: skip
    names = [f"fc.{name}" for name, _ in expected.named_parameters()]
    assert head_params(p) == names
    assert p.group("head").numel == sum(t.numel() for t in expected.parameters())
    assert p.total_params == numel("resnet50", backbone_params("resnet50")) + p.group("head").numel


def test_dropout_linear_head_and_selecting_inside_it():
    # the head is Sequential(Dropout, Linear) at fc: its module paths can be selected like any other
    p = plan("resnet18", head="linear(classes=10, dropout=0.5)", train=["freeze all except fc.1"])
    assert head_params(p) == ["fc.1.weight", "fc.1.bias"]
    assert p.phases[0].trainable == head_params(p)


def test_without_a_head_the_builders_classifier_is_head():
    p = plan("vgg11", head=None, train=["freeze features"])
    assert not p.classifier.replaced
    assert head_params(p) == ["classifier.6.weight", "classifier.6.bias"]
    assert p.group("head").numel == 4096 * 1000 + 1000
    (phase,) = p.phases
    assert set(phase.trainable) == set(params_of("vgg11", "classifier"))


def test_group_names_except_and_rest_remainder():
    p = plan(
        "resnet50",
        groups=["top = layer4", "mid = layer3 except layer3.0", 'low = "layer*" except top, mid'],
        lr="head=1e-3, top=1e-4, mid=1e-5, low=1e-6",
        train=["freeze all except head, top"],
    )
    assert p.group("top").params == params_of("resnet50", "layer4")
    assert p.group("mid").params == params_of("resnet50", *(f"layer3.{i}" for i in range(1, 6)))
    assert p.group("low").params == params_of("resnet50", "layer1", "layer2", "layer3.0")
    assert p.group("rest").params == params_of("resnet50", "conv1", "bn1")
    assert p.group("rest").lr is None  # never trains, needs no rate
    assert [g.covers for g in p.groups] == [
        "fc (new head)",
        "layer4",
        "layer3 except layer3.0",
        '"layer*" except top, mid',
        "everything else",
    ]
    (phase,) = p.phases
    assert phase.trainable == params_of("resnet50", "layer4") + head_params(p)
    assert_partition(p)


def test_a_group_is_a_selector_in_freeze_and_events():
    p = plan(
        "convnext_tiny",
        groups=["late = features[6:], classifier.0"],
        lr="1e-4, head=1e-3",
        train=["freeze all except head, late", "at epoch 4 freeze late"],
    )
    late = params_of("convnext_tiny", "features.6", "features.7", "classifier.0")
    assert p.group("late").params == late
    assert set(p.phases[0].trainable) == set(late) | set(head_params(p))
    assert p.phases[1].trainable == head_params(p)
    assert p.phases[1].frozen == ["late"]


def test_rest_is_a_selector_after_the_groups():
    p = plan(
        "resnet18",
        groups=["top = layer4"],
        lr="1e-4, head=1e-3",
        train=["freeze all except head, top", "at epoch 3 unfreeze rest"],
    )
    assert p.group("rest").params == [n for n in backbone_params("resnet18") if not n.startswith("layer4.")]
    assert p.phases[1].numel == p.total_params
    assert p.phases[1].thawed == ["rest"]


def test_a_group_without_parameters_is_a_warning():
    text = make(groups=["acts = relu, avgpool"])
    recipe = parse(text)
    p = resolve(recipe, data=False)
    (warning,) = recipe.warnings
    assert warning.severity == "warning"
    assert warning.message == "group 'acts' covers no parameters"
    assert at(warning) == where(text, "acts =")
    assert p.group("acts").params == [] and p.group("acts").numel == 0


# --- selector errors ----------------------------------------------------------


def test_unknown_module_names_the_closest_paths():
    text = make(train=["freeze all except head, layer5"])
    d = one_error(text)
    assert at(d) == where(text, "layer5")
    assert d.span.end_column == d.span.column + len("layer5")
    assert d.message == "no module 'layer5' in the model"
    assert d.hint == "did you mean 'layer4'?"
    assert d.notes == ("closest module paths: layer4, layer3, layer2",)


def test_unknown_module_without_a_close_one_lists_the_top_level():
    text = make(groups=["top = layer4, zzz"])
    d = one_error(text)
    assert at(d) == where(text, "zzz")
    assert d.message == "no module 'zzz' in the model"
    assert d.notes == (
        "the model's top-level modules: conv1, bn1, relu, maxpool, layer1, layer2, layer3, layer4, avgpool, fc",
    )


def test_unknown_module_in_a_nested_path():
    text = make("resnet50", groups=["top = layer4", "deep = layer3.9"])
    d = one_error(text)
    assert at(d) == where(text, "layer3.9")
    assert d.message == "no module 'layer3.9' in the model"
    assert d.hint.startswith("did you mean 'layer3.")


def test_every_bad_selector_is_reported_at_its_own_position():
    text = make(groups=["top = layer5 except layer6"], train=["freeze all except head", "at epoch 2 unfreeze lyr4"])
    diagnostics = failure(text)
    assert [(at(d), d.message) for d in diagnostics] == [
        (where(text, "layer5"), "no module 'layer5' in the model"),
        (where(text, "layer6"), "no module 'layer6' in the model"),
        (where(text, "lyr4"), "no module 'lyr4' in the model"),
    ]


def test_glob_matching_nothing():
    text = make("vit_b_16", train=['freeze all except head, "blocks.*"'])
    d = one_error(text)
    assert at(d) == where(text, '"blocks.*"')
    assert d.message == "'blocks.*' matches no module"


def test_glob_matching_nothing_suggests_a_path():
    text = make(train=['freeze all except head, "layr4.*"'])
    d = one_error(text)
    assert d.message == "'layr4.*' matches no module"
    assert d.hint.startswith("did you mean 'layer4")


def test_slice_out_of_range():
    text = make("mobilenet_v3_small", train=["freeze features[20:]"])
    d = one_error(text)
    assert at(d) == where(text, "features[20:]")
    assert d.message == "'features[20:]' selects no children: 'features' has 13"
    assert d.hint == "children are numbered 0 to 12, or from the end -1 to -13"


@pytest.mark.parametrize("index", [13, -14])
def test_index_out_of_range(index):
    text = make("mobilenet_v3_small", train=[f"freeze features[{index}]"])
    d = one_error(text)
    assert at(d) == where(text, f"features[{index}]")
    assert d.message == f"index {index} is out of range: 'features' has 13 children"
    assert d.hint == "use an index from -13 to 12"


def test_negative_index_in_range():
    p = plan("mobilenet_v3_small", train=["freeze features[-13]"])
    frozen = set(params_of("mobilenet_v3_small", "features.0"))
    assert not frozen & set(p.phases[0].trainable)
    assert p.phases[0].numel == p.total_params - numel("mobilenet_v3_small", frozen)


def test_slice_of_a_module_without_children():
    text = make(train=["freeze layer4.0.conv1[0:]"])
    d = one_error(text)
    assert at(d) == where(text, "layer4.0.conv1[0:]")
    assert d.message == "'layer4.0.conv1' has no children to slice"
    assert d.hint == "it is a Conv2d"


def test_slice_of_an_unknown_container():
    text = make("vit_b_16", train=["freeze encoder.blocks[-2:]"])
    d = one_error(text)
    assert d.message == "no module 'encoder.blocks' in the model"
    assert at(d) == where(text, "encoder.blocks[-2:]")


def test_slice_step_zero_is_a_recipe_error():
    """`[::0]` is no slice Python accepts; it must be a diagnostic, not a ValueError traceback."""
    text = make(train=["freeze layer4[::0]"])
    with pytest.raises(RecipeError) as info:  # from the syntax checks or the resolver, either is fine
        resolve(parse(text), data=False)
    (d,) = info.value.errors
    line, column = where(text, "layer4[::0]")
    assert at(d) == (line, column + len("layer4[::"))  # the caret sits under the zero step
    assert "step" in d.message


# --- group errors -------------------------------------------------------------


def test_overlapping_groups_name_the_shared_parameters():
    text = make(groups=["top = layer4", "late = layer4.1, fc"])
    d = one_error(text)
    assert at(d) == where(text, "late = ")
    assert d.message == "group 'late' shares 8 parameters with head, top"
    shared = sorted(["fc.weight", "fc.bias", *params_of("resnet18", "layer4.1")])
    assert d.notes == (f"shared: {', '.join(shared[:5])} ...",)
    assert "except" in d.hint


def test_a_group_of_everything_overlaps_the_head():
    text = make(groups=["everything = all"])
    d = one_error(text)
    assert d.message == "group 'everything' shares 2 parameters with head"
    assert d.notes == ("shared: fc.bias, fc.weight",)


def test_except_resolves_an_overlap():
    p = plan(groups=["top = layer4", "late = all except head, top"])
    assert p.group("late").params == [n for n in backbone_params("resnet18") if not n.startswith("layer4.")]
    assert p.group("rest").params == []


def test_a_group_that_trains_without_a_rate():
    text = make(
        groups=["top = layer4"],
        lr="head=1e-3",
        train=["freeze all except head", "at epoch 3 unfreeze top"],
    )
    d = one_error(text)
    assert at(d) == where(text, "lr head")
    assert d.message == "group 'top' trains from epoch 3 but has no rate"
    assert d.hint == "add top=... to lr, or give lr a default rate"
    assert d.notes == ("'top' covers layer4",)


def test_rest_that_trains_without_a_rate():
    text = make(groups=["top = layer4"], lr="head=1e-3, top=1e-4", train=["freeze layer1"])
    d = one_error(text)
    assert d.message == "group 'rest' trains from epoch 1 but has no rate"
    assert d.hint == "add rest=... to lr, or give lr a default rate"
    assert d.notes == ()


def test_a_group_that_never_trains_needs_no_rate():
    p = plan(groups=["top = layer4"], lr="head=1e-3")
    assert p.group("top").lr is None and p.group("rest").lr is None
    assert {og.group for og in p.optimizer_groups} == {"head"}
    assert_optimizer_groups(p)


# --- what trains when: errors and warnings --------------------------------------


def test_nothing_trains_at_the_start():
    text = make(train=["freeze all"])
    d = one_error(text)
    assert at(d) == where(text, "all")
    assert d.message == "nothing trains in epochs 1 to 6"
    assert d.hint == "leave some part unfrozen"


def test_nothing_trains_after_a_freeze():
    text = make(train=["freeze all except head", "at epoch 3 freeze head"])
    d = one_error(text)
    assert at(d) == where(text, "at epoch 3")
    assert d.message == "nothing trains in epochs 3 to 6"


def test_nothing_trains_for_a_span_in_the_middle():
    text = make(train=["freeze backbone", "at epoch 3 freeze head", "at epoch 5 unfreeze head"])
    d = one_error(text)
    assert at(d) == where(text, "at epoch 3")
    assert d.message == "nothing trains in epochs 3 to 4"


def test_nothing_trains_in_the_last_epoch():
    text = make(train=["freeze backbone", "at epoch 6 freeze head"])
    d = one_error(text)
    assert d.message == "nothing trains in epoch 6"


def test_thawing_what_already_trains_is_a_warning():
    text = make(train=["freeze layer1", "at epoch 3 unfreeze layer4"])
    recipe = parse(text)
    p = resolve(recipe, data=False)
    (warning,) = [w for w in recipe.warnings if w.severity == "warning"]
    assert at(warning) == where(text, "at epoch 3")
    assert warning.message == "'layer4' already trains at epoch 3"
    assert any("warning: 'layer4' already trains at epoch 3" in w for w in p.warnings)
    assert [(ph.first, ph.last) for ph in p.phases] == [(1, 2), (3, 6)]
    assert p.phases[0].trainable == p.phases[1].trainable


def test_freezing_what_is_already_frozen_is_a_warning():
    text = make(train=["freeze all except head", "at epoch 3 freeze layer2"])
    recipe = parse(text)
    resolve(recipe, data=False)
    (warning,) = [w for w in recipe.warnings if w.severity == "warning"]
    assert warning.message == "'layer2' is already frozen at epoch 3"
    assert at(warning) == where(text, "at epoch 3")


def test_a_stage_thawing_twice_is_a_warning():
    text = make(train=["freeze all except head", "unfreeze gradually layer4, layer4.1 from epoch 2 every 2"])
    recipe = parse(text)
    resolve(recipe, data=False)
    (warning,) = [w for w in recipe.warnings if w.severity == "warning"]
    assert warning.message == "'layer4.1' already trains at epoch 4"
    assert at(warning) == where(text, "layer4.1")


# --- model, head and weights errors --------------------------------------------


def test_unknown_backbone_suggests_one():
    text = make("resnet19")
    d = one_error(text)
    assert at(d) == where(text, "resnet19")
    assert d.message == "unknown backbone 'resnet19'"
    assert d.hint == "did you mean 'resnet18'?"


def test_unknown_weights_member_lists_the_valid_ones():
    text = make("resnet50", weights='"IMAGENET1K_V3"')
    d = one_error(text)
    assert at(d) == where(text, '"IMAGENET1K_V3"')
    assert d.message == "unknown weights 'IMAGENET1K_V3' for resnet50"
    assert d.hint.startswith("did you mean 'IMAGENET1K_V")
    valid = list(torchvision.models.ResNet50_Weights.__members__)
    assert d.notes == (f"valid: {', '.join(valid)}",)
    assert "IMAGENET1K_V2" in valid and "DEFAULT" in valid


@pytest.mark.parametrize(
    ("backbone", "weights", "enum"),
    [
        ("resnet50", "default", "ResNet50_Weights.IMAGENET1K_V2"),
        ("resnet50", '"IMAGENET1K_V1"', "ResNet50_Weights.IMAGENET1K_V1"),
        ("vit_b_16", "default", "ViT_B_16_Weights.IMAGENET1K_V1"),
        ("resnet18", "none", None),
    ],
)
def test_weights_resolve_to_the_enum_member(backbone, weights, enum):
    assert plan(backbone, weights=weights).weights.enum == enum


def test_head_at_an_unknown_module():
    text = make(head='linear(classes=10) at "layer9"')
    d = one_error(text)
    assert at(d) == where(text, '"layer9"')
    assert d.message == "this model has no module 'layer9'"
    assert d.hint == "did you mean 'layer4', 'layer3' or 'layer2'?"


def test_head_at_a_module_a_head_cannot_replace():
    text = make(head='linear(classes=10) at "layer4"')
    d = one_error(text)
    assert at(d) == where(text, '"layer4"')
    assert d.message == "'layer4' is a Sequential, which a head cannot replace"


def test_head_at_a_pointwise_conv_the_model_cannot_run_with():
    text = make("resnet50", head='linear(classes=10) at "layer4.2.conv3"')
    d = one_error(text)
    assert d.message == "the model does not run with a head at 'layer4.2.conv3'"
    assert d.span.line == where(text, "head linear")[0]
    assert "leave out `at`" in d.hint


def test_head_at_the_classifier_is_the_same_as_without_at():
    assert plan(head='linear(classes=10) at "fc"').groups == plan().groups


# --- weights files ---------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Real resnet18 checkpoints: as saved, wrapped by a DataParallel script,
    with keys missing / renamed / misshapen, and a pickled module."""
    folder = tmp_path_factory.mktemp("checkpoints")
    state = torchvision.models.resnet18().state_dict()
    torch.save(state, folder / "good.pt")
    wrapped = {"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 30}
    torch.save(wrapped, folder / "wrapped.pt")
    bad = dict(state)
    del bad["layer1.0.conv1.weight"]
    bad["layer2.0.bn1.running_avg"] = bad.pop("layer2.0.bn1.running_mean")
    bad["conv1.weight"] = torch.zeros(64, 3, 3, 3)
    torch.save(bad, folder / "bad.pt")
    torch.save(nn.Linear(2, 2), folder / "module.pt")
    return folder


def test_weights_file_that_does_not_fit_is_an_error(checkpoints):
    path = checkpoints / "bad.pt"
    text = make(weights=f'file("{path}")')
    d = one_error(text)
    assert at(d) == where(text, "file(")
    assert d.message == f"'{path}' does not fit resnet18"
    assert set(d.notes) == {
        "missing: layer1.0.conv1.weight",
        "missing: layer2.0.bn1.running_mean",
        "unexpected: layer2.0.bn1.running_avg",
        "misshapen: conv1.weight: file [64, 3, 3, 3], model [64, 3, 7, 7]",
    }
    assert "strict=false" in d.hint


def test_weights_file_that_does_not_fit_is_a_warning_without_strict(checkpoints):
    path = checkpoints / "bad.pt"
    text = make(weights=f'file("{path}", strict=false)')
    recipe = parse(text)
    p = resolve(recipe, data=False)
    (warning,) = recipe.warnings
    assert warning.severity == "warning"
    assert warning.message == f"'{path}' does not fit resnet18"
    assert "unexpected: layer2.0.bn1.running_avg" in warning.notes
    assert p.weights.ignored_keys == ["fc.bias", "fc.weight"]
    assert any("warning:" in w and "does not fit" in w for w in p.warnings)


def test_weights_file_with_key_and_strip(checkpoints):
    path = checkpoints / "wrapped.pt"
    recipe = parse(make(weights=f'file("{path}", key="state_dict", strip="module.")'))
    p = resolve(recipe, data=False)
    assert recipe.warnings == []
    assert p.weights.ignored_keys == ["fc.bias", "fc.weight"]
    assert p.weights.spec.key == "state_dict" and p.weights.spec.strip == "module."
    assert p.weights.enum is None


def test_weights_file_without_strip_reports_the_prefixed_keys(checkpoints):
    text = make(weights=f'file("{checkpoints / "wrapped.pt"}", key="state_dict")')
    d = one_error(text)
    assert "unexpected: module.conv1.weight" in d.notes
    assert "missing: conv1.weight" in d.notes
    assert any(note.startswith("... and ") for note in d.notes)  # long lists are cut


def test_weights_file_without_a_head_loads_the_classifier_too(checkpoints):
    recipe = parse(make(weights=f'file("{checkpoints / "good.pt"}")', head=None))
    p = resolve(recipe, data=False)
    assert recipe.warnings == []
    assert p.weights.ignored_keys == []


def test_weights_file_is_not_opened_when_skipped(checkpoints):
    p = resolve(parse(make(weights=f'file("{checkpoints / "bad.pt"}")')), data=False, weights_file=False)
    assert p.weights.spec.kind == "file"
    assert p.weights.ignored_keys == []


def test_weights_file_that_is_a_pickled_object(checkpoints):
    path = checkpoints / "module.pt"
    text = make(weights=f'file("{path}")')
    d = one_error(text)
    assert at(d) == where(text, "file(")
    assert d.message == f"'{path}' is not a plain tensor checkpoint"
    assert d.notes == ("it refers to 'torch.nn.modules.linear.Linear'",)
    assert "state_dict()" in d.hint


def test_weights_file_that_does_not_exist(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    d = one_error(make(weights='file("nowhere.pt")'))
    assert d.message == "weights file 'nowhere.pt' does not exist"


def test_the_vgg11_recipe_with_its_checkpoint(tmp_path, monkeypatch):
    """recipes/vgg11_file_weights.ftr against a checkpoint shaped like vgg11's
    (zero-stride tensors: the right shapes in a few bytes)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "checkpoints").mkdir()
    state = {f"module.{k}": torch.zeros(1).expand(v.shape) for k, v in tv("vgg11").state_dict().items()}
    state["module.classifier.0.weight"] = torch.zeros(1).expand(4096, 512)  # not vgg11's
    torch.save({"state_dict": state, "epoch": 30}, tmp_path / "checkpoints" / "vgg11_places.pt")
    recipe = recipe_lang.load(RECIPES / "vgg11_file_weights.ftr")
    p = resolve(recipe, data=False)
    (warning,) = recipe.warnings
    assert warning.severity == "warning"
    assert warning.notes == ("misshapen: classifier.0.weight: file [4096, 512], model [4096, 25088]",)
    assert p.weights.ignored_keys == ["classifier.6.bias", "classifier.6.weight"]


# --- data ---------------------------------------------------------------------


def image(path: Path) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (2, 2), (120, 30, 200)).save(path)


def data_failure(text: str):
    return one_error(text, data=True)


def test_data_folder_that_does_not_exist(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text = make()
    d = data_failure(text)
    assert at(d) == where(text, "imagefolder(")
    assert d.message == "data folder 'data/train' does not exist"
    assert str(tmp_path) in d.hint and "relative to the working directory" in d.hint


def test_data_folder_that_is_empty(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data" / "train").mkdir(parents=True)
    text = make()
    d = data_failure(text)
    assert at(d) == where(text, "imagefolder(")
    assert d.message == "data folder 'data/train' is empty"
    assert "<class>" in d.hint


def test_class_folder_without_images(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    image(tmp_path / "data" / "train" / "cat" / "a.png")
    (tmp_path / "data" / "train" / "dog").mkdir()
    (tmp_path / "data" / "train" / "dog" / "notes.txt").write_text("not an image")
    d = data_failure(make(head="linear(classes=2)"))
    assert d.message == "class folder 'data/train/dog' has no images"
    assert ".png" in d.hint


def test_class_count_differs_from_the_head(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("cat", "dog", "fox"):
        image(tmp_path / "data" / "train" / name / "0.png")
    text = make(head="linear(classes=10)")
    d = data_failure(text)
    line, column = where(text, "classes=10")
    assert at(d) == (line, column + len("classes="))
    assert d.message == "the data has 3 classes but the head has 10"
    assert d.hint == "set classes=3"
    assert d.notes == ("classes: cat, dog, fox",)


def test_class_count_differs_from_the_builders_classifier(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("cat", "dog"):
        image(tmp_path / "data" / "train" / name / "0.png")
    d = data_failure(make(head=None))
    assert d.message == "the data has 2 classes but the head has 1000"
    assert d.hint == "add head linear(classes=2) to model"


def test_val_with_other_classes_than_train(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for split, names in (("train", ("cat", "dog")), ("val", ("cat", "cow"))):
        for name in names:
            image(tmp_path / "data" / split / name / "0.png")
    text = make(head="linear(classes=2)", val='imagefolder("data/val")')
    d = data_failure(text)
    assert at(d) == where(text, 'imagefolder("data/val")')
    assert d.message == "val has other classes than train"
    assert d.notes == ("only in train: dog", "only in val: cow")


def test_good_data_gives_the_class_names(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("tabby", "calico"):
        image(tmp_path / "data" / "train" / name / "nested" / "0.png")
    p = resolve(parse(make(head="linear(classes=2)")))
    assert p.classes == ["calico", "tabby"]


# --- phases -------------------------------------------------------------------


def test_freeze_then_thaw_with_warmup():
    p = plan(train=["freeze all except head", "at epoch 3 unfreeze layer4 warmup=1"])
    head = head_params(p)
    layer4 = params_of("resnet18", "layer4")
    assert [(ph.first, ph.last) for ph in p.phases] == [(1, 2), (3, 6)]
    assert p.phases[0].trainable == head
    assert p.phases[1].trainable == layer4 + head
    assert p.phases[1].numel == numel("resnet18", layer4) + p.group("head").numel
    assert p.phases[1].thawed == ["layer4"] and p.phases[1].frozen == []
    assert p.phase_of(2) == p.phases[0] and p.phase_of(6) == p.phases[1]
    warm = [og for og in p.optimizer_groups if og.warmups]
    assert {name for og in warm for name in og.params} == set(layer4)
    assert all(og.warmups == [(3, 1.0)] for og in warm)
    assert_optimizer_groups(p)


def test_batchnorm_eval_keeps_frozen_batchnorms_in_eval():
    p = plan(train=["freeze all except head", "at epoch 3 unfreeze layer4"])
    assert p.phases[0].bn_eval == batchnorms("resnet18")
    assert len(p.phases[0].bn_eval) == 20
    assert p.phases[1].bn_eval == batchnorms("resnet18", outside=("layer4",))
    assert p.phases[1].trainable == params_of("resnet18", "layer4") + head_params(p)


def test_batchnorm_train_keeps_none_in_eval():
    p = plan(train=["freeze all except head", "at epoch 3 unfreeze layer4", "batchnorm train"])
    assert all(phase.bn_eval == [] for phase in p.phases)
    assert p.phases[0].trainable == head_params(p)


def test_batchnorm_trainable_trains_the_affine_parameters():
    p = plan("resnet50", train=["freeze all except head", "at epoch 3 unfreeze layer4", "batchnorm trainable"])
    bn = batchnorm_params("resnet50")
    assert all(phase.bn_eval == [] for phase in p.phases)
    assert p.phases[0].trainable == bn + head_params(p)
    assert p.phases[0].numel == numel("resnet50", bn) + p.group("head").numel
    layer4 = params_of("resnet50", "layer4")
    assert set(p.phases[1].trainable) == set(bn) | set(layer4) | set(head_params(p))
    # the BatchNorm affines of frozen parts are in `rest`, so it needs a rate
    text = make("resnet50", lr="head=1e-3", train=["freeze all except head", "batchnorm trainable"])
    d = one_error(text)
    assert d.message == "group 'rest' trains from epoch 1 but has no rate"


def test_batchnorm_in_a_model_without_batchnorm():
    p = plan("vit_b_16", train=["freeze all except head"])
    assert p.phases[0].bn_eval == []


def test_unfreeze_gradually_stages():
    p = plan(
        "efficientnet_b0",
        epochs=8,
        train=[
            "freeze all except head",
            "unfreeze gradually features[7:], features[5:7], features[:5] from epoch 2 every 2",
        ],
    )
    head = set(head_params(p))
    stages = [
        params_of("efficientnet_b0", "features.7", "features.8"),
        params_of("efficientnet_b0", "features.5", "features.6"),
        params_of("efficientnet_b0", *(f"features.{i}" for i in range(5))),
    ]
    assert [(ph.first, ph.last) for ph in p.phases] == [(1, 1), (2, 3), (4, 5), (6, 8)]
    assert [ph.thawed for ph in p.phases] == [[], ["features[7:]"], ["features[5:7]"], ["features[:5]"]]
    trainable = set(head)
    assert set(p.phases[0].trainable) == trainable
    for phase, stage in zip(p.phases[1:], stages, strict=True):
        trainable |= set(stage)
        assert set(phase.trainable) == trainable
    assert p.phases[-1].numel == p.total_params
    assert p.phases[-1].bn_eval == []
    assert len(p.phases[0].bn_eval) == len(batchnorms("efficientnet_b0"))


def test_gradual_stages_and_events_on_the_same_epoch():
    p = plan(
        "resnet18",
        train=[
            "freeze all except head",
            "at epoch 3 freeze head",
            "unfreeze gradually layer4, layer3 from epoch 3 every 2",
        ],
    )
    assert [(ph.first, ph.last) for ph in p.phases] == [(1, 2), (3, 4), (5, 6)]
    assert p.phases[1].frozen == ["head"] and p.phases[1].thawed == ["layer4"]
    assert p.phases[1].trainable == params_of("resnet18", "layer4")
    assert p.phases[2].trainable == params_of("resnet18", "layer3", "layer4")


def test_freeze_again_later():
    p = plan(
        "densenet121", train=["freeze all except head, features.denseblock4", "at epoch 4 freeze features.denseblock4"]
    )
    block = params_of("densenet121", "features.denseblock4")
    assert set(p.phases[0].trainable) == set(block) | set(head_params(p))
    assert p.phases[1].trainable == head_params(p)
    assert p.phases[1].frozen == ["features.denseblock4"]
    assert p.phases[1].bn_eval == batchnorms("densenet121")


# --- optimizer groups -----------------------------------------------------------


@pytest.mark.parametrize("backbone", ["resnet18", "convnext_tiny", "vit_b_16"])
def test_no_weight_decay_bias_and_norm(backbone):
    p = plan(
        backbone,
        optimizer="adamw(weight_decay=0.05)",
        train=["freeze all except head", "at epoch 2 unfreeze all", "no_weight_decay bias, norm"],
    )
    no_decay = no_decay_expected(backbone, ("bias", "norm")) | {f"{CLASSIFIER[backbone]}.bias"}
    assert_optimizer_groups(p)
    for og in p.optimizer_groups:
        assert og.weight_decay in (0.0, 0.05)
        assert all((name in no_decay) == (og.weight_decay == 0.0) for name in og.params), og.group
    assert {name for og in p.optimizer_groups if og.weight_decay == 0 for name in og.params} == no_decay


def test_no_weight_decay_bias_only():
    p = plan(optimizer="adamw(weight_decay=0.05)", train=["no_weight_decay bias"])
    no_decay = {name for og in p.optimizer_groups if og.weight_decay == 0 for name in og.params}
    assert no_decay == no_decay_expected("resnet18", ("bias",)) | {"fc.bias"}
    assert "bn1.weight" not in no_decay


def test_without_no_weight_decay_every_group_takes_the_optimizers_decay():
    p = plan(optimizer="adamw(weight_decay=0.05)", train=["freeze layer1"])
    assert [(og.group, og.weight_decay) for og in p.optimizer_groups] == [("head", 0.05), ("rest", 0.05)]
    sgd = plan(optimizer="sgd(momentum=0.9)")
    assert {og.weight_decay for og in sgd.optimizer_groups} == {0.0}


def test_optimizer_groups_split_by_decay_and_warmup():
    p = plan(
        groups=["top = layer4", "mid = layer3"],
        lr="1e-3",
        optimizer="adamw(weight_decay=0.01)",
        train=[
            "freeze all except head",
            "at epoch 2 unfreeze top warmup=1",
            "at epoch 4 unfreeze mid, layer2.1 warmup=0.5",
            "no_weight_decay bias, norm",
        ],
    )
    assert_optimizer_groups(p)
    split = {(og.group, og.weight_decay, tuple(og.warmups)) for og in p.optimizer_groups}
    assert split == {
        ("head", 0.01, ()),
        ("head", 0.0, ()),
        ("top", 0.01, ((2, 1.0),)),
        ("top", 0.0, ((2, 1.0),)),
        ("mid", 0.01, ((4, 0.5),)),
        ("mid", 0.0, ((4, 0.5),)),
        ("rest", 0.01, ((4, 0.5),)),
        ("rest", 0.0, ((4, 0.5),)),
        ("rest", 0.01, ()),
        ("rest", 0.0, ()),
    }
    warm_rest = {n for og in p.optimizer_groups if og.group == "rest" and og.warmups for n in og.params}
    assert warm_rest == set(params_of("resnet18", "layer2.1"))


def test_optimizer_groups_are_fixed_from_the_start_for_frozen_groups():
    """A group that thaws later is in the optimizer from step 0 (design: never rebuilt)."""
    p = plan(groups=["top = layer4"], train=["freeze all except head", "at epoch 5 unfreeze top"])
    assert {og.group for og in p.optimizer_groups} == {"head", "top", "rest"}
    assert set(p.optimizer_groups[0].params) == set(head_params(p))


# --- overrides ------------------------------------------------------------------


def test_set_overrides_change_the_plan():
    path = RECIPES / "seed_resnet18.ftr"
    base = resolve(recipe_lang.load(path), data=False)
    changed = resolve(
        recipe_lang.load(path, overrides=["train.epochs=3", "train.freeze=all except head, layer4"]), data=False
    )
    assert base.epochs == 10 and changed.epochs == 3
    assert [(ph.first, ph.last) for ph in changed.phases] == [(1, 3)]
    assert changed.phases[0].trainable == params_of("resnet18", "layer4") + head_params(changed)
    assert base.phases[0].trainable == head_params(base)


def test_set_a_group_and_rates():
    path = RECIPES / "pets_resnet50.ftr"
    p = resolve(
        recipe_lang.load(
            path, overrides=["groups.top=layer4.1", "train.lr=head=1e-2, top=1e-3, middle=1e-4, base=1e-5"]
        ),
        data=False,
    )
    assert p.group("top").params == params_of("resnet50", "layer4.1")
    assert p.group("rest").params == params_of("resnet50", "layer4.0", "layer4.2")
    assert p.group("rest").lr is None
    assert [g.lr for g in p.groups] == [1e-2, 1e-3, 1e-4, 1e-5, None]
    assert_partition(p)


def test_a_bad_override_is_reported_in_its_own_text():
    recipe = recipe_lang.load(RECIPES / "seed_resnet18.ftr", overrides=["train.freeze=all except head, layer9"])
    with pytest.raises(RecipeError) as info:
        resolve(recipe, data=False)
    (d,) = info.value.diagnostics
    assert d.message == "no module 'layer9' in the model"
    assert d.span.origin == ("--set train.freeze", "freeze all except head, layer9")
    assert at(d) == (1, 25)
    assert info.value.render().startswith("--set train.freeze:1:25: error:")


# --- the command line -------------------------------------------------------------


def test_plan_json_round_trips(capsys):
    path = str(RECIPES / "pets_resnet50.ftr")
    assert main(["plan", path, "--no-data", "--json"]) == 0
    out = capsys.readouterr().out
    parsed = Plan.model_validate_json(out)
    assert parsed == resolve(recipe_lang.load(path), data=False)
    assert json.loads(out)["groups"][1]["name"] == "top"
    assert parsed.digest() == resolve(recipe_lang.load(path), data=False).digest()


def test_plan_prints_the_table(capsys):
    path = str(RECIPES / "pets_resnet50.ftr")
    assert main(["plan", path, "--no-data"]) == 0
    out = capsys.readouterr().out
    assert out == plan_table(resolve(recipe_lang.load(path), data=False)) + "\n"


def test_plan_of_a_bad_recipe_exits_1(tmp_path, capsys):
    text = make(train=["freeze all except head, layer5"])
    (tmp_path / "bad.ftr").write_text(text)
    assert main(["plan", str(tmp_path / "bad.ftr"), "--no-data"]) == 1
    captured = capsys.readouterr()
    line, column = where(text, "layer5")
    assert f"bad.ftr:{line}:{column}: error: no module 'layer5' in the model" in captured.err
    assert captured.out == ""
    assert "Traceback" not in captured.err


def test_check_exit_codes(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    good = tmp_path / "good.ftr"
    good.write_text(make())
    warned = tmp_path / "warned.ftr"
    warned.write_text(make(train=["freeze layer1", "at epoch 3 unfreeze layer4"]))
    bad = tmp_path / "bad.ftr"
    bad_text = make(train=["freeze all"])
    bad.write_text(bad_text)
    assert main(["check", "--no-data", str(good)]) == 0
    assert main(["check", "--no-data", str(warned)]) == 0
    assert "warning: 'layer4' already trains at epoch 3" in capsys.readouterr().err
    assert main(["check", "--no-data", str(good), str(bad)]) == 1
    line, column = where(bad_text, "all")
    assert f"bad.ftr:{line}:{column}: error: nothing trains in epochs 1 to 6" in capsys.readouterr().err
    assert main(["check", "--syntax", str(bad)]) == 0  # the model is not built
    assert main(["check", str(good)]) == 1  # data/train is not there
    assert "data folder 'data/train' does not exist" in capsys.readouterr().err


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["plan"])
    assert info.value.code == 2
