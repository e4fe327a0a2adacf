"""One settings validation (issue 25): every value is checked when `Settings` is built,
however it is built, and every rule between settings lives in `Settings.problems`, which
the command line, job files, Python and the Batch API and Ray drivers all ask, with the
same message for the same mistake (each setting spelled the way its user gave it)."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import batchrun
from batchrun._checks import Where
from batchrun._cli import cli
from batchrun._jobs.jobfile import load_job
from batchrun._settings import (
    Settings,
    SpelledAsGiven,
    flag_spelling,
    key_spelling,
    keyword_spelling,
)
from batchrun._values import (
    Cascade,
    Confidence,
    Endpoint,
    Evaluation,
    Prices,
    Quota,
    ResponseFormat,
)
from batchrun.errors import ConfigError, JobFileError

SCHEMA = {
    "type": "object",
    "properties": {"label": {"type": "string"}},
    "required": ["label"],
    "additionalProperties": False,
}


# -- every value is checked on construction ------------------------------------------------
def test_a_bad_value_in_python_is_a_config_error_naming_the_setting() -> None:
    with pytest.raises(ConfigError, match=r"^rpm=: must be a positive number \(got -5\)$"):
        batchrun.Settings(rpm=-5)
    with pytest.raises(ConfigError) as info:
        batchrun.Settings(rpm=-5, concurrency=-3)
    assert str(info.value) == (
        "concurrency=: must be a positive integer (got -3); "
        "rpm=: must be a positive number (got -5)"
    )


def test_every_way_of_building_settings_checks_the_values(tmp_path: Path) -> None:
    good = Settings(input="in.jsonl", concurrency=4)
    for build in (
        lambda: Settings.build(concurrency=-3),
        lambda: dataclasses.replace(good, concurrency=0),
        lambda: Settings(concurrency=True),  # a bool is not a count
    ):
        with pytest.raises(ConfigError, match="concurrency=: must be a positive integer"):
            build()
    # a value of another type than declared, or None where None means nothing
    with pytest.raises(ConfigError, match="timeout=: must be a positive number"):
        Settings(timeout=None)
    with pytest.raises(ConfigError, match="base_url=: 'api.openai.com' must start with http"):
        Settings(base_url="api.openai.com")
    with pytest.raises(ConfigError, match="prompt=: placeholder {row.text}"):
        Settings(prompt="Label {row.text}")
    # what build and the command line give is already checked, and passes again as it is
    built = Settings.build(concurrency="8", rpm="500", deadline="1h30m", model=["a", "b"])
    assert (built.concurrency, built.rpm, built.deadline, built.model) == (
        8,
        Quota(500.0),
        5400.0,
        ("a", "b"),
    )
    assert dataclasses.replace(built, quiet=True) == dataclasses.replace(built, quiet=True)


def test_a_recorded_run_is_read_back_checked_and_still_readable() -> None:
    """run.json is read back to look at a run (status, report, cancel): its values pass
    their checks again, and one an older batchrun recorded that today's checks refuse
    gives that setting's default rather than a run that cannot be opened."""
    recorded = Settings(input="in.jsonl", concurrency=4, rpm=30, prompt="{x}").public_dict()
    again = Settings.from_public_dict(recorded)
    assert (again.concurrency, again.rpm, again.prompt) == (4, Quota(30.0), "{x}")
    older = {**recorded, "concurrency": -3, "base_url": "https://u:pw@relay.example/v1"}
    read = Settings.from_public_dict(older)
    assert read.concurrency == 64 and read.rpm == Quota(30.0)
    # a credential in the URL is refused where the URL comes in, not when read back
    assert read.base_url == "https://u:pw@relay.example/v1"
    with pytest.raises(ConfigError, match="base_url=: the URL holds"):
        Settings.build(base_url="https://u:pw@relay.example/v1")


def test_typed_values_built_in_python_are_held_to_the_same_rules() -> None:
    with pytest.raises(ConfigError, match="rpm=: must be a positive number"):
        Settings(rpm=Quota(-1.0))
    with pytest.raises(ConfigError, match=r"tpm=\.gpt-4o: must be a positive number"):
        Settings(tpm=Quota(None, (("gpt-4o", 0.0),)))
    with pytest.raises(ConfigError, match="eval=.compare: must be one of exact"):
        Settings(eval=Evaluation("label", compare="exakt"))
    with pytest.raises(ConfigError, match=r"response_format=\.type: must be one of"):
        Settings(response_format=ResponseFormat("yaml"))
    with pytest.raises(ConfigError, match="a json_schema format needs a schema"):
        Settings(response_format=ResponseFormat("json_schema", "x", None))
    with pytest.raises(ConfigError, match="prices=.m"):
        Settings(prices=Prices(models={"m": {"input": -1.0, "output": 1.0}}))


def test_none_is_nothing_given_to_build_and_empty_for_tables() -> None:
    # batchrun.run(..., concurrency=None) leaves the default, as the command line does
    assert Settings.build(concurrency=None).concurrency == 64
    assert Settings.build(limit=None).limit is None
    empty = Settings(rpm=None, request=None, prompts=None)
    assert (empty.rpm, empty.request, empty.prompts) == (Quota(), {}, {})


def test_what_a_value_names_is_looked_at_once_where_it_comes_in(tmp_path: Path) -> None:
    """Files are looked for, and body fields typo-checked, where a value comes in (a job
    file, an option, a keyword), never again on each `dataclasses.replace`: a run's
    settings are replaced per run, per variant, per shard."""
    key_file = tmp_path / "key"
    key_file.write_text("k")
    with pytest.raises(ConfigError, match="api_key_file=: file not found"):
        Settings.build(api_key_file=str(tmp_path / "missing"))
    settings = Settings.build(api_key_file=str(key_file))
    key_file.unlink()
    assert dataclasses.replace(settings, concurrency=2).api_key_file == str(key_file)
    # [request] extra = { max_token = 1 } passes the typo check on purpose, and stays
    with pytest.raises(ConfigError, match="unknown field .did you mean 'max_tokens'"):
        Settings.build(request={"max_token": 1})
    typed = Settings.build(request={"extra": {"max_token": 1}})
    assert dataclasses.replace(typed, quiet=True).request == {"max_token": 1}


def test_a_template_is_compiled_once_not_on_every_replace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Compiling a Jinja template takes about a millisecond: the settings' check
    remembers a template's problems, so building settings stays cheap."""
    import batchrun._checks
    import batchrun._templating.jinja as jinja

    compiled: list[str] = []
    real = jinja.jinja_template_problems

    def counting(text: str, where: str = "template") -> list[str]:
        compiled.append(text)
        return real(text, where)

    monkeypatch.setattr(jinja, "jinja_template_problems", counting)
    batchrun._checks._template_problems.cache_clear()
    template = "{% for x in xs %}{{ x }}{% endfor %} {{ text }} " + "t" * 10
    settings = Settings(prompt=template, model="m")
    for n in range(50):
        settings = dataclasses.replace(settings, concurrency=n + 1)
    assert compiled == [template]


# typical values of every setting, as a check first gives them
TYPICAL: dict[str, Any] = {
    "input": "data/rows.jsonl",
    "id_column": "id",
    "column_types": {"score": "float", "id": "string"},
    "skip_invalid": True,
    "limit": 10,
    "sample": 5,
    "seed": 7,
    "base_url": "https://api.example.com/v1",
    "api_key_env": "MY_KEY",
    "api_key_file": "/no/such/key",  # typed: not looked for
    "auth": "raw",
    "auth_header": "api-key",
    "headers": (("X-Title", "batchrun"),),
    "max_response_bytes": 4096,
    "endpoints": {
        "eu": Endpoint(
            "eu",
            "https://eu.example.com/openai",
            api_key_env="EU_KEY",
            auth="raw",
            auth_header="api-key",
            headers=(("X-Region", "eu"),),
            rpm=Quota(300.0, (("gpt-4.1", 20.0),)),
            concurrency=16,
            weight=2.0,
            models=(("gpt-4o-mini", "mini-eu"),),
            batch=True,
        ),
        "spare": Endpoint("spare", "sim", sim_rpm=600, sim_tpm=90000, sim_fault=((503, 0.1),)),
    },
    "model": ("gpt-4o-mini", "gpt-4.1"),
    "stream": True,
    "request": {"temperature": 0, "max_tokens": 60, "stop": ["END"], "top_k": 5},
    "api": "embeddings",
    "embed_batch": 100,
    "embed_input": "{title}\n{text}",
    "system": "You label {product}.",
    "prompt": "Review: {text}",
    "messages": ({"role": "user", "content": "{text}"},),
    "prompts": {"short": {"user": "{text}"}, "long": {"system": "Be brief.", "user": "{text}"}},
    "template_engine": "jinja",
    "examples": "/no/such/examples.jsonl",
    "response_format": ResponseFormat("json_schema", "label", SCHEMA),
    "concurrency": 8,
    "rpm": Quota(500.0, (("gpt-4.1", 30.0),)),
    "tpm": Quota(200000.0),
    "max_cost": 1.5,
    "context_window": Quota(None, (("my-model", 8192.0),)),
    "quality_breaker": 0.5,
    "max_attempts": 3,
    "timeout": 60.0,
    "total_timeout": 600.0,
    "drain_timeout": 0.0,
    "retry_failed": True,
    "retry_bad_answers": True,
    "force": True,
    "out_dir": "/runs/a",
    "write_parquet": False,
    "progress_interval": 5.0,
    "quiet": True,
    "serve": 0,
    "summary_interval": 1.0,
    "commit_interval": 2.5,
    "commit_rows": 500,
    "cache": "/cache/responses.sqlite",
    "cache_policy": "all",
    "dedupe": False,
    "mode": "batch",
    "batch_max_requests": 100,
    "batch_max_bytes": 2048,
    "poll_interval": 10.0,
    "deadline": 3600.0,
    "keep_remote_files": True,
    "ray": "ray://head:10001",
    "shard_rows": 1000,
    "workers": 4,
    "eval": Evaluation("label", "json_field", "label"),
    "confidence": Confidence("logprobs", label_field="label"),
    "cascade": Cascade(("weak", "strong"), (0.7,)),
    "prices": Prices(None, {"m": {"input": 1.0, "output": 2.0}}),
    "name": "sentiment",
}


def test_every_settings_check_takes_its_typed_value_back_unchanged() -> None:
    """Settings check every value each time they are built, so a check must return a
    value it already gave as it is: walk every setting, its default and a typical value."""
    checked = {name: spec for name, spec in Settings.specs() if spec.check is not None}
    assert sorted(TYPICAL) == sorted(checked), "give every new setting a typical value"
    defaults = Settings()
    for name, spec in checked.items():
        assert spec.check is not None
        where = Where(f"{name}=", entry=False)
        for value in (getattr(defaults, name), TYPICAL[name]):
            if value is None:
                continue
            again = spec.check(value, where)
            assert again == value and type(again) is type(value), (name, value, again)
    typical = Settings(**TYPICAL)
    assert {name: getattr(typical, name) for name in TYPICAL} == TYPICAL


# -- the rules between settings: one place --------------------------------------------------
RULES = [
    (
        {"messages": [{"role": "user", "content": "{x}"}], "system": "s"},
        "messages=: cannot be combined with system= (messages hold the whole conversation)",
    ),
    (
        {"prompt": "{x}", "prompts": {"a": "{x}!"}},
        "prompts=: give the prompt (prompt=) or named variants, not both "
        "(system= is shared by the variants)",
    ),
    (
        {"response_format": "json_object"},
        "response_format=: needs a prompt (prompt=, messages= or prompts=): without one the "
        "input rows are complete request bodies (set response_format in them)",
    ),
    (
        {"eval": {"reference_column": "label"}},
        "eval=: needs a prompt (prompt=, messages= or prompts=): a plain request file has "
        "no reference column",
    ),
    ({"system": "Be brief."}, "system=: only applies to a prompt (prompt=, messages= or prompts=)"),
    (
        {"template_engine": "jinja"},
        "template_engine=: only applies to a prompt (prompt=, messages= or prompts=)",
    ),
    (
        {"prompt": "{x}", "examples": "ex.jsonl", "template_engine": "format"},
        "examples=: few-shot examples need template_engine='jinja'",
    ),
    (
        {
            "prompt": "{x}",
            "response_format": SCHEMA,
            "eval": {"reference_column": "l", "compare": "json_field", "field": "lable"},
        },
        "eval['field']: 'lable' is not a property of the response schema (properties: label)"
        " (did you mean 'label'?)",
    ),
    (
        {
            "prompt": "{x}",
            "response_format": "text",
            "eval": {"reference_column": "l", "compare": "json_field", "field": "f"},
        },
        "eval['compare']: 'json_field' needs JSON responses, not response_format='text'",
    ),
    (
        {"input": "rows.jsonl", "column_types": {"a": "int"}},
        "column_types=: rows.jsonl is not a CSV or TSV file (column types are read from its "
        "values only there)",
    ),
    (
        {"mode": "batch", "stream": True},
        "stream=True cannot be used with mode='batch' (batches do not stream)",
    ),
    (
        {"mode": "batch", "sample": 10},
        "a pilot (sample=) runs online: run it without mode='batch', look, then run the rest "
        "with mode='batch' into the same directory",
    ),
    (
        {"mode": "batch", "cache": "/c"},
        "cache= works with online runs only; run without mode='batch' to answer from the "
        "cache (or without cache=)",
    ),
    ({"deadline": "6h"}, "deadline= needs mode='batch' (a deadline bounds a Batch API run)"),
    ({"ray": True, "mode": "batch"}, "ray= runs online: it cannot be combined with mode='batch'"),
    (
        {"ray": True, "model": ["a", "b"]},
        "ray= runs one job over the whole input: compare variants (several models in model=, "
        "prompts=) without it",
    ),
    ({"ray": True, "limit": 5}, "ray= runs the whole input: run a pilot (limit=) without it"),
    (
        {"ray": "auto", "cache": "/c"},
        "cache= with ray='auto': the response cache is an SQLite file, which nodes cannot "
        "share safely over network storage; use cache= with a local cluster (ray='local') "
        "or without ray=",
    ),
]


@pytest.mark.parametrize(("given", "message"), RULES, ids=[m[:40] for _, m in RULES])
def test_each_rule_between_settings_is_one_message_of_problems(
    given: dict[str, Any], message: str
) -> None:
    settings = Settings(**{"input": "in.jsonl", **given})  # typed: files not looked for
    assert settings.problems() == [message]
    with pytest.raises(ConfigError, match=re.escape(message)):
        settings.validate()


def test_settings_without_problems_and_several_at_once() -> None:
    assert Settings.build(input="in.jsonl", prompt="{x}", response_format=SCHEMA).problems() == []
    assert Settings.build(input="in.csv", column_types={"a": "int"}, ray=True).problems() == []
    many = Settings.build(ray="auto", mode="batch", stream=True, cache="/c", limit=3)
    assert len(many.problems()) == 6


def test_a_setting_is_spelled_as_each_way_in_spells_it() -> None:
    assert [keyword_spelling("mode", "batch"), keyword_spelling("eval.field")] == [
        "mode='batch'",
        "eval['field']",
    ]
    assert [
        flag_spelling("mode", "batch"),
        flag_spelling("stream", False),
        flag_spelling("template_engine", "jinja"),
        flag_spelling("eval.field"),
        flag_spelling("input"),
        flag_spelling("concurrency"),
    ] == [
        "--batch-api",
        "--no-stream",
        "--template-engine jinja",
        "--eval-field",
        "INPUT",
        "--concurrency",
    ]
    assert [
        key_spelling("mode", "batch"),
        key_spelling("deadline"),
        key_spelling("prompt"),
        key_spelling("eval.field"),
        key_spelling("stream", True),
    ] == ['mode = "batch"', "batch.deadline", "prompt.user", "eval.field", "request.stream = true"]
    given = SpelledAsGiven({"stream": "cli", "mode": "job"}, "python")
    assert (given("stream", True), given.from_file) == ("--stream", False)
    assert (given("mode", "batch"), given("deadline"), given.from_file) == (
        'mode = "batch"',
        "deadline=",
        True,
    )


# -- everyone asks problems(), and only it ------------------------------------------------
def test_every_way_in_and_every_driver_asks_problems(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from batchrun._api import make_runner, settings_for
    from batchrun._batch.driver import BatchDriver
    from batchrun._scale.driver import RayDriver

    def sentinel(self: Settings, name: Any = None) -> list[str]:
        return ["the one rule book"]

    monkeypatch.setattr(Settings, "problems", sentinel)
    out = str(tmp_path / "run")
    (tmp_path / "job.toml").write_text('[prompt]\nuser = "{x}"\n')
    plain = Settings(input="in.jsonl", out_dir=out)
    for refused in (
        lambda: settings_for("in.jsonl", out),  # Python (batchrun.run, arun, stream)
        lambda: settings_for("in.jsonl", given={"out_dir": out}),  # the command line
        lambda: load_job(tmp_path / "job.toml"),  # a job file on its own
        lambda: make_runner(plain, None),  # an online run
        lambda: BatchDriver(dataclasses.replace(plain, mode="batch")),
        lambda: RayDriver(dataclasses.replace(plain, ray="local")),
    ):
        with pytest.raises(ConfigError, match="the one rule book"):
            refused()
    res = CliRunner().invoke(cli, ["run", "in.jsonl", "-o", out])
    assert res.exit_code == 1 and "the one rule book" in res.output


# -- the same mistake, the same message, whichever way in ------------------------------------
def _rows(tmp_path: Path) -> Path:
    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps({"custom_id": "a", "body": {"model": "m", "messages": []}}) + "\n")
    return path


def _cli_error(tmp_path: Path, *args: str) -> str:
    res = CliRunner().invoke(cli, ["run", str(_rows(tmp_path)), "-o", str(tmp_path / "o"), *args])
    assert res.exit_code != 0
    return " ".join(res.output.split()).removeprefix("Error: ")


def _job_error(tmp_path: Path, text: str) -> str:
    job = tmp_path / "job.toml"
    job.write_text(f'[input]\npath = "in.jsonl"\n{text}')
    _rows(tmp_path)
    with pytest.raises(JobFileError) as info:
        load_job(job)
    [problem] = info.value.problems
    return problem


def _python_error(tmp_path: Path, **keywords: Any) -> str:
    from batchrun._api import settings_for

    with pytest.raises(ConfigError) as info:
        settings_for(_rows(tmp_path), tmp_path / "o", **keywords)
    return str(info.value)


def _same(text: str, spellings: dict[str, str]) -> str:
    for spelled, placeholder in spellings.items():
        text = text.replace(spelled, placeholder)
    return text


def test_the_same_mistake_gets_the_same_message_through_cli_job_file_and_python(
    tmp_path: Path,
) -> None:
    cli_text = _cli_error(tmp_path, "--deadline", "6h")
    job_text = _job_error(tmp_path, '[batch]\ndeadline = "6h"\n')
    python_text = _python_error(tmp_path, deadline="6h")
    assert cli_text == "--deadline needs --batch-api (a deadline bounds a Batch API run)"
    assert job_text == 'batch.deadline needs mode = "batch" (a deadline bounds a Batch API run)'
    assert python_text == "deadline= needs mode='batch' (a deadline bounds a Batch API run)"
    same = {"--deadline": "D", "batch.deadline": "D", "deadline=": "D"}
    same |= {"--batch-api": "B", 'mode = "batch"': "B", "mode='batch'": "B"}
    assert _same(cli_text, same) == _same(job_text, same) == _same(python_text, same)

    cli_text = _cli_error(tmp_path, "--ray", "auto", "--cache", str(tmp_path / "c"))
    job_text = _job_error(tmp_path, f'[scale]\nray = "auto"\n[cache]\ndir = "{tmp_path}/c"\n')
    python_text = _python_error(tmp_path, ray="auto", cache=str(tmp_path / "c"))
    same = {"--cache": "C", "cache.dir": "C", "cache=": "C"}
    same |= {"--ray auto": "R=auto", 'scale.ray = "auto"': "R=auto", "ray='auto'": "R=auto"}
    same |= {"--ray local": "R=local", 'scale.ray = "local"': "R=local", "ray='local'": "R=local"}
    same |= {"--ray": "R", "scale.ray": "R", "ray=": "R"}
    assert "the response cache is an SQLite file" in cli_text
    assert _same(cli_text, same) == _same(job_text, same) == _same(python_text, same)


def test_a_setting_from_the_job_file_is_named_as_the_file_names_it(tmp_path: Path) -> None:
    """Options over a job file: each setting named the way its giver spelled it, the
    file's path before a message that names one of the file's keys."""
    (tmp_path / "job.toml").write_text('mode = "batch"\n')
    text = _cli_error(tmp_path, "-j", str(tmp_path / "job.toml"), "--stream")
    assert text == (
        f'{tmp_path / "job.toml"}: --stream cannot be used with mode = "batch" '
        "(batches do not stream)"
    )
    from batchrun._api import settings_for

    with pytest.raises(ConfigError) as info:
        settings_for(_rows(tmp_path), tmp_path / "o", job=tmp_path / "job.toml", stream=True)
    assert str(info.value).endswith(
        ': stream=True cannot be used with mode = "batch" (batches do not stream)'
    )


def test_a_job_file_is_judged_whole_on_its_own_naming_its_keys(tmp_path: Path) -> None:
    """The rules run on the file alone once every key reads (a rule over a key that
    failed its own check would only repeat it); a [prompt] table without a prompt is
    the file's shape, said as such."""
    assert _job_error(tmp_path, '[prompt]\nsystem = "Be brief."\n') == (
        "prompt.user: required (or named variants in [prompts.NAME])"
    )
    assert _job_error(
        tmp_path, '[prompt]\nuser = "{x}"\nexamples_file = "in.jsonl"\nengine = "format"\n'
    ) == ('prompt.examples_file: few-shot examples need prompt.engine = "jinja"')
    # a bad key: only its own problem, not the rules it would break as well
    assert _job_error(tmp_path, '[batch]\ndeadline = "soon"\n').startswith(
        "batch.deadline: must be a duration"
    )
