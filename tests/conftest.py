"""Make the ``fairfer`` package importable from ``scripts/`` without installing it."""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "scripts"))
