"""Building blocks of the course template's networks.

The structure (attribute names, layer order, channel arithmetic) is frozen:
checkpoints made here load into the template's model and vice versa. No block
changes the spatial size unless ``stride=2`` is asked for.
"""
import torch
import torch.nn as nn


class ResidualBlock(nn.Module):
    """Two 3x3 convolutions with a LeakyReLU after each, plus a shortcut."""

    def __init__(self, in_ch, out_ch, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1)
        self.leaky_relu = nn.LeakyReLU(negative_slope=0.01, inplace=True)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.skip = nn.Conv2d(in_ch, out_ch, 1, stride=stride) if in_ch != out_ch else None

    def forward(self, x):
        out = self.leaky_relu(self.conv1(x))
        out = self.leaky_relu(self.conv2(out))
        shortcut = x if self.skip is None else self.skip(x)
        return out + shortcut


class DepthConv(nn.Module):
    """Pointwise -> depthwise -> pointwise convolution with a shortcut."""

    def __init__(self, in_ch, out_ch, depth_kernel=3, stride=1, slope=0.01, inplace=False):
        super().__init__()
        self.conv1 = nn.Sequential(
            nn.Conv2d(in_ch, in_ch, 1),
            nn.LeakyReLU(negative_slope=slope, inplace=inplace),
        )
        self.depth_conv = nn.Conv2d(in_ch, in_ch, depth_kernel, stride=stride,
                                    padding=depth_kernel // 2, groups=in_ch)
        self.conv2 = nn.Conv2d(in_ch, out_ch, 1)
        if stride == 2:
            self.adaptor = nn.Conv2d(in_ch, out_ch, 2, stride=2)
        elif in_ch != out_ch:
            self.adaptor = nn.Conv2d(in_ch, out_ch, 1)
        else:
            self.adaptor = None

    def forward(self, x):
        shortcut = x if self.adaptor is None else self.adaptor(x)
        return self.conv2(self.depth_conv(self.conv1(x))) + shortcut


class ConvFFN(nn.Module):
    """Gated pointwise feed-forward block: x + W_out(a * act(b))."""

    def __init__(self, in_ch, slope=0.1, inplace=False):
        super().__init__()
        hidden = 2 * in_ch
        self.conv = nn.Conv2d(in_ch, 2 * hidden, 1)
        self.conv_out = nn.Conv2d(hidden, in_ch, 1)
        self.relu = nn.LeakyReLU(negative_slope=slope, inplace=inplace)

    def forward(self, x):
        value, gate = self.conv(x).chunk(2, dim=1)
        return x + self.conv_out(value * self.relu(gate))


class DepthConvBlock(nn.Module):
    """A DepthConv followed by a ConvFFN."""

    def __init__(self, in_ch, out_ch, depth_kernel=3, stride=1):
        super().__init__()
        self.block = nn.Sequential(
            DepthConv(in_ch, out_ch, depth_kernel, stride),
            ConvFFN(out_ch),
        )

    def forward(self, x):
        return self.block(x)
