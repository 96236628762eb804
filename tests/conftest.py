"""Shared fixtures live in tests/fixtures/, one plugin module per real part.

``CAPAEP_COMPILED_TREE=.cache/compiled`` (``make test-compiled``) runs the suite against the
mypyc-compiled hot modules (deploy/mypyc/build.py) instead of the sources: the tree goes first
on ``sys.path`` here, before any ``worker`` import, and into the environment of every child
process a test starts (``PYTHONSAFEPATH``: a child's working directory must not put the
sources back in front).
"""

import os
import sys
from pathlib import Path

_COMPILED = os.environ.get("CAPAEP_COMPILED_TREE")
if _COMPILED:
    _tree = str(Path(_COMPILED).resolve())
    _root = str(Path(__file__).resolve().parent.parent)
    sys.path.insert(0, _tree)
    os.environ["PYTHONPATH"] = os.pathsep.join([_tree, _root])
    os.environ["PYTHONSAFEPATH"] = "1"

pytest_plugins = [
    "tests.fixtures.kafka",
    "tests.fixtures.sandbox",
]
