"""massnet_sir: sum(S, I, R) conserved by every layer and the whole map; deterministic SIR data."""
import numpy as np
import pytest
import torch

import dsnet_zoo
from dsnet_zoo.models.massnet import MassNet, sir_dataset, sir_flow_map, sir_vector_field

SUM_TOL = 1e-12


def simplex(n, gen, dtype=torch.float64):
    x = torch.rand(n, 3, generator=gen, dtype=dtype)
    return x / x.sum(1, keepdim=True)


def rel_sum_error(x, y):
    scale = torch.maximum(x.abs().sum(1), y.abs().sum(1))
    return ((y.sum(1) - x.sum(1)).abs() / scale).max().item()


def randomised(model, gen):
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return model


def test_registered_not_a_classifier():
    model = dsnet_zoo.create("massnet_sir")
    assert isinstance(model, MassNet)
    assert model.num_classes == 0
    assert model.pretrained_cfg["architecture"] == "massnet_sir"
    assert model.num_params() == sum(p.numel() for p in model.parameters()) > 1000
    assert model(torch.rand(5, 3)).shape == (5, 3)
    with pytest.raises(ValueError, match="not a classifier"):
        dsnet_zoo.create("massnet_sir", num_classes=3)
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        model(torch.rand(5, 4))


def test_sum_conserved_by_every_layer_and_the_model_float64():
    gen = torch.Generator().manual_seed(0)
    model = randomised(dsnet_zoo.create("massnet_sir").double(), gen)
    x = simplex(64, gen)
    y = model(x)
    assert (y - x).abs().max() > 1e-2
    assert rel_sum_error(x, y) <= SUM_TOL
    kinds = {k for _, _, k in model.structure_blocks()}
    assert kinds == {"mass"}
    h = x
    for layer in model.layers:
        out = layer(h)
        assert rel_sum_error(h, out) <= SUM_TOL
        h = out


def test_sir_data_is_deterministic_and_accurate():
    d1 = sir_dataset()
    d2 = sir_dataset()
    assert d1["x_train"].shape == (900, 3) and d1["x_test"].shape == (100, 3)
    for k in d1:
        assert d1[k].dtype == np.float64
        np.testing.assert_array_equal(d1[k], d2[k])
    x = np.concatenate([d1["x_train"], d1["x_test"]])
    y = np.concatenate([d1["y_train"], d1["y_test"]])
    assert np.abs(x.sum(1) - 1).max() < 1e-14 and x.min() >= 0
    assert np.abs(y.sum(1) - 1).max() < 1e-13
    # S decreases, R increases, and the map is far from the identity
    assert (y[:, 0] <= x[:, 0]).all() and (y[:, 2] >= x[:, 2]).all()
    assert np.abs(y - x).max() > 0.05
    # RK4 with 1,000 steps agrees with 2,000 steps to 1e-12
    fine = sir_flow_map(x[:50], 1.0, steps=2000)
    assert np.abs(fine - y[:50]).max() < 1e-12
    assert not np.array_equal(sir_dataset(seed=1)["x_train"], d1["x_train"])


def test_sir_matches_an_independent_integrator():
    import scipy.integrate as scipy_integrate  # dev dependency: an independent integrator
    x0 = np.array([[0.5, 0.3, 0.2], [0.9, 0.05, 0.05]])
    ref = np.stack([scipy_integrate.solve_ivp(lambda t, y: sir_vector_field(y), (0, 1), v, rtol=1e-12,
                                              atol=1e-12, method="DOP853").y[:, -1] for v in x0])
    assert np.abs(sir_flow_map(x0) - ref).max() < 1e-10


def test_massnet_trains_on_sir_data():
    torch.manual_seed(0)
    d = sir_dataset(n=200)
    x, y = torch.from_numpy(d["x_train"]), torch.from_numpy(d["y_train"])
    model = dsnet_zoo.create("massnet_sir").double()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = torch.nn.functional.mse_loss(model(x), y).item()
    for _ in range(60):
        loss = torch.nn.functional.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first
    out = model(x)
    assert rel_sum_error(x, out) <= SUM_TOL
