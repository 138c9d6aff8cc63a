"""Damaged run folders and full disks, in both back ends: a damaged, empty, foreign or
hostile checkpoint is a message (nothing in it runs); a damaged latest checkpoint
resumes from the one before it to the uninterrupted run's numbers; a write that
fails (no space left) says which file, leaves nothing half-written and resumes.

Every run is resnet18 at 32 px on tests/conftest.py's tiny folders, in this process."""

from __future__ import annotations

import errno
import json
import os
import pathlib
import runpy
import shutil
from pathlib import Path

import pytest
import torch
from test_compile import compile_to, script_ok
from test_run import assert_rows_close, ftr, metrics, recipe_text, run_ok, weights, write_recipe

import runtime.checkpoint
import runtime.trainer

pytestmark = pytest.mark.usefixtures("one_thread")

# best loss: in this run the best epoch is the first, so best.pt must come back from
# the checkpoint (a run again of epoch 3 would not rewrite it)
THREE = recipe_text(epochs=3, evaluate="metrics loss, accuracy\n  best loss")
TWO = recipe_text(epochs=2, evaluate="metrics loss, accuracy\n  best loss")


class Hostile:
    """A pickle that would create a file if it were ever unpickled with full power."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def damage(path: Path, kind: str, marker: Path) -> None:
    good = path.read_bytes()
    if kind == "cut short":
        path.write_bytes(good[: len(good) // 2])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("epoch 3\n")
    elif kind == "hostile":
        torch.save({"epoch": 3, "model": Hostile(marker)}, path)
    elif kind == "weights only":
        torch.save({"fc.weight": torch.zeros(2)}, path)
    elif kind == "missing":
        path.unlink()


def same_weights(a: Path, b: Path) -> bool:
    x, y = weights(a), weights(b)
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


class Backend:
    """`ftr run` or the compiled script of the same recipe, run in this process."""

    def __init__(self, kind: str, root: Path, capsys, text: str):
        self.kind, self.root, self.capsys = kind, root, capsys
        self.recipe = write_recipe(root, text)
        if kind == "script":
            self.script = root / "train.py"
            compile_to(capsys, self.recipe, self.script)

    def ok(self, out, *extra) -> dict:
        if self.kind == "runtime":
            return run_ok(self.capsys, self.recipe, out, *extra)
        return script_ok(self.capsys, self.script, out, *extra)

    def run(self, out, *extra, wrap=None) -> tuple[int, str]:
        """Exit code and stderr; `wrap(writer)` replaces the function every run file is
        written through (the runtime's atomic_write, the script's save_atomically)."""
        args = ("--out", out, "--device", "cpu", "--quiet", *extra)
        if self.kind == "runtime":
            with pytest.MonkeyPatch.context() as patch:
                if wrap:
                    patch.setattr(runtime.checkpoint, "atomic_write", wrap(runtime.checkpoint.atomic_write))
                code, _, err = ftr(self.capsys, "run", self.recipe, *args)
            return code, err
        namespace = runpy.run_path(str(self.script), run_name="compiled_script")
        names = namespace["main"].__globals__
        if wrap:
            names["save_atomically"] = wrap(names["save_atomically"])
        code = namespace["main"]([str(a) for a in args])
        return code, self.capsys.readouterr().err


BACKENDS = ("runtime", "script")


@pytest.fixture(params=BACKENDS)
def three_epochs(request, image_data, capsys, monkeypatch):
    """A backend, and the folder `full` of its uninterrupted three-epoch run."""
    monkeypatch.chdir(image_data)
    backend = Backend(request.param, image_data, capsys, THREE)
    backend.ok("full")
    return backend


def unfinished_copy(backend: Backend, name: str) -> Path:
    """The full run as it was before its model.pt and summary.json were written."""
    out = backend.root / name
    shutil.copytree(backend.root / "full", out)
    (out / "summary.json").unlink()
    (out / "model.pt").unlink()
    return out


# --- a damaged checkpoint --------------------------------------------------------


KINDS = ("cut short", "empty", "text", "hostile", "weights only")
PROBLEMS = {
    "cut short": "is damaged: cut short",
    "empty": "is empty",
    "text": "is not a file torch.save wrote, or is damaged",
    "hostile": "holds objects other than tensors",
    "weights only": "is not a checkpoint",
}


def test_the_only_checkpoint_damaged_is_a_message_and_runs_nothing(three_epochs):
    backend = three_epochs
    out = unfinished_copy(backend, "only")
    (out / "checkpoint.previous.pt").unlink()
    marker = backend.root / "pwned"
    for kind in KINDS:
        damage(out / "checkpoint.pt", kind, marker)
        code, err = backend.run(out, "--resume")
        assert code == 1, (kind, err)
        assert f"{out / 'checkpoint.pt'} {PROBLEMS[kind]}" in err, (kind, err)
        assert "start again with --overwrite" in err and "Traceback" not in err, kind
        assert not marker.exists(), "the hostile pickle ran"
        assert (out / "checkpoint.pt").exists(), "the damaged file is kept, not deleted"


@pytest.mark.parametrize("kind", ["cut short", "missing"])
def test_a_damaged_latest_checkpoint_resumes_from_the_one_before(three_epochs, kind):
    """checkpoint.pt of epoch 3 cut short (or missing: killed between the two renames);
    metrics.jsonl and best.pt already hold epoch 3's writes. The resume takes
    checkpoint.previous.pt (epoch 2), says so, and ends as the uninterrupted run."""
    backend = three_epochs
    out = unfinished_copy(backend, "damaged")
    assert len(metrics(out)) == 3
    torch.save({"fc.weight": torch.ones(4, 512)}, out / "best.pt")  # a best.pt the checkpoint does not know
    damage(out / "checkpoint.pt", kind, backend.root / "unused")

    code, err = backend.run(out, "--resume")
    assert code == 0, err
    assert f"{out / 'checkpoint.pt'} is {'damaged' if kind == 'cut short' else 'missing'}" in err
    assert f"resuming from {out / 'checkpoint.previous.pt'} (epoch 2)" in err
    assert (out / "checkpoint.damaged.pt").exists() == (kind == "cut short")
    assert_rows_close(metrics(out), metrics(backend.root / "full"))
    assert [row["epoch"] for row in metrics(out)] == [1, 2, 3]
    for name in ("model.pt", "best.pt", "checkpoint.pt"):
        expected = weights(backend.root / "full" / name)
        got = weights(out / name)
        if name == "checkpoint.pt":
            assert got["epoch"] == expected["epoch"] == 3
            got, expected = got["model"], expected["model"]
        assert got.keys() == expected.keys() and all(torch.equal(got[k], expected[k]) for k in got), name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["best"] == json.loads((backend.root / "full" / "summary.json").read_text())["best"]


def test_both_back_ends_resume_a_damaged_checkpoint_to_the_same_numbers(image_data, capsys, monkeypatch):
    monkeypatch.chdir(image_data)
    rows = {}
    for kind in BACKENDS:
        backend = Backend(kind, image_data, capsys, THREE)
        backend.ok(f"{kind}_full")
        out = image_data / kind
        shutil.copytree(image_data / f"{kind}_full", out)
        (out / "summary.json").unlink()
        damage(out / "checkpoint.pt", "cut short", image_data / "unused")
        assert backend.run(out, "--resume")[0] == 0
        rows[kind] = metrics(out)
        assert same_weights(out / "model.pt", image_data / f"{kind}_full" / "model.pt")
    assert_rows_close(rows["runtime"], rows["script"])


def test_a_killed_write_leaves_no_temporary_and_an_interrupted_run_says_its_epoch(three_epochs):
    backend = three_epochs
    out = unfinished_copy(backend, "temps")
    (out / ".checkpoint.pt.abc123.tmp").write_bytes(b"half a checkpoint")
    code, err = backend.run(out)
    assert code == 1 and "holds an unfinished run" in err and "--resume" in err
    assert backend.run(out, "--resume")[0] == 0
    assert not list(out.glob(".*.tmp"))


# --- a full disk -----------------------------------------------------------------


class FullDisk:
    """A file that takes `room` bytes, then fails as a full disk does."""

    def __init__(self, file, room: int = 64):
        self.file, self.room = file, room

    def write(self, data) -> int:
        if len(data) > self.room:
            self.file.write(bytes(data[: self.room]))
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.file.write(data)

    def __getattr__(self, name):
        return getattr(self.file, name)


def disk_full_at(name: str, nth: int):
    """A wrapper of the run's writer: the nth write of run file `name` finds the disk full."""

    def wrap(real):
        seen = {"count": 0}

        def writing(path, write, *args, **kwargs):
            if Path(path).name == name:
                seen["count"] += 1
                if seen["count"] == nth:
                    return real(path, lambda file: write(FullDisk(file)), *args, **kwargs)
            return real(path, write, *args, **kwargs)

        return writing

    return wrap


# (file, which of its writes fails, whether a checkpoint exists then)
WRITES = [
    ("recipe.ftr", 1, False),
    ("plan.txt", 1, False),
    ("classes.json", 1, False),
    ("best.pt", 1, False),
    ("metrics.jsonl", 2, True),
    ("checkpoint.pt", 2, True),
    ("model.pt", 1, True),
    ("summary.json", 1, True),
]


@pytest.mark.parametrize("backend_kind", BACKENDS)
def test_a_full_disk_at_any_write_is_a_message_and_the_run_goes_on(image_data, capsys, monkeypatch, backend_kind):
    monkeypatch.chdir(image_data)
    backend = Backend(backend_kind, image_data, capsys, TWO)
    backend.ok("full")
    for name, nth, resumable in WRITES:
        if backend_kind == "script" and name == "plan.txt":
            continue  # the script writes no plan.txt
        out = image_data / f"full_at_{name}"
        code, err = backend.run(out, wrap=disk_full_at(name, nth))
        assert code == 1, (name, err)
        assert f"no space left on device writing {out / name}; nothing is half-written: free space and" in err, err
        if resumable:
            assert "and resume with: " in err and err.rstrip().endswith("--resume"), err
        else:
            assert "and start again" in err and "--resume" not in err, err
        assert "Traceback" not in err
        assert not list(out.glob(".*.tmp")), name
        if name == "checkpoint.pt":
            assert weights(out / "checkpoint.pt")["epoch"] == 1, "the checkpoint before is intact"
        again = ("--resume",) if resumable else ()
        summary = backend.ok(out, *again)
        assert summary["status"] == "finished", name
        assert_rows_close(metrics(out), metrics(image_data / "full"))
        assert same_weights(out / "model.pt", image_data / "full" / "model.pt"), name
        assert same_weights(out / "best.pt", image_data / "full" / "best.pt"), name


# --- the data changes under a run ------------------------------------------------


@pytest.mark.parametrize("backend_kind", BACKENDS)
def test_a_class_folder_renamed_before_the_resume_is_refused(image_data, capsys, monkeypatch, backend_kind):
    monkeypatch.chdir(image_data)
    backend = Backend(backend_kind, image_data, capsys, TWO)
    backend.ok("full")
    out = image_data / "renamed"
    shutil.copytree(image_data / "full", out)
    (out / "summary.json").unlink()
    for split in ("train", "val"):
        (image_data / "data" / split / "class_3").rename(image_data / "data" / split / "class_9")
    code, err = backend.run(out, "--resume")
    assert code == 1, err
    assert "the data's classes are not those of the run" in err
    assert "added class_9; removed class_3" in err and "--overwrite" in err
    assert "Traceback" not in err


def remove_after_epoch_1(monkeypatch, image: Path, corrupt: bool) -> None:
    """The image deleted (or overwritten with junk) once epoch 1 is checkpointed."""
    real = runtime.trainer.Trainer.save_checkpoint

    def saving(self, epoch):
        real(self, epoch)
        if epoch == 1:
            image.write_bytes(b"not a png") if corrupt else image.unlink()

    monkeypatch.setattr(runtime.trainer.Trainer, "save_checkpoint", saving)


@pytest.mark.parametrize("corrupt", [False, True], ids=["deleted", "corrupted"])
def test_an_image_that_goes_bad_between_epochs_is_named_or_skipped(image_data, capsys, monkeypatch, corrupt):
    monkeypatch.chdir(image_data)
    image = image_data / "data" / "train" / "class_2" / "05.png"
    keep = image.read_bytes()
    remove_after_epoch_1(monkeypatch, image, corrupt)
    code, _, err = ftr(capsys, "run", write_recipe(image_data, TWO), "--out", "named", "--device", "cpu", "--quiet")
    assert code == 1, err
    assert "cannot read image 'data/train/class_2/05.png'" in err and "skip_bad_images" in err
    assert "the checkpoint of epoch 1 is kept" in err and "Traceback" not in err

    image.write_bytes(keep)
    skipping = recipe_text(epochs=2, data="skip_bad_images true", evaluate="metrics loss, accuracy\n  best loss")
    summary = run_ok(capsys, write_recipe(image_data, skipping), "skipped")
    assert summary["skipped_images"] == 1 and [row["epoch"] for row in metrics(image_data / "skipped")] == [1, 2]


@pytest.mark.parametrize("backend_kind", BACKENDS)
def test_a_symbolic_link_loop_in_an_image_folder_is_a_message(image_data, capsys, monkeypatch, backend_kind):
    monkeypatch.chdir(image_data)
    backend = Backend(backend_kind, image_data, capsys, TWO)
    (image_data / "data" / "train" / "class_0" / "loop").symlink_to("..")
    code, err = backend.run(image_data / "out")
    assert code == 1, err
    assert "'data/train/class_0/loop' leads back to" in err and "symbolic link loop" in err
    assert "Traceback" not in err


def test_file_names_that_are_not_utf8_train(image_data, capsys, monkeypatch):
    monkeypatch.chdir(image_data)
    folder = os.fsencode(image_data / "data" / "train" / "class_1")
    shutil.copy(os.path.join(folder, b"00.png"), os.path.join(folder, b"\xff\xfe-caf\xe9.png"))
    summary = run_ok(capsys, write_recipe(image_data, TWO), "out")
    assert summary["status"] == "finished"


def test_a_csv_with_a_bom_quoted_fields_and_a_missing_label(image_data, capsys, monkeypatch):
    monkeypatch.chdir(image_data)
    rows = [f'"data/train/class_{c}/{i:02d}.png","kind, {c}"' for c in range(4) for i in range(8)]
    table = image_data / "t.csv"
    table.write_bytes(("\ufeffimage,label\r\n" + "\r\n".join(rows) + "\r\n").encode("utf-8"))
    source = 'csv("t.csv", image="image", label="label")'
    text = recipe_text(epochs=1, val="split(0.25)").replace('imagefolder("data/train")', source)
    run_ok(capsys, write_recipe(image_data, text), "out")
    assert json.loads((image_data / "out" / "classes.json").read_text()) == {f"kind, {c}": c for c in range(4)}

    table.write_bytes(table.read_bytes() + b'"data/train/class_0/00.png",\r\n')
    code, _, err = ftr(capsys, "run", write_recipe(image_data, text), "--out", "missing", "--device", "cpu")
    assert code == 1 and "line 34 of 't.csv' has no label" in err and "Traceback" not in err


def test_an_interrupt_inside_a_write_of_the_script_is_an_interrupt(image_data, capsys):
    """Ctrl-C inside torch.save ends as a RuntimeError raised while handling it: the
    script's writer must raise the interrupt (which says how to resume), keep the old
    file whole and rotate nothing."""
    script = image_data / "train.py"
    compile_to(capsys, write_recipe(image_data, TWO), script)
    save = runpy.run_path(str(script), run_name="compiled_script")["save_atomically"]
    folder = image_data / "run"
    folder.mkdir()
    (folder / "checkpoint.pt").write_bytes(b"old")

    def write(out):
        try:
            out.write(b"half")
            raise KeyboardInterrupt
        finally:
            raise RuntimeError("unexpected pos 35341440 vs 35341336")  # noqa: B012

    with pytest.raises(KeyboardInterrupt):
        save(folder / "checkpoint.pt", write, folder / "checkpoint.previous.pt")
    assert [p.name for p in folder.iterdir()] == ["checkpoint.pt"]
    assert (folder / "checkpoint.pt").read_bytes() == b"old"
