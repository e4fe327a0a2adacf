"""The command line: start-up stays light, job values are overridden, errors are one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from batchrun._cli import cli

ROOT = Path(__file__).resolve().parent.parent


def test_help_imports_nothing_heavy() -> None:
    # `batchrun --help` must start fast: no HTTP stack, no pyarrow, no tokenizer
    code = (
        "import sys; from batchrun._cli import cli\n"
        "try:\n    cli(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('httpx', 'aiohttp', 'pyarrow', 'tiktoken', 'genai_prices', 'anyio')"
        " if m in sys.modules]\n"
        "print('HEAVY', heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert "HEAVY []" in out.stdout, out.stdout + out.stderr
    assert "estimate" in out.stdout and "sim" in out.stdout and "status" in out.stdout


def test_sending_never_imports_pandas(tmp_path: Path) -> None:
    # pyarrow imports pandas (~35 MiB) when it converts a Python value (pa.array,
    # pa.scalar, a bare number given to a compute function): what runs before and
    # while requests are sent (a sampled pilot, in-run dedupe) builds Arrow data from
    # buffers (batchrun._arrowbuf). results.parquet, written after, may import it.
    rows = [
        {
            "custom_id": f"r{i}",
            "body": {
                "model": "m",
                "temperature": 0,
                "messages": [{"role": "user", "content": f"t{i % 7}"}],
            },
        }
        for i in range(60)
    ]
    data = tmp_path / "in.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code = (
        "import sys, batchrun\n"
        f"run = batchrun.run({str(data)!r}, {str(tmp_path / 'run')!r}, base_url='sim',\n"
        "                    quiet=True, write_parquet=False, sample=40, seed=3)\n"
        "assert run.summary['requests']['succeeded'] == 40, run.summary\n"
        "assert run.summary['reused']['run'] >= 30, run.summary\n"
        "print('PANDAS', 'pandas' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert "PANDAS False" in out.stdout, out.stdout + out.stderr[-3000:]


def test_short_help_flag_works_for_every_command() -> None:
    for args in ([], ["run"], ["status"], ["estimate"], ["sim"]):
        res = CliRunner().invoke(cli, [*args, "-h"])
        assert res.exit_code == 0, res.output
        assert "Usage:" in res.output


def test_cli_options_override_the_job_file(tmp_path: Path) -> None:
    out = tmp_path / "elsewhere"
    res = CliRunner().invoke(
        cli,
        [
            "run",
            "-j",
            str(ROOT / "jobs" / "sentiment.toml"),
            "-o",
            str(out),
            "-c",
            "3",
            "--model",
            "gpt-4o",
            "--no-parquet",
            "-q",
            "--max-attempts",
            "2",
        ],
    )
    assert res.exit_code == 0, res.output
    info = json.loads((out / "run.json").read_text())
    opts = info["options"]
    assert opts["concurrency"] == 3  # job file says 32
    assert opts["model"] == "gpt-4o"  # job file says gpt-4o-mini
    assert opts["write_parquet"] is False  # job file says true
    assert opts["max_attempts"] == 2
    assert opts["rpm"]["default"] == 500  # not given on the command line: the job file's value
    assert not (out / "results.parquet").exists()
    lines = (out / "results.jsonl").read_text().splitlines()
    bodies = [json.loads(x)["response"]["body"] for x in lines]
    assert {b["model"] for b in bodies} == {"gpt-4o"}


def test_missing_output_dir_and_input_are_one_line_errors(tmp_path: Path) -> None:
    res = CliRunner().invoke(cli, ["run", str(tmp_path / "x.jsonl")])
    assert res.exit_code == 2  # a usage error (issue 24 item 7)
    assert res.stderr.strip().splitlines()[-1] == (
        "Error: no run directory given: -o DIR (or [output] dir in the job file)"
    )
    res = CliRunner().invoke(cli, ["run", "-o", str(tmp_path / "o")])
    assert res.exit_code == 2 and "no INPUT given" in res.stderr


def test_rpm_and_tpm_for_every_model_and_for_one(tmp_path: Path) -> None:
    from batchrun._cli.options import given_settings
    from batchrun._settings import Settings

    given = given_settings({"rpm": ("500", "gpt-4.1=30"), "tpm": ("gpt-4.1=9000",)})
    cfg = Settings(input=str(tmp_path / "in.jsonl"), **given)
    assert cfg.rpm.default == 500 and cfg.tpm.default is None
    assert cfg.limits_by_model() == {"gpt-4.1": (30.0, 9000.0)}
    for bad in ("0", "x", "=5", "m=-1"):
        res = CliRunner().invoke(cli, ["run", "in.jsonl", "-o", "o", "--rpm", bad])
        assert res.exit_code == 2 and "--rpm" in res.stderr, (bad, res.stderr)


def test_a_job_file_gives_per_model_quotas_as_a_table(tmp_path: Path) -> None:
    from batchrun._jobs.jobfile import load_job

    (tmp_path / "in.jsonl").write_text("{}\n")
    job = tmp_path / "job.toml"
    job.write_text(
        '[input]\npath = "in.jsonl"\n[limits]\nrpm = { "*" = 500, "gpt-4.1" = 30 }\ntpm = 90000\n'
    )
    cfg = load_job(job).settings()
    assert cfg.rpm.default == 500 and cfg.tpm.default == 90000
    assert cfg.limits_by_model() == {"gpt-4.1": (30.0, None)}


def test_serve_takes_an_optional_port_on_the_command_line_and_in_job_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from batchrun._cli import commands
    from batchrun._jobs.jobfile import load_job

    (tmp_path / "in.jsonl").write_text('{"messages": [{"role": "user", "content": "hi"}]}\n')
    monkeypatch.chdir(tmp_path)
    seen: list[Any] = []
    monkeypatch.setattr(commands, "execute_run", lambda s: seen.append(s.serve) or 0)
    for extra, port in (([], None), (["--serve"], 0), (["--serve", "8765"], 8765)):
        res = CliRunner().invoke(cli, ["run", "in.jsonl", "-o", "o", *extra])
        assert res.exit_code == 0, res.output
        assert seen.pop() == port
    bad = CliRunner().invoke(cli, ["run", "in.jsonl", "-o", "o", "--serve", "70000"])
    assert bad.exit_code == 2 and "--serve" in bad.stderr and "65535" in bad.stderr
    job = tmp_path / "job.toml"
    job.write_text('[input]\npath = "in.jsonl"\n[output]\nserve = true\n')
    assert load_job(job).settings().serve == 0


def test_models_and_prompt_variants_from_the_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from batchrun._cli import commands

    (tmp_path / "rows.jsonl").write_text('{"text": "hi"}\n')
    monkeypatch.chdir(tmp_path)
    seen: list[Any] = []
    monkeypatch.setattr(commands, "execute_run", lambda s: seen.append(s) or 0)
    args = ["run", "rows.jsonl", "-o", "o", "-m", "a", "--model", "b",
            "--variant", "short=Label: {text}", "--variant", "long=Read this: {text}"]  # fmt: skip
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    settings = seen.pop()
    assert settings.models == ("a", "b") and settings.is_dataset
    assert settings.prompts == {
        "short": {"user": "Label: {text}"},
        "long": {"user": "Read this: {text}"},
    }
    from batchrun._input.variants import plan_variants

    assert [v.name for v in plan_variants(settings)] == ["short/a", "short/b", "long/a", "long/b"]
    for bad, word in (
        (["--variant", "nameless"], "NAME=TEMPLATE"),
        (["-m", "a", "-m", "a"], "more than once"),
    ):
        res = CliRunner().invoke(cli, ["run", "rows.jsonl", "-o", "o", *bad])
        assert res.exit_code == 2 and word in res.stderr, res.stderr
    one = CliRunner().invoke(
        cli, ["run", "rows.jsonl", "-o", "o", "-m", "a", "--variant", "x={text}"]
    )
    assert one.exit_code == 0 and seen.pop().model == "a"
