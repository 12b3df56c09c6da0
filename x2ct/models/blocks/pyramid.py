"""Multi-scale feature pyramid for 2D X-ray views (Lin et al. 2017, FPN).

A bottom-up encoder alone gives fine maps that only see a small neighbourhood; the top-down path hands the coarse
levels' whole-image context (where the lungs, spine and body outline are) back down to every finer level.
"""

from __future__ import annotations

from torch import Tensor, nn

from x2ct.models.blocks.conv import ConvNormAct
from x2ct.models.blocks.resample import Downsample, Upsample
from x2ct.models.blocks.residual import ResidualBlock


class MultiScaleFeaturePyramid(nn.Module):
    """``(B, in_channels, H, W) -> [(B, C_i, H / 2^i, W / 2^i) for i in range(num_scales)]``, finest first.

    Bottom-up: a stem (3x3 ConvNormAct + ResidualBlock) at full resolution with ``base_channels``, then
    ``num_scales - 1`` stages (stride-2 ``Downsample`` + ResidualBlock), stage ``i`` with ``base_channels * 2^i``.
    Top-down, from the coarsest level: ``m_i = lateral_i(c_i) + up_i(m_{i+1})`` with ``lateral_i`` a plain 1x1
    convolution and ``up_i`` an ``Upsample`` (bilinear x2 then 3x3 ConvNormAct, which also changes the width when
    levels differ); each output is ``p_i = smooth_i(m_i)``, a 3x3 ConvNormAct that damps upsampling aliasing.

    Output widths ``C_i`` (also in ``self.out_channels: list[int]``): ``base_channels * 2^i`` by default, or
    ``out_channels`` at every level when it is given (the classic FPN choice of one width).

    ``H`` and ``W`` must be divisible by ``2^(num_scales - 1)`` so that every level is exactly half the one above.
    """

    def __init__(self, in_channels: int = 1, base_channels: int = 32, num_scales: int = 4,
                 out_channels: int | None = None, norm: str = "instance", act: str = "leaky_relu") -> None:
        super().__init__()
        if num_scales < 1:
            raise ValueError(f"MultiScaleFeaturePyramid: num_scales must be >= 1, got {num_scales}")
        self.in_channels, self.num_scales = in_channels, num_scales
        widths = [base_channels * 2**i for i in range(num_scales)]
        self.out_channels: list[int] = [out_channels] * num_scales if out_channels is not None else list(widths)

        self.stem = nn.Sequential(ConvNormAct(2, in_channels, widths[0], norm=norm, act=act),
                                  ResidualBlock(2, widths[0], norm=norm, act=act))
        self.stages = nn.ModuleList(
            nn.Sequential(Downsample(2, widths[i - 1], widths[i], norm=norm, act=act),
                          ResidualBlock(2, widths[i], norm=norm, act=act))
            for i in range(1, num_scales))
        self.lateral = nn.ModuleList(nn.Conv2d(w, c, kernel_size=1) for w, c in zip(widths, self.out_channels,
                                                                                     strict=True))
        # up[i] brings level i + 1 to level i
        self.up = nn.ModuleList(Upsample(2, self.out_channels[i + 1], self.out_channels[i], norm=norm, act=act)
                                for i in range(num_scales - 1))
        self.smooth = nn.ModuleList(ConvNormAct(2, c, c, norm=norm, act=act) for c in self.out_channels)

    def forward(self, x: Tensor) -> list[Tensor]:
        factor = 2 ** (self.num_scales - 1)
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"MultiScaleFeaturePyramid: expected (B, {self.in_channels}, H, W), "
                             f"got {tuple(x.shape)}")
        if x.shape[-2] % factor or x.shape[-1] % factor:
            raise ValueError(f"MultiScaleFeaturePyramid: input size {x.shape[-2]}x{x.shape[-1]} must be divisible "
                             f"by {factor} (2^(num_scales - 1), num_scales={self.num_scales})")
        bottom_up = [self.stem(x)]
        for stage in self.stages:
            bottom_up.append(stage(bottom_up[-1]))
        merged = self.lateral[-1](bottom_up[-1])
        outputs = [self.smooth[-1](merged)]
        for i in range(self.num_scales - 2, -1, -1):
            merged = self.lateral[i](bottom_up[i]) + self.up[i](merged)
            outputs.append(self.smooth[i](merged))
        return outputs[::-1]
