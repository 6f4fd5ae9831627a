"""Write a demo model (a CNN trained on sklearn's digits, as TorchScript), its dataset and a spec."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.digits import train_digits_cnn, write_digits_npz

SPEC = {
    "pruning": {"method": "magnitude", "scope": "global", "sparsity": 0.9},
    "finetune": {
        "epochs": 6,
        "optimizer": {"name": "adam", "lr": 0.002},
        "regularizers": {"l1": 1e-5, "l2": 1e-4, "distillation": {"alpha": 0.5, "temperature": 4.0}},
    },
    "gates": {"max_accuracy_drop": 0.02, "min_sparsity": 0.89},
}


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    torch.jit.save(torch.jit.script(train_digits_cnn()), str(out / "model.pt"))
    write_digits_npz(out / "digits.npz")
    (out / "spec.yaml").write_text(yaml.safe_dump(SPEC, sort_keys=False))
    print(f"wrote {out}/model.pt, {out}/digits.npz, {out}/spec.yaml")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "var/demo"))
