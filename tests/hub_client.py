"""Run loading scenarios in a fresh process, where HF_ENDPOINT / HF_HUB_OFFLINE / HF_HOME are read
at import as they are for users. Called by tests/test_hub_roundtrip.py:

    python tests/hub_client.py SPEC.json OUT.pt

SPEC: {"register": [{"arch", "cfg": {...WeightsCfg...}}], "input_seed": int, "repo_root": str,
       "scenarios": [{"id", "how": "create"|"timm"|"torch.hub"|"hf-hub"|"timm-hf-hub", "name", ...}]}
OUT: {id: logits tensor} for successes and {id: "ErrorType: message"} for failures.
"""
from __future__ import annotations

import json
import sys

import torch


def main(spec_path: str, out_path: str) -> None:
    spec = json.loads(open(spec_path).read())
    import dsnet_zoo
    import timm

    for item in spec.get("register", []):
        dsnet_zoo.register_pretrained(item["arch"], dsnet_zoo.WeightsCfg.from_dict(item["cfg"]))
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(spec.get("input_seed", 0)))
    out: dict[str, object] = {}
    for sc in spec["scenarios"]:
        try:
            if sc["how"] == "create":
                model = dsnet_zoo.create(sc["name"], pretrained=True)
            elif sc["how"] == "timm":
                model = timm.create_model(sc["name"], pretrained=True)
            elif sc["how"] == "torch.hub":
                arch, _, tag = sc["name"].partition(".")
                model = torch.hub.load(spec["repo_root"], arch, source="local", trust_repo=True,
                                       pretrained=True, tag=tag or None)
            elif sc["how"] == "hf-hub":
                model = dsnet_zoo.create("hf-hub:" + sc["name"], pretrained=True)
            elif sc["how"] == "timm-hf-hub":
                model = timm.create_model("hf-hub:" + sc["name"], pretrained=True)
            else:
                raise ValueError(sc["how"])
            model.eval()
            with torch.no_grad():
                out[sc["id"]] = model(x)
        except Exception as e:  # the parent test asserts on the type and message
            out[sc["id"]] = f"{type(e).__name__}: {e}"
    torch.save(out, out_path)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
