"""`ftr compare --mean`: runs grouped by recipe name, each metric as mean ± sample sd.

The run folders are written by hand (summary.json as `ftr run` writes it), so the
expected numbers are known exactly; test_run.py compares real runs.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from recipe_lang.cli import main


def write_run(folder: Path, recipe: str, accuracy: float, loss: float, best: tuple[float, int], status="finished"):
    folder.mkdir(parents=True)
    summary = {
        "recipe": recipe,
        "status": status,
        "epochs": 15,
        "of_epochs": 15,
        "final": {"train_loss": loss / 2, "val_loss": loss, "val_accuracy": accuracy},
        "best": {"metric": "accuracy", "value": best[0], "epoch": best[1]},
        "seconds": 30.0,
    }
    (folder / "summary.json").write_text(json.dumps(summary))


def compare(capsys, *args) -> tuple[int, str, str]:
    code = main(["compare", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def rows(out: str) -> dict[str, list[str]]:
    """The table's rows by their first cell, each split on whitespace (the header under 'recipe')."""
    return {line.split()[0]: line.split() for line in out.splitlines()[:-1]}


def test_mean_and_sd_per_recipe(tmp_path, capsys):
    probe = [0.70, 0.72, 0.77]
    finetune = [0.90, 0.91]
    for seed, accuracy in enumerate(probe):
        write_run(tmp_path / f"probe-{seed}", "digits-probe", accuracy, 1.0 - accuracy, (accuracy, 10 + seed))
    for seed, accuracy in enumerate(finetune):
        write_run(tmp_path / f"finetune-{seed}", "digits-finetune", accuracy, 0.3, (accuracy + 0.01, 14))

    code, out, err = compare(capsys, "--mean", *sorted(tmp_path.iterdir()))
    assert code == 0, err
    table = rows(out)
    assert set(table) == {"recipe", "digits-probe", "digits-finetune"}  # one row per recipe
    assert table["recipe"][:5] == ["recipe", "runs", "train_loss", "val_loss", "val_accuracy"]

    cells = table["digits-probe"]
    assert cells[1] == "3"
    accuracy = f"{statistics.fmean(probe):.4f} ± {statistics.stdev(probe):.4f}"
    assert accuracy == "0.7300 ± 0.0361"
    assert accuracy in " ".join(cells)
    assert f"accuracy {accuracy}" in " ".join(cells)  # best equals final here
    assert "10-12" in cells  # the best epochs' range

    cells = " ".join(table["digits-finetune"])
    assert "0.9050 ± 0.0071" in cells  # final accuracy
    assert "accuracy 0.9150 ± 0.0071" in cells
    assert "0.3000 ± 0.0000" in cells  # val_loss, the same in both runs
    assert "mean and sample standard deviation" in out.splitlines()[-1]


def test_one_run_has_no_sd_and_early_stops_are_counted(tmp_path, capsys):
    write_run(tmp_path / "a", "r", 0.5, 0.9, (0.6, 3), status="early_stopped")
    write_run(tmp_path / "b", "r", 0.7, 0.7, (0.7, 9))
    write_run(tmp_path / "c", "single", 0.8, 0.4, (0.8, 5))
    code, out, err = compare(capsys, "--mean", tmp_path / "a", tmp_path / "b", tmp_path / "c")
    assert code == 0, err
    table = rows(out)
    assert table["r"][1:5] == ["2", "(1", "stopped", "early)"]
    assert "0.8000 ± -" in " ".join(table["single"])


def test_mean_of_a_folder_that_is_not_a_run(tmp_path, capsys):
    write_run(tmp_path / "a", "r", 0.5, 0.9, (0.6, 3))
    (tmp_path / "empty").mkdir()
    code, out, err = compare(capsys, "--mean", tmp_path / "a", tmp_path / "empty")
    assert code == 1 and out == ""
    assert err.startswith("ftr compare: error:") and "empty" in err and "not a run folder" in err
    assert "Traceback" not in err


def test_plain_compare_is_unchanged_one_row_per_run(tmp_path, capsys):
    write_run(tmp_path / "a", "r", 0.5, 0.9, (0.6, 3))
    write_run(tmp_path / "b", "r", 0.7, 0.7, (0.7, 9))
    code, out, _ = compare(capsys, tmp_path / "a", tmp_path / "b")
    assert code == 0
    assert [line.split()[:2] for line in out.splitlines()] == [["run", "status"], ["a", "finished"], ["b", "finished"]]
    assert "accuracy 0.6000 @3" in out


def test_pseudo_label_keys_are_columns_after_the_metrics(tmp_path, capsys):
    """A pseudo-labelled run's share and pseudo-label accuracy are shown; a run without them reads '-'."""
    write_run(tmp_path / "finetune", "digits-finetune", 0.90, 0.3, (0.91, 14))
    write_run(tmp_path / "pseudo", "digits-pseudo", 0.92, 0.3, (0.92, 15))
    summary = json.loads((tmp_path / "pseudo" / "summary.json").read_text())
    summary["final"] |= {"pseudo_share": 0.8091, "pseudo_accuracy": 0.9941}
    (tmp_path / "pseudo" / "summary.json").write_text(json.dumps(summary))

    code, out, err = compare(capsys, "--mean", tmp_path / "finetune", tmp_path / "pseudo")
    assert code == 0, err
    table = rows(out)
    assert table["recipe"][2:7] == ["train_loss", "val_loss", "val_accuracy", "pseudo_share", "pseudo_accuracy"]
    assert " ".join(table["digits-pseudo"]).count("0.8091 ± -") == 1
    assert "0.9941 ± -" in " ".join(table["digits-pseudo"])
    assert table["digits-finetune"][11:13] == ["-", "-"]  # after three "mean ± sd" cells

    code, out, err = compare(capsys, tmp_path / "finetune", tmp_path / "pseudo")
    assert code == 0, err
    header, finetune, pseudo = out.splitlines()
    assert header.split()[3:8] == ["train_loss", "val_loss", "val_accuracy", "pseudo_share", "pseudo_accuracy"]
    assert pseudo.split()[6:8] == ["0.8091", "0.9941"] and finetune.split()[6:8] == ["-", "-"]
