"""Predict every test sequence and write the Kaggle submission.

    python Tester.py --DR <dataset> --save_root <dir> --ckpt_path <ckpt>

Model settings (dims, output activation, frame size) come from the checkpoint;
for a course-template checkpoint, which records none, the dims are read off the
weights and the output activation is measured on the val video.
Each sequence starts from its given frame 0; frames 1..629 are predicted from
the labels with z drawn from the prior, all sequences in one batch.
"""
import argparse
import time
from pathlib import Path

import torch

from dataloader import DanceTestSequences, list_images
from Trainer import VAE_Model, compile_networks, read_checkpoint
from utils import from_checkpoint, saveroot
from utils.errors import UserError, exit_on_user_error
from utils.flags import get_args_parser, parse_args
from utils.media import side_by_side
from utils.metrics import FRAMES_PER_SEQUENCE
from utils.runtime import resolve_device
from utils.scoring import format_scores, score
from utils.submission import FRAME_SHAPE, write_submission


def get_tester_parser(paths_required=True):
    parser = get_args_parser(for_testing=True, paths_required=paths_required)
    parser.description = "Roll out the test sequences and write submission.csv."
    test = parser.add_argument_group("testing")
    test.add_argument("--no_sanity", action="store_true",
                      help="skip the checks of sequence length and frame size")
    test.add_argument("--make_gif", action="store_true",
                      help="also write label | prediction GIFs per sequence")
    test.add_argument("--num_samples", type=int, default=1,
                      help="average this many rollouts (different z) per sequence")
    test.add_argument("--z_scale", type=float, default=1.0,
                      help="z at inference = z_scale x N(0, I): 1 samples the prior, 0 is "
                      "its mean")
    test.add_argument("--ensemble", nargs="+", default=[], metavar="CKPT",
                      help="further checkpoints: each frame is the mean of every model's "
                      "prediction (--ckpt_path's and these), fed back as one")
    test.add_argument("--gt", default=None,
                      help="ground truth (folder of <i>/frame<N>.png, CSV, or Kaggle's solution "
                      "file): print the score")
    return parser


class Test_model(VAE_Model):
    """The trained model and the test split: ``eval()`` rolls out every test
    sequence and writes submission.csv and the GIFs. No optimizer is built.
    ``ensemble``: further Test_models whose predictions are averaged with its own."""

    def __init__(self, args):
        super().__init__(args)
        self.ensemble = []   # a plain list: the members' weights are not this model's

    @torch.no_grad()
    def predict(self, first_frames, labels, num_samples=1, z_scale=1.0, generator=None):
        """first_frames (S, 3, H, W), labels (S, T, 3, H, W) -> (S, T, 3, H, W).

        All S sequences (times num_samples) roll out as one batch; with
        num_samples > 1 the samples' frames are averaged per sequence.
        """
        S = first_frames.shape[0]
        repeat = 1 if z_scale == 0 else num_samples
        frames = self.rollout(first_frames.repeat(repeat, 1, 1, 1), labels.repeat(repeat, 1, 1, 1, 1),
                              generator=generator, z_scale=z_scale, progress=True,
                              ensemble=self.ensemble)
        frames = frames.unflatten(0, (repeat, S)).mean(0)                 # (S, T, 3, H, W)
        frames[:, 0] = first_frames   # the given frame, exactly (a float mean may round)
        return frames

    def val_dataloader(self):
        """The test split of --DR: (first frame (1, 3, H, W), labels (T, 3, H, W)) per sequence."""
        return DanceTestSequences(self.args.DR, (self.args.frame_H, self.args.frame_W),
                                  cache=getattr(self.args, "data_cache", "none"),
                                  cache_dir=getattr(self.args, "cache_dir", None))

    def load_checkpoint(self, ckpt=None):
        """VAE_Model's, without the run state: testing needs the settings and weights."""
        return super().load_checkpoint(ckpt, resume=False)

    @torch.no_grad()
    def val_one_step(self, img, label, idx=0, generator=None):
        """Test sequences rolled out from their first frames img (S, 3, H, W) and
        labels (S, T, 3, H, W), or one sequence's (1, 3, H, W) and (T, 3, H, W) as
        val_dataloader() gives them; idx: their positions (one int, or S of them).
        Returns their frames (S, T, 3, H, W) on the CPU, each sequence also written
        as pred_seq<idx>.gif. A rollout that is not finite stops here, before its
        GIFs and the submission are written. z: from ``generator``, else seeded by
        --seed."""
        if label.dim() == 4:   # one sequence, as its val_dataloader() item gives it
            img, label = img.reshape(1, *img.shape[-3:]), label[None]
        idx = [idx] if isinstance(idx, int) else list(idx)
        if generator is None:
            generator = torch.Generator(self.device).manual_seed(self.args.seed)
        frames = self.predict(img.to(self.device), label.to(self.device), self.args.num_samples,
                              self.args.z_scale, generator).cpu()
        require_finite(frames, idx, self.args)
        for index, sequence in zip(idx, frames):
            self.make_gif(sequence, Path(self.args.save_root) / f"pred_seq{index}.gif")
        return frames

    @torch.no_grad()
    def eval(self):
        """Every test sequence rolled out by val_one_step, all sequences of a length
        in one batch; submission.csv and a GIF per sequence in --save_root.
        Returns the predicted sequences."""
        args = self.args
        save_root = saveroot.prepare(args.save_root)
        dataset = self.val_dataloader()
        if not args.no_sanity:
            sanity_check(dataset, (args.frame_H, args.frame_W))

        started = time.time()
        generator = torch.Generator(self.device).manual_seed(args.seed)
        items = [dataset[i] for i in range(len(dataset))]
        by_length = {}
        for index, (_, labels) in enumerate(items):
            by_length.setdefault(labels.shape[0], []).append(index)
        predictions = [None] * len(items)
        for indices in by_length.values():   # one batch per sequence length (one, normally)
            first = torch.cat([items[i][0] for i in indices])
            labels = torch.stack([items[i][1] for i in indices])
            for i, seq in zip(indices, self.val_one_step(first, labels, indices, generator)):
                predictions[i] = seq
        rollout_seconds = time.time() - started

        started = time.time()
        csv_path = write_submission(save_root / "submission.csv", predictions)
        csv_seconds = time.time() - started
        if args.make_gif:
            for index, (seq, (_, labels)) in enumerate(zip(predictions, items)):
                self.make_gif(side_by_side([labels, seq]),
                              save_root / f"pred_seq{index}_with_label.gif")
        print(f"{len(predictions)} sequences rolled out (and their GIFs written) in "
              f"{rollout_seconds:.1f} s on "
              f"{self.device}; '{csv_path}' written in {csv_seconds:.1f} s; GIFs in "
              f"'{save_root}'")
        if args.gt:
            print(format_scores(score(csv_path, args.gt)))
        return predictions


def sanity_check(dataset, frame_size):
    """Kaggle expects FRAMES_PER_SEQUENCE frames of FRAME_SHAPE per sequence."""
    problems = []
    if (3, *frame_size) != FRAME_SHAPE:
        problems.append(f"frames are {frame_size[0]}x{frame_size[1]}, the submission needs "
                        f"{FRAME_SHAPE[1]}x{FRAME_SHAPE[2]}")
    for name, first, labels in zip(dataset.names, dataset.first_frame_files, dataset.label_files):
        given = list_images(Path(first).parent)
        if len(given) != 1:
            problems.append(f"sequence '{name}': {len(given)} frames in its test_img folder, "
                            "expected exactly one (frame0.png)")
        if len(labels) != FRAMES_PER_SEQUENCE:
            problems.append(f"sequence '{name}': {len(labels)} labels, expected "
                            f"{FRAMES_PER_SEQUENCE}")
    if problems:
        raise UserError("the test split does not fit the Kaggle format (--no_sanity skips this):"
                        "\n  - " + "\n  - ".join(problems))


def load_test_model(args):
    """Checkpoint -> Test_model on the chosen device, with the checkpoint's settings;
    --ensemble's checkpoints become its ensemble, each with its own settings."""
    if not args.ckpt_path:
        raise UserError("--ckpt_path is required: the checkpoint to test.")
    model = load_one(args)
    # Typed flags (--amp, --bn_rollout, ...) hold for every member; the model's own
    # settings come from each member's checkpoint.
    typed = [f for f in from_checkpoint.typed_flags(args) if f not in from_checkpoint.MODEL_FLAGS]
    for path in getattr(args, "ensemble", []):
        member = load_one(argparse.Namespace(**{**vars(args), "ckpt_path": path,
                                                "explicit_flags": typed}))
        if (member.args.frame_H, member.args.frame_W) != (args.frame_H, args.frame_W):
            raise UserError(f"--ensemble '{path}' was trained on {member.args.frame_H}x"
                            f"{member.args.frame_W} frames, --ckpt_path on {args.frame_H}x"
                            f"{args.frame_W}: an ensemble's members need one frame size.")
        model.ensemble.append(member)
    return model


def load_one(args):
    ckpt = read_checkpoint(args, resume=False)
    model = Test_model(args)   # at the dims the checkpoint's settings gave args
    model.load_checkpoint(ckpt)
    model.to(resolve_device(args.device, args.gpu))
    return compile_networks(model, args).train(False)


def require_finite(predictions, positions, args):
    """A rollout that overflowed would reach the CSV as black frames: stop instead,
    naming where it broke, before any earlier submission is replaced."""
    for position, frames in zip(positions, predictions):
        bad = (~torch.isfinite(frames)).flatten(1).any(dim=1).nonzero()
        if len(bad):
            raise UserError(
                f"the rollout of test sequence {position} is not finite from frame "
                f"{int(bad[0])} on; "
                "no submission was written. Try --amp off (this run: "
                f"--amp {args.amp}), or another checkpoint of the run (an earlier "
                "epoch=N.ckpt).")


@exit_on_user_error
def main(args):
    if args.num_samples < 1:
        raise UserError(f"--num_samples must be >= 1, got {args.num_samples}.")
    return load_test_model(args).eval()


if __name__ == "__main__":
    main(parse_args(parser=get_tester_parser()))
