"""The SpaceEvo block types (every one, new ops included) pass the supernet extraction conformance suite at 8x8."""

import pytest
import torch

from search_spaces import block_costs, get_space
from search_spaces.meta import BLOCK_TYPES
from supernets.blocks import build_block
from supernets.testing import SupernetConformance

# tiny macro: two stages, so three candidates cover all six block types (and both windows of each stage)
CANDIDATES = ["tiny-01-00", "tiny-23-11", "tiny-45-01"]


@pytest.fixture(params=CANDIDATES)
def space(request):
    torch.set_num_threads(1)
    return get_space("spaceevo", candidate=request.param, in_channels=1, image_size=8)


class TestMetaBlockSupernets(SupernetConformance):
    pass


def test_candidates_cover_every_block_type():
    covered = {int(d) for c in CANDIDATES for d in c.split("-")[1]}
    assert covered == set(range(len(BLOCK_TYPES)))


@pytest.mark.parametrize("candidate", CANDIDATES)
def test_static_parameters_match_costs(candidate):
    space = get_space("spaceevo", candidate=candidate, in_channels=1, image_size=8)
    for block in space.blocks(space.largest()):
        module = build_block(block)
        assert sum(p.numel() for p in module.parameters()) == block_costs(block).params, block.key()


def test_nsr_is_zero_for_a_perfect_student_and_one_for_the_per_map_mean():
    from supernets.spaceevo.nsr import nsr

    t = torch.randn(4, 6, 5, 5)
    assert float(nsr(t, t)) == 0.0
    mean = t.mean(dim=(2, 3), keepdim=True).expand_as(t)
    assert float(nsr(t, mean, eps=0.0)) == pytest.approx(1.0, rel=1e-5)
    assert float(nsr(t, mean)) < 1.0  # eps only ever shrinks a term


def test_distill_combo_scores_sampled_substages():
    from search_spaces.meta import MACROS
    from supernets.spaceevo.nsr import DistillSettings, distill_combo

    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    x, t = torch.randn(48, 8, 8, 8, generator=gen), torch.randn(48, 24, 8, 8, generator=gen)  # tiny stage s1
    settings = DistillSettings(steps=3, batch_size=8, rows=5, calib_batches=1)
    rows = distill_combo(MACROS["tiny"], 0, 5, 1, (x[:32], x[32:]), (t[:32], t[32:]), settings)
    again = distill_combo(MACROS["tiny"], 0, 5, 1, (x[:32], x[32:]), (t[:32], t[32:]), settings)
    assert len(rows) == 5 and [r.nsr for r in rows] == [r.nsr for r in again]
    assert all(r.nsr > 0 and r.macs > 0 and r.blocks[0].in_ch == 8 and r.blocks[0].op == "fused_mbconv"
               for r in rows)
    assert {r.substage.width for r in rows} <= {16, 24} and rows[0].substage.width == 24  # largest first
