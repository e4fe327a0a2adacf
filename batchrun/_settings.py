"""Every setting of a run, declared once.

`Settings` is a frozen dataclass; each field is one setting, declared with `setting()`:
its default, its help text, where it lives in a job file (``section``/``key``), its
command-line flags, its environment variable, whether it shapes the requests (the
resume fingerprint), and the check its value must pass (`batchrun._checks`). Everything
else is derived from these declarations: the click options of ``batchrun run``
(`batchrun._cli.options`), the job-file keys and their "did you mean" checking
(`batchrun._jobs.jobfile`), the Python keywords of `batchrun.run` (`Settings.build`),
and the fingerprint run.json records (`Settings.fingerprint`). Every value passes its
check whenever settings are built, whoever builds them (`Settings.__post_init__`), and
every rule between settings is in one place, `Settings.problems`.

Adding a setting is one declaration::

    poll_interval: float = setting(
        60.0, section="batch", check=checks.positive_number,
        help="Seconds between two looks at a running batch.",
    )

and it is at once ``--poll-interval`` (a flag named after it, unless it names its own
``flags``), ``[batch] poll_interval`` and ``batchrun.run(..., poll_interval=30)``.

    >>> s = Settings.build(input="req.jsonl", model="gpt-4o-mini", concurrency="8")
    >>> s.concurrency, s.model
    (8, 'gpt-4o-mini')
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Protocol

from batchrun import _checks as checks
from batchrun._apis import APIS, CHAT, EMBEDDING_REQUEST_INPUTS, EMBEDDINGS, RESPONSES
from batchrun._checks import Check, Invalid, Where
from batchrun._endpoint import SIM, endpoint_identity
from batchrun._response_formats import response_format_setting
from batchrun._values import (
    CASCADE_WHEN,
    CONFIDENCE_METHODS,
    DEFAULT_ENDPOINT,
    Cascade,
    Confidence,
    Endpoint,
    Evaluation,
    Prices,
    Quota,
    ResponseFormat,
    jsonable,
    mask_header,
)
from batchrun.errors import ConfigError

DEFAULT_BASE_URL = "https://api.openai.com/v1"
SPEC = "batchrun"


@dataclass(frozen=True)
class Spec:
    """How one setting is given and checked (see the module docstring)."""

    help: str
    section: str | None = None
    """Job-file table ("endpoint", "limits", ...); None: not in job files."""
    key: str | None = None
    """Key in that table (default: the field's name); "*": the whole table."""
    flags: tuple[str, ...] | None = None
    """Command-line flags. None: derived from the name (``id_column`` ->
    ``--id-column``) for a setting that is one job-file key; () for none.
    ``("--stream/--no-stream",)`` for a toggle."""
    kind: str = "value"
    """On the command line: "value", "flag" (present = True), "toggle", "multiple",
    "optional" (a value that may be left out: ``--serve`` or ``--serve 8080``), "json"
    (JSON text, or a file holding it)."""
    metavar: str | None = None
    flag_value: str = "0"
    """"optional" kind: the value a bare flag gives (to its check)."""
    envvar: str | None = None
    fingerprint: bool = False
    """It changes what is sent: a resume with another value is refused."""
    check: Check | None = None
    aliases: tuple[str, ...] = ()
    """Other Python keyword names for it."""
    choices: tuple[str, ...] | None = None
    parts: tuple[Part, ...] = ()
    """A table setting's keys that have options of their own (``[eval] field`` ->
    ``--eval-field``); given on the command line they are laid over the job file's
    table key by key (`Partial`)."""
    part_prefix: str | None = None
    """Before a part's key in its derived flag (None: the section and a dash)."""
    argument: str | None = None
    """The command line's positional argument that gives it (``INPUT``), if any."""
    merge: str = "replace"
    """How a given value meets the job file's: "replace", "keys" (a table whose
    given keys are laid over the file's, the others kept: [request], [prompts]) or
    "tables" (a table of tables, each laid over the file's table of that name key by
    key: [endpoints.NAME])."""

    def part_flags(self, part: Part) -> tuple[str, ...]:
        """A part's flags: its own, or ``--<prefix><key>`` (a toggle: and ``--no-...``)."""
        if part.flags is not None:
            return part.flags
        prefix = self.part_prefix if self.part_prefix is not None else f"{self.section}-"
        flag = f"--{prefix}{part.key}".replace("_", "-")
        return (f"{flag}/--no-{flag[2:]}",) if part.kind == "toggle" else (flag,)


@dataclass(frozen=True)
class Part:
    """One key of a table setting with an option of its own: ``[eval] field`` is
    ``--eval-field``, ``[request] temperature`` is ``--temperature``. ``check`` turns
    the option's text into the key's value (and refuses a bad one, naming the flag);
    the whole table is checked again once laid over the job file's."""

    key: str
    """The key in the table; "*": any key, given as KEY=VALUE (``--body``); "*.FIELD":
    FIELD of any key's table, given as KEY=VALUE (``--endpoint NAME=URL``)."""
    help: str
    flags: tuple[str, ...] | None = None
    """None: derived (`Spec.part_flags`)."""
    kind: str = "value"
    """"value", "toggle", "multiple" or "pairs" (KEY=VALUE, repeatable)."""
    metavar: str | None = None
    check: Check | None = None
    choices: tuple[str, ...] | None = None


class Partial(dict[str, Any]):
    """Some keys of a table setting (the command line's parts), to lay over the table
    a job file gives (`batchrun._jobs.jobfile.merge`), not to replace it."""


def setting(default: Any = None, *, factory: Callable[[], Any] | None = None, **spec: Any) -> Any:
    """One `Settings` field: its default and its `Spec`."""
    meta = {SPEC: Spec(**spec)}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True, kw_only=True)
class Settings:
    # -- input ---------------------------------------------------------------------
    input: Any = setting(
        help="The requests or dataset rows: a JSONL, Parquet, CSV or TSV file (.gz too for "
        "JSONL, CSV and TSV), a directory or glob of them, or the same on object storage "
        "(s3://, gs://, abfs://, hf://; Python: also rows in memory).",
        section="input",
        key="path",
        argument="INPUT",
        check=checks.input_file,
    )
    id_column: str | None = setting(
        help="Input column holding each row's id (custom_id); without it: row-<n>.",
        section="input",
        flags=("--id-column",),
        metavar="COLUMN",
        check=checks.text,
        fingerprint=True,
    )
    column_types: Mapping[str, str] | None = setting(
        help="CSV/TSV input: a column's type, COLUMN=TYPE (repeatable; string, int, float, "
        "bool or json). Other columns are text exactly as written (ids keep leading zeros).",
        section="input",
        flags=("--column-type",),
        kind="multiple",
        metavar="COLUMN=TYPE",
        check=checks.column_types,
        fingerprint=True,
    )
    skip_invalid: bool = setting(
        False,
        help="Write bad input rows to invalid.jsonl and run the rest.",
        section="input",
        flags=("--skip-invalid",),
        kind="flag",
        check=checks.boolean,
    )
    limit: int | None = setting(
        help="A pilot: run only the first N rows; a later run without it continues the "
        "same directory and sends only the rest.",
        section="input",
        flags=("--limit",),
        metavar="N",
        check=checks.positive_int,
    )
    sample: int | None = setting(
        help="A pilot on a reproducible random sample of N rows (see --seed).",
        section="input",
        flags=("--sample",),
        metavar="N",
        check=checks.positive_int,
    )
    seed: int = setting(
        0,
        help="Seed of --sample: the same seed picks the same rows [default: 0].",
        section="input",
        flags=("--seed",),
        check=checks.at_least(0),
    )
    # -- endpoint ------------------------------------------------------------------
    base_url: str = setting(
        DEFAULT_BASE_URL,
        help=f"API base URL, or 'sim' for the built-in simulator [default: {DEFAULT_BASE_URL}].",
        section="endpoint",
        flags=("--base-url",),
        metavar="URL",
        envvar="OPENAI_BASE_URL",
        check=checks.base_url,
    )
    api_key_env: str = setting(
        "OPENAI_API_KEY",
        help="Name of the environment variable holding the API key [default: OPENAI_API_KEY].",
        section="endpoint",
        flags=("--api-key-env",),
        check=checks.env_name,
    )
    api_key_file: str | None = setting(
        help="A file holding the API key (read at start, never copied).",
        section="endpoint",
        flags=("--api-key-file",),
        check=checks.existing_file,
    )
    auth: str = setting(
        "bearer",
        help="'bearer': Authorization: Bearer KEY; 'raw': Authorization: KEY; 'none'.",
        section="endpoint",
        flags=("--auth",),
        choices=checks.AUTH_STYLES,
        check=checks.choice(*checks.AUTH_STYLES),
    )
    auth_header: str = setting(
        "Authorization",
        help="Header that carries the key, e.g. api-key (Azure).",
        section="endpoint",
        flags=("--auth-header",),
        metavar="NAME",
        check=checks.text,
    )
    headers: tuple[tuple[str, str], ...] = setting(
        (),
        help="Extra header 'Name: value' (repeatable).",
        section="endpoint",
        flags=("-H", "--header"),
        kind="multiple",
        metavar="'NAME: VALUE'",
        check=checks.headers,
    )
    max_response_bytes: int = setting(
        64 * 1024 * 1024,
        help="Largest response body accepted [default: 64 MiB].",
        section="endpoint",
        flags=("--max-response-bytes",),
        check=checks.at_least(1024),
    )
    endpoints: Mapping[str, Endpoint] = setting(
        factory=dict,
        help="A pool of endpoints serving the job: a TOML file of [endpoints.NAME] tables "
        "(each takes the [endpoint] keys and rpm, tpm, concurrency, weight, models, prices, "
        "batch); laid over the job file's, name by name.",
        section="endpoints",
        key="*",
        flags=("--endpoints",),
        metavar="FILE",
        check=checks.endpoints,
        merge="tables",
        parts=(
            Part(
                "*.base_url",
                "An endpoint of the pool, NAME=URL (repeatable; 'sim' for a simulator of its "
                "own): it takes --api-key-env's key unless --endpoint-key-env says another.",
                flags=("--endpoint",),
                kind="pairs",
                metavar="NAME=URL",
                check=checks.endpoint_pairs(checks.base_url, "NAME=URL"),
            ),
            Part(
                "*.api_key_env",
                "The environment variable holding an endpoint's key, NAME=VARIABLE (repeatable).",
                flags=("--endpoint-key-env",),
                kind="pairs",
                metavar="NAME=VARIABLE",
                check=checks.endpoint_pairs(checks.env_name, "NAME=VARIABLE"),
            ),
        ),
    )
    # -- request -------------------------------------------------------------------
    model: str | tuple[str, ...] | None = setting(
        help="Model for rows that name none. Several (repeat --model; a list in a job "
        "file) run every row once per model, to compare them.",
        section="request",
        flags=("-m", "--model"),
        kind="multiple",
        metavar="MODEL",
        check=checks.model_names,
        fingerprint=True,
    )
    api: str = setting(
        CHAT,
        help="The API a dataset job's rows go to: 'chat' (chat completions), 'embeddings' "
        "(a vector per row; rows are packed many to a request) or 'responses' (OpenAI's "
        "Responses API) [default: chat]. A request file's lines name theirs (url).",
        section="request",
        flags=("--api",),
        choices=APIS,
        check=checks.choice(*APIS),
        fingerprint=True,
    )
    embed_batch: int | None = setting(
        help="--api embeddings: most rows packed into one request [default: as many as fit "
        f"{EMBEDDING_REQUEST_INPUTS:,} inputs and the provider's tokens per request].",
        section="request",
        flags=("--embed-batch",),
        metavar="N",
        check=checks.positive_int,
    )
    stream: bool = setting(
        False,
        help="Stream every row (answers are assembled into the same object).",
        section="request",
        flags=("--stream/--no-stream",),
        kind="toggle",
        check=checks.boolean,
        fingerprint=True,
    )
    request: Mapping[str, Any] = setting(
        factory=dict,
        help="Body fields every request gets (temperature, max_tokens, ...).",
        section="request",
        key="*",
        check=checks.body_defaults,
        fingerprint=True,
        merge="keys",
        part_prefix="",
        parts=(
            Part(
                "temperature",
                "Sampling temperature, 0 to 2 (0: the steadiest answers, "
                "which the cache and in-run dedupe may reuse).",
                metavar="FLOAT",
                check=checks.body_field("temperature"),
            ),
            Part(
                "top_p",
                "Nucleus sampling: the share of probability mass sampled from.",
                metavar="FLOAT",
                check=checks.body_field("top_p"),
            ),
            Part(
                "max_tokens",
                "Most tokens per answer (also what a request can cost at most).",
                metavar="N",
                check=checks.body_field("max_tokens"),
            ),
            Part(
                "max_completion_tokens",
                "Most tokens per answer, reasoning included "
                "(reasoning models; instead of --max-tokens).",
                metavar="N",
                check=checks.body_field("max_completion_tokens"),
            ),
            Part(
                "seed",
                "The body's seed: repeatable sampling where the provider supports "
                "it (--seed is --sample's).",
                flags=("--request-seed",),
                metavar="N",
                check=checks.body_field("seed"),
            ),
            Part(
                "n",
                "Answers per request (results.parquet keeps the first).",
                metavar="N",
                check=checks.body_field("n"),
            ),
            Part(
                "stop",
                "A sequence that ends the answer (repeatable).",
                kind="multiple",
                metavar="TEXT",
                check=checks.body_field("stop"),
            ),
            Part(
                "presence_penalty",
                "-2 to 2: penalise tokens already present.",
                metavar="FLOAT",
                check=checks.body_field("presence_penalty"),
            ),
            Part(
                "frequency_penalty",
                "-2 to 2: penalise frequent tokens.",
                metavar="FLOAT",
                check=checks.body_field("frequency_penalty"),
            ),
            Part(
                "reasoning_effort",
                "Reasoning models: minimal, low, medium or high.",
                metavar="LEVEL",
                check=checks.body_field("reasoning_effort"),
            ),
            Part(
                "*",
                "Any other body field, FIELD=VALUE (repeatable; VALUE is read as "
                "JSON when it is JSON, else as text): --body top_k=5.",
                flags=("--body",),
                kind="pairs",
                metavar="FIELD=VALUE",
                check=checks.body_pairs,
            ),
        ),
    )
    # -- prompt (dataset jobs) -------------------------------------------------------
    system: str | None = setting(
        help="System message template (dataset rows; {column} placeholders).",
        section="prompt",
        check=checks.template_text,
        fingerprint=True,
    )
    prompt: Any = setting(
        help="User message template ({column} placeholders), or (Python) a function "
        "row -> messages or -> body.",
        section="prompt",
        key="user",
        aliases=("user",),
        check=checks.prompt,
        fingerprint=True,
    )
    embed_input: str | None = setting(
        help="--api embeddings: the text to embed, a template ({column} placeholders: "
        "'{title}\\n{text}'); --prompt is the same.",
        section="prompt",
        key="input",
        flags=("--embed-input",),
        metavar="TEMPLATE",
        check=checks.template_text,
        fingerprint=True,
    )
    messages: tuple[dict[str, str], ...] | None = setting(
        help="Message templates [{role, content}, ...] (instead of system/prompt): JSON "
        "text or a .json file holding it.",
        section="prompt",
        kind="json",
        metavar="JSON|FILE",
        check=checks.messages,
        fingerprint=True,
    )
    prompts: Mapping[str, Any] = setting(
        factory=dict,
        help="Named prompt variants (NAME=TEMPLATE, repeatable): every row runs once per "
        "variant (and per model), to compare them.",
        section="prompts",
        key="*",
        merge="keys",
        flags=("--variant",),
        kind="multiple",
        metavar="NAME=TEMPLATE",
        check=checks.prompt_variants,
        fingerprint=True,
    )
    template_engine: str = setting(
        "auto",
        help="Prompt templates: 'format' ({column}), 'jinja' (Jinja2, sandboxed: "
        "conditions, loops, few-shot examples) or 'auto' (Jinja when the template "
        "uses {{ }} or {% %}) [default: auto].",
        section="prompt",
        key="engine",
        flags=("--template-engine",),
        choices=("auto", "format", "jinja"),
        check=checks.choice("auto", "format", "jinja"),
        fingerprint=True,
    )
    examples: str | None = setting(
        help="Few-shot examples for Jinja templates: a JSON list or JSONL file, as "
        "`examples` in the template.",
        section="prompt",
        key="examples_file",
        flags=("--examples",),
        check=checks.existing_file,
        fingerprint=True,
    )
    response_format: ResponseFormat | None = setting(
        help="The answer's format: json_object, text, or a JSON Schema file (a plain schema, "
        "or OpenAI's json_schema envelope) whose fields become typed columns in "
        "results.parquet; --schema FILE is the same. Python: also a Pydantic model class "
        "or a schema dict.",
        section="response_format",
        key="*",
        flags=("--response-format", "--schema"),
        metavar="FORMAT|FILE",
        check=response_format_setting,
        fingerprint=True,
    )
    # -- limits --------------------------------------------------------------------
    concurrency: int = setting(
        64,
        help="Max requests in flight [default: 64].",
        section="limits",
        flags=("-c", "--concurrency"),
        check=checks.positive_int,
    )
    rpm: Quota = setting(
        factory=Quota,
        help="Requests per minute for each model, or for one (repeatable: --rpm 500 "
        "--rpm gpt-4.1=30).",
        section="limits",
        flags=("--rpm",),
        kind="multiple",
        metavar="[MODEL=]N",
        check=checks.quota,
    )
    tpm: Quota = setting(
        factory=Quota,
        help="Tokens per minute, like --rpm.",
        section="limits",
        flags=("--tpm",),
        kind="multiple",
        metavar="[MODEL=]N",
        check=checks.quota,
    )
    max_cost: float | None = setting(
        help="Stop before spending more than this many USD.",
        section="limits",
        flags=("--max-cost",),
        check=checks.non_negative_number,
    )
    context_window: Quota = setting(
        factory=Quota,
        help="Context window in tokens of every model, or of one (repeatable: "
        "--context-window 32768 --context-window my-model=8192) [default: genai-prices' "
        "table; a model it does not know is not checked]. A row whose prompt and max "
        "tokens do not fit is a bad row, found before anything is sent.",
        section="limits",
        flags=("--context-window",),
        kind="multiple",
        metavar="[MODEL=]N",
        check=checks.quota,
    )
    quality_breaker: float = setting(
        0.8,
        help="Stop when the run's answers are unusable over this share with 95% "
        "confidence (20 answers at least); 0 turns it off [default: 0.8].",
        section="limits",
        flags=("--quality-breaker",),
        check=checks.share,
    )
    # -- retry ---------------------------------------------------------------------
    max_attempts: int = setting(
        10,
        help="Attempts per request, the first included [default: 10].",
        section="retry",
        flags=("--max-attempts",),
        check=checks.positive_int,
    )
    timeout: float = setting(
        120.0,
        help="Seconds to wait for a response; for streams, between chunks [default: 120].",
        section="retry",
        flags=("--timeout",),
        check=checks.positive_number,
    )
    total_timeout: float = setting(
        1800.0,
        help="Overall cap on one attempt in seconds [default: 1800].",
        section="retry",
        flags=("--total-timeout",),
        check=checks.positive_number,
    )
    drain_timeout: float = setting(
        30.0,
        help="Seconds in-flight requests get after Ctrl-C [default: 30].",
        section="retry",
        flags=("--drain-timeout",),
        check=checks.non_negative_number,
    )
    retry_failed: bool = setting(
        False,
        help="Retry rows that failed for good in an earlier run.",
        flags=("--retry-failed",),
        kind="flag",
        check=checks.boolean,
    )
    retry_bad_answers: bool = setting(
        False,
        help="Send again the rows whose answer was unusable (truncated, refused, off-schema).",
        flags=("--retry-bad-answers",),
        kind="flag",
        check=checks.boolean,
    )
    force: bool = setting(
        False,
        help="Resume even if the input or request options changed (changed rows are sent again).",
        flags=("--force",),
        kind="flag",
        check=checks.boolean,
    )
    # -- output --------------------------------------------------------------------
    out_dir: str | None = setting(
        help="Run directory (results, errors, summary).",
        section="output",
        key="dir",
        flags=("-o", "--out"),
        metavar="DIR",
        check=checks.run_dir_path,
    )
    write_parquet: bool = setting(
        True,
        help="Write results.parquet, one row per input row [default: on].",
        section="output",
        key="parquet",
        flags=("--parquet/--no-parquet",),
        kind="toggle",
        check=checks.boolean,
    )
    progress_interval: float = setting(
        10.0,
        help="Seconds between progress lines when not on a terminal [default: 10].",
        section="output",
        flags=("--progress-interval",),
        check=checks.positive_number,
    )
    quiet: bool = setting(
        False,
        help="Print nothing but errors.",
        section="output",
        flags=("-q", "--quiet"),
        kind="flag",
        check=checks.boolean,
    )
    serve: int | None = setting(
        help="Serve the live report page on 127.0.0.1 while the run goes (bare --serve: "
        "a free port; the URL printed carries the token every request needs).",
        section="output",
        flags=("--serve",),
        kind="optional",
        metavar="[PORT]",
        check=checks.port,
    )
    commit_interval: float = setting(
        5.0,
        help="A run directory on object storage (-o s3://, gs://, abfs://): seconds at most "
        "between "
        "two commits of the answered rows; a crash loses at most these seconds' (or "
        "--commit-rows') answers [default: 5].",
        section="output",
        flags=("--commit-interval",),
        check=checks.positive_number,
    )
    commit_rows: int = setting(
        1000,
        help="A run directory on object storage: commit once this many rows were "
        "answered since the last commit [default: 1000].",
        section="output",
        flags=("--commit-rows",),
        check=checks.positive_int,
    )
    summary_interval: float = setting(
        2.0,
        help="Seconds between two summary.json checkpoints.",
        check=checks.positive_number,
    )
    # -- paying once -------------------------------------------------------------------
    cache: str | None = setting(
        help="Keep answers in a response cache shared by runs (a directory or .sqlite "
        "file; bare --cache: $BATCHRUN_CACHE or ~/.cache/batchrun): a request found "
        "there is answered from it, free.",
        section="cache",
        key="dir",
        flags=("--cache",),
        kind="optional",
        metavar="[DIR]",
        flag_value=checks.DEFAULT_CACHE_FLAG,
        check=checks.cache_location,
    )
    cache_policy: str = setting(
        "deterministic",
        help="Which requests the cache and in-run dedupe may answer: 'deterministic' "
        "(temperature 0 or a seed), 'all', or 'off' [default: deterministic].",
        section="cache",
        key="policy",
        flags=("--cache-policy",),
        choices=("deterministic", "all", "off"),
        check=checks.choice("deterministic", "all", "off"),
    )
    dedupe: bool = setting(
        True,
        help="Send identical requests of one run once and give every row the answer "
        "(by the cache policy) [default: on].",
        section="cache",
        flags=("--dedupe/--no-dedupe",),
        kind="toggle",
        check=checks.boolean,
    )
    # -- Batch API -------------------------------------------------------------------
    mode: str = setting(
        "online",
        help="Send through the provider's Batch API (about half price, answers within "
        "24 h) instead of request by request.",
        section="",
        flags=("--batch-api",),
        kind="flag",
        check=checks.run_mode,
    )
    batch_max_requests: int = setting(
        50_000,
        help="Requests per Batch API input file [default: 50,000, OpenAI's limit].",
        section="batch",
        key="max_requests",
        flags=("--batch-max-requests",),
        check=checks.positive_int,
    )
    batch_max_bytes: int = setting(
        200 * 1024 * 1024,
        help="Bytes per Batch API input file [default: 200 MB, OpenAI's limit].",
        section="batch",
        key="max_bytes",
        flags=("--batch-max-bytes",),
        check=checks.at_least(1024),
    )
    poll_interval: float = setting(
        30.0,
        help="Seconds before the first look at a running batch; later looks back off "
        "up to ten times that [default: 30].",
        section="batch",
        flags=("--poll-interval",),
        check=checks.positive_number,
    )
    deadline: float | None = setting(
        help="With --batch-api: finish within this time (6h, 90m, 3600s); near it, "
        "cancel the batches and send the rows left online.",
        section="batch",
        flags=("--deadline",),
        metavar="DURATION",
        check=checks.duration,
    )
    keep_remote_files: bool = setting(
        False,
        help="Keep the Batch API's uploaded, output and error files at the provider.",
        section="batch",
        flags=("--keep-remote-files",),
        kind="flag",
        check=checks.boolean,
    )
    # -- scale-out (Ray) ---------------------------------------------------------------
    ray: str | None = setting(
        help="Run the input's shards on a Ray cluster: its ADDRESS (ray://HOST:10001, "
        "HOST:6379, auto), or bare --ray for a local cluster on this machine's cores "
        "(pip install 'batchrun[ray]'; the run directory must be on storage every node sees).",
        section="scale",
        flags=("--ray",),
        kind="optional",
        metavar="[ADDRESS]",
        flag_value=checks.LOCAL_RAY,
        check=checks.ray_address,
    )
    shard_rows: int | None = setting(
        help="Rows per shard with --ray (Parquet: whole row groups) [default: 4 shards per "
        "worker, 1,000 to 1,000,000 rows]. Fixed when the run starts: a rerun keeps its shards.",
        section="scale",
        flags=("--shard-rows",),
        check=checks.positive_int,
    )
    workers: int | None = setting(
        help="Shards running at once with --ray, each with --concurrency requests in flight "
        "[default: the cluster's CPUs].",
        section="scale",
        flags=("--workers",),
        check=checks.positive_int,
    )
    # -- evaluation and prices ---------------------------------------------------------
    eval: Evaluation | None = setting(
        help="Score the answers: {reference_column, compare, field, normalize}.",
        section="eval",
        key="*",
        check=checks.evaluation,
        parts=(
            Part(
                "reference_column",
                "Score the answers against this input column.",
                flags=("--eval-reference",),
                metavar="COLUMN",
                check=checks.text,
            ),
            Part(
                "compare",
                "How an answer is compared with the reference: the whole "
                "content, one field of the JSON answer, or a number [default: exact].",
                choices=checks.COMPARES,
                check=checks.choice(*checks.COMPARES),
            ),
            Part(
                "field",
                "The answer's JSON field (or number) to compare.",
                metavar="FIELD",
                check=checks.text,
            ),
            Part(
                "tolerance",
                "compare number: correct within this much.",
                check=checks.non_negative_number,
            ),
            Part(
                "normalize",
                "Compare labels case- and space-insensitively [default: on].",
                kind="toggle",
                check=checks.boolean,
            ),
            Part(
                "interval",
                "A bootstrap interval for accuracy [default: on].",
                kind="toggle",
                check=checks.boolean,
            ),
        ),
    )
    confidence: Confidence | None = setting(
        help="How sure each answer is, as a confidence column in results.parquet: "
        "{method, label_field, labels, top_logprobs, samples, score_field}.",
        section="confidence",
        key="*",
        check=checks.confidence,
        fingerprint=True,
        parts=(
            Part(
                "method",
                "Give each answer a confidence: 'logprobs' (the label's probability; asks "
                "for logprobs), 'agreement' (the share of --confidence-samples answers "
                "agreeing) or 'self' (a number field the model fills).",
                flags=("--confidence",),
                choices=CONFIDENCE_METHODS,
                check=checks.choice(*CONFIDENCE_METHODS),
            ),
            Part(
                "label_field",
                "The answer's JSON field holding the label [default: the [eval] field, "
                "else the schema's one enum field, else the whole answer].",
                metavar="FIELD",
                check=checks.text,
            ),
            Part(
                "labels",
                "The label values, to normalise over (repeatable) [default: the label "
                "field's enum].",
                kind="multiple",
                metavar="LABEL",
            ),
            Part(
                "top_logprobs",
                "logprobs: alternatives per token, 0 to 20 [default: 5].",
                metavar="N",
                check=checks.at_least(0),
            ),
            Part(
                "samples",
                "agreement: answers per request (n) [default: 5].",
                metavar="N",
                check=checks.at_least(2),
            ),
            Part(
                "score_field",
                "self: the answer's number field holding the model's confidence "
                "[default: confidence, else the schema's one number field].",
                metavar="FIELD",
                check=checks.text,
            ),
        ),
    )
    cascade: Cascade | None = setting(
        help="A model cascade: every row goes to the first model, and on to the next only "
        "when its confidence is below escalate_below or its answer is unusable: "
        "{models, escalate_below, escalate_when, confidence}.",
        section="cascade",
        key="*",
        check=checks.cascade,
        fingerprint=True,
        parts=(
            Part(
                "models",
                "A cascade: the models in order, cheapest first (repeat it: --cascade weak "
                "--cascade strong); each row is decided by the first one sure enough.",
                flags=("--cascade",),
                kind="multiple",
                metavar="MODEL",
            ),
            Part(
                "escalate_below",
                "cascade: a row moves on when its confidence is below this (one, or one "
                "per stage but the last; repeatable) [default: 0.8].",
                kind="multiple",
                metavar="P",
            ),
            Part(
                "escalate_when",
                "cascade: 'disagree': the first two models both answer every row, and a "
                "row moves on unless both are sure and agree (three models at least).",
                choices=CASCADE_WHEN,
                check=checks.choice(*CASCADE_WHEN),
            ),
            Part(
                "confidence",
                "cascade: the confidence method [default: --confidence, else logprobs].",
                choices=CONFIDENCE_METHODS,
                check=checks.choice(*CONFIDENCE_METHODS),
            ),
        ),
    )
    prices: str | Prices | None = setting(
        help="TOML price file adding/overriding model prices (`batchrun prices --example` "
        "prints one to start from).",
        section="prices",
        key="*",
        flags=("--prices",),
        metavar="FILE",
        check=checks.prices,
    )
    name: str | None = setting(
        help="The job's name (job files: defaults to the file's stem).",
        metavar="NAME",
        section="",
        check=checks.text,
    )
    # -- not a setting: what `batchrun._api.endpoint` knows once it has started the
    # simulator (``base_url`` is then its loopback address, ``"sim"`` its identity)
    simulated: bool = field(default=False, repr=False)

    def __post_init__(self) -> None:
        """Every value passes its setting's check however the settings are built
        (``Settings(...)``, `build`, ``dataclasses.replace``, a job file, the command
        line, `from_public_dict`): ``Settings(rpm=-5)`` is a ConfigError naming
        ``rpm=``. These are the checks of what a value is (a type, a range, a template
        that parses), idempotent on a value already checked and cheap (about 100 µs for
        every setting: templates are remembered, `checks.template_text`). What a value
        names outside the process (a file) and what looks like a slip (a body field one
        letter off a known one) is looked at once, where the value came in
        (`checks.Where.entry`), never again on each ``replace``.
        The rules between settings are `problems`, asked when a run starts: a settings
        object may be incomplete while a job file and options are merged."""
        for name in _NONE_IS_EMPTY:  # typed construction may say None for "none"
            if getattr(self, name) is None:
                empty: Any = {} if name in ("request", "prompts", "endpoints") else Quota()
                object.__setattr__(self, name, empty)
        clean = _run_checks(
            (name, check, where, value)
            for name, check, where, optional, default in _typed_checks()
            # the declared default passes (tests/test_settings_checks.py), so it is skipped
            if (value := getattr(self, name)) is not default and (value is not None or not optional)
        )
        for name, value in clean.items():
            if value is not getattr(self, name):
                object.__setattr__(self, name, value)
        if self.response_format is not None and self.response_format.name is None:
            object.__setattr__(self, "response_format", self.response_format.named(self.name))

    # -- building ------------------------------------------------------------------------
    @classmethod
    def specs(cls) -> Iterator[tuple[str, Spec]]:
        """(field name, spec) of every setting, in declaration order; flags left to be
        derived are filled in (`Spec.flags`)."""
        global _SPECS
        if _SPECS is None:
            _SPECS = [
                (f.name, _derived(f.name, f.metadata[SPEC]))
                for f in fields(cls)
                if SPEC in f.metadata
            ]
        yield from _SPECS

    @classmethod
    def spec(cls, name: str) -> Spec:
        return {n: s for n, s in cls.specs()}[name]

    @classmethod
    def keyword_names(cls) -> dict[str, str]:
        """Python keyword -> setting (aliases included)."""
        names: dict[str, str] = {}
        for name, spec in cls.specs():
            names[name] = name
            for alias in spec.aliases:
                names[alias] = name
        return names

    @classmethod
    def checked(
        cls, values: Mapping[str, Any], *, label: Callable[[str], str] = str
    ) -> dict[str, Any]:
        """Run each value's check; raise ConfigError listing every problem.

        ``label(name)`` names a setting in messages (``--concurrency``, ``concurrency=``).
        None is "not given" and passes. Files the values name are looked for.
        """
        specs = dict(cls.specs())
        return _run_checks(
            (name, specs[name].check if value is not None else None, Where(label(name)), value)
            for name, value in values.items()
        )

    @classmethod
    def build(cls, base: Settings | None = None, **keywords: Any) -> Settings:
        """Settings from Python keywords (the names of the settings, or their job-file
        aliases), over ``base`` or the defaults. Unknown names are an error naming the
        closest setting; every value passes its check. None leaves a setting that
        cannot be None as it is (``concurrency=None``: not given)."""
        names = cls.keyword_names()
        values: dict[str, Any] = {}
        optional = {name for name, _, _, none_ok, _ in _typed_checks() if none_ok}
        for keyword, value in keywords.items():
            name = names.get(keyword)
            if value is None and name is not None and name not in optional | set(_NONE_IS_EMPTY):
                continue
            if name is None:
                if keyword in checks.KNOWN_BODY_FIELDS:  # temperature=0: a body default
                    values.setdefault("request", dict((base or cls()).request))
                    values["request"] = {**values["request"], keyword: value}
                    continue
                raise ConfigError(
                    f"{keyword}=: no such setting" + checks.suggest(keyword, list(names))
                )
            values[name] = value
        clean = cls.checked(values, label=lambda n: f"{n}=")
        return replace(base, **clean) if base is not None else cls(**clean)

    # -- rules between settings ----------------------------------------------------------
    def problems(self, name: Spelling | None = None) -> list[str]:
        """Why these settings cannot run, one line each: every rule between settings
        (each value alone passed its check when the settings were built). This is the
        one place those rules live: `batchrun._api.settings_for` (the command line, job
        files, `batchrun.run`), `batchrun._jobs.jobfile.load_job` (a file on its own) and
        the online, Batch API and Ray runners ask nothing else.

        ``name`` spells a setting in the messages: a Python keyword by default
        (`keyword_spelling`), an option (`flag_spelling`), a job file's key
        (`key_spelling`), or each as whoever gave it spelled it (`SpelledAsGiven`).

            >>> Settings(deadline=3600).problems()
            ["deadline= needs mode='batch' (a deadline bounds a Batch API run)"]
            >>> Settings(deadline=3600).problems(flag_spelling)
            ['--deadline needs --batch-api (a deadline bounds a Batch API run)']
        """
        n = name or keyword_spelling
        out: list[str] = []
        given = [x for x in ("prompt", "messages") if getattr(self, x) is not None]
        prompt = f"{n('prompt')}, {n('messages')} or {n('prompts')}"
        pilot = "/".join(n(x) for x in ("limit", "sample") if getattr(self, x) is not None)
        batch = n("mode", "batch")
        # the prompt: one of system/prompt, messages or named variants
        system_or_prompt = [n(x) for x in ("system", "prompt") if getattr(self, x) is not None]
        if self.messages is not None and system_or_prompt:
            out.append(
                f"{n('messages')}: cannot be combined with {' or '.join(system_or_prompt)} "
                "(messages hold the whole conversation)"
            )
        if self.prompts and given:
            out.append(
                f"{n('prompts')}: give the prompt ({' or '.join(n(x) for x in given)}) or "
                f"named variants, not both ({n('system')} is shared by the variants)"
            )
        if not self.is_dataset:
            if self.response_format is not None:
                out.append(
                    f"{n('response_format')}: needs a prompt ({prompt}): without one the "
                    "input rows are complete request bodies (set response_format in them)"
                )
            if self.eval is not None:
                out.append(
                    f"{n('eval')}: needs a prompt ({prompt}): a plain request file has no "
                    "reference column"
                )
            unused = [x for x in ("system", "examples") if getattr(self, x) is not None]
            unused += ["template_engine"] if self.template_engine != "auto" else []
            out.extend(f"{n(x)}: only applies to a prompt ({prompt})" for x in unused)
        out.extend(self._api_problems(n, prompt))
        if self.examples is not None and self.template_engine == "format":
            out.append(f"{n('examples')}: few-shot examples need {n('template_engine', 'jinja')}")
        # the evaluation against the answer's format
        ev, rf = self.eval, self.response_format
        if ev is not None and ev.compare == "json_field":
            if ev.field and self.schema is not None and ev.field not in self.schema["properties"]:
                props = [str(p) for p in self.schema["properties"]]
                out.append(
                    f"{n('eval.field')}: {ev.field!r} is not a property of the response "
                    f"schema (properties: {', '.join(props)})" + checks.suggest(ev.field, props)
                )
            if rf is not None and rf.type == "text":
                out.append(
                    f"{n('eval.compare')}: 'json_field' needs JSON responses, not "
                    f"{n('response_format', 'text')}"
                )
        if self.confidence is not None or self.cascade is not None:
            from batchrun._confidence import confidence_problems

            named = ("response_format", "eval", "request")
            values = {x: getattr(self, x) for x in named}
            out.extend(confidence_problems({**values, "confidence": self.judged_by()}))
        if self.cascade is not None:
            out.extend(self._cascade_problems(n, prompt, batch))
        # the input
        if self.column_types and self.input is not None:
            if not isinstance(self.input, str | Path):
                out.append(f"{n('column_types')}: only applies to a CSV or TSV file")
            elif not checks.may_hold_delimited(str(self.input)):
                out.append(
                    f"{n('column_types')}: {self.input} is not a CSV or TSV file (column "
                    "types are read from its values only there)"
                )
        # the Batch API: no streams, no pilot, no cache; a deadline only there
        if self.mode == "batch":
            if self.stream:
                out.append(
                    f"{n('stream', True)} cannot be used with {batch} (batches do not stream)"
                )
            if pilot:
                out.append(
                    f"a pilot ({pilot}) runs online: run it without {batch}, look, then run "
                    f"the rest with {batch} into the same directory"
                )
            if self.cache is not None:
                out.append(
                    f"{n('cache')} works with online runs only; run without {batch} to "
                    f"answer from the cache (or without {n('cache')})"
                )
        elif self.deadline is not None:
            out.append(f"{n('deadline')} needs {batch} (a deadline bounds a Batch API run)")
        # a Ray cluster: one online job over the whole input
        if self.ray is not None:
            if self.mode == "batch":
                out.append(f"{n('ray')} runs online: it cannot be combined with {batch}")
            if self.has_variants:
                out.append(
                    f"{n('ray')} runs one job over the whole input: compare variants "
                    f"(several models in {n('model')}, {n('prompts')}) without it"
                )
            if pilot:
                out.append(f"{n('ray')} runs the whole input: run a pilot ({pilot}) without it")
            if self.cache is not None and self.ray != checks.LOCAL_RAY:
                out.append(
                    f"{n('cache')} with {n('ray', self.ray)}: the response cache is an "
                    "SQLite file, which nodes cannot share safely over network storage; use "
                    f"{n('cache')} with a local cluster ({n('ray', checks.LOCAL_RAY)}) or "
                    f"without {n('ray')}"
                )
        # a run directory on object storage: segments and a lease, online or on Ray
        if self.out_dir is not None and "://" in self.out_dir and self.mode == "batch":
            out.append(
                f"{n('mode', 'batch')} keeps its step journal in a local or shared "
                f"{n('out_dir')}; a run directory on object storage runs online or with "
                f"{n('ray')}"
            )
        if self.endpoints:
            out.extend(self._pool_problems(n, batch))
        return out

    def _cascade_problems(self, n: Spelling, prompt: str, batch: str) -> list[str]:
        """The rules of a cascade: a dataset, one model per stage, on one machine."""
        cascade = self.cascade
        assert cascade is not None
        out: list[str] = []
        if not self.is_dataset:
            out.append(
                f"{n('cascade')}: needs a prompt ({prompt}): the cascade sends each row to "
                "its models in turn"
            )
        if self.has_variants:
            out.append(
                f"{n('cascade')}: names the models itself; compare models or prompt variants "
                f"({n('model')}, {n('prompts')}) without it"
            )
        elif self.model is not None and self.model != cascade.models[0]:
            out.append(
                f"{n('model')}: {self.model!r} is not the cascade's first model "
                f"({cascade.models[0]!r}); leave {n('model')} out, the cascade names the models"
            )
        if (
            self.confidence is not None
            and cascade.confidence is not None
            and cascade.confidence != self.confidence.method
        ):
            out.append(
                f"{n('cascade')}: confidence {cascade.confidence!r} differs from "
                f"{n('confidence')} {self.confidence.method!r}; give one"
            )
        if cascade.escalate_when == "disagree" and len(cascade.models) < 3:
            out.append(
                f"{n('cascade')}: escalate_when = 'disagree' needs three models at least "
                "(two cheap variants that both answer every row, then the one for the rows "
                "they disagree on)"
            )
        if self.ray is not None:
            out.append(f"{n('cascade')} cannot run on {n('ray')}: run it on one machine")
        return out

    def judged_by(self) -> Confidence | None:
        """The confidence every answer gets: the ``confidence`` setting, else a
        cascade's method (default "logprobs"); None: none asked for."""
        if self.confidence is not None or self.cascade is None:
            return self.confidence
        return Confidence(self.cascade.confidence or "logprobs")

    def _api_problems(self, n: Spelling, prompt: str) -> list[str]:
        """The rules of ``api``: a dataset job's rows go to chat, embeddings or Responses;
        an embeddings job has one text to embed per row and nothing a chat answer needs."""
        out: list[str] = []
        api = self.api
        embeddings = n("api", EMBEDDINGS)
        if self.embed_input is not None and api != EMBEDDINGS:
            out.append(f"{n('embed_input')}: the text to embed, only with {embeddings}")
        if self.embed_batch is not None:
            if api != EMBEDDINGS:
                out.append(f"{n('embed_batch')}: packs rows to embed, only with {embeddings}")
            elif self.embed_batch > EMBEDDING_REQUEST_INPUTS:
                out.append(
                    f"{n('embed_batch')}: at most {EMBEDDING_REQUEST_INPUTS:,} inputs go in "
                    f"one embeddings request (got {self.embed_batch:,})"
                )
        if api == CHAT:
            return out
        if not self.is_dataset:
            what = f"{n('embed_input')} or {n('prompt')}" if api == EMBEDDINGS else prompt
            out.append(
                f"{n('api', api)}: needs a prompt ({what}); a request file's lines name "
                'their API by their url ("/v1/embeddings", "/v1/responses")'
            )
        if self.confidence is not None:
            out.append(f"{n('confidence')}: reads chat answers' logprobs; not with {n('api', api)}")
        if api == RESPONSES:
            return out
        if self.embed_input is not None and self.prompts:
            out.append(
                f"{n('embed_input')} and {n('prompts')}: give the text to embed or named "
                "variants of it, not both"
            )
        if self.embed_input is not None and self.prompt is not None:
            out.append(
                f"{n('embed_input')} and {n('prompt')}: give the text to embed once "
                "(both are the template of one text)"
            )
        unused = [x for x in ("system", "messages", "response_format", "eval", "examples")]
        out.extend(
            f"{n(x)}: an embeddings request has no messages and no answer text; not with "
            f"{embeddings}"
            for x in unused
            if getattr(self, x) is not None
        )
        return out

    def _pool_problems(self, n: Spelling, batch: str) -> list[str]:
        """The rules of a pool: its names, every model served, batches somewhere."""
        out: list[str] = []
        pool = self.pool()
        clash = [name for name in self.endpoints if name.lower() == DEFAULT_ENDPOINT]
        if clash and self.base_url != DEFAULT_BASE_URL:
            out.append(
                f"{n('endpoints')}: {clash[0]!r} is the name of {n('base_url')}'s own "
                "endpoint in the pool; give yours another name"
            )
        named = sorted({m for e in pool for m, _ in e.models or ()})
        for model in self.models:
            if not any(e.serves(model) for e in pool):
                out.append(
                    f"{n('endpoints')}: no endpoint serves the model {model!r} (an "
                    "endpoint's models name the job's models it serves)"
                    + checks.suggest(model, named)
                )
        if self.mode == "batch":
            takers = [e for e in pool if e.batch]
            if not takers:
                out.append(
                    f"{batch} with {n('endpoints')}: no endpoint takes batches (set "
                    "batch = true on the endpoints that have a Batch API)"
                )
            out.extend(
                f"{batch}: no endpoint that takes batches (batch = true) serves the model {model!r}"
                for model in self.models
                if takers and not any(e.serves(model) for e in takers)
            )
        return out

    def validate(self, name: Spelling | None = None) -> Settings:
        """These settings, or a ConfigError listing every one of their `problems`."""
        problems = self.problems(name)
        if problems:
            raise ConfigError("; ".join(problems))
        return self

    # -- derived views -------------------------------------------------------------------
    @property
    def input_path(self) -> str:
        """The input as a path (files only; in-memory input is saved to one first)."""
        return str(self.input) if self.input is not None else ""

    @property
    def is_dataset(self) -> bool:
        """A dataset job: rows go through a prompt template (else rows are requests)."""
        return (
            self.prompt is not None
            or self.messages is not None
            or bool(self.prompts)
            or self.embed_input is not None
        )

    @property
    def models(self) -> tuple[str, ...]:
        """Every model ``model`` names (several: the job compares them)."""
        m = self.model
        return () if m is None else (m,) if isinstance(m, str) else tuple(m)

    @property
    def default_model(self) -> str | None:
        """The model for rows that name none, when one model is named."""
        return self.model if isinstance(self.model, str) else None

    @property
    def has_variants(self) -> bool:
        """Every row runs more than once: several models, or named prompt variants."""
        return len(self.models) > 1 or bool(self.prompts)

    @property
    def is_pilot(self) -> bool:
        """Only part of the input is asked for (``limit`` / ``sample``)."""
        return self.limit is not None or self.sample is not None

    @property
    def schema(self) -> Mapping[str, Any] | None:
        rf = self.response_format
        return rf.schema if rf is not None and rf.type == "json_schema" else None

    def template_messages(self) -> tuple[dict[str, str], ...] | None:
        """The prompt as message templates (None: a plain request file, or a callable)."""
        if self.messages is not None:
            return tuple(self.messages)
        if self.embed_input is not None:
            return ({"role": "user", "content": self.embed_input},)
        if self.prompt is None or callable(self.prompt):
            return None
        out = []
        if self.system:
            out.append({"role": "system", "content": self.system})
        out.append({"role": "user", "content": str(self.prompt)})
        return tuple(out)

    def limits_by_model(self) -> dict[str, tuple[float | None, float | None]]:
        """model -> (rpm, tpm) overrides (None: the default for every model)."""
        out: dict[str, tuple[float | None, float | None]] = {}
        for model, rpm in self.rpm.by_model:
            out[model] = (rpm, out.get(model, (None, None))[1])
        for model, tpm in self.tpm.by_model:
            out[model] = (out.get(model, (None, None))[0], tpm)
        return out

    @property
    def endpoint(self) -> str:
        """Which endpoint answers this run (`batchrun._endpoint.endpoint_identity`):
        ``"sim"`` for the built-in simulator whatever its port, else the normalised URL."""
        return SIM if self.simulated else endpoint_identity(self.base_url)

    @property
    def lines_endpoint(self) -> str:
        """The endpoint identity by which a run tells its own lines from the
        simulator's (`batchrun._output.journal.Provenance`): `endpoint`, or for a pool
        "sim" when any of its endpoints is simulated (every line counts: each names
        the endpoint that answered it), else its first endpoint's identity (lines of
        the others are real too, and count)."""
        if not self.endpoints:
            return self.endpoint
        pool = self.pool()
        if any(e.is_sim for e in pool):
            return SIM
        return pool[0].identity

    def pool(self) -> list[Endpoint]:
        """The endpoints that serve this run, each complete. Without ``[endpoints.NAME]``
        tables: the ``[endpoint]`` table's own endpoint, named `DEFAULT_ENDPOINT` (a
        pool of one, so every run has one path). With them: theirs, and first the
        ``[endpoint]`` table's own when it names a ``base_url`` (not the built-in
        default). What a declaration leaves out comes from the ``[endpoint]`` table
        (the key: its variable or file, unless the endpoint names either; auth and
        its header; headers, the endpoint's own winning by name) and from
        ``[limits]`` (rpm, tpm, concurrency); weight 1; batches only when it says
        ``batch = true``.

            >>> pool = Settings(endpoints={"b": {"base_url": "sim", "rpm": 600}}).pool()
            >>> [(e.name, e.api_key_env, e.rpm.default, e.concurrency) for e in pool]
            [('b', 'OPENAI_API_KEY', 600.0, 64)]
        """
        own = Endpoint(
            DEFAULT_ENDPOINT,
            self.base_url,
            api_key_env=self.api_key_env,
            api_key_file=self.api_key_file,
            auth=self.auth,
            auth_header=self.auth_header,
            headers=self.headers,
            rpm=self.rpm or None,
            tpm=self.tpm or None,
            concurrency=self.concurrency,
            weight=1.0,
            batch=True,
            simulated=self.simulated,
        )
        if not self.endpoints:
            return [own]
        members = [own] if self.base_url != DEFAULT_BASE_URL else []
        return members + [self._completed(e) for e in self.endpoints.values()]

    def _completed(self, declared: Endpoint) -> Endpoint:
        """A declared endpoint with what it leaves out filled in (see `pool`)."""
        keyed = declared.api_key_env is not None or declared.api_key_file is not None
        own_headers = {name.lower() for name, _ in declared.headers}
        return replace(
            declared,
            api_key_env=declared.api_key_env if keyed else self.api_key_env,
            api_key_file=declared.api_key_file if keyed else self.api_key_file,
            auth=declared.auth or self.auth,
            auth_header=declared.auth_header or self.auth_header,
            headers=tuple((n, v) for n, v in self.headers if n.lower() not in own_headers)
            + declared.headers,
            rpm=declared.rpm if declared.rpm is not None else self.rpm or None,
            tpm=declared.tpm if declared.tpm is not None else self.tpm or None,
            concurrency=declared.concurrency or self.concurrency,
            weight=declared.weight or 1.0,
            batch=bool(declared.batch),
        )

    def serving(self, model: str) -> list[Endpoint]:
        """The endpoints of the pool that serve ``model``."""
        return [e for e in self.pool() if e.serves(model)]

    def fingerprint(self) -> dict[str, Any]:
        """The settings that change what is sent or who answers; a resume with others
        is refused. The endpoint is there by its identity (``base_url``: ``"sim"``, or
        the URL without credentials, query or trailing slash); a pool by each
        endpoint's identity and model names (``endpoints``: one joining a running
        job is no change, `batchrun._engine.runinfo.pool_changes`).

        The evaluation is not one of them: scoring never needs a request sent again.
        """
        shaping = {n: jsonable(getattr(self, n)) for n, spec in self.specs() if spec.fingerprint}
        shaping["base_url"] = self.endpoint
        if self.endpoints:  # who answers, under which model names (`Endpoint.shape`)
            shaping["endpoints"] = {e.name: e.shape() for e in self.pool()}
        # one prompt however it was spelled (system + prompt, or messages), and the
        # response format as it is sent
        messages = self.template_messages()
        shaping.pop("system", None)
        shaping.pop("messages", None)
        shaping.pop("embed_input", None)
        if shaping.get("api") == CHAT:
            shaping.pop("api")  # as a run recorded before there were other APIs
        if messages is not None:
            shaping["prompt"] = [dict(m) for m in messages]
        rf = self.response_format
        shaping["response_format"] = rf.body() if rf is not None else None
        # "string" is every CSV column's type unless told: naming it changes nothing
        typed = {k: v for k, v in (self.column_types or {}).items() if v != "string"}
        shaping["column_types"] = typed or None
        return shaping

    def public_dict(self) -> dict[str, Any]:
        """Every setting, for run.json. Holds no secret: keys live only in the env,
        and header values that look like keys are masked."""
        data = {name: jsonable(getattr(self, name)) for name, _ in self.specs()}
        if self.simulated:
            data["base_url"] = SIM  # not the port it happened to listen on
        data["headers"] = [[n, mask_header(n, v)] for n, v in self.headers]
        if not isinstance(self.input, str | Path) and self.input is not None:
            data["input"] = f"<{type(self.input).__name__}>"
        return data

    @classmethod
    def from_public_dict(cls, data: Mapping[str, Any]) -> Settings:
        """The settings a run recorded (`public_dict`), to look at the run again."""
        data = _current_names(data)
        values = {n: data[n] for n, _ in cls.specs() if data.get(n) is not None}
        for key in ("rpm", "tpm", "context_window"):
            quota = values.get(key)
            if isinstance(quota, Mapping):
                pairs = tuple((str(m), float(n)) for m, n in quota.get("by_model") or ())
                values[key] = Quota(quota.get("default"), pairs)
            elif isinstance(quota, int | float):  # an older run.json
                values[key] = Quota(float(quota))
        values["headers"] = tuple((str(n), str(v)) for n, v in values.get("headers") or ())
        if values.get("messages") is not None:
            values["messages"] = tuple(values["messages"])
        rf = values.get("response_format")
        if isinstance(rf, Mapping):
            values["response_format"] = ResponseFormat(**rf)
        ev = values.get("eval")
        if isinstance(ev, Mapping):
            values["eval"] = Evaluation(**ev)
        confidence = values.get("confidence")
        if isinstance(confidence, Mapping):
            values["confidence"] = Confidence(
                **{**confidence, "labels": tuple(confidence.get("labels") or ())}
            )
        cascade = values.get("cascade")
        if isinstance(cascade, Mapping):
            values["cascade"] = Cascade(
                tuple(cascade.get("models") or ()),
                tuple(cascade.get("escalate_below") or (0.8,)),
                cascade.get("escalate_when"),
                cascade.get("confidence"),
            )
        prices = values.get("prices")
        if isinstance(prices, Mapping):
            values["prices"] = Prices(prices.get("file"), prices.get("models") or {})
        if isinstance(values.get("prompt"), str) and values["prompt"].startswith("<function "):
            values.pop("prompt")  # a Python function cannot be recorded, only its hash
        try:
            return cls(**values)
        except ConfigError:
            # a value an older batchrun recorded that today's checks refuse: the run can
            # still be looked at, that setting at its default (a resume compares the
            # fingerprint run.json recorded, not these)
            checks_of = {name: (check, where) for name, check, where, _, _ in _typed_checks()}
            return cls(**{n: v for n, v in values.items() if _passes(v, *checks_of[n])})


# -- how a message names a setting ------------------------------------------------------
_UNSET: Any = object()


class Spelling(Protocol):
    """How a message names a setting (``"deadline"``, or a table's key ``"eval.field"``),
    with the value it is about when that matters (``("mode", "batch")``)."""

    def __call__(self, name: str, value: Any = _UNSET, /) -> str: ...


def keyword_spelling(name: str, value: Any = _UNSET) -> str:
    """Python: ``deadline=``, ``mode='batch'``, ``eval['field']``."""
    setting, _, key = name.partition(".")
    if key:
        return f"{setting}[{key!r}]"
    return f"{name}=" if value is _UNSET else f"{name}={value!r}"


def flag_spelling(name: str, value: Any = _UNSET) -> str:
    """The command line: ``--deadline``, ``--batch-api`` (a flag says its value),
    ``--template-engine jinja``, ``--eval-field``; a setting without an option of its
    own: its job-file key."""
    setting, _, key = name.partition(".")
    spec = Settings.spec(setting)
    if spec.argument is not None and not key:
        return spec.argument
    parts = [p for p in spec.parts if p.key == key] if key else list(spec.parts[:1])
    flags = spec.part_flags(parts[0]) if parts and (key or not spec.flags) else spec.flags
    kind = parts[0].kind if parts and (key or not spec.flags) else spec.kind
    longs = [f for f in flags or () if f.startswith("--")]
    if not longs:
        return key_spelling(name, value)
    on, _, off = longs[0].partition("/")
    if value is _UNSET or kind == "flag":
        return on
    if kind == "toggle":
        return on if value else off
    return f"{on} {value}"


def key_spelling(name: str, value: Any = _UNSET) -> str:
    """A job file: ``batch.deadline``, ``mode = "batch"``, ``eval.field``."""
    setting, _, key = name.partition(".")
    spec = Settings.spec(setting)
    if spec.section is None:
        return keyword_spelling(name, value)
    own = spec.key or setting
    path = spec.section if own == "*" else ".".join(p for p in (spec.section, own) if p)
    path = f"{path}.{key}" if key else path
    return path if value is _UNSET else f"{path} = {json.dumps(value)}"


SPELLINGS: dict[str, Spelling] = {
    "python": keyword_spelling,
    "cli": flag_spelling,
    "job": key_spelling,
}
"""Who gave a setting -> how it is named to them."""


class SpelledAsGiven:
    """Each setting named the way whoever gave it spells it (`SPELLINGS`): an option
    given on the command line as ``--deadline``, a job file's key as
    ``batch.deadline``, a keyword as ``deadline=``; a setting nobody gave in the style
    of ``default``. ``from_file``: a message named a setting the job file gave (the
    caller puts the file's path before it)."""

    def __init__(self, origins: Mapping[str, str], default: str) -> None:
        self.origins = dict(origins)
        self.default = default
        self.from_file = False

    def __call__(self, name: str, value: Any = _UNSET, /) -> str:
        origin = self.origins.get(name.partition(".")[0], self.default)
        self.from_file = self.from_file or origin == "job"
        return SPELLINGS[origin](name, value)


_SPECS: list[tuple[str, Spec]] | None = None
_TYPED_CHECKS: list[tuple[str, Check | None, Where, bool, Any]] | None = None
_NONE_IS_EMPTY = ("rpm", "tpm", "context_window", "request", "prompts", "endpoints")
"""Settings whose None (in typed construction) means their empty value."""


def _typed_checks() -> list[tuple[str, Check | None, Where, bool, Any]]:
    """(name, check, where, None allowed, declared default) of every setting, for
    `Settings.__post_init__`: named as a Python keyword (``rpm=``), files not looked
    for again."""
    global _TYPED_CHECKS
    if _TYPED_CHECKS is None:
        defaults = {f.name: f.default for f in fields(Settings)}
        _TYPED_CHECKS = [
            (
                name,
                spec.check,
                Where(f"{name}=", entry=False),
                defaults[name] is None,
                defaults[name],
            )
            for name, spec in Settings.specs()
        ]
    return _TYPED_CHECKS


def _passes(value: Any, check: Check | None, where: Where) -> bool:
    try:
        _ = check(value, where) if check is not None else value
    except Invalid:
        return False
    return True


def _run_checks(items: Iterable[tuple[str, Check | None, Where, Any]]) -> dict[str, Any]:
    """name -> the checked value of each (name, check, where, value); a ConfigError
    listing every problem (a check of None: the value passes as it is)."""
    out: dict[str, Any] = {}
    problems: list[str] = []
    for name, check, where, value in items:
        if check is None:
            out[name] = value
            continue
        try:
            out[name] = check(value, where)
        except Invalid as exc:
            problems.extend(f"{w}: {m}" if w else m for w, m in exc.problems)
    if problems:
        raise ConfigError("; ".join(problems))
    return out


def _derived(name: str, spec: Spec) -> Spec:
    """``spec`` with its flags filled in: a setting that is one job-file key gets
    ``--<name>`` unless it names its own flags or none (``flags=()``)."""
    if spec.flags is not None:
        return spec
    one_key = spec.section is not None and spec.key != "*" and spec.argument is None
    return replace(spec, flags=(f"--{name.replace('_', '-')}",) if one_key else ())


def _current_names(data: Mapping[str, Any]) -> dict[str, Any]:
    """Settings recorded by an older batchrun (``input_path``, ``prices_path``, a ``job``
    dict) under today's names."""
    out = dict(data)
    if "input_path" in out:
        out.setdefault("input", out.pop("input_path"))
    if "prices_path" in out:
        out.setdefault("prices", out.pop("prices_path"))
    job = out.pop("job", None)
    if isinstance(job, Mapping):
        prompt = job.get("prompt")
        if isinstance(prompt, Mapping):
            out.setdefault("messages", prompt.get("messages"))
        out.setdefault("request", job.get("request") or {})
        rf = job.get("response_format")
        if isinstance(rf, Mapping):
            inner = rf.get("json_schema") or {}
            out.setdefault(
                "response_format",
                {
                    "type": rf.get("type"),
                    "name": inner.get("name", "response"),
                    "schema": job.get("schema"),
                    "strict": inner.get("strict", True),
                },
            )
        out.setdefault("eval", job.get("eval"))
    return out


__all__ = [
    "DEFAULT_BASE_URL",
    "Cascade",
    "Confidence",
    "SPELLINGS",
    "Evaluation",
    "Part",
    "Partial",
    "Prices",
    "Quota",
    "ResponseFormat",
    "Settings",
    "Spec",
    "SpelledAsGiven",
    "Spelling",
    "flag_spelling",
    "key_spelling",
    "keyword_spelling",
    "setting",
]
