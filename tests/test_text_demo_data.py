"""The text demo's data maker (recipes/text/make_packages.py) on a hand-written package
index (tests/fixtures/apt_lists): labels, dedupe, groups kept to one split, seeds."""

from __future__ import annotations

import csv
import importlib.util
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAKER = ROOT / "recipes" / "text" / "make_packages.py"
LISTS = ROOT / "tests" / "fixtures" / "apt_lists"
SECTIONS = ("games", "sound", "net")
SPLITS = ("train", "val", "test")


def load_maker():
    spec = importlib.util.spec_from_file_location("make_packages", MAKER)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


maker = load_maker()


def read_splits(folder: Path) -> dict[str, list[tuple[str, str]]]:
    out = {}
    for name in SPLITS:
        with (folder / f"{name}.csv").open(newline="", encoding="utf-8") as file:
            rows = list(csv.reader(file))
        assert rows[0] == ["text", "label"]
        out[name] = [tuple(row) for row in rows[1:]]
    return out


def make_all(out: Path, lists: Path = LISTS / "plain", seed: int = 0) -> dict[str, list[tuple[str, str]]]:
    """Caps above the fixture's size: every usable text lands in some split."""
    maker.make(out, lists, SECTIONS, per_class=20, val=20, test=20, per_group=2, seed=seed)
    return read_splits(out)


def test_texts_and_labels(tmp_path):
    rows = [row for rows in make_all(tmp_path).values() for row in rows]
    labelled = dict(rows)
    assert {label for _, label in rows} == set(SECTIONS)
    assert labelled["Installer for game data files"] == "games"  # contrib/games
    assert labelled["Full screen ncurses traceroute tool"] == "net"  # non-free/net
    assert labelled['side-scrolling game named "Abe\'s Amazing Adventure"'] == "games"  # quoting survives the CSV
    assert labelled["Dungeon Crawl, a text-based roguelike game"] == "games"
    assert labelled["Original Mah-Jong game"] == "games"  # a name written as prose stays
    assert labelled["command line tag editor"] == "sound"  # id3v2, the package's own name, is left out
    freeciv = next(text for text, _ in rows if text.startswith("Civilization"))
    assert freeciv == (
        "Civilization turn-based strategy game Freeciv is a free clone of the turn-based strategy game "
        "Civilization. In this game, each player becomes leader of a civilisation, fighting to obtain the "
        "ultimate goal: to become the greatest civilisation."
    )
    assert "foo library" not in labelled  # libs: not one of the sections asked for


def test_duplicates_once_and_ambiguous_texts_left_out(tmp_path):
    texts = [text for rows in make_all(tmp_path).values() for text, _ in rows]
    assert texts.count("Lemmings-like puzzle game") == 1
    assert "transitional package" not in texts  # under sound and under net
    assert len(texts) == len(set(texts))


def test_a_group_lies_in_one_split_and_gives_at_most_per_group_texts(tmp_path):
    splits = make_all(tmp_path)
    texts = {name: {text for text, _ in rows} for name, rows in splits.items()}
    for a, b in [("train", "val"), ("train", "test"), ("val", "test")]:
        assert not texts[a] & texts[b]
    ancient = [name for name, found in texts.items() for text in found if "ancient warfare" in text]
    assert len(ancient) == 2 and len(set(ancient)) == 1  # 0ad and 0ad-data's two: one group, per_group 2


def test_each_split_capped_for_each_class(tmp_path):
    maker.make(tmp_path, LISTS / "plain", SECTIONS, per_class=2, val=1, test=1, per_group=2, seed=0)
    for name, size in [("train", 2), ("val", 1), ("test", 1)]:
        labels = [label for _, label in read_splits(tmp_path)[name]]
        assert sorted(labels) == sorted(list(SECTIONS) * size)


def test_same_seed_same_files_other_seed_other_order(tmp_path):
    for run in ("a", "b", "c"):
        maker.make(tmp_path / run, LISTS / "plain", SECTIONS, 2, 1, 1, 2, seed=1 if run == "c" else 0)
    for name in SPLITS:
        assert (tmp_path / "a" / f"{name}.csv").read_bytes() == (tmp_path / "b" / f"{name}.csv").read_bytes()
    assert read_splits(tmp_path / "a") != read_splits(tmp_path / "c")


@pytest.mark.skipif(not shutil.which("lz4") and importlib.util.find_spec("lz4") is None, reason="no lz4 reader")
def test_an_lz4_index_reads_as_the_plain_one(tmp_path):
    assert make_all(tmp_path / "lz4", LISTS / "lz4") == make_all(tmp_path / "plain", LISTS / "plain")


def test_no_index_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit) as stopped:
        maker.main(["--lists", str(tmp_path), "--out", str(tmp_path / "out")])
    message = str(stopped.value.code)
    assert message.startswith(f"make_packages.py: error: no Debian package index in {tmp_path}")
    assert "apt-get update" in message and "--lists DIR" in message
    assert not (tmp_path / "out").exists()


def test_the_command_prints_the_counts(tmp_path, capsys):
    sizes = ["--per-class", "4", "--val", "1", "--test", "1"]
    maker.main(["--lists", str(LISTS / "plain"), "--out", str(tmp_path), "--sections", "games,sound,net", *sizes])
    printed = capsys.readouterr().out
    assert "games" in printed and "sound" in printed and "net" in printed
    assert next(line for line in printed.splitlines() if line.startswith("all")).split()[1:] == ["12", "3", "3"]
