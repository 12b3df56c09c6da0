"""README.md's code map matches the tree: every file or folder it names exists where its row says, every
package of x2ct is named (as a row, or as ``name/`` in its parent's row), and every module of the seam packages
(``SEAM_FOLDERS``: the engine and the models) is named in its folder's row."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# a file or folder name as the map writes one: conf.py, make_figures.py, demo.sh, phantom/, v2/
NAME = re.compile(r"(?<![\w./-])([A-Za-z_][\w-]*(?:\.(?:py|sh|yaml|yml)|/))(?![\w/])")
# folders whose every module the map names in the folder's own row (the seams a newcomer looks for first)
SEAM_FOLDERS = ("x2ct/engine/", "x2ct/models/")


def code_map() -> dict[str, str]:
    """The map's rows: the first word of a line at column 0 (a path) -> the row's text, continuation lines
    included."""
    text = (REPO / "README.md").read_text()
    start = text.index("```\nx2ct/")
    block = text[start + 4:text.index("```", start + 4)]
    rows: dict[str, str] = {}
    key = None
    for line in block.splitlines():
        if line and not line[0].isspace():
            key = line.split()[0]
            rows[key] = line[len(key):]
        elif key is not None:
            rows[key] += " " + line.strip()
    return rows


def missing_names(rows: dict[str, str]) -> list[str]:
    """Every named path that is not in the tree: a row's own path under the repository, a name in a folder's row
    anywhere under that folder, a name in a file's row at the top level or under the file's folder."""
    missing = []
    for key, text in rows.items():
        if not (REPO / key).exists():
            missing.append(f"row {key}")
        base = REPO / key if key.endswith("/") else (REPO / key).parent
        for name in NAME.findall(text):
            found = (base / name).exists() or any(base.rglob(name.rstrip("/")))
            if not found and not (REPO / name).exists():
                missing.append(f"{name} (in the row of {key})")
    return missing


def unlisted_packages(rows: dict[str, str]) -> list[str]:
    """Every package under x2ct/ that is neither a row nor named ``name/`` in the row of a folder above it."""
    unlisted = []
    for init in sorted((REPO / "x2ct").rglob("__init__.py")):
        package = init.parent.relative_to(REPO).as_posix() + "/"
        if package == "x2ct/" or package in rows:
            continue
        parents = [key for key in rows if key.endswith("/") and package.startswith(key)]
        named = f"{init.parent.name}/"
        if not any(re.search(rf"(?<![\w-]){re.escape(named)}", rows[key]) for key in parents):
            unlisted.append(package)
    return unlisted


def unnamed_seam_modules(rows: dict[str, str]) -> list[str]:
    """Every module (``*.py`` but ``__init__.py``) directly in a ``SEAM_FOLDERS`` folder that its row does not name."""
    unnamed = []
    for folder in SEAM_FOLDERS:
        named = set(NAME.findall(rows.get(folder, "")))
        unnamed += [f"{folder}{py.name}" for py in sorted((REPO / folder).glob("*.py"))
                    if py.name != "__init__.py" and py.name not in named]
    return unnamed


def test_the_map_has_the_packages_rows():
    rows = code_map()
    assert {"x2ct/ops/", "x2ct/engine/", "x2ct/models/", "conf/", "tests/"} <= set(rows), sorted(rows)


def test_every_name_in_the_code_map_exists():
    missing = missing_names(code_map())
    assert not missing, "README.md's code map names paths the tree does not have: " + "; ".join(missing)


def test_every_package_is_in_the_code_map():
    unlisted = unlisted_packages(code_map())
    assert not unlisted, "packages missing from README.md's code map: " + ", ".join(unlisted)


def test_every_seam_module_is_in_its_row():
    unnamed = unnamed_seam_modules(code_map())
    assert not unnamed, "modules missing from their folder's row in README.md's code map: " + ", ".join(unnamed)


def test_the_checks_catch_a_gone_file_and_an_unlisted_package():
    rows = code_map()
    rows["x2ct/engine/"] += " no_such_module.py"
    assert missing_names(rows) == ["no_such_module.py (in the row of x2ct/engine/)"]
    rows = {key: text for key, text in code_map().items() if key != "x2ct/ops/"}
    assert unlisted_packages(rows) == ["x2ct/ops/"]
    rows = code_map()
    rows["x2ct/engine/"] = rows["x2ct/engine/"].replace("training_state.py", "")
    rows["x2ct/models/"] = rows["x2ct/models/"].replace("interface.py", "")
    assert unnamed_seam_modules(rows) == ["x2ct/engine/training_state.py", "x2ct/models/interface.py"]
