"""Turn one dataset row into one chat-completions body through a prompt template.

A template is a list of messages whose contents use Python format-field syntax:
``{column}`` is replaced by that row's value, ``{{`` and ``}}`` are literal braces.
Only bare column names are allowed (no ``{a.b}``, ``{a[0]}``, ``{a!r}`` or
``{a:>5}``): a prompt is text, not code, and a typo must fail at load time, before
anything is sent. The format strings are split once into literal/column parts, so
rendering a row is one dict look-up per placeholder and one ``str.join`` per message
(this runs per row on million-row datasets).

    >>> t = PromptTemplate.from_section({"system": "Label it.", "user": "Review: {text}"})
    >>> t.render({"text": "Great {value}!"}, "line 1")[1]
    {'role': 'user', 'content': 'Review: Great {value}!'}

Values are converted to text the way a person would write them (a null value
is a bad row, never an empty prompt): booleans are ``true``/``false``, floats use
``repr`` (``0.1``, not ``0.1000000001``), lists and dicts are compact JSON, bytes
are decoded as UTF-8.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from batchrun._apis import CHAT, EMBEDDINGS, defaults_for
from batchrun._templating.cells import as_text, columns_note
from batchrun._values import BODY_ALIASES
from batchrun.errors import ConfigError, InputError

if TYPE_CHECKING:
    from batchrun._settings import Settings

_FORMATTER = string.Formatter()

# One compiled message content: literal text and column names, in order.
# A part is either ("", column) for a placeholder or (text, None) for literal text.
_Part = tuple[str, str | None]


_JINJA_LOOK = re.compile(r"\{%|\{#|\{\{\s*[A-Za-z_]")


def looks_like_jinja(text: str) -> bool:
    """A template written for Jinja: ``{% ... %}``, ``{# ... #}`` or ``{{ name``
    (a format template writes a literal brace as ``{{``, but seldom before a name).

    >>> looks_like_jinja("Review: {{ text }}"), looks_like_jinja('Answer as {{"label": ...}}')
    (True, False)
    """
    return _JINJA_LOOK.search(text) is not None


def template_problems(text: str) -> list[str]:
    """Why ``text`` is not a usable template (empty list when it is).

    >>> template_problems("Hi {name}")
    []
    >>> template_problems("Hi {user.name}")
    ["placeholder {user.name}: only plain column names are allowed (no '.', '[', '!' or ':')"]
    """
    try:
        parsed = list(_FORMATTER.parse(text))
    except ValueError as exc:
        return [f"invalid template ({exc}); write a literal brace as '{{{{' or '}}}}'"]
    problems = []
    for _literal, field, spec, conversion in parsed:
        if field is None:
            continue
        if field == "" or field.isdigit():
            problems.append(
                f"placeholder {{{field}}} must name a column, like {{text}}; "
                "write a literal brace as '{{' or '}}'"
            )
        elif spec or conversion or any(c in field for c in ".[]"):
            shown = field + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "")
            problems.append(
                f"placeholder {{{shown}}}: only plain column names are allowed "
                "(no '.', '[', '!' or ':')"
            )
    return problems


def _compile(text: str) -> tuple[_Part, ...]:
    problems = template_problems(text)
    if problems:
        raise ConfigError("; ".join(problems))
    parts: list[_Part] = []
    for literal, field, _spec, _conversion in _FORMATTER.parse(text):
        if literal:
            parts.append((literal, None))
        if field is not None:
            parts.append(("", field))
    return tuple(parts)


class PromptTemplate:
    """Messages with ``{column}`` placeholders, compiled once and rendered per row.

    >>> t = PromptTemplate([{"role": "user", "content": "Q: {question}"}])
    >>> t.placeholders
    ('question',)
    """

    __slots__ = ("messages", "placeholders", "_compiled")

    def __init__(self, messages: Sequence[Mapping[str, str]]) -> None:
        if not messages:
            raise ConfigError("a prompt template needs at least one message")
        self.messages: tuple[dict[str, str], ...] = tuple(
            {"role": str(m["role"]), "content": str(m["content"])} for m in messages
        )
        self._compiled = tuple((m["role"], _compile(m["content"])) for m in self.messages)
        seen: dict[str, None] = {}
        for _role, parts in self._compiled:
            for _literal, column in parts:
                if column is not None:
                    seen.setdefault(column)
        self.placeholders: tuple[str, ...] = tuple(seen)

    @classmethod
    def from_section(cls, section: Mapping[str, Any]) -> PromptTemplate:
        """Build from a job file's [prompt]: ``system``/``user`` strings or ``messages``."""
        if "messages" in section:
            return cls(section["messages"])
        messages = []
        if section.get("system"):
            messages.append({"role": "system", "content": section["system"]})
        messages.append({"role": "user", "content": section["user"]})
        return cls(messages)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON form (the messages)."""
        return {"messages": [dict(m) for m in self.messages]}

    def render(
        self, row: Mapping[str, Any], row_label: str, *, path: str = "input"
    ) -> list[dict[str, str]]:
        """The messages for one row. A missing column raises InputError naming it.

        ``row_label`` is where the row came from ("line 12", "row 7"), ``path`` the
        input file; both go into the error so the user can find the row.
        """
        out = []
        for role, parts in self._compiled:
            pieces = []
            for literal, column in parts:
                if column is None:
                    pieces.append(literal)
                    continue
                try:
                    value = row[column]
                except KeyError:
                    raise self._missing(row, column, row_label, path) from None
                if value is None:
                    # an empty prompt would be paid for and answered; the row is bad
                    raise InputError(
                        path,
                        row_label,
                        f"template placeholder {{{column}}}: column '{column}' is null",
                    )
                pieces.append(value if isinstance(value, str) else as_text(value))
            out.append({"role": role, "content": "".join(pieces)})
        return out

    def _missing(
        self, row: Mapping[str, Any], column: str, row_label: str, path: str
    ) -> InputError:
        return InputError(
            path,
            row_label,
            f"template placeholder {{{column}}} has no column '{column}' "
            + columns_note(column, [str(k) for k in row]),
        )

    def __repr__(self) -> str:
        return f"PromptTemplate({list(self.messages)!r})"


def openai_response_format(
    kind: str,
    *,
    name: str = "response",
    schema: Mapping[str, Any] | None = None,
    strict: bool = True,
) -> dict[str, Any]:
    """The ``response_format`` body field in OpenAI's shape.

    >>> openai_response_format("json_schema", name="s", schema={"type": "object"})["json_schema"]
    {'name': 's', 'schema': {'type': 'object'}, 'strict': True}
    """
    if kind == "json_schema":
        return {
            "type": "json_schema",
            "json_schema": {"name": name, "schema": dict(schema or {}), "strict": strict},
        }
    return {"type": kind}


def build_body(
    row: Mapping[str, Any],
    defaults: Mapping[str, Any],
    template: Template,
    response_format: Mapping[str, Any] | None = None,
    *,
    row_label: str = "",
    path: str = "input",
) -> dict[str, Any]:
    """One chat-completions body: the [request] defaults, the rendered messages and
    the response_format (already in OpenAI's shape, see `openai_response_format`).

    >>> t = PromptTemplate.from_section({"user": "Say {word}"})
    >>> build_body({"word": "hi"}, {"model": "m", "max_tokens": 5}, t)
    {'model': 'm', 'max_tokens': 5, 'messages': [{'role': 'user', 'content': 'Say hi'}]}
    """
    body = dict(defaults)
    body["messages"] = template.render(row, row_label, path=path)
    if response_format is not None:
        body["response_format"] = response_format
    return body


_ALIASES = BODY_ALIASES


def apply_defaults(body: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """For plain request-file jobs: fill in body fields the line does not set.

    >>> apply_defaults({"model": "a", "max_completion_tokens": 5}, {"model": "b", "max_tokens": 9})
    {'model': 'a', 'max_completion_tokens': 5}
    """
    merged = dict(body)
    for key, value in defaults.items():
        if key in merged or _ALIASES.get(key) in merged:
            continue
        merged[key] = value
    return merged


def body_builder(settings: Settings) -> Callable[[Mapping[str, Any], str], dict[str, Any]] | None:
    """A row -> body function for a dataset job, or None when the job has no prompt (a
    plain request file). The prompt is a template (system/user or messages), or a
    Python function of the row returning the messages or a whole body (its body fields
    win over the defaults; ``model`` from the settings fills in a body without one).

        build = body_builder(settings)
        body = build({"text": "ok"}, "line 1")
    """
    from batchrun._confidence import with_request_fields

    defaults = with_request_fields(settings.request, settings.confidence)
    if settings.default_model is not None:
        defaults["model"] = settings.default_model
    response_format = settings.response_format.body() if settings.response_format else None
    path = settings.input_path or "input"
    api = settings.api
    if api != CHAT:
        defaults = dict(defaults_for(api, defaults))
    if api == EMBEDDINGS:
        # vectors as base64 float32: the same values as JSON numbers in a quarter of the
        # bytes, on the wire, in results.jsonl and in the cache (the official SDK asks so)
        defaults.setdefault("encoding_format", "base64")
    messages = settings.template_messages()
    built: Callable[[Mapping[str, Any], str], dict[str, Any]]
    if messages is not None:
        template = template_for(messages, settings)

        def build(row: Mapping[str, Any], row_label: str) -> dict[str, Any]:
            return build_body(
                row, defaults, template, response_format, row_label=row_label, path=path
            )

        built = build
    elif callable(settings.prompt):
        built = _calling(settings.prompt, defaults, response_format, path, api=api)
    else:
        return None
    if api == CHAT:
        return built
    shape = embeddings_body if api == EMBEDDINGS else responses_body
    return lambda row, row_label: shape(built(row, row_label))


def embeddings_body(chat: dict[str, Any]) -> dict[str, Any]:
    """A body built as chat (its one user message the text to embed) as an embeddings
    body: ``input`` is that text. A body that already has its ``input`` (a prompt
    function's) is left as it is.

    >>> embeddings_body({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    {'model': 'm', 'input': 'hi'}
    """
    messages = chat.pop("messages", None)
    if "input" not in chat and messages:
        chat["input"] = messages[-1]["content"]
    return chat


def responses_body(chat: dict[str, Any]) -> dict[str, Any]:
    """A body built as chat as a Responses body: a leading system message is the
    ``instructions``, one user message the ``input`` text (several messages: the
    ``input`` list of them), ``response_format`` the ``text.format`` (whose json_schema
    is flat: name, schema and strict beside the type).

    >>> body = responses_body({"model": "m", "response_format": {"type": "json_object"},
    ...     "messages": [{"role": "system", "content": "Be brief."},
    ...                  {"role": "user", "content": "Hi"}]})
    >>> body["instructions"], body["input"], body["text"]
    ('Be brief.', 'Hi', {'format': {'type': 'json_object'}})
    """
    messages = chat.pop("messages", None)
    if messages:
        messages = list(messages)
        if messages[0].get("role") in ("system", "developer") and len(messages) > 1:
            chat["instructions"] = messages.pop(0)["content"]
        if len(messages) == 1 and messages[0].get("role") == "user":
            chat["input"] = messages[0]["content"]
        else:
            chat["input"] = [{"role": m["role"], "content": m["content"]} for m in messages]
    response_format = chat.pop("response_format", None)
    if isinstance(response_format, Mapping) and "text" not in chat:
        fmt = dict(response_format)
        inner = fmt.pop("json_schema", None)
        if isinstance(inner, Mapping):
            fmt.update(inner)
        chat["text"] = {"format": fmt}
    return chat


class Template(Protocol):
    """A compiled prompt: `PromptTemplate` ({column}) or
    `batchrun._templating.jinja.JinjaPromptTemplate`."""

    messages: tuple[dict[str, str], ...]
    placeholders: tuple[str, ...]

    def render(
        self, row: Mapping[str, Any], row_label: str, *, path: str = "input"
    ) -> list[dict[str, str]]: ...


def template_engine(messages: Sequence[Mapping[str, str]], settings: Settings) -> str:
    """'format' or 'jinja': the setting, or with 'auto' what the templates look like
    (an examples file is only for Jinja)."""
    if settings.template_engine != "auto":
        return settings.template_engine
    if settings.examples or any(looks_like_jinja(str(m["content"])) for m in messages):
        return "jinja"
    return "format"


def template_for(messages: Sequence[Mapping[str, str]], settings: Settings) -> Template:
    """The compiled template of a job's messages, by `template_engine`."""
    if template_engine(messages, settings) == "format":
        return PromptTemplate(messages)
    from batchrun._templating.jinja import JinjaPromptTemplate, load_examples

    examples = load_examples(settings.examples) if settings.examples else None
    return JinjaPromptTemplate(messages, examples=examples)


def _calling(
    fn: Callable[[Any], Any],
    defaults: Mapping[str, Any],
    response_format: Mapping[str, Any] | None,
    path: str,
    *,
    api: str = CHAT,
) -> Callable[[Mapping[str, Any], str], dict[str, Any]]:
    def build(row: Mapping[str, Any], row_label: str) -> dict[str, Any]:
        try:
            made = fn(row)
        except Exception as exc:  # the user's function refusing a row is a bad row
            problem = f"prompt function: {type(exc).__name__}: {exc}"
            raise InputError(path, row_label, problem) from exc
        if isinstance(made, str):
            made = [{"role": "user", "content": made}]
        if isinstance(made, list | tuple):
            body = {**defaults, "messages": list(made)}
        elif isinstance(made, Mapping):
            body = {**defaults, **made}
        else:
            raise InputError(
                path, row_label, f"prompt function returned {type(made).__name__}, not messages"
            )
        if response_format is not None and "response_format" not in body:
            body["response_format"] = response_format
        if api == EMBEDDINGS and isinstance(made, Mapping) and "input" not in made:
            raise InputError(path, row_label, "prompt function returned a body without 'input'")
        return body

    return build
