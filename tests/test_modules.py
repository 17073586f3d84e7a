"""The networks reproduce the course template numerically and structurally."""
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from modules import Decoder_Fusion, Gaussian_Predictor, Generator, Label_Encoder, RGB_Encoder

FIXTURES = Path(__file__).parent / "fixtures"


def template_networks(F_dim=128, L_dim=32, N_dim=12, D_out_dim=192):
    return nn.ModuleDict({
        "frame_transformation": RGB_Encoder(3, F_dim),
        "label_transformation": Label_Encoder(3, L_dim),
        "Gaussian_Predictor": Gaussian_Predictor(F_dim + L_dim, N_dim),
        "Decoder_Fusion": Decoder_Fusion(F_dim + L_dim + N_dim, D_out_dim),
        "Generator": Generator(input_nc=D_out_dim, output_nc=3),
    })


def fill_by_contract_rule(module):
    """The rule the reference outputs were made with: the i-th state_dict key in
    sorted order is filled from a generator seeded with i (0-dim entries 0;
    2+-dim entries 0.5 randn / sqrt(fan-in); running_var 0.5 + rand; other 1-dim
    entries 0.1 randn)."""
    state = module.state_dict()
    for i, key in enumerate(sorted(state)):
        shape = state[key].shape
        g = torch.Generator().manual_seed(i)
        if len(shape) == 0:
            value = torch.zeros((), dtype=state[key].dtype)
        elif len(shape) >= 2:
            value = 0.5 * torch.randn(shape, generator=g) / math.sqrt(math.prod(shape[1:]))
        elif "running_var" in key:
            value = 0.5 + torch.rand(shape, generator=g)
        else:
            value = 0.1 * torch.randn(shape, generator=g)
        state[key] = value
    module.load_state_dict(state)


@pytest.fixture(scope="module")
def reference():
    return torch.load(FIXTURES / "reference_outputs.pt", weights_only=True)


@torch.no_grad()
def test_modules_reproduce_template_outputs(reference):
    nets = template_networks(**reference["args"])
    fill_by_contract_rule(nets)
    nets.eval()
    inputs, expected = reference["inputs"], reference["outputs"]

    frame_feature = nets["frame_transformation"](inputs["img"])
    label_feature = nets["label_transformation"](inputs["label"])
    predictor = nets["Gaussian_Predictor"]
    mu, logvar = nn.Sequential.forward(predictor, torch.cat([frame_feature, label_feature], 1)).chunk(2, 1)
    fusion = nets["Decoder_Fusion"](frame_feature, label_feature, inputs["z"])
    generated = nets["Generator"](fusion)

    got = dict(frame_feature=frame_feature, label_feature=label_feature, mu=mu,
               logvar=logvar, fusion=fusion, generator=generated)
    assert set(got) == set(expected)
    for name, value in got.items():
        torch.testing.assert_close(value, expected[name], atol=1e-5, rtol=1e-5, msg=name)


def test_predictor_forward_returns_its_z_mu_and_logvar():
    """What the reference test does not run: the predictor's own forward, which
    concatenates (frame, label) in that order, splits mu before logvar, and draws
    z = mu + eps * exp(logvar / 2)."""
    nets = template_networks(16, 16, 4, 24)
    fill_by_contract_rule(nets)
    features = torch.randn(2, 32, 8, 16)
    torch.manual_seed(1)
    z, mu, logvar = nets["Gaussian_Predictor"](features[:, :16], features[:, 16:])
    mu_ref, logvar_ref = nn.Sequential.forward(nets["Gaussian_Predictor"], features).chunk(2, 1)
    torch.testing.assert_close(mu, mu_ref)
    torch.testing.assert_close(logvar, logvar_ref)
    torch.manual_seed(1)
    torch.testing.assert_close(z, mu_ref + torch.randn_like(mu_ref) * (0.5 * logvar_ref).exp())


def test_state_dict_keys_and_shapes_match_template():
    """Checkpoints of the template load here and back: the same keys and shapes,
    the same parameter count (values alone would not show a renamed layer)."""
    expected = json.loads((FIXTURES / "state_dict.json").read_text())
    state = template_networks(**expected["args"]).state_dict()
    assert {k: list(v.shape) for k, v in state.items()} == expected["state_dict"]
    n_params = sum(p.numel() for p in template_networks().parameters())
    assert n_params == 1_585_620


def test_reparameterize_matches_mean_and_variance():
    torch.manual_seed(0)
    mu = torch.tensor([-1.0, 0.0, 2.5])
    logvar = torch.tensor([-2.0, 0.0, 1.0])
    samples = Gaussian_Predictor.reparameterize(
        mu.expand(200_000, 3), logvar.expand(200_000, 3))
    assert samples.shape == (200_000, 3)
    torch.testing.assert_close(samples.mean(0), mu, atol=0.02, rtol=0)
    torch.testing.assert_close(samples.var(0), logvar.exp(), atol=0, rtol=0.02)


def test_reparameterize_with_vanishing_variance_gives_mu():
    mu = torch.randn(4, 12, 8, 16)
    z = Gaussian_Predictor.reparameterize(mu, torch.full_like(mu, -1e4))
    torch.testing.assert_close(z, mu, atol=0, rtol=0)
