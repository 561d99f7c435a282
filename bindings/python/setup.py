"""Copies the native library into the package when building, so that
``pip install ./bindings/python`` and ``pip wheel ./bindings/python`` (after
``cargo build --release`` at the repository root) give a package that finds libtidemark
without any environment variable.

The library is taken from ``$TIDEMARK_LIBRARY`` or ``../../target/release``; the bundled copy
has its debug info stripped (when ``strip`` is on PATH). A wheel with the library inside is
tagged ``py3-none-<platform>`` (e.g. ``py3-none-linux_x86_64``): it is loaded with ctypes, so it
fits every Python 3 on that platform but no other platform. Without the library the package
still installs, as a pure wheel, and then looks for the library at import time (see
tidemark/_ffi.py).
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.dist import Distribution

try:  # setuptools >= 70.1 has its own; before that it comes from the wheel package
    from setuptools.command.bdist_wheel import bdist_wheel
except ImportError:
    from wheel.bdist_wheel import bdist_wheel

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
        if sys.platform.startswith("linux") and shutil.which("strip"):
            subprocess.run(["strip", "--strip-debug", str(dest / NAME)], check=True)
        self.announce(f"tidemark: bundled {lib}", level=2)


class PlatformDistribution(Distribution):
    """The wheel carries a native library: tag it for this platform."""

    def has_ext_modules(self):
        return _find_library() is not None


class PlatformWheel(bdist_wheel):
    """Python- and ABI-independent (ctypes), platform-specific when the library is inside."""

    def get_tag(self):
        _, _, plat = super().get_tag()
        return "py3", "none", plat


setup(
    cmdclass={"build_py": BuildPyWithLibrary, "bdist_wheel": PlatformWheel},
    distclass=PlatformDistribution,
)
