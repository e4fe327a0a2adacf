"""A row that does not fit its model's context window is a bad row, found before anything
is sent (issue 24, item 6)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from batchrun._cli import cli
from batchrun.errors import InputError
from batchrun.sim import SimConfig, SimThread

# ~130,000 tokens of o200k_base (" word" is one token): more than gpt-4o-mini's 128,000
HUGE = "word " * 130_000


def chat(text: str, model: str = "gpt-4o-mini", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


def write(folder: Path, rows: list[dict[str, Any]], name: str = "requests.jsonl") -> Path:
    path = folder / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def sim() -> Iterator[SimThread]:
    with SimThread(SimConfig(record_bodies=1000)) as server:
        yield server


def run(sim: SimThread, *args: str) -> Any:
    return CliRunner().invoke(cli, ["run", *args, "--base-url", sim.base_url, "-q"])


def test_a_row_over_the_context_window_is_refused_naming_its_line(
    sim: SimThread, tmp_path: Path
) -> None:
    path = write(tmp_path, [chat("hi", max_tokens=256), chat(HUGE, max_tokens=256), chat("yo")])
    res = run(sim, str(path), "-o", str(tmp_path / "run"))
    assert res.exit_code == 1
    [line] = res.stderr.strip().splitlines()
    assert line.startswith(f"Error: {path}:line 2: 130,00")
    assert line.endswith(
        " prompt tokens + max_tokens 256 exceed gpt-4o-mini's context window of 128,000 tokens"
    )
    assert sim.stats.requests == 0  # nothing sent
    assert not (tmp_path / "run").exists()


def test_skip_invalid_sets_the_row_aside_and_a_cap_no_longer_blocks_the_rest(
    sim: SimThread, tmp_path: Path
) -> None:
    rows = [chat(f"row {i}", max_tokens=5) for i in range(4)]
    rows.insert(1, chat(HUGE))  # no max_tokens: the prompt alone does not fit
    path = write(tmp_path, rows)
    out = tmp_path / "run"
    res = run(sim, str(path), "-o", str(out), "--skip-invalid", "--max-cost", "0.01")
    assert res.exit_code == 0, res.output
    [invalid] = [json.loads(x) for x in (out / "invalid.jsonl").read_text().splitlines()]
    assert (invalid["row"], invalid["where"]) == (2, "line 2")
    assert invalid["reason"].endswith(
        " prompt tokens exceed gpt-4o-mini's context window of 128,000 tokens"
    )
    assert sim.stats.requests == 4
    assert all(len(b["messages"][0]["content"]) < 10 for b in sim.stats.bodies)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["requests"]["succeeded"] == 4 and summary["requests"]["invalid"] == 1


def test_the_window_counts_the_answer_and_the_exact_prompt(tmp_path: Path) -> None:
    from batchrun._input.select import source_for
    from batchrun._pacing.tokens import prompt_tokens
    from batchrun._settings import Settings

    fits = chat("word " * 95, model="m")
    size = prompt_tokens(fits)
    assert 95 < size < 110  # its bytes (~480) are over the window: it is counted exactly
    rows = [fits, {**fits, "max_tokens": 200 - size}, {**fits, "max_tokens": 201 - size}]
    path = write(tmp_path, rows)
    settings = Settings.build(input=str(path), context_window={"m": 200}, skip_invalid=True)
    scan = source_for(settings).scan()
    assert (scan.total, scan.invalid) == (2, 1)
    with pytest.raises(InputError, match=r":line 3: .* \+ max_tokens \d+ exceed m's context"):
        source_for(Settings.build(input=str(path), context_window={"m": 200})).scan()


def test_unknown_models_are_not_checked_and_a_window_can_be_given(
    sim: SimThread, tmp_path: Path
) -> None:
    path = write(tmp_path, [chat("word " * 300, model="local-llm")])
    res = run(sim, str(path), "-o", str(tmp_path / "a"))
    assert res.exit_code == 0, res.output
    assert sim.stats.requests == 1
    # every model's window, or one model's, from the command line or a job file
    for window in ("256", "local-llm=256"):
        res = run(sim, str(path), "-o", str(tmp_path / "b"), "--context-window", window)
        assert res.exit_code == 1 and "exceed local-llm's context window of 256" in res.stderr
    job = tmp_path / "job.toml"
    job.write_text(
        f'[input]\npath = "{path.name}"\n[limits]\ncontext_window = {{ "local-llm" = 256 }}\n'
    )
    res = run(sim, "-j", str(job), "-o", str(tmp_path / "c"))
    assert res.exit_code == 1 and "context window of 256 tokens" in res.stderr
    assert sim.stats.requests == 1
    # a given window overrides the table's
    small = write(tmp_path, [chat("word " * 300)], "small.jsonl")
    res = CliRunner().invoke(cli, ["estimate", str(small), "--context-window", "gpt-4o-mini=100"])
    assert res.exit_code == 1 and "small.jsonl:line 1:" in res.stderr


def test_a_dataset_row_is_bad_when_any_variant_does_not_fit(tmp_path: Path) -> None:
    import batchrun

    rows = [{"id": "a", "text": "short"}, {"id": "b", "text": "word " * 300}]
    run = batchrun.run(
        rows,
        tmp_path / "run",
        model=["big-model", "small-model"],
        prompt="Label: {text}",
        id_column="id",
        context_window={"big-model": 100_000, "small-model": 200},
        skip_invalid=True,
        base_url="sim",
        quiet=True,
    )
    assert run.summary["requests"]["succeeded"] == 2  # row a, once per model
    [invalid] = [json.loads(x) for x in (tmp_path / "run/invalid.jsonl").read_text().splitlines()]
    assert invalid["row"] == 2 and "small-model's context window of 200" in invalid["reason"]
    # results.parquet, rebuilt from the input, sees the same bad row
    statuses = run.results().select(["row", "status"]).to_pylist()
    assert {(r["row"], r["status"]) for r in statuses} == {(1, "succeeded"), (2, "invalid")}


def test_the_cheap_bounds_are_never_under_the_count() -> None:
    from batchrun._input.context import _json_bound
    from batchrun._pacing.tokens import prompt_tokens, prompt_tokens_at_most

    bodies = [
        chat("hello world"),
        chat("Größe über alles — 日本語のテキスト " * 20),
        chat("emoji 🙂🙃 " * 50, model="gpt-3.5-turbo"),
        {
            "model": "gpt-4o",
            "messages": [
                {"role": "system", "content": "be brief", "name": "rules"},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "what is this?"},
                        {"type": "image_url", "image_url": {"url": "https://x/y.png"}},
                        {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
                    ],
                },
                {"role": "assistant", "content": None, "tool_calls": [{"id": "1", "x": [1]}]},
                {"role": "tool", "tool_call_id": "1", "content": "42"},
            ],
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
        },
    ]
    for body in bodies:
        assert prompt_tokens(body) <= prompt_tokens_at_most(body), body
        # the first bound, its JSON's length, on every row (none for a body with images)
        assert prompt_tokens(body) <= _json_bound(body), body


def test_a_short_row_with_an_image_is_measured_by_its_image(tmp_path: Path) -> None:
    """A few bytes of JSON can name an image worth hundreds of tokens: the JSON-length
    bound gives way to the count that knows images."""
    from batchrun._input.select import source_for
    from batchrun._settings import Settings

    image = {"type": "image_url", "image_url": {"url": "https://x/y.png"}}
    row = {"model": "m", "messages": [{"role": "user", "content": [image]}]}
    path = write(tmp_path, [row])
    with pytest.raises(InputError, match="exceed m's context window of 300"):
        source_for(Settings.build(input=str(path), context_window={"m": 300})).scan()
    assert source_for(Settings.build(input=str(path), context_window={"m": 900})).scan().total


def test_a_pass_after_a_clean_scan_does_not_check_again(tmp_path: Path) -> None:
    """The check is a pure function of the body, and no pass reads past the scan: when
    the scan refused no row, the sending pass does not ask it again; when it refused one,
    every later pass asks, so the refused row is never sent."""
    from batchrun._input.sources import Source
    from batchrun._models import Request

    asked: list[str] = []

    def check(req: Request) -> str | None:
        asked.append(req.custom_id)
        return "too long" if "long" in req.body["messages"][0]["content"] else None

    clean = write(tmp_path, [{"custom_id": f"r{i}", "body": chat(f"row {i}")} for i in range(3)])
    source = Source(str(clean), check=check)
    assert [req.custom_id for req in source.requests()] == ["r0", "r1", "r2"]
    assert asked == ["r0", "r1", "r2"]  # no scan yet: every row is checked
    asked.clear()
    assert source.scan().total == 3 and asked == ["r0", "r1", "r2"]
    asked.clear()
    assert [req.custom_id for req in source.requests()] == ["r0", "r1", "r2"]
    assert asked == []  # the scan passed them all

    rows = [{"custom_id": f"r{i}", "body": chat("a long one" if i == 1 else "x")} for i in range(3)]
    source = Source(str(write(tmp_path, rows, "mixed.jsonl")), check=check, skip_invalid=True)
    scan = source.scan()
    assert (scan.total, scan.invalid) == (2, 1)
    asked.clear()
    assert [req.custom_id for req in source.requests()] == ["r0", "r2"]  # r1 never sent
    assert asked == ["r0", "r1", "r2"]
