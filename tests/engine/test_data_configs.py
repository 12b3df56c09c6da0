"""The data configs (conf/data/) state only what differs from the keys every data set shares (conf/train.yaml's
``data`` node), and every data option and every recipe (experiments/) composes the resolved ``data`` node recorded
in data_configs.json.

After a deliberate change of a data config or of the shared keys, rewrite the record with
``python -m tests.engine.test_data_configs`` and review its diff.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from tests.helpers import compose_config
from x2ct.config_files import register_resolvers

CONF = Path(__file__).resolve().parents[2] / "conf"
REFERENCE = Path(__file__).with_name("data_configs.json")
DATA_OPTIONS = sorted(p.stem for p in (CONF / "data").glob("*.yaml"))
RECIPES = sorted(p.relative_to(CONF / "experiment").with_suffix("").as_posix()
                 for p in (CONF / "experiment").rglob("*.yaml"))
OVERRIDES = [*(f"data={name}" for name in DATA_OPTIONS), *(f"experiment={name}" for name in RECIPES)]


def composed_data(override: str) -> dict:
    """The resolved ``data`` node of conf/train.yaml composed with one override (``data=...`` / ``experiment=...``)."""
    register_resolvers()
    return OmegaConf.to_container(compose_config("train", [override]).data, resolve=True)


def snapshot() -> dict[str, dict]:
    """``{override: resolved data node}`` for every data option and every recipe."""
    return {override: composed_data(override) for override in OVERRIDES}


@pytest.fixture(scope="module")
def reference() -> dict[str, dict]:
    return json.loads(REFERENCE.read_text())


def test_every_data_option_and_recipe_is_in_the_reference(reference):
    assert sorted(reference) == sorted(OVERRIDES)


@pytest.mark.parametrize("override", OVERRIDES)
def test_the_data_node_composes_to_its_recorded_values(override, reference):
    assert composed_data(override) == reference[override]


@pytest.mark.parametrize("name", DATA_OPTIONS)
def test_a_data_file_states_no_key_at_its_shared_default(name):
    shared = OmegaConf.to_container(OmegaConf.load(CONF / "train.yaml").data)
    own = yaml.safe_load((CONF / "data" / f"{name}.yaml").read_text())
    repeated = {key: value for key, value in own.items() if key in shared and shared[key] == value}
    assert not repeated, f"conf/data/{name}.yaml repeats the shared defaults of conf/train.yaml's data node: {repeated}"


if __name__ == "__main__":
    REFERENCE.write_text(json.dumps(snapshot(), indent=1) + "\n")
    print(f"wrote {REFERENCE}")
