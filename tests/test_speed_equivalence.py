"""The fast paths compute what the naive template loop computes.

VAE_Model.forward encodes every frame once and batches the encoders and the
posterior over the clip; VAE_Model.rollout runs all sequences as one batch.
tools/benchmark.py holds the naive one-frame-at-a-time references they are timed
against; here both run in fp32 on the same weights and the same noise.

The Label_Encoder has a BatchNorm: in train mode, per-frame calls (naive) and one
call over the clip (batched) normalise with different batch statistics by design.
The comparisons therefore run with the model in eval mode (BatchNorm uses its
running statistics); gradients are still computed.
"""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import Trainer
from tools.benchmark import naive_clip_loss, naive_rollout

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--F_dim", "16", "--L_dim", "16", "--N_dim", "4", "--D_out_dim", "24"]
B, T, H, W = 2, 6, 32, 64


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors gain nothing from a second thread, and on a shared 2-core
    machine its synchronisation waits dominate the run time."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def fp32_models(*flags):
    """The project's model as Trainer.py builds it, in fp32 (--amp off), and the
    naive reference holding the same weights."""
    args = Trainer.parse_args(["--DR", "x", "--save_root", "y", *TINY, "--amp", "off", *flags])
    model = Trainer.build_model(args)
    reference = Trainer.VAE_Model(args)
    reference.load_state_dict(model.state_dict())
    return model.eval(), reference.eval()


def loss_and_grads(model, compute):
    model.zero_grad(set_to_none=True)
    loss, mse, kl = compute()
    loss.backward()
    return (loss.detach(), mse, kl), [p.grad.clone() for p in model.parameters()]


def assert_close_grads(grads, expected):
    """Gradients equal to fp32 accuracy. Measured against fp64, the naive loop's own
    fp32 gradients are off by up to ~3e-5 (norm-wise, all parameters together) and
    ~4e-4 for a few tiny gradients that are sums with heavy cancellation (NCHW
    convolution backward); a wrong gradient would be off by O(1)."""
    flat = lambda tensors: torch.cat([t.flatten() for t in tensors])  # noqa: E731
    got, want = flat(grads), flat(expected)
    assert ((got - want).norm() / want.norm()).item() < 1e-4
    for i, (g, w) in enumerate(zip(grads, expected)):
        error = ((g - w).norm() / w.norm().clamp_min(1e-12)).item()
        assert error < 2e-3, f"parameter {i}: relative gradient error {error:.2e}"


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("forcing", [True, False, [True, False, False, True, False]],
                         ids=["tf_on", "tf_off", "tf_per_frame"])
def test_forward_matches_naive_loop(forcing, channels_last):
    torch.manual_seed(0)
    model, reference = fp32_models("--channels_last" if channels_last else "--no-channels_last")
    img, label = torch.rand(B, T, 3, H, W), torch.rand(B, T, 3, H, W)
    noise = torch.randn(B, T - 1, 4, H, W)
    got, grads = loss_and_grads(model, lambda: model(img, label, forcing, 0.3, noise))
    want, expected = loss_and_grads(
        reference, lambda: naive_clip_loss(reference, img, label, forcing, 0.3, noise))
    for g, w in zip(got, want):   # loss, MSE, KL
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)
    assert_close_grads(grads, expected)


def test_teacher_forcing_changes_the_prediction():
    """Guards the test above: the three forcing patterns take different paths."""
    torch.manual_seed(0)
    model, _ = fp32_models()
    img, label = torch.rand(B, T, 3, H, W), torch.rand(B, T, 3, H, W)
    noise = torch.randn(B, T - 1, 4, H, W)
    with torch.no_grad():
        mses = [model(img, label, f, 0.3, noise)[1].item()
                for f in (True, False, [True, False, False, True, False])]
    assert len(set(mses)) == 3


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
def test_batched_rollout_matches_naive_rollout(channels_last):
    torch.manual_seed(0)
    model, reference = fp32_models("--channels_last" if channels_last else "--no-channels_last")
    first, labels = torch.rand(3, 3, H, W), torch.rand(3, 20, 3, H, W)
    noise = torch.randn(3, 19, 4, H, W)
    batched = model.rollout(first, labels, noise=noise, chunk=7)
    torch.testing.assert_close(batched, naive_rollout(reference, first, labels, noise),
                               rtol=1e-5, atol=1e-5)


def test_benchmark_quick_run_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    # One thread: on a shared 2-core machine a second thread mostly waits.
    subprocess.run([sys.executable, "tools/benchmark.py", "--quick", "--device", "cpu",
                    "--threads", "1", "--json", str(out), *TINY, "--clip_len", "4",
                    "--rollout_frames", "6", "--test_sequences", "2", "--train_clips", "2",
                    "--repeats", "1", "--rollout_repeats", "1", "--matmul_size", "256"],
                   check=True, timeout=120, cwd=ROOT,
                   capture_output=True)
    results = json.loads(out.read_text())
    for key in ("train_speedup_vs_naive", "train_speedup_vs_naive_tf_on",
                "rollout_speedup_vs_naive", "train_gflops_per_s", "matmul_peak_gflops_per_s",
                "train_step_s", "rollout_s", "data_epoch_s", "submission_write_s",
                "train_peak_memory_mb", "rollout_peak_memory_mb", "device", "dims", "settings"):
        assert key in results, key
    assert results["dims"]["F_dim"] == 16 and results["rollout_frames"] == 6
    assert results["train_speedup_vs_naive"] > 0 and results["rollout_speedup_vs_naive"] > 0
