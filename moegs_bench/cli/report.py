"""`moegs-bench report`: a registered table of the stored results (or a published one), a
registered figure (`--figure`), or the HTML report (`--html`)."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import ConfigError


@click.command()
@click.option("--table", "table", default="main", show_default=True, help="Table name (see --list).")
@click.option("--format", "fmt", default="markdown", show_default=True,
              type=click.Choice(["markdown", "csv", "latex"]))
@click.option("--runs", "runs_dir", default="runs", show_default=True,
              type=click.Path(file_okay=False, path_type=Path))
@click.option("--dataset", default=None, help="Only rows of this dataset.")
@click.option("--paper-table", default=None, type=int, help="With --table paper: which of the paper's tables (1-13).")
@click.option("--list", "list_tables", is_flag=True, help="List the tables and figures and exit.")
@click.option("--figure", default=None, help="Draw this figure (see --list) as PNG and PDF instead of a table.")
@click.option("--out", "out_dir", default="figures", show_default=True, type=click.Path(file_okay=False, path_type=Path),
              help="With --figure: folder for the files.")
@click.option("--html", "html_dir", default=None, type=click.Path(file_okay=False, path_type=Path),
              help="Write the HTML report (tables and figures) to this folder instead of a table.")
@click.option("--option", "table_opts", multiple=True, metavar="KEY=VALUE",
              help="An option of the table (--list shows each table's), e.g. --option variant=ex4dgs+stg, "
                   "--option pruning=75, --option rule=importance-max; repeatable.")
def report(table, fmt, runs_dir, dataset, paper_table, list_tables, figure, out_dir, html_dir, table_opts):
    """Print a table built from the stored results (or, with --table paper, a published one).
    Each table receives the options it declares (dataset, notes, paper_table) and those given
    with --option (checked against its builder before anything is read). With --figure,
    draw a figure of the stored results instead; with --html, write the HTML report."""
    import pandas as pd

    from ..bench.store import RESULT_COLUMNS, notes, results
    from ..report.tables import TABLES, build_table, format_table
    from ..report.tables.registry import CLI_FIXED, parse_table_options, table_options

    if list_tables:
        from ..report.figures import FIGURES

        click.echo("Tables:")
        for spec in TABLES.values():
            click.echo(f"  {spec.name:20s} {spec.description}")
            extra = sorted(table_options(spec.name) - CLI_FIXED)
            if extra:
                click.echo(f"  {'':20s} options: {', '.join(extra)}")
        click.echo("Figures (--figure NAME):")
        for spec in FIGURES.values():
            click.echo(f"  {spec.name:20s} {spec.description}")
        return
    if figure is not None and html_dir is not None:
        raise ConfigError("--figure and --html: choose one")
    if table_opts and (figure is not None or html_dir is not None):
        raise ConfigError("--option: table options go with --table, not --figure or --html")
    if figure is not None:
        from ..report.figures import draw_figure

        for path in draw_figure(figure, runs_dir, out_dir, dataset=dataset):
            click.echo(str(path))
        return
    if html_dir is not None:
        if not Path(runs_dir).is_dir():
            raise ConfigError(f"--runs {runs_dir}: no such run store (run `moegs-bench run` first)")
        from ..report.html import write_report

        index = write_report(runs_dir, html_dir, dataset=dataset)
        click.echo(str(index))
        return
    opts = {"paper_table": paper_table or 1, **parse_table_options(table, table_opts)}
    if dataset:
        opts["dataset"] = dataset
    if table == "paper":  # the paper's own numbers: no run store needed
        click.echo(format_table(build_table("paper", pd.DataFrame(columns=RESULT_COLUMNS), **opts), fmt))
        return
    if not Path(runs_dir).is_dir():
        raise ConfigError(f"--runs {runs_dir}: no such run store (run `moegs-bench run` first)")
    df = results(runs_dir)
    if df.empty:
        raise ConfigError(f"--runs {runs_dir}: no completed runs")
    if not dataset:
        present = sorted(df["dataset"].unique())
        if len(present) > 1:
            raise ConfigError(f"--dataset: the store holds several datasets ({', '.join(present)}); name one")
        opts["dataset"] = present[0]
    click.echo(format_table(build_table(table, df, notes=notes(runs_dir), **opts), fmt))


__all__ = ["report"]
