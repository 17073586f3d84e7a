"""Multi-process training: torchrun + DistributedDataParallel on CPU (gloo)."""
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from conftest import assert_close_grads
from dataloader import epoch_loader
from Trainer import VAE_Model, build_model
from utils.flags import default_args
from tools.synthetic_dance import generate_dataset
from utils import runlog
from utils.checkpoint import load_checkpoint
from utils.errors import UserError
from utils.runtime import Distributed, setup_distributed
from utils.training import Training

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--F_dim", "8", "--L_dim", "8", "--N_dim", "4", "--D_out_dim", "16"]
TORCHRUN_ENV = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
# Two predicted frames from the ground truth and one from the model's own
# prediction: both decoder paths of VAE_Model.forward are covered.
FORCING, BETA, PER_RANK = [True, False, True], 0.5, 2


def tiny_args(*extra):
    return default_args("--device", "cpu", "--bn_train", "frame", *TINY, *extra)


def epoch_clips(args, rank, dataset, epoch, world_size=2):
    """The clips rank ``rank`` of ``world_size`` trains on in ``epoch``."""
    distributed = Distributed(rank, world_size, torch.device("cpu"))
    return [int(x) for (x,) in epoch_loader(dataset, args, epoch, distributed)]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def union_batch(args):
    """Clips, labels and posterior noise of both ranks: rank r takes rows [2r, 2r+2)."""
    g = torch.Generator().manual_seed(1234)
    B, T, H, W = 2 * PER_RANK, len(FORCING) + 1, 8, 16
    img = torch.rand(B, T, 3, H, W, generator=g)
    label = torch.rand(B, T, 3, H, W, generator=g)
    noise = torch.randn(B, T - 1, args.N_dim, H, W, generator=g)
    return img, label, noise


def gradients(model):
    return {name: p.grad.detach().clone() for name, p in model.named_parameters()}


def ddp_worker(rank, world_size, port, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}",
                            rank=rank, world_size=world_size)
    try:
        args = tiny_args()
        img, label, noise = union_batch(args)
        rows = slice(rank * PER_RANK, (rank + 1) * PER_RANK)
        distributed = Distributed(rank, world_size, torch.device("cpu"))
        model = build_model(args)
        ddp_model = distributed.wrap(model)   # held: DDP's gradient hooks live with it
        loss, _ = ddp_model(img[rows], label[rows], FORCING, BETA, noise=noise[rows])
        loss.backward()
        # The same step without DDP: what this rank alone would compute.
        local = build_model(args)
        local(img[rows], label[rows], FORCING, BETA, noise=noise[rows])[0].backward()
        # A non-finite loss on rank 1 alone stops both ranks, each with a message,
        # where a rank that stopped alone would leave the other in its collectives.
        trainer = Training(model, args, distributed)
        try:
            trainer.require_finite({"loss": math.inf if rank == 1 else 0.5})
            stopped = None
        except UserError as error:
            stopped = str(error)
        torch.save({"ddp": gradients(model), "local": gradients(local), "stopped": stopped},
                   Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_ddp_gradients_equal_single_process_union_batch(tmp_path):
    """One DDP step on 2 ranks x 2 clips gives the gradient of one step on all 4 clips.

    The loss is a mean over the batch, so DDP's average of the per-rank
    gradients is the union batch's gradient. Both sides start from the same
    seed and use the same posterior noise. BatchNorm (in the label encoder)
    normalises each frame on its own (--bn_train frame), so a rank's 2 clips
    and the union's 4 normalise alike; with batch statistics they would differ
    by construction.
    """
    mp.spawn(ddp_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    args = tiny_args()
    img, label, noise = union_batch(args)
    model = build_model(args)
    model(img, label, FORCING, BETA, noise=noise)[0].backward()
    union = gradients(model)

    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    assert "non-finite loss on another rank" in ranks[0]["stopped"]
    assert "non-finite loss at epoch 0" in ranks[1]["stopped"] and "loss inf" in ranks[1]["stopped"]
    for result in ranks:
        assert result["ddp"].keys() == union.keys()
        assert_close_grads(list(result["ddp"].values()), [union[k] for k in result["ddp"]])
    # Guard against a vacuous pass: each rank's own gradient is not the union's.
    for result in ranks:
        assert any(not torch.allclose(result["local"][n], g, rtol=1e-3, atol=1e-6)
                   for n, g in union.items())


def test_torchrun_two_cpu_processes_train_one_epoch(tmp_path):
    data = generate_dataset(tmp_path / "data", train_frames=80, val_frames=12, test_sequences=1,
                            test_frames=10, frame_size=(32, 64), workers=1, log=lambda *_: None)
    save_root = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k not in TORCHRUN_ENV}
    env["OMP_NUM_THREADS"] = "1"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node=2", "Trainer.py", "--DR", str(data), "--save_root",
               str(save_root), "--device", "cpu", "--num_epoch", "1", "--num_workers", "0",
               "--train_vi_len", "4", "--val_vi_len", "8", "--batch_size", "2", *TINY]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    # 20 clips: 10 per rank, 5 steps of 2; only rank 0 prints.
    assert done.stdout.count("training on cpu x2: 20 clips") == 1, done.stdout
    assert done.stdout.count("done: best val PSNR") == 1, done.stdout

    rows = runlog.read_metrics(save_root)
    assert [row["epoch"] for row in rows] == [0]
    for name in ("last.ckpt", "best.ckpt", "epoch=0.ckpt", "args.json", "metrics.csv"):
        assert (save_root / name).is_file(), name

    ckpt = torch.load(save_root / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["last_epoch"] == 0
    assert not [k for k in ckpt["state_dict"] if k.startswith("module.")]
    model = VAE_Model(tiny_args())
    model.load_state_dict(ckpt["state_dict"], strict=True)


def test_plain_run_creates_no_process_group(monkeypatch):
    for name in TORCHRUN_ENV:
        monkeypatch.delenv(name, raising=False)
    d = setup_distributed("cpu")
    assert (d.rank, d.world_size, d.enabled, d.is_main) == (0, 1, False, True)
    assert not dist.is_initialized()
    assert d.mean([1.0, 3.0]) == [1.0, 3.0]
    d.barrier()
    d.close()
    model = build_model(tiny_args(), d.device)
    assert d.wrap(model) is model


@pytest.mark.parametrize("device", ["cuda:1", "mps"])
def test_torchrun_rejects_a_fixed_device(monkeypatch, device):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(UserError, match="torchrun"):
        setup_distributed(device)
    assert not dist.is_initialized()


def test_distributed_sampler_splits_each_epoch_across_ranks():
    """Every clip once per epoch across the ranks, and a new shuffle each epoch."""
    dataset = torch.utils.data.TensorDataset(torch.arange(10))
    orders = {}
    for epoch in (0, 1):
        for rank in (0, 1):
            orders[epoch, rank] = epoch_clips(tiny_args("--batch_size", "1"), rank, dataset, epoch)
    for epoch in (0, 1):
        assert len(orders[epoch, 0]) == len(orders[epoch, 1]) == 5
        assert sorted(orders[epoch, 0] + orders[epoch, 1]) == list(range(10))
    assert orders[0, 0] != orders[1, 0]


def test_no_full_batch_per_process_is_an_error():
    dataset = torch.utils.data.TensorDataset(torch.arange(5))
    with pytest.raises(UserError, match="per process"):
        epoch_clips(tiny_args("--batch_size", "4"), 0, dataset, 0)


def test_clips_per_epoch_draws_a_new_subset_each_epoch_the_same_on_every_rank():
    dataset = torch.utils.data.TensorDataset(torch.arange(40))
    drawn = {}
    for epoch in (0, 1):
        for rank in (0, 1):
            drawn[epoch, rank] = epoch_clips(tiny_args("--batch_size", "1", "--clips_per_epoch", "8"),
                                             rank, dataset, epoch)
    for epoch in (0, 1):
        both = drawn[epoch, 0] + drawn[epoch, 1]
        assert len(both) == len(set(both)) == 8      # one draw, split across the ranks
    assert set(drawn[0, 0] + drawn[0, 1]) != set(drawn[1, 0] + drawn[1, 1])
    again = epoch_clips(tiny_args("--batch_size", "1", "--clips_per_epoch", "8"), 0, dataset, 1)
    assert again == drawn[1, 0]   # resumable


# Trainer.py, but rank 0 kills itself with SIGKILL inside the 2nd optimizer step of epoch 1.
KILLED_IN_EPOCH_1 = """
import os, signal, sys
sys.path.insert(0, {root!r})
import Trainer

one_step, epochs_of_steps = Trainer.VAE_Model.training_one_step, []

def step_then_die(model, *args, **kwargs):
    epochs_of_steps.append(model.trainer.current_epoch)
    if model.trainer.is_main and epochs_of_steps.count(1) == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    return one_step(model, *args, **kwargs)

Trainer.VAE_Model.training_one_step = step_then_die
Trainer.main(Trainer.parse_args())
"""


def torchrun(script, *flags, check=True):
    env = {k: v for k, v in os.environ.items() if k not in TORCHRUN_ENV}
    env["OMP_NUM_THREADS"] = "1"
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc_per_node=2", str(script), *map(str, flags)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    if check:
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def test_torchrun_worker_killed_mid_epoch_resumes_as_if_never_stopped(tmp_path):
    """kill -9 of rank 0 in epoch 1 of 2 under torchrun: last.ckpt (epoch 0) loads, a
    new run into the folder is refused on every rank, and the resume from last.ckpt
    ends with the uninterrupted run's metrics and weights."""
    data = generate_dataset(tmp_path / "data", train_frames=80, val_frames=12, test_sequences=1,
                            test_frames=10, frame_size=(32, 64), workers=1, log=lambda *_: None)
    common = ["--DR", data, "--device", "cpu", "--num_workers", "0", "--train_vi_len", "4",
              "--val_vi_len", "8", "--batch_size", "2", "--tfr", "0.5", "--tfr_sde", "0", *TINY]
    straight, broken = tmp_path / "straight", tmp_path / "broken"
    torchrun("Trainer.py", *common, "--save_root", straight, "--num_epoch", "2")
    script = tmp_path / "killed.py"
    script.write_text(KILLED_IN_EPOCH_1.format(root=str(ROOT)))
    killed = torchrun(script, *common, "--save_root", broken, "--num_epoch", "2", check=False)
    assert killed.returncode != 0
    assert load_checkpoint(broken / "last.ckpt")["last_epoch"] == 0
    assert [row["epoch"] for row in runlog.read_metrics(broken)] == [0]

    refused = torchrun("Trainer.py", *common, "--save_root", broken, "--num_epoch", "2",
                       check=False)
    assert refused.returncode != 0
    assert refused.stderr.count("already holds a training run") == 1, refused.stderr[-3000:]
    assert load_checkpoint(broken / "last.ckpt")["last_epoch"] == 0

    torchrun("Trainer.py", "--DR", data, "--save_root", broken, "--ckpt_path",
             broken / "last.ckpt")
    rows = [runlog.read_metrics(run) for run in (straight, broken)]
    for run_rows in rows:
        for row in run_rows:
            row.pop("epoch_seconds")
    assert rows[0] == rows[1] and [row["epoch"] for row in rows[1]] == [0, 1]
    a, b = (load_checkpoint(run / "last.ckpt")["state_dict"] for run in (straight, broken))
    assert all(torch.equal(v, b[k]) for k, v in a.items())
