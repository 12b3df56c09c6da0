"""Published adult reference values the phantom generator aims at: ``REFERENCES``, named ranges with their source.

The table itself is data, ``references.yaml`` beside this file (organ volumes, chest diameters, bone sizes,
tissue densities, contrast enhancement; each a range with the citation it was read from). The v2 generator's
ranges are set against it and its tests check the drawn patients with ``value in REFERENCES[name]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

REFERENCES_FILE = Path(__file__).with_name("references.yaml")


@dataclass(frozen=True)
class Reference:
    """A published range: ``low`` to ``high`` in ``unit``, with the source and how it was read."""

    low: float
    high: float
    unit: str
    source: str

    def __contains__(self, value: float) -> bool:
        return self.low <= value <= self.high


def load_references(path: Path = REFERENCES_FILE) -> dict[str, Reference]:
    """The ranges of a references file by name; an entry that is not a well-formed range is refused, naming it."""
    try:
        table = yaml.safe_load(Path(path).read_text())
        citations, ranges = table["citations"], table["ranges"]
    except (OSError, yaml.YAMLError, TypeError, KeyError) as err:
        raise ValueError(f"{path}: not a references file with 'citations' and 'ranges' ({err})") from err
    references = {}
    for name, entry in ranges.items():
        try:
            low, high = (float(v) for v in entry["range"])
            source = str(entry["source"]).format(**citations)
            references[name] = Reference(low, high, str(entry["unit"]), source)
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{path}: ranges.{name} needs range: [low, high], unit and source, with citations "
                             f"among {sorted(citations)} ({type(err).__name__}: {err})") from err
        if not low <= high:
            raise ValueError(f"{path}: ranges.{name}: low {low} is above high {high}")
    return references


REFERENCES: dict[str, Reference] = load_references()
