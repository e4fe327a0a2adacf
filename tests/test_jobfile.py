from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from batchrun._jobs.jobfile import load_job, merge
from batchrun._settings import Settings
from batchrun._values import Evaluation, Quota, ResponseFormat
from batchrun.errors import ConfigError, JobFileError

JOBS = Path(__file__).resolve().parent.parent / "jobs"
SCHEMA = {
    "type": "object",
    "properties": {"label": {"type": "string", "enum": ["a", "b"]}},
    "required": ["label"],
}


@pytest.fixture
def jobdir(tmp_path: Path) -> Path:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "rows.jsonl").write_text('{"id": 1, "text": "hi"}\n')
    (tmp_path / "schema.json").write_text(json.dumps(SCHEMA))
    return tmp_path


def write(directory: Path, text: str, name: str = "job.toml") -> Path:
    path = directory / name
    path.write_text(text)
    return path


def problems_of(path: Path) -> list[str]:
    with pytest.raises(JobFileError) as info:
        load_job(path)
    err = info.value
    assert isinstance(err, ConfigError)
    assert str(err).splitlines() == [f"{path}: {p}" for p in err.problems]
    return err.problems


def test_minimal_job_resolves_paths_relative_to_the_file(jobdir: Path, monkeypatch) -> None:
    path = write(jobdir, '[input]\npath = "data/rows.jsonl"\n[output]\ndir = "../out/run1"\n')
    monkeypatch.chdir("/")
    job = load_job(path)
    assert job.name == "job"
    assert job.values == {
        "input": str(jobdir / "data" / "rows.jsonl"),
        "out_dir": str((jobdir.parent / "out" / "run1").resolve()),
    }
    settings = job.settings()
    assert settings.template_messages() is None and not settings.is_dataset


def test_full_job_gives_settings(jobdir: Path) -> None:
    (jobdir / "prices.toml").write_text("")
    path = write(
        jobdir,
        """
name = "labels"
[input]
path = "data/rows.jsonl"
id_column = "id"
[endpoint]
base_url = "https://llm.example.test/v1/"
api_key_env = "MY_KEY"
auth = "raw"
auth_header = "api-key"
headers = { "X-Title" = "batchrun tests" }
[request]
model = "m-1"
temperature = 0.2
max_tokens = 50
stream = true
custom_field = "passes through"
extra = { top_k = 3 }
[prompt]
system = "Label."
user = "Text: {text}"
[response_format]
type = "json_schema"
name = "labels"
schema_file = "schema.json"
[limits]
concurrency = 4
rpm = 60
tpm = 10000
max_cost = 2
[retry]
max_attempts = 3
timeout = 10
total_timeout = 100
[output]
dir = "runs/x"
parquet = false
[eval]
reference_column = "label"
compare = "json_field"
field = "label"
[prices]
file = "prices.toml"
""",
    )
    job = load_job(path)
    assert job.name == "labels"
    assert job.values == {
        "input": str(jobdir / "data" / "rows.jsonl"),
        "id_column": "id",
        "out_dir": str(jobdir / "runs" / "x"),
        "base_url": "https://llm.example.test/v1",
        "api_key_env": "MY_KEY",
        "auth": "raw",
        "auth_header": "api-key",
        "headers": (("X-Title", "batchrun tests"),),
        "model": "m-1",
        "stream": True,
        "request": {
            "temperature": 0.2,
            "max_tokens": 50,
            "custom_field": "passes through",
            "top_k": 3,
        },
        "system": "Label.",
        "prompt": "Text: {text}",
        "response_format": ResponseFormat("json_schema", "labels", SCHEMA, True),
        "concurrency": 4,
        "rpm": Quota(60.0),
        "tpm": Quota(10000.0),
        "max_cost": 2.0,
        "max_attempts": 3,
        "timeout": 10.0,
        "total_timeout": 100.0,
        "write_parquet": False,
        "eval": Evaluation("label", "json_field", "label", True),
        "prices": str(jobdir / "prices.toml"),
    }
    settings = job.settings()
    assert settings.template_messages() == (
        {"role": "system", "content": "Label."},
        {"role": "user", "content": "Text: {text}"},
    )
    assert settings.response_format is not None
    assert settings.response_format.body() == {
        "type": "json_schema",
        "json_schema": {"name": "labels", "schema": SCHEMA, "strict": True},
    }
    json.dumps(settings.public_dict())  # everything must be JSON for run.json


def test_inline_schema_and_messages_template(jobdir: Path) -> None:
    path = write(
        jobdir,
        """
[input]
path = "data/rows.jsonl"
[prompt]
messages = [{ role = "system", content = "Be brief." }, { role = "user", content = "{text}" }]
[response_format]
type = "json_schema"
schema = { type = "object", properties = { label = { type = "string" } } }
strict = false
""",
    )
    settings = load_job(path).settings()
    from batchrun._templating.text import PromptTemplate

    messages = settings.template_messages()
    assert messages is not None and PromptTemplate(messages).placeholders == ("text",)
    assert settings.response_format is not None
    assert settings.response_format.body() == {
        "type": "json_schema",
        "json_schema": {
            "name": "response",
            "schema": {"type": "object", "properties": {"label": {"type": "string"}}},
            "strict": False,
        },
    }


def test_every_problem_is_reported_at_once_with_key_paths(jobdir: Path) -> None:
    path = write(
        jobdir,
        """
[input]
path = "data/missing.jsonl"
[endpoint]
base_url = "api.openai.com/v1"
auth = "bearr"
[request]
temperature = 5
max_tokens = -1
[prompt]
user = "Hi {user.name}"
[response_format]
type = "json_schema"
schema_file = "nope.json"
[limits]
concurrency = -4
rpm = 0
tpm = "lots"
[retry]
max_attemps = 3
timeout = -1
[output]
parquet = "yes"
[eval]
compare = "json_field"
""",
    )
    problems = problems_of(path)
    expected = [
        "input.path: file not found: data/missing.jsonl",
        "endpoint.base_url: 'api.openai.com/v1' must start with http:// or https:// "
        "(or be \"sim\"); did you mean 'https://api.openai.com/v1'?",
        "endpoint.auth: must be one of bearer, raw, none (got 'bearr') (did you mean 'bearer'?)",
        "request.temperature: must be a number from 0 to 2 (got 5)",
        "request.max_tokens: must be a positive integer (got -1)",
        "prompt.user: placeholder {user.name}: only plain column names are allowed",
        "response_format.schema_file: file not found: nope.json",
        "limits.concurrency: must be a positive integer (got -4)",
        "limits.rpm: must be a positive number (got 0)",
        "limits.tpm: must be a positive number (got 'lots')",
        "retry.max_attemps: unknown key (did you mean 'max_attempts'?)",
        "retry.timeout: must be a positive number (got -1)",
        "output.parquet: must be true or false (got 'yes')",
        "eval.reference_column: required",
        "eval.field: required",
    ]
    for message in expected:
        assert any(p.startswith(message) for p in problems), (message, problems)
    assert len(problems) == len(expected)


def test_unknown_sections_and_keys_suggest_names(jobdir: Path) -> None:
    path = write(
        jobdir,
        """
concurrency = 3
[input]
path = "data/rows.jsonl"
[limit]
rpm = 5
[endpoint]
baseurl = "sim"
[request]
max_token = 5
temprature = 0
[prompt]
user = "{text}"
sytem = "x"
""",
    )
    problems = problems_of(path)
    assert "concurrency: unknown section or key (it belongs in [limits])" in problems
    assert "limit: unknown section or key (did you mean 'limits'?)" in problems
    assert "endpoint.baseurl: unknown key (did you mean 'base_url'?)" in problems
    assert "prompt.sytem: unknown key (did you mean 'system'?)" in problems
    assert any(
        p.startswith("request.max_token: unknown field (did you mean 'max_tokens'?")
        for p in problems
    )
    assert any(
        p.startswith("request.temprature: unknown field (did you mean 'temperature'?")
        for p in problems
    )
    assert len(problems) == 6


@pytest.mark.parametrize(
    ("snippet", "where"),
    [
        ('[endpoint]\napi_key = "abc"', "endpoint.api_key"),
        ('api_key = "abc"', "api_key"),
        ('[request]\nuser = "sk-proj-abcdefghijklmnop1234567890"', "request.user"),
        ('[endpoint]\nheaders = { "X-Api-Key" = "abc" }', "endpoint.headers.X-Api-Key"),
        (
            '[endpoint]\nheaders = { Authorization = "Bearer abcdefghijklmnopqrstuvwxyz" }',
            "endpoint.headers.Authorization",
        ),
        ('[endpoint]\napi_key_env = "sk-abcdefghijklmnopqrstuvwxyz012345"', "endpoint.api_key_env"),
    ],
)
def test_literal_keys_are_refused(jobdir: Path, snippet: str, where: str) -> None:
    # top-level keys must come before the first table, so the snippet goes first
    path = write(jobdir, f'{snippet}\n[input]\npath = "data/rows.jsonl"\n')
    problems = problems_of(path)
    hits = [p for p in problems if p.startswith(f"{where}:")]
    assert hits, problems
    assert all("api_key_env" in p for p in hits)
    # the secret itself is never echoed back
    assert not any("abcdefghijklmnop" in p for p in problems)


def test_schema_property_named_key_is_not_a_secret(jobdir: Path) -> None:
    path = write(
        jobdir,
        """
[input]
path = "data/rows.jsonl"
[prompt]
user = "{text}"
[response_format]
type = "json_schema"
schema = { type = "object", properties = { key = { type = "string" }, token = {} } }
""",
    )
    assert load_job(path).settings().schema is not None


def test_api_key_file_is_resolved_and_must_exist(jobdir: Path) -> None:
    (jobdir / "key.txt").write_text("not a real key\n")
    ok = write(jobdir, '[input]\npath = "data/rows.jsonl"\n[endpoint]\napi_key_file = "key.txt"\n')
    assert load_job(ok).values["api_key_file"] == str(jobdir / "key.txt")
    bad = write(
        jobdir,
        '[input]\npath = "data/rows.jsonl"\n[endpoint]\napi_key_file = "gone.txt"\n',
        "b.toml",
    )
    assert problems_of(bad) == [
        f"endpoint.api_key_file: file not found: gone.txt (relative to {jobdir})"
    ]


def test_schema_file_must_be_json_object_schema(jobdir: Path) -> None:
    (jobdir / "broken.json").write_text("{not json")
    (jobdir / "list.json").write_text("[1]")
    base = (
        '[input]\npath = "data/rows.jsonl"\n[prompt]\nuser = "{text}"\n'
        '[response_format]\ntype = "json_schema"\n'
    )
    broken = write(jobdir, base + 'schema_file = "broken.json"\n', "a.toml")
    assert problems_of(broken)[0].startswith(
        "response_format.schema_file: broken.json is not valid JSON"
    )
    listed = write(jobdir, base + 'schema_file = "list.json"\n', "b.toml")
    assert problems_of(listed) == [
        "response_format.schema_file: must be a JSON object schema (got a list)"
    ]
    both = write(jobdir, base + 'schema_file = "schema.json"\nschema = {}\n', "c.toml")
    assert problems_of(both)[0].startswith("response_format: json_schema needs exactly one of")
    kind = write(jobdir, base.replace("json_schema", "json"), "d.toml")
    assert problems_of(kind)[0].startswith(
        "response_format.type: must be one of json_schema, json_object, text"
    )


def test_schema_must_be_a_valid_json_schema_and_eval_field_one_of_it(jobdir: Path) -> None:
    """Issue 13, item 5: mistakes found before paying, not after."""
    (jobdir / "bad_schema.json").write_text(
        '{"type": "object", "properties": {"label": {"type": "strnig"}}}'
    )
    base = (
        '[input]\npath = "data/rows.jsonl"\n[prompt]\nuser = "{text}"\n'
        '[response_format]\ntype = "json_schema"\n'
    )
    bad = write(jobdir, base + 'schema_file = "bad_schema.json"\n', "a.toml")
    [problem] = problems_of(bad)
    assert problem.startswith("response_format.schema_file: not a valid JSON Schema: ")
    assert "strnig" in problem
    typo = write(
        jobdir,
        base
        + 'schema_file = "schema.json"\n[eval]\nreference_column = "label"\n'
        + 'compare = "json_field"\nfield = "lable"\n',
        "b.toml",
    )
    [problem] = problems_of(typo)
    assert problem.startswith("eval.field: 'lable' is not a property of the response schema")
    assert "did you mean 'label'?" in problem


def test_plain_request_file_cannot_have_response_format_or_eval(jobdir: Path) -> None:
    path = write(
        jobdir,
        """
[input]
path = "data/rows.jsonl"
[response_format]
type = "json_object"
[eval]
reference_column = "x"
""",
    )
    problems = problems_of(path)
    assert [p.split(":")[0] for p in problems] == ["response_format", "eval"]


def test_request_messages_and_wrong_input_type(jobdir: Path) -> None:
    (jobdir / "data" / "rows.xlsx").write_text("a,b\n")
    path = write(
        jobdir,
        """
[input]
path = "data/rows.xlsx"
[request]
messages = []
response_format = { type = "json_object" }
[prompt]
messages = [{ role = "robot", content = "{x}" }, { role = "user" }]
""",
    )
    problems = problems_of(path)
    assert problems[0].startswith("input.path: unsupported file type 'rows.xlsx'")
    assert "request.messages: write messages in the [prompt] section" in problems
    assert "request.response_format: use the [response_format] section" in problems
    assert any(p.startswith("prompt.messages[0].role: must be system") for p in problems)
    assert "prompt.messages[1].content: required" in problems


def test_a_job_without_input_loads_and_bad_toml_does_not(jobdir: Path) -> None:
    # the input may come from the command line (batchrun run data.jsonl -j job.toml);
    # with none anywhere, settings_for says so (tests/test_cli_settings.py)
    job = load_job(write(jobdir, '[prompt]\nuser = "{x}"\n'))
    assert "input" not in job.values and job.values["prompt"] == "{x}"
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_job(write(jobdir, "[input\n", "bad.toml"))
    with pytest.raises(ConfigError, match="job file not found"):
        load_job(jobdir / "nope.toml")


def test_sim_base_url_is_allowed(jobdir: Path) -> None:
    path = write(jobdir, '[input]\npath = "data/rows.jsonl"\n[endpoint]\nbase_url = "sim"\n')
    assert load_job(path).values["base_url"] == "sim"


def test_merge_precedence_cli_over_job_over_defaults(jobdir: Path) -> None:
    path = write(
        jobdir,
        """
[input]
path = "data/rows.jsonl"
[endpoint]
headers = { "X-Title" = "job", "X-Team" = "a" }
[request]
model = "job-model"
[limits]
concurrency = 32
rpm = 500
""",
    )
    job_values = load_job(path).values
    cli = {"concurrency": 8, "rpm": None, "model": None, "out_dir": "runs/cli",
           "headers": (("x-title", "cli"),)}  # fmt: skip
    merged = merge(job_values, cli)
    assert merged["concurrency"] == 8  # CLI wins
    assert merged["rpm"] == Quota(500.0)  # not given on the CLI: the job file's value
    assert merged["model"] == "job-model"
    assert merged["headers"] == (("X-Team", "a"), ("x-title", "cli"))
    config = Settings(**merged)
    assert config.tpm == Quota()  # set nowhere: batchrun's default
    assert config.max_attempts == Settings(input="x", out_dir="y").max_attempts


def test_job_is_frozen(jobdir: Path) -> None:
    job = load_job(write(jobdir, '[input]\npath = "data/rows.jsonl"\n'))
    with pytest.raises(dataclasses.FrozenInstanceError):
        job.name = "x"  # type: ignore[misc]


SHIPPED = sorted(p for p in JOBS.glob("*.toml") if not p.name.startswith("prices"))


def test_the_three_examples_ship() -> None:
    assert {p.name for p in SHIPPED} >= {"sentiment.toml", "eval_qa.toml", "requests.toml"}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_job_files_load_cleanly(path: Path) -> None:
    settings = load_job(path).settings()
    assert Path(settings.input_path).is_file()


def test_shipped_examples_render_their_data() -> None:
    import orjson
    import pyarrow.parquet as pq

    from batchrun._jobs.evaluate import Evaluator
    from batchrun._templating.text import body_builder

    sentiment = load_job(JOBS / "sentiment.toml").settings()
    rows = [orjson.loads(line) for line in Path(sentiment.input_path).read_bytes().splitlines()]
    assert len(rows) >= 300 and {r["label"] for r in rows} == {"positive", "negative", "neutral"}
    build = body_builder(sentiment)
    assert build is not None
    body = build(rows[0], "line 1")
    assert body["model"] == "gpt-4o-mini"
    assert body["response_format"]["json_schema"]["name"] == "sentiment"
    assert rows[0]["text"] in body["messages"][1]["content"]
    assert Evaluator.of(sentiment.eval) is not None

    qa = load_job(JOBS / "eval_qa.toml").settings()
    table = pq.read_table(qa.input_path)
    assert table.num_rows >= 100 and {"id", "question", "answer"} <= set(table.column_names)
    build = body_builder(qa)
    assert build is not None
    first = table.slice(0, 1).to_pylist()[0]
    assert build(first, "row 1")["messages"][-1]["content"] == f"Q: {first['question']}"

    plain = load_job(JOBS / "requests.toml").settings()
    lines = [orjson.loads(line) for line in Path(plain.input_path).read_bytes().splitlines()]
    assert len(lines) >= 50
    assert all(set(line) == {"custom_id", "method", "url", "body"} for line in lines)
    bodies = [line["body"] for line in lines]
    assert any(b.get("n") == 2 for b in bodies)
    assert any("tools" in b for b in bodies)
    assert any(b.get("response_format", {}).get("type") == "json_object" for b in bodies)
