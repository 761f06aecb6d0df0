"""`s2dc embed` with the shipped default encoder on a 256×256×128, 1 mm head: wall time and outputs' grid.

    python benchmarks/embed_default.py [--cache ~/.cache/s2dc/brain] [--threads 2] [--out benchmarks/results]

The volume is the MNI152 2009a T1 (needs `tools/fetch_brain_data.sh CACHE`) centred in a 256×256×128 grid at
1 mm: zero-padded in-plane (197×233 → 256×256), its central 128 axial slices kept. The command is run as a
user runs it, in a fresh process (start-up, reading, resampling to the encoder's working spacing, the
encoder, PCA, k-means with 6 clusters, writing every output), ``--pca --clusters 6`` and no ``--model``;
the wall time and the child's peak RSS are recorded, and every NIfTI it wrote is checked to lie on the
input's grid (shape and affine). Result: ``embed_default.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHAPE = (256, 256, 128)
T1 = "nilearn/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"


def head_volume(cache: Path, path: Path) -> Path:
    """The MNI152 T1 centred in a `SHAPE` grid at 1 mm (padded with zeros or cropped per axis), written to
    ``path``; the affine keeps the T1's world position of every voxel it shows."""
    from S2DCCore.io.image import read_image, write_image

    t1 = read_image(cache / T1)
    source = np.asarray(t1.array, dtype=np.float32)
    out = np.zeros(SHAPE, np.float32)
    src, dst, shift = [], [], []
    for n_src, n_dst in zip(source.shape, SHAPE):
        offset = (n_dst - n_src) // 2  # > 0: pad, < 0: crop
        src.append(slice(max(0, -offset), max(0, -offset) + min(n_src, n_dst)))
        dst.append(slice(max(0, offset), max(0, offset) + min(n_src, n_dst)))
        shift.append(-offset)
    out[tuple(dst)] = source[tuple(src)]
    affine = np.asarray(t1.affine, dtype=np.float64).copy()
    affine[:3, 3] = affine[:3, :3] @ np.asarray(shift, dtype=np.float64) + affine[:3, 3]
    return write_image(path, out, affine)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache/s2dc/brain")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)

    import nibabel

    from S2DCCore.io.image import read_image

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        image = head_volume(args.cache, tmp / "head256.nii.gz")
        out_dir = tmp / "embed"
        command = [sys.executable, "-m", "S2DCCore.cli.main", "embed", str(image), "-o", str(out_dir), "--pca",
                   "--clusters", "6"]
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads),  # torch's intra-op threads
               "PYTHONPATH": str(ROOT)}
        start = time.perf_counter()
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - start
        if done.returncode:
            sys.exit(f"s2dc embed failed ({done.returncode}):\n{done.stderr}")
        peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        reference = read_image(image)
        outputs = {}
        for path in sorted(out_dir.rglob("*.nii*")):  # headers only (the PCA colours are a 5-D vector volume)
            written = nibabel.load(str(path))
            on_grid = (tuple(written.shape[:3]) == SHAPE
                       and bool(np.allclose(written.affine, reference.affine, atol=1e-4)))
            outputs[str(path.relative_to(out_dir))] = {"shape": list(written.shape), "on_input_grid": on_grid}
    result = {"command": "python benchmarks/embed_default.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "input": f"{'×'.join(map(str, SHAPE))} at 1 mm (MNI152 T1 centred)", "threads": args.threads,
              "wall_s": round(wall, 2), "peak_rss_mib": round(peak_mib), "outputs": outputs,
              "every_output_on_input_grid": bool(outputs) and all(o["on_input_grid"] for o in outputs.values())}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "embed_default.json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print(json.dumps(result, indent=2, ensure_ascii=False))
    return 0 if result["every_output_on_input_grid"] else 1


if __name__ == "__main__":
    sys.exit(main())
