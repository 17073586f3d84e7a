"""tools/dataset_stats.py measures the figures of the real data on any dataset."""
import numpy as np
import pytest

from conftest import run_cli
from tools import dataset_stats as ds
from utils.errors import UserError


def test_figures_of_a_synthetic_set_are_those_of_the_real_data(tiny_dataset):
    results = ds.measure(tiny_dataset, train_takes=1)
    assert set(results) == {"val", *(f"test/{i}" for i in range(5)), "train 0-191"}
    for name, figures in results.items():
        assert 3.0 < figures["ink"] < 8.0, name
        assert 205 < figures["ink_mean"] < 235, name
        assert 140 < figures["mean_g"] < 175, name
        assert 15 < figures["dancer_height"] < 30, name
        assert 3.0 < figures["dancer_pixels"] < 8.0, name
        assert 30 < figures["psnr_step"] < 50, name
    assert results["val"]["psnr_copy"] > results["test/0"]["psnr_copy"] - 3


def test_hand_made_frames_give_known_figures():
    frames = np.full((3, 3, 32, 64), 200, dtype=np.uint8)
    frames[:, :, 4:28, 30:39] = 20                       # a 24 x 9 dark dancer
    frames[2, :, 4:28, 30:39] = 200
    frames[2, :, 4:28, 40:49] = 20                       # who steps 10 px right
    figures = ds.frame_figures(frames)
    assert figures["dancer_height"] == 24 and figures["dancer_width"] == 9
    assert abs(figures["dancer_pixels"] - 100 * 24 * 9 / (32 * 64)) < 1e-6
    assert figures["x_min"] == 34 and figures["x_max"] == 44
    assert np.isclose(figures["psnr_copy"], np.mean([ds.psnr(frames[1], frames[0]), ds.psnr(frames[2], frames[0])]))
    labels = np.full((1, 3, 32, 64), 255, dtype=np.uint8)
    labels[0, 0, 0, :4] = (100, 220, 249, 250)
    assert ds.label_figures(labels) == dict(ink=100 * 3 / 2048, ink_mean=(100 + 220 + 249) / 3,
                                            ink_darkest=100.0)


def test_cli_prints_the_table_and_rejects_a_wrong_folder(tiny_dataset, tmp_path, capsys):
    out = run_cli("tools/dataset_stats.py", tiny_dataset, "--train_takes", "1").stdout
    assert "label ink (%)" in out and "copy-first PSNR" in out and "real" in out
    with pytest.raises(SystemExit) as stop:
        ds.main([str(tmp_path)])
    assert stop.value.code == 2 and "no val, test or train" in capsys.readouterr().err
    with pytest.raises(UserError):
        ds.measure(tmp_path / "missing")
