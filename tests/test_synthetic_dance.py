"""Tests for tools/synthetic_dance.py: layout, determinism, look, motion, labels, CLI."""
import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dataloader import read_image
from tools import synthetic_dance as sd
from tools.dance.body import L_HAND, R_HAND, Stage
from tools.dance.motion import STAGE_X, STYLES, choreograph
from tools.dance.render import label_size, render_frame, render_label
from utils.errors import UserError

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "tools" / "synthetic_dance.py"
TINY = dict(train_frames=40, val_frames=12, test_sequences=2, test_frames=10, frame_size=(32, 64))


def _generate(out, **overrides):
    kwargs = {**TINY, "workers": 1, **overrides}
    messages = []
    sd.generate_dataset(out, log=messages.append, **kwargs)
    return messages


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img, dtype=np.int16)


def _names(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


def _frames(n: int) -> set[str]:
    return {f"frame{k}.png" for k in range(n)}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "data"
    _generate(out)
    return out


def test_layout_and_counts(dataset):
    assert _names(dataset) == {"train", "val", "test", "test_gt", "synthetic_dance.json"}
    assert _names(dataset / "train") == {"train_img", "train_label"}
    assert _names(dataset / "val") == {"val_img", "val_label"}
    assert _names(dataset / "test") == {"test_img", "test_label"}
    for split, n in (("train", 40), ("val", 12)):
        assert _names(dataset / split / f"{split}_img") == _frames(n)
        assert _names(dataset / split / f"{split}_label") == _frames(n)
    for parent in ("test/test_img", "test/test_label", "test_gt"):
        assert _names(dataset / parent) == {"0", "1"}
    for i in ("0", "1"):
        assert _names(dataset / "test/test_img" / i) == {"frame0.png"}
        assert _names(dataset / "test/test_label" / i) == _frames(10)
        assert _names(dataset / "test_gt" / i) == _frames(10)


def test_every_frame_has_a_label_and_all_pngs_are_rgb_of_the_requested_size(dataset):
    pngs = list(dataset.rglob("*.png"))
    assert len(pngs) == 2 * 40 + 2 * 12 + 2 * (1 + 10 + 10)
    for path in pngs:
        # Labels are written at least 256 wide, so that the loader sees them as it
        # sees the real 1024x512 labels (next test).
        size = (256, 128) if "_label" in str(path.relative_to(dataset)) else (64, 32)
        with Image.open(path) as img:
            assert (img.format, img.mode, img.size) == ("PNG", "RGB", size), path
    for img_dir, label_dir in (("train/train_img", "train/train_label"),
                               ("val/val_img", "val/val_label"),
                               ("test_gt/1", "test/test_label/1")):
        assert _names(dataset / img_dir) == _names(dataset / label_dir)


def test_same_arguments_give_identical_bytes_for_any_worker_count(dataset, tmp_path):
    _generate(tmp_path / "again", workers=2)
    assert _hashes(tmp_path / "again") == _hashes(dataset)


def test_different_seed_gives_different_frames(dataset, tmp_path):
    _generate(tmp_path / "other", seed=1)
    for name in ("train/train_img/frame5.png", "val/val_img/frame3.png", "test_gt/0/frame0.png"):
        assert not np.array_equal(_pixels(dataset / name), _pixels(tmp_path / "other" / name))


def test_labels_are_faint_coloured_skeletons_on_white_and_frames_are_not_white(dataset):
    for k in range(0, 40, 7):
        label = read_image(dataset / f"train/train_label/frame{k}.png", (32, 64)).permute(
            1, 2, 0).numpy().astype(np.int16)
        frame = _pixels(dataset / f"train/train_img/frame{k}.png")
        darkest = label.min(axis=-1)
        ink = darkest < 250
        assert 0.02 < ink.mean() < 0.09, "thin strokes, as Everybody Dance Now draws them"
        assert 200 < darkest[ink].mean() < 240, "limbs are blended at alpha 0.6: faint"
        assert len(set(label[darkest < 235].argmin(axis=-1))) >= 2, "limbs of several colours"
        assert (frame >= 250).all(axis=-1).mean() < 0.01


def _darkest_at_loader_size(stage, frames=range(0, 120, 4)):
    take = sd.Take(120, "val", np.random.SeedSequence(3), stage)
    return np.stack([np.asarray(render_label(take.keypoints[k], take.found[k], stage)
                                .resize((64, 32), Image.BILINEAR)).min(axis=-1) for k in frames])


def test_label_ink_matches_the_real_labels_on_a_front_facing_take():
    darkest = _darkest_at_loader_size(Stage(128, 64))
    ink = darkest < 250
    assert 4.6 * 0.9 < 100 * ink.mean() < 5.5 * 1.1     # real: 4.6-5.5 % at 32x64
    assert 218 < darkest[ink].mean() < 232              # real: 223-226
    assert 110 < darkest.min() < 150                    # real: 127-137


def test_small_label_files_look_to_the_loader_like_real_size_ones():
    assert label_size(Stage(128, 64)) == (256, 128)
    assert label_size(Stage(1024, 512)) == (1024, 512)
    frames = range(0, 120, 12)
    small = _darkest_at_loader_size(Stage(128, 64), frames) < 250
    real_size = _darkest_at_loader_size(Stage(1024, 512), frames) < 250
    assert abs(100 * small.mean() - 100 * real_size.mean()) < 0.3   # ink, in points


def test_studio_is_light_grey_and_the_dancer_dark_and_about_24_of_32_pixels_tall(dataset):
    frames = np.stack([_pixels(dataset / f"val/val_img/frame{k}.png") for k in range(12)])
    assert np.all(np.abs(frames.mean(axis=(0, 1, 2)) - (159, 158, 157)) < 8)
    lum = frames.mean(axis=-1)
    dark = lum < 0.6 * np.median(lum)
    assert 0.03 < dark.mean() < 0.08
    rows = np.nonzero(dark.any(axis=(0, 2)))[0]
    assert 19 <= rows.max() - rows.min() + 1 <= 28


def test_yaw_changes_the_frame_while_the_label_stays_the_same():
    stage = Stage(64, 32)
    take = sd.Take(2, "val", np.random.SeedSequence(0), stage)
    args = list(take.frame_args(0))
    front = np.asarray(render_frame(*args[:6], stage), dtype=np.int16)
    for yaw in (np.pi / 2, np.pi):
        args[2] = yaw
        turned = np.asarray(render_frame(*args[:6], stage), dtype=np.int16)
        assert np.abs(turned - front).max() > 30, yaw


def test_the_dancer_turns_walks_and_changes_depth():
    stage = Stage(64, 32)
    posed = sd.Take(3000, "train", np.random.SeedSequence(7), stage).posed
    facing = np.cos(posed.yaw)
    assert (facing > 0.9).any() and (abs(facing) < 0.3).any() and (facing < -0.9).any()
    centre = posed.points[:, 0, 0]
    assert centre.max() - centre.min() > 30
    # Walking up- and downstage: the real dancer's height spans 22-27 px at 32x64.
    assert posed.scale.max() / posed.scale.min() > 1.1
    assert 21 < posed.scale.min() and posed.scale.max() < 28
    step = np.abs(np.diff(posed.points[..., :2], axis=0)).max(axis=(1, 2))
    assert np.percentile(step, 99) < 2.5


def test_every_sequence_starts_at_the_centre_and_stays_off_the_back_wall():
    for seed in range(6):
        motion = choreograph(630, np.random.default_rng(seed), STYLES["test"])
        assert abs(motion["X"][0]) < 0.1 * STAGE_X
        assert np.median(motion["Z"]) > -0.35        # real heights: 22-27 px, never tiny


def test_val_moves_less_than_test():
    val = sd.Take(630, "val", np.random.SeedSequence(1), Stage(64, 32)).posed.points[:, 0, 0]
    test = sd.Take(630, "test", np.random.SeedSequence(1), Stage(64, 32)).posed.points[:, 0, 0]
    assert np.ptp(val) < 0.5 * np.ptp(test)


def test_detector_drops_and_swaps_keypoints():
    take = sd.Take(2000, "train", np.random.SeedSequence(2), Stage(64, 32))
    hands = take.found[:, R_HAND:L_HAND].all(axis=1)
    assert 0.05 < 1 - hands.mean() < 0.6
    jitter = np.abs(take.keypoints[:, :25] - take.posed.keypoints[:, :25])
    assert 0 < np.median(jitter) < 1.0
    swapped = np.abs(take.keypoints[:, 2] - take.posed.keypoints[:, 5]).sum(axis=1) < 0.5
    assert swapped.any()


def test_splits_use_different_motions(dataset):
    candidates = [dataset / "train/train_img/frame4.png", dataset / "val/val_img/frame4.png",
                  dataset / "test_gt/0/frame4.png", dataset / "test_gt/1/frame4.png"]
    images = [_pixels(p) for p in candidates]
    for i in range(len(images)):
        for j in range(i + 1, len(images)):
            assert np.abs(images[i] - images[j]).mean() > 0.5, (candidates[i], candidates[j])


def test_test_img_frame0_is_the_first_ground_truth_frame(dataset):
    for i in ("0", "1"):
        first = (dataset / "test/test_img" / i / "frame0.png").read_bytes()
        assert first == (dataset / "test_gt" / i / "frame0.png").read_bytes()


def test_complete_dataset_is_not_regenerated(dataset):
    probe = dataset / "train/train_img/frame3.png"
    before = probe.stat().st_mtime_ns
    messages = _generate(dataset)
    assert probe.stat().st_mtime_ns == before
    assert any("skipping" in m for m in messages)


def test_regeneration_with_smaller_counts_leaves_no_stale_files(tmp_path):
    out = tmp_path / "data"
    _generate(out)
    messages = _generate(out, train_frames=5, test_sequences=1, test_frames=3)
    assert not any("skipping" in m for m in messages)
    assert _names(out / "train/train_img") == _frames(5)
    assert _names(out / "test_gt") == {"0"}
    assert _names(out / "test/test_label/0") == _frames(3)


def test_invalid_arguments_raise():
    with pytest.raises(UserError, match="--train_frames 0"):
        sd.generate_dataset("unused", train_frames=0)
    with pytest.raises(UserError, match="too small"):
        sd.generate_dataset("unused", frame_size=(5, 10))


def test_cli_generates_dataset_preview_and_then_skips(tmp_path, capsys):
    """The script as a user types it; the rerun, in-process, skips the complete set."""
    args = ["--out", str(tmp_path / "data"), "--train_frames", "16", "--val_frames", "8",
            "--test_sequences", "1", "--test_frames", "8", "--size", "32x16", "--workers", "2",
            "--preview", str(tmp_path / "preview.png")]
    first = subprocess.run([sys.executable, str(SCRIPT), *args], cwd=REPO,
                           capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    assert "done" in first.stdout
    assert _names(tmp_path / "data/train/train_img") == _frames(16)
    with Image.open(tmp_path / "preview.png") as preview:
        assert preview.width > 8 * 64 and preview.height > 4 * 32
    assert sd.main(args) == 0
    assert "skipping" in capsys.readouterr().out


def cli_error(capsys, *args):
    """main's exit code (argparse's 2) and message for arguments it must reject."""
    with pytest.raises(SystemExit) as stop:
        sd.main(list(args))
    return stop.value.code, capsys.readouterr().err


@pytest.mark.parametrize("flag, value", [("--train_frames", "0"), ("--val_frames", "-3"),
                                         ("--test_sequences", "x"), ("--size", "10x5"),
                                         ("--size", "64by32"), ("--workers", "0")])
def test_cli_rejects_bad_flags(tmp_path, capsys, flag, value):
    code, err = cli_error(capsys, "--out", str(tmp_path / "data"), flag, value)
    assert code == 2 and flag in err
    assert not (tmp_path / "data").exists()


def test_refuses_to_clear_a_folder_it_did_not_write(tmp_path, capsys):
    real = tmp_path / "kaggle"
    (real / "train" / "train_img").mkdir(parents=True)
    precious = real / "train" / "train_img" / "frame0.png"
    precious.write_bytes(b"the user's data")
    code, err = cli_error(capsys, "--out", str(real), "--train_frames", "8", "--val_frames", "4",
                          "--test_sequences", "1", "--test_frames", "4", "--size", "32x16")
    assert code == 2
    assert "refusing to write" in err and "--out" in err
    assert precious.read_bytes() == b"the user's data"
