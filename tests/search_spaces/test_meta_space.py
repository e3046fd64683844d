"""SpaceEvo's meta-space: candidate strings round trip, bad strings name the position, candidates conform."""

import numpy as np
import pytest

from search_spaces import InputError, get_space
from search_spaces.meta import (BLOCK_TYPES, MACROS, CandidateSpace, all_combos, parse_candidate,
                                uniform_candidates)
from search_spaces.testing import SearchSpaceConformance

# every block type appears in some stage of these, with different windows (tiny macro: two stages)
CANDIDATES = ["c10-0123-0120", "c10-4512-1012", "tiny-01-10", "tiny-23-01", "tiny-45-11"]


@pytest.mark.parametrize("text", CANDIDATES + ["c10-5555-1222", "c10-0000-0000"])
def test_string_round_trip(text):
    parsed = parse_candidate(text)
    assert str(parsed) == text
    assert parse_candidate(str(parsed)) == parsed
    space = get_space("spaceevo", candidate=text)
    assert space.options()["candidate"] == text


@pytest.mark.parametrize("text, position, allowed", [
    ("c10-1294-0120", 7, "0-5"),      # block digit 9 in stage s3
    ("c10-12x4-0120", 7, "0-5"),      # not a digit
    ("c10-1234-0130", 12, "0-2"),     # window digit 3 in stage s3 (three windows there)
    ("c10-1234-2000", 10, "0-1"),     # stage s1 has two windows
    ("tiny-03-21", 9, "0-1"),
])
def test_bad_digit_names_position_and_allowed_digits(text, position, allowed):
    with pytest.raises(InputError) as err:
        parse_candidate(text)
    message = str(err.value)
    assert f"position {position} " in message and f"digit {allowed}" in message
    assert text[position - 1] in message


def test_block_digit_error_lists_the_block_types():
    with pytest.raises(InputError, match="0=MBv1-dual.*5=FusedMBConv"):
        parse_candidate("c10-6000-0000")


@pytest.mark.parametrize("text, expected", [
    ("c10-123-0120", "3 digits; macro 'c10' has 4 stages"),
    ("c10-1234-01201", "5 digits"),
    ("c10_1234_0120", "MACRO-BLOCKS-WINDOWS"),
    ("c11-1234-0120", "did you mean 'c10'"),
    (42, "MACRO-BLOCKS-WINDOWS"),
])
def test_malformed_strings_are_refused(text, expected):
    with pytest.raises(InputError, match=expected):
        parse_candidate(text)


def test_space_option_error_names_the_option():
    with pytest.raises(InputError, match=r"search_space\.options\.candidate.*position 5"):
        get_space("spaceevo", candidate="c10-9999-0000")


def test_uniform_seeds_and_combos():
    seeds = uniform_candidates("c10")
    assert len(seeds) == len(BLOCK_TYPES) * max(s.n_windows for s in MACROS["c10"].stages)
    assert all(len(set(c.blocks)) == 1 for c in seeds)
    combos = set(all_combos("c10"))
    assert all(set(c.combos()) <= combos for c in seeds)


def test_mutation_changes_one_block_type_and_one_window():
    rng = np.random.default_rng(0)
    parent = parse_candidate("c10-1111-1111")
    for _ in range(50):
        child = parent.mutated(rng)
        assert isinstance(child, CandidateSpace)
        assert sum(a != b for a, b in zip(parent.blocks, child.blocks)) == 1
        assert sum(a != b for a, b in zip(parent.windows, child.windows)) == 1
        parse_candidate(str(child))


def test_widths_come_from_the_window():
    space = get_space("spaceevo", candidate="c10-1111-0120")
    assert [space.stage_widths(i) for i in range(4)] == [(16, 24), (32, 40), (80, 96), (64, 96)]
    blocks = space.blocks(space.largest())
    assert [b.op for b in blocks[1:-1]] == ["mbconv"] * 8 and blocks[-2].out_ch == 96


@pytest.fixture(params=CANDIDATES)
def space(request):
    return get_space("spaceevo", candidate=request.param)


class TestCandidateSpaces(SearchSpaceConformance):
    """Candidates are ordinary spaces: the shipped conformance suite holds for each."""
