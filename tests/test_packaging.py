"""Packaging: every package folder ships, and the CLI never installs as a bare `cli` package."""

from __future__ import annotations

import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _declared_packages() -> list[str]:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return pyproject["tool"]["setuptools"]["packages"]


def test_every_package_folder_is_declared() -> None:
    on_disk = {
        ".".join(p.parent.relative_to(ROOT).parts)
        for p in (ROOT / "dime_offline").rglob("__init__.py")
    }
    on_disk.add("dime_offline_cli")
    assert on_disk == set(_declared_packages())


def test_wheel_ships_cli_under_a_project_specific_name(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(ROOT)],
        check=True,
        cwd=tmp_path,
    )
    (wheel,) = tmp_path.glob("dime_offline-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top_level == {"dime_offline", "dime_offline_cli"}
    assert "dime_offline_cli/main.py" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "dime-offline = dime_offline_cli.main:app" in zipfile.ZipFile(wheel).read(entry_points).decode()
