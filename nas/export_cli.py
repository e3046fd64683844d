"""``qnas export RUN_DIR --rank K --format {torch,onnx,int8} [--out PATH]``."""

from __future__ import annotations

import argparse
from pathlib import Path

from nas.commands import RichReporter, positive_int, register_command
from search_spaces import InputError


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", help="a finished run folder with a supernet")
    parser.add_argument("--rank", type=positive_int, default=1,
                        help="position on the Pareto front (pareto.csv's rank), 1-based")
    parser.add_argument("--format", dest="formats", action="append", choices=["torch", "onnx", "int8"],
                        help="repeatable; default torch")
    parser.add_argument("--out", metavar="PATH", help="folder to write (default RUN_DIR/subnets/<key>/)")


@register_command("export", help="export a Pareto subnet of a run as torch, ONNX or real INT8 models",
                  configure=_configure)
def _export(args: argparse.Namespace) -> int:
    from nas.accuracy import SUPERNET_CHECKPOINT
    from nas.kinds import load_experiment
    from nas.export import export_subnet
    from nas.rundir import CONFIG, atomic_write_json, check_output_folder, check_run_dir
    from nas.experiment import build_space, check_dataset
    from supernets.checkpoint import load_supernet
    from supernets.evaluate import SubnetEvaluator

    run = check_run_dir(args.run_dir)
    if args.out:
        try:
            check_output_folder(args.out)
        except InputError as err:
            raise InputError(err.detail, source=args.out, field="--out") from None
    loaded = load_experiment(run / CONFIG)
    section = getattr(loaded.config, "supernet", None)  # kinds without the section have no supernet
    if section is None:
        raise InputError("this run has no supernet, so there are no weights to export (its subnets/*/arch.json "
                         "describe the architectures)", source=run / CONFIG, field="supernet")
    front = _front(run)
    if not 1 <= args.rank <= len(front):
        raise InputError(f"--rank {args.rank} is outside the front (1..{len(front)})", source=run / "pareto.json")
    space = build_space(loaded)
    genome = space.from_dict(front[args.rank - 1]["genome"], source=str(run / "pareto.json"))
    _, data = check_dataset(loaded, space)
    net, _ = load_supernet(section.checkpoint or run / SUPERNET_CHECKPOINT, space=space)
    subnets = SubnetEvaluator(net.eval(), data.train_x[: section.bn_calib_samples], data.val_x, data.val_y,
                              batch_size=section.eval_batch_size)
    folder = Path(args.out) if args.out else run / "subnets" / genome.key
    reporter = RichReporter(quiet=args.quiet)
    with reporter.step(f"exporting {genome.key} ({', '.join(args.formats or ['torch'])})"):
        result = export_subnet(subnets, genome, folder, args.formats or ["torch"], calib=data.train_x,
                               eval_x=data.test_x, eval_y=data.test_y, batch_size=section.eval_batch_size)
    atomic_write_json(folder / "export.json", result)
    arch = run / "subnets" / genome.key / "arch.json"
    if arch.exists() and folder != arch.parent:
        (folder / "arch.json").write_text(arch.read_text())
    for key, value in result.items():
        if key.startswith("accuracy"):
            reporter.info(f"{key}: {value:.4f} (test split)")
    reporter.info(f"wrote {', '.join(result['files'])} to {folder}")
    return 0


def _front(run: Path) -> list[dict]:
    """The front of a finished run's ``pareto.json``: a list of entries that each hold a genome."""
    from search_spaces.inputs import read_json

    path = run / "pareto.json"
    if not path.is_file():
        raise InputError("the run has no pareto.json yet (it has not finished); resume it first", source=path)
    data = read_json(path, what="Pareto front file")
    front = data.get("front") if isinstance(data, dict) else None
    if not isinstance(front, list):
        raise InputError('damaged: expected an object with a "front" list', source=path, field="front")
    for i, entry in enumerate(front):
        if not isinstance(entry, dict) or not isinstance(entry.get("genome"), dict):
            raise InputError("damaged: expected an object with a genome object", source=path, field=f"front[{i}]")
    return front
