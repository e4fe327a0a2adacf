"""A Jinja template that runs away is a bad row, and Ctrl-C stops it (issue 24, item 7).

``{% for i in range(100000) %}{% for j in range(10000) %}`` is 10^9 steps: checking
such a row held the run for minutes, and the first Ctrl-C waited for it (the scan looks
at its stop flag between rows). While the input is checked, a row's rendering now has
`RENDER_LIMIT_S` seconds, after which it is a bad row named by its line, and the
scan's stop flag is looked at inside the row too. Outside a scan nothing changes.

The time is injected (a clock that jumps) wherever the limit is what is tested.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from anyio.from_thread import start_blocking_portal

from batchrun._engine.runner import Runner
from batchrun._engine.stops import INTERRUPTED_NOTE
from batchrun._input.sources import Source
from batchrun._settings import Settings
from batchrun._templating import rowwatch
from batchrun._templating.jinja import JinjaPromptTemplate
from batchrun._templating.rowwatch import CHECK_EVERY, Interrupted, RowWatch, ticking, watched
from batchrun.errors import InputError

RUNAWAY = "{% for i in range(100000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}{{ t }}"
"""10^9 loop steps (the sandbox caps one range at 100,000)."""
NESTED_LISTS = (
    "{% for a in xs %}{% for b in xs %}{% for c in xs %}.{% endfor %}{% endfor %}{% endfor %}"
)
"""10^9 steps over a row's own list: no function call anywhere in the loops."""


class JumpingClock:
    """Each look at the time is a second later."""

    def __init__(self) -> None:
        self.now = 0.0
        self.looks = 0

    def __call__(self) -> float:
        self.looks += 1
        self.now += 1.0
        return self.now


def render(template: str, row: dict[str, Any]) -> str:
    messages = JinjaPromptTemplate([{"role": "user", "content": template}]).render(
        row, "line 7", path="data.jsonl"
    )
    return messages[0]["content"]


@pytest.mark.parametrize(
    ("template", "row"),
    [(RUNAWAY, {"t": "x"}), (NESTED_LISTS, {"xs": list(range(1000))})],
    ids=["range", "row-lists"],
)
def test_a_runaway_row_is_a_bad_row_named_by_its_line(template: str, row: dict[str, Any]) -> None:
    clock = JumpingClock()
    with watched(limit_s=2.0, clock=clock), pytest.raises(InputError) as caught:
        render(template, row)
    assert str(caught.value).startswith("data.jsonl:line 7: prompt.messages[0]: rendering took")
    assert "over 2 s (a loop that runs away?)" in str(caught.value)
    assert clock.looks <= 4  # stopped at the first looks past the limit, not 10^9 steps


def test_a_stop_request_ends_the_row_at_once() -> None:
    asked = []

    def should_stop() -> bool:
        asked.append(1)
        return len(asked) >= 3

    with watched(should_stop, limit_s=1e9), pytest.raises(Interrupted):
        render(RUNAWAY, {"t": "x"})  # not an InputError: the scan stops, nothing is sent
    assert len(asked) == 3


def test_a_fast_template_renders_as_before_watched_or_not() -> None:
    template = "{% for x in xs %}{{ x }},{% endfor %}{{ range(3) | list }}{{ loop_free }}"
    row = {"xs": ["a", "b"], "loop_free": "!"}
    plain = render(template, row)
    with watched(limit_s=2.0):
        assert render(template, row) == plain == "a,b,[0,1,2]!"
    looped = (
        "{% for x in xs %}{{ loop.index }}/{{ loop.length }}{% if loop.last %}.{% endif %} "
        "{% endfor %}"
    )
    with watched():
        assert render(looped, {"xs": "abc"}) == "1/3 2/3 3/3. "


def test_nothing_is_watched_outside_a_scan() -> None:
    items = [1, 2, 3]
    assert rowwatch.current() is None
    assert ticking(items) is items
    with watched() as watch:
        assert rowwatch.current() is watch
        assert list(ticking(items)) == items and watch.ticks == 3
    assert rowwatch.current() is None


def test_the_watch_looks_every_check_every_ticks() -> None:
    clock = JumpingClock()
    watch = RowWatch(limit_s=1e9, clock=clock)
    watch.start()
    for _ in range(CHECK_EVERY * 3):
        watch.tick()
    assert clock.looks == 1 + 3  # start, then once per CHECK_EVERY ticks


def write_dataset(path: Path, texts: list[str]) -> Path:
    path.write_text(
        "".join(json.dumps({"id": f"r{i}", "t": t}) + "\n" for i, t in enumerate(texts))
    )
    return path


def template_source(path: Path, template: str, **kw: Any) -> Source:
    from batchrun._input.select import source_for

    cfg = Settings(input=str(path), prompt=template, id_column="id", model="m", **kw)
    return source_for(cfg)


def test_the_scan_sets_a_runaway_row_aside_with_skip_invalid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rowwatch, "RENDER_LIMIT_S", 0.05)
    path = write_dataset(tmp_path / "d.jsonl", ["ok", "loop", "ok too"])
    template = "{% if t == 'loop' %}" + RUNAWAY + "{% endif %}{{ t }}"
    with pytest.raises(InputError, match=r"d.jsonl:line 2: .*rendering took over 0.05 s"):
        template_source(path, template).scan()
    source = template_source(path, template, skip_invalid=True)
    invalid = tmp_path / "invalid.jsonl"
    with open(invalid, "wb") as sink:
        scan = source.scan(sink)
    assert scan.total == 2 and scan.invalid == 1
    (line,) = invalid.read_text().splitlines()
    assert json.loads(line)["row"] == 2 and "rendering took over" in json.loads(line)["reason"]


def test_the_scan_stops_inside_a_row_when_asked(tmp_path: Path) -> None:
    path = write_dataset(tmp_path / "d.jsonl", ["x"])
    looks = []

    def should_stop() -> bool:
        looks.append(1)
        return len(looks) > 2

    with pytest.raises(Interrupted):
        template_source(path, RUNAWAY).scan(should_stop=should_stop)


@pytest.fixture
def counted() -> Iterator[list[httpx.Request]]:
    yield []


def test_a_ctrl_c_while_a_runaway_row_is_checked_stops_the_run_promptly(
    tmp_path: Path, counted: list[httpx.Request], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first Ctrl-C (here: the runner's interrupt, as its signal handler calls it)
    ends the scan inside the row, well before the row's time limit would: exit 130,
    nothing sent, nothing written."""
    path = write_dataset(tmp_path / "d.jsonl", ["x", "y"])
    rendering = threading.Event()
    original = JinjaPromptTemplate.render

    def render_and_say(self: JinjaPromptTemplate, *args: Any, **kwargs: Any) -> Any:
        rendering.set()
        return original(self, *args, **kwargs)

    monkeypatch.setattr(JinjaPromptTemplate, "render", render_and_say)

    def handler(request: httpx.Request) -> httpx.Response:
        counted.append(request)
        return httpx.Response(500)

    cfg = Settings(
        input=str(path),
        out_dir=str(tmp_path / "run"),
        prompt=RUNAWAY,
        id_column="id",
        model="gpt-4o-mini",
        base_url="http://127.0.0.1:9/v1",
        auth="none",
        quiet=True,
    )
    runner = Runner(cfg, transport=httpx.MockTransport(handler))
    with start_blocking_portal() as portal:
        future = portal.start_task_soon(runner.run)
        assert rendering.wait(20)  # the scan is in the first row's loops
        threading.Event().wait(0.1)
        asked = time.monotonic()
        portal.call(runner.interrupt, 1)
        result = future.result(timeout=30)
        took = time.monotonic() - asked
    assert result.exit_code == 130 and result.status == "interrupted"
    assert INTERRUPTED_NOTE in result.notes
    assert took < rowwatch.RENDER_LIMIT_S / 2, f"{took:.2f} s after the interrupt"
    assert counted == []
    assert not (tmp_path / "run").exists()  # refused before anything: nothing left


def test_anyio_is_not_needed_to_watch() -> None:
    # the watch is per thread: a scan in a worker thread does not see another's
    seen: list[Any] = []

    def other() -> None:
        seen.append(rowwatch.current())

    with watched():
        anyio.run(anyio.to_thread.run_sync, other)
    assert seen == [None]
