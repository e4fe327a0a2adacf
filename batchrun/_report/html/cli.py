"""``batchrun report`` and ``batchrun serve``: argument parsing only.

Lazy commands of the ``batchrun`` group (imported only when used).

    $ batchrun report runs/a                 # the text report (as `batchrun status`)
    $ batchrun report runs/a --html          # writes runs/a/report.html
    $ batchrun report runs/a --html out.html
    $ batchrun serve runs/a --port 8765      # the live page, until Ctrl-C
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import click

from batchrun.errors import BatchrunError

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
_DEFAULT_PATH = "\0default"  # `--html` given without a file name


@contextmanager
def _errors_as_messages() -> Iterator[None]:
    """A BatchrunError is one line on stderr and exit 1 (as `batchrun._cli` does)."""
    try:
        yield
    except BatchrunError as exc:
        from batchrun._redact import scrub_text

        raise click.ClickException(scrub_text(str(exc))) from exc


@click.command("report", context_settings=CONTEXT)
@click.argument("run_dir")
@click.option(
    "--html",
    "html_path",
    is_flag=False,
    flag_value=_DEFAULT_PATH,
    default=None,
    metavar="[FILE]",
    help="Write a self-contained HTML report (default RUN_DIR/report.html).",
)
def report_command(run_dir: str, html_path: str | None) -> None:
    """Report on a run: the text report, or with --html one HTML file with charts
    that opens anywhere, offline."""
    with _errors_as_messages():
        if html_path is None:
            from batchrun._report.text import format_status, status_report

            click.echo(format_status(status_report(run_dir)))
            return
        from batchrun._report.html.page import write_html_report

        written = write_html_report(run_dir, None if html_path == _DEFAULT_PATH else html_path)
    click.echo(written)


def wait_until_interrupted(url: str) -> None:
    """Block until Ctrl-C while ``url`` serves (tests replace this with requests)."""
    threading.Event().wait()


@click.command("serve", context_settings=CONTEXT)
@click.argument("run_dir")
@click.option("--port", default=0, show_default="a free port", help="Port to listen on.")
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to bind. Anything but loopback shows the run's prompts and answers "
    "to whoever can reach the port.",
)
def serve_command(run_dir: str, port: int, host: str) -> None:
    """Serve a live report page for a run directory, refreshed while the run goes.
    Its URL carries a token every request needs (the page is private to who has it)."""
    from batchrun._output.store import is_object_storage
    from batchrun._report.html.server import is_loopback, serve_run_dir

    if not is_object_storage(run_dir) and not os.path.isdir(run_dir):
        raise click.ClickException(f"{run_dir}: no such run directory")
    if not is_loopback(host):
        click.echo(
            f"batchrun: serving on {host}: anyone who can reach this port sees the run's "
            "prompts and answers",
            err=True,
        )
    with _errors_as_messages(), serve_run_dir(run_dir, host, port) as url:
        click.echo(f"batchrun: live report of {run_dir} at {url} (Ctrl-C to stop)", err=True)
        click.echo(url)
        try:
            wait_until_interrupted(url)
        except KeyboardInterrupt:
            sys.exit(130)
