"""dsnet_zoo.verify and `dsnet-zoo verify`: claims measured, n/a where they don't apply, failures
detected (exit code 1) when a model's block or bound breaks its claim."""
import argparse
import json

import pytest
import torch
from torch import nn

import dsnet_zoo
from dsnet_zoo import registry
from dsnet_zoo.cli import verify_cmd
from dsnet_zoo.layers import HamiltonianBlock, MassPreservingBlock, SphereBlock, VolumePreservingBlock
from dsnet_zoo.layers.functional import conv_adjoint, conv_op
from dsnet_zoo.models import ZooClassifier
from dsnet_zoo.layers.diagnostics import empirical_lipschitz
from dsnet_zoo.verify import random_pairs, verify_model

INPUT = (3, 8, 8)


class TinyLipNet(ZooClassifier):
    """flatten -> W1 -> (ReLU) -> W2, each W scaled to spectral norm 1 in float64, so the product of
    the exact spectral norms is a provable L2 Lipschitz bound of the logits. ``claim`` multiplies
    the reported bound (``claim < 1`` makes the model lie)."""

    def __init__(self, relu=True, claim=1.0, seed=0):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        n = INPUT[0] * INPUT[1] * INPUT[2]
        w1 = torch.randn(32, n, generator=gen, dtype=torch.float64)
        w2 = torch.randn(10, 32, generator=gen, dtype=torch.float64)
        self.body = nn.Linear(n, 32, bias=False)
        self.head = nn.Linear(32, 10, bias=False)
        with torch.no_grad():
            self.body.weight.copy_(w1 / torch.linalg.matrix_norm(w1, 2))
            self.head.weight.copy_(w2 / torch.linalg.matrix_norm(w2, 2))
        self.relu = relu
        self.claim = claim
        self.num_classes, self.num_features = 10, 32
        self.pretrained_cfg = {"input_size": INPUT}

    def forward_features(self, x):
        z = self.body(x.flatten(1))
        return torch.relu(z) if self.relu else z

    def exact_constant(self):
        """The true constant when there is no ReLU: ||W2 W1||_2."""
        return torch.linalg.matrix_norm(self.head.weight.double() @ self.body.weight.double(), 2).item()

    def feature_lipschitz_upper_bound(self):
        return torch.linalg.matrix_norm(self.body.weight.double(), 2).item()

    def lipschitz_upper_bound(self):
        if not self.relu:
            return self.claim * self.exact_constant()
        return self.claim * self.feature_lipschitz_upper_bound() * torch.linalg.matrix_norm(
            self.head.weight.double(), 2).item()


def test_one_lipschitz_model_passes():
    model = TinyLipNet()
    report = verify_model(model, "tiny", steps=60)
    c = report.claims
    assert report.passed
    assert c["lipschitz_certified"].applies and abs(c["lipschitz_certified"].value - 1) < 1e-6
    emp = c["lipschitz_empirical"]
    assert emp.applies and emp.passed and 0.1 < emp.value <= c["lipschitz_certified"].value * (1 + 1e-6)
    assert c["feature_lipschitz_empirical"].applies and c["feature_lipschitz_empirical"].passed
    for k in ("symplectic", "volume", "inverse", "conserved_sum", "norm"):
        assert not c[k].applies and c[k].passed is None


def test_gradient_ascent_reaches_the_true_constant_of_a_linear_map():
    model = TinyLipNet(relu=False).double()
    x, y = random_pairs(INPUT)  # verify's own starting pairs, in [0, 1]
    ratio = empirical_lipschitz(model, x, y, steps=60, box=(0.0, 1.0))
    assert 0.99 * model.exact_constant() <= ratio <= model.exact_constant() * (1 + 1e-9)


def test_understated_bound_fails():
    model = TinyLipNet(relu=False, claim=0.9)
    report = verify_model(model, "liar", steps=60)
    assert not report.passed
    assert [f.claim for f in report.failures()] == ["lipschitz_empirical"]


def test_invalid_bound_fails():
    model = TinyLipNet()
    model.lipschitz_upper_bound = lambda: float("nan")
    report = verify_model(model, "nan", steps=5)
    assert report.claims["lipschitz_certified"].passed is False


@pytest.mark.parametrize("name,kwargs,claims", [
    ("hamnet_cifar10", dict(widths=(12, 48), depths=(1, 2)), {"symplectic", "inverse", "model_inverse"}),
    ("vpnet_cifar100", dict(widths=(12, 48), depths=(2, 1)), {"volume", "inverse", "model_inverse"}),
    ("massnet_sir", {}, {"conserved_sum"}),
])
def test_zoo_models_pass(name, kwargs, claims):
    model = dsnet_zoo.create(name, **kwargs)
    report = verify_model(model, name)
    assert report.passed
    assert {k for k, c in report.claims.items() if c.applies} == claims
    for k in claims:
        assert report.claims[k].blocks and all(b["passed"] for b in report.claims[k].blocks)


def test_model_inverse_on_real_images_and_a_wrong_inverse_caught(full_data_dir):
    from dsnet_zoo.data import load_dataset

    torch.manual_seed(0)
    model = dsnet_zoo.create("vpnet_cifar10", widths=(12, 48), depths=(1, 1)).eval()
    data = load_dataset("cifar10-full", "test", data_dir=full_data_dir, n=8)
    x, _ = data.float_batch(0, 8)
    report = verify_model(model, "vp", images=x, images_label=data.info["description"])
    claim = report.claims["model_inverse"]
    assert claim.passed and claim.value <= 1e-12 and "CIFAR-10 test" in claim.detail

    class ForgetsTheNorm(type(model)):
        """inverse() skips the last stage's batch norm: a wrong inverse once the norm is not the identity."""

        def inverse(self, features):
            stage = self.stages[-1]
            y = features
            for blk in reversed(stage.blocks()):
                y = blk.inverse(y)
            y = torch.nn.functional.pixel_shuffle(stage.lift.inverse(y), 2)
            for st in reversed(list(self.stages)[:-1]):
                y = st.inverse(y)
            return y * self.std.to(y.dtype) + self.mean.to(y.dtype)

    wrong = ForgetsTheNorm(10, widths=(12, 48), depths=(1, 1)).eval()
    wrong.load_state_dict(model.state_dict())
    with torch.no_grad():
        wrong.stages[-1].norm.running_var.fill_(4.0)
    report = verify_model(wrong, "wrong", images=x)
    assert report.claims["model_inverse"].passed is False and report.claims["model_inverse"].value > 1e-3


# -- broken blocks: verify must catch each ---------------------------------------------------------

class CoupledHamiltonian(HamiltonianBlock):
    """q's update also reads q: not symplectic."""

    def forward(self, x):
        q, p = x.chunk(2, dim=1)
        q = q + self.step * conv_adjoint(self.act(conv_op(p, self.weight_p, self.bias_p) + conv_op(q, self.weight_q)),
                                         self.weight_p)
        p = p - self.step * self.grad_q(q)
        return torch.cat([q, p], dim=1)


class SelfReadingVolume(VolumePreservingBlock):
    """x's update reads x: det J != 1."""

    def forward(self, z):
        x, v = z.chunk(2, dim=1)
        x = x + self.step * self.act(conv_op(v, self.weight_v, self.bias_v) + conv_op(x, self.weight_x))
        v = v + self.step * self.act(conv_op(x, self.weight_x, self.bias_x))
        return torch.cat([x, v], dim=1)


class WrongOrderInverse(VolumePreservingBlock):
    """Undoes the shears in the forward order: not the inverse."""

    def inverse(self, y):
        x, v = y.chunk(2, dim=1)
        x = x - self.step * self.act(conv_op(v, self.weight_v, self.bias_v))
        v = v - self.step * self.act(conv_op(x, self.weight_x, self.bias_x))
        return torch.cat([x, v], dim=1)


class SymmetricMass(MassPreservingBlock):
    """(A + A^T) 1: mass not conserved."""

    def field(self, x):
        a = self.upper_entries(x)
        return torch.zeros_like(x).index_add(1, self._rows, a).index_add(1, self._cols, a)


class EulerSphere(SphereBlock):
    """Explicit Euler x + h S(x) x: norm not conserved."""

    def forward(self, x):
        return x + self.step * (self.skew(x) @ x.unsqueeze(-1)).squeeze(-1)


class Holder(nn.Module):
    def __init__(self, blocks):
        super().__init__()
        self.blocks = nn.ModuleList(b for _, b in blocks)
        self._kinds = [k for k, _ in blocks]

    def structure_blocks(self):
        return [(f"blocks.{i}", b, k) for i, (b, k) in enumerate(zip(self.blocks, self._kinds))]


def _strong(block):
    with torch.no_grad():
        block.step.fill_(1.0)
        for p in block.parameters():
            if p.dim() == 1:
                p.normal_()
    return block


@pytest.mark.parametrize("bad,kind,failing", [
    (lambda: CoupledHamiltonian(4), "symplectic", {"symplectic", "inverse"}),
    (lambda: SelfReadingVolume(4), "volume", {"volume", "inverse"}),
    (lambda: WrongOrderInverse(4), "volume", {"inverse"}),
    (lambda: SymmetricMass(4, hidden=8, act="tanh"), "mass", {"conserved_sum"}),
    (lambda: EulerSphere(4), "sphere", {"norm"}),
])
def test_broken_blocks_fail(bad, kind, failing):
    torch.manual_seed(0)
    good = {"symplectic": HamiltonianBlock(4), "volume": VolumePreservingBlock(4),
            "mass": MassPreservingBlock(4, hidden=8, act="tanh"), "sphere": SphereBlock(4)}[kind]
    report = verify_model(Holder([(kind, _strong(good)), (kind, _strong(bad()))]), "broken")
    assert not report.passed
    assert {f.claim for f in report.failures()} == failing
    claim = report.claims[sorted(failing)[0]]
    assert [b["passed"] for b in claim.blocks] == [True, False]  # the good twin passes


# -- the command ---------------------------------------------------------------------------------

def _cli(argv):
    parser = argparse.ArgumentParser()
    verify_cmd.add_parser(parser.add_subparsers())
    args = parser.parse_args(["verify", *argv])
    return args.func(args)


def test_cli_pass_text_and_json(capsys):
    assert _cli(["massnet_sir"]) == 0
    out = capsys.readouterr().out
    assert "RESULT: PASS" in out and "n/a" in out and "conserved-sum" in out
    assert _cli(["massnet_sir", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["passed"] is True and data["claims"]["conserved_sum"]["applies"] is True
    assert data["claims"]["symplectic"]["applies"] is False


def test_cli_images_reconstructs_real_test_images(full_data_dir, capsys):
    torch.manual_seed(0)
    assert _cli(["vpnet_cifar10", "--images", "4", "--data-dir", str(full_data_dir), "--spatial", "2", "--json"]) == 0
    claim = json.loads(capsys.readouterr().out)["claims"]["model_inverse"]
    assert claim["passed"] is True and claim["value"] <= 1e-12
    assert "CIFAR-10 test, first 4 of 10,000 images" in claim["detail"]
    with pytest.raises(ValueError, match="no inverse"):
        _cli(["massnet_sir", "--images", "4"])


def test_cli_exit_code_1_on_violation(monkeypatch, capsys):
    def broken_verify_test(pretrained=False, **kwargs):
        torch.manual_seed(0)
        return Holder([("mass", _strong(SymmetricMass(4, hidden=8, act="tanh")))])

    # registered for this test only (monkeypatch restores the registry afterwards)
    name = "broken_verify_test"
    monkeypatch.setitem(registry._entrypoints, name, broken_verify_test)
    monkeypatch.setitem(registry._arch_meta, name, {"family": "test", "dataset": None, "description": "",
                                                    "module": __name__})
    monkeypatch.setitem(registry._pretrained, name, {})
    assert _cli([name]) == 1
    assert "RESULT: FAIL (conserved_sum)" in capsys.readouterr().out


def test_cli_rejects_pretrained_without_weights():
    with pytest.raises(dsnet_zoo.UnknownModelError, match="no pretrained weights"):
        _cli(["lipnet_conv_cifar10", "--pretrained"])
    with pytest.raises(ValueError, match="positive"):
        _cli(["massnet_sir", "--spatial", "0"])


def test_block_without_sample_input_is_a_clear_error():
    class Bare(nn.Module):
        def forward(self, x):
            return x

    with pytest.raises(ValueError, match="sample_input"):
        verify_model(Holder([("volume", Bare())]), "bare")
