"""The `recgoat` command line: what a new user sees from `recgoat` in a pipe or a log file, on Ctrl-C, on a
bad value, and in each command's --help.

Every training run is BPR-MF (or MostPopular) for one epoch on a synthetic 50-user × 40-item CSV catalogue
whose item ids are too long for an 80-column table.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from recgoat.cli import app

from conftest import run_main

runner = CliRunner()
SMALL = ["--set", "model.params.embedding_dim=8", "--set", "trainer.batch_size=256"]
BOX = "│┃┏┓┗┛┡┩┣┫━─┳┻╇╈╭╮╰╯┼┬┴├┤└┘┌┐"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def long_id(i: int) -> str:
    return f"item-{i:02d}-" + "x" * 70 + f"-{i:02d}"


def flat(text: str) -> str:
    """``text`` without box drawing and whitespace: what a table or a help panel says, whatever its wrapping."""
    return re.sub(rf"[\s{BOX}]", "", text)


@pytest.fixture(scope="module")
def shop(tmp_path_factory) -> Path:
    """50 users × 15 distinct items of 40, the items named by 80-character ids."""
    rng = np.random.default_rng(0)
    rows = [{"user_id": f"u{u}", "item_id": long_id(int(i)), "rating": 4, "timestamp": u * 1000 + j}
            for u in range(50) for j, i in enumerate(rng.choice(40, 15, replace=False))]
    folder = tmp_path_factory.mktemp("data") / "shop"
    folder.mkdir()
    pd.DataFrame(rows).to_csv(folder / "interactions.csv", index=False)
    return folder


@pytest.fixture(scope="module")
def run_dir(shop, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "run"
    r = runner.invoke(app, ["train", "--dataset", str(shop), "--model", "bprmf", "--epochs", "1", "--run-dir",
                            str(run), "--set", "trainer.progress=false", *SMALL])
    assert r.exit_code == 0, (r.output, r.exception)
    return run


@pytest.fixture(scope="module")
def export(shop, run_dir, tmp_path_factory):
    """(the CliRunner result of `recgoat export`, the artefact folder), a folder whose name is rich markup."""
    art = tmp_path_factory.mktemp("art") / "[bold]art"
    r = runner.invoke(app, ["export", str(run_dir), "--dataset", str(shop), "--out", str(art)])
    assert r.exit_code == 0, (r.output, r.exception)
    return r, art


# ------------------------------------------------------------------------------------------ errors on stderr
def test_recommend_error_goes_to_stderr_not_into_the_piped_output(tmp_path):
    """`recgoat recommend/export/serve` printed their errors on stdout: `recgoat recommend … > top.txt` wrote
    "error: …" into the file and showed nothing on the terminal."""
    r = runner.invoke(app, ["recommend", str(tmp_path / "nope"), "--user", "u1"])
    assert r.exit_code == 1
    assert r.stdout == ""
    assert r.stderr.strip() == f"error: {tmp_path / 'nope'}: no such artefact folder"


def test_export_line_keeps_brackets_of_the_artefact_path(export):
    """The "exported … → PATH" line was read as rich markup: a folder named `[bold]art` showed as `art`."""
    r, art = export
    assert f"→ {art}" in r.stdout


# ------------------------------------------------------------------------------------------ pipes
def test_datasets_list_does_not_cut_paths_in_a_pipe():
    """Piped (80 columns), `recgoat datasets list` cut the embedded dataset's path to `…/embedded/ml-la…`."""
    from recgoat.datasets import available

    r = runner.invoke(app, ["datasets", "list"])
    assert r.exit_code == 0, r.output
    assert "…" not in r.stdout
    for row in available():
        assert flat(str(row["path"])) in flat(r.stdout)


def test_recommend_does_not_cut_item_ids_in_a_pipe(export):
    """Item ids longer than their column ended in `…`: the id printed could not be looked up again."""
    _, art = export
    r = runner.invoke(app, ["recommend", str(art), "--item", long_id(1), "-k", "3"])
    assert r.exit_code == 0, (r.output, r.exception)
    assert "…" not in r.stdout
    ids: list[str] = []  # the item_id cells, a row's folded lines joined
    for line in r.stdout.splitlines():
        cells = [c.strip() for c in line.split("│")]
        if len(cells) > 2:
            if cells[1]:  # the "#" column: a new row
                ids.append("")
            ids[-1] += cells[2]
    assert len(ids) == 3 and all(i in {long_id(n) for n in range(40)} for i in ids), ids


def test_train_draws_no_progress_bar_into_a_pipe_unless_asked(shop, tmp_path):
    """stderr a log file or a pipe: tqdm's epoch bar wrote every redraw, separated by carriage returns."""
    base = ["train", "--dataset", str(shop), "--model", "bprmf", "--epochs", "1", *SMALL]
    r = runner.invoke(app, [*base, "--run-dir", str(tmp_path / "a")])
    assert r.exit_code == 0, (r.output, r.exception)
    assert "epoch/s" not in r.stderr and "\r" not in r.stderr
    asked = runner.invoke(app, [*base, "--run-dir", str(tmp_path / "b"), "--set", "trainer.progress=true"])
    assert asked.exit_code == 0, (asked.output, asked.exception)
    assert "epoch/s" in asked.stderr  # an explicit setting still wins


def test_benchmark_draws_no_progress_bar_into_a_pipe(shop, tmp_path):
    r = runner.invoke(app, ["benchmark", "--dataset", str(shop), "--models", "mostpop", "--epochs", "1",
                            "--out", str(tmp_path / "b")])
    assert r.exit_code == 0, (r.output, r.exception)
    assert "cell/s" not in r.stderr and "\r" not in r.stderr
    assert "HTML report:" in r.stdout
    tex = re.search(r"^LaTeX tables: (.+)$", r.stdout, re.M)
    assert tex and "\\begin{tabular}" in Path(tex.group(1)).read_text()
    # without bars each finished cell is still one line there: the log saw nothing for the whole run
    assert re.search(r"^shop/mostpop/seed2026: recall@20 valid \d\.\d{4} test \d\.\d{4} \(", r.stderr, re.M), r.stderr


# ------------------------------------------------------------------------------------------ Ctrl-C
def test_ctrl_c_message_starts_on_its_own_line_below_an_open_progress_bar(monkeypatch, capsys):
    """The "interrupted" line was glued to the end of the epoch bar Ctrl-C left half drawn (`…best=0.18@0]interr
    upted; …`), and the bar was redrawn by tqdm at exit."""
    import recgoat.training.run as run
    from tqdm.auto import tqdm

    bars = []

    def interrupted(*a, **k):
        bars.append(tqdm(total=10, desc="bprmf", unit="epoch", leave=False, file=sys.stderr))
        bars[0].update(3)
        raise KeyboardInterrupt

    monkeypatch.setattr(run, "train", interrupted)
    code, err = run_main(monkeypatch, capsys, "train", "--model", "bprmf")
    assert code == 130 and "Traceback" not in err
    before = err.split("interrupted;")[0]
    assert "epoch" in before and before[-1] in "\r\n"
    assert bars[0].disable  # closed: nothing redrawn at exit


TRAIN_KEPT = ("interrupted; the run folder keeps the checkpoint of its last finished epoch (the epoch under way is "
              "run again): the same command resumes from it")


def test_ctrl_c_in_train_says_what_train_keeps_and_the_same_command_resumes_it(shop, tmp_path, monkeypatch,
                                                                                 capsys):
    """`recgoat train` was told of encode chunks, LLM profile answers and benchmark cells: now of its own
    checkpoint, which the same command does resume."""
    import json

    from recgoat.training.trainer import Trainer

    real = Trainer._train_epoch

    def ctrl_c_in_second_epoch(self, model, sampler, optimizer, epoch, run):
        if epoch == 1:
            raise KeyboardInterrupt
        return real(self, model, sampler, optimizer, epoch, run)

    monkeypatch.setattr(Trainer, "_train_epoch", ctrl_c_in_second_epoch)
    run = tmp_path / "run"
    args = ("train", "--dataset", str(shop), "--model", "bprmf", "--epochs", "2", "--run-dir", str(run), *SMALL)
    code, err = run_main(monkeypatch, capsys, *args)
    assert (code, err.strip()) == (130, TRAIN_KEPT)
    assert json.loads((run / "checkpoint" / "state.json").read_text())["epoch"] == 0
    monkeypatch.setattr(Trainer, "_train_epoch", real)
    code, err = run_main(monkeypatch, capsys, *args)
    assert code == 0, err
    assert json.loads((run / "result.json").read_text())["resumed_epochs"] == 1


def test_ctrl_c_in_encode_speaks_of_its_chunks(shop, tmp_path, monkeypatch, capsys):
    import recgoat.features.store as store

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(store, "encode_all", interrupted)
    code, err = run_main(monkeypatch, capsys, "encode", "text", str(shop), "--out", str(tmp_path / "feat"))
    assert code == 130 and "Traceback" not in err
    assert err.strip() == ("interrupted; the feature folder keeps its finished chunks of rows (chunk_size, default "
                           "512; the chunk under way is done again): the same command resumes from them")


@pytest.mark.parametrize(("argv", "said"), [
    (["train", "--model", "bprmf"], TRAIN_KEPT),
    (["evaluate", "runs/x"], "interrupted; nothing was written"),
    (["encode", "image", "shop"], "and of the image chunk under way the rows it finished"),
    (["encode", "users", "shop"], "interrupted; the LLM profile answers received are kept"),
    (["encode", "all", "shop"], "interrupted; the LLM profile answers received are kept"),
    (["encode", "import-mmrec", "src", "shop"], "interrupted; nothing is half-written"),
    (["benchmark", "--config", "b.yaml"], "interrupted; finished cells are kept, and the cells under way keep"),
    (["datasets", "prepare", "shop", "--out", "x"], "interrupted; the --out folder is written whole or not at all"),
    (["export", "runs/x", "--out", "art"], "interrupted; an artefact is swapped in only once complete"),
    (["datasets", "info", "shop"], "interrupted; nothing is half-written"),
    (["--help"], "interrupted; nothing is half-written"),
])
def test_each_command_is_told_what_it_keeps_when_interrupted(argv, said):
    from recgoat.cli import _interrupted_message

    message = _interrupted_message(argv)
    assert message.startswith(said) or said in message, message
    # no command is told of another's units (train of encode chunks, LLM answers and benchmark cells)
    assert ("epoch" in message) == (argv[0] in ("train", "benchmark")), message
    assert ("chunk" in message) == (argv[0] == "encode" and argv[1] != "import-mmrec"), message


@pytest.mark.parametrize("module", ["recgoat.config", "recgoat.serving.cli"])
def test_ctrl_c_while_recgoat_starts_exits_130_without_traceback(module):
    """The run configuration and the command groups import torch: a Ctrl-C in those first seconds raised
    during `import recgoat.cli`, before main() could catch it, and printed a long traceback."""
    script = textwrap.dedent("""
        import sys

        class CtrlC:
            def find_spec(self, name, path=None, target=None):
                if name == MODULE:
                    raise KeyboardInterrupt
                return None

        sys.meta_path.insert(0, CtrlC())
        sys.argv = ["recgoat", "--help"]
        from recgoat.cli import entry
        entry()
    """)
    script = script.replace("MODULE", repr(module))
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=ENV)
    assert p.returncode == 130, p.stderr
    assert "Traceback" not in p.stderr
    assert p.stderr.strip().startswith("interrupted")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_stops_the_server_cleanly(export, sig):
    """Ctrl-C, the way to stop `python -m recgoat.serving` (and `recgoat serve`), ended it with a traceback
    (uvicorn re-raises the signal after its graceful shutdown) and a death by SIGINT. SIGTERM (docker stop,
    systemd, kill) ended it with exit 143 and no "server stopped" (session 15's audit)."""
    _, art = export
    p = subprocess.Popen([sys.executable, "-m", "recgoat.serving", str(art), "--port", "0"], env=ENV,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        first = p.stderr.readline()
        assert first.startswith("serving ") and "http://127.0.0.1:" in first, first
        p.send_signal(sig)
        _, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 0, err
    assert "Traceback" not in err
    assert err.strip() == "server stopped"


# ------------------------------------------------------------------------------------------ options and help
def test_serve_takes_port_0_as_python_m_recgoat_serving_does(tmp_path):
    """`recgoat serve --port 0` was a usage error (min 1) although serve() listens on a free port for 0 and
    `python -m recgoat.serving --port 0` takes it."""
    r = runner.invoke(app, ["serve", str(tmp_path / "nope"), "--port", "0"])
    assert r.exit_code == 1
    assert "no such artefact folder" in r.stderr


def test_python_m_recgoat_runs_the_recgoat_command():
    """`python -m recgoat --help` failed ("No module named recgoat.__main__"): the way to run the command with a
    chosen interpreter, or where the scripts folder is not on PATH. It is the console script's entry (its errors
    one line, exit 1)."""
    import recgoat

    src = str(Path(recgoat.__file__).parents[1])  # this checkout's recgoat, whatever is installed
    env = {**ENV, "PYTHONPATH": os.pathsep.join([src, *filter(None, [ENV.get("PYTHONPATH")])])}
    p = subprocess.run([sys.executable, "-m", "recgoat", "--help"], capture_output=True, text=True, timeout=120,
                       env=env)
    assert p.returncode == 0, p.stderr
    assert "Usage: python -m recgoat" in p.stdout and flat("LLM-enhanced multimodal recommendation") in flat(p.stdout)
    assert all(f" {c} " in p.stdout for c in ("train", "evaluate", "benchmark", "export", "serve", "datasets"))
    bad = subprocess.run([sys.executable, "-m", "recgoat", "datasets", "info", "no-such-data"], capture_output=True,
                         text=True, timeout=120, env=env)
    assert bad.returncode == 1 and bad.stderr.startswith("error: no-such-data: no such dataset name or folder")
    assert "Traceback" not in bad.stderr


def test_benchmark_help_shows_its_own_description():
    """The mounted `benchmark` command showed a generic fallback, not its docstring (resume, results, report)."""
    r = runner.invoke(app, ["benchmark", "--help"])
    assert r.exit_code == 0
    assert flat("Run (or resume) a benchmark, print the results table") in flat(r.stdout)


def test_train_help_states_each_default():
    """`recgoat train --help` gave no default for any option: which model, dataset, epochs, seed, folder?"""
    from recgoat.config import DataConfig, ModelSection, RunConfig
    from recgoat.training.trainer import TrainConfig

    text = flat(runner.invoke(app, ["train", "--help"]).stdout)
    for default in (ModelSection().name, DataConfig().name, TrainConfig().epochs, TrainConfig().seed,
                    RunConfig().out):
        assert flat(f"[default: the config's, else {default}]") in text
    assert flat("[default: OUT/DATASET/MODEL/seedS; DATASET+seed=7 for --set data.seed=7, and so for other data.* "
                "options]") in text


# ------------------------------------------------------------------------------------------ demo
def test_demo_error_keeps_the_brackets_of_a_path(tmp_path, capsys):
    """The demo printed its errors through rich markup: a folder `[bold]data` lost `[bold]`."""
    from recgoat.demo import main

    missing = tmp_path / "[bold]data"
    assert main(["--dataset", str(missing), "--out", str(tmp_path / "out")]) == 1
    out = capsys.readouterr().err  # stderr: `make demo > demo.log` hid it in the log
    assert out.startswith(f"error: {missing}: ") and "\n" not in out.strip()


def test_demo_ctrl_c_exits_130_without_traceback(monkeypatch, tmp_path, capsys):
    import recgoat.demo as demo

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(demo, "load", interrupted)
    try:
        code = demo.main(["--out", str(tmp_path / "out")])
    except KeyboardInterrupt:  # not raised on: pytest would take it for the user's Ctrl-C and stop the session
        pytest.fail("KeyboardInterrupt escaped recgoat.demo.main (a traceback for the user)")
    assert code == 130
    assert capsys.readouterr().err.startswith("interrupted; finished work is kept")


def test_demo_draws_no_progress_bars_into_a_log(monkeypatch, shop, tmp_path, capsys):
    """`make demo > demo.log 2>&1` got every redraw of the encoding and benchmark bars."""
    import recgoat.features as features
    from recgoat.errors import RecGOATError
    from recgoat.demo import main

    seen = {}

    def encode_all(ds, out, cfg, progress=True, **kw):
        seen["progress"] = progress
        raise RecGOATError("stop here")

    monkeypatch.setattr(features, "encode_all", encode_all)
    assert main(["--dataset", str(shop), "--out", str(tmp_path / "out")]) == 1
    assert seen == {"progress": False}  # capsys: stderr is not a terminal


def test_demo_help_states_defaults(capsys):
    from recgoat.demo import main

    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    for text in ("(default: ml-latest-small)", "(default: 60)", "(default: 10)", "(default: 2026)",
                 "(default: 0.005)"):
        assert text in out


@pytest.mark.parametrize("command, option, default", [
    (["encode", "import-mmrec"], "--out", "[default: features/<dataset>]"),
    (["encode", "export-mmrec"], "--dest", "[default: the same folder]"),
    (["encode", "text"], "--out", "[default: features/<dataset>]"),
])
def test_encode_help_keeps_its_defaults(command, option, default):
    """`[default: …]` in a help string is rich markup unless escaped: it vanished from encode's help."""
    r = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
    assert r.exit_code == 0
    line = next(x for x in r.output.splitlines() if option in x)
    assert default in line, line


def test_a_finished_command_ignores_ctrl_c_in_its_teardown():
    """After a command's output, the interpreter's teardown (about a second with torch loaded) took a Ctrl-C as a
    silent exit -2 or an "Exception ignored in atexit callback" traceback; a finished command exits 0.
    The child starts with SIGINT's default restored: started from a background job it inherited SIGINT ignored,
    and the test passed there whether or not the command ignored the Ctrl-C itself."""
    script = textwrap.dedent("""
        import os, signal, sys, atexit
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # a Ctrl-C would interrupt it
        sys.argv = ["recgoat", "--help"]
        # the Ctrl-C lands in the teardown: an atexit callback (run then) sends it
        atexit.register(lambda: os.kill(os.getpid(), signal.SIGINT))
        from recgoat.cli import entry
        entry()
    """)
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=ENV,
                       preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert p.returncode == 0, (p.returncode, p.stderr)
    assert "Traceback" not in p.stderr and "KeyboardInterrupt" not in p.stderr
