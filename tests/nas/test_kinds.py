"""Experiment kinds are plugins: the config, the runner and the CLI know them only through the registry."""

import re
from pathlib import Path
from typing import get_args

import pytest

from nas.config import ExperimentConfig
from nas.kinds import KINDS, ExperimentKind, get_kind
from search_spaces import InputError

ROOT = Path(__file__).resolve().parents[2]


def test_the_config_offers_exactly_the_registered_kinds():
    assert sorted(get_args(ExperimentConfig.model_fields["kind"].annotation)) == KINDS.names()


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
