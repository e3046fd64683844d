"""Every registered search space runs through the shipped conformance suite."""

import pytest

from search_spaces import get_space, list_spaces
from search_spaces.testing import SearchSpaceConformance


@pytest.fixture(params=list_spaces())
def space(request):
    return get_space(request.param)


class TestRegisteredSpaces(SearchSpaceConformance):
    pass


@pytest.fixture(params=["mbv3-digits", "resnet-searchable-quant"])
def variant(request):
    if request.param == "mbv3-digits":
        return get_space("mbv3", in_channels=1, image_size=8, stem_channels=8, stage_channels=[16, 24],
                         stage_strides=[1, 2], stage_se=[False, True], stage_act=["relu", "hswish"],
                         width_mults=[0.75, 1.0], resolutions=[6, 8], head_channels=64)
    return get_space("resnet", search_granularity=True, search_symmetry=True, w_bits=[2, 4, 8, 32])


class TestSpaceVariants(SearchSpaceConformance):
    """Options that add genes (width, resolution, granularity, symmetry) keep the contract."""

    @pytest.fixture
    def space(self, variant):
        return variant
