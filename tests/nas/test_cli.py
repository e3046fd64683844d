"""The ``qnas`` command line: run, validate, pareto, errors as one line, and the registration hooks."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import pytest

from conftest import qnas_command
from nas import cli, commands
from nas.cli import main, register_command
from nas.experiment import build_space
from nas.kinds import load_experiment
from search_spaces.testing import TINY_MBV3_DEFAULT_CHOICES

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "experiments" / "quickstart.yaml"

SMALL = """\
name: small
dataset: {name: digits}
search_space:
  name: mbv3
  options: """ + json.dumps(TINY_MBV3_DEFAULT_CHOICES) + """
search:
  algorithm: nsga2
  options: {population_size: 8}
  objectives: [{metric: size_kb}, {metric: bitops}, {metric: macs}]
  constraints: ["params >= 8000"]
  budget: 24
output: {export_top: 3}
"""

RUN_FILES = {"config.yaml", "manifest.json", "trials.jsonl", "pareto.csv", "pareto.json", "pareto.png",
             "hypervolume.csv", "hypervolume.png", "report.md", "subnets"}
QUICKSTART_FILES = RUN_FILES | {"supernet.pt", "predictor_report.json", "predictor_dataset.csv", "quant_sensitivity.json"}


@pytest.fixture
def small(tmp_path: Path) -> Path:
    path = tmp_path / "small.yaml"
    path.write_text(SMALL)
    return path


def test_validate_prints_a_summary(capsys):
    assert main(["validate", str(QUICKSTART)]) == 0
    out = capsys.readouterr().out
    for fragment in ("dataset       digits (1×8×8, 10 classes", "search space  mbv3:", "distinct subnets",
                     "objectives    accuracy (max, measured), latency_ms (min, predicted)",
                     "constraints   size_kb <= ", "supernet      train", "latency       latency_ms: profiled",
                     "predictors    ensemble, quantization sensitivity measured on the supernet", "budget", "config is valid"):
        assert fragment in out, out


def test_validate_error_is_one_line_and_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(SMALL.replace("budget: 24", "budgit: 24"))
    assert main(["validate", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    line = SMALL.splitlines().index("  budget: 24") + 1
    assert err.startswith(f"error: {bad}:{line}: search.budgit: unknown key 'budgit'; did you mean 'budget'?")
    assert main(["validate", str(bad), "--debug"]) == 2
    assert "Traceback" in capsys.readouterr().err


def test_set_overrides_on_the_command_line(small, capsys):
    assert main(["validate", str(small), "--set", "search.budget=3"]) == 2
    assert "--set search.budget=3: search.budget: got 3; the nsga2 searcher proposes 8" in capsys.readouterr().err
    assert main(["validate", str(small), "--set", "search.budget=30"]) == 0
    assert "30 distinct candidates" in capsys.readouterr().out


def test_run_writes_the_run_folder_and_pareto_prints_the_front(small, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", str(small), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"run folder: {out}" in printed and "Pareto front:" in printed
    assert RUN_FILES <= {p.name for p in out.iterdir()}
    assert len((out / "trials.jsonl").read_text().splitlines()) == 24
    front = json.loads((out / "pareto.json").read_text())["front"]
    assert front and {p.name for p in (out / "subnets").iterdir()} <= {row["key"] for row in front}
    arch = json.loads(next((out / "subnets").glob("*/arch.json")).read_text())
    assert arch["blocks"][0]["slot"] == "stem" and arch["space"]["name"] == "mbv3"
    report = (out / "report.md").read_text()
    assert "Accuracy is not an objective" in report and "| size_kb | analytic | objective (min) |" in report
    assert main(["pareto", str(out)]) == 0
    table = capsys.readouterr().out
    assert all(row["key"] in table for row in front) and "size_kb (min)" in table
    (out / "trials.jsonl").unlink()  # as a run that has evaluated nothing yet
    assert main(["pareto", str(out)]) == 0
    assert "holds no candidate yet" in capsys.readouterr().err


def test_run_default_folder_and_quiet(small, tmp_path, capsys):
    root = tmp_path / "many_runs"
    assert main(["run", str(small), "--quiet", "--set", f"output.root={root}", "--set", "search.budget=8"]) == 0
    captured = capsys.readouterr()
    (run_dir,) = root.iterdir()
    assert run_dir.name.startswith("small-") and captured.out.strip() == str(run_dir)
    assert "searching" not in captured.err


# The quickstart itself, shrunk by overrides so the test stays fast; every stage still runs.
SHRINK = ["dataset.options.max_train=128", "supernet.warmup_epochs=0", "supernet.epochs=1",
          "supernet.bn_calib_samples=64", "search.budget=14", "search.options.n_startup_trials=10",
          "search.options.batch_size=4", "search.options.generations=2", "search.options.population_size=8",
          "latency.profile.backend=torch-fp32", "latency.profile.runs=5", "latency.profile.passes=2",
          "output.export_top=1"]


def test_quickstart_runs_end_to_end(tmp_path, capsys):
    overrides = [a for o in SHRINK + [f"latency.profile.cache_dir={tmp_path / 'cache'}"] for a in ("--set", o)]
    assert main(["run", str(QUICKSTART), "--out", str(tmp_path / "qs"), "--quiet", *overrides]) == 0
    assert QUICKSTART_FILES <= {p.name for p in (tmp_path / "qs").iterdir()}
    assert list((tmp_path / "qs" / "subnets").glob("*/model.pt2"))
    manifest = json.loads((tmp_path / "qs" / "manifest.json").read_text())
    assert manifest["status"] == "finished" and manifest["finished_at"]
    # raise_free_bits: activation bits change neither the latency (an FP32 table here) nor the size constraint,
    # so no measured genome lowers one; weight bits do change the size, and some are lowered.
    space = build_space(load_experiment(QUICKSTART))
    genomes = [space.from_dict(json.loads(line)["genome"]) for line in (tmp_path / "qs" / "trials.jsonl").open()]
    bits = {kind: [g[q.name] for g in genomes for q in space.genes
                   if q.name.endswith(kind) and space.is_active(g, q)] for kind in ("a_bits", "w_bits")}
    assert set(bits["a_bits"]) == {8} and min(bits["w_bits"]) < 8


@pytest.mark.parametrize("argv, message", [
    (["run"], "give a CONFIG file to start a run, or --resume RUN_DIR"),
    (["run", "--resume", "x", "--out", "y"], "--out cannot be combined with --resume"),
    (["pareto", "/no/such/run"], "run folder not found: /no/such/run"),
    (["run", "/no/such.yaml"], "config file not found: /no/such.yaml"),
])
def test_usage_errors(argv, message, capsys):
    assert main(argv) == 2
    assert f"error: {message}" in capsys.readouterr().err


def test_argparse_exits_become_return_codes(capsys):
    assert main([]) == 2
    assert main(["frobnicate"]) == 2
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("qnas ")


def test_register_command_hook(monkeypatch, capsys):
    monkeypatch.setattr(commands, "COMMANDS", commands.COMMANDS.copy())

    @register_command("hello", help="say hello", configure=lambda p: p.add_argument("who"))
    def _hello(args):
        print(f"hello {args.who}")
        return 0

    assert main(["hello", "world"]) == 0 and capsys.readouterr().out == "hello world\n"
    with pytest.raises(ValueError, match="already registered"):
        register_command("hello", help="again", configure=lambda p: None)(_hello)


def test_command_module_with_its_own_parsers(monkeypatch, capsys):
    module = types.ModuleType("qnas_test_plugin")

    def add(subparsers):
        latency = subparsers.add_parser("latency").add_subparsers()
        check = latency.add_parser("check")
        check.add_argument("table")
        check.set_defaults(func=lambda args: print(f"checked {args.table}") or 0)

    module.add = add
    monkeypatch.setitem(sys.modules, "qnas_test_plugin", module)
    monkeypatch.setattr(cli, "COMMAND_MODULES", ("qnas_test_plugin:add",))
    assert main(["latency", "check", "t.csv"]) == 0
    assert capsys.readouterr().out == "checked t.csv\n"


def test_console_entry_point_in_a_subprocess(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("search: [\n")
    script = Path(sys.executable).parent / "qnas"
    command = [str(script), "validate", str(bad)] if script.exists() else qnas_command("validate", str(bad))
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.startswith(f"error: {bad}:2: invalid YAML") and done.stderr.count("\n") == 1


def test_importing_nas_and_its_cli_is_light():
    code = ("import sys, nas, nas.cli; print([m for m in ('torch', 'pydantic', 'matplotlib', 'pymoo', 'sklearn', "
            "'ray', 'rich') if m in sys.modules])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert done.stdout.strip() == "[]"
