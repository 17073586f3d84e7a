"""The five networks of the conditional VAE, as the course template defines them.

Their structure is frozen: users' checkpoints, written by the template or by this
project, depend on these exact layers, names and channel counts.

Every network is an ``nn.Sequential`` whose items are listed in the template's
order, so state_dict keys such as ``Generator.7.weight`` stay valid.
"""
import torch
import torch.nn as nn

from .layers import DepthConvBlock, ResidualBlock

__all__ = ["Generator", "RGB_Encoder", "Label_Encoder", "Gaussian_Predictor", "Decoder_Fusion"]


class Generator(nn.Sequential):
    """Fused features (B, input_nc, H, W) -> frame (B, 3, H, W), no activation.

    ``output_nc`` is accepted for the template's signature; the output always
    has 3 channels.
    """

    def __init__(self, input_nc, output_nc):
        n = input_nc
        super().__init__(
            DepthConvBlock(n, n),
            ResidualBlock(n, n // 2),
            DepthConvBlock(n // 2, n // 2),
            ResidualBlock(n // 2, n // 4),
            DepthConvBlock(n // 4, n // 4),
            ResidualBlock(n // 4, n // 8),
            DepthConvBlock(n // 8, n // 8),
            nn.Conv2d(n // 8, 3, 1),
        )


class RGB_Encoder(nn.Sequential):
    """Frame (B, in_chans, H, W) -> features (B, out_chans, H, W)."""

    def __init__(self, in_chans, out_chans):
        o = out_chans
        super().__init__(
            ResidualBlock(in_chans, o // 8),
            DepthConvBlock(o // 8, o // 8),
            ResidualBlock(o // 8, o // 4),
            DepthConvBlock(o // 4, o // 4),
            ResidualBlock(o // 4, o // 2),
            DepthConvBlock(o // 2, o // 2),
            nn.Conv2d(o // 2, o, 3, padding=1),
        )


class Label_Encoder(nn.Sequential):
    """Pose image (B, in_chans, H, W) -> features (B, out_chans, H, W)."""

    def __init__(self, in_chans, out_chans, norm_layer=nn.BatchNorm2d):
        o = out_chans
        super().__init__(
            nn.ReflectionPad2d(3),
            nn.Conv2d(in_chans, o // 2, 7, padding=0),
            norm_layer(o // 2),
            # The template passes True as the first argument, i.e. a negative
            # slope of 1.0 (an identity). Kept: outputs must match the template.
            nn.LeakyReLU(True),
            ResidualBlock(in_ch=o // 2, out_ch=o),
        )


class Gaussian_Predictor(nn.Sequential):
    """Posterior q(z | frame, pose): features -> (z, mu, logvar)."""

    def __init__(self, in_chans=48, out_chans=96):
        o = out_chans
        super().__init__(
            ResidualBlock(in_chans, o // 4),
            DepthConvBlock(o // 4, o // 4),
            ResidualBlock(o // 4, o // 2),
            DepthConvBlock(o // 2, o // 2),
            ResidualBlock(o // 2, o),
            nn.LeakyReLU(True),  # slope 1.0, as in the template
            nn.Conv2d(o, 2 * o, 1),
        )

    @staticmethod
    def reparameterize(mu, logvar):
        """z = mu + eps * sigma with eps ~ N(0, I); the network predicts log-variance."""
        std = torch.exp(0.5 * logvar)
        return mu + torch.randn_like(std) * std

    def forward(self, img, label):
        mu, logvar = super().forward(torch.cat([img, label], dim=1)).chunk(2, dim=1)
        return self.reparameterize(mu, logvar), mu, logvar


class Decoder_Fusion(nn.Sequential):
    """(frame features, pose features, z) -> fused features for the Generator."""

    def __init__(self, in_chans=48, out_chans=96):
        i, o = in_chans, out_chans
        super().__init__(
            DepthConvBlock(i, i),
            ResidualBlock(i, i // 4),
            DepthConvBlock(i // 4, i // 2),
            ResidualBlock(i // 2, i // 2),
            DepthConvBlock(i // 2, o // 2),
            nn.Conv2d(o // 2, o, 1, 1),
        )

    def forward(self, img, label, parm):
        return super().forward(torch.cat([img, label, parm], dim=1))
