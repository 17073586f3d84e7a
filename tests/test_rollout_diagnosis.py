import json
import math
import shutil

import pytest
import torch

from benchmarks.rollout_diagnosis import by_position, by_region, load_sequences
from conftest import run_cli
from Trainer import VAE_Model
from utils.config import ModelConfig
from utils.errors import UserError


def tiny_model():
    torch.manual_seed(0)
    return VAE_Model(ModelConfig(F_dim=16, L_dim=16, N_dim=4, D_out_dim=24, amp="off"))


def test_one_step_predicts_each_frame_from_the_true_previous_frame():
    model = tiny_model()
    frames, labels = torch.rand(2, 6, 3, 32, 64), torch.rand(2, 6, 3, 32, 64)
    stepped = model.predict_from_truth(frames, labels, chunk=2)   # chunks that split the clip
    assert torch.equal(stepped[:, 0], frames[:, 0])
    for t in range(1, 6):
        # A rollout of one step from the true frame t-1 is the same prediction.
        single = model.rollout(frames[:, t - 1], labels[:, t - 1:t + 1], z_scale=0)[:, 1]
        torch.testing.assert_close(stepped[:, t], single, atol=1e-6, rtol=0)
    # A rollout feeds its own frames back: from frame 2 on it differs (an untrained
    # model depends little on its input, hence the small margin).
    rolled = model.rollout(frames[:, 0], labels, z_scale=0)
    torch.testing.assert_close(rolled[:, 1], stepped[:, 1], atol=1e-6, rtol=0)
    assert (rolled[:, 2:] - stepped[:, 2:]).abs().max() > 1e-4


def test_by_position_bins_frames_by_pose_centre_and_skips_blank_ones():
    psnr = torch.tensor([30.0, 32.0, 20.0, 25.0, 99.0])
    centre = torch.tensor([0.1, 0.15, 0.5, 1.0, math.nan])
    rows = by_position(psnr, centre, bins=2)
    assert rows == [(0.0, 0.5, pytest.approx(31.0), 2), (0.5, 1.0, pytest.approx(22.5), 2)]


def test_by_region_finds_where_the_error_is():
    truth = torch.full((2, 3, 32, 64), 0.8)
    truth[:, :, 12:28, 30:34] = 0.1                        # the dancer: dark, mid-frame
    predicted = truth.clone()
    predicted[:, :, :8] -= 0.3                             # the ceiling painted too dark
    region = by_region(predicted, truth)
    error, area = region["shares"]["top rows"]
    assert error == pytest.approx(1.0) and area == pytest.approx(0.25)
    assert region["shares"]["dancer"][0] == 0.0           # grown by 2 px: rows 10-29 only
    assert region["shares"]["dancer"][1] == pytest.approx(20 * 8 / (32 * 64))
    # rows 0-1 whole, then columns 0-1 and 62-63 of rows 2-7, of the 8 x 64 in error
    assert region["shares"]["border"][0] == pytest.approx((2 * 64 + 6 * 4) / (8 * 64))
    assert region["perfect_background"] == 100.0          # every error was background
    assert region["perfect_dancer"] == pytest.approx(region["psnr"])


def test_a_sequence_whose_true_frames_do_not_match_its_labels_is_named(small_dataset, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(small_dataset / "test", data / "test")
    shutil.copytree(small_dataset / "test_gt", data / "test_gt")
    (data / "test_gt" / "0" / "frame5.png").unlink()
    with pytest.raises(UserError, match=r"test_gt.0.* holds 7 frames for 8 labels"):
        load_sequences(data, (32, 64))


def test_cli_reports_rollout_against_one_step_and_by_position(trained_run, small_dataset,
                                                             tmp_path):
    out = tmp_path / "report.json"
    proc = run_cli("benchmarks/rollout_diagnosis.py", "--DR", small_dataset, "--ckpt_path",
                   trained_run.folder / "best.ckpt", "--device", "cpu", "--window", "4",
                   "--train_frames", "30", "--json", out)
    report = json.loads(out.read_text())
    first, second = report["sequences"]["test 0"]        # frames 1-4 and 5-7 of 8
    assert first[:2] == [1, 4] and second[:2] == [5, 7]
    assert all(math.isfinite(v) for row in (first, second) for v in row[2:])
    assert sum(row[3] for row in report["by_position"]["sequences"]) == 7
    assert sum(row[3] for row in report["by_position"]["train"]) == 29
    assert "frames    1-4" in proc.stdout and "rollout" in proc.stdout
    assert "one-step PSNR (dB) by the pose's horizontal centre" in proc.stdout
    assert "where the rolled-out error is" in proc.stdout
    # The error by region is of the same rolled-out frames as the windows' PSNR.
    region = report["by_region"]
    assert region["psnr"] == pytest.approx((4 * first[2] + 3 * second[2]) / 7, abs=1e-4)
