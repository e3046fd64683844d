"""Every registered search space runs through the shipped conformance suite."""

import pytest

from search_spaces import get_space, list_spaces
from search_spaces.testing import TINY_MBV3_DEFAULT_CHOICES, SearchSpaceConformance


@pytest.fixture(params=list_spaces())
def space(request):
    return get_space(request.param)


class TestRegisteredSpaces(SearchSpaceConformance):
    pass


@pytest.fixture(params=["mbv3-digits", "resnet-searchable-quant"])
def variant(request):
    if request.param == "mbv3-digits":
        # the tiny digits network plus the genes under test: elastic width and input resolution
        return get_space("mbv3", **TINY_MBV3_DEFAULT_CHOICES, width_mults=[0.75, 1.0], resolutions=[6, 8])
    return get_space("resnet", search_granularity=True, search_symmetry=True, w_bits=[2, 4, 8, 32])


class TestSpaceVariants(SearchSpaceConformance):
    """Options that add genes (width, resolution, granularity, symmetry) keep the contract."""

    @pytest.fixture
    def space(self, variant):
        return variant
