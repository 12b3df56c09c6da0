"""The product says what is, not how it came to be: no tracked text file, and no tracked file's name, cites the
project's own issue numbers or history (an issue's number, a row measured before, after or since one, or a tracker
entry pointed at with a definite article: "the" or "this" issue, or its goal or figures). A reader has no issue
tracker; a row or a file is named by the setting or commit that differs, a goal or a figure is stated itself, and
history lives in git.

Other projects' trackers are sources and are cited by URL (``https://github.com/pytorch/pytorch/issues/167288``),
which the matcher lets through. Result data (``*.json``, ``*.jsonl``, ``*.csv``) and binary files are not read.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA_SUFFIXES = (".json", ".jsonl", ".csv", ".tsv")
BINARY_PROBE_BYTES = 8192

# The word issue(s) followed by a number (spaces, "#", "_" or "-" between), or preceded by before, after or since
# (with or without a number), or the singular after "the", "this" or "that", possessive or not: the product has no
# tracker to point at, so a definite "issue" is read as one (write "the problem" for the ordinary word). A letter
# right before the word ("tissue", "the tissue") does not count; "_" in a file name does.
HISTORY = re.compile(r"(?<![a-z])(?:(?:before|after|since)[\s_-]*issues?(?![a-z])|issues?[\s_#-]*\d+"
                     r"|(?:the|this|that)[\s_-]+issue(?:['\u2019]s)?(?![a-z]))", re.IGNORECASE)
URL = re.compile(r"(?:[a-z][a-z0-9+.-]*://|www\.)\S+", re.IGNORECASE)


def history_mentions(text: str) -> list[str]:
    """The project-history phrases in one line or file name, outside URLs (another project's tracker is a source)."""
    urls = [m.span() for m in URL.finditer(text)]
    return [m.group(0) for m in HISTORY.finditer(text) if not any(a <= m.start() < b for a, b in urls)]


@pytest.mark.parametrize("line, found", [
    (" ".join(["a row measured", "before", "issue", "15"]), True),  # joined so that this file passes its own test
    (" ".join(["Issue", "17,", "point 9: HU below -1024"]), True),
    (" ".join(["as in every row since", "issue"]), True),
    ("_".join(["memory_cpu", "before", "issue"]) + "15.md", True),
    ("#".join(["see issue ", "3"]), True),
    (" ".join(["The", "issue's", "goal for one H100"]), True),  # the definite article points at a tracker entry
    (" ".join(["comparable with the", "issue\u2019s", "SDD 1020 mm figures"]), True),
    (" ".join(["as", "this", "issue", "asks"]), True),
    (" ".join(["fixed in", "the", "issue"]) + ".", True),
    ("the tissue's density; this tissue", False),
    ("rank (https://github.com/facebookresearch/hydra/issues/2070, www.example.org/issue-7)", False),
    ("soft tissue 12 mm below the skin", False),
    ("an issue with the data, issued 3 times", False),
])
def test_the_matcher_finds_history_and_lets_urls_and_other_words_through(line, found):
    assert bool(history_mentions(line)) == found, history_mentions(line)


def tracked_files() -> list[str]:
    """The checkout's tracked paths (relative to its root), or a skip naming why git cannot list them."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed: cannot list the tracked files")
    top = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--show-toplevel"], capture_output=True, text=True)
    if top.returncode != 0 or Path(top.stdout.strip()).resolve() != REPO:
        pytest.skip(f"{REPO} is not the root of a git checkout: cannot list the tracked files")
    listed = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z"], capture_output=True, check=True)
    return [p for p in listed.stdout.decode().split("\0") if p]


def text_of(path: Path) -> str | None:
    """A file's text, or None for binary content (a NUL byte early on, or not UTF-8) and files gone from the tree."""
    try:
        raw = path.read_bytes()
    except (FileNotFoundError, IsADirectoryError):
        return None
    if b"\0" in raw[:BINARY_PROBE_BYTES]:
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def test_no_tracked_file_cites_the_projects_issue_history():
    hits = []
    for name in tracked_files():
        hits += [f"{name}: file name: {m!r}" for m in history_mentions(name)]
        if name.endswith(DATA_SUFFIXES):
            continue
        text = text_of(REPO / name)
        for number, line in enumerate((text or "").splitlines(), start=1):
            if found := history_mentions(line):
                hits.append(f"{name}:{number}: {found} in {line.strip()[:160]!r}")
    assert not hits, ("project history in the product (name what differs, the setting or the commit, instead; cite "
                      "other projects' trackers by URL):\n" + "\n".join(hits))
