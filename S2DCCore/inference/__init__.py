"""Inference: segmentation in the input's geometry, embedding overlays, and few-shot propagation.

* `segment` — `S2DCCore.inference.segment.segment` / `segment_image`;
* `embed` — `S2DCCore.inference.embed.embed` (overlays), written by `embed_io.write_embedding`;
* `propagate` — `S2DCCore.inference.propagate.propagate` / `propagate_image`.

Models are model directories or in-memory `model_io.LoadedModel` objects; grids and resampling live in
`geometry`, memory estimates in `memory`. Importing this package does not import torch.
"""
