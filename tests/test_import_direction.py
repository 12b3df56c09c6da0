"""The layers of x2ct import only downward, so a reader can learn each one knowing only those below it.

``LAYERS`` lists them top to bottom; a module may import its own package (``x2ct.models.blocks`` ->
``x2ct.models.interface``) and any package of a lower layer, never one of a higher layer nor another package of
its own layer (``x2ct.losses`` and ``x2ct.adversarial``, ``x2ct.evaluation`` and ``x2ct.inference``: what
two of them share belongs one layer down). Every import counts, including those inside functions and under
``TYPE_CHECKING``; Hydra ``_target_`` strings are configuration, not imports, and are not checked.

Why this order: evaluation and inference read what training writes (checkpoints through
``x2ct.engine.checkpoint`` and ``x2ct.engine.trained_model``, ``metrics.jsonl``, ``run_info.json``) and reuse
its distributed helpers, so they sit above the engine; the engine never needs them (its validation metrics
come from ``x2ct.ops``). The leaves (``x2ct.ops``, ``atomic_io``, ``config_files``, ``folder_lock``, ``os_errors``,
``progress``, the package's ``__init__``) import nothing of x2ct.
"""

from __future__ import annotations

import ast
from pathlib import Path

import x2ct

LAYERS: list[tuple[str, list[str]]] = [  # top to bottom
    ("entrypoints", ["x2ct.compare"]),
    ("evaluation/inference", ["x2ct.evaluation", "x2ct.inference"]),
    ("engine", ["x2ct.engine"]),
    ("losses/adversarial", ["x2ct.losses", "x2ct.adversarial"]),
    ("models", ["x2ct.models"]),
    ("data", ["x2ct.data"]),
    ("physics", ["x2ct.physics"]),
    ("leaves", ["x2ct.ops", "x2ct.atomic_io", "x2ct.config_files", "x2ct.folder_lock", "x2ct.os_errors",
                "x2ct.progress", "x2ct.provenance", "x2ct"]),
]


def package_of(module: str, layers: list[tuple[str, list[str]]]) -> str | None:
    """The longest package of ``layers`` that is ``module`` or contains it; the root package only itself."""
    root = module.split(".")[0]
    names = [name for _, names in layers for name in names]
    found = [n for n in names if module == n or (n != root and module.startswith(n + "."))]
    return max(found, key=len, default=None)


def module_name(path: Path, package_dir: Path) -> str:
    """``<package>/a/b.py`` -> ``package.a.b``; ``<package>/a/__init__.py`` -> ``package.a``."""
    parts = path.relative_to(package_dir.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    """What one import statement reaches: ``from a import b`` -> ``a.b`` (``b`` may be a module), relative
    imports resolved against ``module``."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        anchor = module.split(".") if is_package else module.split(".")[:-1]
        anchor = anchor[:len(anchor) - (node.level - 1)]
        base = ".".join([*anchor, base] if base else anchor)
    return [f"{base}.{alias.name}" if alias.name != "*" else base for alias in node.names]


def layer_violations(package_dir: Path, layers: list[tuple[str, list[str]]] = LAYERS) -> list[str]:
    """``file:line: statement: why`` for every import of the package under ``package_dir`` that ``layers``
    forbids, and for every module that belongs to no layer."""
    rank = {name: i for i, (_, names) in enumerate(layers) for name in names}  # 0 = top
    title = {name: layer for layer, names in layers for name in names}
    root = package_dir.name
    problems = []
    for path in sorted(package_dir.rglob("*.py")):
        where = path.relative_to(package_dir.parent)
        module = module_name(path, package_dir)
        source = package_of(module, layers)
        if source is None:
            problems.append(f"{where}: module {module} belongs to no layer; add its package to LAYERS")
            continue
        text = path.read_text()
        for node in ast.walk(ast.parse(text, filename=str(path))):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            for target in imported_modules(node, module, path.name == "__init__.py"):
                if target != root and not target.startswith(root + "."):
                    continue
                target_package = package_of(target, layers) or package_of(target.rsplit(".", 1)[0], layers)
                if target_package is None or target_package == source:
                    continue
                statement = ast.get_source_segment(text, node) or ast.unparse(node)
                if rank[target_package] < rank[source]:
                    why = f"upward: {source} ({title[source]}) imports {target_package} ({title[target_package]})"
                elif rank[target_package] == rank[source]:
                    why = (f"across one layer ({title[source]}): {source} imports {target_package}; share through a "
                           "lower layer")
                else:
                    continue
                problems.append(f"{where}:{node.lineno}: `{statement}`: {why}")
    return problems


def write_package(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root / next(iter(files)).split("/")[0]


TOY_LAYERS = [("high", ["pkg.high"]), ("middle", ["pkg.left", "pkg.right"]), ("low", ["pkg.low", "pkg"])]


def test_x2ct_imports_only_downward():
    problems = layer_violations(Path(x2ct.__file__).parent)
    assert not problems, "imports against the layer order (tests/test_import_direction.py):\n" + "\n".join(problems)


def test_an_upward_import_inside_a_function_is_named_with_file_and_line(tmp_path):
    package = write_package(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/low/__init__.py": "",
        "pkg/low/leaf.py": "def helper():\n    from pkg.high.top import thing\n    return thing\n",
        "pkg/high/__init__.py": "",
        "pkg/high/top.py": "from pkg.low.leaf import helper\n\nthing = helper\n",
    })
    assert layer_violations(package, TOY_LAYERS) == [
        "pkg/low/leaf.py:2: `from pkg.high.top import thing`: upward: pkg.low (low) imports pkg.high (high)"]


def test_relative_and_package_level_imports_are_resolved(tmp_path):
    package = write_package(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/low.py": "from pkg import high\n",
        "pkg/left/__init__.py": "from ..right import thing\nfrom . import own\n",
        "pkg/left/own.py": "",
        "pkg/right/__init__.py": "thing = 1\n",
        "pkg/high/__init__.py": "from pkg.left import own\nimport pkg\n",
    })
    assert layer_violations(package, TOY_LAYERS) == [
        "pkg/left/__init__.py:1: `from ..right import thing`: across one layer (middle): pkg.left imports pkg.right; "
        "share through a lower layer",
        "pkg/low.py:1: `from pkg import high`: upward: pkg.low (low) imports pkg.high (high)",
    ]


def test_a_module_outside_every_layer_is_named(tmp_path):
    package = write_package(tmp_path, {"pkg/__init__.py": "", "pkg/stray.py": "import os\n"})
    assert layer_violations(package, TOY_LAYERS) == [
        "pkg/stray.py: module pkg.stray belongs to no layer; add its package to LAYERS"]
