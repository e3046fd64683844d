"""The config reference is generated from the models, documents every key, and docs/config.md is current."""

from pathlib import Path

import pytest

from nas.config import ExperimentConfig
from nas.config_docs import config_reference, model_sections
from nas.cli import main
from nas.kinds import KINDS, get_kind

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("model", [ExperimentConfig, *(get_kind(name).config_model for name in KINDS.names())],
                         ids=lambda model: model.__name__)
def test_every_config_key_has_a_description(model):
    missing = [f"{path}.{name}" if path else name for path, model in model_sections(model)
               for name, field in model.model_fields.items() if not field.description]
    assert not missing, f"config keys without a description (Field(description=...)): {missing}"


def test_the_reference_documents_every_kind_and_its_sections():
    text = config_reference()
    assert text.index("## kind: `search`") < text.index("## kind: `lpgnas`")  # the default kind first
    for name in KINDS.names():
        assert f"## kind: `{name}`" in text
        for section in get_kind(name).sections():
            assert f"## `{section}` (kind" in text, (name, section)
    assert "## `search_space` (kinds: search, lpgnas)" in text


def test_docs_config_md_is_the_generated_reference():
    text = (ROOT / "docs" / "config.md").read_text(encoding="utf-8")
    assert text == config_reference(), "docs/config.md is stale: run `qnas docs config > docs/config.md`"


def test_the_reference_lists_nested_keys_with_types_defaults_and_ranges():
    text = config_reference()
    for row in ("| `search.budget` | int | `100` | ≥ 1, ≤ 1,000,000 |", "## `latency.profile`",
                "| `search.objectives[].direction` | `min` \\| `max` | `'min'` |"):
        assert row in text, row


def test_qnas_docs_config_prints_it(capsys):
    assert main(["docs", "config"]) == 0
    assert capsys.readouterr().out == config_reference()
