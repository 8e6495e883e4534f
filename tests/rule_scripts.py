"""Import a rule script (``scripts/<rule>.py``) as a module, for tests that call its functions.

Rule scripts are not part of the installed ``fairfer`` package (Snakemake runs them as files),
so they are loaded from their path; the package they import is the installed one.
"""

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def rule_script(name: str) -> ModuleType:
    """The module of ``scripts/<name>.py`` (loaded once per session)."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]
