"""The GPU benchmark runs where pydantic is not installed: its own recipe must then give every training setting."""

import importlib.util
import sys

from supernets.config import SupernetConfig

from conftest import ROOT

BENCHMARKS = ROOT / "experiments" / "benchmarks"


def test_the_gpu_benchmark_recipe_sets_every_supernet_config_field(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # its sibling modules (inherited_standalone)
    spec = importlib.util.spec_from_file_location("gpu_benchmark_under_test", BENCHMARKS / "gpu_benchmark.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    missing = set(SupernetConfig.model_fields) - set(module.RECIPE)
    assert not missing, f"gpu_benchmark.RECIPE lacks {sorted(missing)} (its fallback config without pydantic)"
    monkeypatch.setitem(sys.modules, "supernets.config", None)  # as on the device machine: no pydantic
    fallback = module.make_config(True)
    assert all(hasattr(fallback, name) for name in SupernetConfig.model_fields)
    assert SupernetConfig(**(module.RECIPE | module.SMOKE_RECIPE)) == SupernetConfig(**fallback.model_dump())
