"""A plain JSON Schema is a response format, everywhere (issue 30).

One schema, every spelling (a plain dict, a .json file, OpenAI's envelope, the short
form, a Pydantic model; a job-file table, ``--schema FILE``) gives the same request
bodies and the same typed results.parquet against the simulator; a value that is
none of them gets one message with the path of the problem and the accepted forms.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from pydantic import BaseModel

import batchrun
from batchrun._checks import Invalid, Where
from batchrun._cli import cli
from batchrun._jobs.jobfile import load_job
from batchrun._settings import Settings
from batchrun._values import ResponseFormat
from batchrun.errors import ConfigError, JobFileError
from batchrun.sim import SimConfig, SimThread

SCHEMA: dict[str, Any] = {
    "title": "Review",
    "type": "object",
    "properties": {
        "label": {"type": "string", "enum": ["positive", "negative", "neutral"]},
        "score": {"type": "number"},
        "stars": {"type": "integer"},
        "ok": {"type": "boolean"},
    },
    "required": ["label", "score", "stars", "ok"],
    "additionalProperties": False,
}
ROWS = [{"text": f"review number {i}"} for i in range(8)]
TYPED = {"label": "string", "score": "double", "stars": "int64", "ok": "bool"}
# what differs between two runs of the same rows whatever the format: timings
TIMINGS = {"latency_ms", "ttft_ms"}


class Review(BaseModel):
    label: Literal["positive", "negative", "neutral"]
    score: float
    stars: int
    ok: bool


def _spellings(tmp_path: Path) -> dict[str, Any]:
    schema_file = tmp_path / "review.json"
    schema_file.write_text(json.dumps(SCHEMA))
    return {
        "plain dict": SCHEMA,
        "plain .json file": str(schema_file),
        "OpenAI envelope": {
            "type": "json_schema",
            "json_schema": {"name": "Review", "schema": SCHEMA, "strict": True},
        },
        "short form": {"type": "json_schema", "name": "Review", "schema": SCHEMA},
    }


def _table_rows(path: Path) -> list[dict[str, Any]]:
    return [
        {k: v for k, v in row.items() if k not in TIMINGS}
        for row in pq.read_table(path).to_pylist()
    ]


def test_one_schema_four_spellings_give_identical_requests_and_parquet(tmp_path: Path) -> None:
    tables = {}
    bodies = {}
    with SimThread(SimConfig(record_bodies=1000)) as sim:
        for name, spelled in _spellings(tmp_path).items():
            sim.stats.bodies.clear()
            out = tmp_path / name.replace(" ", "_")
            run = batchrun.run(
                ROWS,
                out,
                model="gpt-4o-mini",
                prompt="Rate: {text}",
                response_format=spelled,
                base_url=sim.base_url,
                quiet=True,
            )
            assert run.status == "complete", (name, run.notes)
            tables[name] = pq.read_table(out / "results.parquet")
            bodies[name] = [body["response_format"] for body in sim.stats.bodies]
    first = next(iter(tables))
    schema = tables[first].schema
    for name, table in tables.items():
        assert table.schema.equals(schema, check_metadata=True), name
        assert table.drop_columns(list(TIMINGS)).to_pylist() == (
            tables[first].drop_columns(list(TIMINGS)).to_pylist()
        ), name
        assert bodies[name] == bodies[first], name
    assert {n: str(schema.field(n).type) for n in TYPED} == TYPED
    values = tables[first].to_pylist()
    assert all(row["parse_error"] is None and row["label"] is not None for row in values)
    assert bodies[first][0] == {
        "type": "json_schema",
        "json_schema": {"name": "Review", "schema": SCHEMA, "strict": True},
    }


def test_a_pydantic_model_gives_the_same_typed_columns_and_values(tmp_path: Path) -> None:
    out = {}
    for name, spelled in (("model", Review), ("schema", SCHEMA)):
        run = batchrun.run(
            ROWS,
            tmp_path / name,
            model="gpt-4o-mini",
            prompt="Rate: {text}",
            response_format=spelled,
            base_url="sim",
            quiet=True,
        )
        assert run.status == "complete"
        out[name] = pq.read_table(tmp_path / name / "results.parquet")
    typed = [*TYPED, "parse_error"]
    assert out["model"].select(typed).schema == out["schema"].select(typed).schema
    assert out["model"].select(typed).to_pylist() == out["schema"].select(typed).to_pylist()


def test_another_spelling_of_the_same_schema_resumes_and_sends_nothing(tmp_path: Path) -> None:
    spellings = _spellings(tmp_path)
    with SimThread(SimConfig()) as sim:
        common = {"model": "gpt-4o-mini", "prompt": "Rate: {text}", "base_url": sim.base_url}
        first = batchrun.run(
            ROWS, tmp_path / "run", response_format=spellings["plain dict"], quiet=True, **common
        )
        sent = sim.stats.requests
        again = batchrun.run(
            ROWS,
            tmp_path / "run",
            response_format=spellings["OpenAI envelope"],
            quiet=True,
            **common,
        )
        assert again.status == "complete" and sim.stats.requests == sent == len(ROWS)
    assert first.results().to_pylist() == again.results().to_pylist()


# -------------------------------------------------------------- job files, command line


JOB = """
name = "{name}"
[input]
path = "rows.jsonl"
[endpoint]
base_url = "sim"
[request]
model = "gpt-4o-mini"
[prompt]
user = "Rate: {{text}}"
"""


def _job(tmp_path: Path, extra: str, name: str = "reviews", file: str = "job.toml") -> Path:
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    (tmp_path / "review.json").write_text(json.dumps(SCHEMA))
    path = tmp_path / file
    # a top-level key (response_format = "x.json") goes before the first table
    top = extra if not extra.startswith("[") else ""
    path.write_text(top + JOB.format(name=name) + (extra if not top else ""))
    return path


def test_a_job_file_takes_every_spelling(tmp_path: Path) -> None:
    untitled = {k: v for k, v in SCHEMA.items() if k != "title"}
    properties = "".join(
        f"[response_format.properties.{n}]\n"
        + "".join(f"{k} = {json.dumps(v)}\n" for k, v in spec.items())
        for n, spec in SCHEMA["properties"].items()
    )
    spellings = {
        # a plain JSON Schema as the table itself
        "table": '[response_format]\ntitle = "Review"\ntype = "object"\n'
        'required = ["label", "score", "stars", "ok"]\nadditionalProperties = false\n' + properties,
        "file": 'response_format = "review.json"\n',
        "envelope": '[response_format]\ntype = "json_schema"\n'
        f'json_schema = {{ name = "Review", strict = true, schema = {_toml(SCHEMA)} }}\n',
        "short": '[response_format]\ntype = "json_schema"\nname = "Review"\n'
        'schema_file = "review.json"\n',
        "short, no type": '[response_format]\nname = "Review"\nschema_file = "review.json"\n',
    }
    formats = {
        name: load_job(_job(tmp_path, text, file=f"{i}.toml")).settings().response_format
        for i, (name, text) in enumerate(spellings.items())
    }
    want = ResponseFormat("json_schema", "Review", SCHEMA, True)
    assert formats == dict.fromkeys(spellings, want)
    # without a title, a plain schema is named after the job
    (tmp_path / "untitled.json").write_text(json.dumps(untitled))
    job = _job(tmp_path, 'response_format = "untitled.json"\n', name="my reviews (v2)")
    rf = load_job(job).settings().response_format
    assert rf is not None and rf.body()["json_schema"]["name"] == "my_reviews_v2"
    # ... and in Python, after name=, else "response"
    assert batchrun.estimate(ROWS, prompt="{text}", model="m", response_format=untitled, name="x")
    python = Settings.build(response_format=untitled, name="labels")
    assert python.response_format is not None and python.response_format.name == "labels"
    assert Settings.build(response_format=untitled).response_format == ResponseFormat(
        "json_schema", "response", untitled, True
    )


def test_a_schema_table_may_name_a_property_token_but_the_table_holds_no_key(
    tmp_path: Path,
) -> None:
    table = (
        '[response_format]\ntype = "object"\n'
        '[response_format.properties.token]\ntype = "string"\n'
        '[response_format.properties.api_key]\ntype = "string"\n'
    )
    rf = load_job(_job(tmp_path, table)).settings().response_format
    assert rf is not None and rf.schema is not None
    assert set(rf.schema["properties"]) == {"token", "api_key"}
    job = _job(tmp_path, '[response_format]\ntype = "json_object"\ntoken = "abc"\n', file="k.toml")
    with pytest.raises(JobFileError) as caught:
        load_job(job)
    assert any(
        p.startswith("response_format.token: API keys are never read")
        for p in caught.value.problems
    )


def _toml(value: Any) -> str:
    """A JSON value as a TOML inline value (enough for SCHEMA)."""
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value)


def test_schema_on_the_command_line_gives_typed_columns(tmp_path: Path) -> None:
    job = _job(tmp_path, "")
    assert Settings.spec("response_format").flags == ("--response-format", "--schema")
    for flag, out in (("--schema", "a"), ("--response-format", "b")):
        result = CliRunner().invoke(
            cli,
            ["run", "-j", str(job), "-o", str(tmp_path / out), flag, str(tmp_path / "review.json")],
            catch_exceptions=False,
        )
        assert result.exit_code == 0, result.output
    a, b = (_table_rows(tmp_path / out / "results.parquet") for out in ("a", "b"))
    assert a == b and {"label", "score", "stars", "ok", "parse_error"} <= set(a[0])
    assert all(row["parse_error"] is None for row in a)
    run_json = json.loads((tmp_path / "a" / "run.json").read_text())
    assert run_json["request_options"]["response_format"]["json_schema"]["name"] == "Review"
    # json_object and inline JSON too
    for value in ("json_object", '{"type": "json_object"}'):
        out = tmp_path / f"o{len(value)}"
        result = CliRunner().invoke(
            cli,
            ["run", "-j", str(job), "-o", str(out), "--response-format", value, "-q"],
            catch_exceptions=False,
        )
        assert result.exit_code == 0, result.output
        info = json.loads((out / "run.json").read_text())
        assert info["request_options"]["response_format"] == {"type": "json_object"}


def test_the_envelope_means_what_it_means_to_the_api() -> None:
    """``strict`` is false unless the envelope says so (the API's default); a
    description is passed on."""
    envelope = {
        "type": "json_schema",
        "json_schema": {"name": "Review", "description": "One review's rating.", "schema": SCHEMA},
    }
    from batchrun._response_formats import response_format

    rf = response_format(envelope, Where("response_format="))
    assert rf is not None and rf.body() == {
        "type": "json_schema",
        "json_schema": {
            "name": "Review",
            "description": "One review's rating.",
            "schema": SCHEMA,
            "strict": False,
        },
    }


# ------------------------------------------------------------------- one clear message


@pytest.mark.parametrize(
    ("value", "path", "problem"),
    [
        # the schema's keys beside a format type: once said "unknown key" for each
        (
            {"type": "json_schema", "properties": SCHEMA["properties"], "required": ["label"]},
            "response_format=.properties",
            "a JSON Schema keyword beside type 'json_schema': give the schema under \"schema\"",
        ),
        ({"type": "json", "properties": {}}, "response_format=.type", "must be one of"),
        ({"name": "Review"}, "response_format=.type", "required"),
        ([SCHEMA], "response_format=", "got a list"),
        ("jsonobject", "response_format=", "did you mean 'json_object'?"),
        (dict, "response_format=", "dict is a class but not a Pydantic model"),
    ],
)
def test_an_ambiguous_or_invalid_value_gets_one_message_naming_the_forms(
    value: Any, path: str, problem: str
) -> None:
    from batchrun._response_formats import ACCEPTED

    with pytest.raises(Invalid) as caught:
        Settings.spec("response_format").check(value, Where("response_format="))  # type: ignore[misc]
    [(where, message)] = caught.value.problems
    assert where == path
    assert message.startswith(problem) or problem in message
    assert message.endswith(ACCEPTED)
    for form in ("JSON Schema", '"json_schema"', "json_object", "text", "Pydantic"):
        assert form in message


def test_a_bad_schema_names_the_path_of_its_first_problem(tmp_path: Path) -> None:
    bad = {"type": "object", "properties": {"stars": {"type": "integr"}}}
    with pytest.raises(ConfigError) as python:
        batchrun.estimate(ROWS, prompt="{text}", model="m", response_format=bad)
    assert "response_format=: not a valid JSON Schema: $.properties.stars.type" in str(python.value)
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(JobFileError) as job:
        load_job(_job(tmp_path, 'response_format = "bad.json"\n'))
    [message] = job.value.problems
    assert message.startswith("response_format: not a valid JSON Schema: $.properties.stars.type")
    cli_result = CliRunner().invoke(
        cli, ["run", "-j", str(_job(tmp_path, "")), "--schema", str(tmp_path / "bad.json")]
    )
    assert cli_result.exit_code == 2
    assert "Invalid value for '--response-format' / '--schema'" in cli_result.output
    assert "$.properties.stars.type" in cli_result.output
