"""Knowledge distillation: `teacher { run "folder" }` and `distill temperature=T, alpha=A`.

A teacher is a one-epoch resnet18 run on the 4-class fixture images (a module-scoped
fixture, a few seconds); the students are resnet18 heads on the same images at 32 px.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import pytest
import torch
from conftest import demo_calls, make_image_folder
from test_compile import compile_to, script_ok
from test_run import (
    ROOT,
    assert_rows_close,
    ftr,
    interrupted_run,
    metrics,
    plan_of,
    recipe_text,
    run_ok,
    weights,
    without_seconds,
    write_recipe,
)

from recipe_lang.cli import main
from runtime.distillation import distillation_loss
from runtime.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")

TEACHER_BLOCK = 'teacher {\n  run "runs/teacher"\n}\n\n'


def student(distill: str | None = "distill temperature=2, alpha=0.5", teacher: str | None = TEACHER_BLOCK, **changes):
    """recipe_text's resnet18 head (2 epochs), with a teacher block before data and `distill` in train."""
    text = recipe_text(name="student", train=distill or "", **changes)
    return text.replace("data {", (teacher or "") + "data {", 1)


@pytest.fixture(scope="module")
def taught(tmp_path_factory):
    """A folder with data/ (4 classes) and runs/teacher, a finished one-epoch resnet18 run."""
    root = tmp_path_factory.mktemp("distill")
    make_image_folder(root / "data" / "train", per_class=4, size=32, seed=1)
    make_image_folder(root / "data" / "val", per_class=2, size=32, seed=2)
    make_image_folder(root / "three" / "train", classes=3, per_class=2, size=32, seed=3)
    recipe = write_recipe(root, recipe_text(name="teacher", epochs=1, freeze=""), "teacher.ftr")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        code = main(["run", str(recipe), "--out", "runs/teacher", "--device", "cpu", "--quiet"])
    torch.set_num_threads(threads)
    assert code == 0
    return root


@pytest.fixture
def root(taught, monkeypatch):
    monkeypatch.chdir(taught)
    return taught


def check_error(capsys, text: str, *extra) -> str:
    write_recipe(Path.cwd(), text, "s.ftr")
    code, _, err = ftr(capsys, "check", "s.ftr", *extra)
    assert code == 1, err
    return err


def line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


# --- the loss ------------------------------------------------------------------------


def test_the_loss_is_hintons_computed_by_hand():
    student_logits = [[2.0, -1.0, 0.5], [0.1, 0.2, -0.3]]
    teacher_logits = [[3.0, 0.0, -1.0], [-0.5, 1.5, 0.0]]
    labels = [0, 2]
    temperature, alpha = 2.0, 0.3

    def softmax(row, t):
        exps = [math.exp(x / t) for x in row]
        return [e / sum(exps) for e in exps]

    kl = 0.0
    for s, t in zip(student_logits, teacher_logits, strict=True):
        p, q = softmax(t, temperature), softmax(s, temperature)
        kl += sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))
    kl /= len(labels)
    ce = -sum(math.log(softmax(s, 1.0)[y]) for s, y in zip(student_logits, labels, strict=True)) / len(labels)
    expected = alpha * temperature**2 * kl + (1 - alpha) * ce

    got = distillation_loss(
        torch.tensor(student_logits),
        torch.tensor(teacher_logits),
        torch.tensor(labels),
        torch.nn.CrossEntropyLoss(),
        temperature,
        alpha,
    )
    assert got.item() == pytest.approx(expected, rel=1e-6)
    assert kl > 0.05 and ce > 0.5  # both terms count: a formula that dropped one would differ
    same = torch.tensor(student_logits)
    only_kl = distillation_loss(same, same, torch.tensor(labels), torch.nn.CrossEntropyLoss(), temperature, 1.0)
    assert only_kl.item() == pytest.approx(0.0, abs=1e-7)  # the teacher's own logits cost nothing


# --- runs ----------------------------------------------------------------------------


def test_alpha_zero_is_the_plain_run_number_for_number(root, capsys):
    plain = write_recipe(root, student(distill=None, teacher=None), "plain.ftr")
    zero = write_recipe(root, student("distill temperature=2, alpha=0"), "zero.ftr")
    run_ok(capsys, plain, "runs/plain")
    run_ok(capsys, zero, "runs/zero")
    assert without_seconds(metrics("runs/zero")) == without_seconds(metrics("runs/plain"))
    a, b = weights("runs/zero/model.pt"), weights("runs/plain/model.pt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_alpha_above_zero_changes_the_numbers_and_the_teacher_stays_as_it_was(root, capsys):
    run_ok(capsys, write_recipe(root, student(distill=None, teacher=None), "plain.ftr"), "runs/plain2")
    recipe = write_recipe(root, student(), "half.ftr")
    before = (root / "runs" / "teacher" / "model.pt").read_bytes()
    (root / "runs" / "half").mkdir()
    trainer = Trainer(plan_of(recipe), root / "runs" / "half", "cpu")
    trainer.setup()
    trainer.train()
    teacher = trainer.loss.teacher
    assert not teacher.training and not any(m.training for m in teacher.modules())
    assert not any(p.requires_grad for p in teacher.parameters())
    saved = weights(root / "runs" / "teacher" / "model.pt")
    state = teacher.state_dict()
    assert state.keys() == saved.keys()
    assert all(torch.equal(state[k], saved[k]) for k in saved)  # running statistics included
    assert (root / "runs" / "teacher" / "model.pt").read_bytes() == before

    rows, plain = metrics(root / "runs" / "half"), metrics("runs/plain2")
    assert [r["epoch"] for r in rows] == [1, 2]
    assert all(a["train_loss"] != b["train_loss"] for a, b in zip(rows, plain, strict=True))
    assert all(a["val_loss"] != b["val_loss"] for a, b in zip(rows, plain, strict=True))
    assert not torch.equal(trainer.model.fc.weight.detach(), weights("runs/plain2/model.pt")["fc.weight"])


def test_the_compiled_script_gives_ftr_runs_numbers(root, capsys):
    recipe = write_recipe(root, student("distill temperature=3, alpha=0.7"), "s.ftr")
    script = compile_to(capsys, recipe, root / "s.py")
    assert 'TEACHER_FILE = "runs/teacher/model.pt"' in script
    assert "TEMPERATURE = 3.0" in script and "ALPHA = 0.7" in script
    assert "recipe_lang" not in script and "runtime" not in script.replace("RuntimeError", "")
    run_ok(capsys, recipe, root / "runs" / "by_ftr")
    script_ok(capsys, root / "s.py", root / "runs" / "by_script")
    assert_rows_close(metrics(root / "runs" / "by_script"), metrics(root / "runs" / "by_ftr"), rel=0)
    a, b = weights(root / "runs" / "by_script" / "model.pt"), weights(root / "runs" / "by_ftr" / "model.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_gives_the_run_that_never_stopped(root, capsys):
    assert_resumes_exactly(capsys, write_recipe(root, student(epochs=3), "resume.ftr"))


def assert_resumes_exactly(capsys, recipe):
    """Stopped after its first checkpoint and resumed: the run that never stopped."""
    full, stopped = f"runs/{recipe.stem}-full", f"runs/{recipe.stem}-stopped"
    run_ok(capsys, recipe, full)
    assert interrupted_run(recipe, stopped, epoch=1) == 130
    assert len(metrics(stopped)) == 1
    run_ok(capsys, recipe, stopped, "--resume")
    assert without_seconds(metrics(stopped)) == without_seconds(metrics(full))


def test_plan_shows_the_teacher_and_the_loss(root, capsys):
    recipe = write_recipe(root, student("distill temperature=4, alpha=0.25"), "s.ftr")
    code, out, err = ftr(capsys, "plan", recipe)
    assert code == 0, err
    lines = out.splitlines()
    assert (
        "teacher: run runs/teacher (resnet18, head linear(classes=4)), weights runs/teacher/model.pt; "
        "frozen, in eval mode, on the student's batch"
    ) in lines
    assert "loss: 0.25 * 4^2 * KL(teacher || student at T=4) + 0.75 * cross-entropy" in lines
    cache = next(line for line in lines if line.startswith("feature cache: "))
    assert cache.startswith("feature cache: none; ")
    assert cache.endswith("distill: the teacher takes the images, not the features")


def test_no_feature_cache_with_a_teacher(root):
    """Deterministic transforms and a head alone training: cached without a teacher, not with one."""
    fixed = {"data": ""}
    text = recipe_text(name="student", **fixed).replace("random_resized_crop(32), hflip()", "resize(32)")
    plain = plan_of(write_recipe(root, text, "fixed.ftr"))
    assert all(phase.cache for phase in plain.phases)
    with_teacher = text.replace("data {", TEACHER_BLOCK + "data {", 1).replace(
        "  freeze all except head", "  freeze all except head\n  distill"
    )
    plan = plan_of(write_recipe(root, with_teacher, "fixed_teacher.ftr"))
    assert not any(phase.cache for phase in plan.phases)


# --- mistakes, at their line -----------------------------------------------------------


def test_other_classes_name_both_lists_at_the_run_line(root, capsys):
    text = student(head="linear(classes=3)", val="split(0.5)").replace('"data/train"', '"three/train"')
    err = check_error(capsys, text)
    line = line_of(text, 'run "runs/teacher"')
    assert (
        f"s.ftr:{line}:3: error: the teacher 'runs/teacher' learned other classes than the student's data holds" in err
    )
    assert "the teacher: 4 (class_0, class_1, class_2, class_3)" in err
    assert "the student's data: 3 (class_0, class_1, class_2)" in err


@pytest.mark.parametrize(
    ("text", "needle", "message"),
    [
        (student(distill=None), "teacher {", "error: a teacher without 'distill' teaches nothing"),
        (student(teacher=None), "distill", "error: 'distill' needs a teacher"),
        (student("distill temperature=0"), "distill", "error: invalid temperature: must be greater than 0"),
        (student("distill alpha=1.5"), "distill", "error: invalid alpha: must be at most 1"),
        (student("distill 4"), "distill", "error: 'distill' takes options"),
        (
            student(teacher='teacher {\n  run "runs/nowhere"\n}\n\n'),
            "runs/nowhere",
            "error: run folder 'runs/nowhere' does not exist",
        ),
        (
            student(teacher='teacher {\n  run "runs/teacher", model=best\n}\n\n'),
            "runs/teacher",
            "error: run 'runs/teacher' has no best.pt",
        ),
    ],
    ids=["teacher-alone", "distill-alone", "temperature", "alpha", "positional", "missing", "no-best"],
)
def test_mistakes_at_their_line(root, capsys, text, needle, message):
    err = check_error(capsys, text)
    line = line_of(text, needle)
    assert f"s.ftr:{line}:" in err and message in err, err


def test_other_tasks_are_refused(root, capsys):
    text = student().replace('recipe "student"', 'recipe "student"\ntask detection')
    err = check_error(capsys, text, "--syntax")
    assert f"s.ftr:{line_of(text, 'distill')}:3: error: distill belongs to task classification, not detection" in err
    assert "remove it and the teacher block: a detector's outputs are not class logits" in err


def test_a_teacher_run_of_another_task_is_refused_at_its_line(root, capsys):
    detector = root / "runs" / "detector"
    shutil.copytree(root / "runs" / "teacher", detector, dirs_exist_ok=True)
    (detector / "recipe.ftr").write_text((ROOT / "recipes" / "voc_fasterrcnn.ftr").read_text())
    text = student(teacher='teacher {\n  run "runs/detector"\n}\n\n')
    err = check_error(capsys, text)
    line = line_of(text, "runs/detector")
    assert (
        f"s.ftr:{line}:7: error: run 'runs/detector' is a detection run; a teacher gives class logits "
        "(task classification)" in err
    ), err
    assert "give a run of task classification" in err


def test_a_teacher_that_went_away_is_a_message(root, capsys, tmp_path):
    recipe = write_recipe(root, student(teacher='teacher {\n  run "runs/gone"\n}\n\n'), "gone.ftr")
    (root / "runs" / "gone").mkdir(exist_ok=True)
    for name in ("recipe.ftr", "classes.json", "model.pt"):
        (root / "runs" / "gone" / name).write_bytes((root / "runs" / "teacher" / name).read_bytes())
    plan = plan_of(recipe)
    os.remove(root / "runs" / "gone" / "model.pt")
    from runtime.trainer import UnsupportedSetting

    with pytest.raises(UnsupportedSetting, match="teacher: run 'runs/gone' is unfinished: it has no model.pt"):
        Trainer(plan, tmp_path / "out", "cpu").setup()
    assert json.loads((root / "runs" / "teacher" / "classes.json").read_text())  # the real teacher is untouched


def test_two_processes_give_the_numbers_of_one(root, capsys):
    """--nproc 2: each process runs the teacher on its share of the batch. Deterministic
    transforms, the head alone training, BatchNorm in eval mode, batch 16 over 16 images:
    one step per epoch on the whole set, so only float error may differ."""
    from test_ddp import compared, ftr_process, relative

    text = student(epochs=2, batch_size=16).replace("random_resized_crop(32), hflip()", "resize(32)")
    write_recipe(root, text, "ddp.ftr")
    two = ftr_process("run", "ddp.ftr", "--out", "runs/two", "--device", "cpu", "--quiet", "--nproc", "2", cwd=root)
    _, err = two.communicate(timeout=240)
    assert two.returncode == 0, err.decode()
    run_ok(capsys, root / "ddp.ftr", "runs/one")
    one, both = metrics("runs/one"), metrics("runs/two")
    assert [row["epoch"] for row in both] == [row["epoch"] for row in one] == [1, 2]
    for a, b in zip(one, both, strict=True):
        a, b = compared(a), compared(b)
        assert a.keys() == b.keys()
        assert max(relative(a[key], b[key]) for key in a) < 1e-4, (a, b)
    assert json.loads(Path("runs/two/summary.json").read_text())["processes"] == 2


def test_the_demo_script_distills_each_seeds_own_teacher(tmp_path):
    """recipes/digits/distill_demo.sh with `python` and `ftr` replaced by stand-ins that log their arguments."""
    calls = demo_calls(Path(__file__).resolve().parent.parent / "recipes" / "digits" / "distill_demo.sh", tmp_path)
    assert [c for c in calls if c.startswith("ftr run")][0].startswith("ftr run recipes/digits/source.ftr")
    for seed in (0, 1, 2):
        teacher = f"ftr run recipes/digits/finetune.ftr --set seed={seed} --out runs/digits-finetune-seed{seed}"
        at = next(i for i, c in enumerate(calls) if c.startswith(teacher))
        # each seed draws its labelled images, fine-tunes its teacher on them, then runs both arms
        assert calls[at - 1] == f"python recipes/digits/prepare.py --out data/digits --shots 10 --seed {seed}"
        distill = (
            f'ftr run recipes/digits/distill.ftr --set seed={seed} --set teacher.run="runs/digits-finetune-seed{seed}"'
            f" --out runs/digits-distill-seed{seed}"
        )
        student = f"ftr run recipes/digits/student.ftr --set seed={seed} --out runs/digits-student-seed{seed}"
        assert calls[at + 1].startswith(student) and calls[at + 2].startswith(distill)
    teachers = " ".join(f"runs/digits-finetune-seed{seed}" for seed in (0, 1, 2))
    students = " ".join(f"runs/digits-{arm}-seed{seed}" for seed in (0, 1, 2) for arm in ("student", "distill"))
    assert calls[-2:] == [f"ftr compare --mean {teachers}", f"ftr compare --mean {students}"]


def test_a_student_run_predicts_and_exports_without_its_teacher(root, capsys, tmp_path):
    """predict and export open the student's own run folder: its teacher may be gone since,
    and the exported model is the student alone."""
    import shutil

    shutil.copytree(root / "runs" / "teacher", root / "runs" / "moved")
    recipe = write_recipe(root, student(teacher='teacher {\n  run "runs/moved"\n}\n\n'), "moved.ftr")
    run_ok(capsys, recipe, "runs/taught")
    shutil.rmtree(root / "runs" / "moved")
    code, out, err = ftr(capsys, "predict", "runs/taught", "data/val/class_0/00.png", "--model", "final")
    assert code == 0, err
    assert out.splitlines()[0] == "input,label,score"
    assert out.splitlines()[1].startswith("data/val/class_0/00.png,class_")
    code, _, err = ftr(capsys, "export", "runs/taught", "-o", "exported")
    assert code == 0, err
    script = (root / "exported" / "predict.py").read_text()
    assert "teacher" not in script.lower() and "def build_model" in script


def test_compile_without_the_teachers_folder_is_a_message(root, capsys):
    recipe = write_recipe(root, student(teacher='teacher {\n  run "runs/nowhere"\n}\n\n'), "nowhere.ftr")
    code, _, err = ftr(capsys, "compile", recipe, "-o", "nowhere.py")
    assert code == 1 and not (root / "nowhere.py").exists()
    assert err.strip().splitlines()[-1] == (
        "ftr compile: error: cannot read the teacher's run folder 'runs/nowhere': the script builds the "
        "teacher's architecture from its recipe.ftr (`ftr check` says what is wrong with the folder)"
    )
    assert "Traceback" not in err


# --- the teacher given as in model -------------------------------------------------------


def model_teacher(weights: str = 'file("models/teacher.pt")', head: str | None = "linear(classes=4)") -> str:
    lines = ["teacher {", "  backbone resnet18", f"  weights {weights}"] + ([f"  head {head}"] if head else [])
    return "\n".join([*lines, "}", "", ""])


@pytest.fixture
def teacher_files(root):
    """runs/teacher's model as a torchvision resnet18 with its head replaced would save it
    (models/teacher.pt), and the same without the head's keys (models/nohead.pt)."""
    import torchvision
    from torch import nn

    (root / "models").mkdir(exist_ok=True)
    model = torchvision.models.resnet18(weights=None)
    model.fc = nn.Linear(512, 4)
    model.load_state_dict(weights(root / "runs" / "teacher" / "model.pt"))
    state = model.state_dict()
    torch.save(state, root / "models" / "teacher.pt")
    torch.save({k: v for k, v in state.items() if not k.startswith("fc.")}, root / "models" / "nohead.pt")
    return root


def test_a_teacher_as_in_model_gives_the_run_teachers_numbers(teacher_files, capsys):
    """The same weights given as in model and as a run: the same student, by ftr run and
    by the compiled script."""
    root = teacher_files
    by_run = write_recipe(root, student("distill temperature=3, alpha=0.7"), "by_run.ftr")
    by_model = write_recipe(root, student("distill temperature=3, alpha=0.7", model_teacher()), "by_model.ftr")
    run_ok(capsys, by_run, "runs/taught_by_run")
    run_ok(capsys, by_model, "runs/taught_by_model")
    assert without_seconds(metrics("runs/taught_by_model")) == without_seconds(metrics("runs/taught_by_run"))
    a, b = weights("runs/taught_by_model/model.pt"), weights("runs/taught_by_run/model.pt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    script = compile_to(capsys, by_model, root / "by_model.py")
    assert 'TEACHER_FILE = "models/teacher.pt"' in script
    assert "recipe_lang" not in script and "runtime" not in script.replace("RuntimeError", "")
    script_ok(capsys, root / "by_model.py", root / "runs" / "taught_by_script")
    assert_rows_close(metrics(root / "runs" / "taught_by_script"), metrics("runs/taught_by_model"), rel=0)
    a = weights(root / "runs" / "taught_by_script" / "model.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_teacher_as_in_model_resumes_exactly(teacher_files, capsys):
    recipe = write_recipe(teacher_files, student(teacher=model_teacher(), epochs=3), "resume_model.ftr")
    assert_resumes_exactly(capsys, recipe)


def test_a_teacher_as_in_model_is_frozen_and_spends_no_seed(teacher_files, capsys):
    root = teacher_files
    run_ok(capsys, write_recipe(root, student(distill=None, teacher=None), "plain.ftr"), "runs/plain3")
    recipe = write_recipe(root, student("distill temperature=2, alpha=0", model_teacher()), "zero_model.ftr")
    (root / "runs" / "zero_model").mkdir()
    trainer = Trainer(plan_of(recipe), root / "runs" / "zero_model", "cpu")
    trainer.setup()
    trainer.train()
    teacher = trainer.loss.teacher
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    saved = torch.load(root / "models" / "teacher.pt", weights_only=True)
    assert all(torch.equal(teacher.state_dict()[k], saved[k]) for k in saved)
    assert without_seconds(metrics(root / "runs" / "zero_model")) == without_seconds(metrics("runs/plain3"))
    a, b = trainer.model.state_dict(), weights("runs/plain3/model.pt")
    assert all(torch.equal(a[k], b[k]) for k in b)  # alpha=0: the plain run, number for number


def test_a_teacher_file_with_key_and_strip_is_read_alike_by_both_back_ends(teacher_files, capsys):
    """file("...", key=, strip=) as model reads it: a checkpoint wrapping a DataParallel state."""
    root = teacher_files
    state = torch.load(root / "models" / "teacher.pt", weights_only=True)
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, root / "models" / "wrapped.pt")
    wrapped = model_teacher(weights='file("models/wrapped.pt", key="state_dict", strip="module.")')
    recipe = write_recipe(root, student("distill temperature=2, alpha=1", wrapped, epochs=1), "wrapped.ftr")
    script = compile_to(capsys, recipe, root / "wrapped.py")
    assert 'state = state["state_dict"]' in script and 'name.removeprefix("module.")' in script
    run_ok(capsys, recipe, "runs/wrapped_by_ftr")
    script_ok(capsys, root / "wrapped.py", root / "runs" / "wrapped_by_script")
    assert_rows_close(metrics(root / "runs" / "wrapped_by_script"), metrics("runs/wrapped_by_ftr"), rel=0)


def test_a_timm_teacher_of_a_torchvision_student_compiles_with_timm(root, capsys):
    pytest.importorskip("timm")
    teacher = model_teacher('file("models/timm.pt")').replace("backbone resnet18", 'backbone timm("resnet18")')
    script = compile_to(capsys, write_recipe(root, student(teacher=teacher), "timm.ftr"), root / "timm.py")
    assert "\nimport timm\n" in script and 'model = timm.create_model("resnet18")' in script


def test_plan_shows_a_teacher_as_in_model(teacher_files, capsys):
    recipe = write_recipe(teacher_files, student("distill temperature=4, alpha=0.25", model_teacher()), "s.ftr")
    code, out, err = ftr(capsys, "plan", recipe)
    assert code == 0, err
    assert (
        "teacher: as in model: resnet18, head linear(classes=4), weights models/teacher.pt; "
        "frozen, in eval mode, on the student's batch"
    ) in out.splitlines()


def at_teacher(text: str, needle: str) -> str:
    """line:col of `needle` in the teacher block."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("teacher {"))
    i = next(i for i in range(start, len(lines)) if needle in lines[i])
    return f"{i + 1}:{lines[i].index(needle) + 1}"


@pytest.mark.parametrize(
    ("teacher", "needle", "message"),
    [
        (
            model_teacher(head="linear(classes=5)"),
            "5)",
            "error: the teacher's head has 5 classes, the student's data holds 4",
        ),
        (
            model_teacher(weights="none"),
            "none",
            "error: a teacher with weights none would teach untrained logits",
        ),
        (
            model_teacher(weights="default"),
            "default",
            "error: the teacher's new head would start untrained: weights default load the backbone only",
        ),
        (
            model_teacher(weights='file("models/nohead.pt")'),
            'file("models/nohead.pt")',
            "error: 'models/nohead.pt' does not hold the teacher's head (fc): it would start untrained",
        ),
        (
            'teacher {\n  run "runs/teacher"\n  backbone resnet18\n}\n\n',
            'run "runs/teacher"',
            "error: a teacher is given by 'run' or by 'backbone', not both",
        ),
        (
            'teacher {\n  head linear(classes=4)\n  weights file("models/teacher.pt")\n}\n\n',
            "head",
            "error: a teacher given as in model needs 'backbone'",
        ),
    ],
    ids=["head-classes", "weights-none", "weights-default", "file-without-head", "run-and-backbone", "no-backbone"],
)
def test_teacher_as_in_model_mistakes_at_their_line_and_column(teacher_files, capsys, teacher, needle, message):
    text = student(teacher=teacher)
    err = check_error(capsys, text)
    assert f"s.ftr:{at_teacher(text, needle)}: {message}" in err, err
    assert "hint" in err or "|" in err
