"""Where an input is: one file, a directory, a prefix or a glob, on local disk or on
object storage.

    requests.jsonl                  one local file (read with Python's own files, as always)
    data/  or  data/*.parquet       every input file under the directory, or the glob's
    s3://bucket/prefix/             every object under the prefix (also gs://, abfs://)
    s3://bucket/p/part-*.jsonl      the objects the glob matches
    hf://datasets/user/name/x.parquet   a file of a Hugging Face repository

Object stores are reached through ``pyarrow.fs`` (hf:// through fsspec's
``HfFileSystem`` from huggingface_hub, the ``hf`` extra, wrapped in a pyarrow
filesystem). Credentials and endpoints come from where each SDK looks for them and
nowhere else: the ``AWS_*`` variables (``AWS_ENDPOINT_URL`` or ``AWS_ENDPOINT_URL_S3``
for MinIO, R2 or a local S3, passed to pyarrow as ``endpoint_override``), the shared
config files and instance roles; ``GOOGLE_APPLICATION_CREDENTIALS`` and the metadata
server (``STORAGE_EMULATOR_HOST`` for a local GCS); ``AZURE_STORAGE_CONNECTION_STRING``
(with its endpoint: Azurite), ``AZURE_STORAGE_ACCOUNT_KEY`` or Azure's default
credential; ``HF_TOKEN``. A location that carries a credential
itself (``s3://KEY:SECRET@bucket``, ``?secret_key=``) is refused where it comes in
(`location_credentials`): run.json records the location as given.

A directory or prefix is read in full (sub-directories too, as Hive-partitioned data
is laid out), in sorted order of the files' names below it; names starting with ``.``
or ``_`` (``_SUCCESS``, ``.crc``) are skipped, as Spark and pyarrow skip them. Every
other file must be an input file of one format (JSONL, Parquet, CSV or TSV; ``.gz``
too): a stray file is refused, never silently left out.

Each file's version is its `InputFile.tag`: the store's ETag (S3, Azure), generation
(GCS) or blob id (Hugging Face), read with one metadata request per file. A new
version of an object always has a new tag, so the input's fingerprint is built from
the tags without reading the data (`batchrun._input.sources.Source.fingerprint`); a
store that gives none has its bytes hashed, as a local file's are.

    >>> location_credentials("s3://AKIA:secret@bucket/data.parquet")
    'a key in the URI (user:password@)'
    >>> split_glob("s3://bucket/runs/*/part-*.jsonl")
    ('s3://bucket/runs', '*/part-*.jsonl')
"""

from __future__ import annotations

import fnmatch
import gzip
import io
import os
import threading
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import IO, Any
from urllib.parse import urlsplit

from batchrun.errors import InputError

OBJECT_SCHEMES = ("s3", "gs", "gcs", "abfs", "abfss", "hf")
"""The schemes read as object storage (anything else with ``://`` is refused)."""
INPUT_SUFFIXES = (
    ".jsonl", ".jsonl.gz", ".ndjson", ".ndjson.gz", ".parquet", ".pq",
    ".csv", ".csv.gz", ".tsv", ".tsv.gz",
)  # fmt: skip
"""The files a directory, prefix or glob may hold (a single file may be named otherwise:
it is read as JSONL, as always)."""
HIDDEN_PREFIXES = (".", "_")
GLOB_CHARS = "*?["
REMOTE_READ_BYTES = 8 << 20
"""One ranged GET per this many bytes when an object is read through."""
TAG_LOOKUPS = 16
"""Metadata requests in flight when the tags of many objects are read."""
TAG_KEYS = ("ETag", "etag", "generation", "blob_id", "sha256", "md5Hash", "crc32c")
"""Where each store's metadata names an object's version, strongest first."""
SECRET_ENV = (
    "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AZURE_STORAGE_ACCOUNT_KEY",
    "AZURE_STORAGE_KEY", "AZURE_STORAGE_SAS_TOKEN", "AZURE_STORAGE_CONNECTION_STRING",
    "HF_TOKEN",
)  # fmt: skip
"""Credentials the stores read from the environment: scrubbed from everything batchrun
writes (`batchrun._redact`), should an SDK's error message ever quote one."""


def scheme_of(location: str) -> str | None:
    """The object-storage scheme of ``location`` ('s3', 'gs', ...); None for a local path.

    >>> scheme_of("s3://b/k"), scheme_of("data/x.jsonl"), scheme_of("file:///tmp/x.jsonl")
    ('s3', None, None)
    """
    head, sep, _ = location.partition("://")
    if not sep or "/" in head:
        return None
    scheme = head.lower()
    if scheme == "file":
        return None
    if scheme in OBJECT_SCHEMES:
        return scheme
    if scheme in ("http", "https"):
        raise InputError(
            location, "0", "inputs are not read over HTTP: download the file, or give its "
            "object-storage URI (s3://, gs://, abfs://, hf://)"
        )  # fmt: skip
    raise InputError(
        location, "0", f"unknown scheme {head}:// (give a local path, or s3://, gs://, "
        "abfs:// or hf://)"
    )  # fmt: skip


def is_remote(location: str) -> bool:
    return scheme_of(location) is not None


def local_path(location: str) -> str:
    """A local location without its ``file://``."""
    return location[len("file://") :] if location.lower().startswith("file://") else location


def location_credentials(location: str) -> str | None:
    """What in ``location`` is a credential, described without its value (None: none).

    A user name is the container in ``abfs://container@account...`` and is allowed
    there; anywhere else ``user@`` is an access key. Query parameters are judged as in
    a base URL (`batchrun._endpoint.url_credentials`): ``?region=`` passes,
    ``?secret_key=`` does not.

    >>> location_credentials("abfs://data@acct.dfs.core.windows.net/x.parquet") is None
    True
    >>> location_credentials("s3://b/x.parquet?access_key=AKIA&secret_key=s")
    "the query parameter 'access_key'"
    """
    try:
        scheme = scheme_of(location)
    except InputError:
        return None  # refused for its scheme when it is read
    if scheme is None:
        return None
    from batchrun._endpoint import url_credentials

    parts = urlsplit(location)
    if parts.password is not None or (
        parts.username is not None and scheme not in ("abfs", "abfss")
    ):
        return "a key in the URI (user:password@)"
    found = url_credentials("https://host/?" + parts.query) if parts.query else None
    return found


def recorded_location(location: str) -> str:
    """The input as run.json records it: a local path made absolute, a URI as given."""
    return location if is_remote(location) else os.path.abspath(local_path(location))


def display_stem(location: str) -> str:
    """A short name for the input (a run directory's default name): the file's stem, or
    the directory's or glob's last plain component.

    >>> display_stem("s3://b/reviews/part-*.parquet"), display_stem("data/x.jsonl.gz")
    ('reviews', 'x')
    """
    base, pattern = split_glob(shown(location).rstrip("/"))
    name = base.rstrip("/").rsplit("/", 1)[-1] if pattern else base.rsplit("/", 1)[-1]
    if "://" in name or not name:
        name = "input"
    return name.split(".")[0] or "input"


# -- globs (pure) --------------------------------------------------------------------------
def _without_query(location: str) -> tuple[str, str]:
    """A URI's location and its ``?query`` (pyarrow's options: ``?region=``); a ``?`` in
    a URI starts its query, it is no glob character there."""
    if "://" not in location:
        return location, ""
    base, sep, query = location.partition("?")
    return base, sep + query


def shown(location: str) -> str:
    """A location as messages name it (a URI without its query)."""
    return _without_query(location)[0]


def is_glob(location: str) -> bool:
    return any(c in _without_query(location)[0] for c in GLOB_CHARS)


def split_glob(location: str) -> tuple[str, str]:
    """(the location before the first component holding a glob character, the pattern
    after it); no glob: (location, ""). A URI's query stays with the location.

    >>> split_glob("s3://b/p/*.parquet?region=eu-west-1")
    ('s3://b/p?region=eu-west-1', '*.parquet')
    """
    path, query = _without_query(location)
    if not is_glob(path):
        return location, ""
    head, sep, rest = path.partition("://")
    if not sep:
        head, rest = "", path
    parts = rest.split("/")
    for i, part in enumerate(parts):
        if any(c in part for c in GLOB_CHARS):
            base = "/".join(parts[:i])
            prefix = f"{head}://" if sep else ""
            return prefix + base + query, "/".join(parts[i:])
    return location, ""


def glob_matches(pattern: str, relative: str) -> bool:
    """Whether ``relative`` (a/b/c.parquet) matches ``pattern``, component by component;
    ``**`` matches any number of components, ``*`` never crosses a ``/``.

    >>> glob_matches("*.parquet", "a.parquet"), glob_matches("*.parquet", "x/a.parquet")
    (True, False)
    >>> glob_matches("**/part-*.jsonl", "2024/01/part-3.jsonl")
    True
    """
    return _match(pattern.split("/"), relative.split("/"))


def _match(pattern: list[str], parts: list[str]) -> bool:
    if not pattern:
        return not parts
    head = pattern[0]
    if head == "**":
        return any(_match(pattern[1:], parts[i:]) for i in range(len(parts) + 1))
    if not parts or not fnmatch.fnmatchcase(parts[0], head):
        return False
    if parts[0].startswith(HIDDEN_PREFIXES) and not head.startswith(HIDDEN_PREFIXES):
        return False  # *.parquet never picks _SUCCESS-like files up
    return _match(pattern[1:], parts[1:])


def _hidden(relative: str) -> bool:
    return any(part.startswith(HIDDEN_PREFIXES) for part in relative.split("/"))


# -- one file of an input ------------------------------------------------------------------
@dataclass(frozen=True)
class InputFile:
    """One file of an input.

    ``name`` is how messages name it (a local path as given or joined to its
    directory, or the full URI); ``relative`` its name inside the input (``a.parquet``,
    ``2024/b.parquet``: the ids of a many-file input start with it); ``path`` the path
    its filesystem knows; ``filesystem`` a ``pyarrow.fs.FileSystem``, None for the
    local disk (read with Python's ``open``); ``tag`` the store's version of the object
    (`TAG_KEYS`), None until `tagged` or when the store gives none.
    """

    name: str
    relative: str
    path: str
    size: int = -1
    filesystem: Any = None
    tag: str | None = None

    @property
    def remote(self) -> bool:
        return self.filesystem is not None

    def open(self, start: int = 0) -> IO[bytes]:
        """The file's bytes from ``start`` (buffered; one ranged GET per
        `REMOTE_READ_BYTES` on object storage)."""
        if self.filesystem is None:
            f = open(self.path, "rb")
            if start:
                f.seek(start)
            return f
        raw = self.open_random()
        if start:
            raw.seek(start)
        return io.BufferedReader(raw, REMOTE_READ_BYTES)

    def open_text_stream(self, gz: bool, start: int = 0) -> IO[bytes]:
        """`open`, gunzipped when ``gz`` (closing the result closes the file)."""
        raw = self.open(start)
        if not gz:
            return raw
        return _GzipOver(raw)  # type: ignore[return-value]

    def parquet(self) -> Any:
        """The file as a ``pyarrow.parquet.ParquetFile`` (remote: its column chunks read
        with coalesced ranged GETs)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            if self.filesystem is None:
                return pq.ParquetFile(self.path)
            return pq.ParquetFile(self.open_random(), pre_buffer=True)
        except (pa.ArrowException, OSError) as exc:
            raise InputError(self.name, "0", f"not a readable Parquet file ({exc})") from exc

    def open_random(self) -> Any:
        """A random-access pyarrow file of a remote object, refused when the object is no
        longer the version this run fingerprinted (`CHANGED`)."""
        try:
            if self.tag is not None and _is_fsspec(self.filesystem):
                if _version(self.filesystem, self.path)[1] != self.tag:
                    raise InputError(self.name, "0", CHANGED)
            raw = self.filesystem.open_input_file(self.path)
        except FileNotFoundError as exc:
            raise InputError(self.name, "0", "no such file (the object is gone)") from exc
        if self.tag is not None and not _is_fsspec(self.filesystem):
            now = _tag_of(raw.metadata())
            if now is not None and now != self.tag:
                raw.close()
                raise InputError(self.name, "0", CHANGED)
        return raw

    def current_size(self) -> int:
        """The file's length now (-1: gone)."""
        if self.filesystem is None:
            try:
                return os.path.getsize(self.path)
            except OSError:
                return -1
        from pyarrow.fs import FileType

        try:
            info = self.filesystem.get_file_info(self.path)
        except OSError:
            return -1
        return int(info.size) if info.type == FileType.File else -1

    def tagged(self) -> InputFile:
        """This file with its size and tag read from the store now (local: size only)."""
        try:
            if self.filesystem is None:
                return replace(self, size=os.path.getsize(self.path))
            size, tag = _version(self.filesystem, self.path)
            return replace(self, size=size, tag=tag)
        except FileNotFoundError as exc:
            raise InputError(self.name, "0", "no such file") from exc
        except OSError as exc:
            raise InputError(self.name, "0", f"cannot read file: {exc}") from exc


def _is_fsspec(filesystem: Any) -> bool:
    from pyarrow.fs import PyFileSystem

    return isinstance(filesystem, PyFileSystem)


def _version(filesystem: Any, path: str) -> tuple[int, str | None]:
    """(size, tag) of a remote object: one metadata request."""
    if _is_fsspec(filesystem):  # an fsspec file's pyarrow metadata is empty: ask fsspec
        info = filesystem.handler.fs.info(path)
        return int(info.get("size") or 0), _tag_of(info)
    with filesystem.open_input_file(path) as f:
        return int(f.size()), _tag_of(f.metadata())


CHANGED = (
    "the object changed since this run first read it (a new version has another "
    "ETag): rerun with another -o directory to read the new data"
)


def _tag_of(metadata: Mapping[Any, Any] | None) -> str | None:
    if not metadata:
        return None
    found = {(k.decode() if isinstance(k, bytes) else str(k)): v for k, v in metadata.items()}
    for key in TAG_KEYS:
        value = found.get(key)
        if isinstance(value, bytes | str | int) and value != "":
            return value.decode() if isinstance(value, bytes) else str(value)
    return None


def tag_all(files: list[InputFile]) -> list[InputFile]:
    """`InputFile.tagged` for every file, `TAG_LOOKUPS` metadata requests at a time."""
    if len(files) <= 1 or not files[0].remote:
        return [f.tagged() for f in files]
    with ThreadPoolExecutor(TAG_LOOKUPS) as pool:
        return list(pool.map(InputFile.tagged, files))


class _GzipOver(gzip.GzipFile):
    """A gzip stream over an open file that closes the file with it."""

    def __init__(self, raw: IO[bytes]) -> None:
        super().__init__(fileobj=raw, mode="rb")
        self._raw = raw

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._raw.close()


# -- finding the files ---------------------------------------------------------------------
def input_files(location: str) -> tuple[list[InputFile], bool]:
    """The files of ``location`` in order, and whether it names many (a directory,
    prefix or glob: ids then start with each file's name) rather than one file."""
    refusal = location_credentials(location)
    if refusal is not None:  # checked where the input comes in; never read with it
        raise InputError("the input", "0", f"{refusal}: give credentials in the environment")
    base, pattern = split_glob(location)
    scheme = scheme_of(location)
    if scheme is None:
        files = _local_files(local_path(base), local_path(location), pattern)
    else:
        files = _remote_files(location, base, pattern)
    return files


def _local_files(base: str, location: str, pattern: str) -> tuple[list[InputFile], bool]:
    if pattern:
        found = [
            rel
            for rel in _walk(base, recursive="/" in pattern or "**" in pattern)
            if glob_matches(pattern, rel)
        ]
        if not found:
            raise InputError(location, "0", "no file matches this pattern")
        return _checked(location, [_local(base, rel) for rel in found], glob=True), True
    if os.path.isdir(location):
        listed = [rel for rel in _walk(location, recursive=True) if not _hidden(rel)]
        return _checked(location, [_local(location, rel) for rel in listed], glob=False), True
    return [InputFile(location, os.path.basename(location), location)], False


def _local(base: str, relative: str) -> InputFile:
    path = os.path.join(base, *relative.split("/")) if base else relative
    return InputFile(path, relative, path)


def _walk(top: str, *, recursive: bool) -> list[str]:
    """Files under ``top`` as sorted posix paths relative to it."""
    out: list[str] = []
    if not os.path.isdir(top or "."):
        return out
    for root, dirs, names in os.walk(top or "."):
        rel_root = os.path.relpath(root, top or ".")
        prefix = "" if rel_root == "." else rel_root.replace(os.sep, "/") + "/"
        out.extend(prefix + n for n in names)
        if not recursive:
            dirs.clear()
    return sorted(out)


def _remote_files(location: str, base: str, pattern: str) -> tuple[list[InputFile], bool]:
    from pyarrow.fs import FileSelector, FileType

    filesystem, root = filesystem_for(base if pattern else location)
    prefix = shown(base if pattern else location).rstrip("/")
    try:
        if pattern:
            recursive = "/" in pattern or "**" in pattern
            infos = filesystem.get_file_info(
                FileSelector(root.rstrip("/"), recursive=recursive, allow_not_found=True)
            )
            found = [
                (rel, info)
                for info in infos
                if info.type == FileType.File
                and glob_matches(pattern, rel := _relative(root, info.path))
            ]
            if not found:
                raise InputError(location, "0", "no object matches this pattern")
            files = [_remote(filesystem, prefix, rel, info) for rel, info in sorted(found)]
            return _checked(location, files, glob=True), True
        info = filesystem.get_file_info(root)
        if info.type == FileType.File:
            name = shown(location).rsplit("/", 1)[-1]
            return [InputFile(shown(location), name, root, int(info.size), filesystem)], False
        if info.type == FileType.NotFound:
            raise InputError(location, "0", "no such file (no object, and no object under it)")
        infos = filesystem.get_file_info(FileSelector(root.rstrip("/"), recursive=True))
    except InputError:
        raise
    except OSError as exc:
        raise InputError(location, "0", f"cannot read it: {exc}") from exc
    found = sorted(
        (rel, i)
        for i in infos
        if i.type == FileType.File and not _hidden(rel := _relative(root, i.path))
    )
    files = [_remote(filesystem, prefix, rel, i) for rel, i in found]
    return _checked(location, files, glob=False), True


def _relative(root: str, path: str) -> str:
    root = root.rstrip("/")
    return path[len(root) + 1 :] if root and path.startswith(root + "/") else path


def _remote(filesystem: Any, prefix: str, relative: str, info: Any) -> InputFile:
    root = info.path
    return InputFile(f"{prefix}/{relative}", relative, root, int(info.size), filesystem)


def _checked(location: str, files: list[InputFile], *, glob: bool) -> list[InputFile]:
    """Every file an input file, all of one format."""
    from batchrun._input.kinds import input_kind

    if not files:
        what = "is a directory with no input files" if not glob else "matches no file"
        raise InputError(location, "0", f"{what} ({', '.join(INPUT_SUFFIXES)})")
    first: InputFile | None = None
    for f in files:
        if not f.relative.lower().endswith(INPUT_SUFFIXES):
            raise InputError(
                f.name,
                "0",
                f"not an input file ({', '.join(INPUT_SUFFIXES)}): move it out of {location} "
                "or name the input files with a glob (data/*.parquet)",
            )
        if first is None:
            first = f
        elif family(input_kind(f.relative)) != family(input_kind(first.relative)):
            raise InputError(
                location,
                "0",
                f"mixes file formats ({first.relative} and {f.relative}): one input is "
                "files of one format",
            )
    return files


def family(kind: str) -> str:
    """Kinds that read the same rows: 'jsonl' and 'jsonl.gz' are one family."""
    return kind.removesuffix(".gz")


def child(location: str, relative: str) -> InputFile:
    """The file ``relative`` of a many-file input (one shard's file), found without
    listing the rest."""
    base, pattern = split_glob(location)
    top = base if pattern else location
    if scheme_of(location) is None:
        return _local(local_path(top).rstrip("/") if top else "", relative)
    filesystem, root = filesystem_for(top)
    root = root.rstrip("/")
    return InputFile(
        f"{shown(top).rstrip('/')}/{relative}", relative, f"{root}/{relative}", -1, filesystem
    )


# -- filesystems ---------------------------------------------------------------------------
_filesystems: dict[tuple[Any, ...], Any] = {}
_lock = threading.Lock()


def filesystem_for(uri: str) -> tuple[Any, str]:
    """(a ``pyarrow.fs.FileSystem`` for ``uri``, the path it knows ``uri`` by).

    One filesystem per bucket and set of endpoint variables in a process (an S3
    filesystem resolves its bucket's region once)."""
    scheme = scheme_of(uri)
    assert scheme is not None
    register_env_secrets()
    parts = urlsplit(uri)
    path = _path_of(scheme, parts)
    if scheme == "hf":
        return _hf_filesystem(), path
    env = tuple(os.environ.get(name) for name in _ENDPOINT_ENV)
    key = (scheme, parts.netloc, parts.query, env)
    with _lock:
        made = _filesystems.get(key)
    if made is None:
        made = _make_filesystem(scheme, uri, parts)
        with _lock:
            _filesystems[key] = made
    return made, path


def _path_of(scheme: str, parts: Any) -> str:
    """The path pyarrow knows: ``bucket/key``; Azure: ``container/path``."""
    if scheme in ("abfs", "abfss") and parts.username:
        return f"{parts.username}{parts.path}"
    return f"{parts.netloc}{parts.path}"


_ENDPOINT_ENV = (
    "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION",
    "AWS_PROFILE", "AWS_ACCESS_KEY_ID", "STORAGE_EMULATOR_HOST",
    "AZURE_STORAGE_ACCOUNT_KEY", "AZURE_STORAGE_KEY", "AZURE_STORAGE_ACCOUNT_NAME",
    "AZURE_STORAGE_CONNECTION_STRING",
)  # fmt: skip


def _make_filesystem(scheme: str, uri: str, parts: Any) -> Any:
    import pyarrow.fs as pafs

    try:
        if scheme == "s3" and not parts.query:
            endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
            region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
            if endpoint:  # MinIO, R2, a local S3: pyarrow older than 15 ignores the variable
                return pafs.S3FileSystem(endpoint_override=endpoint, region=region or "us-east-1")
        if scheme in ("gs", "gcs") and os.environ.get("STORAGE_EMULATOR_HOST"):
            host = os.environ["STORAGE_EMULATOR_HOST"]
            emulated = urlsplit(host if "://" in host else f"http://{host}")
            return pafs.GcsFileSystem(
                anonymous=True, endpoint_override=emulated.netloc, scheme=emulated.scheme
            )
        if scheme in ("abfs", "abfss"):
            made = _azure_filesystem(parts)
            if made is not None:
                return made
        return pafs.FileSystem.from_uri(uri)[0]
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise InputError(uri, "0", f"cannot reach it: {exc}") from exc


def _azure_filesystem(parts: Any) -> Any:
    """A pyarrow AzureFileSystem from ``AZURE_STORAGE_CONNECTION_STRING`` (its account,
    key and blob endpoint: Azurite's too) or from an account key for the account the
    location names; None: pyarrow's own defaults (its default credential)."""
    import pyarrow.fs as pafs

    account = (parts.hostname or "").split(".", 1)[0] if parts.username else ""
    fields = connection_string()
    if fields:
        options: dict[str, Any] = {"account_name": fields.get("AccountName", account)}
        if fields.get("AccountKey"):
            options["account_key"] = fields["AccountKey"]
        if fields.get("SharedAccessSignature"):
            options["sas_token"] = fields["SharedAccessSignature"]
        endpoint = fields.get("BlobEndpoint")
        if endpoint:  # Azurite: http://127.0.0.1:10000/devstoreaccount1
            where = urlsplit(endpoint)
            for kind in ("blob", "dfs"):
                options[f"{kind}_storage_authority"] = where.netloc
                options[f"{kind}_storage_scheme"] = where.scheme
        return pafs.AzureFileSystem(**options)
    key = os.environ.get("AZURE_STORAGE_ACCOUNT_KEY") or os.environ.get("AZURE_STORAGE_KEY")
    account = account or os.environ.get("AZURE_STORAGE_ACCOUNT_NAME", "")
    if key and account:
        return pafs.AzureFileSystem(account_name=account, account_key=key)
    return None


def connection_string() -> dict[str, str]:
    """The fields of ``AZURE_STORAGE_CONNECTION_STRING`` (empty when unset).

    >>> import os; os.environ["AZURE_STORAGE_CONNECTION_STRING"] = "AccountName=a;AccountKey=k=="
    >>> connection_string()
    {'AccountName': 'a', 'AccountKey': 'k=='}
    >>> del os.environ["AZURE_STORAGE_CONNECTION_STRING"]
    """
    text = os.environ.get("AZURE_STORAGE_CONNECTION_STRING", "")
    pairs = (item.partition("=") for item in text.split(";") if "=" in item)
    return {name.strip(): value.strip() for name, _, value in pairs}


def _hf_filesystem() -> Any:
    """huggingface_hub's fsspec filesystem, as a pyarrow filesystem."""
    try:
        from huggingface_hub import HfFileSystem
    except ImportError as exc:
        raise InputError(
            "hf://", "0", "hf:// inputs need huggingface_hub: pip install 'batchrun[hf]'"
        ) from exc
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    return PyFileSystem(FSSpecHandler(HfFileSystem()))


def register_env_secrets() -> None:
    from batchrun._redact import register_secret

    for name in SECRET_ENV:
        register_secret(os.environ.get(name))
    fields = connection_string()  # its key, should a message quote it alone
    for name in ("AccountKey", "SharedAccessSignature"):
        register_secret(fields.get(name))


def many_sizes(files: Iterable[InputFile]) -> dict[str, int]:
    return {f.relative: f.size for f in files}


__all__ = [
    "INPUT_SUFFIXES",
    "InputFile",
    "child",
    "display_stem",
    "filesystem_for",
    "glob_matches",
    "input_files",
    "is_remote",
    "location_credentials",
    "recorded_location",
    "scheme_of",
    "split_glob",
    "tag_all",
]
