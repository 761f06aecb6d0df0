"""Inference sub-commands: ``segment``, ``embed``, ``propagate``.

Each checks its outputs first, then calls the Python API (`S2DCCore.inference`), which validates the
image and the model directory before importing torch, so bad input fails in well under a second with one
line naming the file. Nothing is written unless the whole run succeeds.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger("S2DCCore.cli")
PROGRESS_STEPS = 10  # log lines per sliding-window pass


def register(sub, common: argparse.ArgumentParser) -> None:
    """Add the inference sub-commands to ``sub``."""
    p = sub.add_parser(
        "segment", parents=[common], help="segment an image with a fine-tuned model (output on the input's grid)",
        description="Segment IMAGE (NIfTI, NRRD or a DICOM folder; any orientation, spacing and size) with a "
                    "segmenter directory. The labelmap has exactly the input's shape and affine; label names "
                    "and colours go to OUT.json (OUT without .nii.gz/.nii/.nrrd/.seg.nrrd, plus .json).")
    p.add_argument("image", type=Path)
    p.add_argument("--model", type=Path, required=True, help="segmenter directory (model.json + model.safetensors)")
    p.add_argument("-o", "--output", type=Path, required=True, help="labelmap to write (.nii.gz, .nrrd, .seg.nrrd)")
    p.add_argument("--overlap", type=float, default=0.25, help="sliding-window overlap fraction (default 0.25)")
    p.add_argument("--preview", action="store_true", help="also write OUT.png, the labels over the image")
    p.add_argument("--no-postprocess", dest="postprocess", action="store_false",
                   help="skip the card's post-processing (largest component of the structures validation chose)")
    _add_runtime_arguments(p)
    p.set_defaults(run=run_segment)

    p = sub.add_parser(
        "embed", parents=[common], help="dense embeddings and overlays (PCA colours, structures, similarity)",
        description="Run an encoder (or a segmenter's encoder) over IMAGE and write OUTDIR/embeddings.npz, plus "
                    "pca_rgb.nii.gz (--pca), structures.nii.gz (--clusters K) and similarity.nii.gz "
                    "(--point X,Y,Z in RAS mm), all on the input's grid. OUTDIR must not exist or be empty.")
    p.add_argument("image", type=Path)
    p.add_argument("--model", type=Path, default=None,
                   help="encoder or segmenter directory (default: the encoder shipped with S2DC)")
    p.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    p.add_argument("--pca", action="store_true", help="first three principal components as an RGB volume")
    p.add_argument("--clusters", type=int, default=None, metavar="K", help="k-means structures (labels 1..K)")
    p.add_argument("--point", type=_point, default=None, metavar="X,Y,Z",
                   help="RAS point in mm; writes the cosine similarity of every voxel to it (write "
                        "--point=-12,30,5 when X is negative)")
    p.add_argument("--stage", type=int, default=None,
                   help="encoder stage (default: the card's token_stage; 2 for segmenters)")
    p.add_argument("--seed", type=int, default=0, help="k-means seed")
    p.add_argument("--preview", action="store_true", help="also write PNG previews of the overlays in OUTDIR")
    _add_runtime_arguments(p)
    p.set_defaults(run=run_embed)

    p = sub.add_parser(
        "propagate", parents=[common], help="segment from a few scribbles",
        description="Classify every voxel of IMAGE from a few labelled voxels (SCRIBBLES: a labelmap on the "
                    "image's grid, 0 = unlabelled, each positive value a class, background included): by default "
                    "a geodesic growing from the scribbles through the denoised image (as Slicer's Grow from "
                    "seeds computes it), refined per class at the image's own resolution (grow, no encoder); "
                    "k-NN or a linear probe on the frozen encoder's embeddings on request. The output uses the "
                    "scribbles' values.")
    p.add_argument("image", type=Path)
    p.add_argument("--model", type=Path, default=None,
                   help="encoder or segmenter directory for knn/linear (default: the encoder shipped with S2DC)")
    p.add_argument("--scribbles", type=Path, required=True, help="labelmap on the image's grid")
    p.add_argument("-o", "--output", type=Path, required=True, help="labelmap to write (.nii.gz, .nrrd, .seg.nrrd)")
    p.add_argument("--method", choices=("grow", "knn", "linear"), default="grow", help="method (default grow)")
    p.add_argument("--no-extra-features", dest="extra_features", action="store_false",
                   help="embeddings only (default adds normalised intensity and coordinates)")
    p.add_argument("--stage", type=int, default=None, help="encoder stage (default as for embed)")
    p.add_argument("--preview", action="store_true", help="also write OUT.png, the labels over the image")
    _add_runtime_arguments(p)
    p.set_defaults(run=run_propagate)


def run_segment(args: argparse.Namespace) -> int:
    from S2DCCore.inference.memory import parse_size
    from S2DCCore.inference.segment import segment_image, write_segmentation

    _refuse_existing_labelmap(args.output, args.preview)
    budget = parse_size(args.memory_budget) if args.memory_budget else None
    result = segment_image(args.image, args.model, device=args.device, overlap=args.overlap, roi=args.roi,
                           sw_batch_size=args.sw_batch_size, precision=args.precision, memory_budget=budget,
                           progress=_progress(), postprocess=args.postprocess)
    labels, sidecar = write_segmentation(args.output, result)
    print(f"wrote {labels} and {sidecar}")
    if args.preview:
        print(f"preview: {_write_preview(args.image, args.output, result.labels, result.label_names)}")
    return 0


def run_embed(args: argparse.Namespace) -> int:
    from S2DCCore.inference.embed import embed
    from S2DCCore.inference.embed_io import check_output_dir, write_embedding
    from S2DCCore.inference.memory import parse_size

    check_output_dir(args.output)
    budget = parse_size(args.memory_budget) if args.memory_budget else None
    result = embed(args.image, args.model, pca=args.pca, clusters=args.clusters, point=args.point, stage=args.stage,
                   device=args.device, roi=args.roi, sw_batch_size=args.sw_batch_size, precision=args.precision,
                   memory_budget=budget, seed=args.seed, progress=_progress())
    preview_image = None
    if args.preview:
        from S2DCCore.io.image import read_image

        preview_image = read_image(args.image).array
    files = write_embedding(args.output, result, preview_image=preview_image)
    print(f"wrote {', '.join(sorted(files))} to {args.output} (stage {result.stage}, stride {result.stride}, "
          f"{result.features.shape[-1]} channels)")
    return 0


def run_propagate(args: argparse.Namespace) -> int:
    from S2DCCore.inference.label_table import write_labelmap
    from S2DCCore.inference.memory import parse_size
    from S2DCCore.inference.propagate import propagate_image

    _refuse_existing_labelmap(args.output, args.preview)
    budget = parse_size(args.memory_budget) if args.memory_budget else None
    result = propagate_image(args.image, args.model, args.scribbles, method=args.method,
                             extra_features=args.extra_features, stage=args.stage, device=args.device, roi=args.roi,
                             sw_batch_size=args.sw_batch_size, precision=args.precision, memory_budget=budget,
                             progress=_progress())
    provenance = {"image": str(args.image), "model": str(args.model or "default encoder"), "scribbles": str(args.scribbles),
                  "method": args.method, "extra_features": args.extra_features,
                  "scribbled_voxels": {str(k): v for k, v in result.samples_per_class.items()}}
    labels, sidecar = write_labelmap(args.output, result.labels, result.affine, result.label_names, provenance)
    print(f"wrote {labels} and {sidecar}")
    if args.preview:
        print(f"preview: {_write_preview(args.image, args.output, result.labels, result.label_names)}")
    return 0


def _add_runtime_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto (default: cuda, then mps, then cpu), cpu, cuda, cuda:N, mps")
    p.add_argument("--roi", type=_window, default=None, metavar="N|X,Y,Z",
                   help="sliding-window size in voxels (default: the model card's roi, else 96)")
    p.add_argument("--sw-batch-size", type=int, default=1, help="sliding windows per forward pass (default 1)")
    p.add_argument("--precision", choices=("bf16", "fp16", "fp32"), default="bf16",
                   help="autocast on CUDA (default bf16; fp16 on GPUs without native bf16); the CPU runs fp32")
    p.add_argument("--memory-budget", default=None, metavar="SIZE",
                   help="refuse to run when the estimate exceeds SIZE (e.g. 6G; default 80%% of available RAM, "
                        "or 90%% of free GPU memory)")


def _window(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) not in (1, 3) or min(values, default=0) < 1:
        raise argparse.ArgumentTypeError(f"expected N or X,Y,Z (voxels), got {text!r}")
    return values * 3 if len(values) == 1 else values


def _point(text: str) -> tuple[float, float, float]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"expected X,Y,Z in RAS millimetres, got {text!r}")
    return values


def _preview_path(output: Path) -> Path:
    from S2DCCore.inference.label_table import sidecar_path

    return sidecar_path(output).with_suffix(".png")


def _refuse_existing_labelmap(output: Path, preview: bool) -> None:
    """Refuse an existing labelmap, sidecar or preview; a sidecar orphaned by a killed run is replaced."""
    from S2DCCore.inference.label_table import is_orphan_sidecar, sidecar_path

    sidecar = None if is_orphan_sidecar(output) else sidecar_path(output)
    _refuse_existing(output, sidecar, _preview_path(output) if preview else None)


def _refuse_existing(*paths: Path | None) -> None:
    from S2DCCore.errors import UsageError

    for path in paths:
        if path is not None and path.exists():
            raise UsageError("output exists; refusing to overwrite it", path)


def _write_preview(image_path: Path, output: Path, labels, names) -> Path:
    from S2DCCore.inference.previews import save_label_preview
    from S2DCCore.io.image import read_image

    image = read_image(image_path)
    return save_label_preview(_preview_path(output), image.array, labels, image.affine, names)


def _progress():
    """A callback logging about `PROGRESS_STEPS` lines per pass (the Slicer side reads them)."""
    last = [-1]

    def report(done: int, total: int) -> None:
        step = done * PROGRESS_STEPS // max(total, 1)
        if step != last[0] or done == total:
            last[0] = step
            log.info("windows %d/%d", done, total)

    return report
