"""The generic registry behind every extension point: duplicates refused, unknown names answered with the nearest."""

import pytest

from search_spaces import InputError
from search_spaces.registries import Registry


def test_register_get_and_names():
    reg: Registry[int] = Registry("widget", field="widgets.kind")
    reg.register("b", 2)
    assert reg.register("a")(1) == 1  # the decorator form returns what it decorates
    assert reg.get("a") == 1 and reg.names() == ["a", "b"] and list(reg) == ["a", "b"] and len(reg) == 2
    assert reg.values() == [2, 1] and reg.items() == [("b", 2), ("a", 1)]  # registration order
    assert "a" in reg and "c" not in reg and 3 not in reg


def test_duplicates_reserved_and_empty_names_are_refused():
    reg: Registry[type] = Registry("widget", reserved=["auto"])
    reg.register("int", int)
    with pytest.raises(ValueError, match="widget 'int' is already registered by int"):
        reg.register("int", float)
    with pytest.raises(ValueError, match="'auto' is reserved"):
        reg.register("auto", float)
    with pytest.raises(ValueError, match="must not be empty"):
        reg.register("", float)
    assert reg.get("int") is int


def test_unknown_name_is_one_input_error_with_the_nearest():
    reg: Registry[int] = Registry("widget", field="widgets.kind")
    reg.register("sprocket", 1)
    reg.register("gear", 2)
    with pytest.raises(InputError) as err:
        reg.get("sprockett", source="exp.yaml")
    assert str(err.value) == ("exp.yaml: widgets.kind: unknown widget 'sprockett'; did you mean 'sprocket'? "
                              "(known: gear, sprocket)")
    with pytest.raises(InputError, match="other.field"):
        reg.get("x", field="other.field")


def test_normalised_names_and_independent_copies():
    reg: Registry[int] = Registry("dataset", normalize=lambda name: name.strip().lower())
    reg.register(" Digits ", 1)
    assert reg.get("DIGITS") == 1 and "digits" in reg and reg.names() == ["digits"]
    with pytest.raises(ValueError, match="already registered"):
        reg.register("digits", 2)
    copy = reg.copy()
    copy.register("mnist", 3)
    assert "mnist" in copy and "mnist" not in reg
