"""Inputs for benchmarks/gpu_celery_sweep.sh: a `prunekit/digits_cnn` state-dict trained on digits, and the data.

Written here (the device machine may lack scikit-learn); safetensors and npz load on any torch version.
Usage: python benchmarks/gpu_celery_inputs.py DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.digits import train_digits_cnn, write_digits_npz


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    model = train_digits_cnn()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / "cnn.safetensors"))
    write_digits_npz(out / "digits.npz")
    print(f"wrote {out}/cnn.safetensors and {out}/digits.npz")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
