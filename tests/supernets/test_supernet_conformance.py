"""Every registered CNN space passes the supernet extraction conformance suite (at 8x8 input)."""

import pytest
import torch

from search_spaces import get_space, list_spaces
from search_spaces.testing import TINY_MBV3_DEFAULT_CHOICES
from supernets.testing import SupernetConformance

CNN_SPACES = [name for name in list_spaces() if name in ("mbv3", "resnet")]


@pytest.fixture(params=CNN_SPACES)
def space(request):
    torch.set_num_threads(1)
    return get_space(request.param, in_channels=1, image_size=8)


@pytest.fixture(params=["mbv3-elastic-width-res", "resnet-se-modes"])
def variant(request):
    if request.param.startswith("mbv3"):
        # the tiny digits network plus what is under test: elastic width and resolution, 2-bit and float weights
        return get_space("mbv3", **TINY_MBV3_DEFAULT_CHOICES, width_mults=[0.75, 1.0], resolutions=[6, 8],
                         w_bits=[2, 4, 8, 32])
    return get_space("resnet", in_channels=1, image_size=8, stem_channels=8, stage_channels=[16, 32],
                     stage_strides=[1, 2], se=True, w_bits=[3, 8], search_granularity=True, search_symmetry=True)


class TestRegisteredSpaces(SupernetConformance):
    pass


class TestVariants(SupernetConformance):
    @pytest.fixture
    def space(self, variant):
        return variant
