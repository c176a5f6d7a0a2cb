"""The layering of docs/architecture.md, enforced: cores stay pure, packages load runtimes lazily.

The list of core modules is read from the ```core-modules block of docs/architecture.md, so the doc
names the cores exactly and a new package adds its cores there.
"""

from __future__ import annotations

import ast
import importlib
import json
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest

import warpmesh

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "warpmesh"
DOC = ROOT / "docs" / "architecture.md"

#: Top-level modules no core may load (directly or through anything it imports).
FORBIDDEN = ("asyncio", "socket", "ssl", "sqlite3", "wasmtime")
#: Modules a core's own source may not import at all, even lazily inside a function.
FORBIDDEN_IN_SOURCE = (*FORBIDDEN, "gc", "time", "threading", "selectors", "subprocess", "concurrent")


def core_modules() -> list[str]:
    """The dotted names in the ```core-modules block of docs/architecture.md."""
    blocks = re.findall(r"^```core-modules\n(.*?)^```", DOC.read_text(), flags=re.S | re.M)
    assert len(blocks) == 1, "docs/architecture.md must hold exactly one ```core-modules block"
    names = [line.strip() for line in blocks[0].splitlines() if line.strip()]
    assert len(names) == len(set(names)), "a core module is listed twice"
    return names


def all_modules() -> list[str]:
    return sorted(
        m.name for m in pkgutil.walk_packages([str(SRC)], prefix="warpmesh.") if ".cli." not in m.name
    )


def _source(module: str) -> Path:
    rel = Path(*module.split(".")[1:])
    package = SRC / rel / "__init__.py"
    return package if package.exists() else SRC / rel.with_suffix(".py")


_PROBE = """
import importlib, json, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
print(json.dumps(sorted(sys.modules)))
"""


def _loaded_by(modules: list[str]) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, *modules], capture_output=True, text=True, check=True, timeout=120
    ).stdout
    return set(json.loads(out))


def _violations(loaded: set[str], cores: set[str]) -> list[str]:
    allowed = set(cores)
    for name in cores:  # the packages a core lives in run their __init__ first
        parts = name.split(".")
        allowed.update(".".join(parts[:i]) for i in range(1, len(parts)))
    bad = sorted({m.split(".")[0] for m in loaded if m.split(".")[0] in FORBIDDEN})
    return bad + sorted(m for m in loaded if m.startswith("warpmesh.") and m not in allowed)


def test_the_doc_lists_only_modules_that_exist() -> None:
    missing = [m for m in core_modules() if not _source(m).exists()]
    assert not missing, f"docs/architecture.md lists core modules that do not exist: {missing}"


def test_importing_every_core_loads_no_runtime() -> None:
    cores = core_modules()
    bad = _violations(_loaded_by(cores), set(cores))
    if bad:  # name the culprit: one fresh interpreter per core
        culprits = {c: v for c in cores if (v := _violations(_loaded_by([c]), set(cores)))}
        pytest.fail(f"importing a core loaded runtime modules {bad}; per core: {culprits}")


@pytest.mark.parametrize("module", core_modules())
def test_core_source_imports_nothing_impure(module: str) -> None:
    tree = ast.parse(_source(module).read_text())
    imported: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            imported.append(node.module)
    bad = sorted({m for m in imported if m.split(".")[0] in FORBIDDEN_IN_SOURCE})
    bad += sorted({m for m in imported if m.startswith("warpmesh.") and m not in set(core_modules())
                   and not any(c.startswith(m + ".") for c in core_modules())})
    assert not bad, f"{module} imports {bad}; cores take time and randomness as arguments"


def _lazy_packages() -> list[str]:
    return [m for m in all_modules() if _source(m).name == "__init__.py"
            and "lazy_exports" in _source(m).read_text()]


def test_some_packages_export_lazily() -> None:
    assert {"warpmesh.warp", "warpmesh.net", "warpmesh.raft", "warpmesh.workers"} <= set(_lazy_packages())


@pytest.mark.parametrize("package", _lazy_packages())
def test_every_lazy_export_resolves(package: str) -> None:
    mod = importlib.import_module(package)
    for name in mod.__all__:
        assert getattr(mod, name) is not None, f"{package}.{name}"
        assert name in dir(mod)
    with pytest.raises(AttributeError):
        mod.no_such_name  # noqa: B018


def test_importing_warpmesh_loads_nothing_heavy() -> None:
    bad = _violations(_loaded_by(["warpmesh"]), set(core_modules()))
    assert not bad
    assert warpmesh.__version__



def _public_exceptions() -> list[type[BaseException]]:
    """Every public exception class defined in warpmesh (CLI included)."""
    found: dict[str, type[BaseException]] = {}
    for name in [*all_modules(), *(f"warpmesh.cli.{m.name}" for m in pkgutil.iter_modules([str(SRC / "cli")]))]:
        module = importlib.import_module(name)
        for attr, value in vars(module).items():
            if (isinstance(value, type) and issubclass(value, BaseException) and not attr.startswith("_")
                    and value.__module__.startswith("warpmesh") and not value.__name__.startswith("_")):
                found[f"{value.__module__}.{value.__qualname__}"] = value
    return [found[k] for k in sorted(found)]


def test_every_public_exception_derives_from_warpmesh_error() -> None:
    from warpmesh.errors import WarpmeshError

    classes = _public_exceptions()
    assert len(classes) > 40  # the walk found the subsystems' errors
    outside = [f"{c.__module__}.{c.__qualname__}" for c in classes if not issubclass(c, WarpmeshError)]
    assert not outside, f"exceptions outside the WarpmeshError tree: {outside}"


def test_there_is_one_payload_too_large() -> None:
    from warpmesh.errors import PayloadTooLarge

    named = [c for c in _public_exceptions() if c.__name__ == "PayloadTooLarge"]
    assert named == [PayloadTooLarge]


def test_mypy_checks_exactly_the_cores_strictly() -> None:
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]
    strict = [o for o in config["overrides"] if o.get("disallow_untyped_defs")]
    assert len(strict) == 1, "one strict override, listing the cores"
    assert sorted(strict[0]["module"]) == sorted(core_modules()), (
        "pyproject.toml's strict [[tool.mypy.overrides]] must list exactly docs/architecture.md's cores")
    for flag in ("disallow_any_generics", "disallow_untyped_calls", "warn_return_any", "strict_equality"):
        assert strict[0].get(flag) is True, flag
