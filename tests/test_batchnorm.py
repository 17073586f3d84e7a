"""The label encoder's BatchNorm: per-frame statistics in rollouts, as the template."""
import pytest
import torch
import torch.nn as nn

from utils.batchnorm import FrameBatchNorm2d


def bn_pair(channels=6):
    torch.manual_seed(0)
    plain = nn.BatchNorm2d(channels)
    with torch.no_grad():
        plain.weight.uniform_(0.5, 1.5), plain.bias.normal_(0, 0.3)
        plain.running_mean.normal_(0, 0.3), plain.running_var.uniform_(0.5, 1.5)
    ours = FrameBatchNorm2d(channels)
    ours.load_state_dict(plain.state_dict())   # strict: checkpoints load both ways
    return plain, ours


def test_per_frame_statistics_are_the_templates_one_frame_batches():
    plain, ours = bn_pair()
    x = torch.rand(4, 6, 8, 16) * 3 + 1
    template = torch.cat([plain.train()(x[i:i + 1]) for i in range(4)])
    torch.testing.assert_close(ours.eval()(x), template, rtol=1e-5, atol=1e-5)
    channels_last = ours(x.to(memory_format=torch.channels_last))
    assert channels_last.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(channels_last, template, rtol=1e-5, atol=1e-5)


def test_bf16_activations_normalise_like_fp32():
    _, ours = bn_pair()
    x = torch.randn(2, 6, 8, 16) * 2 + 1
    out = ours.eval()(x.bfloat16())
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ours(x), rtol=2e-2, atol=2e-2)


def test_rollout_modes_never_update_running_statistics():
    for mode in ("frame", "running"):
        _, ours = bn_pair()
        ours.rollout_stats = mode
        before = [b.clone() for b in ours.buffers()]
        ours.eval()(torch.rand(3, 6, 8, 16))
        assert all(torch.equal(a, b) for a, b in zip(before, ours.buffers())), mode


@pytest.mark.parametrize("train_stats", ["batch", "frame"])
def test_training_updates_running_statistics_like_batchnorm(train_stats):
    plain, ours = bn_pair()
    ours.train_stats = train_stats
    x = torch.rand(3, 6, 8, 16)
    plain.train()(x), ours.train()(x)
    for a, b in zip(plain.buffers(), ours.buffers()):
        torch.testing.assert_close(a, b)


def test_per_frame_training_normalises_each_frame_alone():
    _, ours = bn_pair()
    ours.train_stats = "frame"
    x = torch.rand(3, 6, 8, 16)
    alone = torch.cat([ours.train()(x[i:i + 1]) for i in range(3)])
    torch.testing.assert_close(ours(x), alone)


def test_invalid_statistics_are_refused():
    with pytest.raises(ValueError, match="rollout_stats"):
        FrameBatchNorm2d(4, rollout_stats="batch")
