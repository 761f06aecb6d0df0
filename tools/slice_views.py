"""Slicer's red/yellow/green slice views rendered offscreen to PNG, without desktop Slicer (slicer-core + VTK).

What desktop Slicer shows in a slice view is the slice logic's blend of the background and foreground
volumes (foreground at an opacity; scalar volumes through their colour table and window/level, RGB vector
volumes as colours) with the slice displayable managers drawn over it: segmentations (fill and outline in
each segment's colour) and markups (a seed point). This module wires exactly those classes from the
``slicer-core`` wheel, as qMRMLSliceView does in Slicer (and trame-slicer's slice view does on the web):

* a `vtkMRMLSliceLogic` per view, which creates the slice node (orientation preset, RAS ↔ screen) and its
  composite node (background, foreground, opacity) and blends the layers into one image;
* that image in a renderer on layer 0 of an offscreen render window; on layer 1, a
  `vtkMRMLDisplayableManagerGroup` made by `vtkMRMLSliceViewDisplayableManagerFactory` with the 2D
  segmentations, markups, volume-glyph and crosshair displayable managers. Two layers, so translucent
  segment fill blends onto the image as in Slicer (in one renderer it would blend onto black);
* the module logics the managers look up by name (Markups, Volumes, Segmentations, SubjectHierarchy) on a
  `vtkSlicerApplicationLogic` with the default colour tables.

Rendering goes through EGL (``VTK_DEFAULT_OPENGL_WINDOW=vtkEGLRenderWindow``, no X server) and falls back
to OSMesa when ``S2DC_VTK_WINDOW=vtkOSOpenGLRenderWindow`` is set. Used by ``tools/screenshots.py`` and
the tests in ``Testing/extension/test_slice_views.py``. This is tooling, not part of the core (which never
imports VTK) nor of the Slicer module (desktop Slicer has its own views).
"""

from __future__ import annotations

import os

os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", os.environ.get("S2DC_VTK_WINDOW", "vtkEGLRenderWindow"))

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import slicer  # noqa: E402
import vtk  # noqa: E402
from vtk.util import numpy_support  # noqa: E402

# The views of Slicer's conventional layout: name → orientation preset (Slicer's colours and names).
VIEWS = {"Red": "Axial", "Yellow": "Sagittal", "Green": "Coronal"}
# Desktop Slicer's "ColdToHotRainbow" colour file (Base/Logic/Resources/ColorFiles/ColdToHotRainbow.txt: a
# piecewise-linear jet, dark blue → red), which slicer-core's default colour nodes lack; every 16th entry.
COLD_TO_HOT_RAINBOW = {0: (0, 0, 143), 16: (0, 0, 207), 32: (0, 16, 255), 48: (0, 80, 255), 64: (0, 143, 255),
                       80: (0, 207, 255), 96: (16, 255, 239), 112: (80, 255, 175), 128: (143, 255, 112),
                       144: (207, 255, 48), 160: (255, 239, 0), 176: (255, 175, 0), 192: (255, 112, 0),
                       208: (255, 48, 0), 224: (239, 0, 0), 240: (175, 0, 0), 255: (116, 0, 0)}
SLICE_DISPLAYABLE_MANAGERS = (
    "vtkMRMLSegmentationsDisplayableManager2D",
    "vtkMRMLMarkupsDisplayableManager",
    "vtkMRMLVolumeGlyphSliceDisplayableManager",
    "vtkMRMLCrosshairDisplayableManager",
)


def addColdToHotRainbow(scene):
    """Add desktop Slicer's ColdToHotRainbow colour table, under the node ID desktop Slicer gives it."""
    nodeId = "vtkMRMLColorTableNodeFileColdToHotRainbow.txt"
    if scene.GetNodeByID(nodeId) is not None:
        return scene.GetNodeByID(nodeId)
    keys = np.array(sorted(COLD_TO_HOT_RAINBOW))
    values = np.array([COLD_TO_HOT_RAINBOW[k] for k in keys], dtype=float)
    table = slicer.vtkMRMLColorTableNode()
    table.SetTypeToUser()
    table.SetName("ColdToHotRainbow")
    table.SetNumberOfColors(256)
    for index in range(256):
        rgb = [np.interp(index, keys, values[:, c]) / 255.0 for c in range(3)]
        table.SetColor(index, *rgb, 1.0)
    table.SetSingletonTag("FileColdToHotRainbow.txt")  # a singleton's ID is its class name + its tag
    scene.AddNode(table)
    assert table.GetID() == nodeId, table.GetID()
    return table


class SliceViews:
    """An MRML scene with Slicer's application logic and three offscreen slice views.

    Args:
        size: width and height of each view in pixels.
        scene: an existing scene (default: a new one; ``slicer.mrmlScene`` is set to it either way).

    Examples:
        >>> views = SliceViews(size=256)
        >>> volume = slicer.util.addVolumeFromArray(array)       # any nodes, added to views.scene
        >>> views.show(background=volume, foreground=overlay, opacity=0.5)
        >>> views.save("Red", "red.png")
    """

    def __init__(self, size: int = 256, scene=None) -> None:
        self.size = int(size)
        self.scene = scene if scene is not None else slicer.vtkMRMLScene()
        slicer.mrmlScene = self.scene
        if self.scene.GetFirstNodeByClass("vtkMRMLCrosshairNode") is None:
            crosshair = slicer.vtkMRMLCrosshairNode()
            crosshair.SetSingletonTag("default")
            self.scene.AddNode(crosshair)
        app = slicer.vtkSlicerApplicationLogic()
        app.SetMRMLScene(self.scene)
        app.GetColorLogic().SetMRMLScene(self.scene)
        app.GetColorLogic().AddDefaultColorNodes()
        app.SetSliceLogics(vtk.vtkCollection())
        app.SetViewLogics(vtk.vtkCollection())
        self.app = app
        self.logics = {}
        for name, cls in (("Volumes", slicer.vtkSlicerVolumesLogic), ("Segmentations", slicer.vtkSlicerSegmentationsModuleLogic),
                          ("SubjectHierarchy", slicer.vtkSlicerSubjectHierarchyModuleLogic),
                          ("Markups", slicer.vtkSlicerMarkupsLogic)):  # the markups DM finds it by this name
            logic = cls()
            logic.SetMRMLApplicationLogic(app)
            logic.SetMRMLScene(self.scene)
            app.SetModuleLogic(name, logic)
            self.logics[name] = logic
        slicer.vtkMRMLSliceNode.AddDefaultSliceOrientationPresets(self.scene)
        addColdToHotRainbow(self.scene)
        self.factory = slicer.vtkMRMLSliceViewDisplayableManagerFactory.GetInstance()
        self.factory.SetMRMLApplicationLogic(app)
        for manager in SLICE_DISPLAYABLE_MANAGERS:
            if not self.factory.IsDisplayableManagerRegistered(manager):
                self.factory.RegisterDisplayableManager(manager)
        self.views = {name: self._addView(name, orientation) for name, orientation in VIEWS.items()}

    def _addView(self, name: str, orientation: str) -> dict:
        window = vtk.vtkRenderWindow()
        window.SetOffScreenRendering(1)
        window.SetSize(self.size, self.size)
        window.SetNumberOfLayers(2)
        imageRenderer, overlayRenderer = vtk.vtkRenderer(), vtk.vtkRenderer()
        imageRenderer.SetLayer(0)
        overlayRenderer.SetLayer(1)
        overlayRenderer.InteractiveOff()
        # Slice displayable managers draw in the view's XY (pixel) frame: a parallel camera looking down -z
        # onto the pixel grid, as in Slicer's slice views (a default camera mirrors their text).
        camera = overlayRenderer.GetActiveCamera()
        camera.ParallelProjectionOn()
        camera.SetFocalPoint(self.size / 2.0, self.size / 2.0, 0.0)
        camera.SetPosition(self.size / 2.0, self.size / 2.0, 1000.0)
        camera.SetViewUp(0.0, 1.0, 0.0)
        camera.SetParallelScale(self.size / 2.0)
        camera.SetClippingRange(1.0, 2000.0)
        window.AddRenderer(imageRenderer)
        window.AddRenderer(overlayRenderer)
        interactor = vtk.vtkRenderWindowInteractor()  # the displayable managers look their widgets up through it
        interactor.SetRenderWindow(window)
        logic = slicer.vtkMRMLSliceLogic()
        logic.SetMRMLApplicationLogic(self.app)
        logic.SetMRMLScene(self.scene)
        sliceNode = logic.AddSliceNode(name)
        sliceNode.SetOrientation(orientation)
        sliceNode.SetDimensions(self.size, self.size, 1)
        self.app.GetSliceLogics().AddItem(logic)
        mapper = vtk.vtkImageMapper()  # the blended slice, 0-255 RGBA already: identity window/level
        mapper.SetColorWindow(255.0)
        mapper.SetColorLevel(127.5)
        actor = vtk.vtkActor2D()
        actor.SetMapper(mapper)
        imageRenderer.AddViewProp(actor)
        group = slicer.vtkMRMLDisplayableManagerGroup()
        group.Initialize(self.factory, overlayRenderer)
        group.SetMRMLDisplayableNode(sliceNode)
        return {"window": window, "logic": logic, "sliceNode": sliceNode, "group": group,
                "renderers": (imageRenderer, overlayRenderer), "actor": actor, "interactor": interactor}

    def show(self, background=None, foreground=None, opacity: float = 0.5, fit: bool = True) -> None:
        """Set every view's layers (Slicer's ``setSliceViewerLayers``) and fit the views to the background."""
        for view in self.views.values():
            composite = view["logic"].GetSliceCompositeNode()
            composite.SetBackgroundVolumeID(background.GetID() if background is not None else None)
            composite.SetForegroundVolumeID(foreground.GetID() if foreground is not None else None)
            composite.SetForegroundOpacity(float(opacity))
            if fit and background is not None:
                view["logic"].FitSliceToAll()

    def jumpTo(self, ras) -> None:
        """Centre every view's slice plane on the RAS point (what Slicer's "jump slices" does)."""
        for view in self.views.values():
            view["sliceNode"].JumpSliceByOffsetting(*[float(v) for v in ras])

    def render(self, name: str) -> np.ndarray:
        """(H, W, 3) uint8 picture of view ``name``, top row first (as the PNG and a screen show it)."""
        view = self.views[name]
        # The slice logic's blend of background and foreground. (Connected directly, the image mapper drew
        # nothing offscreen here; a copy of the same output draws it.)
        connection = view["logic"].GetImageDataConnection()
        producer = connection.GetProducer()
        producer.Update()
        blended = vtk.vtkImageData()
        blended.DeepCopy(producer.GetOutputDataObject(connection.GetIndex()))
        view["actor"].GetMapper().SetInputData(blended)
        view["window"].Render()
        grab = vtk.vtkWindowToImageFilter()
        grab.SetInput(view["window"])
        grab.SetInputBufferTypeToRGB()
        grab.ReadFrontBufferOff()
        grab.Update()
        image = grab.GetOutput()
        width, height, _ = image.GetDimensions()
        pixels = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(height, width, 3)
        return np.ascontiguousarray(pixels[::-1])  # VTK's rows start at the bottom

    def save(self, name: str, path: str | Path) -> Path:
        """Render view ``name`` to a PNG file."""
        from PIL import Image

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(self.render(name)).save(path)
        return path

    def saveRow(self, path: str | Path, names=tuple(VIEWS), gap: int = 4) -> Path:
        """The views side by side in one PNG (Red | Yellow | Green, Slicer's conventional row)."""
        from PIL import Image

        pictures = [self.render(name) for name in names]
        row = np.zeros((self.size, len(pictures) * self.size + gap * (len(pictures) - 1), 3), np.uint8)
        for n, picture in enumerate(pictures):
            row[:, n * (self.size + gap):n * (self.size + gap) + self.size] = picture
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(row).save(path)
        return path

    def rasToPixel(self, name: str, ras) -> tuple[int, int]:
        """(row, column) of the picture where RAS point ``ras`` (in the view's plane) is drawn."""
        sliceNode = self.views[name]["sliceNode"]
        xyToRas = vtk.vtkMatrix4x4()
        xyToRas.DeepCopy(sliceNode.GetXYToRAS())
        xyToRas.Invert()
        x, y, _, _ = xyToRas.MultiplyPoint([*[float(v) for v in ras], 1.0])
        return int(round(self.size - 1 - y)), int(round(x))
