"""The wheel and sdist that `python -m build` makes, installed into a fresh virtual environment:
one `lsr` package (no top-level `index`, `service` or `eval`), `lsr --help`, and the README's
Python example."""

from __future__ import annotations

import re
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_wheel_installs_one_namespace_and_runs_the_readme_example(tmp_path):
    dist = tmp_path / "dist"
    # --no-isolation: the build backend (setuptools) comes from this environment, not the network
    built = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist), str(ROOT)],
                           capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr[-3000:]
    wheel = next(dist.glob("lsr_engine-*.whl"))
    sdist = next(dist.glob("lsr_engine-*.tar.gz"))
    with zipfile.ZipFile(wheel) as archive:
        top = {name.split("/")[0] for name in archive.namelist()}
        names = set(archive.namelist())
    assert {t for t in top if not t.endswith(".dist-info")} == {"lsr"}
    assert {"lsr/index/search.py", "lsr/service/page/index.html", "lsr/eval/cli.py", "lsr/api.py"} <= names
    assert not any(name.startswith("lsr/eval/results/") for name in names)
    with tarfile.open(sdist) as archive:
        assert any(name.endswith("/index/search.py") for name in archive.getnames())

    # A fresh environment: the wheel without dependencies, which come from this environment's
    # site-packages through a .pth line (a directory on the path, its own .pth files unread, so
    # this checkout's editable install stays out).
    env_dir = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(env_dir)], check=True, timeout=300)
    python = env_dir / "bin" / "python"
    site = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    install = subprocess.run([python, "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)],
                             capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr[-3000:]

    help_text = subprocess.run([env_dir / "bin" / "lsr", "--help"], capture_output=True, text=True, timeout=300,
                               cwd=tmp_path)
    assert help_text.returncode == 0, help_text.stderr
    assert all(command in help_text.stdout for command in ("index", "search", "eval", "serve", "train"))
    where = subprocess.run([python, "-c", "import importlib.util as u, lsr, lsr.index\n"
                                          "print(lsr.__file__, [u.find_spec(n) is None for n in ('index', 'service', 'eval')])"],
                           capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert where.returncode == 0, where.stderr
    assert str(site) in where.stdout and "[True, True, True]" in where.stdout  # the wheel's lsr; no top-level ones

    example = re.search(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S).group(1)
    ran = subprocess.run([python, "-c", example], capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert "Hit(id='d1'" in ran.stdout
