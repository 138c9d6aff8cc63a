"""Write a text classification data set, offline: the descriptions of Debian packages,
labelled with their archive section, read from the package index that apt keeps on
the machine (`apt-config shell` names its folder, usually /var/lib/apt/lists/).

    python recipes/text/make_packages.py [--out data/packages] [--per-class 250]
        [--val 50] [--test 50] [--per-group 2] [--seed 0] [--lists DIR]
        [--sections admin,games,...]

writes OUT/train.csv, OUT/val.csv and OUT/test.csv (columns text,label; UTF-8) and
prints the count of each class in each split. The same index and seed give the same
files.

text: the package's synopsis, then its extended description where the index has
one (Debian's binary Packages files usually carry the synopsis alone: the long
descriptions live in Translation-en, which apt does not keep on these machines),
whitespace collapsed, the package's own name taken out where it is written as an
identifier (a name such as python3-foo or libfoo-doc gives its section away). label: the section, without a
contrib/ or non-free/ prefix.

A text that occurs under two sections is left out; a text that occurs twice under one
is kept once. Packages built from one source, or whose synopses agree up to a
suffix such as "(data files)" or "- documentation", form a group: a group lies in one
split only, and gives at most --per-group texts, so that a family of look-alike
packages (tesseract's language files, hunspell's dictionaries) neither dominates a
class nor leaks from train into val or test. The splits fill at the same pace, so a
class that runs short is short in each alike.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import lzma
import random
import re
import shutil
import subprocess
import sys
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

# Sections named after what the software does; python, perl, libs, libdevel, doc,
# devel, ... are named after its language or packaging role, which the synopsis
# states in a fixed form ("(Python 3)", "; documentation", "shared library").
SECTIONS = ("admin", "games", "graphics", "net", "science", "sound", "text", "web")
INDEX_PATTERNS = ("*_Packages", "*_Packages.lz4", "*_Packages.gz", "*_Packages.xz")
DEFAULT_LISTS = Path("/var/lib/apt/lists")
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Package:
    name: str
    source: str
    label: str
    text: str


class NoIndex(Exception):
    """No package index could be read."""


# --- reading the index ---------------------------------------------------------


def apt_lists_dir() -> Path:
    """The folder of apt's package lists, as apt-config resolves it."""
    if shutil.which("apt-config"):
        shell = subprocess.run(
            ["apt-config", "shell", "LISTS", "Dir::State::lists/d"], capture_output=True, text=True, check=False
        ).stdout
        found = re.search(r"LISTS='([^']*)'", shell)
        if found:
            return Path(found.group(1))
    return DEFAULT_LISTS


def index_files(lists: Path) -> list[Path]:
    files = sorted({path for pattern in INDEX_PATTERNS for path in lists.glob(pattern)})
    if not files:
        raise NoIndex(
            f"no Debian package index in {lists} (looked for {', '.join(INDEX_PATTERNS)}): "
            "run `apt-get update` (as root), or give the folder of an index with --lists DIR"
        )
    return files


def _lz4_bytes(path: Path) -> bytes:
    try:
        import lz4.frame
    except ImportError:
        if not shutil.which("lz4"):
            raise NoIndex(
                f"{path} is lz4-compressed: install the lz4 command (apt-get install lz4) or the lz4 Python package"
            ) from None
        return subprocess.run(["lz4", "-dc", str(path)], capture_output=True, check=True).stdout
    return lz4.frame.decompress(path.read_bytes())


def read_index(path: Path) -> str:
    if path.suffix == ".lz4":
        data = _lz4_bytes(path)
    elif path.suffix == ".gz":
        data = gzip.decompress(path.read_bytes())
    elif path.suffix == ".xz":
        data = lzma.decompress(path.read_bytes())
    else:
        data = path.read_bytes()
    return data.decode("utf-8", errors="replace")


def stanzas(index: str) -> Iterator[dict[str, str]]:
    """Each paragraph's fields; a continuation line joins its field's value after a newline."""
    for paragraph in re.split(r"\n\s*\n", index):
        fields: dict[str, str] = {}
        field = None
        for line in paragraph.splitlines():
            if line[:1] in (" ", "\t") and field:
                fields[field] += "\n" + line[1:]
            elif ":" in line:
                field, _, value = line.partition(":")
                fields[field] = value.strip()
        if "Package" in fields:
            yield fields


# --- from stanzas to labelled texts ----------------------------------------------


def description_text(description: str, name: str) -> str:
    """Synopsis and extended description as one line, the package's name left out where it
    is written as an identifier: a compound (python3-foo, cloud-utils, djview3) in the
    package's own lower case. A one-word name (crawl, barcode) or one written as prose
    (Codec2, Mah-Jong) is a word of the description, and the sentence needs it."""
    lines = [line for line in description.splitlines() if line.strip() != "."]  # " ." is a blank line
    text = " ".join(" ".join(lines).split())
    if re.search(r"[\d.+-]", name):
        text = re.sub(rf"(?<![\w.+-]){re.escape(name)}(?![\w.+-])", " ", text)
        text = re.sub(r"\(\s*\)|\[\s*\]", " ", text)
    return " ".join(text.split()).strip(" -:;,")


def package(fields: dict[str, str]) -> Package | None:
    section = fields.get("Section", "")
    description = fields.get("Description", "")
    if not section or not description:
        return None
    name = fields["Package"]
    text = description_text(description, name)
    if not text:
        return None
    source = fields.get("Source", name).split()[0]  # "Source: name (version)"
    return Package(name, source, section.rpartition("/")[2], text)


def unambiguous(packages: list[Package]) -> list[Package]:
    """One package for each text (the first), leaving out texts found under two sections."""
    labels: dict[str, set[str]] = defaultdict(set)
    first: dict[str, Package] = {}
    for p in packages:
        key = p.text.casefold()
        labels[key].add(p.label)
        first.setdefault(key, p)
    return [p for key, p in first.items() if len(labels[key]) == 1]


def stem(text: str) -> str:
    """The synopsis without bracketed parts and without a '- suffix' or '; suffix'."""
    text = re.sub(r"\([^)]*\)|\[[^\]]*\]", " ", text.casefold())
    text = re.split(r"\s--?\s|;\s", text)[0]
    return " ".join(re.sub(r"[^\w+#.]", " ", text).split()) or text


def groups(packages: list[Package]) -> list[list[Package]]:
    """Packages joined by a shared source or stem (union-find over both keys)."""
    parent: dict[str, str] = {}

    def root(key: str) -> str:
        parent.setdefault(key, key)
        while parent[key] != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    for p in packages:
        parent[root("source:" + p.source)] = root("stem:" + stem(p.text))
    members: dict[str, list[Package]] = defaultdict(list)
    for p in packages:
        members[root("source:" + p.source)].append(p)
    return [sorted(group, key=lambda p: p.name) for _, group in sorted(members.items())]


def split(grouped: list[list[Package]], sizes: dict[str, int], per_group: int, seed: int) -> dict[str, list[Package]]:
    """Groups in a seeded order, each into the split that its classes have filled least
    (a fraction of the split's size; ties: test, val, train), giving at most per_group
    texts; each split shuffled. A class that runs short is short in every split alike."""
    rng = random.Random(seed)
    order = grouped[:]
    rng.shuffle(order)
    out: dict[str, list[Package]] = {name: [] for name in SPLITS}
    counts: dict[str, Counter] = {name: Counter() for name in SPLITS}

    def filled(name: str, label: str) -> float:
        return counts[name][label] / sizes[name] if sizes[name] else 1.0

    for group in order:
        members = group[:]
        rng.shuffle(members)
        least = {name: min(filled(name, p.label) for p in members) for name in ("test", "val", "train")}
        name = min(least, key=least.get)
        if least[name] >= 1:
            continue
        taken = 0
        for p in members:
            if taken < per_group and filled(name, p.label) < 1:
                out[name].append(p)
                counts[name][p.label] += 1
                taken += 1
    for rows in out.values():
        rng.shuffle(rows)
    return out


# --- the command ---------------------------------------------------------------------


def write_csv(path: Path, rows: list[Package]) -> None:
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["text", "label"])
        writer.writerows([p.text, p.label] for p in rows)


def make(
    out: Path,
    lists: Path | None = None,
    sections: tuple[str, ...] = SECTIONS,
    per_class: int = 250,
    val: int = 50,
    test: int = 50,
    per_group: int = 2,
    seed: int = 0,
) -> dict[str, list[Package]]:
    lists = apt_lists_dir() if lists is None else Path(lists)
    found = [package(fields) for path in index_files(lists) for fields in stanzas(read_index(path))]
    kept = [p for p in unambiguous([p for p in found if p]) if p.label in sections]
    splits = split(groups(kept), {"train": per_class, "val": val, "test": test}, per_group, seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name, rows in splits.items():
        write_csv(out / f"{name}.csv", rows)
    return splits


def count_table(splits: dict[str, list[Package]]) -> str:
    counts = {name: Counter(p.label for p in rows) for name, rows in splits.items()}
    labels = sorted(set().union(*counts.values()))
    lines = ["label        " + "".join(f"{name:>7}" for name in SPLITS)]
    for label in labels + ["all"]:
        cells = [sum(c.values()) if label == "all" else c[label] for c in counts.values()]
        lines.append(f"{label:12} " + "".join(f"{n:7d}" for n in cells))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("data/packages"))
    parser.add_argument("--per-class", type=int, default=250, help="train texts of each class, at most")
    parser.add_argument("--val", type=int, default=50, help="val texts of each class, at most")
    parser.add_argument("--test", type=int, default=50, help="test texts of each class, at most")
    parser.add_argument("--per-group", type=int, default=2, help="texts taken from one group of look-alike packages")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lists", type=Path, help="folder of the package index (default: apt's)")
    parser.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated sections, the classes")
    args = parser.parse_args(argv)
    sections = tuple(s.strip() for s in args.sections.split(",") if s.strip())
    try:
        splits = make(args.out, args.lists, sections, args.per_class, args.val, args.test, args.per_group, args.seed)
    except NoIndex as error:
        sys.exit(f"make_packages.py: error: {error}")
    print(count_table(splits))
    print(f"written to {args.out}/{{train,val,test}}.csv")


if __name__ == "__main__":
    main()
