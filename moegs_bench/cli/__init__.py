"""The command line: each command parses its options, calls one library function and prints
(`run.py`: run, train; `prepare.py`: prepare, datasets; `report.py`: report)."""

from __future__ import annotations

import os
import sys
import warnings

import click

from ..errors import MoegsError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="moegs-bench")
def cli() -> None:
    """moegs-bench: prepare dynamic multi-view datasets, train Gaussian-splatting experts and
    MoE-GS routers, measure them one way, and print the paper's tables."""


def main() -> None:
    """Console entry point: a user-facing error is one line on stderr and exit status 2 (a
    bad option, setting or input; an operating-system error naming the path and the cause);
    a warning (e.g. stored state rebuilt) is one line on stderr and the command goes on."""
    with warnings.catch_warnings():
        warnings.showwarning = _one_line_warning(set())
        try:
            cli.main(standalone_mode=False)
        except click.exceptions.Abort:
            click.echo("aborted", err=True)
            sys.exit(130)
        except click.ClickException as exc:
            click.echo(f"error: {exc.format_message()}", err=True)
            sys.exit(exc.exit_code)
        except MoegsError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)
        except OSError as exc:
            click.echo(f"error: {os_error_text(exc)}", err=True)
            sys.exit(2)


def os_error_text(exc: OSError) -> str:
    """`<path>: <cause>` (`<path> -> <path2>` for a rename) of an operating-system error."""
    cause = os.strerror(exc.errno) if exc.errno else (exc.strerror or str(exc))
    paths = [str(p) for p in (exc.filename, exc.filename2) if p is not None]
    return f"{' -> '.join(paths)}: {cause}" if paths else f"{cause} ({exc})"


def _one_line_warning(shown: set[str]):
    """warnings.showwarning printing `warning: <message>` once per distinct message."""

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        text = " ".join(str(message).split())
        if text not in shown:
            shown.add(text)
            click.echo(f"warning: {text}", err=True)

    return show


def _register() -> None:
    from .export import export
    from .prepare import datasets_cmd, prepare
    from .report import report
    from .run import run, train
    from .sweep import sweep

    for command in (run, train, report, prepare, export, sweep):
        cli.add_command(command)
    cli.add_command(datasets_cmd, name="datasets")


_register()
