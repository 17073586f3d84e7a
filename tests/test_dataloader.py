"""The data layer reads the real layout robustly and explains bad input."""
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from dataloader import DanceTestSequences, Dataset_Dance, read_image
from utils.errors import UserError


def make_split(root, mode, values, size=(20, 10)):
    """A split whose frame k is a flat image of grey level values[k] (names frame<k>)."""
    for kind in ("img", "label"):
        folder = root / mode / f"{mode}_{kind}"
        folder.mkdir(parents=True, exist_ok=True)
        for k, v in enumerate(values):
            Image.new("RGB", size, (v, v, 255 - v)).save(folder / f"frame{k}.png")
    return root


def test_clips_are_consecutive_non_overlapping_and_ordered_by_integer(tmp_path):
    make_split(tmp_path, "train", [10 * k for k in range(12)])
    ds = Dataset_Dance(tmp_path, None, "train", video_len=5, frame_size=(8, 16))
    assert len(ds) == 2                              # 12 // 5
    frames, labels = ds[1]
    assert frames.shape == labels.shape == (5, 3, 8, 16)
    # frame10 and frame11 must come after frame9, not after frame1
    red, blue = ((frames[:, c, 0, 0] * 255).round().int().tolist() for c in (0, 2))
    assert red == [50, 60, 70, 80, 90]
    assert blue == [205, 195, 185, 175, 165]         # RGB order: blue is 255 - red here


def test_partial_and_mode_val(tmp_path):
    make_split(tmp_path, "val", list(range(0, 200, 10)))
    assert len(Dataset_Dance(tmp_path, None, "val", video_len=3, partial=0.5)) == int(20 * 0.5) // 3
    assert len(Dataset_Dance(str(tmp_path), None, "val", video_len=20)) == 1


def test_cache_and_direct_reads_agree(tiny_dataset):
    cached = Dataset_Dance(tiny_dataset, None, "train", video_len=16, cache="memory")
    direct = Dataset_Dance(tiny_dataset, None, "train", video_len=16, cache="none")
    assert cached.frames is not None and direct.frames is None
    for a, b in zip(cached[3], direct[3]):
        assert torch.equal(a, b)


def test_template_style_transform_is_honoured(tiny_dataset):
    from torchvision import transforms
    transform = transforms.Compose([transforms.Resize([32, 64]), transforms.ToTensor()])
    frames, _ = Dataset_Dance(tiny_dataset, transform, "val", video_len=4)[0]
    ours, _ = Dataset_Dance(tiny_dataset, None, "val", video_len=4)[0]
    assert frames.shape == (4, 3, 32, 64)
    assert (frames - ours).abs().max() < 2 / 255


def test_label_pairs_with_its_frame_by_name(tiny_dataset):
    ds = Dataset_Dance(tiny_dataset, None, "train", video_len=16, cache="none")
    assert [f.name for f in ds.frame_files] == [l.name for l in ds.label_files]
    assert all(l.parent.name == "train_label" for l in ds.label_files)


def test_images_of_any_mode_and_size_become_rgb(tmp_path):
    rgba = Image.new("RGBA", (40, 20), (255, 0, 0, 0))
    rgba.putpixel((0, 0), (0, 0, 255, 255))
    rgba.save(tmp_path / "rgba.png")
    Image.new("L", (128, 64), 77).save(tmp_path / "grey.png")
    Image.new("RGB", (7, 3), (1, 2, 3)).save(tmp_path / "tiny.png")
    transparent = read_image(tmp_path / "rgba.png", (10, 20))
    assert transparent.shape == (3, 10, 20) and transparent.dtype == torch.uint8
    assert transparent[:, 5, 10].tolist() == [255, 255, 255]   # transparent -> white
    assert read_image(tmp_path / "grey.png", (32, 64)).unique().tolist() == [77]
    assert read_image(tmp_path / "tiny.png", (32, 64)).shape == (3, 32, 64)


def test_missing_root_names_it_and_shows_layout(tmp_path):
    with pytest.raises(UserError) as error:
        Dataset_Dance(tmp_path / "nowhere", None, "train", 16)
    assert "nowhere" in str(error.value) and "--DR" in str(error.value)
    assert "train_img/frame<N>.png" in str(error.value)


def test_missing_split_folder(tmp_path):
    make_split(tmp_path, "train", [1, 2, 3])
    with pytest.raises(UserError, match="'val' split folder not found"):
        Dataset_Dance(tmp_path, None, "val", 2)


def test_frame_without_label_names_both_files(tmp_path):
    make_split(tmp_path, "train", [1, 2, 3, 4])
    (tmp_path / "train" / "train_label" / "frame2.png").unlink()
    with pytest.raises(UserError) as error:
        Dataset_Dance(tmp_path, None, "train", 2)
    message = str(error.value)
    assert "train_img" in message and "frame2.png" in message and "train_label" in message


def test_unreadable_and_truncated_images_are_named(tmp_path):
    make_split(tmp_path, "train", [1, 2, 3, 4], size=(64, 32))
    bad = tmp_path / "train" / "train_img" / "frame1.png"
    bad.write_bytes(b"not a png at all")
    with pytest.raises(UserError, match="frame1.png"):
        Dataset_Dance(tmp_path, None, "train", 2)
    good = tmp_path / "train" / "train_label" / "frame3.png"
    shutil.copy(tmp_path / "train" / "train_label" / "frame0.png", bad)
    good.write_bytes(good.read_bytes()[:60])          # truncated download
    with pytest.raises(UserError, match="cannot read image .*frame3.png"):
        Dataset_Dance(tmp_path, None, "train", 2)


def test_empty_split_and_too_short_split(tmp_path):
    (tmp_path / "train" / "train_img").mkdir(parents=True)
    (tmp_path / "train" / "train_label").mkdir(parents=True)
    with pytest.raises(UserError, match="empty"):
        Dataset_Dance(tmp_path, None, "train", 2)
    make_split(tmp_path, "train", [1, 2, 3])
    with pytest.raises(UserError, match="not enough for one clip"):
        Dataset_Dance(tmp_path, None, "train", 16)


def test_test_sequences_are_discovered_from_folders(tmp_path):
    for name in ("0", "2", "10"):
        img = tmp_path / "test" / "test_img" / name
        lab = tmp_path / "test" / "test_label" / name
        img.mkdir(parents=True)
        lab.mkdir(parents=True)
        Image.new("RGB", (64, 32), (int(name), 0, 0)).save(img / "frame0.png")
        for k in range(7):
            Image.new("RGB", (64, 32), (k, 255, 255)).save(lab / f"frame{k}.png")
    ds = DanceTestSequences(tmp_path)
    assert ds.names == ["0", "2", "10"]
    first, labels = ds[2]
    assert first.shape == (1, 3, 32, 64) and labels.shape == (7, 3, 32, 64)
    assert round(first[0, 0, 0, 0].item() * 255) == 10
    assert [round(v * 255) for v in labels[:, 0, 0, 0].tolist()] == list(range(7))


def test_test_sequence_without_first_frame(tiny_dataset, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(tiny_dataset / "test", root / "test")
    (root / "test" / "test_img" / "3" / "frame0.png").unlink()
    with pytest.raises(UserError, match="sequence '3' has no first frame"):
        DanceTestSequences(root)


def test_root_given_as_string_with_trailing_separator(tiny_dataset):
    import os
    ds = Dataset_Dance(str(tiny_dataset) + os.sep, None, "val", 40)
    assert len(ds) == 1
    assert ds.frame_files[1].name == "frame1.png"
    assert ds.frame_files[1].parent == tiny_dataset / "val" / "val_img"


def test_resize_matches_the_templates_bilinear_exactly_at_any_size(tmp_path):
    rng = np.random.default_rng(0)
    for size in ((128, 64), (1024, 512)):
        pixels = rng.integers(0, 256, (size[1] // 8, size[0] // 8, 3), dtype=np.uint8)
        image = Image.fromarray(pixels).resize(size, Image.BILINEAR)
        image.save(tmp_path / "x.png")
        template = np.asarray(image.resize((64, 32), Image.BILINEAR), dtype=np.int16)
        ours = read_image(tmp_path / "x.png", (32, 64)).permute(1, 2, 0).numpy().astype(np.int16)
        assert np.array_equal(ours, template), size
