"""The fast paths compute what the naive template loop computes.

VAE_Model.forward encodes every frame once and batches the encoders and the
posterior over the clip; VAE_Model.rollout runs all sequences as one batch.
tests/template_reference.py holds the naive one-frame-at-a-time loops they are
timed against; here both run in fp32 on the same weights and the same noise.

Rollouts are compared with the template itself: its networks, its plain
BatchNorm in training mode, one sequence and one frame per call. Training is
compared with ``--bn_train frame``, where each frame is normalised on its own
in both loops; with ``--bn_train batch`` the batched forward normalises over
the whole clip by design, the template over the frames of one time step.
"""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import Trainer
from conftest import assert_close_grads
from template_reference import TemplateModel, naive_clip_loss, naive_rollout
from utils.flags import default_args

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--F_dim", "16", "--L_dim", "16", "--N_dim", "4", "--D_out_dim", "24"]
B, T, H, W = 2, 6, 32, 64


def fp32_model(*flags):
    """The project's model as Trainer.py builds it, in fp32 (--amp off), with
    BatchNorm statistics that are not the identity's."""
    args = default_args(*TINY, "--amp", "off", *flags)
    model = Trainer.build_model(args)
    with torch.no_grad():
        for p in model.Gaussian_Predictor[-1].parameters():   # zero at init: z would not matter
            p.normal_(0, 0.1)
        norm = model.label_transformation[2]
        norm.weight.uniform_(0.5, 1.5), norm.bias.normal_(0, 0.1)
        norm.running_mean.normal_(0, 0.1), norm.running_var.uniform_(0.5, 1.5)
    return model


def reference_of(model, cls):
    reference = cls(model.args)
    reference.load_state_dict(model.state_dict())   # strict: the same keys both ways
    return reference


def loss_and_grads(model, compute):
    model.zero_grad(set_to_none=True)
    loss, mse, kl = compute()
    loss.backward()
    return (loss.detach(), mse, kl), [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("forcing", [True, False, [True, False, False, True, False]],
                         ids=["tf_on", "tf_off", "tf_per_frame"])
def test_forward_matches_naive_loop(forcing, channels_last):
    torch.manual_seed(0)
    layout = "--channels_last" if channels_last else "--no-channels_last"
    model = fp32_model(layout, "--bn_train", "frame").train()
    reference = reference_of(model, Trainer.VAE_Model).train()
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
    model = fp32_model()
    img, label = torch.rand(B, T, 3, H, W), torch.rand(B, T, 3, H, W)
    noise = torch.randn(B, T - 1, 4, H, W)
    with torch.no_grad():
        mses = [model(img, label, f, 0.3, noise)[1].item()
                for f in (True, False, [True, False, False, True, False])]
    assert len(set(mses)) == 3


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
def test_batched_rollout_gives_the_templates_frames(channels_last):
    """Three sequences in one batch, labels encoded 7 steps per call, against the
    template's loop on its own networks: the same frames in fp32."""
    torch.manual_seed(0)
    model = fp32_model("--channels_last" if channels_last else "--no-channels_last").train()
    template = reference_of(model, TemplateModel)
    first, labels = torch.rand(3, 3, H, W), torch.rand(3, 20, 3, H, W)
    noise = torch.randn(3, 19, 4, H, W)
    running = [b.clone() for b in model.buffers()]
    batched = model.rollout(first, labels, noise=noise, chunk=7)
    torch.testing.assert_close(batched, naive_rollout(template, first, labels, noise),
                               rtol=1e-5, atol=1e-5)
    assert model.training, "the rollout restores the training mode"
    assert all(torch.equal(a, b) for a, b in zip(running, model.buffers())), \
        "a rollout must not touch the running statistics"


def test_running_statistics_rollout_is_pytorch_eval_mode():
    """--bn_rollout running is the model.eval() of a plain BatchNorm."""
    torch.manual_seed(0)
    model = fp32_model("--bn_rollout", "running")
    template = reference_of(model, TemplateModel).eval()
    first, labels = torch.rand(2, 3, H, W), torch.rand(2, 5, 3, H, W)
    noise = torch.randn(2, 4, 4, H, W)
    got = model.rollout(first, labels, noise=noise)
    prev, want = first, [first]
    with torch.no_grad():
        for t in range(1, 5):
            prev = Trainer.apply_output_activation(template.Generator(template.Decoder_Fusion(
                template.frame_transformation(prev), template.label_transformation(labels[:, t]),
                noise[:, t - 1])), template.args.output_activation)
            want.append(prev)
    torch.testing.assert_close(got, torch.stack(want, dim=1), rtol=1e-5, atol=1e-5)


def test_benchmark_quick_run_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    # One thread: on a shared 2-core machine a second thread mostly waits.
    subprocess.run([sys.executable, "benchmarks/benchmark.py", "--quick", "--device", "cpu",
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
