"""Prices and cost arithmetic: hand-computed bills, genai-prices values, price files."""

from __future__ import annotations

import socket
import warnings
from datetime import UTC, datetime
from pathlib import Path

import pytest

from batchrun._cost.bill import CostTotals, cost_of, cost_report, worst_case_cost
from batchrun._cost.price import GENAI_PRICES, USER_FILE, ModelPrice, PriceTier
from batchrun._cost.pricefile import read_price_file
from batchrun._cost.prices import PriceBook
from batchrun._output.usage import Usage
from batchrun._report.tables import format_cost_table
from batchrun.errors import ConfigError
from tests.conftest import read_lines

AT = datetime(2026, 11, 20, tzinfo=UTC)

RELAY_TOML = """
[models."relay-a"]
input = 2.0
cached_input = 0.5
output = 8.0
batch_input = 1.0
batch_output = 4.0

[models."local-llama"]
input = 0
output = 0

[models."half-batch"]
input = 4
cached_input = 1
output = 10
batch_multiplier = 0.5

[models."gpt-4o"]
input = 1.0
output = 3.0
"""


@pytest.fixture
def price_file(tmp_path: Path) -> str:
    path = tmp_path / "prices.toml"
    path.write_text(RELAY_TOML)
    return str(path)


@pytest.fixture
def genai_book() -> PriceBook:
    return PriceBook(at=AT)


def test_user_price_by_hand_with_cached_and_reasoning_tokens(price_file: str) -> None:
    book = PriceBook.load(price_file, at=AT)
    price = book.price_for("relay-a")
    assert price is not None and price.source == USER_FILE
    # reasoning_tokens are part of completion_tokens: billed once, as output
    usage = Usage(
        prompt_tokens=10_000, cached_tokens=4_000, completion_tokens=3_000, reasoning_tokens=1_000
    )
    cost = cost_of(usage, price)
    assert cost.input == pytest.approx(6_000 * 2.0 / 1e6)  # 0.012
    assert cost.cached_input == pytest.approx(4_000 * 0.5 / 1e6)  # 0.002
    assert cost.output == pytest.approx(3_000 * 8.0 / 1e6)  # 0.024
    assert cost.total == pytest.approx(0.038)
    # Batch API: no batch cached price given, so cached input keeps its standard rate
    assert cost.batch == pytest.approx((6_000 * 1.0 + 4_000 * 0.5 + 3_000 * 4.0) / 1e6)


def test_batch_multiplier_scales_every_price(price_file: str) -> None:
    price = PriceBook.load(price_file).price_for("half-batch")
    assert price is not None and price.batch is not None
    assert (price.batch.input, price.batch.cached_input, price.batch.output) == (2.0, 0.5, 5.0)
    cost = cost_of(Usage(prompt_tokens=1_000_000, cached_tokens=500_000), price)
    assert cost.total == pytest.approx(0.5 * 4 + 0.5 * 1)
    assert cost.batch == pytest.approx(0.5 * 2 + 0.5 * 0.5)


def test_cached_tokens_fall_back_to_input_price_without_cached_price() -> None:
    cost = cost_of(
        Usage(prompt_tokens=100, cached_tokens=40, completion_tokens=0),
        ModelPrice(input=1e6, output=0.0),
    )
    assert (cost.input, cost.cached_input) == (60.0, 40.0)
    assert cost.batch is None


def test_gpt_4o_matches_the_genai_prices_table(genai_book: PriceBook) -> None:
    # genai-prices 0.2.x: gpt-4o $2.5 in, $1.25 cached, $10 out; batch $1.25 / $5 and
    # no batch cached rate (cached keeps $1.25)
    price = genai_book.price_for("gpt-4o")
    assert price is not None and price.source == GENAI_PRICES
    assert (price.input, price.cached_input, price.output) == (2.5, 1.25, 10.0)
    assert price.batch is not None
    assert (price.batch.input, price.batch.cached_input, price.batch.output) == (1.25, 1.25, 5.0)
    cost = cost_of(Usage(prompt_tokens=1_000, cached_tokens=200, completion_tokens=500), price)
    assert cost.input == pytest.approx(800 * 2.5 / 1e6)
    assert cost.cached_input == pytest.approx(200 * 1.25 / 1e6)
    assert cost.output == pytest.approx(500 * 10 / 1e6)
    assert cost.total == pytest.approx(0.00725)
    assert cost.batch == pytest.approx((800 * 1.25 + 200 * 1.25 + 500 * 5) / 1e6)


@pytest.mark.parametrize(
    "name", ["gpt-4o", "openai/gpt-4o", "gpt-4o-2024-08-06", "OpenAI/gpt-4o-2024-11-20"]
)
def test_relay_prefixes_and_dated_names_find_genai_prices(genai_book: PriceBook, name: str) -> None:
    price = genai_book.price_for(name)
    assert price is not None
    assert price.matched == "openai:gpt-4o"


@pytest.mark.parametrize(
    "model",
    ["gpt-4o", "gpt-4o-mini", "o3-mini", "claude-3-5-sonnet-latest", "gemini-2.5-pro",
     "perplexity/sonar-deep-research"],
)  # fmt: skip
@pytest.mark.parametrize("prompt", [1_000, 250_000])
def test_cost_of_agrees_with_genai_prices_calc(model: str, prompt: int) -> None:
    from genai_prices import Usage as GenaiUsage
    from genai_prices import calc_price

    # sonar-deep-research has a separate reasoning rate; genai-prices needs the provider
    provider_id, _, model = model.rpartition("/")
    price = PriceBook(at=AT).price_for(model if not provider_id else f"{provider_id}/{model}")
    assert price is not None
    usage = Usage(
        prompt_tokens=prompt, cached_tokens=prompt // 4, completion_tokens=900, reasoning_tokens=300
    )
    theirs = GenaiUsage(
        input_tokens=prompt,
        cache_read_tokens=prompt // 4,
        output_tokens=900,
        output_reasoning_tokens=300,
    )
    mine = cost_of(usage, price)
    provider = provider_id or None
    standard = calc_price(theirs, model, provider_id=provider, genai_request_timestamp=AT)
    assert mine.total == pytest.approx(float(standard.total_price), rel=1e-12)
    if price.batch is not None:
        batch = calc_price(
            theirs,
            model,
            provider_id=provider,
            genai_request_timestamp=AT,
            price_context={"processing": "batch"},
        )
        assert mine.batch == pytest.approx(float(batch.total_price), rel=1e-12)


def test_tiered_price_picks_the_tier_per_request(genai_book: PriceBook) -> None:
    price = genai_book.price_for("gemini-2.5-pro")
    assert price is not None and price.tiers
    small = cost_of(Usage(prompt_tokens=200_000, completion_tokens=1_000), price)
    large = cost_of(Usage(prompt_tokens=200_001, completion_tokens=1_000), price)
    # genai-prices table: $1.25 / $10 up to 200k prompt tokens, $2.5 / $15 above
    assert small.total == pytest.approx((200_000 * 1.25 + 1_000 * 10) / 1e6)
    assert large.total == pytest.approx((200_001 * 2.5 + 1_000 * 15) / 1e6)

    # totals hide per-request prompt sizes: cost_report uses the base tier, and says so
    report = cost_report({"gemini-2.5-pro": Usage(prompt_tokens=400_000)}, genai_book)
    entry = report["cost_usd"]["by_model"]["gemini-2.5-pro"]
    assert entry["input"] == pytest.approx(400_000 * 1.25 / 1e6)
    assert "base tier" in entry["note"]
    # CostTotals adds request by request, so it is exact
    totals = CostTotals(genai_book)
    totals.add("gemini-2.5-pro", Usage(prompt_tokens=200_001))
    totals.add("gemini-2.5-pro", Usage(prompt_tokens=199_999))
    exact = totals.report()["cost_usd"]["by_model"]["gemini-2.5-pro"]
    assert exact["input"] == pytest.approx((200_001 * 2.5 + 199_999 * 1.25) / 1e6)
    assert "note" not in exact


def test_unknown_model_is_reported_never_priced_at_zero(
    price_file: str, genai_book: PriceBook
) -> None:
    book = PriceBook.load(price_file, at=AT)
    assert book.price_for("my-finetune-xyz") is None
    report = cost_report(
        {
            "relay-a": Usage(prompt_tokens=1_000_000),
            "my-finetune-xyz": Usage(prompt_tokens=5, completion_tokens=5),
        },
        book,
    )
    cost = report["cost_usd"]
    assert cost["by_model"]["my-finetune-xyz"] == {"total": None, "reason": "no price known"}
    assert cost["unpriced_models"] == ["my-finetune-xyz"]
    assert cost["complete"] is False
    assert cost["total"] == pytest.approx(2.0)  # priced models only
    assert report["batch_api_cost_usd"]["by_model"]["my-finetune-xyz"] is None
    assert report["batch_api_cost_usd"]["complete"] is False

    only_unknown = cost_report({"my-finetune-xyz": Usage(prompt_tokens=5)}, genai_book)
    assert only_unknown["cost_usd"]["total"] is None
    assert only_unknown["batch_api_cost_usd"]["total"] is None

    table = format_cost_table(report)
    assert "no price" in table
    assert "incomplete: no price known for my-finetune-xyz" in table


def test_explicit_zero_price_is_a_price(price_file: str) -> None:
    report = cost_report(
        {"local-llama": Usage(prompt_tokens=10**6, completion_tokens=10**6)},
        PriceBook.load(price_file),
    )
    assert report["cost_usd"]["total"] == 0.0
    assert report["cost_usd"]["complete"] is True
    assert report["cost_usd"]["by_model"]["local-llama"]["price_source"] == USER_FILE


def test_user_file_overrides_genai_prices(price_file: str) -> None:
    book = PriceBook.load(price_file, at=AT)
    price = book.price_for("gpt-4o")
    assert price is not None
    assert (price.source, price.input, price.output) == (USER_FILE, 1.0, 3.0)
    # the override also covers the names responses use for it
    assert book.price_for("gpt-4o-2024-08-06") is price
    assert book.price_for("openai/gpt-4o") is price
    # models the file does not list still come from genai-prices
    mini = book.price_for("gpt-4o-mini")
    assert mini is not None and mini.source == GENAI_PRICES


def test_price_file_problems_are_reported_together(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        """
currency = "EUR"

[models."a.b"]
input = -1
output = "cheap"
cahced_input = 0.5

[models.c]
input = 1

[models.d]
input = true
output = nan
batch_multiplier = 0.5
batch_input = 1

[models.e]
input = 1
output = 1
batch_input = 0.5
"""
    )
    with pytest.raises(ConfigError) as caught:
        read_price_file(str(path))
    message = str(caught.value)
    expected = [
        "currency: unknown key",
        'models."a.b".input: must be a finite number >= 0, got -1',
        "models.\"a.b\".output: must be a number, got 'cheap'",
        'models."a.b".cahced_input: unknown key',
        "models.c: missing output",
        "models.d.input: must be a number, got True",
        "models.d.output: must be a finite number >= 0, got nan",
        "models.d: give batch_multiplier or batch_* prices, not both",
        "models.e: batch prices need both batch_input and batch_output",
    ]
    for fragment in expected:
        assert fragment in message
    assert f"{path}: 9 problems" in message
    assert message.count(str(path)) == 10  # every problem line names the file


def test_a_price_table_names_its_origin_and_key_path() -> None:
    from batchrun._cost.pricefile import parse_price_table

    with pytest.raises(ConfigError, match=r"job.toml: prices.models.x: missing input"):
        parse_price_table({"models": {"x": {"output": 1}}}, "job.toml", key_prefix="prices.")


def test_unreadable_or_broken_price_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read price file"):
        PriceBook.load(str(tmp_path / "missing.toml"))
    broken = tmp_path / "broken.toml"
    broken.write_text("[models.x\ninput = 1\n")
    with pytest.raises(ConfigError, match=r"broken.toml: not valid TOML"):
        PriceBook.load(str(broken))


def test_example_price_file_is_valid() -> None:
    """The example shipped in the package (``batchrun prices --example``)."""
    from importlib import resources

    shipped = resources.files("batchrun._cost").joinpath("prices.example.toml")
    prices = read_price_file(str(shipped))
    deepseek = prices["deepseek-chat"]
    assert (deepseek.input, deepseek.cached_input, deepseek.output) == (0.27, 0.07, 1.10)
    assert prices["llama-3.1-8b-local"].output == 0.0
    ft = prices["my-org/gpt-4o-mini-ft"]
    assert ft.batch is not None and ft.batch.output == pytest.approx(0.6)


def test_worst_case_cost_has_no_cache_discount(price_file: str) -> None:
    book = PriceBook.load(price_file, at=AT)
    assert worst_case_cost("relay-a", 1_000, 2_000, book) == pytest.approx(
        (1_000 * 2.0 + 2_000 * 8.0) / 1e6
    )
    assert worst_case_cost("nobody-knows-me", 1_000, 2_000, book) is None
    tiered = PriceBook(
        {
            "t": ModelPrice(
                input=1.0, output=2.0, tiers=(PriceTier(above=100, input=10.0, output=20.0),)
            )
        },
        use_genai_prices=False,
    )
    assert worst_case_cost("t", 100, 10, tiered) == pytest.approx((100 * 1 + 10 * 2) / 1e6)
    assert worst_case_cost("t", 101, 10, tiered) == pytest.approx((101 * 10 + 10 * 20) / 1e6)


def test_cost_totals_adds_requests_and_tracks_spend(price_file: str) -> None:
    book = PriceBook.load(price_file, at=AT)
    totals = CostTotals(book)
    first = totals.add("relay-a", Usage(prompt_tokens=1_000, completion_tokens=100))
    totals.add("relay-a", Usage(prompt_tokens=3_000, cached_tokens=1_000, completion_tokens=300))
    assert totals.add("mystery", Usage(prompt_tokens=10)) is None
    assert first is not None and first.total == pytest.approx((2_000 + 800) / 1e6)
    assert totals.spent == pytest.approx(
        (1_000 * 2 + 100 * 8 + 2_000 * 2 + 1_000 * 0.5 + 300 * 8) / 1e6
    )
    assert totals.unpriced == {"mystery": 1}
    summed = cost_report(
        {
            "relay-a": Usage(prompt_tokens=4_000, cached_tokens=1_000, completion_tokens=400),
            "mystery": Usage(prompt_tokens=10),
        },
        book,
    )
    assert totals.report() == summed


def test_time_of_day_prices_use_the_peak_rate() -> None:
    # genai-prices: deepseek-chat is $0.27 / $0.07 / $1.10 from 00:30 to 16:30 UTC and
    # half that off-peak; a run spans hours, so the peak rate is used at any hour
    for hour in (3, 20):
        price = PriceBook(at=AT.replace(hour=hour)).price_for("deepseek-chat")
        assert price is not None
        assert (price.input, price.cached_input, price.output) == (0.27, 0.07, 1.10)
        assert price.note is not None and "peak" in price.note


def test_report_totals_and_batch_block(price_file: str, genai_book: PriceBook) -> None:
    book = PriceBook.load(price_file, at=AT)
    report = cost_report(
        {
            "relay-a": Usage(prompt_tokens=1_000_000, cached_tokens=0, completion_tokens=0),
            "deepseek-chat": Usage(prompt_tokens=1_000_000),  # genai-prices, no batch price
        },
        book,
    )
    cost = report["cost_usd"]
    assert cost["total"] == pytest.approx(2.0 + 0.27)
    assert cost["input"] == pytest.approx(2.27)
    assert cost["by_model"]["deepseek-chat"]["priced_as"] == "deepseek:deepseek-chat"
    assert "peak" in cost["by_model"]["deepseek-chat"]["note"]
    batch = report["batch_api_cost_usd"]
    assert batch["total"] == pytest.approx(1.0)
    assert batch["standard_cost_of_same_models"] == pytest.approx(2.0)
    assert batch["by_model"] == {"deepseek-chat": None, "relay-a": 1.0}
    assert batch["models_without_batch_price"] == ["deepseek-chat"]
    assert batch["complete"] is False


def test_batch_rows_cost_twice_as_much_at_online_prices() -> None:
    # a Batch API run pays batch prices; standard_cost_of_same_models is what the same
    # tokens cost sent online, never the batch total again (issue 23, item 19)
    price = ModelPrice(input=2.0, output=8.0, batch=ModelPrice(input=1.0, output=4.0))
    totals = CostTotals(PriceBook({"m": price}, use_genai_prices=False))
    usage = Usage(prompt_tokens=1_000_000, completion_tokens=250_000, total_tokens=1_250_000)
    totals.add("m", usage, via_batch=True)
    totals.add("m", usage, via_batch=True)
    report = totals.report()
    assert report["cost_usd"]["total"] == 4.0 and report["cost_usd"]["by_mode"]["batch"] == 4.0
    batch = report["batch_api_cost_usd"]
    assert batch["total"] == 4.0 and batch["standard_cost_of_same_models"] == 8.0
    # one more row sent online: paid at online prices, the same figure online
    totals.add("m", usage)
    batch = totals.report()["batch_api_cost_usd"]
    assert batch["total"] == 6.0 and batch["standard_cost_of_same_models"] == 12.0
    # and the usage totals of each way, priced as a comparison of variants prices them
    from batchrun._cost.bill import cost_of_totals

    assert cost_of_totals({"m": usage}, totals.book, via_batch=True) == (2.0, [])
    assert cost_of_totals({"m": usage}, totals.book) == (4.0, [])


def test_cost_table_columns_line_up(price_file: str) -> None:
    report = cost_report(
        {
            "relay-a": Usage(prompt_tokens=123_456, completion_tokens=7_890),
            "a-much-longer-model-name": Usage(prompt_tokens=1),
        },
        PriceBook.load(price_file, at=AT),
    )
    lines = format_cost_table(report).splitlines()
    assert lines[0].split() == ["model", "input", "cached", "output", "total", "batch", "API"]
    table = lines[:4]  # header, two models, total
    assert len({len(line) for line in table}) == 1
    assert table[-1].startswith("total")
    assert "$0.2469" in lines[1] or "$0.2469" in lines[2]  # 123,456 x $2 / M


def test_lookups_stay_offline_even_if_someone_fetched_prices(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from genai_prices import data_snapshot

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("price lookup tried the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    # a fetched snapshot installed by genai-prices' updater must not change our prices
    monkeypatch.setattr(
        data_snapshot,
        "_custom_snapshot",
        data_snapshot.DataSnapshot(providers=[], from_auto_update=True),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        price = PriceBook(at=AT).price_for("gpt-4o-mini")
    assert price is not None and price.input == 0.15


def test_lookups_are_cached(genai_book: PriceBook) -> None:
    assert genai_book.price_for("gpt-4o") is genai_book.price_for("gpt-4o")
    assert genai_book.price_for("nope-1") is None
    assert "nope-1" in genai_book._cache


# ------------------------------------------------------- prices in a job file, in Python
# (issue 23 item 18: `[prices.models."NAME"]` was refused as an unknown key, and
# ``prices=`` took nothing but a path)

INLINE_JOB = """
[input]
path = "rows.jsonl"

[endpoint]
base_url = "sim"

[request]
model = "my-local"
temperature = 0
max_tokens = 20

[prompt]
user = "Say {text}"

[limits]
max_cost = 1.0
"""


def _rows(tmp_path: Path) -> Path:
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(f'{{"text": "row {i}"}}\n' for i in range(6)))
    return path


def _billed(run_dir: Path, input_price: float, output_price: float) -> float:
    """What the answers in results.jsonl cost at these prices, recounted by hand."""
    usage = [line["response"]["body"]["usage"] for line in read_lines(run_dir / "results.jsonl")]
    prompt = sum(u["prompt_tokens"] for u in usage)
    completion = sum(u["completion_tokens"] for u in usage)
    return (prompt * input_price + completion * output_price) / 1e6


def test_inline_prices_in_a_job_file_price_the_estimate_the_budget_and_the_run(
    tmp_path: Path,
) -> None:
    import orjson

    import batchrun
    from batchrun._report.text import status_report

    _rows(tmp_path)
    job = tmp_path / "job.toml"
    job.write_text(INLINE_JOB + '\n[prices.models."my-local"]\ninput = 2.0\noutput = 8.0\n')
    estimate = batchrun.estimate(job=job).to_dict()
    assert estimate["by_model"]["my-local"]["price_source"] == "inline prices"
    assert estimate["cost_usd"]["high"] > 0 and estimate["cost_usd"]["complete"]
    # under a cap, an unpriced model is refused before anything is sent: this one has a price
    run = batchrun.run_job(job, out_dir=tmp_path / "out", quiet=True)
    assert run.status == "complete", run.notes
    cost = run.summary["cost_usd"]
    assert cost["by_model"]["my-local"]["price_source"] == "inline prices"
    assert cost["total"] == pytest.approx(_billed(tmp_path / "out", 2.0, 8.0), abs=1e-12)
    assert run.summary["budget"]["spent_usd"] == pytest.approx(cost["total"], abs=1e-6)
    # run.json carries the prices, so a report made later prices the same
    info = orjson.loads((tmp_path / "out" / "run.json").read_bytes())
    assert info["options"]["prices"] == {
        "file": None,
        "models": {"my-local": {"input": 2.0, "output": 8.0}},
    }
    summary_path = tmp_path / "out" / "summary.json"
    summary = orjson.loads(summary_path.read_bytes())
    summary.pop("cost_usd")  # an older summary: priced again from run.json's settings
    summary_path.write_bytes(orjson.dumps(summary))
    again = status_report(str(tmp_path / "out"))
    assert again["cost_source"] == "usage totals"
    assert again["cost_usd"]["total"] == pytest.approx(cost["total"], abs=1e-12)


def test_inline_prices_win_over_the_job_files_price_file(tmp_path: Path) -> None:
    from batchrun._cost.price import INLINE
    from batchrun._jobs.jobfile import load_job

    (tmp_path / "prices.toml").write_text(
        '[models."my-local"]\ninput = 9\noutput = 9\n[models."other"]\ninput = 1\noutput = 1\n'
    )
    _rows(tmp_path)
    job = tmp_path / "job.toml"
    job.write_text(
        INLINE_JOB + '\n[prices]\nfile = "prices.toml"\n'
        '[prices.models."my-local"]\ninput = 2.0\noutput = 8.0\nbatch_multiplier = 0.5\n'
    )
    book = PriceBook.load(load_job(job).settings().prices)
    mine = book.price_for("my-local")
    assert mine is not None and (mine.source, mine.input, mine.output) == (INLINE, 2.0, 8.0)
    assert mine.batch is not None and mine.batch.output == 4.0
    other = book.price_for("other")
    assert other is not None and (other.source, other.input) == (USER_FILE, 1.0)
    # a file alone stays a path, as --prices FILE gives it
    job.write_text(INLINE_JOB + '\n[prices]\nfile = "prices.toml"\n')
    assert load_job(job).settings().prices == str(tmp_path / "prices.toml")


def test_bad_inline_prices_are_reported_with_their_key_path(tmp_path: Path) -> None:
    import batchrun
    from batchrun._jobs.jobfile import load_job
    from batchrun.errors import JobFileError

    _rows(tmp_path)
    job = tmp_path / "job.toml"
    job.write_text(
        INLINE_JOB + '\n[prices]\nfiel = "x.toml"\n'
        '[prices.models."my-local"]\ninptu = 2.0\noutput = -1\n'
    )
    with pytest.raises(JobFileError) as caught:
        load_job(job)
    problems = "\n".join(caught.value.problems)
    assert "prices.fiel: unknown key (did you mean 'file'?)" in problems
    assert "prices.models.my-local.inptu: unknown key" in problems
    assert "prices.models.my-local.output: must be a finite number >= 0" in problems
    assert "prices.models.my-local: missing input" in problems
    with pytest.raises(ConfigError, match=r"prices=\.m\.input: must be a number"):
        batchrun.estimate(
            _rows(tmp_path), prompt="{text}", model="m", prices={"m": {"input": "x", "output": 1}}
        )
    with pytest.raises(ConfigError, match=r"prices=: file not found: nowhere.toml"):
        batchrun.estimate(_rows(tmp_path), prompt="{text}", model="m", prices="nowhere.toml")


def test_prices_in_python_a_dict_of_models_or_a_path(tmp_path: Path) -> None:
    import orjson

    import batchrun

    rows = [{"text": f"row {i}"} for i in range(5)]
    common = {"prompt": "Say {text}", "model": "my-local", "base_url": "sim", "quiet": True}
    common |= {"max_tokens": 20, "max_cost": 1.0}
    run = batchrun.run(
        rows, tmp_path / "a", prices={"my-local": {"input": 2.0, "output": 8.0}}, **common
    )
    assert run.status == "complete", run.notes
    assert run.summary["cost_usd"]["total"] == pytest.approx(
        _billed(tmp_path / "a", 2.0, 8.0), abs=1e-12
    )
    info = orjson.loads((tmp_path / "a" / "run.json").read_bytes())
    assert info["options"]["prices"]["models"] == {"my-local": {"input": 2.0, "output": 8.0}}
    # the run directory, opened again, has the same settings (prices included)
    assert batchrun.open(tmp_path / "a")._settings().prices == run._settings().prices
    price_file = tmp_path / "prices.toml"
    price_file.write_text('[models."my-local"]\ninput = 2.0\noutput = 8.0\n')
    by_path = batchrun.run(rows, tmp_path / "b", prices=price_file, **common)
    assert by_path.summary["cost_usd"]["total"] == pytest.approx(
        run.summary["cost_usd"]["total"], abs=1e-12
    )
    # the file's shape works in Python too
    shaped = {"models": {"my-local": {"input": 2.0, "output": 8.0}}}
    table = batchrun.estimate(rows, prompt="Say {text}", model="my-local", prices=shaped)
    assert table.to_dict()["by_model"]["my-local"]["price_source"] == "inline prices"
