"""Files -> tensors: the Lab 4 dance dataset (train/val clips and test sequences).

Layout (see README):
    <DR>/train/train_img/frame<N>.png   <DR>/train/train_label/frame<N>.png
    <DR>/val/val_img/frame<N>.png       <DR>/val/val_label/frame<N>.png
    <DR>/test/test_img/<i>/frame0.png   <DR>/test/test_label/<i>/frame<N>.png

Frames are ordered by the integer in their name (frame2 before frame10); a label
has its frame's file name in the sibling ``*_label`` folder. Images of any size
or mode are converted to RGB, resized to (frame_H, frame_W) and scaled to [0, 1].

Each split is decoded once into a uint8 tensor (the full real training set at
32x64 is about 290 MB), so no epoch decodes a PNG. ``cache`` says where it is
kept, as --data_cache does: "disk" (utils/framecache.py: on disk, memory-mapped
by every later start), "memory" (this process's RAM; the default for code) or
"none" (the PNGs read on every access, for sets too big for RAM).

The splits as a run's flags ask for them: ``training_clips(args)``,
``validation_videos(args)`` and ``epoch_loader(...)``, the clips of one epoch.
"""
import sys
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from utils.augment import AugmentedClips, ClipAugmentation
from utils.errors import UserError, choice
from utils.framecache import DATA_CACHES, cache_folder, cached_images
from utils.images import frame_index, list_images, read_image, read_images
from utils.runtime import Distributed, seed_for
from utils.submission import FRAME_SIZE

CLIP_DRAW_SALT = 0x5EED  # the per-epoch clip draw has its own stream, apart from the shuffle

LAYOUT = """expected layout:
    <DR>/train/train_img/frame<N>.png   <DR>/train/train_label/frame<N>.png
    <DR>/val/val_img/frame<N>.png       <DR>/val/val_label/frame<N>.png
    <DR>/test/test_img/<i>/frame0.png   <DR>/test/test_label/<i>/frame<N>.png"""


def get_key(fp):
    """The template's sort key of a frame file: the integer in its name
    (frame12.png -> 12), so frame2 comes before frame10."""
    return frame_index(fp)


def require_dir(path, what):
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"{what} not found: '{path}'.\n{LAYOUT}")
    return path


def to_unit_float(images):
    """uint8 (..., 3, H, W) -> float32 in [0, 1]."""
    return images.float().div_(255.0)


def paired_files(img_dir, label_dir):
    """The (frame, label) file pairs of a split, in frame order."""
    frames = list_images(img_dir)
    if not frames:
        raise UserError(f"no frames (*.png) in '{img_dir}': the split is empty.\n{LAYOUT}")
    labels = [Path(label_dir) / f.name for f in frames]
    for frame, label in zip(frames, labels):
        if not label.is_file():
            raise UserError(f"frame '{frame}' has no label: '{label}' is missing. "
                            "Every frame needs a pose image of the same name.")
    return frames, labels


class Dataset_Dance(Dataset):
    """Non-overlapping clips of a split: item k is (frames, labels), each
    (video_len, 3, H, W) in [0, 1], starting at frame k * video_len.

    ``transform`` (optional) maps a PIL image to a tensor, as in the template;
    when it is None, images are resized to ``frame_size`` and kept as uint8 where
    ``cache`` says (see the module's docstring; ``cache_dir`` as --cache_dir).
    """

    def __init__(self, root, transform=None, mode="train", video_len=7, partial=1.0,
                 *, frame_size=FRAME_SIZE, cache="memory", cache_dir=None, workers=4):
        if mode not in ("train", "val"):
            raise ValueError(f"mode must be 'train' or 'val', not {mode!r}")
        choice(dict.fromkeys(DATA_CACHES), cache, "--data_cache")
        root = require_dir(root, "dataset root (--DR)")
        split = require_dir(root / mode, f"'{mode}' split folder")
        self.frame_files, self.label_files = paired_files(
            require_dir(split / f"{mode}_img", f"'{mode}' frame folder"),
            require_dir(split / f"{mode}_label", f"'{mode}' label folder"))
        self.transform, self.video_len, self.frame_size = transform, video_len, tuple(frame_size)
        self.num_clips = int(len(self.frame_files) * partial) // video_len
        if self.num_clips == 0:
            raise UserError(f"'{split}' has {len(self.frame_files)} frames: not enough for one "
                            f"clip of {video_len} frames at partial={partial}.")
        used = self.num_clips * video_len
        self.frames = self.labels = None
        folder = cache_folder(root, cache_dir) if cache == "disk" and transform is None else None
        if folder is not None:
            # The whole split, whatever share of it this run uses: one file serves every
            # --partial and clip length.
            height, width = self.frame_size
            images = cached_images(self.frame_files + self.label_files, self.frame_size,
                                   base=root, path=folder / f"{mode}-{height}x{width}.frames",
                                   workers=workers)
            count = len(self.frame_files)
            self.frames, self.labels = images[:used], images[count:count + used]
        elif cache != "none" and transform is None:
            if cache == "disk":
                print(f"note: neither '{root}' nor the user's cache folder can be written; "
                      "the frames are decoded into RAM for this run (--cache_dir chooses "
                      "a writable folder).", file=sys.stderr)
            self.frames = read_images(self.frame_files[:used], self.frame_size, workers)
            self.labels = read_images(self.label_files[:used], self.frame_size, workers)

    def __len__(self):
        return self.num_clips

    def _load(self, files, cached, start):
        window = slice(start, start + self.video_len)
        if cached is not None:
            return to_unit_float(cached[window])
        if self.transform is not None:
            images = []
            for path in files[window]:
                with Image.open(path) as image:
                    images.append(self.transform(image.convert("RGB")))
            return torch.stack(images)
        return to_unit_float(torch.stack([read_image(p, self.frame_size) for p in files[window]]))

    def __getitem__(self, index):
        if not 0 <= index < self.num_clips:
            raise IndexError(index)
        start = index * self.video_len
        return (self._load(self.frame_files, self.frames, start),
                self._load(self.label_files, self.labels, start))


class DanceTestSequences(Dataset):
    """The test split: every sequence folder under <DR>/test/test_img/.

    Item i is (first frame (1, 3, H, W), labels (L, 3, H, W)) in [0, 1].
    ``names`` holds the folder names, ordered by their integer. Each item is
    decoded when it is read, once per run; ``cache="disk"`` keeps them all in one
    cache file instead (as Dataset_Dance's), which later runs map.
    """

    def __init__(self, root, frame_size=FRAME_SIZE, workers=4, *, cache="none",
                 cache_dir=None):
        choice(dict.fromkeys(DATA_CACHES), cache, "--data_cache")
        root = require_dir(root, "dataset root (--DR)")
        img_root = require_dir(root / "test" / "test_img", "test frame folder")
        label_root = require_dir(root / "test" / "test_label", "test label folder")
        folders = sorted((p for p in img_root.iterdir() if p.is_dir()),
                         key=lambda p: (frame_index(p), p.name))
        if not folders:
            raise UserError(f"no test sequences (sub-folders) in '{img_root}'.\n{LAYOUT}")
        self.names = [p.name for p in folders]
        self.frame_size, self.workers = tuple(frame_size), workers
        self.first_frame_files, self.label_files = [], []
        for folder in folders:
            first = list_images(folder)
            if not first:
                raise UserError(f"test sequence '{folder.name}' has no first frame: "
                                f"'{folder / 'frame0.png'}' is missing.")
            labels = list_images(label_root / folder.name)
            if not labels:
                raise UserError(f"test sequence '{folder.name}' has no labels in "
                                f"'{label_root / folder.name}'.\n{LAYOUT}")
            self.first_frame_files.append(first[0])
            self.label_files.append(labels)
        self.images = None   # (S + sum of L, 3, H, W): the first frames, then every label
        folder = cache_folder(root, cache_dir) if cache == "disk" else None
        if folder is not None:
            height, width = self.frame_size
            files = self.first_frame_files + [p for labels in self.label_files for p in labels]
            self.images = cached_images(files, self.frame_size, base=root,
                                        path=folder / f"test-{height}x{width}.frames",
                                        workers=workers)
            counts = torch.tensor([len(self.names)] + [len(l) for l in self.label_files])
            self.label_starts = counts.cumsum(0).tolist()

    def __len__(self):
        return len(self.names)

    def __getitem__(self, index):
        if self.images is not None:
            start, stop = self.label_starts[index], self.label_starts[index + 1]
            return (to_unit_float(self.images[index:index + 1]),
                    to_unit_float(self.images[start:stop]))
        first = read_image(self.first_frame_files[index], self.frame_size)[None]
        labels = read_images(self.label_files[index], self.frame_size, self.workers)
        return to_unit_float(first), to_unit_float(labels)


# --------------------------------------------------------------------------- a run's splits
def training_clips(args):
    """The training clips of --DR, --train_vi_len frames each (--partial of the frames)."""
    return Dataset_Dance(args.DR, None, "train", args.train_vi_len, args.partial,
                         frame_size=(args.frame_H, args.frame_W),
                         cache=args.data_cache, cache_dir=args.cache_dir)


def validation_videos(args):
    """The validation videos of --DR, --val_vi_len frames each."""
    return Dataset_Dance(args.DR, None, "val", args.val_vi_len, 1.0,
                         frame_size=(args.frame_H, args.frame_W),
                         cache=args.data_cache, cache_dir=args.cache_dir)


def epoch_loader(clips, args, epoch, dist=None, pin_memory=False):
    """The shuffled batches of one epoch of ``clips`` (training_clips(args)),
    augmented as the --aug_* flags say; --fast_train uses the first
    --fast_partial share in its first epochs, --clips_per_epoch draws afresh
    from the rest.

    Every draw is seeded by (--seed, epoch), so a resumed run draws what an
    uninterrupted one would. Under DDP (``dist``) each rank gets a disjoint
    1/world_size share of a per-epoch shuffle (padded to equal length so every
    rank takes the same steps).
    """
    dist = dist or Distributed()
    augmentation = ClipAugmentation.of(args)
    # Wrapped before any Subset: a clip's transform follows its index in the set.
    dataset = (AugmentedClips(clips, augmentation, args.seed, epoch) if augmentation.enabled
               else clips)
    if args.fast_train and epoch < args.fast_train_epoch:
        fast = int(len(clips.frame_files) * args.fast_partial) // args.train_vi_len
        dataset = Subset(dataset, range(min(max(fast, 1), len(dataset))))
    if 0 < args.clips_per_epoch < len(dataset):
        # A fresh draw each epoch shows every motion of the set within a short epoch;
        # seeded by the epoch alone, so every rank and a resumed run draw the same.
        draw = torch.Generator().manual_seed(seed_for(args.seed, epoch) ^ CLIP_DRAW_SALT)
        chosen = torch.randperm(len(dataset), generator=draw)[:args.clips_per_epoch]
        dataset = Subset(dataset, chosen.sort().values.tolist())
    if dist.enabled:
        sampler = DistributedSampler(dataset, num_replicas=dist.world_size, rank=dist.rank,
                                     shuffle=True, seed=args.seed)
        sampler.set_epoch(epoch)
        shuffle, generator = False, None
    else:
        sampler, shuffle = None, True
        generator = torch.Generator().manual_seed(seed_for(args.seed, epoch))
    workers = args.num_workers if args.data_cache == "none" else 0
    loader = DataLoader(dataset, batch_size=args.batch_size, shuffle=shuffle, sampler=sampler,
                        generator=generator, num_workers=workers, drop_last=True,
                        pin_memory=pin_memory)
    if len(loader) == 0:
        # drop_last would silently train nothing and log zero losses.
        raise UserError(f"{len(dataset)} training clips over {dist.world_size} process(es) give "
                        f"no full batch of --batch_size {args.batch_size} (per process); lower "
                        "--batch_size or --train_vi_len, or use more data.")
    return loader
