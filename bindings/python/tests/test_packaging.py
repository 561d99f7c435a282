"""Finding the library, typing files, the example."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import tidemark

PKG_ROOT = Path(__file__).resolve().parent.parent  # bindings/python
REPO = PKG_ROOT.parent.parent


def _run(code: str, env_update: dict, cwd: Path = PKG_ROOT) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("TIDEMARK_LIBRARY", None)
    env.update(env_update)
    env["PYTHONPATH"] = str(PKG_ROOT)
    return subprocess.run([sys.executable, "-c", code], env=env, cwd=cwd, capture_output=True, text=True, timeout=60)


def test_missing_library_is_an_import_error_saying_how_to_build() -> None:
    r = _run("import tidemark", {"TIDEMARK_LIBRARY": "/nonexistent/libtidemark.so"})
    assert r.returncode != 0
    assert "ImportError" in r.stderr
    assert "cargo build --release" in r.stderr and "TIDEMARK_LIBRARY" in r.stderr


def test_found_without_environment_variable_from_a_checkout() -> None:
    checkout_lib = REPO / "target" / "release" / "libtidemark.so"
    if not checkout_lib.exists():  # pragma: no cover
        import pytest

        pytest.skip("no target/release/libtidemark.so in this checkout")
    r = _run("import tidemark; print(tidemark.library_path)", {}, cwd=Path("/"))
    assert r.returncode == 0, r.stderr
    assert Path(r.stdout.strip()).resolve() == checkout_lib.resolve()


def test_environment_variable_wins() -> None:
    r = _run("import tidemark; print(tidemark.library_path)", {"TIDEMARK_LIBRARY": tidemark.library_path})
    assert r.returncode == 0 and r.stdout.strip() == tidemark.library_path


def test_typed_package() -> None:
    assert (PKG_ROOT / "tidemark" / "py.typed").exists()
    assert tidemark.Store.put.__annotations__


def test_quickstart_example_runs() -> None:
    example = REPO / "examples" / "python" / "quickstart.py"
    env = dict(os.environ)
    env["PYTHONPATH"] = str(PKG_ROOT)
    r = subprocess.run([sys.executable, str(example)], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "CompactedError" in r.stdout


def test_public_api_is_documented() -> None:
    for name in tidemark.__all__:
        obj = getattr(tidemark, name)
        if callable(obj) and not isinstance(obj, int):
            assert obj.__doc__, name
    for cls in (tidemark.Store, tidemark.Batch, tidemark.Watch, tidemark.WatchHandle, tidemark.AsyncWatch):
        for attr, member in vars(cls).items():
            if not attr.startswith("_") and callable(member):
                assert member.__doc__, f"{cls.__name__}.{attr}"


def test_build_bundles_the_library(tmp_path: Path) -> None:
    """The setup.py hook `pip install` runs copies libtidemark into the package's _lib/."""
    import pytest

    pytest.importorskip("setuptools")
    env = dict(os.environ)
    env["TIDEMARK_LIBRARY"] = tidemark.library_path
    r = subprocess.run(
        [sys.executable, "setup.py", "-q", "build_py", "--build-lib", str(tmp_path / "lib")],
        cwd=PKG_ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert r.returncode == 0, r.stderr
    bundled = tmp_path / "lib" / "tidemark" / "_lib" / Path(tidemark.library_path).name
    assert bundled.exists()
    assert (tmp_path / "lib" / "tidemark" / "py.typed").exists()
    # the bundled copy is found when there is neither a variable nor a checkout around it
    r2 = subprocess.run(
        [sys.executable, "-c", "import tidemark; print(tidemark.library_path)"],
        env={**{k: v for k, v in env.items() if k != "TIDEMARK_LIBRARY"}, "PYTHONPATH": str(tmp_path / "lib")},
        cwd="/", capture_output=True, text=True, timeout=60,
    )
    assert r2.returncode == 0, r2.stderr
    assert Path(r2.stdout.strip()) == bundled


def test_wheel_carries_the_library_and_installs_into_a_fresh_venv(tmp_path: Path) -> None:
    """`pip wheel ./bindings/python` from the checkout, then that wheel alone in a new venv."""
    import sysconfig
    import zipfile

    env = {k: v for k, v in os.environ.items() if k not in ("TIDEMARK_LIBRARY", "PYTHONPATH")}
    # Offline: setuptools and wheel come from this interpreter (tools/deps.sh installs them).
    r = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
         "-q", "-w", str(tmp_path / "dist"), str(PKG_ROOT)],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    (whl,) = (tmp_path / "dist").glob("*.whl")
    platform = sysconfig.get_platform().replace("-", "_").replace(".", "_")
    assert whl.name == f"tidemark-{tidemark.__version__}-py3-none-{platform}.whl"
    lib_member = f"tidemark/_lib/{Path(tidemark.library_path).name}"
    with zipfile.ZipFile(whl) as z:
        assert lib_member in z.namelist()
        wheel_meta = z.read(f"tidemark-{tidemark.__version__}.dist-info/WHEEL").decode()
        z.extract(lib_member, tmp_path / "unzipped")
    assert "Root-Is-Purelib: false" in wheel_meta
    assert f"Tag: py3-none-{platform}" in wheel_meta
    if sys.platform.startswith("linux"):  # the bundled copy is stripped of its debug info
        sections = subprocess.run(["readelf", "-S", str(tmp_path / "unzipped" / lib_member)],
                                  capture_output=True, text=True, check=True).stdout
        assert ".text" in sections and ".debug_info" not in sections

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    py = str(venv / "bin" / "python")
    r = subprocess.run(
        [sys.executable, "-m", "pip", "--python", py, "install", "--no-index", "--no-deps", "-q", str(whl)],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    # Outside the checkout, no variable: the library found is the wheel's copy in the venv.
    r = subprocess.run([py, "-c", "import tidemark; print(tidemark.library_path)"],
                       env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert venv.resolve() in Path(r.stdout.strip()).resolve().parents
    r = subprocess.run([py, str(REPO / "examples" / "python" / "quickstart.py")],
                       env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "CompactedError" in r.stdout
