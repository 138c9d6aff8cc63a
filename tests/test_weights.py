import pytest
import torch
import torchvision

from recipe_lang.resolve.problem import Problem
from recipe_lang.resolve.weights import (
    KeyDiff,
    compare_keys,
    enum_member,
    load_state_file,
    preset,
)


def _touch(path):
    open(path, "w").close()


class Payload:
    """Unpickling this creates a file: proof that code ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (_touch, (self.marker,))


@pytest.fixture(scope="module")
def resnet18_state():
    return torchvision.models.resnet18().state_dict()


@pytest.fixture(scope="module")
def resnet18_file(resnet18_state, tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "resnet18.pt"
    torch.save(resnet18_state, path)
    return str(path)


def problem(fn, *args, **kwargs) -> Problem:
    with pytest.raises(Problem) as info:
        fn(*args, **kwargs)
    return info.value


# --- enums -------------------------------------------------------------------


def test_enum_default_is_resolved_to_its_real_member():
    assert enum_member("resnet50", "default") == "ResNet50_Weights.IMAGENET1K_V2"
    assert enum_member("resnet50", "IMAGENET1K_V1") == "ResNet50_Weights.IMAGENET1K_V1"


def test_enum_unknown_member_lists_valid_ones():
    p = problem(enum_member, "resnet50", "IMAGENET1K_V3")
    assert p.message == "unknown weights 'IMAGENET1K_V3' for resnet50"
    assert p.hint == "did you mean 'IMAGENET1K_V2'?"
    assert p.notes == ("valid: IMAGENET1K_V1, IMAGENET1K_V2, DEFAULT",)


def test_enum_wrong_case_is_suggested():
    assert problem(enum_member, "resnet50", "imagenet1k_v1").hint == "did you mean 'IMAGENET1K_V1'?"


def test_enum_unknown_backbone():
    p = problem(enum_member, "resnet51", "default")
    assert p.message == "unknown backbone 'resnet51'"
    assert p.hint is not None and p.hint.startswith("did you mean 'resnet")


def test_preset_resnet50_default():
    imagenet = torchvision.models.ResNet50_Weights.IMAGENET1K_V2.transforms()
    assert preset("resnet50", "default") == {
        "resize": 232,
        "crop": 224,
        "interpolation": "bilinear",
        "mean": list(imagenet.mean),
        "std": list(imagenet.std),
    }
    assert imagenet.mean == [0.485, 0.456, 0.406]
    assert imagenet.std == [0.229, 0.224, 0.225]


def test_preset_vit():
    assert preset("vit_b_16", "default") == {
        "resize": 256,
        "crop": 224,
        "interpolation": "bilinear",
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
    }
    swag = preset("vit_b_16", "IMAGENET1K_SWAG_E2E_V1")
    assert (swag["resize"], swag["crop"], swag["interpolation"]) == (384, 384, "bicubic")


def test_preset_is_plain_json():
    import json

    assert json.loads(json.dumps(preset("efficientnet_b0", "default")))["interpolation"] == "bicubic"


# --- loading files -----------------------------------------------------------


def test_load_plain_state_dict(resnet18_file, resnet18_state):
    state = load_state_file(resnet18_file)
    assert list(state) == list(resnet18_state)
    assert torch.equal(state["conv1.weight"], resnet18_state["conv1.weight"])


def test_load_legacy_format(tmp_path):
    path = tmp_path / "old.pt"
    torch.save({"w": torch.ones(2)}, path, _use_new_zipfile_serialization=False)
    assert torch.equal(load_state_file(str(path))["w"], torch.ones(2))


def test_load_with_key_and_strip(tmp_path, resnet18_state):
    path = tmp_path / "wrapped.pt"
    torch.save({"epoch": 3, "state_dict": {"module." + k: v for k, v in resnet18_state.items()}}, path)
    state = load_state_file(str(path), key="state_dict", strip="module.")
    assert list(state) == list(resnet18_state)


def test_strip_leaves_keys_without_the_prefix(tmp_path):
    path = tmp_path / "mixed.pt"
    torch.save({"module.a": torch.zeros(1), "b": torch.zeros(1)}, path)
    assert list(load_state_file(str(path), strip="module.")) == ["a", "b"]


def test_missing_key_lists_top_level_keys(tmp_path):
    path = tmp_path / "wrapped.pt"
    torch.save({"epoch": 3, "model": {"w": torch.zeros(1)}}, path)
    p = problem(load_state_file, str(path), key="state_dict")
    assert p.message == f"'{path}' has no key 'state_dict'"
    assert p.notes == ("keys: epoch, model",)


def test_non_tensor_value_is_named_and_key_suggested(tmp_path):
    path = tmp_path / "wrapped.pt"
    torch.save({"epoch": 3, "model": {"w": torch.zeros(1)}}, path)
    p = problem(load_state_file, str(path))
    assert p.message == f"'epoch' in '{path}' is not a tensor"
    assert p.notes == ("found: int",)
    assert p.hint == "pick the tensors with key='model'"


def test_missing_file(tmp_path):
    path = tmp_path / "nope.pt"
    assert problem(load_state_file, str(path)).message == f"weights file '{path}' does not exist"


def test_folder_is_not_a_file(tmp_path):
    assert problem(load_state_file, str(tmp_path)).message == f"weights file '{tmp_path}' is not a file"


def test_not_a_dict(tmp_path):
    path = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], path)
    p = problem(load_state_file, str(path))
    assert p.message == f"'{path}' is not a dict of tensors"
    assert p.notes == ("found: list",)


def test_garbage_file(tmp_path):
    path = tmp_path / "notes.pt"
    path.write_text("hello world")
    assert problem(load_state_file, str(path)).message == f"'{path}' is not a torch checkpoint"


@pytest.mark.parametrize("zipped", [True, False])
def test_pickled_object_is_refused_without_running_it(tmp_path, zipped):
    marker = tmp_path / "code-ran"
    path = tmp_path / "evil.pt"
    torch.save(
        {"w": torch.zeros(1), "x": Payload(str(marker))},
        path,
        _use_new_zipfile_serialization=zipped,
    )

    p = problem(load_state_file, str(path))
    assert p.message == f"'{path}' is not a plain tensor checkpoint"
    assert "model.state_dict()" in p.hint and "never unpickles arbitrary objects" in p.hint
    assert p.notes == (f"it refers to '{__name__}._touch'",)
    assert not marker.exists()

    # the payload is real: a plain unpickle would have run it
    torch.load(path, weights_only=False)
    assert marker.exists()


# --- comparing keys ----------------------------------------------------------


def shapes(state):
    return {k: tuple(v.shape) for k, v in state.items()}


def test_compare_identical_is_clean(resnet18_state):
    diff = compare_keys(shapes(resnet18_state), resnet18_state, "fc.")
    assert diff.is_clean()
    assert diff.dropped_classifier == ["fc.weight", "fc.bias"]
    assert diff.render() == []


def test_compare_finds_missing_unexpected_misshapen(resnet18_state):
    state = dict(resnet18_state)
    del state["layer4.1.bn2.weight"]
    del state["bn1.num_batches_tracked"]
    state["foo"] = torch.zeros(1)
    state["layer1.0.conv1.weight"] = torch.zeros(64, 64, 1, 1)
    state["fc.weight"] = torch.zeros(10, 512)  # another classifier: set aside, not misshapen
    state["fc.extra"] = torch.zeros(1)

    diff = compare_keys(shapes(resnet18_state), state, "fc.")
    assert not diff.is_clean()
    assert diff.missing == ["bn1.num_batches_tracked", "layer4.1.bn2.weight"]
    assert diff.unexpected == ["foo"]
    assert diff.misshapen == [("layer1.0.conv1.weight", (64, 64, 1, 1), (64, 64, 3, 3))]
    assert diff.dropped_classifier == ["fc.weight", "fc.bias", "fc.extra"]
    assert diff.render() == [
        "missing: bn1.num_batches_tracked",
        "missing: layer4.1.bn2.weight",
        "unexpected: foo",
        "misshapen: layer1.0.conv1.weight: file [64, 64, 1, 1], model [64, 64, 3, 3]",
    ]


def test_compare_sets_aside_counters_a_frozen_batchnorm_keeps_none(resnet18_state):
    """A model trained with BatchNorm2d, loaded where FrozenBatchNorm2d stands (a detector
    starting from weights): the step counters are not unexpected; any other extra key is."""
    model = {k: tuple(v.shape) for k, v in resnet18_state.items() if not k.endswith("num_batches_tracked")}
    state = dict(resnet18_state, **{"layer9.num_batches_tracked": torch.tensor(3)})
    diff = compare_keys(model, state, "fc.")
    assert diff.is_clean() is False and diff.unexpected == ["layer9.num_batches_tracked"]
    assert "bn1.num_batches_tracked" in diff.counters and len(diff.counters) == 20
    del state["layer9.num_batches_tracked"]
    assert compare_keys(model, state, "fc.").is_clean()


def test_compare_without_classifier_prefix(resnet18_state):
    state = dict(resnet18_state, **{"fc.weight": torch.zeros(10, 512)})
    diff = compare_keys(shapes(resnet18_state), state, None)
    assert diff.misshapen == [("fc.weight", (10, 512), (1000, 512))]
    assert diff.render() == ["misshapen: fc.weight: file [10, 512], model [1000, 512]"]


def test_render_cuts_long_lists():
    diff = KeyDiff(missing=[f"k{i}" for i in range(13)], unexpected=[], misshapen=[], dropped_classifier=[])
    lines = diff.render(limit=10)
    assert lines[:2] == ["missing: k0", "missing: k1"]
    assert lines[-1] == "... and 3 more missing"
    assert len(lines) == 11
