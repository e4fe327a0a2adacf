"""Every job-file setting has a command-line spelling, derived from its declaration, and
options override (or extend) the job file, from the command line and from Python alike
(issue 24, item 2)."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from batchrun._cli import cli, run_command
from batchrun._settings import Settings
from batchrun._values import Cascade, Confidence, Evaluation

ROWS = [
    {"id": "r1", "text": "great value", "label": "positive"},
    {"id": "r2", "text": "broke in a day", "label": "negative"},
    {"id": "r3", "text": "it is a chair", "label": "neutral"},
]


def write_rows(folder: Path, name: str = "data.jsonl") -> Path:
    path = folder / name
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return path


def option_names(command: click.Command) -> list[str]:
    names: list[str] = []
    for param in command.params:
        if isinstance(param, click.Option):
            names += [*param.opts, *param.secondary_opts]
    return names


# -- every key has a spelling ---------------------------------------------------------------
def test_every_job_file_key_has_a_command_line_spelling() -> None:
    table_keys = {
        "eval": {f.name for f in fields(Evaluation)},
        "confidence": {f.name for f in fields(Confidence)},
        "cascade": {f.name for f in fields(Cascade)},
    }
    missing = []
    for name, spec in Settings.specs():
        if spec.section is None:
            continue
        if spec.argument or spec.flags:
            continue
        if spec.key == "*" and spec.parts:
            keys = {p.key for p in spec.parts}
            if "*" in keys or keys >= table_keys.get(name, {"?"}):
                continue
        missing.append(f"[{spec.section}] {spec.key or name}")
    assert missing == []
    assert dict(Settings.specs())["input"].argument == "INPUT"
    # and no two options share a flag
    names = option_names(run_command)
    assert sorted({n for n in names if names.count(n) > 1}) == []


def test_a_setting_that_is_one_key_gets_its_flag_from_its_name() -> None:
    specs = dict(Settings.specs())
    assert specs["prompt"].flags == ("--prompt",)
    assert specs["system"].flags == ("--system",)
    assert specs["id_column"].flags == ("--id-column",)
    assert specs["summary_interval"].flags == ()  # not a job-file key: no option
    eval_flags = [specs["eval"].part_flags(p)[0] for p in specs["eval"].parts]
    assert eval_flags[:3] == ["--eval-reference", "--eval-compare", "--eval-field"]
    body_flags = {p.key: specs["request"].part_flags(p)[0] for p in specs["request"].parts}
    assert body_flags["temperature"] == "--temperature"
    assert body_flags["max_tokens"] == "--max-tokens"
    assert body_flags["seed"] == "--request-seed"  # --seed is the sample's


def test_help_names_numbers_and_files_not_text() -> None:
    for args in (["run", "-h"], ["estimate", "-h"]):
        res = CliRunner().invoke(cli, args, terminal_width=200)
        assert res.exit_code == 0, res.output
        lines = [line.strip() for line in res.output.splitlines() if line.strip().startswith("-")]
        with_text = [line.split("  ")[0] for line in lines if " TEXT" in line.split("  ")[0]]
        assert with_text == ["--stop TEXT"], with_text  # a stop sequence is text
    res = CliRunner().invoke(cli, ["run", "-h"], terminal_width=200)
    for shown in (
        "-c, --concurrency N",
        "--max-tokens N",
        "--temperature FLOAT",
        "--timeout FLOAT",
        "--max-cost FLOAT",
        "--prompt TEMPLATE",
        "--id-column COLUMN",
        "--eval-reference COLUMN",
        "--eval-compare [exact|json_field|number]",
        "--prices FILE",
        "-o, --out DIR",
        "--base-url URL",
        "-j, --job FILE",
    ):
        assert shown in res.output, shown


# -- a dataset labelled from the command line alone ------------------------------------------
def label_from_the_command_line(folder: Path, data: str) -> None:
    """The issue's command against a local server, no job file: every row sent once
    through the template, with the id column as custom_id and the body options."""
    from batchrun.sim import SimConfig, SimThread

    with SimThread(SimConfig()) as sim:
        res = CliRunner().invoke(
            cli,
            ["run", data, "-o", "runs/x", "--model", "gpt-4o-mini",
             "--prompt", "Label: {text}", "--id-column", "id", "--max-tokens", "5",
             "--base-url", sim.base_url, "-q"],
        )  # fmt: skip
        bodies = list(sim.stats.bodies)
    assert res.exit_code == 0, res.output
    assert sorted(b["messages"][0]["content"] for b in bodies) == [
        "Label: broke in a day",
        "Label: great value",
        "Label: it is a chair",
    ]
    assert [(b["model"], b["max_tokens"]) for b in bodies] == [("gpt-4o-mini", 5)] * 3
    lines = [json.loads(x) for x in (folder / "runs/x/results.jsonl").read_text().splitlines()]
    assert sorted(x["custom_id"] for x in lines) == ["r1", "r2", "r3"]
    assert (folder / "runs/x/results.parquet").exists()


def test_a_dataset_is_labelled_from_the_command_line_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    write_rows(tmp_path)
    label_from_the_command_line(tmp_path, "data.jsonl")


def test_a_csv_dataset_is_labelled_from_the_command_line_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    rows = "".join(f"{r['id']},{r['text']}\n" for r in ROWS)
    (tmp_path / "data.csv").write_text("id,text\n" + rows)
    label_from_the_command_line(tmp_path, "data.csv")


def test_a_job_file_without_input_runs_the_input_named_on_the_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    write_rows(tmp_path)
    (tmp_path / "job.toml").write_text(
        '[endpoint]\nbase_url = "sim"\n[request]\nmodel = "gpt-4o-mini"\nmax_tokens = 7\n'
        '[prompt]\nuser = "Label: {text}"\n[input]\nid_column = "id"\n'
    )
    res = CliRunner().invoke(cli, ["run", "data.jsonl", "-j", "job.toml", "-o", "out", "-q"])
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "out/summary.json").read_text())
    assert summary["requests"]["succeeded"] == 3
    none = CliRunner().invoke(cli, ["run", "-j", "job.toml", "-o", "out2"])
    assert none.exit_code == 2  # a usage error
    assert "no INPUT given" in none.stderr and "[input] path in" in none.stderr


# -- options over the job file ----------------------------------------------------------------
JOB = """
name = "labels"
[input]
path = "data.jsonl"
id_column = "id"
[endpoint]
base_url = "sim"
[request]
model = "gpt-4o-mini"
temperature = 0
max_tokens = 80
[prompt]
system = "You label reviews."
user = "Review: {text}"
[eval]
reference_column = "label"
"""


@pytest.fixture
def job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[Settings]:
    """The settings `batchrun run` would run (execute_run recorded, not called)."""
    from batchrun._cli import commands

    monkeypatch.chdir(tmp_path)
    write_rows(tmp_path)
    (tmp_path / "job.toml").write_text(JOB)
    (tmp_path / "compare.toml").write_text(
        JOB.replace('user = "Review: {text}"\n', "")
        + '[prompts.terse]\nuser = "{text}"\n[prompts.long]\nuser = "Read: {text}"\n'
    )
    seen: list[Settings] = []
    monkeypatch.setattr(commands, "execute_run", lambda s: seen.append(s) or 0)
    return seen


def run_args(*args: str) -> None:
    res = CliRunner().invoke(cli, ["run", "-o", "o", *args])
    assert res.exit_code == 0, res.output


def test_body_options_override_the_job_files_request_key_by_key(job: list[Settings]) -> None:
    run_args("-j", "job.toml", "--temperature", "0.7", "--body", "top_k=5", "--stop", "END")
    assert job.pop().request == {"temperature": 0.7, "max_tokens": 80, "top_k": 5, "stop": "END"}
    # a field that says the same as the file's replaces it (OpenAI refuses both)
    run_args("-j", "job.toml", "--max-completion-tokens", "40", "--request-seed", "3")
    assert job.pop().request == {"temperature": 0, "max_completion_tokens": 40, "seed": 3}
    # numbers as written: `--temperature 1` sends 1 as `temperature = 1` does
    run_args("-j", "job.toml", "--temperature", "1", "--stop", "a", "--stop", "b")
    settings = job.pop()
    assert settings.request["temperature"] == 1 and type(settings.request["temperature"]) is int
    assert settings.request["stop"] == ["a", "b"]


def test_prompt_options_override_the_job_file(job: list[Settings]) -> None:
    run_args("-j", "job.toml", "--prompt", "Text: {text}")
    settings = job.pop()
    assert settings.prompt == "Text: {text}" and settings.system == "You label reviews."
    run_args("-j", "job.toml", "--system", "Be terse.")
    settings = job.pop()
    assert settings.system == "Be terse." and settings.prompt == "Review: {text}"
    messages = json.dumps([{"role": "user", "content": "M: {text}"}])
    run_args("-j", "job.toml", "--messages", messages)
    settings = job.pop()
    assert settings.template_messages() == ({"role": "user", "content": "M: {text}"},)
    Path("messages.json").write_text(messages)
    run_args("-j", "job.toml", "--messages", "messages.json")
    assert job.pop().messages == ({"role": "user", "content": "M: {text}"},)
    # a prompt given over a job of variants is the one prompt
    run_args("-j", "compare.toml", "--prompt", "Only: {text}")
    settings = job.pop()
    assert settings.prompts == {} and settings.prompt == "Only: {text}"


def test_a_variant_adds_to_the_job_files_prompts(job: list[Settings]) -> None:
    from batchrun._input.variants import plan_variants

    run_args("-j", "compare.toml", "--variant", "short=Say: {text}")
    settings = job.pop()
    assert list(settings.prompts) == ["terse", "long", "short"]
    assert [v.name for v in plan_variants(settings)] == ["terse", "long", "short"]
    run_args("-j", "compare.toml", "--variant", "terse=Now: {text}")  # same name: replaced
    assert job.pop().prompts["terse"] == {"user": "Now: {text}"}
    # over a job's one prompt: a comparison with it
    run_args("-j", "job.toml", "--variant", "short=Say: {text}")
    settings = job.pop()
    assert settings.prompt is None and settings.system == "You label reviews."
    assert settings.prompts == {
        "default": {"user": "Review: {text}"},
        "short": {"user": "Say: {text}"},
    }


def test_eval_options_override_the_job_files_eval_key_by_key(job: list[Settings]) -> None:
    run_args("-j", "job.toml", "--eval-compare", "json_field", "--eval-field", "label")
    evaluation = job.pop().eval
    assert evaluation is not None
    assert (evaluation.reference_column, evaluation.compare, evaluation.field) == (
        "label",
        "json_field",
        "label",
    )
    run_args("data.jsonl", "--prompt", "{text}", "-m", "m", "--eval-reference", "label",
             "--no-eval-interval")  # fmt: skip
    evaluation = job.pop().eval
    assert evaluation == Evaluation("label", interval=False)


def test_bad_option_values_name_the_option(job: list[Settings]) -> None:
    cases = [
        (["--temperature", "3"], 2, "'--temperature': must be a number from 0 to 2"),
        (["--max-tokens", "0"], 2, "'--max-tokens': must be a positive integer"),
        (["--body", "temprature=1"], 2, "did you mean 'temperature'?"),
        (["--body", "oops"], 2, "must be FIELD=VALUE"),
        (["--eval-compare", "fuzzy"], 2, "'--eval-compare'"),
        (["--messages", "[{"], 2, "is not valid JSON"),
        (["--eval-field", "f"], 1, "eval.reference_column (--eval-reference): required"),
    ]
    for extra, code, message in cases:
        res = CliRunner().invoke(
            cli, ["run", "data.jsonl", "-o", "o", "--prompt", "{text}", *extra]
        )
        assert res.exit_code == code and message in res.stderr, (extra, res.stderr)
    assert job == []


def test_python_keywords_override_a_job_file_the_same_way(tmp_path: Path) -> None:
    from batchrun._api import settings_for

    write_rows(tmp_path)
    (tmp_path / "job.toml").write_text(JOB)
    settings = settings_for(job=tmp_path / "job.toml", temperature=0.5, prompts={"b": "B {text}"})
    assert settings.request == {"temperature": 0.5, "max_tokens": 80}
    assert settings.prompts == {"default": {"user": "Review: {text}"}, "b": {"user": "B {text}"}}
    # a whole table given in Python replaces the file's
    other = settings_for(job=tmp_path / "job.toml", eval={"reference_column": "id"})
    assert other.eval == Evaluation("id")


def test_estimate_takes_the_options_that_shape_the_requests(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    write_rows(tmp_path)
    res = CliRunner().invoke(
        cli,
        ["estimate", "data.jsonl", "--model", "gpt-4o-mini", "--prompt", "Label: {text}",
         "--max-tokens", "5", "--id-column", "id", "--json"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["requests"] == 3 and report["completion_ceiling_tokens"] == 15, report


def test_a_body_option_keeps_the_job_files_extra_fields_as_written(
    job: list[Settings], tmp_path: Path
) -> None:
    # [request] extra bypasses the typo check on purpose; an option over the file does
    # not check the file's fields again
    text = JOB.replace("max_tokens = 80\n", "max_tokens = 80\nextra = { max_token = 1 }\n")
    (tmp_path / "job.toml").write_text(text)
    run_args("-j", "job.toml", "--temperature", "0.2")
    assert job.pop().request == {"temperature": 0.2, "max_tokens": 80, "max_token": 1}
