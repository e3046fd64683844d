"""`qnas run` with a `supernet:` section: trains it in the run folder, searches measured accuracy,
validates the front with extracted models and exports loadable models."""

import copy
import csv
import json

import pytest
import torch
import yaml

from nas.runner import resume_run, start_run
from search_spaces import InputError
from search_spaces.testing import TINY_MBV3

CONFIG = {
    "name": "tiny_acc", "seed": 0,
    "dataset": {"name": "digits", "options": {"max_train": 256}},
    "search_space": {"name": "mbv3", "options": copy.deepcopy(TINY_MBV3)},
    "supernet": {"warmup_epochs": 1, "epochs": 1, "batch_size": 64, "bn_calib_samples": 128, "random_subnets": 1},
    "search": {"algorithm": "random", "options": {"batch_size": 4}, "budget": 8,
               "objectives": [{"metric": "accuracy", "direction": "max"}, {"metric": "size_kb", "direction": "min"}]},
    "output": {"export_top": 2},
}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("acc")
    path = folder / "exp.yaml"
    path.write_text(yaml.safe_dump(CONFIG | {"output": {"export_top": 2, "root": str(folder / "runs")}}))
    return path, start_run(path)


def test_front_has_measured_and_validated_accuracy(finished):
    _, outcome = finished
    rows = list(csv.DictReader((outcome.run_dir / "pareto.csv").open()))
    assert rows and {"accuracy", "accuracy_extracted", "accuracy_test", "size_kb"} <= set(rows[0])
    for row in rows:
        assert 0.0 <= float(row["accuracy"]) <= 1.0
        assert abs(float(row["accuracy"]) - float(row["accuracy_extracted"])) <= 1 / 359 + 1e-9
    sources = {json.loads(line)["sources"]["accuracy"] for line in (outcome.run_dir / "trials.jsonl").open()}
    assert sources == {"measured"}
    assert (outcome.run_dir / "supernet.pt").is_file()
    assert "accuracy_test" in (outcome.run_dir / "report.md").read_text()


def test_exported_models_load_without_qnas_and_match(finished):
    _, outcome = finished
    folders = sorted((outcome.run_dir / "subnets").iterdir())
    assert len(folders) == 2
    x = torch.randn(3, 1, 8, 8)
    for folder in folders:
        model = torch.export.load(str(folder / "model.pt2")).module()
        assert model(x).shape == (3, 10)
        assert json.loads((folder / "arch.json").read_text())["blocks"][0]["slot"] == "stem"


def test_resume_reuses_the_trained_supernet(finished):
    _, outcome = finished
    checkpoint = outcome.run_dir / "supernet.pt"
    before = checkpoint.stat().st_mtime_ns
    again = resume_run(outcome.run_dir)
    assert checkpoint.stat().st_mtime_ns == before  # finished training is not redone
    assert again.result.evaluated == 0 and again.result.reused == 8


def test_reusing_a_checkpoint_skips_training(finished, tmp_path):
    path, outcome = finished
    config = CONFIG | {"supernet": {"checkpoint": str(outcome.run_dir / "supernet.pt"), "bn_calib_samples": 128},
                       "output": {"root": str(tmp_path), "export_top": 0}}
    new = tmp_path / "reuse.yaml"
    new.write_text(yaml.safe_dump(config))
    second = start_run(new)
    assert not (second.run_dir / "supernet.pt").exists()
    first_rows = {json.loads(line)["key"]: json.loads(line)["metrics"]["accuracy"]
                  for line in (outcome.run_dir / "trials.jsonl").open()}
    for line in (second.run_dir / "trials.jsonl").open():
        record = json.loads(line)
        if record["key"] in first_rows:
            assert record["metrics"]["accuracy"] == first_rows[record["key"]]


def test_export_cli_writes_torch_and_onnx_models(finished, tmp_path):
    import numpy as np
    import onnxruntime as ort

    from nas.cli import main

    _, outcome = finished
    out = tmp_path / "exported"
    assert main(["export", str(outcome.run_dir), "--rank", "1", "--format", "torch", "--format", "onnx",
                 "--out", str(out), "--quiet"]) == 0
    assert {"model.pt2", "model.onnx", "export.json", "arch.json"} <= {p.name for p in out.iterdir()}
    x = torch.randn(5, 1, 8, 8)
    torch_out = torch.export.load(str(out / "model.pt2")).module()(x).detach().numpy()
    onnx_out = ort.InferenceSession(str(out / "model.onnx")).run(None, {"x": x.numpy()})[0]
    # Same arithmetic; a float rounding difference may flip one quantization step somewhere.
    assert np.abs(torch_out - onnx_out).mean() < 1e-4 and np.abs(torch_out - onnx_out).max() < 0.05


def test_int8_export_of_a_w8a8_subnet_and_refusal_below_8_bits(finished, tmp_path):
    from nas.export import export_subnet
    from supernets.checkpoint import load_supernet
    from supernets.data import load_dataset
    from supernets.evaluate import SubnetEvaluator

    _, outcome = finished
    net, _ = load_supernet(outcome.run_dir / "supernet.pt")
    data = load_dataset("digits", max_train=256)
    subnets = SubnetEvaluator(net.eval(), data.train_x[:128], data.val_x, data.val_y)
    w8a8 = net.space.largest()  # the largest bit-width of every block is 8 here
    result = export_subnet(subnets, w8a8, tmp_path / "int8", ["int8"], calib=data.train_x, eval_x=data.test_x,
                           eval_y=data.test_y)
    assert {"model_int8.onnx", "model_int8.pt"} <= {p.name for p in (tmp_path / "int8").iterdir()}
    assert result["onnxruntime_learned_steps"] > 0  # the learned LSQ steps, not calibrated ranges
    for backend in ("onnxruntime-int8", "torch-int8"):
        assert abs(result[f"gap_pp_{backend}"]) <= 5.0, result  # small supernet; the benchmark measures it properly
    with pytest.raises(InputError, match="is not W8A8 .* no integer kernels below 8 bits"):
        export_subnet(subnets, net.space.smallest(), tmp_path / "x", ["int8"], calib=data.train_x,
                      eval_x=data.test_x, eval_y=data.test_y)


# ---- the device section -------------------------------------------------------------------------------------
def test_manifest_records_the_device_and_the_processes(finished):
    _, outcome = finished
    manifest = json.loads((outcome.run_dir / "manifest.json").read_text())
    assert manifest["processes"] == 1
    assert manifest["device"]["device"] == "cpu" and manifest["device"]["precision"] == "fp32"  # auto, no GPU here
    assert {"name", "torch", "cuda", "cudnn"} <= set(manifest["device"])
    assert "device" in (outcome.run_dir / "report.md").read_text()


def test_a_run_in_bf16_autocast_on_the_cpu(tmp_path):
    path = tmp_path / "bf16.yaml"
    path.write_text(yaml.safe_dump(CONFIG | {"device": {"type": "cpu", "precision": "bf16"},
                                             "output": {"root": str(tmp_path / "runs"), "export_top": 1}}))
    outcome = start_run(path)
    accuracies = [json.loads(line)["metrics"]["accuracy"] for line in (outcome.run_dir / "trials.jsonl").open()]
    assert len(accuracies) == 8 and all(0.0 <= a <= 1.0 for a in accuracies) and len(set(accuracies)) > 2
    assert json.loads((outcome.run_dir / "manifest.json").read_text())["device"]["precision"] == "bf16"


@pytest.mark.parametrize("device, field, words", [
    ({"type": "cuda"}, "device.type", "no CUDA device"),
    ({"type": "cpu", "precision": "fp16"}, "device.precision", "fp16"),
    ({"typ": "cpu"}, "device.typ", "did you mean 'type'"),
    ({"index": -1}, "device.index", "greater than or equal to 0"),
])
def test_a_device_this_machine_lacks_is_one_error_before_any_run_folder(tmp_path, capsys, device, field, words):
    from nas.cli import main

    if device.get("type") == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    path = tmp_path / "dev.yaml"
    path.write_text(yaml.safe_dump(CONFIG | {"device": device, "output": {"root": str(tmp_path / "runs")}}))
    assert main(["run", str(path), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {path}:") and f"{field}:" in err and words in err and "\n" not in err, err
    assert not (tmp_path / "runs").exists()
