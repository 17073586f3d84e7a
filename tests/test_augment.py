"""Whole-clip augmentation: one transform per clip, on frames and labels alike,
drawn from (seed, epoch, clip), for training clips only."""
import math

import pytest
import torch
from torch.utils.data import Subset

import Tester
from Trainer import VAE_Model
from dataloader import Dataset_Dance
from utils.augment import AugmentedClips, ClipAugmentation, clip_generator
from utils.errors import UserError
from utils.flags import default_args, validate_args
from utils.pose import pose_centre

GEOMETRIC = ClipAugmentation(flip=0.5, shift=0.25, scale=(0.8, 2.0))
EVERYTHING = ClipAugmentation(flip=0.5, shift=0.25, scale=(0.8, 2.0), color=0.1)


def blob_clip(T=4, H=16, W=32, seed=0):
    """A clip whose frames are all one random image, and labels that are the frame
    itself: any difference after augmentation is a difference of transforms."""
    image = torch.rand(3, H, W, generator=torch.Generator().manual_seed(seed))
    frames = image.expand(T, 3, H, W).clone()
    return frames, frames.clone()


def test_pose_centre_is_where_the_strokes_are():
    labels = torch.ones(3, 3, 8, 20)               # white: no pose
    labels[0, :, 2:6, 4] = 0.0                     # a black stroke in column 4, rows 2-5
    labels[1, 1, 7, 15] = 0.9                      # a faint green dot at row 7, column 15
    centre = pose_centre(labels)
    assert centre[0].tolist() == pytest.approx([4.5 / 20, 4.0 / 8])
    assert centre[1].tolist() == pytest.approx([15.5 / 20, 7.5 / 8])
    assert all(math.isnan(v) for v in centre[2].tolist())


@pytest.mark.parametrize("clip", range(6))
def test_every_frame_and_its_label_get_the_same_transform(clip):
    frames, labels = blob_clip(seed=clip)
    transform = GEOMETRIC.draw(clip_generator(0, 0, clip))
    out_frames, out_labels = GEOMETRIC.apply(frames, labels, transform)
    assert not torch.allclose(out_frames, frames)          # something was done
    assert torch.equal(out_frames, out_labels)             # the same to frames and labels
    assert all(torch.equal(f, out_frames[0]) for f in out_frames)   # and to every frame


def test_colour_changes_the_frames_only_and_keeps_them_in_range():
    frames, labels = blob_clip()
    colour = ClipAugmentation(color=0.5)
    out_frames, out_labels = colour.apply(frames, labels, colour.draw(clip_generator(0, 0, 1)))
    assert torch.equal(out_labels, labels)                 # a label's colours name limbs
    assert not torch.allclose(out_frames, frames)
    assert 0.0 <= out_frames.min() and out_frames.max() <= 1.0


def test_a_shift_moves_the_clip_by_whole_pixels_and_repeats_the_edge():
    frames, labels = blob_clip(W=32)
    shift = ClipAugmentation(shift=0.25)
    transform = {**shift.draw(clip_generator(0, 0, 0)), "shift": 5 / 32}   # 5 pixels right
    out, _ = shift.apply(frames, labels, transform)
    torch.testing.assert_close(out[..., 5:], frames[..., :-5], atol=1e-6, rtol=0)
    torch.testing.assert_close(out[..., :5], frames[..., :1].expand_as(out[..., :5]),
                               atol=1e-6, rtol=0)


def test_a_mirror_reverses_the_columns():
    frames, labels = blob_clip()
    flip = ClipAugmentation(flip=1.0)
    out, _ = flip.apply(frames, labels, flip.draw(clip_generator(0, 0, 0)))
    torch.testing.assert_close(out, frames.flip(-1), atol=1e-6, rtol=0)


def test_zooming_in_keeps_the_dancer_in_view():
    """A close-up is of the dancer, wherever he stands: at 3x, a dancer at the
    frame's right edge stays within the middle of the view."""
    labels = torch.ones(2, 3, 32, 64)
    labels[:, :, 10:22, 56:59] = 0.0                        # a pose near the right edge
    for zoom in (ClipAugmentation(scale=(3.0, 3.0)), ClipAugmentation(scale=(3.0, 3.0), flip=1.0)):
        for clip in range(8):
            _, out = zoom.apply(labels.clone(), labels, zoom.draw(clip_generator(0, 0, clip)))
            x, _ = pose_centre(out)[0].tolist()
            assert 0.1 < x < 0.9, (zoom, clip)              # in view, not cut off


def test_the_draw_depends_on_seed_epoch_and_clip_only():
    data = [blob_clip(seed=i) for i in range(6)]
    epoch0 = AugmentedClips(data, EVERYTHING, seed=3, epoch=0)
    # A Subset (--clips_per_epoch, a rank's share) shows clip i as the set does.
    for i, (frames, labels) in zip([4, 1], Subset(epoch0, [4, 1])):
        assert torch.equal(frames, epoch0[i][0]) and torch.equal(labels, epoch0[i][1])
    assert torch.equal(epoch0[2][0], AugmentedClips(data, EVERYTHING, 3, 0)[2][0])
    assert not torch.equal(epoch0[2][0], AugmentedClips(data, EVERYTHING, 3, 1)[2][0])
    assert not torch.equal(epoch0[2][0], AugmentedClips(data, EVERYTHING, 4, 0)[2][0])


def test_turning_one_transform_on_leaves_the_others_draws_alone():
    shift_only = ClipAugmentation(shift=0.25).draw(clip_generator(0, 0, 3))
    with_flip = ClipAugmentation(shift=0.25, flip=0.5).draw(clip_generator(0, 0, 3))
    assert {k: v for k, v in with_flip.items() if k != "flip"} == \
        {k: v for k, v in shift_only.items() if k != "flip"}


AUG_FLAGS = ["--aug_flip", "0.5", "--aug_shift", "0.25", "--aug_scale", "0.8", "2",
             "--aug_color", "0.1"]


def test_training_clips_are_augmented_and_val_and_test_never(small_dataset, monkeypatch):
    """With every --aug_* flag on, a spy on the transform sees the training
    clips go through it, and neither a validation nor a test rollout."""
    applied = []
    real_apply = ClipAugmentation.apply
    monkeypatch.setattr(ClipAugmentation, "apply",
                        lambda self, *a: applied.append(1) or real_apply(self, *a))
    args = default_args("--DR", str(small_dataset), "--F_dim", "16", "--L_dim", "16",
                        "--N_dim", "4", "--D_out_dim", "24", "--batch_size", "1",
                        "--val_vi_len", "6", *AUG_FLAGS)
    model = VAE_Model(args)
    plain = Dataset_Dance(small_dataset, None, "train", args.train_vi_len)
    augmented = model.train_dataloader().dataset
    assert not torch.equal(augmented[0][0], plain[0][0]) and applied
    applied.clear()
    model.eval()                                          # every val video rolled out
    tester = Tester.Test_model(args)
    first, labels = tester.val_dataloader()[0]
    tester.predict(first, labels[None, :6], z_scale=0)    # a test sequence rolled out
    assert applied == []


@pytest.mark.parametrize("flags, named", [
    (["--aug_flip", "1.5"], "--aug_flip"),
    (["--aug_shift", "-0.1"], "--aug_shift"),
    (["--aug_scale", "2", "1"], "--aug_scale"),
    (["--aug_scale", "0", "1"], "--aug_scale"),
])
def test_an_impossible_augmentation_is_refused_naming_the_flag(flags, named):
    with pytest.raises(UserError, match=named):
        validate_args(default_args(*flags))
