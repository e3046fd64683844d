"""Experiment kinds are plugins: the config, the runner and the CLI know them only through the registry."""

import re
from pathlib import Path

import pytest

from pydantic import Field

from nas.config import ExperimentConfig, SearchSpaceConfig
from nas.kinds import KINDS, ExperimentKind, get_kind
from search_spaces import InputError

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", KINDS.names())
def test_every_kind_owns_a_config_model_with_its_sections(name):
    kind = get_kind(name)
    assert issubclass(kind.config_model, ExperimentConfig) and any(kind.sections().values())
    for section, required in kind.sections().items():
        field = kind.config_model.model_fields[section]
        assert field.description and (required or field.default is None), (section, field)


def test_the_common_model_holds_no_kind_section():
    """A kind's section is a field of that kind's model only: the model every kind shares has no ``X | None``
    field (one would mean another kind), and no kind redefines one of its fields."""
    assert [name for name, field in ExperimentConfig.model_fields.items() if field.default is None] == []
    for name in KINDS.names():
        model = get_kind(name).config_model
        assert all(model.model_fields[f].annotation == field.annotation
                   for f, field in ExperimentConfig.model_fields.items()), name


class _SurveyConfig(ExperimentConfig):
    search_space: SearchSpaceConfig = Field(description="the space surveyed")


class _Survey(ExperimentKind):
    """A kind registered only in this test: the config loader must take it without an edit elsewhere."""

    name, description, config_model = "survey", "a kind no module ships", _SurveyConfig

    def prepare(self, loaded, reporter, placement, launch):
        raise AssertionError("not run here")

    def summary(self, exp):
        return []

    def run(self, exp, run_dir, reporter, *, resume, handle):
        raise AssertionError("not run here")


def test_a_kind_registered_by_one_module_is_a_valid_config_kind(tmp_path, monkeypatch):
    import yaml

    import nas.kinds.base as base

    kinds = KINDS.copy()
    kinds.register("survey", _Survey())
    monkeypatch.setattr(base, "KINDS", kinds)
    space = {"name": "mbv3", "options": {"in_channels": 1, "image_size": 8}}
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump({"kind": "survey", "dataset": {"name": "digits"}, "search_space": space}))
    assert base.load_experiment(path).config.kind == "survey"
    search = {"objectives": [{"metric": "size_kb"}], "budget": 2}
    path.write_text(yaml.safe_dump({"kind": "survey", "dataset": {"name": "digits"}, "search_space": space,
                                    "search": search}))
    with pytest.raises(InputError, match="section 'search' is not used by kind: survey"):
        base.load_experiment(path)  # another kind's section: an error, not silence


@pytest.mark.parametrize("name", KINDS.names())
def test_every_kind_implements_the_interface(name):
    kind = get_kind(name)
    assert isinstance(kind, ExperimentKind) and kind.name == name and kind.description


def test_an_unknown_kind_names_the_nearest():
    with pytest.raises(InputError, match="did you mean 'lpgnas'"):
        get_kind("lpgna")


def test_no_kind_branches_outside_the_kind_plugins():
    """``kind == "lpgnas"`` anywhere but nas/kinds/ would be a second place to edit for every new kind."""
    pattern = re.compile(r"kind\s*(==|!=|in)\s*\(?[\"'](search|lpgnas|space-search)[\"']")
    offenders = [f"{path.relative_to(ROOT)}:{i}" for path in sorted((ROOT / "nas").rglob("*.py"))
                 if "kinds" not in path.parts
                 for i, line in enumerate(path.read_text().splitlines(), start=1) if pattern.search(line)]
    assert not offenders, offenders
