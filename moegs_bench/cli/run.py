"""`moegs-bench run` and `moegs-bench train`: options in, `bench.experiment.run_experiment`
called, the run's tables printed."""

from __future__ import annotations

from pathlib import Path

import click

_run_options = [
    click.option("--scene", default="mixed", show_default=True,
                 help="Prepared scene folder, or a synthetic scene name (generated on first use)."),
    click.option("--rig", default="n3v", show_default=True, help="Camera rig of a synthetic scene."),
    click.option("--size", default=None, help="Synthetic size: tiny, small, full or n3v (the N3V rig's "
                 "cameras, 300 frames, 1352x1014) (default: tiny on CPU, full with CUDA)."),
    click.option("--seed", default=0, show_default=True, type=int, help="Training (and synthetic) seed."),
    click.option("--scene-seed", default=None, type=int,
                 help="Seed of the synthetic scene (default: --seed); fix it to train several seeds on one scene."),
    click.option("--budget", default=1.0, show_default=True, type=float,
                 help="Train each expert for this fraction of its iterations, every schedule scaled with "
                      "them (MoE-GS Table 6), e.g. 0.5; stored as variant b50."),
    click.option("--preset", default=None, help="Expert preset (default: the one for the scene's size/dataset)."),
    click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                 help="Override an expert setting, e.g. --set train.iterations=500 (repeatable; applies to "
                      "every expert that has it); LABEL:KEY=VALUE sets it for one expert only, e.g. "
                      "--set static@small:sh_degree=0."),
    click.option("--force", is_flag=True, help="Retrain even if an identical run is stored."),
    click.option("--runs", "runs_dir", default="runs", show_default=True,
                 type=click.Path(file_okay=False, path_type=Path),
                 help="Run store folder."),
    click.option("--data-dir", default=None, type=click.Path(file_okay=False, path_type=Path),
                 help="Where synthetic scenes are prepared (default: RUNS/scenes)."),
    click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda."),
    click.option("--lpips-net", default="alex", show_default=True, type=click.Choice(["alex", "vgg"])),
    click.option("--lpips-weights", default=None, type=click.Path(path_type=Path),
                 help="torchvision checkpoint of the LPIPS backbone (offline machines)."),
]


def _with_run_options(fn):
    for opt in reversed(_run_options):
        fn = opt(fn)
    return fn


def _experiment(**kw):
    from ..bench.experiment import Experiment

    kw["overrides"] = tuple(kw.get("overrides", ()))
    kw["router_overrides"] = tuple(kw.get("router_overrides", ()))
    return Experiment(**kw)


def _run_and_print(exp) -> object:
    from ..bench.experiment import run_experiment
    from ..progress import rich_progress

    with rich_progress() as bar:
        result = run_experiment(exp, progress=bar, log=click.echo)
    data = result.data
    click.echo(f"\nscene {data.scene.dataset}/{data.scene.name}: "
               f"{len(data.splits['test'])} test views at {data.width}x{data.height}")
    _print_table("experts", result, result.experts)
    if result.mixtures:
        best = max(result.experts, key=lambda r: r.metrics["psnr"])
        click.echo(f"\nmixture of {', '.join(sorted(r.label for r in result.experts))} (best expert: "
                   f"{best.label}, PSNR {best.metrics['psnr']:.2f})")
        _print_table("mixture", result, result.mixtures)
        routers = [r for r in result.mixtures if r.label.startswith("moe-")]
        experts_s = sum(r.train_seconds for r in result.experts)
        routers_s = sum(r.train_seconds for r in routers)
        click.echo(f"\nrouter training {routers_s:.1f} s (all routers) vs experts' training {experts_s:.1f} s; "
                   f"gate maps and expert renders under {result.mixtures[0].run.dir.parents[2]}/<method>/"
                   f"{result.mixtures[0].run.run_id.variant}")
    if data.splits["test"].labels is not None:  # motion labels (synthetic scenes): PSNR per regime
        click.echo("\nPSNR per motion regime")
        _print_table("regimes", result, result.experts + result.mixtures)
    if getattr(result, "distilled", None):
        _print_distillation(result)
    return result


def _print_distillation(result) -> None:
    """The distillation table over this run's experts and their retrained / distilled runs."""
    from ..bench.store import notes, results
    from ..report.tables import build_table, format_table

    dirs = [str(r.run.dir) for r in result.experts + result.distilled]
    df, nt = results(result.store.root), notes(result.store.root)
    table = build_table("distillation", df[df["run_dir"].isin(dirs)], notes=nt[nt["run_dir"].isin(dirs)])
    click.echo("\ndistillation (the mixture's experts retrained on its pseudo-labels):")
    click.echo(format_table(table, "markdown"))


def _print_table(name: str, result, runs) -> None:
    """Registered table `name` over the given stored runs, with whether each was reused."""
    from ..bench.store import notes, results
    from ..report.tables import build_table, format_table

    dirs = [str(r.run.dir) for r in runs]
    df, nt = results(result.store.root), notes(result.store.root)
    status = {str(r.run.dir): "reused" if r.reused else "trained" for r in runs}
    table = build_table(name, df[df["run_dir"].isin(dirs)], runs=dirs, status=status,
                        notes=nt[nt["run_dir"].isin(dirs)])
    click.echo(format_table(table, "markdown"))


@click.command()
@click.option("--experts", "experts", default=None,
              help="Comma-separated experts, `name@preset` for one expert in a named preset "
                   "(e.g. static@tiny,static@small), a paper set size 2/3/4 from the scene's "
                   "dataset file, or all (every available expert). Default: the dataset file's "
                   "default_experts set (the synthetic scenes: 3, ex4dgs + stg + ed3dgs).")
@click.option("--router", "routers", default=None,
              help="Stage 2 over the experts: a router name (vapr, pixel, volume, ...), all or none "
                   "(comma-separated allowed); with a router, the uniform average and the oracles "
                   "are evaluated too. Default: vapr over the default expert set, none when "
                   "--experts is given.")
@click.option("--router-preset", default=None, help="Router preset: paper, fast, tiny, technicolor, authors "
              "(default: by the scene's synthetic size, else paper).")
@click.option("--router-set", "router_overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a router setting, e.g. --router-set iterations=200 (repeatable); "
                   "ROUTER:KEY=VALUE for one router only, e.g. --router-set vapr:lr_phi=0.01.")
@click.option("--analysis", "analyses", default="none", show_default=True,
              help="After the runs: fusion (the fused model of --fuse-router's gates, method moe-fused), "
                   "mdc (multi-view depth consistency and depth error), trajectories, all or none.")
@click.option("--fuse-router", default="vapr", show_default=True, help="Router whose gates the fused model lifts.")
@click.option("--render", "render_mode", default="auto", show_default=True,
              type=click.Choice(["auto", "single-pass", "multi-pass"]),
              help="How mixtures render their experts: single-pass (one projection, sort and blend for all "
                   "experts, MoE-GS Eq. 9), multi-pass (one rasterisation per expert) or auto (single-pass "
                   "for frozen experts). Images agree to float error, so stored runs are reused either way; "
                   "every mixture's efficiency rows time both (fps, fps_multipass).")
@click.option("--mdc-frames", type=int, default=None, help="MDC over this many evenly spaced frames (default all).")
@click.option("--mdc-pairs", type=int, default=None, help="At most this many camera pairs per frame (default all).")
@click.option("--trajectory-gaussians", type=int, default=2000, show_default=True,
              help="Gaussians tracked per expert.")
@click.option("--distill", is_flag=True,
              help="Retrain every expert from scratch on the mixture's pseudo-labels (MoE-GS Eq. 11; method "
                   "<expert>-distilled) beside a ground-truth retraining (<expert>-retrained).")
@click.option("--distill-router", default="vapr", show_default=True, help="Router whose mixture is distilled.")
@click.option("--distill-weighting", default="routing", show_default=True,
              help="routing: Eq. 11 with the router's gates; none: without them (the paper's w/o weight, "
                   "<expert>-distilled-noweight); both. LABEL:KIND for one expert, comma-separated, e.g. "
                   "routing,ed3dgs:both.")
@click.option("--distill-seeds", default=1, show_default=True, type=int,
              help="Repeat the retrained and distilled trainings over this many seeds (seed+1, seed+2, ...).")
@click.option("--distill-lambda", default=None, type=float,
              help="Eq. 11's λ, ground truth vs mixture (default 0.5: the paper prints no value).")
@click.option("--prune", default="none", show_default=True,
              help="Gate-aware pruning of the vapr mixture (MoE-GS Eq. 10), each target its own method: "
                   "percentages of all its Gaussians removed, e.g. 55,75 (moe-vapr-p55, moe-vapr-p75), or "
                   "thresholds t<τ>, e.g. t0.02 (moe-vapr-t0.02); none.")
@click.option("--prune-rule", default="importance", show_default=True,
              type=click.Choice(["importance", "importance-max", "sigmoid"]),
              help="importance: Eq. 10's gate gradients averaged over the training views; importance-max: "
                   "their maximum over the views (keeps Gaussians that matter in a few frames; methods end in "
                   "-max); sigmoid: the authors' rule, keep if sigmoid(w) >= threshold (methods end in -sigmoid).")
@click.option("--prune-steps", default=None, type=int,
              help="Pruning rounds towards each target, the router fine-tuned after each (default 3).")
@click.option("--prune-set", "prune_overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a pruning setting (moe.prune.PruneConfig), e.g. --prune-set finetune_iterations=100 "
                   "or --prune-set views=64 (repeatable).")
@click.option("--html", "html_dir", default=None, type=click.Path(path_type=Path, file_okay=False),
              help="Write the store's static HTML report here afterwards (default: RUNS/report when "
                   "--experts is not given, i.e. the default demo run; `none` for no report).")
@_with_run_options
def run(html_dir, **kw):
    """Prepare (or reuse) a scene, train the experts (or reuse stored runs), train routers
    over them (without options: the VAPR over the dataset's default expert set, beside the
    uniform average and the oracles), evaluate, store results and print tables."""
    exp = _experiment(**kw)
    _run_and_print(exp)
    click.echo(f"\nresults: {exp.runs_dir / 'results.csv'}")
    if html_dir is None and kw.get("experts") is None:
        html_dir = exp.runs_dir / "report"
    if html_dir is not None and str(html_dir) != "none":
        from ..report.html import write_report

        index = write_report(exp.runs_dir, html_dir)
        click.echo(f"HTML report: {index}")


@click.command()
@click.option("--expert", required=True, help="Expert to train, e.g. static or static@tiny.")
@_with_run_options
def train(expert, **kw):
    """Train and evaluate one expert on one scene."""
    if "," in expert:
        raise click.BadParameter("name one expert", param_hint="--expert")
    result = _run_and_print(_experiment(experts=expert, **kw))
    click.echo(f"\nrun folder: {result.experts[0].run.dir}")


__all__ = ["run", "train"]
