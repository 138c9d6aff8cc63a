import os

import pytest
import torchvision
from PIL import Image

from recipe_lang.resolve.data_check import (
    IMAGE_EXTENSIONS,
    count_mismatch,
    csv_classes,
    imagefolder_classes,
    torchvision_classes,
)
from recipe_lang.resolve.problem import Problem


def write_image(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (200, 30, 30)).save(path)


def problem(fn, *args, **kwargs) -> Problem:
    with pytest.raises(Problem) as info:
        fn(*args, **kwargs)
    return info.value


@pytest.fixture
def image_folder(tmp_path):
    root = tmp_path / "train"
    for cls in ("zebra", "cat", "Dog"):
        write_image(root / cls / "0.png")
    write_image(root / "cat" / "nested" / "1.PNG")
    return root


# --- image folders -----------------------------------------------------------


def test_imagefolder_classes_match_torchvision(image_folder):
    assert imagefolder_classes(str(image_folder)) == ["Dog", "cat", "zebra"]
    assert imagefolder_classes(str(image_folder)) == torchvision.datasets.ImageFolder(image_folder).classes


def test_imagefolder_missing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    p = problem(imagefolder_classes, "data/train")
    assert p.message == "data folder 'data/train' does not exist"
    assert p.hint == f"paths in a recipe are relative to the working directory (now '{tmp_path}')"


def test_imagefolder_absolute_path_needs_no_cwd_hint(tmp_path):
    assert problem(imagefolder_classes, str(tmp_path / "nope")).hint is None


def test_imagefolder_is_a_file(tmp_path):
    path = tmp_path / "train.zip"
    path.write_bytes(b"PK")
    assert problem(imagefolder_classes, str(path)).message == f"data folder '{path}' is a file"


def test_imagefolder_empty(tmp_path):
    write_image(tmp_path / "loose.png")  # an image, but not in a class folder
    p = problem(imagefolder_classes, str(tmp_path))
    assert p.message == f"data folder '{tmp_path}' is empty"
    assert p.hint == f"expected one folder per class: {tmp_path}/<class>/<image>"


def test_class_folder_without_images(image_folder):
    (image_folder / "bird").mkdir()
    (image_folder / "bird" / "readme.txt").write_text("no images here")
    p = problem(imagefolder_classes, str(image_folder))
    assert p.message == f"class folder '{image_folder / 'bird'}' has no images"
    assert p.hint.startswith("images end in .jpg, .jpeg, .png")
    assert p.notes == ()
    with pytest.raises(FileNotFoundError):  # torchvision agrees it is unusable
        torchvision.datasets.ImageFolder(image_folder)


def test_many_class_folders_without_images(image_folder):
    for i in range(7):
        (image_folder / f"empty{i}").mkdir()
    p = problem(imagefolder_classes, str(image_folder))
    assert p.message == f"class folder '{image_folder / 'empty0'}' has no images"
    assert p.notes == (
        f"no images in '{image_folder / 'empty1'}'",
        f"no images in '{image_folder / 'empty2'}'",
        f"no images in '{image_folder / 'empty3'}'",
        f"no images in '{image_folder / 'empty4'}'",
        "... and 2 more",
    )


def test_image_extensions_are_torchvisions():
    assert IMAGE_EXTENSIONS is torchvision.datasets.folder.IMG_EXTENSIONS


# --- csv ---------------------------------------------------------------------


@pytest.fixture
def csv_data(tmp_path):
    images = tmp_path / "images"
    rows = [("a.png", "cat"), ("b.png", "dog"), ("sub/c.png", "cat")]
    for file, _ in rows:
        write_image(images / file)
    path = tmp_path / "labels.csv"
    path.write_text("file,label\n" + "".join(f"{f},{lab}\n" for f, lab in rows))
    return path, images


def test_csv_good(csv_data):
    path, images = csv_data
    assert csv_classes(str(path), str(images)) == ["cat", "dog"]


def test_csv_other_column_names_and_byte_order_mark(tmp_path, csv_data):
    _, images = csv_data
    path = tmp_path / "excel.csv"
    path.write_text("\ufeffpath,species\na.png,cat\n", encoding="utf-8")
    assert csv_classes(str(path), str(images), image="path", label="species") == ["cat"]


def test_csv_wrong_column(csv_data):
    path, images = csv_data
    p = problem(csv_classes, str(path), str(images), label="labels")
    assert p.message == f"csv file '{path}' has no column 'labels'"
    assert p.hint == "did you mean 'label'?"
    assert p.notes == ("columns: file, label",)


def test_csv_missing_file(tmp_path):
    path = tmp_path / "nope.csv"
    assert problem(csv_classes, str(path), None).message == f"csv file '{path}' does not exist"


def test_csv_root_missing(csv_data):
    path, images = csv_data
    p = problem(csv_classes, str(path), str(images / "nope"))
    assert p.message == f"image root '{images / 'nope'}' does not exist"


def test_csv_no_rows(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("file,label\n")
    assert problem(csv_classes, str(path), None).message == f"csv file '{path}' has no rows"


def test_csv_missing_image_names_the_line(csv_data):
    path, images = csv_data
    (images / "b.png").unlink()
    p = problem(csv_classes, str(path), str(images))
    assert p.message == f"image '{images / 'b.png'}' on line 3 of '{path}' does not exist"


def test_csv_without_root_is_relative_to_cwd(csv_data, monkeypatch):
    path, images = csv_data
    monkeypatch.chdir(images)
    assert csv_classes(str(path), None) == ["cat", "dog"]
    monkeypatch.chdir(images.parent)
    p = problem(csv_classes, str(path), None)
    assert p.message == f"image 'a.png' on line 2 of '{path}' does not exist"
    assert p.hint == "set root to the folder the image paths are relative to"


def test_csv_only_first_rows_are_looked_for(tmp_path, csv_data):
    _, images = csv_data
    path = tmp_path / "long.csv"
    path.write_text("file,label\n" + "a.png,cat\n" * 20 + "gone.png,bird\n")
    assert csv_classes(str(path), str(images)) == ["bird", "cat"]


def test_csv_empty_label(csv_data):
    path, images = csv_data
    path.write_text("file,label\na.png,cat\nb.png\n")
    assert problem(csv_classes, str(path), str(images)).message == f"line 3 of '{path}' has no label"


# --- torchvision datasets ----------------------------------------------------


def test_torchvision_unknown_dataset(tmp_path):
    p = problem(torchvision_classes, "CIFAR1O", str(tmp_path))
    assert p.message == "unknown torchvision dataset 'CIFAR1O'"
    assert p.hint == "did you mean 'CIFAR10'?"


def test_torchvision_helpers_are_not_datasets(tmp_path):
    p = problem(torchvision_classes, "wrap_dataset_for_transforms_v2", str(tmp_path))
    assert p.message == "unknown torchvision dataset 'wrap_dataset_for_transforms_v2'"


def test_torchvision_root_missing(tmp_path):
    p = problem(torchvision_classes, "CIFAR10", str(tmp_path / "cifar"))
    assert p.message == f"dataset root '{tmp_path / 'cifar'}' does not exist"
    assert p.hint == "nothing is downloaded unless download=true"


def test_torchvision_root_missing_with_download_cannot_say(tmp_path):
    assert torchvision_classes("CIFAR10", str(tmp_path / "cifar"), download=True) is None


def test_torchvision_not_downloaded(tmp_path):
    p = problem(torchvision_classes, "CIFAR10", str(tmp_path))
    assert p.message == f"torchvision dataset CIFAR10 is not in '{tmp_path}'"
    assert p.notes == ("Dataset not found or corrupted. You can use download=True to download it",)
    assert os.listdir(tmp_path) == []  # nothing was fetched
    assert torchvision_classes("CIFAR10", str(tmp_path), download=True) is None


def test_torchvision_imagefolder(image_folder):
    assert torchvision_classes("ImageFolder", str(image_folder)) == ["Dog", "cat", "zebra"]


def test_torchvision_needing_more_arguments_cannot_say(tmp_path):
    assert torchvision_classes("CocoDetection", str(tmp_path)) is None


# --- counts ------------------------------------------------------------------


def test_count_mismatch():
    assert count_mismatch(["a", "b", "c"], 3) is None
    p = count_mismatch(["cat", "dog", "bird"], 10)
    assert p.message == "the data has 3 classes but the head has 10"
    assert p.hint == "set classes=3"
    assert p.notes == ("classes: cat, dog, bird",)


def test_count_mismatch_shows_a_few_names():
    p = count_mismatch([f"c{i}" for i in range(100)], 10)
    assert p.notes == ("classes: c0, c1, c2, c3, c4, ... (100 in all)",)
