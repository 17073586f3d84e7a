"""Every device branch, reached on a CPU by faking what the device reports: the
precision --amp auto picks, device selection, autocast, pinned copies, --compile's
refusals, and fp16 with its gradient scaler."""
import contextlib
import math

import pytest
import torch

import Trainer
from conftest import TINY
from utils import runtime
from utils.checkpoint import load_checkpoint
from utils.errors import UserError
from utils.flags import default_args
from utils.training import MAX_SKIPPED_IN_A_ROW


@pytest.fixture
def fresh_amp():
    """resolve_amp and fp16_trains_on cache per device type: forget before and after."""
    caches = (runtime.resolve_amp, runtime.fp16_trains_on)   # before a test fakes one
    for cached in caches:
        cached.cache_clear()
    yield
    for cached in caches:
        cached.cache_clear()


def fake_gpu(monkeypatch, capability, bf16=None, count=1):
    """A CUDA device of ``capability`` (major, minor), ``count`` of them."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Fake GPU")
    native = capability >= (8, 0) if bf16 is None else bf16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: native)
    selected = []
    monkeypatch.setattr(torch.cuda, "set_device", selected.append)
    return selected


# --------------------------------------------------------------------------- precision
@pytest.mark.parametrize("capability, card, expected", [
    ((6, 0), "P100", "off"), ((7, 0), "V100", "fp16"), ((7, 5), "T4", "fp16"),
    ((8, 0), "A100", "bf16"), ((8, 6), "RTX 30xx", "bf16"), ((9, 0), "H100", "bf16")])
def test_amp_auto_by_cuda_compute_capability(monkeypatch, fresh_amp, capability, card, expected):
    fake_gpu(monkeypatch, capability)
    assert runtime.resolve_amp("auto", "cuda") == expected, card
    assert runtime.resolve_amp("off", "cuda") == "off"
    line = runtime.describe_precision("auto", "cuda")
    assert line.startswith(f"precision: {expected.replace('off', 'fp32')}")
    if expected == "fp16":
        assert "gradient scaler" in line


def test_amp_auto_is_fp16_where_a_new_card_reports_no_native_bf16(monkeypatch, fresh_amp):
    fake_gpu(monkeypatch, (8, 0), bf16=False)
    assert runtime.resolve_amp("auto", "cuda") == "fp16"


def test_amp_auto_is_fp32_on_mps(fresh_amp):
    assert runtime.resolve_amp("auto", "mps") == "off"
    assert runtime.describe_precision("auto", "mps") == \
        "precision: fp32 (--amp auto: this mps has no native bf16)"


def test_fp32_builds_no_autocast_context(monkeypatch, fresh_amp):
    """torch 2.4 has no MPS autocast: fp32 must not ask for one, on any device type."""
    def no_autocast(*args, **kwargs):
        raise RuntimeError("autocast is not available for this device type")
    monkeypatch.setattr(torch, "autocast", no_autocast)
    for device_type in ("mps", "cpu", "cuda"):
        assert isinstance(runtime.autocast("off", device_type), contextlib.nullcontext)
    model = Trainer.VAE_Model(default_args(*TINY, "--amp", "off"))
    with model.autocast():
        model.rollout(torch.rand(1, 3, 32, 64), torch.rand(1, 3, 3, 32, 64))
    with pytest.raises(RuntimeError):   # the fake is in force: bf16 would ask for it
        runtime.autocast("bf16", "cpu")


# --------------------------------------------------------------------------- devices
def test_cuda_devices_are_checked_and_selected_first(monkeypatch):
    selected = fake_gpu(monkeypatch, (7, 5), count=2)
    assert runtime.resolve_device("cuda", gpu=1) == torch.device("cuda", 1)
    assert runtime.resolve_device("cuda:1") == torch.device("cuda", 1)
    assert runtime.resolve_device("auto") == torch.device("cuda", 0)
    assert selected == [1, 1, 0]   # what later CUDA queries (precision, pinning) look at
    for name, gpu, named in (("cuda", 2, "--gpu 2"), ("cuda:2", 0, "--device cuda:2"),
                             ("cuda:x", 0, "--device cuda:x"), ("cuda", -1, "--gpu -1")):
        with pytest.raises(UserError, match=named.replace("-", r"\-")) as error:
            runtime.resolve_device(name, gpu)
        assert "2 CUDA device(s)" in str(error.value) or "cuda:N" in str(error.value)
    assert selected == [1, 1, 0]


def test_mps_is_resolved_where_available(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert runtime.resolve_device("auto") == torch.device("mps")
    assert runtime.resolve_device("mps") == torch.device("mps")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert runtime.resolve_device("auto") == torch.device("cpu")
    with pytest.raises(UserError, match="--device mps"):
        runtime.resolve_device("mps")
    with pytest.raises(UserError, match="--device cuda"):
        runtime.resolve_device("cuda")


class Spy:
    def to(self, device, non_blocking=False):
        self.copied = (torch.device(device), non_blocking)
        return self


@pytest.mark.parametrize("device, pinned", [("cuda:0", True), ("mps", False), ("cpu", False)])
def test_copies_are_non_blocking_only_from_pinned_memory(device, pinned):
    assert runtime.pins_memory(torch.device(device)) is pinned
    assert runtime.to_device(Spy(), torch.device(device)).copied == (torch.device(device), pinned)


# --------------------------------------------------------------------------- --compile
class FakeCudaModel:
    device = torch.device("cuda", 0)


def test_compile_is_refused_below_compute_capability_7(monkeypatch):
    fake_gpu(monkeypatch, (6, 0))
    with pytest.raises(UserError, match="--compile: this GPU .* 6.0"):
        Trainer.compile_networks(FakeCudaModel(), default_args("--compile"))


def test_cuda_graph_modes_need_a_torch_that_runs_rollouts_eagerly(monkeypatch):
    monkeypatch.delattr(torch.compiler, "set_stance", raising=False)
    with pytest.raises(UserError, match="--compile_mode reduce-overhead"):
        Trainer.compile_networks(Trainer.VAE_Model(default_args(*TINY)),
                                 default_args("--compile", "--compile_mode", "reduce-overhead"))


def test_cuda_graph_modes_mark_each_step_and_run_rollouts_eagerly(monkeypatch):
    """A CUDA graph's replay overwrites the outputs that a rollout keeps (label features,
    the frame fed back): rollouts run eagerly, each training step is marked."""
    limit = "recompile_limit" if hasattr(torch._dynamo.config, "recompile_limit") \
        else "cache_size_limit"
    monkeypatch.setattr(torch._dynamo.config, limit, 8)
    model = Trainer.VAE_Model(default_args(*TINY))
    for name in Trainer.NETWORK_NAMES:   # compiling itself is not under test here
        monkeypatch.setattr(getattr(model, name), "compile", lambda mode: None)
    Trainer.compile_networks(model, default_args("--compile", "--compile_mode", "max-autotune"))
    assert model.cuda_graphs and getattr(torch._dynamo.config, limit) >= Trainer.RECOMPILE_LIMIT
    stances, marks = [], []
    monkeypatch.setattr(torch.compiler, "set_stance",
                        lambda stance: stances.append(stance) or contextlib.nullcontext())
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: marks.append(1))
    clip = torch.rand(2, 3, 3, 32, 64)
    model.training_one_step(clip, clip, False)
    model.training_one_step(clip, clip, False)
    assert marks == [1, 1] and stances == []
    model.rollout(clip[:, 0], clip)
    model.predict_from_truth(clip, clip)
    assert stances == ["force_eager"] * 2
    plain = Trainer.VAE_Model(default_args(*TINY))
    plain.rollout(clip[:, 0], clip)
    assert stances == ["force_eager"] * 2   # without CUDA graphs, nothing changes


# --------------------------------------------------------------------------- fp16
def losses_of(args, steps, inject_at=None):
    """Train a tiny model ``steps`` steps on one clip; an inf gradient at ``inject_at``.
    (model, losses, steps skipped at each step, steps that changed no weight)."""
    torch.manual_seed(0)
    model = Trainer.VAE_Model(args)
    trainer = model.trainer
    # fp16 is emulated on a CPU, and slow: a small clip.
    clip = torch.rand(2, 3, 3, 16, 32, generator=torch.Generator().manual_seed(0))
    weight = model.Generator[-1].weight
    losses, skips, unchanged = [], [], []
    for step in range(steps):
        hook = weight.register_hook(lambda g: torch.full_like(g, math.inf)) \
            if step == inject_at else None
        before, skipped = [p.clone() for p in model.parameters()], trainer.skipped_steps
        losses.append(model.training_one_step(clip, clip, True)[0])
        skips.append(trainer.skipped_steps - skipped)
        unchanged.append(all(torch.equal(b, p) for b, p in zip(before, model.parameters())))
        if hook is not None:
            hook.remove()
    return model, losses, skips, unchanged


def test_fp16_trains_with_a_scaler_and_skips_an_overflowed_step(tmp_path, fresh_amp):
    flags = [*TINY, "--lr", "0.001", "--warmup_steps", "0"]
    args = default_args(*flags, "--amp", "fp16", "--save_root", str(tmp_path))
    if not runtime.fp16_trains_on("cpu"):
        with pytest.raises(UserError, match="--amp fp16"):
            Trainer.VAE_Model(args).trainer
        return
    # The scale starts high (65536) and halves on each overflow, so some early steps
    # skip too; step 18 overflows by an injected inf gradient.
    model, losses, skips, unchanged = losses_of(args, 24, inject_at=18)
    trainer = model.trainer
    assert trainer.scaler.is_enabled() and skips[18] == 1 and unchanged[18]
    assert [bool(s) for s in skips] == unchanged   # a step skipped is a step not taken
    assert trainer.skipped_steps == sum(skips) < 12 and trainer.skipped_in_a_row == 0
    # The steps taken follow fp32's trajectory, and the loss falls.
    taken = [loss for i, loss in enumerate(losses) if i == 0 or not skips[i - 1]]
    fp32 = losses_of(default_args(*flags, "--amp", "off"), len(taken))[1]
    assert taken == pytest.approx(fp32, rel=0.02)
    assert losses[-1] < 0.9 * losses[0]
    model.save(tmp_path / "fp16.ckpt")
    state = load_checkpoint(tmp_path / "fp16.ckpt")["scaler"]
    assert state["scale"] == trainer.scaler.get_scale() and state["_growth_tracker"] > 0


def test_fp16_without_a_scaler_that_runs_is_an_error(monkeypatch, fresh_amp):
    monkeypatch.setattr(runtime, "fp16_trains_on", lambda device_type: False)
    with pytest.raises(UserError, match="--amp fp16: fp16 needs a gradient scaler"):
        Trainer.VAE_Model(default_args(*TINY, "--amp", "fp16")).trainer
    assert Trainer.VAE_Model(default_args(*TINY, "--amp", "off")).trainer.scaler.is_enabled() \
        is False


def test_fp16_stops_when_every_scale_overflows():
    trainer = Trainer.VAE_Model(default_args(*TINY)).trainer
    for _ in range(MAX_SKIPPED_IN_A_ROW - 1):
        trainer.count_skip(True)
    trainer.count_skip(False)   # one good step starts the count again
    for _ in range(MAX_SKIPPED_IN_A_ROW - 1):
        trainer.count_skip(True)
    with pytest.raises(UserError, match=f"overflowed on {MAX_SKIPPED_IN_A_ROW} steps in a row"):
        trainer.count_skip(True)
