"""A non-editable install into a fresh virtual environment works, and `ftr` finds
its grammar (package data) there, not in the working tree.

The new environment is made as a user makes one, from the running interpreter
(itself usually a venv: `make test` runs in .venv), without the system's
site-packages. A .pth file makes the running environment's packages (torch, lark,
pydantic, pip, setuptools>=68, wheel: the test extra) visible behind its own, so
nothing is downloaded: pip runs with --no-index, --no-deps and --no-build-isolation.
The repository is copied first so the build writes nothing into the working tree.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IGNORE = shutil.ignore_patterns(
    *".git __pycache__ *.pyc *.egg-info build dist runs .venv venv .pytest_cache .hypothesis .ruff_cache".split(),
    *".mypy_cache data".split(),
)


def _clean_env() -> dict:
    """No PYTHONPATH or virtual environment of the caller: only the venv decides what is imported."""
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env["PIP_NO_INPUT"] = "1"
    return env


def _run(args, cwd: Path, timeout: int = 240) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=_clean_env(), capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, f"{args}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result


def _see_running_packages(python: Path) -> None:
    """Append this environment's site-packages to the new venv's path (after its own, so
    what is installed there wins; .pth files of the appended folder, such as an editable
    install of ftr, are not run)."""
    purelib = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=python.parent)
    target = Path(purelib.stdout.strip())
    target.mkdir(parents=True, exist_ok=True)
    paths = dict.fromkeys(sysconfig.get_paths()[key] for key in ("purelib", "platlib"))  # lib64 on some systems
    (target / "running-environment.pth").write_text("".join(f"{p}\n" for p in paths), encoding="utf-8")


def test_non_editable_install_in_a_fresh_venv(tmp_path):
    source = tmp_path / "src"
    shutil.copytree(ROOT, source, ignore=IGNORE)
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=tmp_path)
    bindir = venv / ("Scripts" if os.name == "nt" else "bin")
    python = bindir / "python"
    _see_running_packages(python)
    # the running environment's pip, run by the venv's interpreter, installs into the venv
    _run(
        [python, "-m", "pip", "install", "--no-index", "--no-deps", "--no-build-isolation", "--quiet", source],
        cwd=tmp_path,
    )

    work = tmp_path / "elsewhere"
    work.mkdir()
    recipe = work / "seed.ftr"
    shutil.copyfile(ROOT / "recipes" / "seed_resnet18.ftr", recipe)
    bad = work / "bad.ftr"
    bad.write_text(recipe.read_text(encoding="utf-8").replace("epochs 10", "epochs 0"), encoding="utf-8")

    ftr = bindir / "ftr"
    checked = _run([ftr, "check", "--syntax", recipe.name], cwd=work)
    assert (checked.stdout, checked.stderr) == (
        f"{recipe.name}: ok: syntax and values (--syntax: the model is not checked)\n",
        "",
    )
    formatted = _run([ftr, "fmt", "--check", recipe.name], cwd=work)
    assert formatted.stderr == ""
    failed = subprocess.run(
        [str(ftr), "check", "--syntax", bad.name], cwd=work, env=_clean_env(), capture_output=True, text=True
    )
    assert failed.returncode == 1
    assert failed.stderr.startswith("bad.ftr:") and "invalid epochs: must be at least 1" in failed.stderr

    where = _run(
        [
            python,
            "-c",
            "import sysconfig, recipe_lang, importlib.resources as r;"
            "print(sysconfig.get_paths()['purelib']);"
            "print(recipe_lang.__file__);"
            "print(r.files('recipe_lang').joinpath('grammar.lark').is_file())",
        ],
        cwd=work,
    )
    purelib, module, grammar = where.stdout.splitlines()
    site = Path(purelib).resolve()
    installed = Path(module).resolve()
    assert site.is_relative_to(venv.resolve()), site
    assert installed.is_relative_to(site), f"recipe_lang imported from {installed}, not {site}"
    assert not installed.is_relative_to(ROOT) and not installed.is_relative_to(source)
    assert grammar == "True"
    assert (installed.parent / "grammar.lark").is_file()
