"""Which package modules a rule script runs, so that editing one reruns the rules using it.

Snakemake's code trigger sees only a rule's own script; the workflow lists these modules as
inputs of each rule (``common.smk``'s ``package_modules``), so that an edit to
``fairfer/training/trainer.py`` reruns ``train_model`` and ``dvc repro`` (which reruns a stage
when its code changed) agrees.
"""

from __future__ import annotations

import ast
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

#: The rule scripts' folder: the package lives beside them (scripts/fairfer).
SCRIPTS = Path(__file__).resolve().parents[1]


def _module_files(dotted: str, package_dir: Path) -> list[Path]:
    """The files Python runs to import ``fairfer.<dotted>``: every package ``__init__`` on the
    way and the module itself (empty when it is not part of the package)."""
    parts = [part for part in dotted.split(".") if part]
    files, folder = [package_dir / "__init__.py"], package_dir
    for position, part in enumerate(parts):
        if (folder / part).is_dir():
            folder = folder / part
            files.append(folder / "__init__.py")
        elif (folder / f"{part}.py").is_file() and position == len(parts) - 1:
            files.append(folder / f"{part}.py")
        else:
            return []
    return [path for path in files if path.is_file()]


def package_modules(script: Path, package_dir: Path) -> list[Path]:
    """Modules of the package at ``package_dir`` that ``script`` imports, directly or through
    other modules, sorted.

    Follows ``import fairfer.a.b``, ``from fairfer.a.b import c`` and ``from fairfer.a import
    b`` (where ``b`` is a module or a subpackage); names that are not modules (functions,
    constants) resolve to the module defining them.
    """
    name = package_dir.name
    pending, found = [Path(script)], set()
    while pending:
        for node in ast.walk(ast.parse(pending.pop().read_text())):
            dotted: list[str] = []
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == name:
                base = node.module.partition(".")[2]
                dotted.append(base)
                dotted += [f"{base}.{alias.name}".lstrip(".") for alias in node.names]
            elif isinstance(node, ast.Import):
                dotted += [
                    alias.name.partition(".")[2]
                    for alias in node.names
                    if alias.name.split(".")[0] == name
                ]
            for module in dotted:
                for source in _module_files(module, package_dir):
                    if source not in found:
                        found.add(source)
                        pending.append(source)
    return sorted(found)


def rule_script(name: str) -> ModuleType:
    """The module of ``scripts/<name>.py``, for tests and benchmarks that call its functions.

    Rule scripts are not part of the package (Snakemake runs them as files), so they are loaded
    from their path, once per process.
    """
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]
