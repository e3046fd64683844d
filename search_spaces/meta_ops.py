"""Cost layers of the SpaceEvo block types that the original ops do not cover.

MBv2 and MBv3+SE are ``mbconv`` (relu without SE, hswish with SE) and ResNet(+SE) is ``bottleneck``
(with ``se``); MobileNetV1-dual (``dsconv_dual``) and FusedMBConv (``fused_mbconv``) are new op types,
registered here so every cost, table and supernet path sees them as ordinary blocks.
"""

from __future__ import annotations

from .blocks import BlockSpec
from .costs import Layer, _se_layers, register_op_layers

__all__: list[str] = []


@register_op_layers("dsconv_dual")
def _dsconv_dual_layers(b: BlockSpec) -> list[Layer]:
    layers = [Layer(b.in_ch, b.in_ch, b.kernel, b.out_size, groups=b.in_ch), Layer(b.in_ch, b.out_ch, 1, b.out_size),
              Layer(b.out_ch, b.out_ch, b.kernel, b.out_size, groups=b.out_ch),
              Layer(b.out_ch, b.out_ch, 1, b.out_size)]
    if b.shortcut == "proj":
        layers.append(Layer(b.in_ch, b.out_ch, 1, b.out_size))
    return layers


@register_op_layers("fused_mbconv")
def _fused_mbconv_layers(b: BlockSpec) -> list[Layer]:
    layers = [Layer(b.in_ch, b.mid_ch, b.kernel, b.out_size)]
    if b.se:
        layers += _se_layers(b.mid_ch)
    return layers + [Layer(b.mid_ch, b.out_ch, 1, b.out_size)]
