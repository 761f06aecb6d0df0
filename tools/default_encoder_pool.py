"""Write the default encoder's pretraining pool (a plain folder of images) from allowed sources only.

    python tools/default_encoder_pool.py CACHE OUT [--phantoms 4] [--seed 7]

* synthetic phantoms, CT and MR, at several sizes and spacings (isotropic 96/128/160 voxels over 400 mm,
  and anisotropic 128), generated here;
* the MNI152 2009a T1 from nilearn's wheel and the ITK example T1 head (`tools/fetch_brain_data.sh CACHE`);
* nibabel's own ``anatomical.nii`` (shipped inside the nibabel wheel).

Never Colin27 (the study's and the benchmark's test subject) and no other volume. Every image keeps its
native grid and intensities: the pretraining run resamples to the working spacing and normalises with the
modality-agnostic ``percentile`` preset.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

# Phantom sizes, cycled over the cases of each modality: (size, anisotropic).
SIZES = ((96, False), (128, False), (160, False), (128, True))
REAL = {"mni152_t1": "nilearn/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
        "itk_t1_head": "root/usr/share/doc/insighttoolkit5-examples/examples/Data/KmeansTest_T1UCharRaw.nii.gz"}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cache", type=Path, help="folder filled by tools/fetch_brain_data.sh")
    parser.add_argument("out", type=Path, help="new folder for the pool")
    parser.add_argument("--phantoms", type=int, default=4, help="phantoms per modality")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)

    import nibabel

    from S2DCCore.data.phantoms import PhantomConfig, make_phantom
    from S2DCCore.io.image import write_image

    if args.out.exists() and any(args.out.iterdir()):
        print(f"error: {args.out}: exists and is not empty", file=sys.stderr)
        return 2
    sources = {name: args.cache / rel for name, rel in REAL.items()}
    sources["nibabel_anatomical"] = Path(nibabel.__file__).parent / "tests" / "data" / "anatomical.nii"
    for path in sources.values():
        if not path.is_file():
            print(f"error: {path}: missing; run tools/fetch_brain_data.sh {args.cache}", file=sys.stderr)
            return 1
    args.out.mkdir(parents=True, exist_ok=True)
    record = {"phantoms": [], "real": {}}
    for modality in ("ct", "mr"):
        for i in range(args.phantoms):
            size, aniso = SIZES[i % len(SIZES)]
            config = PhantomConfig(size=size, modality=modality, anisotropic=aniso)
            phantom = make_phantom(i, args.seed + (0 if modality == "ct" else 1000), config)
            name = f"phantom_{modality}_{i}_{size}{'a' if aniso else ''}.nii.gz"
            write_image(args.out / name, phantom.image, phantom.affine)
            record["phantoms"].append({"file": name, "modality": modality, "size": size, "anisotropic": aniso,
                                       "spacing_mm": list(config.spacing)})
    for name, path in sources.items():
        suffix = ".nii.gz" if path.name.endswith(".gz") else ".nii"
        shutil.copyfile(path, args.out / f"{name}{suffix}")
        record["real"][name] = str(path.name)
    (args.out / "pool.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {len(record['phantoms'])} phantoms and {len(sources)} real images to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
