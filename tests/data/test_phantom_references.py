"""The published reference table (x2ct/data/phantom/references.yaml): read whole, citations expanded, bad entries
refused naming the entry."""

from __future__ import annotations

from pathlib import Path

import pytest

from x2ct.data.phantom.references import REFERENCES, REFERENCES_FILE, Reference, load_references


def test_every_range_is_read_with_its_citation_expanded():
    assert len(REFERENCES) == 24
    assert REFERENCES["lung_hu"] == Reference(-920.0, -750.0, "HU", REFERENCES["lung_hu"].source)
    assert REFERENCES["heart_volume_ml"].source.startswith("whole heart (myocardium + chamber blood): ICRP Publication")
    assert REFERENCES["fat_hu"].source.startswith("adipose tissue: standard CT attenuation tables (e.g. Lev")
    for name, ref in REFERENCES.items():
        assert ref.low <= ref.high and ref.unit in {"ml", "mm", "ratio", "HU"}, name
        assert "{" not in ref.source and "\n" not in ref.source and len(ref.source) > 20, name
    assert -850.0 in REFERENCES["lung_hu"] and -700.0 not in REFERENCES["lung_hu"]


def test_the_package_data_names_the_table():
    """A non-editable install has the table only if setuptools' package-data names it."""
    tomllib = pytest.importorskip("tomllib")
    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    package_data = pyproject["tool"]["setuptools"]["package-data"]
    assert REFERENCES_FILE.name in package_data["x2ct.data.phantom"] and REFERENCES_FILE.is_file()


@pytest.mark.parametrize(("entry", "message"), [
    ("x: {range: [2.0, 1.0], unit: ml, source: s}", r"ranges\.x: low 2\.0 is above high 1\.0"),
    ("x: {range: [1.0], unit: ml, source: s}", r"ranges\.x needs range: \[low, high\]"),
    ("x: {range: [1.0, 2.0], unit: ml}", r"ranges\.x needs .*KeyError: 'source'"),
    ("x: {range: [1.0, 2.0], unit: ml, source: '{nowhere}: p. 3'}", r"ranges\.x .* among \['icrp'\]"),
])
def test_a_malformed_entry_is_refused_naming_it(tmp_path, entry, message):
    path = tmp_path / "refs.yaml"
    path.write_text(f"citations: {{icrp: ICRP 89}}\nranges:\n  {entry}\n")
    with pytest.raises(ValueError, match=message) as err:
        load_references(path)
    assert str(path) in str(err.value)


def test_a_file_that_is_not_a_table_is_refused_naming_it(tmp_path):
    with pytest.raises(ValueError, match=r"missing\.yaml: not a references file"):
        load_references(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match=r"list\.yaml: not a references file"):
        load_references(tmp_path / "list.yaml")
