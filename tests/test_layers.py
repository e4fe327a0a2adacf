"""scripts/check_layers.py: the layer table holds for batchrun, and the check finds an
upward import, a circle through a deferred import, and a module with no layer, while an
import under ``if TYPE_CHECKING:`` is no finding."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHECK = ROOT / "scripts" / "check_layers.py"


def check(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(CHECK), *args], capture_output=True, text=True, check=False
    )


def test_batchrun_has_no_upward_import_and_no_cycle() -> None:
    done = check()
    assert done.returncode == 0, done.stdout
    assert done.stdout.strip().endswith("0 problems")


def copy_of_batchrun(tmp_path: Path) -> Path:
    package = tmp_path / "batchrun"
    shutil.copytree(ROOT / "batchrun", package, ignore=shutil.ignore_patterns("__pycache__"))
    return package


def test_an_upward_import_inside_a_function_is_found(tmp_path: Path) -> None:
    package = copy_of_batchrun(tmp_path)
    with (package / "_pacing" / "buckets.py").open("a") as f:
        f.write("\n\ndef _late():\n    from batchrun._report import text\n    return text\n")
    done = check("--package", str(package))
    assert done.returncode == 1
    assert (
        "upward import: batchrun._pacing.buckets (stages) imports batchrun._report.text (modes)"
        in done.stdout
    )


def test_a_circle_through_a_deferred_import_is_found(tmp_path: Path) -> None:
    package = copy_of_batchrun(tmp_path)
    with (package / "errors.py").open("a") as f:
        f.write("\n\ndef _late():\n    from batchrun import _ids\n    return _ids\n")
    with (package / "_ids.py").open("a") as f:
        f.write("\n\ndef _later():\n    from batchrun import errors\n    return errors\n")
    done = check("--package", str(package))
    assert done.returncode == 1
    assert any(
        line.startswith("cycle:") and "batchrun.errors" in line and "batchrun._ids" in line
        for line in done.stdout.splitlines()
    ), done.stdout


def test_type_checking_imports_are_no_finding_and_new_packages_need_a_layer(
    tmp_path: Path,
) -> None:
    package = copy_of_batchrun(tmp_path)
    with (package / "errors.py").open("a") as f:
        f.write(
            "\n\nfrom typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import batchrun._cli\n"
        )
    (package / "newstage").mkdir()
    (package / "newstage" / "__init__.py").write_text("")
    done = check("--package", str(package))
    assert "upward import" not in done.stdout
    assert "no layer: batchrun.newstage" in done.stdout
