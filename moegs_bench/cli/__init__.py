"""The command line: each command parses its options, calls one library function and prints
(`run.py`: run, train; `prepare.py`: prepare, datasets; `report.py`: report)."""

from __future__ import annotations

import sys

import click

from ..errors import MoegsError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="moegs-bench")
def cli() -> None:
    """moegs-bench: prepare dynamic multi-view datasets, train Gaussian-splatting experts and
    MoE-GS routers, measure them one way, and print the paper's tables."""


def main() -> None:
    """Console entry point: a user-facing error is one line on stderr and exit status 2."""
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except MoegsError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)


def _register() -> None:
    from .prepare import datasets_cmd, prepare
    from .report import report
    from .run import run, train

    for command in (run, train, report, prepare):
        cli.add_command(command)
    cli.add_command(datasets_cmd, name="datasets")


_register()
