"""Endpoint pools, declared (issue 26, part 1: items 1, 2 and 6).

A pool is one setting (``endpoints``), spelled three ways: a job file's
``[endpoints.NAME]`` tables, ``endpoints={"NAME": {...}}`` in Python, ``--endpoint
NAME=URL`` / ``--endpoint-key-env NAME=VAR`` / ``--endpoints FILE`` on the command line;
every spelling gives the same typed `Endpoint` records, and `Settings.pool` gives every
run one path (a single ``[endpoint]`` is the pool of one, "default"). Then: the checks
(names, models served, credentials), what run.json records (never a key), the resume
fingerprint (an endpoint may join a running job), each endpoint's own key and cache
tenant, and the estimate of a pool.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import click
import orjson
import pytest
from click.testing import CliRunner

from batchrun import ConfigError
from batchrun._api import endpoint_keys, settings_for
from batchrun._cache.scopes import PoolScopes
from batchrun._cache.store import ResponseCache, api_scope, scoped_key
from batchrun._cli import cli
from batchrun._cli.options import given_settings, setting_options
from batchrun._endpoint import credential_identity, is_simulated
from batchrun._engine.runinfo import not_judged_answers, resume_problems, write_run_info
from batchrun._jobs.jobfile import load_job
from batchrun._output.lines import simulated_line
from batchrun._output.quality import QualityCounts
from batchrun._redact import scrub_text
from batchrun._settings import DEFAULT_BASE_URL, Settings
from batchrun._values import Endpoint, Quota
from batchrun.errors import JobFileError

URL_A = "https://a.example.com/v1"
URL_B = "https://b.example.com/v1"
KEY_A = "sk-pool-a-0123456789abcdef"
KEY_B = "sk-pool-b-fedcba9876543210"


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture
def rows(tmp_path: Path) -> Path:
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps({"id": i, "text": f"t{i}"}) + "\n" for i in range(900)))
    return path


def from_cli(args: list[str], job: Path | None = None) -> Settings:
    """The settings ``batchrun run ARGS`` would run with (parsed by the same options)."""
    found: list[Settings] = []

    @click.command()
    @click.argument("input_path", required=False)
    @setting_options
    def command(input_path: str | None, **options: Any) -> None:
        found.append(settings_for(input_path, job=job, given=given_settings(options)))

    result = CliRunner().invoke(command, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return found[0]


def shape(pool: list[Endpoint]) -> list[tuple[Any, ...]]:
    return [(e.name, e.base_url, e.api_key_env, e.identity, e.models) for e in pool]


# -- one setting, three spellings, one pool --------------------------------------------------
JOB = """
[input]
path = "rows.jsonl"

[endpoint]
api_key_env = "MAIN_KEY"
headers = { "X-Title" = "batchrun" }

[request]
model = "gpt-4o-mini"

[prompt]
user = "Label: {text}"

[limits]
rpm = 500
concurrency = 8

[endpoints.azure]
base_url = "https://eu.example.com/openai"
api_key_env = "AZURE_KEY"
auth = "raw"
auth_header = "api-key"
headers = { "X-Title" = "eu" }
rpm = 600
weight = 2
models = { "gpt-4o-mini" = "mini-eu" }
prices = "eu-prices.toml"
batch = true

[endpoints.spare]
base_url = "sim"
sim_rpm = 1200
sim_fault = { 503 = 0.2 }
"""


def test_a_job_files_endpoints_tables_are_the_pool(tmp_path: Path, rows: Path) -> None:
    write(tmp_path / "eu-prices.toml", '[models."mini-eu"]\ninput = 0.2\noutput = 0.8\n')
    job = load_job(write(tmp_path / "job.toml", JOB))
    azure, spare = job.settings().pool()  # [endpoint] names no base_url: not a member
    assert (azure.name, azure.identity, azure.model_name("gpt-4o-mini")) == (
        "azure",
        "https://eu.example.com/openai",
        "mini-eu",
    )
    assert (azure.api_key_env, azure.auth, azure.auth_header) == ("AZURE_KEY", "raw", "api-key")
    assert azure.headers == (("X-Title", "eu"),)  # its own header wins by name
    assert azure.rpm == Quota(600.0) and azure.concurrency == 8 and azure.weight == 2.0
    assert azure.batch is True and azure.prices == str(tmp_path / "eu-prices.toml")
    # what spare leaves out comes from [endpoint] and [limits]
    assert (spare.identity, spare.api_key_env, spare.auth) == ("sim:spare", "MAIN_KEY", "bearer")
    assert spare.headers == (("X-Title", "batchrun"),)
    assert spare.rpm == Quota(500.0) and spare.concurrency == 8
    assert (spare.weight, spare.batch, spare.sim_rpm, spare.sim_fault) == (
        1.0,
        False,
        1200,
        ((503, 0.2),),
    )
    assert spare.serves("anything") and not azure.serves("gpt-4.1")


def test_a_single_endpoint_is_a_pool_of_one_and_joins_a_pool_when_it_names_a_url() -> None:
    (only,) = Settings(base_url=URL_A, rpm=Quota(300.0)).pool()
    assert (only.name, only.identity, only.rpm, only.batch) == (
        "default",
        URL_A,
        Quota(300.0),
        True,
    )
    assert Settings(base_url="sim").pool()[0].identity == "sim"
    pooled = Settings(base_url=URL_A, endpoints={"b": {"base_url": URL_B}})
    assert [e.name for e in pooled.pool()] == ["default", "b"]
    instead = Settings(base_url=DEFAULT_BASE_URL, endpoints={"b": {"base_url": URL_B}})
    assert [e.name for e in instead.pool()] == ["b"]


def test_python_the_command_line_and_a_pool_file_spell_the_same_pool(
    tmp_path: Path, rows: Path
) -> None:
    python = settings_for(
        rows,
        prompt="{text}",
        model="m",
        api_key_env="MAIN_KEY",
        endpoints={"a": {"base_url": URL_A, "api_key_env": "A_KEY"}, "b": {"base_url": "sim"}},
    )
    flags = ["--prompt", "{text}", "-m", "m", "--api-key-env", "MAIN_KEY"]
    command_line = from_cli(
        [str(rows), *flags, "--endpoint", f"a={URL_A}", "--endpoint", "b=sim"]
        + ["--endpoint-key-env", "a=A_KEY"]
    )
    pool_file = write(
        tmp_path / "pool.toml",
        f'[endpoints.a]\nbase_url = "{URL_A}"\napi_key_env = "A_KEY"\n'
        '[endpoints.b]\nbase_url = "sim"\n',
    )
    from_file = from_cli([str(rows), *flags, "--endpoints", str(pool_file)])
    expected = [
        ("a", URL_A, "A_KEY", URL_A, None),
        ("b", "sim", "MAIN_KEY", "sim:b", None),  # the same key variable unless told
    ]
    assert shape(python.pool()) == shape(command_line.pool()) == shape(from_file.pool()) == expected
    assert python.endpoints == command_line.endpoints == from_file.endpoints


def test_the_command_line_lays_endpoints_over_the_job_files_by_name(
    tmp_path: Path, rows: Path
) -> None:
    write(tmp_path / "eu-prices.toml", '[models."mini-eu"]\ninput = 0.2\noutput = 0.8\n')
    job = write(tmp_path / "job.toml", JOB)
    settings = from_cli(["--endpoint", f"azure={URL_A}", "--endpoint", "extra=sim"], job=job)
    azure, spare, extra = settings.pool()
    assert azure.base_url == URL_A  # moved, its other keys kept
    assert (azure.weight, azure.api_key_env, azure.models) == (
        2.0,
        "AZURE_KEY",
        (("gpt-4o-mini", "mini-eu"),),
    )
    assert (spare.name, extra.name, extra.identity) == ("spare", "extra", "sim:extra")
    result = CliRunner().invoke(
        cli, ["estimate", str(rows), "--prompt", "{text}", "-m", "m", "--endpoint-key-env", "b=B"]
    )
    assert result.exit_code == 1
    assert result.output == (
        "Error: --endpoint-key-env b=...: no endpoint b to give it to (declare it: --endpoint "
        "b=URL, or [endpoints.b] in the job file)\n"
    )


# -- the checks -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("endpoints", "problem"),
    [
        ({"eu west": {"base_url": URL_A}}, "endpoints=: an endpoint's name is 1 to 64 letters"),
        (
            {"EU": {"base_url": URL_A}, "eu": {"base_url": URL_B}},
            "endpoints=.eu: names the same endpoint as 'EU' (names ignore case)",
        ),
        ({"a": {"api_key_env": "A_KEY"}}, "endpoints=.a.base_url: required"),
        ({"a": {"base_url": URL_A, "weigth": 2}}, "did you mean 'weight'?"),
        (
            {"a": {"base_url": URL_A, "sim_rpm": 600}},
            'endpoints=.a.sim_rpm: only applies to base_url = "sim"',
        ),
        ({"a": {"base_url": "sim", "sim_fault": {700: 0.5}}}, "bad error rate 700=0.5"),
        ({"a": {"base_url": "sim", "sim_fault": "503=0.7,500=0.7"}}, "add up to more than 1"),
        ({"a": {"base_url": URL_A, "models": []}}, "must be a list of the job's model names"),
        ({"a": {"base_url": URL_A, "concurrency": 0}}, "must be a positive integer (got 0)"),
    ],
)
def test_a_bad_pool_is_refused_naming_the_endpoint_and_key(
    endpoints: dict[str, Any], problem: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.build(endpoints=endpoints)
    assert problem in str(caught.value)


@pytest.mark.parametrize(
    ("given", "problem"),
    [
        (
            {"model": "gpt-4.1", "endpoints": {"a": {"base_url": URL_A, "models": ["gpt-4o"]}}},
            "endpoints=: no endpoint serves the model 'gpt-4.1' (an endpoint's models name "
            "the job's models it serves) (did you mean 'gpt-4o'?)",
        ),
        (
            {"model": "m", "mode": "batch", "endpoints": {"a": {"base_url": URL_A}}},
            "mode='batch' with endpoints=: no endpoint takes batches (set batch = true on the "
            "endpoints that have a Batch API)",
        ),
        (
            {
                "model": ["m", "n"],
                "mode": "batch",
                "endpoints": {
                    "a": {"base_url": URL_A, "batch": True, "models": ["m"]},
                    "b": {"base_url": URL_B, "models": ["n"]},
                },
            },
            "mode='batch': no endpoint that takes batches (batch = true) serves the model 'n'",
        ),
        (
            {"base_url": URL_A, "endpoints": {"Default": {"base_url": URL_B}}},
            "endpoints=: 'Default' is the name of base_url='s own endpoint in the pool; give "
            "yours another name",
        ),
    ],
)
def test_the_rules_of_a_pool_are_problems_of_the_settings(
    given: dict[str, Any], problem: str
) -> None:
    assert Settings.build(**given).problems() == [problem]


def test_a_credential_is_refused_wherever_an_endpoint_is_declared(
    tmp_path: Path, rows: Path
) -> None:
    secret_url = "https://user:hunter2@relay.example.com/v1"
    with pytest.raises(ConfigError) as caught:
        Settings.build(endpoints={"relay": {"base_url": secret_url}})
    assert "endpoints=.relay.base_url: the URL holds a user name or password" in str(caught.value)
    job = write(
        tmp_path / "job.toml",
        f'[endpoints.relay]\nbase_url = "{secret_url}"\n\n[endpoints.b]\n'
        f'base_url = "{URL_B}"\napi_key = "{KEY_A}"\nheaders = {{ "X-Api-Key" = "{KEY_B}" }}\n',
    )
    with pytest.raises(JobFileError) as file_error:
        load_job(job)
    text = str(file_error.value)
    assert "endpoints.relay.base_url: the URL holds a user name or password" in text
    assert "endpoints.b.api_key: API keys are never read from a job file" in text
    assert "endpoints.b.headers.X-Api-Key: looks like a literal API key" in text
    pool = write(tmp_path / "pool.toml", f'[endpoints.b]\nbase_url = "{URL_B}"\ntoken = "x"\n')
    with pytest.raises(ConfigError) as pool_error:
        from_cli([str(rows), "-m", "m", "--endpoints", str(pool)])
    assert "endpoints.b.token: API keys are never read from a job file" in str(pool_error.value)
    result = CliRunner().invoke(
        cli, ["estimate", str(rows), "-m", "m", "--endpoint", f"relay={secret_url}"]
    )
    assert result.exit_code == 1, result.output
    assert "--endpoint: the URL holds a user name or password" in result.output
    for shown in (text, str(caught.value), str(pool_error.value), result.output):
        assert "hunter2" not in shown and KEY_A not in shown and KEY_B not in shown


def test_a_pool_file_is_read_like_a_job_file(
    tmp_path: Path, rows: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "keys").mkdir()
    write(tmp_path / "keys" / "a.key", KEY_A)
    pool = write(
        tmp_path / "pool.toml",
        f'[endpoints.a]\nbase_url = "{URL_A}"\napi_key_file = "keys/a.key"\n',
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # paths in the pool file are relative to it, not to here
    (a,) = from_cli([str(rows), "-m", "m", "--endpoints", str(pool)]).pool()
    assert a.api_key_file == str(tmp_path / "keys" / "a.key")
    stray = write(
        tmp_path / "stray.toml",
        f'[endpoint]\nbase_url = "{URL_A}"\n[endpoints.b]\nbase_url = "{URL_B}"\nrpm = -1\n',
    )
    result = CliRunner().invoke(cli, ["estimate", str(rows), "-m", "m", "--endpoints", str(stray)])
    assert result.exit_code == 1
    assert result.output == (
        f"Error: {stray}: endpoint: unknown key (a pool file holds [endpoints.NAME] tables)\n"
        f"{stray}: endpoints.b.rpm: must be a positive number (got -1)\n"
    )


# -- run.json: the pool, never a key ----------------------------------------------------------
def test_run_json_records_each_endpoints_key_variable_never_its_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("A_KEY", KEY_A)
    settings = Settings.build(
        input=str(tmp_path / "rows.jsonl"),
        endpoints={
            "a": {"base_url": URL_A, "api_key_env": "A_KEY", "headers": {"X-Api-Token": KEY_B}},
            "b": {"base_url": "sim", "sim_rpm": 600, "rpm": {"*": 500, "gpt-4.1": 30}},
        },
    )
    path = tmp_path / "run.json"
    write_run_info(str(path), settings, fingerprint="f", rows=1, outside_input={}, changed_rows=0)
    text = path.read_text()
    assert "A_KEY" in text and KEY_A not in text and KEY_B not in text
    options = orjson.loads(text)["options"]
    assert options["endpoints"]["a"]["headers"] == [["X-Api-Token", "***"]]
    back = Settings.from_public_dict(options)
    assert back.endpoints["b"] == settings.endpoints["b"]
    assert back.endpoints["a"].api_key_env == "A_KEY"
    assert back.pool()[1].rpm == Quota(500.0, (("gpt-4.1", 30.0),))


# -- the fingerprint: the pool's shape, and who may join ---------------------------------------
POOL = {
    "a": {"base_url": URL_A, "models": {"m": "m-a"}},
    "b": {"base_url": "sim", "sim_rpm": 600},
}


def started(tmp_path: Path, endpoints: dict[str, Any] | None, **more: Any) -> str:
    path = tmp_path / "run.json"
    settings = Settings.build(input="x.jsonl", model="m", endpoints=endpoints, **more)
    write_run_info(str(path), settings, fingerprint="f", rows=1, outside_input={}, changed_rows=0)
    return str(path)


def resumed(
    path: str, endpoints: dict[str, Any] | None, **more: Any
) -> tuple[list[str], list[str]]:
    notes: list[str] = []
    settings = Settings.build(input="x.jsonl", model="m", endpoints=endpoints, **more)
    problems, _, _ = resume_problems(path, settings, "f", notes)
    return problems, notes


def test_the_fingerprint_covers_who_answers_not_how_fast_or_at_what_price() -> None:
    base = Settings.build(model="m", endpoints=POOL)
    assert base.fingerprint()["endpoints"] == {
        "a": {"endpoint": URL_A, "models": {"m": "m-a"}},
        "b": {"endpoint": "sim:b", "models": None},
    }
    paced = Settings.build(
        model="m",
        endpoints={
            "a": {**POOL["a"], "rpm": 10, "weight": 5, "concurrency": 2, "batch": True},
            "b": {**POOL["b"], "sim_rpm": 60, "sim_fault": "503=0.5"},
        },
    )
    assert paced.fingerprint() == base.fingerprint()
    assert "endpoints" not in Settings.build(model="m").fingerprint()  # no pool: as before


def test_an_endpoint_may_join_or_leave_a_running_job_but_not_change(tmp_path: Path) -> None:
    path = started(tmp_path, POOL)
    assert resumed(path, POOL) == ([], [])
    joined = {**POOL, "c": {"base_url": URL_B}}
    assert resumed(path, joined) == ([], [f"endpoint c ({URL_B}) joins the pool"])
    assert resumed(path, {"a": POOL["a"]}) == (
        [],
        ["endpoint b (sim:b) left the pool: the rows it answered keep their answers"],
    )
    moved = {**POOL, "a": {**POOL["a"], "base_url": URL_B}}
    assert resumed(path, moved)[0] == [f"option endpoints.a.endpoint: '{URL_A}' -> '{URL_B}'"]
    renamed = {**POOL, "a": {**POOL["a"], "models": {"m": "m-other"}}}
    assert resumed(path, renamed)[0] == ["option endpoints.a.models.m: 'm-a' -> 'm-other'"]
    # the quality breaker keeps judging the answers of a run an endpoint joined
    paid = QualityCounts({"m": Counter(ok=40, truncated=60)})
    grown = Settings.build(input="x.jsonl", model="m", endpoints=joined)
    assert not_judged_answers(path, grown, "f", paid).answers == 0
    assert (
        not_judged_answers(
            path, Settings.build(input="x.jsonl", model="m", endpoints=moved), "f", paid
        ).answers
        == 100
    )


def test_a_single_endpoint_run_may_grow_into_a_pool(tmp_path: Path) -> None:
    path = started(tmp_path, None, base_url=URL_A)
    assert resumed(path, None, base_url=URL_A) == ([], [])
    grown = resumed(path, {"b": {"base_url": URL_B}}, base_url=URL_A)
    assert grown == ([], [f"endpoint b ({URL_B}) joins the pool"])
    assert resumed(path, None, base_url=URL_B)[0] == [
        f"option base_url: '{URL_A}' -> '{URL_B}'"  # as before pools
    ]


# -- item 2: each endpoint's key, each endpoint's cache tenant ----------------------------------
def test_each_endpoint_reads_its_own_key_and_every_key_is_scrubbed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("A_KEY", KEY_A)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    key_file = write(tmp_path / "b.key", KEY_B + "\n")
    settings = Settings.build(
        endpoints={
            "a": {"base_url": URL_A, "api_key_env": "A_KEY"},
            "b": {"base_url": URL_B, "api_key_file": str(key_file)},
            "local": {"base_url": "http://127.0.0.1:8000/v1"},  # loopback: none needed
            "rehearsal": {"base_url": "sim"},
        }
    )
    assert endpoint_keys(settings) == {"a": KEY_A, "b": KEY_B, "local": None, "rehearsal": None}
    assert scrub_text(f"echoed {KEY_A} and {KEY_B}") == "echoed *** and ***"


def test_a_missing_key_names_its_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("B_KEY", raising=False)
    settings = Settings.build(endpoints={"b": {"base_url": URL_B, "api_key_env": "B_KEY"}})
    with pytest.raises(ConfigError) as caught:
        endpoint_keys(settings)
    assert str(caught.value) == (
        "endpoint b: environment variable B_KEY is not set (set it, name another with "
        'endpoints.b.api_key_env or --endpoint-key-env b=VARIABLE, or give it auth = "none")'
    )
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ConfigError) as single:  # a pool of one speaks as before
        endpoint_keys(Settings.build(base_url=URL_A))
    assert str(single.value) == (
        "environment variable OPENAI_API_KEY is not set (set it, name another with "
        "--api-key-env, or use --auth none)"
    )


def body_for(model: str) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], "temperature": 0}


def test_answers_cached_under_one_endpoints_key_never_serve_another_tenant(tmp_path: Path) -> None:
    pool = Settings.build(
        endpoints={
            "a": {"base_url": URL_A, "api_key_env": "A_KEY", "models": ["m", "only-a"]},
            "twin": {"base_url": URL_A, "api_key_env": "A_KEY", "models": ["m"]},
            "b": {"base_url": URL_A, "api_key_env": "B_KEY", "models": ["m", "only-b"]},
            "azure": {"base_url": URL_B, "api_key_env": "A_KEY", "models": {"m": "m-eu"}},
        }
    ).pool()
    keys = {"a": KEY_A, "twin": KEY_A, "b": KEY_B, "azure": KEY_A}
    scopes = PoolScopes(pool, keys)
    with ResponseCache(str(tmp_path / "c.sqlite")) as cache:
        for model in ("m", "only-a"):
            cache.put_many([(scopes.store_key("a", "chat", body_for(model)), b'{"answer":"a"}')])
        # a's answer serves a request a may take (and its twin: the same key there) ...
        found = {n: cache.get(k) for n, k in scopes.lookup_keys("m", "chat", body_for("m"))}
        assert found == {"a": b'{"answer":"a"}', "b": None, "azure": None}
        # ... never one only b's tenant serves, at the same URL
        (only_b,) = scopes.lookup_keys("only-b", "chat", body_for("only-b"))
        assert only_b[0] == "b" and cache.get(only_b[1]) is None
        (only_a,) = scopes.lookup_keys("only-a", "chat", body_for("only-a"))
        assert cache.get(only_a[1]) == b'{"answer":"a"}'
    # azure is sent its own model name: its answers are kept under the body it was sent
    sent = orjson.dumps({**body_for("m"), "model": "m-eu"})
    assert scopes.store_key("azure", "chat", body_for("m")) == scoped_key(
        scopes.scope("azure", "chat"), sent
    )


def test_a_pool_of_one_keeps_the_scope_caches_were_written_with() -> None:
    """Caches written before pools keep answering: the default endpoint's scope is the
    one `batchrun._engine.reuse.Reuse` has always used."""
    for settings in (
        Settings(base_url=URL_A, auth="raw", auth_header="api-key", headers=(("X-P", "p"),)),
        Settings(base_url="sim"),
    ):
        (default,) = settings.pool()
        tenant = credential_identity(
            KEY_A, auth=settings.auth, auth_header=settings.auth_header, headers=settings.headers
        )
        for api in ("chat", "embeddings", "responses"):
            assert PoolScopes([default], {"default": KEY_A}).scope("default", api) == api_scope(
                settings.endpoint, api, tenant
            )


def test_simulated_endpoints_of_a_pool_are_distinct_and_all_simulated() -> None:
    a, b = Settings.build(endpoints={"a": {"base_url": "sim"}, "b": {"base_url": "sim"}}).pool()
    assert (a.identity, b.identity) == ("sim:a", "sim:b")
    assert is_simulated(a.identity) and is_simulated("sim") and not is_simulated(URL_A)
    line = b'{"custom_id":"x","batchrun":{"endpoint":"sim:a","body_hash":"00000000000000ff"}}\n'
    assert simulated_line(line) is True


# -- item 6: the estimate of a pool ---------------------------------------------------------------
def estimate(args: list[str]) -> dict[str, Any]:
    result = CliRunner().invoke(cli, ["estimate", *args, "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.output)
    return data


def test_the_estimate_of_a_pool_is_the_pooled_quotas_time_and_each_endpoints_cost(
    tmp_path: Path, rows: Path
) -> None:
    """900 rows over 600 + 1,200 + 300 requests a minute: 900 / 2,100 = 0.43 min, rows
    split by each endpoint's share of the pooled rate, the relay at its own prices."""
    write(tmp_path / "relay.toml", '[models."gpt-4o-mini"]\ninput = 1.5\noutput = 6.0\n')
    pool = write(
        tmp_path / "pool.toml",
        '[endpoints.a]\nbase_url = "sim"\nsim_rpm = 600\n'
        '[endpoints.b]\nbase_url = "sim"\nsim_rpm = 1200\nweight = 5\n'
        f'[endpoints.relay]\nbase_url = "{URL_B}"\nrpm = 300\nprices = "relay.toml"\n',
    )
    data = estimate(
        [str(rows), "--prompt", "{text}", "-m", "gpt-4o-mini", "--max-tokens", "10"]
        + ["--endpoints", str(pool)]
    )
    time = data["time"]
    assert time["minutes"] == pytest.approx(900 / 2100, rel=1e-6)
    assert time["by_model"]["gpt-4o-mini"]["limited_by"] == "rpm"
    shares = {name: e["rows"] for name, e in time["endpoints"].items()}
    assert shares == {"a": pytest.approx(257.1, abs=0.1), "b": 514.3, "relay": 128.6}
    list_price = data["cost_usd"]
    a, relay = time["endpoints"]["a"]["cost_usd"], time["endpoints"]["relay"]["cost_usd"]
    assert a["low"] == pytest.approx(list_price["low"] * 600 / 2100, rel=1e-4)
    # the relay charges 10x gpt-4o-mini's list price ($0.15/$0.60 per million)
    assert relay["high"] == pytest.approx(list_price["high"] * 300 / 2100 * 10, rel=1e-4)
    text = (
        CliRunner()
        .invoke(
            cli,
            [
                "estimate",
                str(rows),
                "--prompt",
                "{text}",
                "-m",
                "gpt-4o-mini",
                "--endpoints",
                str(pool),
            ],
        )
        .output
    )
    assert "time at the pooled quota: 26 s (gpt-4o-mini 2,100/min (rpm))" in text
    assert [line.split()[0] for line in text.splitlines()[-4:]] == ["endpoint", "a", "b", "relay"]


def test_tokens_per_minute_can_bind_and_an_endpoint_without_a_quota_leaves_time_unknown(
    rows: Path,
) -> None:
    args = [str(rows), "--prompt", "{text}", "-m", "gpt-4o-mini", "--max-tokens", "90"]
    # 900 requests of about 100 tokens; 600 rpm but 6,000 tpm: about 60 requests a minute
    tight = estimate([*args, "--endpoint", "a=sim", "--rpm", "600", "--tpm", "6000"])
    pace = tight["time"]["by_model"]["gpt-4o-mini"]
    assert pace["limited_by"] == "tpm" and 55 < pace["requests_per_minute"] < 66
    unknown = estimate([*args, "--endpoint", f"a={URL_A}", "--endpoint", "b=sim"])
    assert unknown["time"]["minutes"] is None and unknown["time"]["no_quota"] == ["a", "b"]
    assert {n: e["rows"] for n, e in unknown["time"]["endpoints"].items()} == {"a": 450, "b": 450}
    single = estimate([*args, "--rpm", "450"])  # one endpoint: its time at its quota
    assert single["time"]["minutes"] == pytest.approx(2.0)


def test_a_pool_runs_online_from_the_command_line(tmp_path: Path, rows: Path) -> None:
    """Online, a declared pool runs from the command line alone: each line names the
    endpoint that answered, and the Parquet file's ``endpoint`` column agrees (on a Ray
    cluster: tests/test_scale_ray.py; through the Batch API: tests/test_batch_pool.py;
    with --cache: tests/test_pool_cache.py)."""
    out = tmp_path / "out"
    result = CliRunner().invoke(
        cli,
        ["run", str(rows), "-o", str(out), "--prompt", "{text}", "-m", "gpt-4o-mini", "-q"]
        + ["--endpoint", "a=sim", "--endpoint", "b=sim", "--limit", "60"],
    )
    assert result.exit_code == 0, result.output
    written = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(written) == 60
    assert {r["batchrun"]["endpoint"] for r in written} <= {"sim:a", "sim:b"}
    assert all(r["batchrun"]["route"][-1] in ("a", "b") for r in written)
    import pyarrow.parquet as pq

    table = pq.read_table(out / "results.parquet")
    by_id = dict(zip(table["custom_id"].to_pylist(), table["endpoint"].to_pylist(), strict=True))
    assert {by_id[r["custom_id"]] for r in written} <= {"a", "b"}
    assert all(by_id[r["custom_id"]] == r["batchrun"]["route"][-1] for r in written)
