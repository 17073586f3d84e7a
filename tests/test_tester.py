"""The submission file is exactly Kaggle's format and the scorer is the grader's metric."""
import math
import re

import numpy as np
import pytest
import torch
from PIL import Image

import Tester
import Trainer
from conftest import TEMPLATE_DIMS, TINY, run_cli, write_template_checkpoint
from tools import score_submission
from utils.errors import UserError
from utils.images import to_uint8
from utils.metrics import grader_scores
from utils.scoring import format_scores, score
from utils.submission import read_submission, write_submission
from utils.flags import default_args


def five_sequences(seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(630, 3, 32, 64, generator=g) for _ in range(5)]


def test_csv_format(tmp_path):
    sequences = five_sequences()
    sequences[0][3] = 1.7        # out of range values are clipped, never written
    sequences[0][4] = -0.2
    path = write_submission(tmp_path / "submission.csv", sequences)
    with open(path) as f:
        header = f.readline().strip().split(",")
        first = f.readline().strip().split(",")
    assert header == ["id"] + [str(i) for i in range(6144)]
    assert first[0] == "0" and len(first) == 6145
    ids, rows = read_submission(path, expected_rows=3150)
    assert ids.tolist() == list(range(3150)) and rows.shape == (3150, 6144)
    assert (rows[3] == 255).all() and (rows[4] == 0).all()
    for i, seq in enumerate(sequences):          # row 630*i is the given first frame
        expected = to_uint8(seq[0]).flatten().numpy()
        assert np.array_equal(rows[630 * i], expected)


def test_pixels_become_round_value_times_255_clipped():
    frames = torch.tensor([-0.2, 0.0, 0.1, 0.5, 0.2, 0.999, 1.0, 1.3]).view(2, 1, 1, 4)
    assert to_uint8(frames).flatten().tolist() == [0, 0, 26, 128, 51, 255, 255, 255]


def test_grader_metric_by_hand():
    ids = np.arange(1260)                        # two sequences
    true = np.zeros((1260, 6), dtype=np.int64)
    pred = true.copy()
    pred[0] = 200                                # frame 0 skipped
    pred[601:630] = 200                          # frames 601..629 skipped
    pred[1] = 10                                 # seq 0 frame 1: MSE 100 -> 28.13 dB
    pred[631:1230, :3] = 1                       # seq 1 frames 1..599: MSE 0.5
    result = grader_scores(pred, true, ids)
    cap, psnr_100, psnr_half = 100.0, 10 * math.log10(255 ** 2 / 100), 10 * math.log10(255 ** 2 / 0.5)
    seq0 = (psnr_100 + 599 * cap) / 600
    seq1 = (599 * psnr_half + cap) / 600
    assert result["per_sequence"][0] == pytest.approx(seq0)
    assert result["per_sequence"][1] == pytest.approx(seq1)
    assert result["score"] == pytest.approx((seq0 + seq1) / 2)
    assert result["public"] == pytest.approx(result["score"]) and result["private"] is None


def test_public_private_split_and_round_trip(tmp_path):
    truth = five_sequences(1)
    write_submission(tmp_path / "gt.csv", truth)
    assert score(write_submission(tmp_path / "perfect.csv", truth), tmp_path / "gt.csv")["score"] == 100.0
    noisy = [t.clone() for t in truth]
    noisy[4] = (noisy[4] + 4 / 255).clamp(0, 1)   # only the private part changes
    result = score(write_submission(tmp_path / "noisy.csv", noisy), tmp_path / "gt.csv")
    assert result["public"] == 100.0 and result["private"] < 100.0
    assert result["score"] == pytest.approx((3 * 100 + result["per_sequence"][3] +
                                             result["per_sequence"][4]) / 5)


def sequences(count, frames=630, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(frames, 3, 32, 64, generator=g) for _ in range(count)]


def test_scorer_takes_kaggle_solution_file_and_its_usage_split(tmp_path):
    submission = write_submission(tmp_path / "pred.csv", sequences(2, seed=2))
    plain = score(submission, write_submission(tmp_path / "gt.csv", sequences(2, seed=1)))
    lines = (tmp_path / "gt.csv").read_text().splitlines()
    usage = ["Public" if int(line.split(",")[0]) < 630 else "Private" for line in lines[1:]]
    solution = tmp_path / "solution.csv"
    solution.write_text("\n".join([lines[0] + ",Usage"] +
                                  [f"{line},{u}" for line, u in zip(lines[1:], usage)]) + "\n")
    kaggle = score(submission, solution)
    assert kaggle["score"] == pytest.approx(plain["score"], abs=1e-12)
    # the Usage column, not the sequence number, splits public from private
    assert plain["private"] is None and plain["public"] == pytest.approx(plain["score"])
    assert kaggle["public"] == pytest.approx(plain["per_sequence"][0])
    assert kaggle["private"] == pytest.approx(plain["per_sequence"][1])
    assert "rows marked Private" in format_scores(kaggle)


def test_scorer_with_fewer_sequences_reports_those_present(tmp_path):
    truth = sequences(2, seed=1)
    result = score(write_submission(tmp_path / "pred.csv", truth),
                   write_submission(tmp_path / "gt.csv", truth))
    assert result["sequences"] == [0, 1] and result["private"] is None
    assert result["public"] == result["score"] == 100.0
    text = format_scores(result)
    assert "nan" not in text.lower()
    assert "sequences 0-2; here 0, 1" in text and "sequences 3-4; here none present" in text
    assert "holds 2 of the 5 test sequences" in text


def test_scorer_rejects_values_outside_0_255_with_the_graders_score(tmp_path):
    truth = sequences(1, frames=20, seed=1)
    write_submission(tmp_path / "gt.csv", truth)
    path = write_submission(tmp_path / "pred.csv", truth)
    lines = path.read_text().splitlines()
    lines[3] = "2," + ",".join(["300"] * 6144)                # frame 2 of sequence 0
    path.write_text("\n".join(lines) + "\n")
    raw = grader_scores(*[read_submission(p, check_range=False)[1] for p in (path, tmp_path / "gt.csv")],
                        np.arange(20))["score"]
    with pytest.raises(UserError) as error:
        score(path, tmp_path / "gt.csv")
    message = str(error.value)
    assert "outside 0..255" in message and "line 4" in message
    assert f"would still score the raw values: {raw:.4f} dB" in message


def test_scorer_lists_every_problem(tmp_path):
    bad = tmp_path / "bad.csv"
    header = "id," + ",".join(map(str, range(6144)))
    good_row = ",".join(["0"] * 6144)
    bad.write_text("\n".join([header, "0," + good_row, "5," + good_row, "2," + ",".join(["300"] * 6144),
                              "3,1,2", "4," + ",".join(["0.5"] * 6144)]) + "\n")
    with pytest.raises(UserError) as error:
        read_submission(bad, expected_rows=3150)
    message = str(error.value)
    for expected in ("outside 0..255", "without 6145 columns", "non-integer", "ids must run",
                     "3150 rows expected"):
        assert expected in message


def tiny_model(**flags):
    args = default_args(*TINY, *[f for k, v in flags.items() for f in (f"--{k}", str(v))])
    torch.manual_seed(0)
    return Tester.Test_model(args).train(False)


def test_batched_rollout_equals_one_sequence_at_a_time():
    model = tiny_model()
    first, labels = torch.rand(3, 3, 32, 64), torch.rand(3, 20, 3, 32, 64)
    noise = torch.randn(3, 19, 4, 32, 64)
    batched = model.rollout(first, labels, noise=noise, chunk=7)
    for s in range(3):
        alone = model.rollout(first[s:s + 1], labels[s:s + 1], noise=noise[s:s + 1])
        torch.testing.assert_close(batched[s:s + 1], alone, atol=1e-5, rtol=1e-5)


def test_rollout_is_deterministic_with_a_seed():
    model = tiny_model()
    first, labels = torch.rand(2, 3, 32, 64), torch.rand(2, 12, 3, 32, 64)
    run = lambda seed: model.predict(first, labels, generator=torch.Generator().manual_seed(seed))  # noqa: E731
    assert torch.equal(run(3), run(3)) and not torch.equal(run(3), run(4))


def test_num_samples_averages_away_the_noise_of_z():
    """K rollouts averaged: the spread over seeds shrinks about K-fold (variance)."""
    model = tiny_model()
    with torch.no_grad():
        model.Decoder_Fusion[0].block[0].conv1[0].weight.mul_(20)   # make z matter more
    first, labels = torch.rand(2, 3, 32, 64), torch.rand(2, 4, 3, 32, 64)

    def spread(k):
        runs = torch.stack([model.predict(first, labels, num_samples=k,
                                          generator=torch.Generator().manual_seed(s))
                            for s in range(6)])
        assert torch.equal(runs[:, :, 0], first.expand(6, -1, -1, -1, -1))
        return runs[:, :, 1:].var(0).mean().item()

    single, averaged = spread(1), spread(8)
    assert single > 1e-6
    assert averaged < single / 3


@pytest.fixture
def trained(trained_run):
    return trained_run.folder / "last.ckpt"


def test_tester_cli_end_to_end(tiny_dataset, trained, tmp_path, capsys):
    """Tester.py as a user types it, then the scorer on its submission (in-process:
    tools/quickstart.py runs score_submission.py as a script)."""
    out = tmp_path / "out"
    proc = run_cli("Tester.py", "--DR", tiny_dataset, "--save_root", out, "--ckpt_path", trained,
                   "--make_gif", "--gt", tiny_dataset / "test_gt")
    assert "score (grader's metric" in proc.stdout
    ids, rows = read_submission(out / "submission.csv", expected_rows=3150)
    for i in range(5):
        assert (out / f"pred_seq{i}.gif").is_file() and (out / f"pred_seq{i}_with_label.gif").is_file()
    score_submission.main([str(out / "submission.csv"), "--gt", str(tiny_dataset / "test_gt")])
    assert "public  (sequences 0-2)" in capsys.readouterr().out


def args_for_tester(ckpt, *flags, data="unused", save_root="unused"):
    return Trainer.parse_args(["--DR", str(data), "--save_root", str(save_root),
                               "--ckpt_path", str(ckpt), *flags], Tester.get_tester_parser())


def test_tester_flags_that_contradict_the_checkpoint(trained, tmp_path):
    template = write_template_checkpoint(tmp_path / "template.ckpt",
                                         Trainer.VAE_Model(default_args(*TEMPLATE_DIMS)))
    for ckpt, flags, named in ((trained, ["--F_dim", "64"], "--F_dim 64 (checkpoint: 16)"),
                               (trained, ["--frame_H", "64"], "--frame_H 64 (checkpoint: 32)"),
                               (template, ["--N_dim", "12"], "--N_dim 12 (checkpoint: 4)")):
        with pytest.raises(UserError, match=re.escape(named)):
            Tester.load_test_model(args_for_tester(ckpt, *flags))


def test_template_checkpoint_is_tested_with_no_model_flags(small_dataset, tmp_path, capsys):
    model = Trainer.VAE_Model(default_args(*TEMPLATE_DIMS))
    template = write_template_checkpoint(tmp_path / "template.ckpt", model)
    # One test sequence of 8 frames: --no_sanity lets it through the Kaggle-format check.
    args = args_for_tester(template, "--no_sanity", data=small_dataset, save_root=tmp_path / "out")
    Tester.main(args)
    assert (args.F_dim, args.L_dim, args.N_dim, args.D_out_dim) == (24, 8, 4, 16)
    read_submission(tmp_path / "out" / "submission.csv", expected_rows=8)
    assert "does not record its output activation" in capsys.readouterr().err


def solid_val_video(root, value, frames=8):
    """A dataset root whose val video is one grey level throughout."""
    for folder, colour in (("val_img", round(value * 255)), ("val_label", 255)):
        (root / "val" / folder).mkdir(parents=True)
        for i in range(frames):
            Image.new("RGB", (64, 32), (colour,) * 3).save(root / "val" / folder / f"frame{i}.png")
    return root


@pytest.mark.parametrize("trained_with", ["sigmoid", "clamp"])
def test_output_activation_of_a_template_checkpoint_is_measured(tmp_path, capsys, trained_with):
    """A generator that outputs one constant: only the activation it was trained with
    maps that constant onto the video's grey level, and both tools must find it."""
    grey = 0.2
    data = solid_val_video(tmp_path / "data", grey)
    model = Trainer.VAE_Model(default_args(*TEMPLATE_DIMS))
    with torch.no_grad():
        model.Generator[-1].weight.zero_()
        model.Generator[-1].bias.fill_(math.log(grey / (1 - grey)) if trained_with == "sigmoid"
                                       else grey)
    template = write_template_checkpoint(tmp_path / "template.ckpt", model)
    tester = args_for_tester(template, data=data)
    Tester.load_test_model(tester)
    trainer = Trainer.parse_args(["--DR", str(data), "--save_root", str(tmp_path / "run"),
                                  "--ckpt_path", str(template), "--test", "--val_vi_len", "8"])
    Trainer.main(trainer)
    assert tester.output_activation == trainer.output_activation == trained_with
    printed = capsys.readouterr()
    assert float(re.search(r"val PSNR (\S+) dB", printed.out)[1]) > 60
    err = printed.err
    assert err.count("sigmoid gives") == 2 and f"using --output_activation {trained_with}" in err
    other = "clamp" if trained_with == "sigmoid" else "sigmoid"
    typed = args_for_tester(template, "--output_activation", other, data=data)
    Tester.load_test_model(typed)
    assert typed.output_activation == other and "sigmoid gives" not in capsys.readouterr().err


def test_tester_runs_the_networks_as_asked(trained, tmp_path):
    """Channels-last comes from the checkpoint's run, and a typed flag overrides it."""
    tester = lambda *flags: Tester.load_test_model(Trainer.parse_args(  # noqa: E731
        ["--DR", "unused", "--save_root", str(tmp_path), "--ckpt_path", str(trained), *flags],
        Tester.get_tester_parser()))
    weight = lambda model: model.frame_transformation[0].conv1.weight  # noqa: E731
    assert weight(tester()).is_contiguous(memory_format=torch.channels_last)
    assert not weight(tester("--no-channels_last")).is_contiguous(
        memory_format=torch.channels_last)


def test_a_rollout_that_is_not_finite_stops_before_the_submission(trained, tiny_dataset,
                                                                   tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "submission.csv").write_text("the previous submission")
    real_predict = Tester.Test_model.predict

    def overflowing(self, *args, **kwargs):
        frames = real_predict(self, *args, **kwargs)
        frames[1, 161:] = float("nan")                # sequence 1 breaks at frame 161
        return frames

    monkeypatch.setattr(Tester.Test_model, "predict", overflowing)
    args = args_for_tester(trained, "--device", "cpu", data=tiny_dataset, save_root=out)
    with pytest.raises(UserError, match="test sequence 1 is not finite from frame 161 on"):
        Tester.main.__wrapped__(args)
    assert (out / "submission.csv").read_text() == "the previous submission"


def test_an_ensemble_averages_every_frame_and_feeds_the_mean_back(trained, tmp_path):
    """--ensemble: each frame is the mean of the members' predictions from the same
    previous frame; with one member twice, it is that member's own rollout."""
    args = lambda *flags: Trainer.parse_args(  # noqa: E731
        ["--DR", "unused", "--save_root", str(tmp_path), "--ckpt_path", str(trained),
         "--device", "cpu", *flags], Tester.get_tester_parser())
    single = Tester.load_test_model(args())
    twice = Tester.load_test_model(args("--ensemble", str(trained)))
    assert len(twice.ensemble) == 1 and single.ensemble == []
    first, labels = torch.rand(2, 3, 32, 64), torch.rand(2, 6, 3, 32, 64)
    alone = single.predict(first, labels, z_scale=0)
    torch.testing.assert_close(twice.predict(first, labels, z_scale=0), alone,
                               atol=1e-6, rtol=0)
    # Two different models: frame 1 is the mean of their own frame-1 predictions.
    other = Tester.load_test_model(args())
    with torch.no_grad():
        for p in other.Generator[-1].parameters():
            p.add_(0.3)
    twice.ensemble = [other]
    mixed = twice.predict(first, labels, z_scale=0)
    own = other.predict(first, labels, z_scale=0)
    torch.testing.assert_close(mixed[:, 1], (alone[:, 1] + own[:, 1]) / 2, atol=1e-5, rtol=0)
    # Frame 2 is the mean of both models' predictions from the mixed frame 1.
    from_mixed = [m.predict(mixed[:, 1], labels[:, 1:3], z_scale=0)[:, 1] for m in (single, other)]
    torch.testing.assert_close(mixed[:, 2], sum(from_mixed) / 2, atol=1e-5, rtol=0)
