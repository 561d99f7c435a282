"""Copies the native library into the package when building, so that
``pip install ./bindings/python`` (after ``cargo build --release`` at the repository root)
gives a package that finds libtidemark without any environment variable.

The library is taken from ``$TIDEMARK_LIBRARY`` or ``../../target/release``. Without it the
package still installs and then looks for the library at import time (see tidemark/_ffi.py).
"""

import os
import shutil
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.dist import Distribution

HERE = Path(__file__).resolve().parent
NAME = {"darwin": "libtidemark.dylib", "win32": "tidemark.dll"}.get(sys.platform, "libtidemark.so")


def _find_library():
    env = os.environ.get("TIDEMARK_LIBRARY")
    for cand in ([Path(env)] if env else []) + [HERE.parent.parent / "target" / "release" / NAME]:
        if cand.is_file():
            return cand
    return None


class BuildPyWithLibrary(build_py):
    def run(self):
        super().run()
        lib = _find_library()
        if lib is None:
            self.announce(f"tidemark: {NAME} not found; build it with `cargo build --release`", level=3)
            return
        dest = Path(self.build_lib) / "tidemark" / "_lib"
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy2(lib, dest / NAME)
        self.announce(f"tidemark: bundled {lib}", level=2)


class PlatformDistribution(Distribution):
    """The wheel carries a native library: tag it for this platform."""

    def has_ext_modules(self):
        return _find_library() is not None


setup(cmdclass={"build_py": BuildPyWithLibrary}, distclass=PlatformDistribution)
