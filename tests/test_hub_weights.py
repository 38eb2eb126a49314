"""Weights: resolution order, sha256, strict loading and the bad cases, in-process and offline."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import dsnet_zoo
from dsnet_zoo import registry
from dsnet_zoo.hub import (ChecksumError, WeightsCfg, WeightsError, checkout_hub_dir, read_hub_folder, sha256_file,
                           write_hub_repo)


def _publish(arch, tmp_path, tag="t", repo="org/repo", seed=1):
    torch.manual_seed(seed)
    model = dsnet_zoo.create(arch)
    cfg = WeightsCfg(tag=tag, architecture=arch, hf_hub_id=repo, num_classes=model.num_classes)
    root = tmp_path / "weights"
    result = write_hub_repo(model, cfg, root / repo)
    return model, root, result


def test_weights_dir_resolution_and_strict_sha_checked_load(scratch_arch, tmp_path, monkeypatch):
    model, root, result = _publish(scratch_arch, tmp_path)
    registry.register_pretrained(scratch_arch, result["cfg"])
    monkeypatch.setenv("DSNET_ZOO_WEIGHTS_DIR", str(tmp_path / "elsewhere") + ":" + str(root))
    loaded = dsnet_zoo.create(f"{scratch_arch}.t", pretrained=True)
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    assert loaded.pretrained_cfg["loaded_from"]["source"] == "weights-dir"
    assert loaded.pretrained_cfg["sha256"] == result["sha256"] == sha256_file(root / "org/repo/model.safetensors")
    assert not loaded.training  # pretrained models come back in eval mode


def test_checkpoint_path_wins_and_reads_pt_weights_only(scratch_arch, tmp_path):
    model = dsnet_zoo.create(scratch_arch)
    torch.save(model.state_dict(), tmp_path / "w.pt")
    loaded = dsnet_zoo.create(scratch_arch, checkpoint_path=tmp_path / "w.pt")
    assert torch.equal(loaded.body.weight, model.body.weight)
    # a pickle with code in it is refused by weights_only loading
    torch.save({"w": model.body.weight, "obj": _Evil()}, tmp_path / "evil.pt")
    with pytest.raises(WeightsError, match="weights_only"):
        dsnet_zoo.create(scratch_arch, checkpoint_path=tmp_path / "evil.pt")


class _Evil:
    pass


def test_sha256_mismatch_is_refused(scratch_arch, tmp_path, monkeypatch):
    _, root, result = _publish(scratch_arch, tmp_path)
    registry.register_pretrained(scratch_arch, WeightsCfg(**{**result["cfg"].to_dict(), "sha256": "f" * 64,
                                                            "architecture": None}))
    monkeypatch.setenv("DSNET_ZOO_WEIGHTS_DIR", str(root))
    with pytest.raises(ChecksumError, match="expects f{64}"):
        dsnet_zoo.create(f"{scratch_arch}.t", pretrained=True)
    # a user's local file is never deleted by the check, only refused
    assert (root / "org/repo/model.safetensors").is_file()


def test_truncated_safetensors_gives_a_clear_error(scratch_arch, tmp_path):
    model = dsnet_zoo.create(scratch_arch)
    save_file(model.state_dict(), tmp_path / "w.safetensors")
    data = (tmp_path / "w.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="truncated or corrupt"):
        dsnet_zoo.create(scratch_arch, checkpoint_path=tmp_path / "cut.safetensors")


def test_shape_mismatch_names_the_keys(scratch_arch, tmp_path):
    other = dsnet_zoo.create(scratch_arch, width=7)
    save_file(other.state_dict(), tmp_path / "w.safetensors")
    with pytest.raises(WeightsError, match=r"shape mismatch: body.weight: file \(7, 12\) vs model \(5, 12\)"):
        dsnet_zoo.create(scratch_arch, checkpoint_path=tmp_path / "w.safetensors")
    sd = dsnet_zoo.create(scratch_arch).state_dict()
    sd["extra"] = torch.zeros(1)
    del sd["head.bias"]
    save_file(sd, tmp_path / "keys.safetensors")
    with pytest.raises(WeightsError, match="missing keys: head.bias.*unexpected keys: extra"):
        dsnet_zoo.create(scratch_arch, checkpoint_path=tmp_path / "keys.safetensors")


def test_num_classes_conflicting_with_the_weights_is_an_error(scratch_arch, tmp_path, monkeypatch):
    _, root, result = _publish(scratch_arch, tmp_path)
    registry.register_pretrained(scratch_arch, result["cfg"])
    monkeypatch.setenv("DSNET_ZOO_WEIGHTS_DIR", str(root))
    with pytest.raises(WeightsError, match="reset_classifier"):
        dsnet_zoo.create(f"{scratch_arch}.t", pretrained=True, num_classes=7)
    model = dsnet_zoo.create(f"{scratch_arch}.t", pretrained=True, num_classes=3)
    model.reset_classifier(7)
    assert model(torch.rand(2, 12)).shape == (2, 7)
    assert model.pretrained_cfg["head_reset"] and model.pretrained_cfg["metrics"] == {}


def test_offline_without_a_local_copy_says_what_to_do(scratch_arch):
    registry.register_pretrained(scratch_arch, WeightsCfg(tag="remote", hf_hub_id="org/not-cached",
                                                          sha256="0" * 64, num_classes=3))
    with pytest.raises(WeightsError, match="not in the local Hugging Face cache.*DSNET_ZOO_WEIGHTS_DIR"):
        dsnet_zoo.create(f"{scratch_arch}.remote", pretrained=True)


def test_publish_writes_what_timm_and_the_hub_read(scratch_arch, tmp_path):
    model, root, result = _publish(scratch_arch, tmp_path)
    repo = root / "org/repo"
    config = json.loads((repo / "config.json").read_text())
    for key in ("architecture", "num_classes", "num_features", "pretrained_cfg", "model_args"):
        assert key in config
    assert config["pretrained_cfg"]["mean"] == [0.0, 0.0, 0.0]  # normalisation is inside the model
    assert config["dsnet_zoo"]["weights_cfg"]["sha256"] == result["sha256"]
    card = (repo / "README.md").read_text()
    front = card.split("---")[1]
    assert "library_name: dsnet_zoo" in front and "license:" in front and "tags:" in front
    # deterministic bytes: publishing the same weights again gives the same file
    with pytest.raises(FileExistsError, match="overwrite"):
        write_hub_repo(model, result["cfg"], repo)
    again = write_hub_repo(model, result["cfg"], repo, overwrite=True)
    assert again["sha256"] == result["sha256"]
    assert sorted(p.name for p in repo.iterdir()) == ["README.md", "config.json", "model.safetensors"]


def test_cli_list_info_publish(scratch_arch, tmp_path, capsys):
    from dsnet_zoo.cli import main

    assert main(["list", "scratch_*"]) == 0
    assert scratch_arch in capsys.readouterr().out
    assert main(["info", scratch_arch, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["family"] == "scratch" and info["num_params"] == 5 * 12 + 5 + 3 * 5 + 3
    model = dsnet_zoo.create(scratch_arch)
    save_file(model.state_dict(), tmp_path / "w.safetensors")
    out = tmp_path / "repo"
    assert main(["publish", "--model", f"{scratch_arch}.mine", "--weights", str(tmp_path / "w.safetensors"),
                 "--out", str(out), "--license", "MIT"]) == 0
    assert "sha256" in capsys.readouterr().out
    assert main(["publish", "--model", f"{scratch_arch}.mine", "--weights", str(tmp_path / "w.safetensors"),
                 "--out", str(out)]) == 2
    assert "already holds" in capsys.readouterr().err
    assert main(["info", "no_such_model"]) == 2
    assert "unknown model" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------
# local repo folders: one checked reader (hub.read_hub_folder) behind timm's local-dir and load_for_eval


def _alter_one_byte(path):
    """Flip one byte of the last tensor's data: still a readable safetensors file, other weights."""
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))


def _create_from_folder(folder):
    arch, cfg, weights = read_hub_folder(folder)
    return dsnet_zoo.create(arch, weights=cfg, checkpoint_path=weights)


def _loaders(folder):
    """Every way a repo folder's weights are loaded, each returning the model."""
    timm = pytest.importorskip("timm")
    from dsnet_zoo.evaluation import load_for_eval

    return {
        "read_hub_folder": lambda: _create_from_folder(folder),
        "timm local-dir": lambda: timm.create_model(f"local-dir:{folder}", pretrained=True),
        "load_for_eval folder": lambda: load_for_eval(str(folder))[0],
        "load_for_eval folder/": lambda: load_for_eval(f"{folder}/")[0],
        "load_for_eval file in folder": lambda: load_for_eval(str(folder / "model.safetensors"))[0],
    }


def test_repo_folder_loads_through_the_checked_reader(scratch_arch, tmp_path):
    from dsnet_zoo.evaluation import load_for_eval

    model, root, result = _publish(scratch_arch, tmp_path, tag="mine")
    folder = root / "org/repo"
    arch, cfg, weights = read_hub_folder(folder)
    assert (arch, cfg.tag, cfg.sha256) == (scratch_arch, "mine", result["sha256"])
    assert weights == folder / "model.safetensors"
    assert cfg.hf_hub_id == "org/repo" and cfg.num_classes == 3  # as recorded in config.json
    for how, load in _loaders(folder).items():
        loaded = load()
        for k, v in model.state_dict().items():
            assert torch.equal(v, loaded.state_dict()[k]), (how, k)
        assert loaded.pretrained_cfg["sha256"] == result["sha256"], how  # the folder's cfg, not a registered one
        assert loaded.pretrained_cfg["loaded_from"]["sha256"] == result["sha256"], how
    _, ident = load_for_eval(str(folder))
    assert ident["name"] == f"{scratch_arch}.mine" and ident["tag"] == "mine" and ident["checkpoint"] == "repo/"
    assert ident["weights_sha256"] == result["sha256"]
    with pytest.raises(ValueError, match="architecture is"):
        load_for_eval(str(folder), arch="lipnet_cifar10")
    with pytest.raises(FileNotFoundError, match="repo folder"):
        load_for_eval(f"{tmp_path}/nothing/")


def test_repo_folder_with_one_byte_altered_is_refused_on_every_path(scratch_arch, tmp_path):
    from dsnet_zoo.evaluation import load_for_eval

    _, root, result = _publish(scratch_arch, tmp_path)
    folder = root / "org/repo"
    weights = folder / "model.safetensors"
    _alter_one_byte(weights)
    got = sha256_file(weights)
    for how, load in _loaders(folder).items():
        with pytest.raises(ChecksumError) as e:
            load()
        msg = str(e.value)
        # which file, expected vs got, what to do
        assert str(weights) in msg and got in msg and f"expects {result['sha256']}" in msg, (how, msg)
        assert "dsnet-zoo publish" in msg and "--overwrite" in msg and "fresh copy" in msg, (how, msg)
    assert weights.is_file()  # refused, never deleted
    # the caller's own file, named with its architecture, is loaded as it is (no record to check it against)
    loaded, ident = load_for_eval(str(weights), arch=scratch_arch)
    assert ident["weights_sha256"] == got and ident["checkpoint"] == "model.safetensors"


def test_repo_folder_without_a_sha256_says_how_to_republish(scratch_arch, tmp_path, capsys):
    """A config.json that records no sha256 (not written by dsnet_zoo: timm's own, or by hand) is refused,
    not loaded unchecked; the message's command re-publishes the folder, which then loads."""
    from dsnet_zoo.cli import main

    model, root, _ = _publish(scratch_arch, tmp_path)
    folder = root / "org/repo"
    config = json.loads((folder / "config.json").read_text())
    del config["dsnet_zoo"]  # timm's layout: the weights cfg in pretrained_cfg only
    del config["pretrained_cfg"]["sha256"]
    (folder / "config.json").write_text(json.dumps(config))
    for how, load in _loaders(folder).items():
        with pytest.raises(WeightsError, match="records no sha256") as e:
            load()
        assert not isinstance(e.value, ChecksumError), how
    command = str(e.value).split("`")[1]
    assert command.startswith("dsnet-zoo publish ") and "--overwrite" in command
    assert main(command.split()[1:]) == 0
    capsys.readouterr()
    arch, cfg, _ = read_hub_folder(folder)
    assert arch == scratch_arch and cfg.sha256 == sha256_file(folder / "model.safetensors")
    for how, load in _loaders(folder).items():
        assert torch.equal(load().state_dict()["head.weight"], model.state_dict()["head.weight"]), how


def test_repo_folder_reader_refuses_what_is_not_a_repo(tmp_path):
    with pytest.raises(WeightsError, match="no config.json"):
        read_hub_folder(tmp_path)
    (tmp_path / "config.json").write_text("[1, 2]")
    with pytest.raises(WeightsError, match="not a dsnet_zoo/timm config"):
        read_hub_folder(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"architecture": "x", "pretrained_cfg": {
        "tag": "t", "sha256": "0" * 64, "filename": "../outside.safetensors"}}))
    with pytest.raises(WeightsError, match="not a file name inside the folder"):
        read_hub_folder(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"architecture": "x", "pretrained_cfg": {"sha256": "0" * 64}}))
    with pytest.raises(WeightsError, match="has no model.safetensors"):
        read_hub_folder(tmp_path)


def test_committed_repo_folders_read_and_check():
    """The checkout's hub/dsnet-zoo/* folders: what read_hub_folder returns is their registered tag."""
    hub = Path(__file__).resolve().parents[1] / "hub"  # the tests run from the checkout, which commits hub/
    assert checkout_hub_dir() == hub  # and the package resolves the zoo's own weights there
    folders = sorted(p for p in (hub / "dsnet-zoo").iterdir() if (p / "config.json").is_file())
    assert folders
    for folder in folders:
        arch, cfg, weights = read_hub_folder(folder)
        registered = registry.get_pretrained_cfg(f"{arch}.{cfg.tag}")
        assert (cfg.sha256, cfg.hf_hub_id, weights.name) == (registered.sha256, registered.hf_hub_id,
                                                             registered.filename), folder
