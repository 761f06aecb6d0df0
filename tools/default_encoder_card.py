"""Copy a pretrained encoder into the package as the default encoder, its card completed with what a user
needs to trust it: the pool, the steps, the working spacing and the command that remakes it.

    python tools/default_encoder_card.py RUN/encoder POOL/pool.json DEST --steps N --command "..."
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("encoder", type=Path)
    parser.add_argument("pool", type=Path, help="pool.json written by tools/default_encoder_pool.py")
    parser.add_argument("dest", type=Path)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--command", required=True)
    args = parser.parse_args(argv)

    card = json.loads((args.encoder / "model.json").read_text())
    if card.get("step") != args.steps:
        print(f"error: {args.encoder}: encoder is at step {card.get('step')}, not {args.steps}", file=sys.stderr)
        return 1
    pool = json.loads(args.pool.read_text())
    card["trained_on"] = "default encoder pool (see 'pool')"
    card["default_encoder"] = {
        "pool": pool,
        "never": "Colin27 (the study's and benchmarks' test subject) or any other volume",
        "steps": args.steps,
        "working_spacing_mm": card.get("spacing"),
        "intensity_preset": card.get("intensity_preset"),
        "command": args.command,
        "licences": "phantoms: generated here; MNI152 2009a: nilearn wheel (MNI ICBM-2009 notice); ITK example "
                    "T1: insighttoolkit5-examples (Apache-2.0); nibabel anatomical.nii: MIT (docs/data.md)",
    }
    tmp = args.dest.with_name(args.dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    shutil.copyfile(args.encoder / "model.safetensors", tmp / "model.safetensors")
    (tmp / "model.json").write_text(json.dumps(card, indent=2) + "\n")
    shutil.rmtree(args.dest, ignore_errors=True)
    tmp.rename(args.dest)
    print(f"wrote {args.dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
