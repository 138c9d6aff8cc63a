"""The `ftr` command line: exit codes, the diagnostic format, --set, schema and fmt.

Most tests run `recipe_lang.cli.main` in-process; a few run a real
`python -m recipe_lang.cli` so that exit statuses, stdin and imports are the
process's own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from recipe_lang import load
from recipe_lang.cli import main

ROOT = Path(__file__).resolve().parent.parent
RECIPES = sorted((ROOT / "recipes").glob("**/*.ftr"))
PETS = ROOT / "recipes" / "pets_resnet50.ftr"
SEED = ROOT / "recipes" / "seed_resnet18.ftr"


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def ftr(*args, input: str | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """`ftr ARGS` in a fresh interpreter."""
    return subprocess.run(
        [sys.executable, "-m", "recipe_lang.cli", *args],
        input=input,
        capture_output=True,
        text=True,
        encoding="utf-8",
        cwd=cwd or ROOT,
        env=_env(),
        timeout=120,
    )


def run(capsys, *args) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def usage_error(capsys, *args) -> str:
    with pytest.raises(SystemExit) as info:
        main(list(args))
    assert info.value.code == 2
    return capsys.readouterr().err


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def where(path: Path, needle: str, part: str = "") -> str:
    """`line:col` of the first occurrence of needle in the file (of `part` within it)."""
    for number, line in enumerate(path.read_text(encoding="utf-8").split("\n"), 1):
        if needle in line:
            return f"{number}:{line.index(needle) + needle.index(part) + 1}"
    raise AssertionError(f"{needle!r} not in {path}")


def pets_with(tmp_path: Path, old: str, new: str, name: str = "pets.ftr") -> Path:
    text = PETS.read_text(encoding="utf-8")
    assert old in text
    return write(tmp_path / name, text.replace(old, new, 1))


# --- check ---------------------------------------------------------------------


SYNTAX_OK = "ok: syntax and values (--syntax: the model is not checked)"


@pytest.mark.parametrize("recipe", RECIPES, ids=[p.stem for p in RECIPES])
def test_check_syntax_on_good_recipes_says_ok(capsys, recipe):
    assert run(capsys, "check", "--syntax", str(recipe)) == (0, f"{recipe}: {SYNTAX_OK}\n", "")
    assert run(capsys, "check", "--syntax", "--quiet", str(recipe)) == (0, "", "")


def test_check_syntax_on_all_recipes_at_once(capsys):
    code, out, err = run(capsys, "check", "--syntax", *map(str, RECIPES))
    assert (code, err) == (0, "")
    assert out.splitlines() == [f"{recipe}: {SYNTAX_OK}" for recipe in RECIPES]


def test_check_says_what_it_checked_against_the_model(capsys):
    code, out, err = run(capsys, "check", "--no-data", str(PETS), str(SEED))
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        f"{PETS}: ok: resnet50, 24.58M parameters; 4 groups (head, top, middle, base); 4 spans over 12 epochs",
        f"{SEED}: ok: resnet18, 11.18M parameters; 2 groups (head, rest); 1 span over 10 epochs",
    ]


def test_check_prints_ok_only_for_the_files_that_are(capsys, tmp_path):
    bad = pets_with(tmp_path, "  optimizer adamw", "  optimiser adamw")
    code, out, err = run(capsys, "check", "--syntax", str(bad), str(SEED))
    assert code == 1
    assert out == f"{SEED}: {SYNTAX_OK}\n"
    assert err.startswith(f"{bad}:29:3: error: unknown statement 'optimiser'")


def test_bad_recipe_prints_the_design_format(capsys, tmp_path):
    bad = pets_with(tmp_path, "  optimizer adamw", "  optimiser adamw")
    code, out, err = run(capsys, "check", "--syntax", str(bad))
    assert code == 1
    assert out == ""
    assert err == (
        f"{bad}:29:3: error: unknown statement 'optimiser' in train\n"
        "   |\n"
        "29 |   optimiser adamw(weight_decay=0.05)\n"
        "   |   ^^^^^^^^^ did you mean 'optimizer'?\n"
    )


def test_error_without_hint_has_bare_carets(capsys, tmp_path):
    bad = pets_with(tmp_path, "epochs 12", "epochs 12.5")
    line, column = where(bad, "12.5").split(":")
    assert column == "10"
    code, _, err = run(capsys, "check", "--syntax", str(bad))
    assert code == 1
    assert err == (
        f"{bad}:{line}:10: error: invalid epochs: must be a whole number\n"
        f"{' ' * len(line)} |\n"
        f"{line} |   epochs 12.5\n"
        f"{' ' * len(line)} |          ^^^^\n"
    )


def test_every_error_of_a_file_is_printed_in_order(capsys, tmp_path):
    bad = pets_with(tmp_path, "batch_size 48", "batch_size 0")
    bad.write_text(bad.read_text().replace("precision bf16", "precision bf8"))
    code, _, err = run(capsys, "check", "--syntax", str(bad))
    assert code == 1
    first = err.index(f"{bad}:{where(bad, 'batch_size 0', '0')}: error: invalid batch_size")
    second = err.index(f"{bad}:{where(bad, 'bf8')}: error: invalid precision")
    assert first < second
    assert err.count(": error: ") == 2


def test_several_files_all_reported_and_exit_1_if_any_fails(capsys, tmp_path):
    one = pets_with(tmp_path, "epochs 12", "epochs 0", "one.ftr")
    two = pets_with(tmp_path, "best accuracy", "best f1", "two.ftr")
    code, out, err = run(capsys, "check", "--syntax", str(SEED), str(one), str(PETS), str(two))
    assert code == 1
    assert out == f"{SEED}: {SYNTAX_OK}\n{PETS}: {SYNTAX_OK}\n"
    assert f"{one}:{where(one, 'epochs 0', '0')}: error: invalid epochs" in err
    assert f"{two}:{where(two, 'best f1', 'f1')}: error: 'best' names a metric that is not measured" in err
    assert err.index(str(one)) < err.index(str(two))
    assert str(SEED) not in err and str(PETS) not in err


def test_missing_file_is_a_clean_error(capsys, tmp_path):
    missing = tmp_path / "nope.ftr"
    code, out, err = run(capsys, "check", "--syntax", str(missing), str(SEED))
    assert code == 1
    assert out == f"{SEED}: {SYNTAX_OK}\n"
    assert err == f"{missing}: error: cannot read recipe: No such file or directory\n"


def test_utf8_byte_order_mark_is_accepted(capsys, tmp_path):
    """Editors on Windows start UTF-8 files with a byte-order mark."""
    path = tmp_path / "bom.ftr"
    path.write_bytes(b"\xef\xbb\xbf" + SEED.read_bytes())
    assert run(capsys, "check", "--syntax", "-q", str(path)) == (0, "", "")
    assert run(capsys, "fmt", "--check", str(path))[0] == 0


def test_directory_and_undecodable_file_are_clean_errors(capsys, tmp_path):
    latin1 = tmp_path / "latin1.ftr"
    latin1.write_bytes(SEED.read_bytes().replace(b"seed-resnet18", b"s\xe9ed"))
    code, _, err = run(capsys, "check", "--syntax", str(tmp_path), str(latin1))
    assert code == 1
    assert f"{tmp_path}: error: cannot read recipe" in err
    assert f"{latin1}: error: recipe is not UTF-8 text" in err
    assert "Traceback" not in err


# --- usage errors --------------------------------------------------------------


def test_no_command_is_a_usage_error(capsys):
    assert "usage: ftr" in usage_error(capsys)


def test_unknown_command_is_a_usage_error(capsys):
    assert "invalid choice: 'chek'" in usage_error(capsys, "chek", str(SEED))


def test_check_without_file_is_a_usage_error(capsys):
    assert "required: FILE" in usage_error(capsys, "check", "--syntax")


def test_unknown_option_is_a_usage_error(capsys):
    assert "--sintax" in usage_error(capsys, "check", "--sintax", str(SEED))


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.startswith("ftr ")


# --- --set ---------------------------------------------------------------------


def test_set_accepted_and_applied(capsys):
    assert run(capsys, "check", "--syntax", "--set", "train.epochs=3", str(SEED)) == (0, f"{SEED}: {SYNTAX_OK}\n", "")
    assert load(SEED, ["train.epochs=3"]).train.epochs == 3
    recipe = load(SEED, ["train.epochs=3", "seed=11", "data.val=split(0.3)"])
    assert (recipe.seed, recipe.data.val.fraction) == (11, 0.3)


def test_set_that_breaks_the_recipe_is_reported_in_the_file(capsys):
    """Fewer epochs than the last thaw: the error is the file's `at epoch` line."""
    code, _, err = run(capsys, "check", "--syntax", "--set", "train.epochs=3", str(PETS))
    assert code == 1
    assert f"{PETS}:{where(PETS, '6 unfreeze')}: error: epoch 6 is past the last epoch (3)" in err


def test_set_unknown_key_names_it_with_a_suggestion(capsys):
    """A mistake of the command line, not of the recipe: a usage error (exit 2)."""
    code, out, err = run(capsys, "check", "--syntax", "--set", "train.epoch=3", str(PETS))
    assert code == 2
    assert out == ""
    assert "unknown key 'train.epoch' in --set" in err
    assert "did you mean 'train.epochs'?" in err
    assert "Traceback" not in err


def test_set_bad_value_points_into_the_override(capsys):
    code, _, err = run(capsys, "check", "--syntax", "--set", "train.epochs=0", str(SEED))
    assert code == 1
    assert err == (
        "--set train.epochs:1:8: error: invalid epochs: must be at least 1\n  |\n1 | epochs 0\n  |        ^\n"
    )


def test_set_syntax_error_points_into_the_override(capsys):
    code, _, err = run(capsys, "check", "--syntax", "--set", "train.epochs=3 4", str(SEED))
    assert code == 2
    assert err.startswith("--set train.epochs:1:10: error: unexpected number 4\n")
    assert "1 | epochs 3 4\n" in err


def test_set_value_with_a_second_statement_is_an_error(capsys):
    """A newline in a value would otherwise drop everything after it."""
    code, _, err = run(capsys, "check", "--syntax", "--set", "train.epochs=3\nlr 5", str(SEED))
    assert code == 2
    assert "--set train.epochs: the value spans several lines" in err


def test_set_without_equals_is_an_error(capsys):
    code, _, err = run(capsys, "check", "--syntax", "--set", "epochs", str(PETS))
    assert code == 2
    assert "invalid --set 'epochs'" in err


# --- schema --------------------------------------------------------------------


def test_schema_is_json_with_the_blocks(capsys):
    code, out, err = run(capsys, "schema")
    assert code == 0 and err == ""
    schema = json.loads(out)
    assert schema["type"] == "object"
    assert {"model", "data", "train"} <= set(schema["properties"])
    assert {"model", "data", "train"} <= set(schema.get("required", []))


# --- fmt -----------------------------------------------------------------------


NOT_CANONICAL = 'train {\nepochs 3\n   lr 1e-3\n}\nmodel {   backbone resnet18\n}\nrecipe "x"  # name\n'


def test_fmt_check_on_canonical_recipes(capsys):
    assert run(capsys, "fmt", "--check", *map(str, RECIPES)) == (0, "", "")


def test_fmt_check_reports_without_modifying(capsys, tmp_path):
    path = write(tmp_path / "messy.ftr", NOT_CANONICAL)
    before = path.stat().st_mtime_ns
    code, out, err = run(capsys, "fmt", "--check", str(path))
    assert code == 1
    assert out == ""
    assert str(path) in err
    assert path.read_text(encoding="utf-8") == NOT_CANONICAL
    assert path.stat().st_mtime_ns == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["messy.ftr"]


def test_fmt_rewrites_in_place(capsys, tmp_path):
    from recipe_lang.formatter import format_text

    path = write(tmp_path / "messy.ftr", NOT_CANONICAL)
    code, out, _ = run(capsys, "fmt", str(path))
    assert code == 0 and out == ""
    text = path.read_text(encoding="utf-8")
    assert text != NOT_CANONICAL
    assert text == format_text(NOT_CANONICAL)
    assert text.startswith('recipe "x"  # name\n')
    assert sorted(p.name for p in tmp_path.iterdir()) == ["messy.ftr"]  # no temp file left
    assert run(capsys, "fmt", "--check", str(path)) == (0, "", "")


def test_fmt_on_a_bad_recipe_fails_and_keeps_the_file(capsys, tmp_path):
    path = write(tmp_path / "bad.ftr", 'recipe "x"\nmodel {\n  backbone (\n')
    code, _, err = run(capsys, "fmt", str(path))
    assert code == 1
    assert f"{path}:3:12: error: '(' is never closed" in err
    assert path.read_text(encoding="utf-8") == 'recipe "x"\nmodel {\n  backbone (\n'


def test_fmt_stdin_to_stdout():
    from recipe_lang.formatter import format_text

    result = ftr("fmt", "-", input=NOT_CANONICAL)
    assert result.returncode == 0, result.stderr
    assert result.stdout == format_text(NOT_CANONICAL)
    again = ftr("fmt", "--check", "-", input=result.stdout)
    assert again.returncode == 0, again.stderr
    assert ftr("fmt", "--check", "-", input=NOT_CANONICAL).returncode == 1


# --- a real process ------------------------------------------------------------


def test_process_exit_codes(tmp_path):
    bad = pets_with(tmp_path, "  optimizer adamw", "  optimiser adamw")
    good = ftr("check", "--syntax", str(SEED))
    assert (good.returncode, good.stdout, good.stderr) == (0, f"{SEED}: {SYNTAX_OK}\n", "")
    failed = ftr("check", "--syntax", str(bad))
    assert failed.returncode == 1
    assert failed.stderr.startswith(f"{bad}:29:3: error: unknown statement 'optimiser' in train\n")
    assert "Traceback" not in failed.stderr
    assert ftr("chek", str(SEED)).returncode == 2
    assert ftr("check").returncode == 2
    assert ftr().returncode == 2
    for override in ("train.epochs", "train.epoch=3"):
        wrong = ftr("check", "--syntax", "--set", override, str(SEED))
        assert wrong.returncode == 2 and wrong.stdout == "" and "Traceback" not in wrong.stderr, override


def test_process_runs_from_another_directory(tmp_path):
    write(tmp_path / "r.ftr", SEED.read_text(encoding="utf-8"))
    result = ftr("check", "--syntax", "r.ftr", cwd=tmp_path)
    assert (result.returncode, result.stderr) == (0, "")


NO_TORCH = """
import sys
from recipe_lang.cli import main
codes = [main(args) for args in {calls!r}]
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision"))
assert "torch" not in sys.modules and "torchvision" not in sys.modules, loaded
print(codes)
"""


@pytest.mark.parametrize(
    "calls, codes",
    [
        ([["check", "--syntax", str(PETS), str(SEED)]], [0]),
        ([["check", "--syntax", "--set", "train.epochs=0", str(SEED)]], [1]),
        ([["fmt", "--check", str(PETS)], ["fmt", "--check", str(SEED)]], [0, 0]),
        ("bad", [1]),  # a recipe error through fmt, written to tmp_path below
    ],
    ids=["check-syntax", "check-syntax-error", "fmt", "fmt-error"],
)
def test_syntax_check_and_fmt_import_no_torch(tmp_path, calls, codes):
    if calls == "bad":
        calls = [["fmt", str(pets_with(tmp_path, "epochs 12", "epochs 12 $"))]]
    result = subprocess.run(
        [sys.executable, "-c", NO_TORCH.format(calls=calls)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=_env(),
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == str(codes)


LOADED = """
import sys
import recipe_lang.cli
{run}
HEAVY = {{"lark", "regex", "pydantic", "torch", "torchvision", "jinja2", "transformers", "timm", "importlib.metadata",
         "logging", "pickle"}}
print(sorted(set(sys.modules) & HEAVY))
"""


@pytest.mark.parametrize(
    "run, libraries",
    [
        ("", []),
        (f"recipe_lang.cli.main(['fmt', '--check', {str(PETS)!r}])", []),
        (f"recipe_lang.cli.main(['check', '--syntax', {str(PETS)!r}])", ["pydantic"]),
    ],
    ids=["cli-imported", "fmt", "check-syntax"],
)
def test_commands_load_only_the_libraries_they_use(tmp_path, run, libraries):
    """Start-up time: the command line imports no models before it knows the command,
    fmt, which validates nothing, never loads Pydantic, the generated parser needs
    neither Lark nor the regex module nor Lark's logging and pickle (parser_gen leaves them
    out), and no command looks for Pydantic plugins."""
    code = LOADED.format(run=run)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=_env())
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == str(libraries)
