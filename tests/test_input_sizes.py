"""ftr check runs the model at the image sizes the recipe feeds it: a size the
architecture cannot take is an error at the transform or source that sets it."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

import recipe_lang
from recipe_lang import RecipeError
from recipe_lang.cli import main
from recipe_lang.resolve import resolve
from recipe_lang.resolve.input_sizes import after, fed


def recipe_text(
    backbone: str,
    train_transforms: str | None = None,
    eval_transforms: str | None = None,
    source: str = "synthetic(classes=10, count=8, size=64)",
    weights: str = "default",
) -> str:
    data = [f"  train {source}", "  val split(0.25)"]
    data += [f"  train_transforms {train_transforms}"] if train_transforms else []
    data += [f"  eval_transforms {eval_transforms}"] if eval_transforms else []
    return "\n".join(
        [
            'recipe "sizes"',
            "",
            "model {",
            f"  backbone {backbone}",
            f"  weights {weights}",
            "  head linear(classes=10)",
            "}",
            "",
            "data {",
            *data,
            "}",
            "",
            "train {",
            "  epochs 1",
            "  lr 1e-3",
            "  label_smoothing 0.1",
            "}",
            "",
        ]
    )


def errors(text: str, data: bool = False) -> list:
    with pytest.raises(RecipeError) as info:
        resolve(recipe_lang.parse(text, "sizes.ftr"), data=data)
    return [d for d in info.value.diagnostics if d.is_error]


def one_error(text: str, data: bool = False):
    (error,) = errors(text, data)
    return error


def where(text: str, needle: str) -> tuple[int, int]:
    index = text.index(needle)
    return text.count("\n", 0, index) + 1, index - (text.rfind("\n", 0, index) + 1) + 1


def at(diagnostic) -> tuple[int, int]:
    return diagnostic.span.line, diagnostic.span.column


def test_maxvit_at_32_pixels_is_an_error_at_the_crop_with_the_smallest_size():
    text = recipe_text("maxvit_t", "random_resized_crop(32), hflip()", "weights")
    d = one_error(text)
    assert d.message == "maxvit_t cannot take 32x32 images"
    assert at(d) == where(text, "random_resized_crop(32)")
    assert d.hint == "the smallest size maxvit_t takes is 224x224: resize or crop to at least that"
    assert d.notes == ("shape '[2, 64, 1, 7, 1, 7]' is invalid for input of size 8192",)


def test_vit_takes_only_its_own_size():
    text = recipe_text("vit_b_16", "random_resized_crop(32)", "resize(256), center_crop(224)")
    d = one_error(text)
    assert d.message == "vit_b_16 cannot take 32x32 images"
    assert at(d) == where(text, "random_resized_crop(32)")
    assert d.hint == "vit_b_16 takes only 224x224 images: resize or crop to that size"
    assert d.notes == ("Wrong image height! Expected 224 but got 32!",)


def test_an_eval_size_that_fails_points_at_the_eval_transform():
    text = recipe_text("maxvit_t", "random_resized_crop(224)", "resize(80), center_crop(64)")
    d = one_error(text)
    assert d.message == "maxvit_t cannot take 64x64 images"
    assert at(d) == where(text, "center_crop(64)")


def test_a_size_above_the_smallest_that_fails_names_the_size_that_works():
    text = recipe_text("maxvit_t", "random_resized_crop(256)", "weights")
    d = one_error(text)
    assert d.message == "maxvit_t cannot take 256x256 images"
    assert d.hint == "maxvit_t takes 224x224 images, not every larger size: resize or crop to 224x224"


@pytest.mark.parametrize(
    ("backbone", "train", "eval"),
    [
        ("resnet18", "random_resized_crop(32), hflip()", "resize(36), center_crop(32)"),
        ("inception_v3", "random_resized_crop(299)", "weights"),  # train mode without its aux heads
        ("googlenet", "random_resized_crop(224)", "weights"),
        ("swin_t", "random_resized_crop(64)", "center_crop(64)"),  # swin pads small images
        ("regnet_y_400mf", "random_resized_crop(32)", "weights"),
    ],
)
def test_sizes_the_architecture_takes_resolve(backbone, train, eval):
    resolve(recipe_lang.parse(recipe_text(backbone, train, eval), "sizes.ftr"), data=False)


def test_a_synthetic_size_without_transforms_points_at_the_source():
    text = recipe_text("squeezenet1_0", source="synthetic(classes=10, count=8, size=16)")
    d = one_error(text)  # train and val (a split of it) have one size: one error
    assert d.message == "squeezenet1_0 cannot take 16x16 images"
    assert at(d) == where(text, "synthetic(")
    assert d.hint == "the smallest size squeezenet1_0 takes is 21x21: resize or crop to at least that"


def test_a_head_at_a_module_that_breaks_the_model_is_still_the_heads_error():
    text = recipe_text("resnet50", "random_resized_crop(32)").replace(
        "linear(classes=10)", 'linear(classes=10) at "layer4.2.conv3"'
    )
    d = one_error(text)
    assert d.message == "the model does not run with a head at 'layer4.2.conv3'"
    assert d.span.line == where(text, "head linear")[0]
    assert "leave out `at`" in d.hint


def test_vit_with_weights_for_another_size_is_built_for_them():
    text = recipe_text("vit_b_16", "random_resized_crop(384)", "weights", weights='"IMAGENET1K_SWAG_E2E_V1"')
    plan = resolve(recipe_lang.parse(text, "sizes.ftr"), data=False)
    assert plan.preprocess.eval[-1].size == 384
    d = one_error(text.replace("random_resized_crop(384)", "random_resized_crop(224)"))
    assert d.hint == "vit_b_16 takes only 384x384 images: resize or crop to that size"


def test_a_size_a_vit_built_for_its_weights_cannot_take_is_not_blamed_on_a_placed_head():
    text = recipe_text("vit_b_16", "random_resized_crop(224)", "weights", weights='"IMAGENET1K_SWAG_E2E_V1"')
    d = one_error(text.replace("linear(classes=10)", 'linear(classes=10) at "heads.head"'))
    assert d.message == "vit_b_16 cannot take 224x224 images"
    assert at(d) == where(text, "random_resized_crop(224)")


# --- sizes from data on disk ---------------------------------------------------------


@pytest.fixture
def small_images(tmp_path) -> Path:
    """An image folder of 16x24 (height x width) images, two classes."""
    for name in ("cat", "dog"):
        (tmp_path / "train" / name).mkdir(parents=True)
        Image.new("RGB", (24, 16)).save(tmp_path / "train" / name / "a.png")
    return tmp_path / "train"


def test_an_imagefolders_size_is_checked_when_data_is(small_images):
    text = recipe_text("alexnet", source=f'imagefolder("{small_images}")').replace("classes=10", "classes=2")
    d = one_error(text, data=True)
    assert d.message == "alexnet cannot take 16x24 images"
    assert at(d) == where(text, "imagefolder(")
    assert d.hint == "the smallest size alexnet takes is 63x63: resize or crop to at least that"


def test_resize_keeps_the_aspect_ratio_of_the_images(small_images):
    text = recipe_text("resnet18", "resize(32)", source=f'imagefolder("{small_images}")').replace("=10", "=2")
    recipe = recipe_lang.parse(text, "sizes.ftr")
    sizes = fed(recipe, recipe.data.train_transforms, [], open_data=True)
    assert [(s.height, s.width, s.train) for s in sizes] == [(32, 48, True), (16, 24, False)]
    assert sizes[0].loc == ("data", "train_transforms", 0) and sizes[1].loc == ("data", "train")


def test_without_data_an_unknown_size_is_skipped():
    text = recipe_text("maxvit_t", source='imagefolder("no/such/folder")')
    recipe = recipe_lang.parse(text, "sizes.ftr")
    assert fed(recipe, [], [], open_data=False) == []
    resolve(recipe, data=False)


def test_check_no_data_with_an_imagefolder_and_no_size_passes(capsys, tmp_path):
    path = tmp_path / "r.ftr"
    path.write_text(recipe_text("maxvit_t", source='imagefolder("no/such/folder")'))
    assert main(["check", "--no-data", str(path)]) == 0


def test_compile_refuses_a_size_the_model_cannot_take(capsys, tmp_path):
    text = recipe_text("maxvit_t", "random_resized_crop(32), hflip()", "weights")
    path = tmp_path / "r.ftr"
    path.write_text(text)
    script = tmp_path / "train.py"
    assert main(["compile", str(path), "-o", str(script)]) == 1
    line, column = where(text, "random_resized_crop(32)")
    err = capsys.readouterr().err
    assert f"{path}:{line}:{column}: error: maxvit_t cannot take 32x32 images" in err
    assert "Traceback" not in err
    assert not script.exists()
    assert main(["check", str(path)]) == 1
    assert f"{path}:{line}:{column}: error: maxvit_t cannot take 32x32 images" in capsys.readouterr().err


def test_resize_of_an_unknown_image_is_taken_as_square():
    recipe = recipe_lang.parse(recipe_text("resnet18", "resize(40)"), "sizes.ftr")
    size = after(recipe.data.train_transforms, [("t", 0)], True, lambda: None)
    assert (size.height, size.width, size.loc) == (40, 40, ("t", 0))
