import math

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models._api import WeightsEnum

from recipe_lang.resolve.architectures import (
    ClassifierSpot,
    backbone_names,
    build,
    builder_kwargs,
    drop_aux_heads,
    find_classifier,
    make_head,
    replace_module,
    spot_at,
)
from recipe_lang.resolve.problem import Problem

EXPECTED_PATH = {
    "resnet": "fc",
    "resnext": "fc",
    "wide_resnet": "fc",
    "regnet": "fc",
    "shufflenet": "fc",
    "googlenet": "fc",
    "inception": "fc",
    "vgg": "classifier.6",
    "alexnet": "classifier.6",
    "efficientnet": "classifier.1",
    "mnasnet": "classifier.1",
    "mobilenet_v2": "classifier.1",
    "mobilenet_v3": "classifier.3",
    "convnext": "classifier.2",
    "densenet": "classifier",
    "vit": "heads.head",
    "swin": "head",
    "maxvit": "classifier.5",
    # classifier.1 is its 1x1 conv, but the ReLU and AdaptiveAvgPool2d after
    # it in the block need 4-D class maps: the head replaces the whole block.
    "squeezenet": "classifier",
}

# The smallest square input each architecture accepts.
REAL_FORWARD_SIZE = {
    "resnet18": 16,
    "vgg11": 32,
    "mobilenet_v3_small": 16,
    "efficientnet_b0": 16,
    "convnext_tiny": 32,
    "densenet121": 32,
    "squeezenet1_0": 24,
    "shufflenet_v2_x0_5": 16,
    "mnasnet0_5": 16,
    "regnet_x_400mf": 16,
    "googlenet": 16,
    "inception_v3": 75,
    "vit_b_16": 224,  # its image_size
    "swin_t": 16,  # pads to its windows
    "maxvit_t": 224,  # every stage's grid must split into 7x7 partitions
}


def family(name):
    return max((prefix for prefix in EXPECTED_PATH if name.startswith(prefix)), key=len)


def with_new_head(model, classes=7):
    spot = find_classifier(model)
    with torch.device(next(model.parameters()).device):
        head = make_head("linear", classes, spot.in_features, adapter=spot.adapter)
    replace_module(model, spot.path, head)
    return model


def test_backbone_names_are_torchvision_classifiers():
    names = backbone_names()
    assert names == sorted(names)
    assert {"resnet50", "vit_b_16", "squeezenet1_1", "regnet_y_128gf"} <= set(names)
    assert not any(name.startswith(("fasterrcnn", "deeplab", "raft", "quantized")) for name in names)


@pytest.mark.parametrize("name", backbone_names())
def test_every_backbone_on_meta(name):
    model = build(name)
    assert {t.device.type for t in [*model.parameters(), *model.buffers()]} == {"meta"}

    spot = find_classifier(model)
    assert spot.path == EXPECTED_PATH[family(name)]
    assert spot.out_features == 1000
    old = model.get_submodule(spot.path)
    if family(name) == "squeezenet":
        assert spot.adapter == "pool_flatten"
        assert spot.in_features == old[1].in_channels
    else:
        assert spot.adapter == "none"
        assert spot.in_features == old.in_features
    assert spot_at(model, spot.path) == spot

    with_new_head(model).eval()
    with torch.no_grad():
        out = model(torch.empty(2, 3, 224, 224, device="meta"))
    assert out.shape == (2, 7)


@pytest.mark.parametrize("name", REAL_FORWARD_SIZE)
def test_real_forward(name):
    torch.manual_seed(0)
    model = with_new_head(build(name, device="cpu")).eval()
    size = REAL_FORWARD_SIZE[name]
    with torch.no_grad():
        out = model(torch.randn(2, 3, size, size))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", ["googlenet", "inception_v3"])
def test_aux_heads_are_gone_and_train_mode_returns_logits(name):
    model = with_new_head(build(name)).train()
    assert not any("aux" in path.lower() for path, _ in model.named_modules())
    out = model(torch.empty(2, 3, 299, 299, device="meta"))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 7)


@pytest.mark.parametrize("name", [n for n in backbone_names() if builder_kwargs(n)])
def test_builder_kwargs_accepted_with_weights(name, monkeypatch):
    builder = torchvision.models.get_model_builder(name)
    with torch.device("meta"):
        reference = builder(weights=None, aux_logits=True, init_weights=False)
    monkeypatch.setattr(WeightsEnum, "get_state_dict", lambda self, *a, **k: reference.state_dict())
    weights = torchvision.models.get_model_weights(name).DEFAULT
    with torch.device("meta"):
        model = builder(weights=weights, **builder_kwargs(name))
    drop_aux_heads(model)
    assert find_classifier(model).path == "fc"
    assert not model.aux_logits


def test_unknown_backbone_suggests_the_closest():
    with pytest.raises(Problem) as caught:
        build("resnet5")
    assert caught.value.message == "unknown backbone 'resnet5'"
    assert caught.value.hint == "did you mean 'resnet50'?"


def test_linear_head():
    head = make_head("linear", 4, 16)
    assert isinstance(head, nn.Linear) and (head.in_features, head.out_features) == (16, 4)
    assert [name for name, _ in head.named_parameters()] == ["weight", "bias"]
    dropped = make_head("linear", 4, 16, dropout=0.2)
    assert [type(m) for m in dropped] == [nn.Dropout, nn.Linear]
    assert dropped[0].p == 0.2


def test_mlp_head_widths_activation_dropout():
    head = make_head("mlp", 3, 32, hidden=[16, 8], activation="gelu", dropout=0.1)
    assert [type(m) for m in head] == [nn.Linear, nn.GELU, nn.Dropout, nn.Linear, nn.GELU, nn.Dropout, nn.Linear]
    linears = [m for m in head if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(32, 16), (16, 8), (8, 3)]

    plain = make_head("mlp", 3, 32, hidden=[16])
    assert [type(m) for m in plain] == [nn.Linear, nn.ReLU, nn.Linear]


def test_pool_flatten_adapter():
    head = make_head("mlp", 5, 512, hidden=[64], adapter="pool_flatten")
    assert [type(m) for m in head] == [nn.AdaptiveAvgPool2d, nn.Flatten, nn.Sequential]
    assert head(torch.randn(2, 512, 3, 3)).shape == (2, 5)


def test_head_mistakes():
    with pytest.raises(Problem, match="unknown head kind 'linaer'") as caught:
        make_head("linaer", 3, 8)
    assert caught.value.hint == "did you mean 'linear'?"
    with pytest.raises(Problem, match="unknown activation 'gelu2'"):
        make_head("mlp", 3, 8, hidden=[4], activation="gelu2")
    with pytest.raises(Problem, match="hidden width"):
        make_head("mlp", 3, 8)


def test_spot_at_missing_path_suggests_close_ones():
    with pytest.raises(Problem) as caught:
        spot_at(build("resnet18"), "fcc")
    assert caught.value.message == "this model has no module 'fcc'"
    assert "'fc'" in caught.value.hint


def test_spot_at_rejects_what_is_not_a_classifier():
    model = build("resnet18")
    with pytest.raises(Problem) as caught:
        spot_at(model, "layer4.1.relu")
    assert caught.value.message == "'layer4.1.relu' is a ReLU, which a head cannot replace"
    assert "nn.Linear" in caught.value.hint
    with pytest.raises(Problem, match="Conv2d with a 3x3 kernel"):
        spot_at(model, "layer4.1.conv1")


def test_spot_at_conv_followed_in_its_block():
    model = build("squeezenet1_0")
    with pytest.raises(Problem, match="followed in 'classifier' by ReLU, AdaptiveAvgPool2d") as caught:
        spot_at(model, "classifier.1")
    assert caught.value.hint == 'replace the whole block: write `head ... at "classifier"`'


def test_spot_at_accepts_linear_anywhere():
    model = build("vgg11")
    assert spot_at(model, "classifier.3") == ClassifierSpot("classifier.3", 4096, 4096, "none")


def test_find_classifier_without_one():
    with pytest.raises(Problem) as caught:
        find_classifier(nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU()))
    assert 'head ... at "module.path"' in caught.value.hint


def test_replace_module_in_sequential_and_attribute():
    model = build("vgg11")
    new = nn.Identity()
    replace_module(model, "classifier.6", new)
    assert model.classifier[6] is new
    replace_module(model, "avgpool", new)
    assert model.avgpool is new


def test_creation_order_matches_plain_pytorch():
    torch.manual_seed(0)
    build("resnet18", device="cpu")
    ours = make_head("linear", 4, 512)
    torch.manual_seed(0)
    torchvision.models.resnet18()
    theirs = nn.Linear(512, 4)
    assert torch.equal(ours.weight, theirs.weight) and torch.equal(ours.bias, theirs.bias)


def test_mlp_creation_order_matches_plain_pytorch():
    torch.manual_seed(1)
    ours = make_head("mlp", 3, 8, hidden=[6, 4], dropout=0.5, adapter="pool_flatten")
    torch.manual_seed(1)
    theirs = nn.Sequential(
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(1),
        nn.Sequential(
            nn.Linear(8, 6), nn.ReLU(), nn.Dropout(0.5), nn.Linear(6, 4), nn.ReLU(), nn.Dropout(0.5), nn.Linear(4, 3)
        ),
    )
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), theirs.state_dict().values(), strict=True))
    assert math.isclose(ours[2][2].p, 0.5)


@pytest.mark.parametrize(
    "name, enum",
    [
        ("inception_v3", "Inception_V3_Weights.IMAGENET1K_V1"),
        ("googlenet", "GoogLeNet_Weights.IMAGENET1K_V1"),
        ("vit_b_16", "ViT_B_16_Weights.IMAGENET1K_SWAG_E2E_V1"),
        ("maxvit_t", "MaxVit_T_Weights.IMAGENET1K_V1"),
        ("resnext50_32x4d", "ResNeXt50_32X4D_Weights.IMAGENET1K_V2"),
    ],
)
def test_a_trained_run_s_architecture_is_the_pretrained_one_without_its_weights(name, enum, monkeypatch):
    """ftr predict/evaluate/export build what the run trained with weights=None and
    pretrained_kwargs: the same modules and forward settings (transform_input, image size)
    as torchvision's builder given the weights (their loading stubbed here)."""
    from runtime.tasks.classification import torchvision_backbone

    plan = type("Plan", (), {"backbone": name, "builder_kwargs": builder_kwargs(name)})()
    plan.weights = type("Weights", (), {"enum": enum})()
    monkeypatch.setattr(nn.Module, "load_state_dict", lambda self, *a, **k: None)
    monkeypatch.setattr(WeightsEnum, "get_state_dict", lambda self, *a, **k: {})
    with torch.device("meta"):
        pretrained = torchvision_backbone(plan)
        unread = torchvision_backbone(plan, load=False)
    assert str(unread) == str(pretrained)
    for attribute in ("transform_input", "image_size"):
        assert getattr(unread, attribute, None) == getattr(pretrained, attribute, None)
