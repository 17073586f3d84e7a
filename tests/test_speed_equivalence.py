"""The fast paths compute what the naive template loop computes.

VAE_Model.forward encodes every frame once and batches the encoders and the
posterior over the clip; VAE_Model.rollout runs all sequences as one batch.
benchmarks/template_reference.py holds the naive one-frame-at-a-time loops they are
timed against; here both run in fp32 on the same weights and the same noise.

Rollouts are compared with the template itself: its networks, its plain
BatchNorm in training mode, one sequence and one frame per call. Training is
compared with ``--bn_train frame``, where each frame is normalised on its own
in both loops; with ``--bn_train batch`` the batched forward normalises over
the whole clip by design, the template over the frames of one time step.
"""
import functools
import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import Trainer
from conftest import assert_close_grads
from benchmarks.benchmark import build_models
from benchmarks.template_reference import TemplateModel, naive_clip_loss, naive_rollout
from utils.flags import default_args
from utils.metrics import REAL_TRAIN_FRAMES

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
    loss, terms = compute()
    loss.backward()
    return (loss.detach(), terms["mse"], terms["kl"]), [p.grad.clone() for p in model.parameters()]


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


def test_teacher_forcing_on_off_and_per_frame_are_prediction_from_truth_rollout_and_their_mix():
    """Guards the test above: the three forcing patterns take different paths, each
    the one the test split's tools name. Teacher forcing on predicts every frame from
    the true previous one (VAE_Model.predict_from_truth), off feeds the model's own frames back
    (VAE_Model.rollout), per frame switches between the two where it says.

    A fresh model's posterior is the prior (mu = 0): with eps = 0 its z is 0, the
    prior's mean that predict_from_truth and rollout(z_scale=0) use; --bn_train frame
    normalises as the rollouts do. With --output_activation none the generator's
    output is the predicted frame: a hook collects the frames the loss is of."""
    torch.manual_seed(0)
    args = Trainer.parse_args(["--DR", "x", "--save_root", "y", *TINY, "--amp", "off",
                               "--bn_train", "frame", "--output_activation", "none"])
    model = Trainer.VAE_Model(args)
    img, label = torch.rand(B, T, 3, H, W), torch.rand(B, T, 3, H, W)
    generated = []
    model.Generator.register_forward_hook(lambda module, inputs, out: generated.append(out))

    @torch.no_grad()
    def predicted(forcing):
        generated.clear()
        mse = model(img, label, forcing, 0.3, torch.zeros(B, T - 1, 4, H, W))[1]["mse"]
        frames = torch.cat(generated).unflatten(0, (T - 1, B)).transpose(0, 1)
        torch.testing.assert_close(mse, F.mse_loss(frames, img[:, 1:]))   # the loss's frames
        return frames

    stepped = model.predict_from_truth(img, label)
    rolled = model.rollout(img[:, 0], label, z_scale=0)
    # frames 1, 2 and 5 from the true previous frame; 3 and 4 rolled out from the
    # prediction of frame 2
    mixed = stepped.clone()
    mixed[:, 3:5] = model.rollout(stepped[:, 2], label[:, 2:5], z_scale=0)[:, 1:]
    close = functools.partial(torch.testing.assert_close, rtol=1e-5, atol=1e-6)
    close(predicted(True), stepped[:, 1:])
    close(predicted(False), rolled[:, 1:])
    close(predicted([True, True, False, False, True]), mixed[:, 1:])
    # The first frame is predicted from the truth either way; from the second on, the
    # paths differ (an untrained model depends little on its input: a small margin).
    close(rolled[:, 1], stepped[:, 1])
    assert (rolled[:, 2:] - stepped[:, 2:]).abs().max() > 1e-4
    assert (mixed[:, 3:5] - stepped[:, 3:5]).abs().max() > 1e-4


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


def test_the_benchmark_times_the_naive_loop_on_the_projects_model():
    """benchmarks/benchmark.py's naive reference holds the project's weights, in fp32: with
    the same z, its loop gives the project's rollout (one sequence, so the generator
    draws z in the same order), so the speed-ups compare the same computation."""
    model, reference = build_models([*TINY, "--amp", "off"], torch.device("cpu"))
    assert (reference.args.amp, reference.args.channels_last) == ("off", False)
    first, labels = torch.rand(1, 3, H, W), torch.rand(1, 6, 3, H, W)
    got = model.rollout(first, labels, generator=torch.Generator().manual_seed(0))
    want = naive_rollout(reference, first, labels, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_benchmark_quick_run_writes_consistent_json(tmp_path):
    out = tmp_path / "bench.json"
    # One thread: on a shared 2-core machine a second thread mostly waits.
    subprocess.run([sys.executable, "benchmarks/benchmark.py", "--quick", "--device", "cpu",
                    "--threads", "1", "--json", str(out), *TINY, "--clip_len", "4",
                    "--rollout_frames", "6", "--test_sequences", "2", "--train_clips", "2",
                    "--repeats", "3", "--rollout_repeats", "2", "--matmul_size", "256",
                    "--real_size_pairs", "2"],
                   check=True, timeout=120, cwd=ROOT, capture_output=True)
    r = json.loads(out.read_text())
    assert r["dims"]["F_dim"] == 16 and r["settings"]["project_flags"] == TINY
    # What was measured: 2 clips of 4 frames, 2 sequences of 6 frames, their 12 rows.
    assert (r["data_clips"], r["rollout_sequences"], r["rollout_frames"],
            r["submission_rows"]) == (2, 2, 6, 12)
    # Every figure is the median of its repeats, and each speed-up their ratio.
    median = lambda times: pytest.approx(statistics.median(times))  # noqa: E731
    for figures in ("train_step_s", "data_epoch_s"):
        raw = r[figures[:-len("_s")] + "_raw_s"]
        assert set(r[figures]) == set(raw)
        for name, times in raw.items():
            assert len(times) == 3 and r[figures][name] == median(times), name
    assert r["submission_write_s"] == median(r["submission_write_raw_s"])
    ts, rs, raw = r["train_step_s"], r["rollout_s"], r["rollout_raw_s"]
    assert r["train_speedup_vs_naive"] == pytest.approx(ts["naive_tf_off"] / ts["project_tf_off"])
    assert r["train_speedup_vs_naive_tf_on"] == pytest.approx(
        ts["naive_tf_on"] / ts["project_tf_on"])
    assert len(raw["project"]) == len(raw["naive_per_sequence"]) == 2
    assert rs["project"] == median(raw["project"])
    assert rs["naive"] == pytest.approx(2 * statistics.median(raw["naive_per_sequence"]))
    assert r["rollout_speedup_vs_naive"] == pytest.approx(rs["naive"] / rs["project"])
    # FLOPs: with teacher forcing off both encode every frame twice (as input and as a
    # prediction); with it on the project encodes each frame once, the naive loop twice.
    gf, rate = r["train_gflop_per_step"], r["train_gflops_per_s_by_variant"]
    assert gf["project_tf_off"] == pytest.approx(gf["naive_tf_off"])
    assert gf["project_tf_on"] < gf["naive_tf_on"]
    for name in ts:
        assert rate[name] == pytest.approx(gf[name] / ts[name]), name
    assert r["train_gflops_per_s"] == rate["project_tf_off"]
    real = r["real_size_loading"]
    assert real["pairs"] == 2
    assert real["cache_build_s"] == pytest.approx(real["measured_cache_s"] * REAL_TRAIN_FRAMES / 2)
    assert real["template_pass_s"] == pytest.approx(real["measured_template_s"] * REAL_TRAIN_FRAMES / 2)
