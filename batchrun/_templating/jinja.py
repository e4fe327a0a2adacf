"""Prompt templates in Jinja2, sandboxed: conditionals, loops, filters, few-shot examples.

`batchrun._templating.text.PromptTemplate` fills ``{column}`` placeholders, which covers a
fixed prompt. Evaluating prompt variants needs more: a sentence only when a column is
set, a list column written out as bullets, few-shot examples taken from a column or
from a small examples file. `JinjaPromptTemplate` offers the same interface
(``messages``, ``placeholders``, ``to_dict``, ``render(row, row_label, path=...)``) and
renders each message content with Jinja2:

    >>> t = JinjaPromptTemplate([{"role": "user", "content":
    ...     "Review: {{ text }}{% if tags %} (tags: {{ tags | join(', ') }}){% endif %}"}])
    >>> t.render({"text": "Great", "tags": ["fast", "cheap"]}, "line 1")[0]["content"]
    'Review: Great (tags: fast, cheap)'

The rules are `PromptTemplate`'s, so a prompt cannot go out wrong quietly:

* the environment is Jinja's sandbox, the immutable one: a template reads data, it
  cannot reach Python internals (``x.__class__`` is an error) nor change a value
  (``examples.append(...)`` is an error: the examples list is shared by every row),
  so a job file is not code;
* `StrictUndefined`: a variable the row lacks is an error, never an empty string; and
  `column_problems` checks the variables a template needs against the input's
  columns before anything is sent (``jinja2.meta.find_undeclared_variables``);
* a null value written as text is an error for that row (``template variable
  {{ x }}: column 'x' is null``); a null column is still usable in a test
  (``{% if x %}``, ``x is none``) or with ``default`` (which replaces nulls too);
* values print as `batchrun._templating.text.as_text` writes them: ``true``/``false``,
  ``0.1``, lists and dicts as compact JSON; ``tojson`` writes JSON without HTML
  escaping (Jinja's own escapes ``<`` and ``&``: wrong for a prompt);
* whitespace: ``trim_blocks`` and ``lstrip_blocks`` are on, so a ``{% for %}`` line
  leaves no blank line behind, and a template's trailing newline is kept; text with
  no Jinja syntax renders exactly as written;
* a syntax error is one line naming the message and the line: ``prompt.messages[1]:
  line 3: unexpected '}'``; a runtime error in one row is an `InputError` naming the
  file and row, and the template line;
* while the input is checked, a row may render for `batchrun._templating.rowwatch.
  RENDER_LIMIT_S` seconds: every ``{% for %}`` step and every call ticks the scan's
  watch, so a loop that runs away is a bad row (named) within that time, and a
  Ctrl-C stops it at once (``{% for %}``'s iterable is wrapped in a ticking one when
  the template is compiled; the sandbox's ``call`` ticks too).

Variables: every column by name, ``row`` (the whole row, for a column whose name is
not an identifier: ``row["user id"]``, or an optional one: ``row.get("x")``), and
``examples`` (the examples file's list, when one is given; otherwise a column named
``examples`` is just a column).
"""

from __future__ import annotations

import os
import re
import traceback
from collections.abc import Collection, Mapping, Sequence
from hashlib import blake2b
from typing import Any

import jinja2
import orjson
from jinja2 import meta, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from batchrun._templating.cells import as_text, columns_note
from batchrun._templating.rowwatch import Interrupted, TooSlow, current, ticking
from batchrun.errors import ConfigError, InputError

__all__ = ["JinjaPromptTemplate", "jinja_template_problems", "load_examples"]

_JINJA_SYNTAX = re.compile(r"\{[{%#]")
_TEMPLATE_FILE = "<template>"  # the file name Jinja gives frames of a from_string template
_UNDEFINED_NAME = re.compile(r"^'([^']+)' is undefined$")
_concat = "".join


class _NullUsed(Exception):
    """A null column was used as text (caught in `render`, reported as InputError)."""

    def __init__(self, column: str | None) -> None:
        super().__init__(column)
        self.column = column


class _Null:
    """Stands for a null column value: false in a test, equal to none, an error as text.

    Jinja would print None as "None" (or, through ``finalize``, only know that *some*
    value was null); this keeps the column's name for the error message.
    """

    __slots__ = ("column",)

    def __init__(self, column: str) -> None:
        self.column = column

    def __bool__(self) -> bool:
        return False

    def __eq__(self, other: object) -> bool:
        return other is None or isinstance(other, _Null)

    def __hash__(self) -> int:
        return hash(None)

    def _used(self, *_args: Any) -> Any:
        raise _NullUsed(self.column)

    __str__ = __iter__ = __len__ = __getitem__ = __add__ = __radd__ = __mul__ = _used
    __lt__ = __le__ = __gt__ = __ge__ = __int__ = __float__ = __contains__ = _used

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)  # hasattr(x, "__html__") and friends: just no
        raise _NullUsed(self.column)

    def __repr__(self) -> str:
        return "none"


def _finalize(value: Any) -> Any:
    """What ``{{ value }}`` prints: text as `as_text` writes it; null is an error."""
    if isinstance(value, str):
        return value
    if isinstance(value, _Null):
        raise _NullUsed(value.column)
    if value is None:
        raise _NullUsed(None)
    if isinstance(value, jinja2.Undefined):
        return str(value)  # StrictUndefined raises here, with Jinja's own message
    return as_text(value)


def _tojson(value: Any, indent: int | None = None) -> str:
    """JSON as a prompt wants it: no HTML escaping, non-ASCII kept, compact by default."""

    def default(obj: Any) -> Any:
        if isinstance(obj, _Null):
            raise _NullUsed(obj.column)
        return str(obj)

    option = orjson.OPT_NON_STR_KEYS | (orjson.OPT_INDENT_2 if indent else 0)
    return orjson.dumps(_plain(value), default=default, option=option).decode()


def _plain(value: Any) -> Any:
    """A null column inside a value given to tojson is JSON null (a value, not text)."""
    if isinstance(value, _Null):
        return None
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _default(value: Any, default_value: Any = "", boolean: bool = False) -> Any:
    """Jinja's ``default``, which also replaces a null (SQL's coalesce): in a prompt a
    null column and a missing one call for the same fallback."""
    if isinstance(value, jinja2.Undefined | _Null) or value is None:
        return default_value
    if boolean and not value:
        return default_value
    return value


def _is_none(value: Any) -> bool:
    return value is None or isinstance(value, _Null)


_LOOP = "__batchrun_loop__"
"""The global every ``{% for %}`` iterates through (`_ticking_loops`)."""


class _PromptEnvironment(ImmutableSandboxedEnvironment):
    """The immutable sandbox, whose calls (functions, methods, macros, ``range``) tick
    the scan's watch (`batchrun._templating.rowwatch`)."""

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        watch = current()
        if watch is not None:
            watch.tick()
        return super().call(__context, __obj, *args, **kwargs)


def _ticking_loops(ast: nodes.Template) -> None:
    """Make every ``{% for x in it %}`` iterate ``__batchrun_loop__(it)``: each step
    ticks the watch, so nested loops over a row's lists (no call in them) can be
    timed and stopped too. Outside a scan the wrapper returns ``it`` itself."""
    for loop in ast.find_all(nodes.For):
        wrapped = nodes.Call(nodes.Name(_LOOP, "load"), [loop.iter], [], None, None)
        loop.iter = wrapped.set_lineno(loop.iter.lineno)


_ENV: _PromptEnvironment | None = None


def _environment() -> _PromptEnvironment:
    global _ENV
    if _ENV is None:
        env = _PromptEnvironment(
            undefined=jinja2.StrictUndefined,
            autoescape=False,  # prompts are not HTML
            keep_trailing_newline=True,
            trim_blocks=True,
            lstrip_blocks=True,
            finalize=_finalize,
            auto_reload=False,
        )
        env.filters["tojson"] = _tojson
        env.filters["default"] = env.filters["d"] = _default
        env.tests["none"] = _is_none
        env.globals[_LOOP] = ticking
        _ENV = env
    return _ENV


def _compile(text: str, where: str) -> tuple[jinja2.Template, nodes.Template] | str:
    """The compiled template and its syntax tree, or the one-line problem."""
    env = _environment()
    try:
        ast = env.parse(text)
        _ticking_loops(ast)
        template = env.from_string(ast)
    except jinja2.TemplateSyntaxError as exc:
        message = (exc.message or str(exc)).rstrip(".")
        return f"{where}: line {exc.lineno}: {message}"
    loads = next(ast.find_all((nodes.Extends, nodes.Include, nodes.Import, nodes.FromImport)), None)
    if loads is not None:
        tag = type(loads).__name__.lower().replace("fromimport", "from")
        return (
            f"{where}: line {loads.lineno}: {{% {tag} %}} reads another template file; "
            "a prompt template is self-contained (few-shot examples: examples_file)"
        )
    return template, ast


def jinja_template_problems(text: str, where: str = "template") -> list[str]:
    """Why ``text`` is not a usable Jinja template, one line each (empty when it is).

    Catches syntax errors, unknown filters or tests, and tags that would read other
    template files, with the line number.

    >>> jinja_template_problems("Hi {{ name }")
    ["template: line 1: unexpected '}'"]
    >>> jinja_template_problems("{{ x | shout }}", "prompt.user")
    ["prompt.user: line 1: No filter named 'shout'"]
    """
    compiled = _compile(text, where)
    return [compiled] if isinstance(compiled, str) else []


def load_examples(path: str | os.PathLike[str]) -> list[Any]:
    """Few-shot examples from a JSON file holding a list, or a JSONL file (one value a
    line; blank lines skipped). Loaded once per run and given to every row.

    Raises ConfigError naming the file (and line) when it cannot be read.
    """
    name = os.fspath(path)
    try:
        with open(name, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read the examples file ({exc.strerror})") from exc
    if name.endswith((".jsonl", ".ndjson")):
        examples = []
        for number, line in enumerate(data.splitlines(), 1):
            if not line.strip():
                continue
            try:
                examples.append(orjson.loads(line))
            except orjson.JSONDecodeError as exc:
                raise ConfigError(f"{name}:line {number}: not JSON ({exc})") from exc
        return examples
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ConfigError(f"{name}: not JSON ({exc})") from exc
    if not isinstance(value, list):
        raise ConfigError(f"{name}: an examples file holds a JSON list (or is .jsonl)")
    return value


def _ordered_names(ast: nodes.Template, wanted: set[str]) -> list[str]:
    """The undeclared names in the order they first appear (for readable messages)."""
    seen: dict[str, None] = {}
    for node in ast.find_all(nodes.Name):
        if node.name in wanted:
            seen.setdefault(node.name)
    return list(seen) + sorted(wanted - set(seen))


class _Message:
    __slots__ = ("role", "where", "text", "template")

    def __init__(self, role: str, where: str, text: str, template: jinja2.Template | None):
        self.role = role
        self.where = where
        self.text = text
        self.template = template  # None: no Jinja syntax, the text is the content


class JinjaPromptTemplate:
    """Messages whose contents are Jinja templates, compiled once and rendered per row.

    ``examples`` is the few-shot list the templates see as ``examples`` (see
    `load_examples`); ``names`` label the messages in error messages (default
    ``prompt.messages[i]``).

    >>> t = JinjaPromptTemplate([{"role": "user", "content": "{{ q }} {{ row['a b'] }}"}])
    >>> t.placeholders
    ('q',)
    """

    __slots__ = (
        "messages",
        "placeholders",
        "examples",
        "_compiled",
        "_examples_digest",
        "_globals",
    )

    def __init__(
        self,
        messages: Sequence[Mapping[str, str]],
        *,
        examples: Sequence[Any] | None = None,
        names: Sequence[str] | None = None,
    ) -> None:
        if not messages:
            raise ConfigError("a prompt template needs at least one message")
        env = _environment()
        self._globals = dict(env.globals)
        self.messages: tuple[dict[str, str], ...] = tuple(
            {"role": str(m["role"]), "content": str(m["content"])} for m in messages
        )
        self.examples: list[Any] | None = list(examples) if examples is not None else None
        self._examples_digest = (
            None
            if self.examples is None
            else blake2b(
                orjson.dumps(self.examples, option=orjson.OPT_SORT_KEYS), digest_size=16
            ).hexdigest()
        )
        problems = []
        compiled = []
        needed: dict[str, None] = {}
        reserved = {"row", *env.globals}
        if self.examples is not None:
            reserved.add("examples")
        for i, message in enumerate(self.messages):
            where = names[i] if names is not None else f"prompt.messages[{i}]"
            text = message["content"]
            if not _JINJA_SYNTAX.search(text):
                compiled.append(_Message(message["role"], where, text, None))
                continue
            compiled_text = _compile(text, where)
            if isinstance(compiled_text, str):
                problems.append(compiled_text)
                continue
            template, ast = compiled_text
            undeclared = meta.find_undeclared_variables(ast) - reserved
            for name in _ordered_names(ast, undeclared):
                needed.setdefault(name)
            compiled.append(_Message(message["role"], where, text, template))
        if problems:
            raise ConfigError("; ".join(problems))
        self._compiled = tuple(compiled)
        self.placeholders: tuple[str, ...] = tuple(needed)
        """The columns the templates read by name (``row[...]`` reads are not listed)."""

    @classmethod
    def from_section(
        cls, section: Mapping[str, Any], *, base_dir: str | None = None
    ) -> JinjaPromptTemplate:
        """Build from a [prompt]-like mapping: ``system``/``user`` strings or ``messages``,
        and an optional ``examples_file`` (relative to ``base_dir``, the job file's
        directory)."""
        examples = None
        if section.get("examples_file"):
            path = os.path.join(base_dir or ".", os.path.expanduser(section["examples_file"]))
            examples = load_examples(path)
        if "messages" in section:
            return cls(section["messages"], examples=examples)
        messages, names = [], []
        if section.get("system"):
            messages.append({"role": "system", "content": section["system"]})
            names.append("prompt.system")
        messages.append({"role": "user", "content": section["user"]})
        names.append("prompt.user")
        return cls(messages, examples=examples, names=names)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON form for the run's fingerprint: the engine, the messages, and the
        examples' digest (a changed examples file changes every prompt)."""
        return {
            "engine": "jinja",
            "messages": [dict(m) for m in self.messages],
            "examples_blake2b": self._examples_digest,
            "examples_count": None if self.examples is None else len(self.examples),
        }

    def column_problems(self, columns: Collection[str]) -> list[str]:
        """What the input's columns lack for these templates, one line each, found
        before anything is sent. A column only read under ``is defined`` is listed
        too: read an optional column as ``row.get("x")`` instead.

        >>> t = JinjaPromptTemplate([{"role": "user", "content": "{{ lable }}"}])
        >>> print(t.column_problems(["label"])[0])
        template variable {{ lable }} has no column 'lable' (columns: label; did you mean 'label'?)
        """
        names = [str(c) for c in columns]
        problems = []
        for name in self.placeholders:
            if name not in columns:
                problems.append(
                    f"template variable {{{{ {name} }}}} has no column '{name}' "
                    + columns_note(name, names)
                )
        if self.examples is not None and "examples" in columns:
            problems.append(
                "the column 'examples' is hidden by the examples file: "
                "read it as row['examples'], or rename it"
            )
        return problems

    def render(
        self, row: Mapping[str, Any], row_label: str, *, path: str = "input"
    ) -> list[dict[str, str]]:
        """The messages for one row. A missing or null variable, or any error while
        rendering, raises InputError naming ``path`` and ``row_label`` ("line 12"); so
        does a render that runs past the scan's limit (`batchrun._templating.rowwatch`)."""
        watch = current()
        if watch is not None:
            watch.start()
        values: Mapping[str, Any] = row
        if None in row.values():
            values = {k: (_Null(k) if v is None else v) for k, v in row.items()}
        context: dict[str, Any] | None = None
        out = []
        for message in self._compiled:
            template = message.template
            if template is None:
                out.append({"role": message.role, "content": message.text})
                continue
            if context is None:
                # one plain dict per row, shared by the messages: Template.render would
                # copy the row and merge the globals (a ChainMap) once per message,
                # half the time of a two-placeholder prompt (BENCHMARKS.md)
                context = {**self._globals, **values, "row": values, _LOOP: ticking}
                if self.examples is not None:
                    context["examples"] = self.examples
            try:
                try:
                    content = _concat(
                        template.root_render_func(template.new_context(context, True))
                    )
                except Exception:
                    _environment().handle_exception()  # template line numbers, as render does
            except Interrupted:
                raise  # a Ctrl-C while the input is checked: the scan stops
            except TooSlow as exc:
                raise InputError(
                    path,
                    row_label,
                    f"{message.where}: rendering {exc} (a loop that runs away?); a prompt "
                    "renders in microseconds",
                ) from None
            except _NullUsed as exc:
                raise self._null(exc, message, row_label, path) from None
            except jinja2.UndefinedError as exc:
                raise self._undefined(exc, message, row, row_label, path) from None
            except jinja2.exceptions.SecurityError as exc:
                # the template's fault, whatever the row: stop before anything is sent
                raise ConfigError(f"{message.where}: {exc}") from None
            except Exception as exc:  # a template can raise anything; the row is named
                raise InputError(
                    path,
                    row_label,
                    f"{message.where}{_line_of(exc)}: {type(exc).__name__}: {exc}",
                ) from None
            out.append({"role": message.role, "content": content})
        return out

    def _null(self, exc: _NullUsed, message: _Message, row_label: str, path: str) -> InputError:
        column = exc.column
        if column is None:
            return InputError(
                path,
                row_label,
                f"{message.where}{_line_of(exc)}: a null value is written as text "
                "(test it with 'is none', or give a '| default')",
            )
        return InputError(
            path, row_label, f"template variable {{{{ {column} }}}}: column '{column}' is null"
        )

    def _undefined(
        self,
        exc: jinja2.UndefinedError,
        message: _Message,
        row: Mapping[str, Any],
        row_label: str,
        path: str,
    ) -> InputError:
        text = exc.message or str(exc)
        match = _UNDEFINED_NAME.match(text)
        if match and match.group(1) not in row:
            name = match.group(1)
            names = [str(k) for k in row]
            return InputError(
                path,
                row_label,
                f"template variable {{{{ {name} }}}} has no column '{name}' "
                + columns_note(name, names),
            )
        return InputError(path, row_label, f"{message.where}{_line_of(exc)}: {text}")

    def __repr__(self) -> str:
        return f"JinjaPromptTemplate({list(self.messages)!r})"


def _line_of(exc: BaseException) -> str:
    """ ", line N" of the template line that raised (Jinja rewrites the traceback so
    template frames carry template line numbers), or "" when none is known."""
    lines = [
        frame.lineno
        for frame in traceback.extract_tb(exc.__traceback__)
        if frame.filename == _TEMPLATE_FILE
    ]
    return f": line {lines[-1]}" if lines else ""
