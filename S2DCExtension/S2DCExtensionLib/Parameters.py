"""The module's parameter node: every GUI setting, saved with the scene (desktop Slicer only: imports Qt).

Each field is bound to the widget of ``Resources/UI/S2DCExtension.ui`` whose ``SlicerParameterName``
dynamic property has the field's name (a test checks names and widget types against this file).
"""

from __future__ import annotations

import pathlib
from typing import Annotated

from slicer import vtkMRMLMarkupsFiducialNode, vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper

from S2DCExtensionLib.Commands import DEVICES, PRESETS, PROPAGATE_METHODS, TASKS


@parameterNodeWrapper
class S2DCParameterNode:
    """GUI state of the S2DC module.

    Attributes:
        task: segment, embed, propagate, finetune or pretrain.
        modelPath: model folder (segmenter or encoder); for fine-tuning, the encoder to start from.
        inputVolume: the image (segment, embed, propagate).
        outputSegmentation: segmentation to overwrite; None creates a new one.
        scribbles: segmentation with scribbles, one segment per class (propagate).
        propagateMethod: grow (geodesic growing + per-class refinement + guided smoothing, no encoder; default), knn or
            linear (on the embeddings).
        pca: compute PCA colours (embed).
        clusters: k-means structures, 0 for none (embed).
        seedPoint: point list whose first point seeds the similarity map (embed).
        cohortPath / runPath: cohort folder and run folder (training).
        preset / steps: training preset and steps.
        initFromModel: fine-tune from ``modelPath`` rather than from scratch.
        device: auto, cpu, cuda or mps.
        keepWorkFiles: keep the worker's temporary files.
    """

    task: Annotated[str, Choice(list(TASKS))] = "segment"
    modelPath: pathlib.Path
    inputVolume: vtkMRMLScalarVolumeNode
    outputSegmentation: vtkMRMLSegmentationNode
    scribbles: vtkMRMLSegmentationNode
    propagateMethod: Annotated[str, Choice(list(PROPAGATE_METHODS))] = "grow"
    pca: bool = True
    clusters: Annotated[int, WithinRange(0, 64)] = 0
    seedPoint: vtkMRMLMarkupsFiducialNode
    cohortPath: pathlib.Path
    runPath: pathlib.Path
    preset: Annotated[str, Choice(list(PRESETS))] = "tiny"
    steps: Annotated[int, WithinRange(1, 1000000)] = 150
    initFromModel: bool = True
    device: Annotated[str, Choice(list(DEVICES))] = "auto"
    keepWorkFiles: bool = False
