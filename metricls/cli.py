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
bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks that write JSON (the other "
                        "harnesses: benchmarks/ in the repository).")
app.add_typer(bench_app, name="bench")
labels_app = typer.Typer(no_args_is_help=True,
                         help="List, add, update and remove the labels of a built tagger.")
app.add_typer(labels_app, name="labels")
STATE = {"debug": False, "quiet": False}


@app.callback()
def main(debug: Annotated[bool, typer.Option(help="Show tracebacks.")] = False,
         quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
         verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    """metricls: multi-label tagging in a learned metric space."""
    from metricls.progress import set_quiet

    STATE["debug"] = debug
    STATE["quiet"] = quiet
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
Overwrite = Annotated[bool, typer.Option(
    help="Replace an existing output folder of the same kind (never any other folder)")]


@app.command()
@guarded
def train(config: Path, set_: Sets = None,
          out: Annotated[Optional[Path], typer.Option(help="Tagger folder")] = None,
          overwrite: Overwrite = False) -> None:
    """Train the embedder and label vectors into a tagger folder (default index/NAME).

    Multi-process: torchrun --nproc_per_node N -m metricls.cli train CONFIG
    """
    from metricls import load_config, train_embedder
    from metricls.training.distributed import launch_ranks

    folder = train_embedder(load_config(config, set_ or []), out=out, overwrite=overwrite)
    if launch_ranks()[0] == 0:
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
            as_json: Annotated[bool, typer.Option("--json")] = False,
            explain: Annotated[bool, typer.Option(
                "--explain", help="Show each tag's evidence: nearest items carrying it, "
                "shared words, similarities")] = False) -> None:
    """Tag texts with a built tagger."""
    from metricls import Tagger

    cut = threshold if threshold in (None, "tuned") else _number(threshold)
    if explain:
        if threshold is not None:
            raise InputError("--threshold: not with --explain, which explains the top -k tags")
        found = Tagger.load(tagger).explain(texts, k=k)
        if as_json:
            typer.echo(json.dumps([{"text": t, "tags": row} for t, row in zip(texts, found)],
                                  indent=2))
            return
        for text, row in zip(texts, found):
            typer.echo(text[:100])
            for tag in row:
                typer.echo(f"   {tag['label']} {tag['score']:.3f}  (prototype cosine "
                           f"{tag['similarity']:.3f}, neighbour vote {tag['vote']:.3f})")
                near = ", ".join(f"{n['id']} {n['similarity']:.2f}" for n in tag["neighbours"])
                typer.echo(f"      nearest items with it: {near or '-'}")
                if tag["terms"]:
                    typer.echo(f"      shared words: {' '.join(tag['terms'])}")
        return
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
def report(tagger: Path, data: Annotated[Optional[str], typer.Option(
               help="Labelled file or 'debtags' (default: the tagger's training data)")] = None,
           split: Annotated[str, typer.Option(help="test|valid|train|all")] = "test",
           out: Annotated[Optional[Path], typer.Option(
               help="Report folder (default: TAGGER-report)", show_default=False)] = None,
           min_support: Annotated[int, typer.Option(
               help="Test items a label needs to enter the worst/best tables")] = 10,
           facet: Annotated[Optional[str], typer.Option(
               help="Facet colouring the embedding map, e.g. implemented-in")] = None,
           screenshot: Annotated[Optional[Path], typer.Option(
               help="Also save a 1280x2000 PNG of the page (headless Chromium)")] = None,
           overwrite: Overwrite = False) -> None:
    """Evaluate a tagger and write an HTML report: index.html, figures, report.json."""
    from metricls.report import screenshot_html, write_report

    folder = write_report(tagger, data=data, split=split, out=out, min_support=min_support,
                          facet=facet, overwrite=overwrite)
    typer.echo(f"report: {folder / 'index.html'}")
    if screenshot is not None:
        typer.echo(f"screenshot: {screenshot_html(folder / 'index.html', screenshot)}")


@app.command()
@guarded
def run(config: Path, set_: Sets = None,
        out: Annotated[Optional[Path], typer.Option(help="Tagger folder")] = None,
        baseline: Annotated[Optional[str],
                            typer.Option(help="'untrained' or 'none'")] = "untrained",
        show: Annotated[int, typer.Option(help="Test items to tag at the end")] = 5,
        overwrite: Overwrite = False) -> None:
    """The whole job: train, build the index, evaluate on test, tag a few test items."""
    from metricls.runner import run_pipeline
    from metricls.training.distributed import launch_ranks

    if launch_ranks()[1] > 1:
        raise ConfigError("metricls run is one process; under torchrun run `metricls train`, "
                          "then `metricls build-index` and `metricls evaluate` in one process")
    result = run_pipeline(config, overrides=set_ or [], out=out, baseline=baseline, show=show,
                          overwrite=overwrite)
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
    from metricls.manifest import verify_folder

    problems = verify_folder(tagger)
    for line in problems:
        typer.echo(f"problem: {line}", err=True)
    if problems:
        raise typer.Exit(1)
    typer.echo(f"ok: {tagger}")


@app.command()
@guarded
def serve(tagger: Path,
          host: Annotated[str, typer.Option(
              help="Address to bind; 0.0.0.0 = every interface (loopback answers only Host "
                   "headers naming loopback)")] = "127.0.0.1",
          port: Annotated[int, typer.Option(help="1 to 65535")] = 8000,
          workers: Annotated[int, typer.Option(help="Processes, each loads the tagger")] = 1,
          max_batch: Annotated[Optional[int], typer.Option(
              help="Texts per request (default 128)", show_default=False)] = None,
          max_text_chars: Annotated[Optional[int], typer.Option(
              help="Characters per text (default 100000)", show_default=False)] = None,
          max_body_bytes: Annotated[Optional[int], typer.Option(
              help="Request body bytes (default 4194304)", show_default=False)] = None,
          max_k: Annotated[Optional[int], typer.Option(
              help="Tags per input (default 100)", show_default=False)] = None) -> None:
    """Serve a tagger over HTTP: POST /tag, GET /labels, /health, /docs, a web page at /."""
    from metricls.serve import serve as serve_tagger

    limits = {"max_batch": max_batch, "max_text_chars": max_text_chars,
              "max_body_bytes": max_body_bytes, "max_k": max_k}
    serve_tagger(tagger, host=host, port=port, workers=workers,
                 log_level="warning" if STATE["quiet"] else "info",
                 **{key: value for key, value in limits.items() if value is not None})


@app.command("tag-catalog")
@guarded
def tag_catalog_cmd(tagger: Path,
                    data: Annotated[str, typer.Option(help="JSONL(.gz), CSV or Parquet file")],
                    out: Annotated[Path, typer.Option(help="Output folder of Parquet files")],
                    engine: Annotated[str, typer.Option(help="local|ray")] = "local",
                    k: Annotated[int, typer.Option("--k", "-k")] = 10,
                    batch_size: int = 1024,
                    threshold: Annotated[Optional[str], typer.Option(
                        help="number or 'tuned'")] = None,
                    embeddings: Annotated[bool, typer.Option(
                        "--embeddings", help="Also store each item's embedding")] = False,
                    num_actors: Annotated[int, typer.Option(help="Ray actors")] = 2,
                    threads: Annotated[int, typer.Option(
                        help="Blocks tagged at once (local engine)")] = 2,
                    overwrite: Overwrite = False) -> None:
    """Tag every item of a file into Parquet: row, id, labels, scores[, embedding]."""
    from metricls.catalog import TagOptions, tag_catalog

    cut = threshold if threshold in (None, "tuned") else _number(threshold)
    options = TagOptions(k=k, threshold=cut, batch_size=batch_size, embeddings=embeddings,
                         num_actors=num_actors, threads=threads)
    done = tag_catalog(tagger, data, out, engine=engine, options=options, overwrite=overwrite)
    typer.echo(f"tagged: {done['rows']} items -> {out}  ({done['seconds']} s, "
               f"{done['items_per_s']} items/s, engine {engine})")


@bench_app.command("recall")
@guarded
def bench_recall_cmd(quick: bool = False, tagger: Annotated[Optional[Path], typer.Option(
                         help="Tagger that embeds --texts (alone: its prototypes)")] = None,
                     texts: Annotated[Optional[Path], typer.Option(
                         help="Your texts (one per line, or JSONL/CSV/Parquet 'text')")] = None,
                     vectors: Annotated[Optional[Path], typer.Option(
                         help="Your vectors: a .npy file (n, dim)")] = None,
                     queries: Annotated[int, typer.Option(
                         help="Rows of your set that query the others")] = 1000,
                     size: Annotated[Optional[int], typer.Option(
                         help="Search at most this many rows of your set")] = None,
                     matched: Annotated[bool, typer.Option(
                         help="Also a synthetic set shaped like yours")] = False,
                     out: Path = Path("benchmarks/recall/recall.json"),
                     threads: Annotated[int, typer.Option(help="0 = all cores")] = 0,
                     backends: Annotated[Optional[str], typer.Option(
                         help="Comma-separated, e.g. hnsw-sq8,scann,auto")] = None,
                     sizes: Annotated[Optional[str], typer.Option(
                         help="Comma-separated synthetic set sizes, e.g. 1000000")] = None) -> None:
    """Recall@k and speed of every ANN backend against exact search, on your data or ours."""
    from metricls.bench.recall import bench_recall, markdown_summary
    from metricls.validation import parse_csv

    result = bench_recall(tagger=tagger, texts=texts, vectors=vectors, queries=queries,
                          size=size, matched=matched, quick=quick, out=out, threads=threads,
                          backends=parse_csv(backends, str), sizes=parse_csv(sizes, int))
    typer.echo(markdown_summary(result))


Examples = Annotated[Optional[Path], typer.Option(
    help="Example texts: one per line, or JSONL/CSV/Parquet with a 'text' field")]
Description = Annotated[Optional[str], typer.Option(
    help="The label's own text, embedded too (alone: a zero-shot label)")]
AddItems = Annotated[bool, typer.Option(
    "--items/--no-items", help="Also index the examples as items carrying the label")]
LabelsOut = Annotated[Optional[Path], typer.Option(help="Write here instead of in place")]


@labels_app.command("list")
@guarded
def labels_list(tagger: Path, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Each label's id, training count, name and description (when it has one)."""
    from metricls import Tagger

    state = Tagger.load(tagger).state
    vocab, described = state.vocab, state.descriptions
    rows = [{"id": i, "count": int(c), "name": n, "description": described.get(n)}
            for i, (n, c) in enumerate(zip(vocab.names, vocab.counts))]
    typer.echo(json.dumps(rows, indent=2) if as_json else "\n".join(
        f"{r['id']:>5} {r['count']:>7}  {r['name']}"
        + (f"  {r['description'][:60]}" if r["description"] else "") for r in rows))


@labels_app.command("add")
@guarded
def labels_add(tagger: Path, name: str, examples: Examples = None,
               description: Description = None, items: AddItems = True,
               out: LabelsOut = None, overwrite: Overwrite = False) -> None:
    """Add a label from examples, or zero-shot from its name and description (--description,
    else the one the tagger knows from its label table)."""
    label, saved = _edit_labels(tagger, out, overwrite, lambda found, texts: found.add_label(
        name, texts, description=description, add_items=items), examples)
    typer.echo(f"added: {name} (id {label}) -> {saved}")


@labels_app.command("update")
@guarded
def labels_update(tagger: Path, name: str, examples: Examples = None,
                  description: Description = None,
                  mode: Annotated[str, typer.Option(help="replace|merge")] = "replace",
                  items: AddItems = True, out: LabelsOut = None,
                  overwrite: Overwrite = False) -> None:
    """Re-make a label's prototype from examples (or its text), replacing or merging."""
    label, saved = _edit_labels(tagger, out, overwrite, lambda found, texts: found.update_label(
        name, texts, description=description, mode=mode, add_items=items), examples)
    typer.echo(f"updated ({mode}): {name} (id {label}) -> {saved}")


@labels_app.command("remove")
@guarded
def labels_remove(tagger: Path, name: str, out: LabelsOut = None,
                  overwrite: Overwrite = False) -> None:
    """Remove a label (later ids shift down by one)."""
    label, saved = _edit_labels(tagger, out, overwrite,
                                lambda found, _: found.remove_label(name), None)
    typer.echo(f"removed: {name} (was id {label}) -> {saved}")


def _edit_labels(tagger: Path, out: Path | None, overwrite: bool, edit, examples: Path | None):
    """Load, edit and save under the folder's write lock, so that edits of one folder from
    several processes run one after another and none is lost; returns (label id, folder)."""
    from metricls import Tagger
    from metricls.outputs import check_output
    from metricls.pipeline.labels import read_examples
    from metricls.staging import folder_locks

    if out is not None:  # checked before any work: the output must be safe to write
        check_output(out, "tagger", overwrite=overwrite, inputs=(tagger,),
                     in_place=out.resolve() == tagger.resolve())
    with folder_locks(tagger, out or tagger):  # in one order: no two edits wait on each other
        found = Tagger.load(tagger)
        texts = None if examples is None else read_examples(
            examples, found.config.data, texts_only=found.model.needs == {"texts"})
        label = edit(found, texts)
        return label, found.save(out or tagger, overwrite=overwrite)


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
