"""CLI commands for serving: ``recgoat export``, ``recgoat recommend`` and ``recgoat serve``.

A trainer run folder holds the best model but not the dataset, so ``export`` is the one step that turns
it into a self-contained artefact; ``recommend`` and ``serve`` then need only that folder.
"""
from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from recgoat.errors import RecGOATError, cli_spelling, print_error, print_warning

app = typer.Typer(help="Export, query and serve trained runs.", no_args_is_help=True, add_completion=False)
console = Console()


def _fail(e: Exception) -> None:
    # one line whatever the terminal width, and a path holding [brackets] is not read as rich markup; on
    # stderr, as every other command's errors: `recgoat recommend … > top.txt` put the error in the file
    print_error(str(e))
    raise typer.Exit(1)  # as every other command; 2 stays click's usage errors


class Seen(str, Enum):
    """``export --seen``: the interactions an artefact records as a user's seen history."""

    all = "all"
    train = "train"


# help= rather than a docstring: typer's rich help keeps a docstring's line breaks past its first paragraph
@app.command("export", help="Export a trained run with its id maps, item table and history as a servable artefact."
             "\n\nEvery input (destination, run, dataset, fingerprint, features) is checked before anything is "
             "written, and an existing artefact is replaced only with --overwrite and only once the new one is "
             "complete.")
def export_command(
    run_dir: Path = typer.Argument(..., help="trainer run folder (holding best/) or a saved model folder"),
    dataset: Optional[str] = typer.Option(None, "--dataset", "-d", help="dataset name or folder the run was trained "
                                          "on, prepared as the run recorded; default: the one its run_config.json or "
                                          "cell.json records"),
    out: Path = typer.Option(..., "--out", "-o", help="artefact folder to write"),
    features: Optional[Path] = typer.Option(None, "--features", help="feature folder (enables profile texts)"),
    overwrite: bool = typer.Option(False, help="replace an existing artefact folder"),
    seen: Seen = typer.Option(Seen.all, "--seen", help="interactions recorded as each user's seen history (left "
                              "out by exclude_seen, listed by /users/{id}/history): all = train+valid+test, "
                              "train = the training split only (as evaluated)"),
) -> None:
    from recgoat.serving.export import export_run_dir

    def warn(message: str) -> None:  # as it is found, before the slow loads: also said when the export fails
        print_warning(message)

    try:
        with cli_spelling():  # its messages name --dataset, --features, … rather than the Python arguments
            done = export_run_dir(run_dir, out, dataset, features, overwrite=overwrite, seen=seen.value, warn=warn)
    except RecGOATError as e:
        _fail(e)
    for line in done.notes:
        console.print(line, highlight=False, markup=False, soft_wrap=True)  # paths may hold [brackets]
    console.print(f"exported {done.model} on {done.dataset} → {done.path}", highlight=False, markup=False,
                  soft_wrap=True)


def _table(title: str, run, ids, scores=None) -> Table:
    from recgoat.serving.artifacts import display_text

    titles = run.titles
    t = Table(title=escape(title), title_justify="left")
    t.add_column("#", justify="right")
    # fold, not "…": piped output is 80 columns wide, and a cut id cannot be looked up again
    t.add_column("item_id", overflow="fold")
    t.add_column("title", overflow="fold")
    extra = [c for c in ("genres", "year") if c in run.items.columns]
    for c in extra:
        t.add_column(c)
    if scores is not None:
        t.add_column("score", justify="right")
    for n, i in enumerate(ids.tolist()):
        if i < 0:
            break
        row = run.items.iloc[i]
        cells = [str(n + 1), run.item_ids[i], titles[i], *[display_text(row[c]) for c in extra]]
        if scores is not None:
            cells.append(f"{float(scores[n]):.4f}")
        t.add_row(*map(escape, cells))  # titles may hold [brackets] that rich would read as markup
    return t


def _unknown_id(kind: str, given: str, index: dict, n: int) -> str:
    """Why ``given`` is no known id: ids are matched as exact text ("7" is not "007"), and a user or item with
    fewer interactions than the k-core filter (default 5) was dropped before training, without a word here."""
    near = [i for i in index if str(i).strip().lstrip("0") == given.strip().lstrip("0") and i != given][:3]
    hint = f"; did you mean {', '.join(repr(i) for i in near)}? (ids are matched as exact text)" if near else \
        f"; ids are matched as exact text, and {'an' if kind == 'item' else 'a'} {kind} with fewer interactions than the dataset's k-core " \
        f"filter (default 5) is dropped before training"
    return f"unknown {kind} id {given!r} ({n} {kind}s in this run){hint}"


@app.command("recommend")
def recommend_command(
    run: Path = typer.Argument(..., help="artefact folder (from `recgoat export`)"),
    # short metavars: typer's `<int range> [1<=x<=1000]` widened the type column until rich, out of room at 80
    # columns, cut `--no-exclude-seen` to `--no-exclude-se…`
    user: Optional[str] = typer.Option(None, "--user", "-u", metavar="ID", help="original user id"),
    item: Optional[str] = typer.Option(None, "--item", "-i", metavar="ID", help="original item id: show similar items"),
    k: int = typer.Option(10, "-k", "--k", min=1, max=1000, metavar="N", help="number of items"),
    exclude_seen: bool = typer.Option(True, help="leave out the user's seen history (as the artefact records "
                                                  "it: see `export --seen`)"),
    history: int = typer.Option(10, min=0, metavar="N", help="how many recent history items to show"),
) -> None:
    """Print a user's recent history and recommendations (`--user`) or similar items (`--item`)."""
    from recgoat.serving.app import Service
    from recgoat.serving.artifacts import load_run

    if (user is None) == (item is None):
        _fail(RecGOATError("give exactly one of --user ID or --item ID"))
    try:
        r = load_run(run)
    except RecGOATError as e:
        _fail(e)
    svc = Service(r)
    if user is not None:
        u = r.user_index.get(user)
        if u is None:
            _fail(RecGOATError(_unknown_id("user", user, r.user_index, r.n_users)))
        if history:  # --history 0 printed an empty table
            where = "in training" if r.seen_scope == "train" else "seen"
            console.print(_table(f"user {user}: {int(svc.n_seen[u])} items {where}, most recent first", r,
                                 r.recent_history(u, history)))
        ids, scores = svc.recommend(u, k, exclude_seen)
        console.print(_table(f"top {k} for user {user} ({r.meta.get('model')})", r, ids, scores))
        found = int((ids >= 0).sum())  # -1: padding past the last candidate
        if found < k:  # an empty or short table said nothing of why
            console.print(f"note: {found} of the {r.n_items} items are left to recommend to user {user} "
                          f"(the others are seen; --no-exclude-seen ranks every item)"
                          if exclude_seen else f"note: the catalogue holds {r.n_items} items", highlight=False,
                          markup=False, soft_wrap=True)
    else:
        i = r.item_index.get(item)
        if i is None:
            _fail(RecGOATError(_unknown_id("item", item, r.item_index, r.n_items)))
        ids, scores = svc.similar(i, k)
        console.print(_table(f"items similar to {item} — {r.titles[i]} (cosine)", r, ids, scores))
        note = svc.similar_note(i)  # an item without training interactions: an empty table or content alone
        if note:
            console.print(f"note: {note}", highlight=False, markup=False, soft_wrap=True)


@app.command("serve")
def serve_command(
    run: Path = typer.Argument(..., help="artefact folder (from `recgoat export`)"),
    host: str = typer.Option("127.0.0.1", help="bind address (default: loopback only)"),
    # min 0, as `python -m recgoat.serving`: serve() listens on a free port and prints which
    port: int = typer.Option(8000, min=0, max=65535, help="TCP port; 0: a free port the system chooses"),
    index: str = typer.Option("flat", help="flat (exact); hnsw, hnsw-l2 or ivf (approximate; /metadata "
                                           "reports their recall)"),
) -> None:
    """Serve recommendations over HTTP with a web page at / and API docs at /docs."""
    from recgoat.serving.__main__ import serve

    code = serve(str(run), host, port, index)
    if code:
        raise typer.Exit(code)


if __name__ == "__main__":
    app()
