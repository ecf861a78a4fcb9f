"""The `metricls` command line: a thin typer shell over the public API."""

from __future__ import annotations

import functools
import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from metricls.errors import ConfigError, InputError, MetriclsError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="metricls: multi-label tagging in a learned metric space.")
bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks that write JSON.")
app.add_typer(bench_app, name="bench")
STATE = {"debug": False}


@app.callback()
def main(debug: Annotated[bool, typer.Option(help="Show tracebacks.")] = False,
         quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
         verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    """metricls: multi-label tagging in a learned metric space."""
    from metricls.progress import set_quiet

    STATE["debug"] = debug
    set_quiet(quiet)
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s", force=True)
    # metricls's own progress lines (config, epochs, tuning) show unless --quiet
    logging.getLogger("metricls").setLevel(logging.WARNING if quiet else logging.INFO)


def guarded(fn):
    """One `error: ...` line and exit 2 for bad input/config, 1 for other metricls errors."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except MetriclsError as exc:
            if STATE["debug"]:
                raise
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2 if isinstance(exc, (InputError, ConfigError)) else 1) from None
    return wrapper


Sets = Annotated[Optional[list[str]], typer.Option("--set", help="Override, e.g. train.lr=3e-4")]


@app.command()
@guarded
def train(config: Path, set_: Sets = None,
          out: Annotated[Optional[Path], typer.Option(help="Tagger folder")] = None) -> None:
    """Train the embedder and label vectors into a tagger folder (default index/NAME)."""
    from metricls import load_config, train_embedder

    folder = train_embedder(load_config(config, set_ or []), out=out)
    typer.echo(f"trained: {folder}  (next: metricls build-index {folder})")


@app.command("build-index")
@guarded
def build_index_cmd(tagger: Path, backend: Annotated[Optional[str], typer.Option(
                        help="hnsw|flat|ivf|scann|auto")] = None,
                    prototypes: Annotated[Optional[str], typer.Option()] = None,
                    target_recall: Annotated[Optional[float], typer.Option()] = None) -> None:
    """Build the ANN indexes of a trained tagger folder and tune its scoring on valid."""
    from metricls import build_index

    built = build_index(tagger, backend=backend, prototypes=prototypes,
                        target_recall=target_recall)
    typer.echo(f"built: {tagger}  {built!r}")


@app.command()
@guarded
def predict(tagger: Path, texts: list[str], k: Annotated[int, typer.Option("-k")] = 5,
            threshold: Annotated[Optional[str], typer.Option(help="number or 'tuned'")] = None,
            as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Tag texts with a built tagger."""
    from metricls import Tagger

    cut = threshold if threshold in (None, "tuned") else _number(threshold)
    tags = Tagger.load(tagger).predict(texts, k=k, threshold=cut)
    if as_json:
        typer.echo(json.dumps([{"text": t, "tags": [[n, round(s, 4)] for n, s in row]}
                               for t, row in zip(texts, tags)], indent=2))
        return
    for text, row in zip(texts, tags):
        typer.echo(text[:100])
        typer.echo("   " + "  ".join(f"{name} {score:.3f}" for name, score in row))


@app.command()
@guarded
def evaluate(tagger: Path, data: Annotated[Optional[str], typer.Option(
                 help="File to evaluate (default: the tagger's training data)")] = None,
             split: Annotated[str, typer.Option(help="test|valid|train|all")] = "all",
             baseline: Annotated[Optional[str], typer.Option(help="'untrained'")] = None,
             json_out: Annotated[Optional[Path], typer.Option("--json")] = None) -> None:
    """Evaluate a tagger (and optionally the untrained baseline) and print a table."""
    from metricls.runner import evaluate_folder

    reports = evaluate_folder(tagger, data=data, split=split, baseline=baseline, out=json_out)
    _print_reports(reports)


@app.command()
@guarded
def run(config: Path, set_: Sets = None,
        out: Annotated[Optional[Path], typer.Option(help="Tagger folder")] = None,
        baseline: Annotated[Optional[str],
                            typer.Option(help="'untrained' or 'none'")] = "untrained",
        show: Annotated[int, typer.Option(help="Test items to tag at the end")] = 5) -> None:
    """The whole job: train, build the index, evaluate on test, tag a few test items."""
    from metricls.runner import run_pipeline

    result = run_pipeline(config, overrides=set_ or [], out=out, baseline=baseline, show=show)
    _print_reports(result["reports"])
    for row in result["examples"]:
        typer.echo(f"\n{row['id']}: {row['text'][:90]}")
        typer.echo(f"   true: {', '.join(row['true'])}")
        typer.echo("   tags: " + "  ".join(f"{n} {s:.2f}" for n, s in row["tags"]))
    typer.echo(f"\nreport: {result['json']}")


@app.command()
@guarded
def verify(tagger: Path) -> None:
    """Check every file of a tagger folder against its manifest."""
    from metricls.artifacts import verify_folder

    problems = verify_folder(tagger)
    for line in problems:
        typer.echo(f"problem: {line}", err=True)
    if problems:
        raise typer.Exit(1)
    typer.echo(f"ok: {tagger}")


@bench_app.command("recall")
@guarded
def bench_recall_cmd(quick: bool = False, tagger: Optional[Path] = None,
                     out: Path = Path("bench/recall.json"),
                     threads: Annotated[int, typer.Option(help="0 = all cores")] = 0) -> None:
    """Recall@k and speed of every ANN backend against exact search."""
    from metricls.bench.recall import bench_recall, markdown_summary

    result = bench_recall(tagger=tagger, quick=quick, out=out, threads=threads)
    typer.echo(markdown_summary(result))


def _print_reports(reports: dict) -> None:
    from metricls.evaluation import format_table

    typer.echo(format_table(reports))
    for name, rep in reports.items():
        typer.echo(f"{name}: {rep['n_items']} items, {rep['n_unknown_labels']} unknown labels, "
                   f"timings {rep['timings']}")


def _number(text: str) -> float:
    """--threshold as a number, checked by the same rule the API applies."""
    from metricls.validation import to_number

    try:
        return to_number(text, parse_str=True)
    except InputError as exc:
        raise InputError(f"--threshold: expected a number or 'tuned'; {exc}") from None


def entrypoint() -> None:
    """Console-script entry point."""
    sys.exit(app())


if __name__ == "__main__":
    entrypoint()
