"""The decoded cache on disk: a later start decodes nothing, any change or damage rebuilds."""
import os
import subprocess
import threading

import numpy as np
import pytest
import torch
from PIL import Image

import utils.images
from dataloader import DanceTestSequences, Dataset_Dance
from utils import framecache
from utils.errors import UserError

SIZE = (8, 16)   # (H, W) the tests decode to; the files are 10x20


def noise_split(root, mode="train", frames=6, seed=0):
    """A split of random 10x20 frames and labels (frame<k>.png)."""
    rng = np.random.default_rng(seed)
    for kind in ("img", "label"):
        folder = root / mode / f"{mode}_{kind}"
        folder.mkdir(parents=True, exist_ok=True)
        for k in range(frames):
            Image.fromarray(rng.integers(0, 256, (10, 20, 3), dtype=np.uint8)).save(
                folder / f"frame{k}.png")
    return root


@pytest.fixture
def decodes(monkeypatch):
    """The images decoded so far (a spy on the decoder every loader path uses)."""
    seen, real = [], utils.images.read_image

    def spy(path, size):
        seen.append(path)
        return real(path, size)

    monkeypatch.setattr(utils.images, "read_image", spy)
    return seen


def disk(root, mode="train", video_len=3, **kw):
    return Dataset_Dance(root, None, mode, video_len, frame_size=SIZE, cache="disk", **kw)


def memory(root, mode="train", video_len=3):
    return Dataset_Dance(root, None, mode, video_len, frame_size=SIZE, cache="memory")


def assert_same(a, b):
    assert torch.equal(a.frames, b.frames) and torch.equal(a.labels, b.labels)


def cache_file(root, mode="train"):
    return root / framecache.BESIDE_DATA / f"{mode}-{SIZE[0]}x{SIZE[1]}.frames"


def test_a_second_start_decodes_no_png_and_a_changed_file_rebuilds(tmp_path, decodes, capsys):
    root = noise_split(tmp_path / "data")
    first = disk(root)
    assert len(decodes) == 12 and cache_file(root).is_file()
    assert "decoding 12 images once" in capsys.readouterr().err
    decodes.clear()

    second = disk(root)
    assert decodes == []
    assert_same(second, first)
    assert_same(second, memory(root))   # bit-identical to the loader without a disk cache
    decodes.clear()

    label = root / "train" / "train_label" / "frame4.png"
    Image.new("RGB", (10, 20), (1, 2, 3)).save(label)
    third = disk(root)
    assert len(decodes) == 12
    assert "1 changed (e.g. 'train/train_label/frame4.png')" in capsys.readouterr().err
    assert_same(third, memory(root))
    assert not torch.equal(third.labels, first.labels)


def test_frames_the_run_does_not_use_are_cached_too(tmp_path, decodes):
    root = noise_split(tmp_path / "data", frames=7)
    short = disk(root, video_len=3)                  # uses 6 of the 7 frames
    decodes.clear()
    longer = disk(root, video_len=7)                 # the same file serves it
    assert decodes == [] and len(short.frames) == 6 and len(longer.frames) == 7
    assert torch.equal(longer.frames[:6], short.frames)


def test_the_test_sequences_share_one_cache_file(tmp_path, decodes):
    root, rng = tmp_path / "data", np.random.default_rng(1)
    for i, labels in enumerate((4, 6)):
        for folder, count in ((root / "test" / "test_img" / str(i), 1),
                              (root / "test" / "test_label" / str(i), labels)):
            folder.mkdir(parents=True)
            for k in range(count):
                Image.fromarray(rng.integers(0, 256, (10, 20, 3), dtype=np.uint8)).save(
                    folder / f"frame{k}.png")
    plain = DanceTestSequences(root, SIZE)
    expected = [plain[i] for i in range(2)]
    DanceTestSequences(root, SIZE, cache="disk")
    decodes.clear()
    mapped = DanceTestSequences(root, SIZE, cache="disk")
    assert [(first.shape[0], labels.shape[0]) for first, labels in expected] == [(1, 4), (1, 6)]
    for (first, labels), (want_first, want_labels) in zip((mapped[0], mapped[1]), expected):
        assert torch.equal(first, want_first) and torch.equal(labels, want_labels)
    assert decodes == [] and (root / framecache.BESIDE_DATA / "test-8x16.frames").is_file()


@pytest.mark.parametrize("damage, said", [
    ("truncate", "it is truncated"),
    ("flip a data byte", "it is corrupt (checksum mismatch)"),
    ("overwrite the header", "it is not a frame cache"),
])
def test_a_damaged_cache_is_rebuilt_with_a_message(tmp_path, decodes, capsys, damage, said):
    root = noise_split(tmp_path / "data")
    disk(root)
    path = cache_file(root)
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[:-100]
    elif damage == "flip a data byte":
        data[-1] ^= 0xFF
    else:
        data[:8] = b"NOTACACH"
    path.write_bytes(bytes(data))
    capsys.readouterr()
    decodes.clear()
    again = disk(root)
    assert len(decodes) == 12
    assert f"data cache: {said}" in capsys.readouterr().err
    assert_same(again, memory(root))
    decodes.clear()
    disk(root)
    assert decodes == []   # the rebuilt file is whole


@pytest.mark.parametrize("locking", [True, False], ids=["locked", "no fcntl (Windows)"])
def test_two_builders_at_once_both_get_a_whole_cache(tmp_path, monkeypatch, locking):
    root = noise_split(tmp_path / "data")
    expected = memory(root)
    files = sorted((root / "train" / "train_img").glob("*.png")) + sorted(
        (root / "train" / "train_label").glob("*.png"))
    path = root / "cache.frames"
    if not locking:
        monkeypatch.setattr(framecache, "fcntl", None)
    both_decoding, second_waits = threading.Barrier(2, timeout=10), threading.Event()
    decoded, real = [], utils.images.read_image

    def slow(p, size):
        # Without a lock both builders decode at once; with it the second one waits.
        if not decoded:
            if locking:
                second_waits.wait(timeout=10)
            else:
                both_decoding.wait()
        decoded.append(p)
        return real(p, size)

    monkeypatch.setattr(utils.images, "read_image", slow)
    results, logs = [None, None], [[], []]

    def build(i):
        results[i] = framecache.cached_images(files, SIZE, base=root, path=path, workers=1,
                                              log=lambda m: (logs[i].append(m),
                                                             "waiting" in m and second_waits.set()))

    threads = [threading.Thread(target=build, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert all(r is not None for r in results), logs
    for r in results:
        assert torch.equal(r[:6], expected.frames) and torch.equal(r[6:], expected.labels)
    if locking:
        assert second_waits.is_set() and len(decoded) == 12   # one builder decoded
    else:
        assert len(decoded) == 24                              # both did; either file is whole
    image, why = framecache.open_cache(path, framecache.file_key(files, SIZE, root))
    assert why is None and torch.equal(image, results[0])


@pytest.fixture
def read_only(tmp_path):
    """Make a folder read-only for this process (chmod; chattr +i for root), or skip."""
    held = []

    def make(folder):
        os.chmod(folder, 0o555)
        if os.geteuid() == 0 and subprocess.run(["chattr", "+i", str(folder)],
                                                capture_output=True).returncode == 0:
            held.append(folder)
        probe = folder / ".probe"
        try:
            probe.touch()
        except OSError:
            return folder
        probe.unlink()
        pytest.skip("cannot make a folder read-only here")

    yield make
    for folder in held:
        subprocess.run(["chattr", "-i", str(folder)], check=True)
        os.chmod(folder, 0o755)


def test_a_read_only_DR_caches_in_the_user_cache_folder(tmp_path, monkeypatch, read_only,
                                                       decodes):
    root = noise_split(tmp_path / "data")
    user_cache = tmp_path / "xdg"
    monkeypatch.setenv("XDG_CACHE_HOME", str(user_cache))
    read_only(root)
    first = disk(root)
    cached = list(user_cache.glob("lab4-vae/data-*/train-8x16.frames"))
    assert len(cached) == 1 and not (root / framecache.BESIDE_DATA).exists()
    decodes.clear()
    assert_same(disk(root), first)
    assert decodes == []


def test_cache_dir_chooses_the_folder_and_an_unwritable_one_is_an_error(tmp_path):
    root = noise_split(tmp_path / "data")
    disk(root, cache_dir=tmp_path / "elsewhere")
    assert (tmp_path / "elsewhere" / "train-8x16.frames").is_file()
    assert not (root / framecache.BESIDE_DATA).exists()
    (tmp_path / "a_file").write_text("")
    with pytest.raises(UserError, match="--cache_dir '.*a_file' cannot be written"):
        disk(root, cache_dir=tmp_path / "a_file")


def test_a_cache_that_cannot_be_written_leaves_the_frames_in_ram(tmp_path, monkeypatch,
                                                                capsys):
    root = noise_split(tmp_path / "data")

    def full_disk(path, write_fn, **_):
        raise UserError(f"could not write '{path}' (No space left on device)")

    monkeypatch.setattr(framecache, "atomic_write", full_disk)
    assert_same(disk(root), memory(root))
    assert "no data cache was kept (could not write" in capsys.readouterr().err
    assert not list((root / framecache.BESIDE_DATA).iterdir())
