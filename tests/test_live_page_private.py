"""The live page is private (issue 24, item 9): loopback is open to every user of the
machine, so every request to the live server must carry the random token of the URL
it printed; without it (or with another) the answer is 403 and holds no data. The
token is never written into a file of the run directory.

Real loopback servers (`serve_run_dir`, ``batchrun.run(serve=True)``), fetched with
urllib as another local user would with curl.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import batchrun
from batchrun._report.html import cli as html_cli
from batchrun._report.html import serve_command, serve_run_dir
from batchrun.sim import SimConfig, SimThread

pytest_plugins = ["tests.conftest_html"]  # sentiment_run

ROUTES = ("", "data.json", "results.jsonl", "summary.json", "run.json", "nothing/here")


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def split(url: str) -> tuple[str, str]:
    """(the server's root URL, its token) from the printed URL."""
    parts = urllib.parse.urlsplit(url)
    token = urllib.parse.parse_qs(parts.query)["token"]
    assert len(token) == 1
    return f"{parts.scheme}://{parts.netloc}/", token[0]


def test_every_route_needs_the_token(sentiment_run: Path) -> None:
    with serve_run_dir(str(sentiment_run), poll_s=2) as url:
        bare = url.split("?")[0]
        assert get(bare + "data.json")[0] == 403  # `curl 127.0.0.1:PORT/data.json`
        root, token = split(url)
        assert url == f"{root}?token={token}" and len(token) >= 40  # 32 random bytes
        same_length = ("A" if token[0] != "A" else "B") + token[1:]
        for route in ROUTES:
            for query in ("", "?token=", f"?token={same_length}", f"?token={token[:-1]}"):
                status, body = get(root + route + query)
                assert status == 403, (route, query)
                assert b"requests" not in body and b"positive" not in body, (route, query)
                assert body.startswith(b"this report needs its token"), body
        status, page = get(url)
        assert status == 200 and b'id="batchrun-data"' in page
        status, data = get(f"{root}data.json?token={token}")
        assert status == 200 and json.loads(data)["requests"]["total"] == 300
        assert get(f"{root}run.json?token={token}")[0] == 404  # still only the two routes


def test_the_page_passes_its_token_to_its_data_requests(sentiment_run: Path) -> None:
    with serve_run_dir(str(sentiment_run), poll_s=2) as url:
        root, token = split(url)
        page = get(url)[1].decode()
        match = re.search(
            r'<script id="batchrun-live" type="application/json">\s*(.*?)\s*</script>', page, re.S
        )
        assert match is not None
        live = json.loads(match.group(1))
        assert live["url"] == f"data.json?token={token}"
        status, data = get(urllib.parse.urljoin(url, live["url"]))  # as the browser resolves it
        assert status == 200 and json.loads(data)["requests"]["total"] == 300


def test_each_server_has_its_own_token(sentiment_run: Path) -> None:
    with serve_run_dir(str(sentiment_run)) as first, serve_run_dir(str(sentiment_run)) as second:
        (root1, token1), (root2, token2) = split(first), split(second)
        assert token1 != token2
        assert get(f"{root2}data.json?token={token1}")[0] == 403
        assert get(f"{root1}data.json?token={token1}")[0] == 200


def test_the_waiting_page_needs_the_token_too(tmp_path: Path) -> None:
    with serve_run_dir(str(tmp_path / "later"), poll_s=2) as url:
        root, token = split(url)
        assert get(root)[0] == 403 and get(root + "data.json")[0] == 403
        status, page = get(url)
        assert status == 200 and b"Waiting for the run to start" in page


@pytest.fixture(scope="module")
def sim() -> Iterator[SimThread]:
    with SimThread(SimConfig()) as server:
        yield server


def all_bytes(run_dir: Path) -> Iterator[tuple[Path, bytes]]:
    for path in sorted(run_dir.rglob("*")):
        if path.is_file():
            yield path, path.read_bytes()


def test_a_served_run_prints_the_token_and_writes_it_nowhere(
    sim: SimThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    seen: dict[str, Any] = {}

    class LookWithoutAndWithTheToken(batchrun.RunHooks):
        def on_written(self, state: batchrun.RunState, batch: list[batchrun.Outcome]) -> None:
            if seen:
                return
            url = capsys.readouterr().err.split("live report at ")[1].split()[0]
            root, token = split(url)
            seen.update(url=url, token=token, without=get(root + "data.json")[0])
            seen["with"] = get(f"{root}data.json?token={token}")[0]

    rows = [{"id": f"r{i}", "text": f"row {i}"} for i in range(12)]
    out = tmp_path / "served"
    run = batchrun.run(
        rows,
        out,
        serve=True,
        hooks=LookWithoutAndWithTheToken(),
        model="gpt-4o-mini",
        prompt="Label: {text}",
        id_column="id",
        base_url=sim.base_url,
        auth="none",
        quiet=True,
    )
    assert run.status == "complete"
    assert seen["without"] == 403 and seen["with"] == 200
    token = seen["token"].encode()
    files = list(all_bytes(out))
    assert len(files) >= 5  # run.json, results.jsonl, summary.json, ...
    for path, data in files:
        assert token not in data, f"the token is in {path}"
        assert urllib.parse.quote(seen["token"]).encode() not in data, path


def test_the_serve_command_prints_the_url_with_its_token(
    sentiment_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, Any] = {}

    def look_then_interrupt(url: str) -> None:
        root, token = split(url)
        seen.update(url=url, without=get(root)[0], page=get(url)[0])
        raise KeyboardInterrupt

    monkeypatch.setattr(html_cli, "wait_until_interrupted", look_then_interrupt)
    result = CliRunner().invoke(serve_command, [str(sentiment_run)])
    assert result.exit_code == 130
    assert seen["url"] in result.stdout and "?token=" in seen["url"]
    assert seen["without"] == 403 and seen["page"] == 200
    for path, data in all_bytes(sentiment_run):
        assert split(seen["url"])[1].encode() not in data, path
