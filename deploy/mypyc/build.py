"""Compile the worker's per-record modules with mypyc (the pure-Python sources stay the reference).

    make compiled                                   # -> .cache/compiled
    python deploy/mypyc/build.py --in-place         # the image's build stage

By default the package is copied to ``.cache/compiled/worker`` (with ``schemas`` linked beside
it) and compiled there, so the working tree never holds a ``.so`` that would shadow an edited
``.py``; run anything compiled with ``PYTHONPATH=.cache/compiled PYTHONSAFEPATH=1``. The copy is
rebuilt only when a source under ``worker/`` or the compiler changed (a stamp holds their hash).
``--in-place`` compiles the tree it is given (the container image's, never edited afterwards).

Exit 0 when compiled and verified (the compiled modules import, and report themselves as
compiled), 1 when the build failed (no C compiler, a mypyc error), 2 on usage errors.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DEST = ROOT / ".cache" / "compiled"

sys.path.insert(0, str(ROOT))
from worker.compiled import HOT_MODULES as _NAMES  # noqa: E402  (the list lives with the worker)


def _source(name: str) -> str:
    rel = name.replace(".", "/")
    return f"{rel}/__init__.py" if (ROOT / rel).is_dir() else f"{rel}.py"


HOT_MODULES: tuple[str, ...] = tuple(_source(n) for n in _NAMES)

_SETUP = """
import sys
from setuptools import setup
from mypyc.build import mypycify
setup(name="capillary-aep-worker-compiled", packages=[], py_modules=[],
      ext_modules=mypycify(sys.argv[3:], opt_level="3"),
      script_args=sys.argv[1:3])
"""


def _sources_hash(tree: Path) -> str:
    import mypy.version

    h = hashlib.sha256(mypy.version.__version__.encode())
    h.update(sys.version.encode())
    h.update("\0".join(HOT_MODULES).encode())
    for path in sorted((tree / "worker").rglob("*.py")):
        h.update(str(path.relative_to(tree)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def _copy_tree(dest: Path) -> None:
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    shutil.copytree(
        ROOT / "worker", dest / "worker",
        ignore=shutil.ignore_patterns("__pycache__", "*.so", "*.pyc"),
    )
    # mypy's settings (plugins, untyped third-party modules) are mypyc's too.
    shutil.copy2(ROOT / "pyproject.toml", dest / "pyproject.toml")
    # worker/schemas.py finds the JSON Schemas at <package>/../schemas.
    (dest / "schemas").symlink_to(ROOT / "schemas", target_is_directory=True)


def _compile(tree: Path) -> None:
    env = dict(os.environ, PYTHONSAFEPATH="1")
    env.pop("PYTHONPATH", None)
    subprocess.run(
        [sys.executable, "-c", _SETUP, "build_ext", "--inplace", *HOT_MODULES],
        cwd=tree, env=env, check=True,
    )
    shutil.rmtree(tree / "build", ignore_errors=True)


def verify(tree: Path) -> list[str]:
    """The hot modules that do not import as compiled from ``tree`` (empty: all good)."""
    names = list(_NAMES)
    code = (
        "import importlib, sys\n"
        "mods = [importlib.import_module(n) for n in sys.argv[1:]]\n"
        "print(' '.join(m.__name__ for m in mods if not m.__file__.endswith('.so')))\n"
    )
    env = dict(os.environ, PYTHONPATH=str(tree), PYTHONSAFEPATH="1")
    out = subprocess.run(
        [sys.executable, "-c", code, *names], cwd=tree, env=env, capture_output=True, text=True,
    )
    if out.returncode != 0:  # a compiled module that does not import: name the error
        last = (out.stderr.strip().splitlines() or ["(no output)"])[-1]
        print(f"importing the compiled modules failed: {last}", file=sys.stderr)
        return names
    return out.stdout.split()


def up_to_date(tree: Path) -> bool:
    """``tree`` holds a compiled copy of the current sources (checked by its stamp, then by
    importing every hot module from it)."""
    stamp = tree / ".compiled-stamp"
    return stamp.exists() and stamp.read_text() == _sources_hash(ROOT) and not verify(tree)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--dest", type=Path, default=DEFAULT_DEST,
                       help="copy the package here and compile the copy (default %(default)s)")
    where.add_argument("--in-place", action="store_true",
                       help="compile the package where it is (container builds only)")
    parser.add_argument("--force", action="store_true", help="rebuild even when up to date")
    args = parser.parse_args(argv)
    if args.in_place:
        return _build(args, ROOT)
    tree = args.dest.resolve()
    # Two builds of one copy at once (make bench beside make test-compiled) delete each other's
    # files: the second waits for the first, then finds the copy up to date.
    tree.parent.mkdir(parents=True, exist_ok=True)
    with open(tree.parent / f".{tree.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _build(args, tree)


def _build(args: argparse.Namespace, tree: Path) -> int:
    stamp = tree / ".compiled-stamp" if not args.in_place else None
    if stamp is not None and not args.force and up_to_date(tree):
        print(f"compiled modules up to date in {tree}")
        return 0
    if shutil.which(os.environ.get("CC", "cc")) is None and shutil.which("gcc") is None:
        print("no C compiler (cc/gcc) on PATH: cannot compile; the pure-Python worker is "
              "unaffected", file=sys.stderr)
        return 1
    try:
        if not args.in_place:
            _copy_tree(tree)
        _compile(tree)
    except subprocess.CalledProcessError as exc:
        print(f"mypyc build failed (exit {exc.returncode})", file=sys.stderr)
        return 1
    missing = verify(tree)
    if missing:
        print(f"not compiled after the build: {' '.join(missing)}", file=sys.stderr)
        return 1
    if stamp is not None:
        stamp.write_text(_sources_hash(ROOT))
    print(f"compiled {len(HOT_MODULES)} modules in {tree}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
