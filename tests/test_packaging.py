"""What ships is what is tested: the suite runs against the installed wheel.

scripts/test builds the wheel from this tree and installs it (non-editable) into .venv;
these tests fail when that is not so (an editable install, ./batchrun on sys.path, a
stale install) and when a file under batchrun/ did not make it into the wheel, as the
HTML report's assets once did not (`pip install .` shipped no report.js).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import subprocess
import sys
import tomllib
from pathlib import Path

from click.testing import CliRunner

import batchrun
from batchrun._cli import cli
from batchrun._cost.pricefile import example_price_file, parse_price_table

REPO = Path(__file__).resolve().parent.parent
SOURCE = REPO / "batchrun"
REBUILD = "run the suite with scripts/test, which builds and installs the wheel"


def _source_files() -> list[Path]:
    return sorted(
        p
        for p in SOURCE.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".pyc", ".pyo")
    )


def _installed() -> dict[str, Path]:
    """The installed distribution's files (its RECORD: the wheel's list), by the path
    inside the package."""
    dist = importlib.metadata.distribution("batchrun")
    out = {}
    for entry in dist.files or ():
        parts = Path(entry).parts
        if parts and parts[0] == "batchrun" and "__pycache__" not in parts:
            out[Path(entry).as_posix()] = Path(str(dist.locate_file(entry)))
    return out


def test_batchrun_is_imported_from_the_installed_wheel() -> None:
    here = Path(batchrun.__file__).resolve()
    assert "site-packages" in here.parts, f"batchrun imported from {here}; {REBUILD}"
    assert SOURCE not in here.parents
    direct = importlib.metadata.distribution("batchrun").read_text("direct_url.json")
    assert direct is not None and not json.loads(direct).get("dir_info", {}).get("editable"), (
        f"batchrun is an editable install; {REBUILD}"
    )


def test_every_file_under_batchrun_is_in_the_wheel_as_it_is_here() -> None:
    """Every file of the source package, data files above all, is in the installed
    wheel with the same bytes (a missing one: pyproject's package-data; a different
    one: a stale install)."""
    installed = _installed()
    missing, stale = [], []
    for path in _source_files():
        name = path.relative_to(REPO).as_posix()
        if name not in installed:
            missing.append(name)
        elif hashlib.sha256(path.read_bytes()).digest() != (
            hashlib.sha256(installed[name].read_bytes()).digest()
        ):
            stale.append(name)
    data_files = [p for p in _source_files() if p.suffix != ".py"]
    assert len(data_files) >= 7  # py.typed, 2 report assets, 3 vendor files, a price file
    assert not missing, f"not in the wheel (pyproject.toml package-data?): {missing}"
    assert not stale, f"installed copy differs from the source: {stale}; {REBUILD}"


def test_child_processes_started_from_the_repository_import_the_installed_package() -> None:
    """``python -c`` / ``python -m`` put the working directory on sys.path: from the
    repository root that would be ./batchrun, unless PYTHONSAFEPATH (set by the suite)."""
    code = "import batchrun; print(batchrun.__file__)"
    shown = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert Path(shown).resolve() == Path(batchrun.__file__).resolve()
    version = subprocess.run(
        [sys.executable, "-m", "batchrun", "--version"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    assert batchrun.__version__ in version.stdout


def test_the_html_report_works_from_the_installed_package(tmp_path: Path) -> None:
    """`Run.html_report()` reads its script, styles and uPlot from the package."""
    rows = [{"text": f"review {i}"} for i in range(3)]
    run = batchrun.run(
        rows, tmp_path / "run", model="gpt-4o-mini", prompt="{text}", base_url="sim", quiet=True
    )
    assert run.status == "complete"
    page = Path(run.html_report()).read_text(encoding="utf-8")
    for asset in ("assets/report.js", "assets/report.css", "vendor/uPlot.iife.min.js"):
        text = (SOURCE / "_report" / "html" / asset).read_text(encoding="utf-8")
        assert text.strip()[:200] in page, asset


def test_the_example_price_file_ships_and_the_messages_name_a_command_that_prints_it() -> None:
    result = CliRunner().invoke(cli, ["prices", "--example"], catch_exceptions=False)
    assert result.exit_code == 0
    assert result.output == example_price_file()
    table = tomllib.loads(result.output)
    prices = parse_price_table(table, "example")
    assert prices["deepseek-chat"].input == 0.27
    assert prices["my-org/gpt-4o-mini-ft"].batch is not None


def test_prices_names_the_price_a_model_gets_and_its_source(tmp_path: Path) -> None:
    price_file = tmp_path / "prices.toml"
    price_file.write_text(example_price_file())
    result = CliRunner().invoke(
        cli,
        ["prices", "deepseek-chat", "gpt-4o-mini", "nobody-knows-me", "--prices", str(price_file)],
        catch_exceptions=False,
    )
    assert result.exit_code == 0
    lines = {line.split()[0]: line for line in result.output.splitlines()}
    assert "$0.2700" in lines["deepseek-chat"] and "user file" in lines["deepseek-chat"]
    assert "genai-prices" in lines["gpt-4o-mini"]
    assert "no price known" in lines["nobody-knows-me"]
    bare = CliRunner().invoke(cli, ["prices"])
    assert bare.exit_code == 2 and "--example" in bare.output


def test_an_unpriced_model_under_a_cap_points_at_the_shipped_example(tmp_path: Path) -> None:
    rows = tmp_path / "requests.jsonl"
    rows.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n")
    args = ["run", str(rows), "-o", str(tmp_path / "out"), "--base-url", "sim"]
    args += ["-m", "nobody-knows-me", "--max-cost", "1"]
    result = CliRunner().invoke(cli, args, env={"BATCHRUN_DEBUG": None})
    assert result.exit_code != 0
    assert "no known price for 'nobody-knows-me'" in result.output
    assert "batchrun prices --example" in result.output
    assert "jobs/prices.example.toml" not in result.output
