"""The synthetic torso's anatomy: label and tissue maps painted from canonical body coordinates.

Every structure is an implicit shape in canonical millimetres (x → patient right, y → anterior,
z → superior; see `phantom_geometry`), so the per-case affine and warp move and bend it, and each case
also draws its own structure sizes, positions, lobulation and layer thicknesses (`sample_anatomy`).
Structures are painted in a fixed order, later ones over earlier ones, and organs are clipped to the
body cavity, so they abut like real organs instead of overlapping.

Labels (`STRUCTURES`) name what a voxel belongs to; tissues (`TISSUES`) say what it is made of, which
is what the intensity model sees. Several labels share tissues or have overlapping ones (muscle,
myocardium, blood, liver, spleen, kidney and bowel wall are all soft tissue), the two kidneys and the
two lungs are identical tissues told apart only by side, lung and bowel gas look like the air outside,
and the body wall carries the ribs (bone) and the spinal canal and discs (soft tissue): the label is not
a function of intensity.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from S2DCCore.data.phantoms.geometry import PhantomGeometry, canonical_to_voxel, rotation_matrix, smooth_field

STRUCTURES: dict[int, str] = {
    0: "background", 1: "body_wall", 2: "fat", 3: "lung_left", 4: "lung_right", 5: "liver", 6: "spleen",
    7: "kidney_left", 8: "kidney_right", 9: "vertebra", 10: "aorta", 11: "bowel", 12: "heart",
}
_L = {name: value for value, name in STRUCTURES.items()}
TISSUES = ("air", "fat", "muscle", "lung", "liver", "spleen", "kidney_cortex", "kidney_medulla", "marrow",
           "cortical_bone", "blood", "bowel_wall", "bowel_content", "csf", "disc")
_T = {name: n for n, name in enumerate(TISSUES)}


@dataclass
class Frame:
    """Canonical coordinates of a case's voxels, and how to find the voxels of a canonical box."""

    coords: np.ndarray  # (3, nx, ny, nz) float32, from `canonical_grid`
    geometry: PhantomGeometry

    def region(self, lo, hi) -> tuple[slice, slice, slice]:
        """Voxel slices covering the canonical box [lo, hi] (mm), clipped to the volume."""
        lo, hi = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
        t = np.stack(np.meshgrid(*[np.linspace(0.0, 1.0, 5)] * 3, indexing="ij"), -1).reshape(-1, 3)
        v = canonical_to_voxel(self.geometry, lo + t * (hi - lo))
        # A 2-voxel margin covers the warp's bending between the sampled points.
        start = np.clip(np.floor(v.min(0)) - 2, 0, self.geometry.shape).astype(int)
        stop = np.clip(np.ceil(v.max(0)) + 3, 0, self.geometry.shape).astype(int)
        return tuple(slice(a, b) for a, b in zip(start, stop))

    def xyz(self, sl) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.coords[0][sl], self.coords[1][sl], self.coords[2][sl]


def sample_anatomy(rng: np.random.Generator) -> dict:
    """Draw one subject's anatomical variation (sizes, offsets, thicknesses; mm and unitless factors)."""
    u, n = rng.uniform, rng.normal

    def ln(s: float) -> float:  # a log-normal factor, within ±2.5 s.d.
        return float(np.exp(np.clip(rng.normal(0.0, s), -2.5 * s, 2.5 * s)))

    # Organs under the diaphragm hang from its domes, so a high or low dome moves them along.
    dome = {"right": 45 + n(0, 6), "left_drop": u(4, 15), "depth": u(55, 75)}
    left_dome = dome["right"] - dome["left_drop"]
    return {
        "body": {"a": 150 * ln(0.04), "b_ant": 100 * ln(0.05), "b_post": 90 * ln(0.04), "fat_mm": u(6, 26),
                 "wall_mm": u(8, 14)},
        "spine": {"y": -30 + n(0, 3), "amp": u(2, 7), "phase": u(0, 2 * np.pi), "period": u(29, 34),
                  "disc": u(6, 8), "offset": u(0, 34), "size": ln(0.06)},
        "dome": dome,
        "aorta": {"x": -14 + n(0, 3), "r": u(9, 13), "z_bif": u(-135, -100)},
        "heart": {"c": [-25 + n(0, 5), 40 + n(0, 4), 75 + n(0, 5)], "size": ln(0.08)},
        "liver": {"c": [65 + n(0, 5), 0 + n(0, 5), dome["right"] - 45 + n(0, 4)], "size": ln(0.08), "left": ln(0.25),
                  "lobulation": u(0.15, 0.4)},
        "spleen": {"c": [-88 + n(0, 5), -32 + n(0, 5), left_dome - 25 + n(0, 6)], "size": ln(0.2),
                   "lobulation": u(0.1, 0.3)},
        "kidney": {"left": [-70 + n(0, 4), -28 + n(0, 3), -58 + n(0, 7)],
                   "right": [70 + n(0, 4), -28 + n(0, 3), -72 + n(0, 7)],  # below the liver
                   "size_left": ln(0.08), "size_right": ln(0.08), "tilt": u(8, 18)},
        "stomach": {"c": [-45 + n(0, 6), 28 + n(0, 5), left_dome - 40 + n(0, 6)], "size": ln(0.15)},
        "colon": {"r": u(14, 19), "jitter": n(0, 6, (9, 3)).tolist(), "gas": u(0.0, 0.9)},
        "small_bowel": {"threshold": u(-0.6, -0.1), "gas": u(1.4, 2.2)},
        "ribs": {"period": u(27, 33), "thickness": u(7, 10), "phase": u(0, 30)},
    }


def _ellipsoid(x, y, z, centre, semi, rotation=None) -> np.ndarray:
    """Normalised squared radius (< 1 inside); ``rotation``'s columns are the local axes."""
    d = (x - np.float32(centre[0]), y - np.float32(centre[1]), z - np.float32(centre[2]))
    if rotation is not None:
        r = rotation.astype(np.float32)
        d = tuple(r[0, k] * d[0] + r[1, k] * d[1] + r[2, k] * d[2] for k in range(3))
    return sum((dk / np.float32(s)) ** 2 for dk, s in zip(d, semi))


def _spine_y(p: dict, z: np.ndarray) -> np.ndarray:
    """AP position of the vertebral bodies' centre: a gentle lordosis/kyphosis."""
    return np.float32(p["y"]) + np.float32(p["amp"]) * np.sin(z * np.float32(np.pi / 400) + np.float32(p["phase"]))


def _dome(p: dict, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Height (z, mm) of the diaphragm: two domes, the right one higher, low at the rim."""
    h, dr = p["depth"], p["right"]
    right = dr - h * (((x - 60) / 95) ** 2 + ((y + 5) / 110) ** 2)
    left = (dr - p["left_drop"]) - h * (((x + 60) / 95) ** 2 + ((y + 5) / 110) ** 2)
    return np.maximum(right, left)


class _Canvas:
    """The label and tissue maps being painted; a later paint wins."""

    def __init__(self, shape):
        self.label = np.zeros(shape, np.uint8)
        self.tissue = np.zeros(shape, np.uint8)

    def paint(self, sl, mask, label: str, tissue) -> None:
        self.label[sl][mask] = _L[label]
        self.tissue[sl][mask] = _T[tissue] if isinstance(tissue, str) else tissue[mask]


def paint_anatomy(frame: Frame, params: dict, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Paint every structure of one subject.

    Args:
        frame: the case's canonical coordinates.
        params: from `sample_anatomy`.
        rng: draws the smooth fields that shape lobulation, bowel loops, gas and vessels.

    Returns:
        label (uint8, values of `STRUCTURES`) and tissue (uint8, indices into `TISSUES`), both [i, j, k].
    """
    shape = frame.geometry.shape
    extent = np.asarray(shape) * frame.geometry.spacing

    def field(length_mm: float) -> np.ndarray:
        return smooth_field(rng, shape, tuple(np.clip(np.round(extent / length_mm), 1, None).astype(int)))

    lob, lob2, loops, gas, vessel1, vessel2 = (field(s) for s in (60, 45, 35, 40, 45, 45))
    canvas = _Canvas(shape)
    full = (slice(None),) * 3
    x, y, z = frame.xyz(full)
    body, spine = params["body"], params["spine"]

    # Trunk: an egg-shaped cross-section (flatter back), fat rim, muscle wall, cavity.
    b = np.where(y >= 0, np.float32(body["b_ant"]), np.float32(body["b_post"]))
    r = np.sqrt((x / np.float32(body["a"])) ** 2 + (y / b) ** 2)
    fat = np.float32(body["fat_mm"] / body["b_ant"]) * (0.75 + 0.25 * np.clip(y / 60, -1, 1)) * (1 + 0.35 * lob)
    wall = fat + np.float32(body["wall_mm"] / body["b_ant"])
    canvas.paint(full, r <= 1, "fat", "fat")
    canvas.paint(full, (r <= 1 - fat) & (r > 1 - wall), "body_wall", "muscle")
    inner = r <= 1 - fat
    ys = _spine_y(spine, z)
    # Paraspinal muscles: one elliptic column either side of the spinous processes.
    paraspinal = inner & (((np.abs(x) - 32) / 30) ** 2 + ((y - ys + 36) / 24) ** 2 < 1)
    canvas.paint(full, paraspinal, "body_wall", "muscle")
    cavity = (r <= 1 - wall) & ~paraspinal
    del b, r, fat, wall, inner, paraspinal

    dome = params["dome"]
    sl = frame.region((-200, -150, -80), (200, 150, 90))
    xs, ys_, zs = frame.xyz(sl)
    canvas.paint(sl, cavity[sl] & (np.abs(zs - _dome(dome, xs, ys_)) <= 4.5), "body_wall", "muscle")

    _paint_thorax(frame, params, canvas, cavity, vessel1, vessel2)
    _paint_bowel(frame, params, canvas, cavity, loops, gas, lob2)
    _paint_solid_organs(frame, params, canvas, cavity, lob, lob2, vessel1, vessel2)
    _paint_retroperitoneum(frame, params, canvas)
    _paint_ribs(frame, params, canvas, cavity)
    return canvas.label, canvas.tissue


def _heart_q(p: dict, x, y, z) -> np.ndarray:
    # Long axis from the base (right, posterior, up) to the apex (left, anterior, down).
    rot = rotation_matrix(np.radians([0.0, 25.0, 145.0]))
    return _ellipsoid(x, y, z, p["c"], np.array([64.0, 45.0, 40.0]) * p["size"], rot)


def _aorta_d2(p: dict, spine: dict, x, y, z) -> tuple[np.ndarray, np.ndarray]:
    """Squared distance to the aorta's (and below the bifurcation the iliacs') axis, and the radius."""
    yc = _spine_y(spine, z) + np.float32(16 + p["r"])
    below = np.maximum(np.float32(p["z_bif"]) - z, 0)
    d2 = (x - np.float32(p["x"])) ** 2 + (y - yc) ** 2
    mid = np.float32(p["x"] + 8)
    iliac = np.minimum((x - mid - 0.5 * below) ** 2, (x - mid + 0.5 * below) ** 2) + (y - yc - 0.2 * below) ** 2
    d2 = np.where(below > 0, iliac, d2)
    radius = np.where(below > 0, np.float32(0.65 * p["r"]), np.float32(p["r"]))
    return d2, radius


def _paint_thorax(frame, params, canvas, cavity, vessel1, vessel2) -> None:
    """Lungs (with vessels) above the diaphragm, around the mediastinum, and the heart."""
    sl = frame.region((-200, -150, -60), (200, 150, 320))
    x, y, z = frame.xyz(sl)
    spine_block = (np.abs(x) < 30) & (y < _spine_y(params["spine"], z) + 20)
    mediastinum = (np.abs(x + 4) < 20) & (y > _spine_y(params["spine"], z) - 5)
    heart_q = _heart_q(params["heart"], x, y, z)
    d2, radius = _aorta_d2(params["aorta"], params["spine"], x, y, z)
    lungs = cavity[sl] & (z > _dome(params["dome"], x, y) + 4.5) & ~spine_block & ~mediastinum
    lungs &= (heart_q > 1.3) & (d2 > (radius + 5) ** 2)
    tissue = np.where((np.abs(vessel1[sl]) < 0.22) & (np.abs(vessel2[sl]) < 0.22), _T["blood"], _T["lung"])
    canvas.paint(sl, lungs & (x < 0), "lung_left", tissue.astype(np.uint8))
    canvas.paint(sl, lungs & (x >= 0), "lung_right", tissue.astype(np.uint8))
    heart = (heart_q < 1) & cavity[sl] & (z > _dome(params["dome"], x, y) + 4.5)
    canvas.paint(sl, heart, "heart", np.where(heart_q > 0.55, _T["muscle"], _T["blood"]).astype(np.uint8))


def _segment_d2(x, y, z, p0, p1) -> np.ndarray:
    """Squared distance to the segment p0–p1."""
    d = np.asarray(p1, np.float32) - np.asarray(p0, np.float32)
    rx, ry, rz = x - np.float32(p0[0]), y - np.float32(p0[1]), z - np.float32(p0[2])
    t = np.clip((rx * d[0] + ry * d[1] + rz * d[2]) / np.float32(d @ d), 0, 1)
    return (rx - t * d[0]) ** 2 + (ry - t * d[1]) ** 2 + (rz - t * d[2]) ** 2


_COLON = np.array([(85, 15, -175), (85, 15, -50), (75, 40, -25), (0, 55, -45), (-75, 35, -15), (-88, 0, -40),
                   (-88, 0, -150), (-55, 25, -185), (-10, 15, -205)], np.float64)


def _paint_bowel(frame, params, canvas, cavity, loops, gas, lob2) -> None:
    """Small bowel, colon and stomach: one label, wall, fluid content and gas."""
    # Small bowel: packed loops (the super-level set of a smooth field) in the lower anterior abdomen.
    p = params["small_bowel"]
    sl = frame.region((-110, -60, -260), (110, 120, -30))
    x, y, z = frame.xyz(sl)
    region = cavity[sl] & (z < -35) & (np.abs(x) < 80) & (y > _spine_y(params["spine"], z) + 22)
    g, threshold = loops[sl], np.float32(p["threshold"])
    tissue = np.where(g < threshold + 0.3, _T["bowel_wall"], _T["bowel_content"])
    tissue = np.where((g >= threshold + 0.3) & (gas[sl] > p["gas"]), _T["air"], tissue).astype(np.uint8)
    canvas.paint(sl, region & (g > threshold), "bowel", tissue)

    # Colon: a tube along a jittered frame (ascending, transverse, descending, sigmoid), more gas.
    c = params["colon"]
    points = _COLON + np.asarray(c["jitter"])
    for lumen in (False, True):
        for p0, p1 in zip(points[:-1], points[1:]):
            radius = c["r"] - 4.0 if lumen else c["r"]
            sl = frame.region(np.minimum(p0, p1) - radius, np.maximum(p0, p1) + radius)
            x, y, z = frame.xyz(sl)
            inside = (_segment_d2(x, y, z, p0, p1) < radius**2) & cavity[sl]
            if lumen:  # gas where the gas field is below the case's level: about half the lumen or more
                tissue = np.where(gas[sl] < c["gas"], _T["air"], _T["bowel_content"]).astype(np.uint8)
                canvas.paint(sl, inside, "bowel", tissue)
            else:
                canvas.paint(sl, inside, "bowel", "bowel_wall")

    # Stomach under the left dome, gas on top (anterior, as the patient lies supine).
    s = params["stomach"]
    semi = np.array([38.0, 32.0, 48.0]) * s["size"]
    sl = frame.region(np.asarray(s["c"]) - semi * 1.5, np.asarray(s["c"]) + semi * 1.5)
    x, y, z = frame.xyz(sl)
    q = _ellipsoid(x, y, z, s["c"], semi, rotation_matrix(np.radians([0, 20, 0]))) + 0.15 * lob2[sl]
    inside = (q < 1) & cavity[sl] & (z < _dome(params["dome"], x, y) - 4.5)
    tissue = np.where(q > 0.72, _T["bowel_wall"], np.where(y > s["c"][1] + 0.3 * semi[1], _T["air"],
                                                           _T["bowel_content"]))
    canvas.paint(sl, inside, "bowel", tissue.astype(np.uint8))


def _paint_solid_organs(frame, params, canvas, cavity, lob, lob2, vessel1, vessel2) -> None:
    """Liver (with vessels) and spleen under the diaphragm."""
    # Liver: a right lobe, a left lobe (its size varies most) and the caudate, lobulated by a smooth field.
    p = params["liver"]
    sl = frame.region((-120, -100, -140), (180, 140, 120))
    x, y, z = frame.xyz(sl)
    c, k = np.asarray(p["c"]), p["size"]
    left_c = c + np.array([-72.0, 40.0, 22.0]) * k
    q = np.minimum.reduce([
        _ellipsoid(x, y, z, c, np.array([95.0, 92.0, 72.0]) * k, rotation_matrix(np.radians([0, 25, 0]))),
        _ellipsoid(x, y, z, left_c, np.array([65.0 * p["left"], 36.0, 28.0]) * k,
                   rotation_matrix(np.radians([0, 0, 25]))),
        _ellipsoid(x, y, z, c + np.array([-50.0, -10.0, 10.0]) * k, np.array([25.0, 25.0, 35.0]) * k),
    ]) + np.float32(p["lobulation"]) * lob[sl]
    liver = (q < 1) & cavity[sl] & (z < _dome(params["dome"], x, y) - 4.5)
    tissue = np.where((np.abs(vessel1[sl]) < 0.15) & (np.abs(vessel2[sl] - 0.5) < 0.15), _T["blood"], _T["liver"])
    canvas.paint(sl, liver, "liver", tissue.astype(np.uint8))

    # Spleen: along the left posterolateral wall, size varies ~×0.6–1.6.
    p = params["spleen"]
    semi = np.array([28.0, 62.0, 55.0]) * p["size"]
    sl = frame.region(np.asarray(p["c"]) - 90 * p["size"], np.asarray(p["c"]) + 90 * p["size"])  # + lobulation
    x, y, z = frame.xyz(sl)
    q = _ellipsoid(x, y, z, p["c"], semi, rotation_matrix(np.radians([0, 0, 40]))) + p["lobulation"] * lob2[sl]
    canvas.paint(sl, (q < 1) & cavity[sl] & (z < _dome(params["dome"], x, y) - 4.5), "spleen", "spleen")


def _paint_retroperitoneum(frame, params, canvas) -> None:
    """Psoas muscles, kidneys, aorta and vertebrae (painted last among organs: they win overlaps)."""
    spine = params["spine"]
    # Psoas muscles: lateral to the lumbar spine, widening downwards.
    sl = frame.region((-110, -100, -260), (110, 40, -30))
    x, y, z = frame.xyz(sl)
    depth = np.maximum(-35 - z, 0)
    radius = np.minimum(5 + 0.18 * depth, 22)
    d2 = (np.abs(x) - 24 - 0.22 * depth) ** 2 + (y - _spine_y(spine, z) - 2) ** 2
    canvas.paint(sl, (z < -35) & (d2 < radius**2), "body_wall", "muscle")

    # Kidneys: tilted beans (upper pole medial), hilum facing anteromedially, cortex around medulla.
    k = params["kidney"]
    for side, s in (("left", -1), ("right", 1)):
        semi = np.array([28.0, 24.0, 55.0]) * k[f"size_{side}"]
        rot = rotation_matrix(np.radians([0, -s * k["tilt"], -s * 25]))
        c = np.asarray(k[side])
        sl = frame.region(c - 60 * k[f"size_{side}"], c + 60 * k[f"size_{side}"])
        x, y, z = frame.xyz(sl)
        q = _ellipsoid(x, y, z, c, semi, rot)
        hilum = _ellipsoid(x, y, z, c + rot @ np.array([-s * semi[0], 0, 0]), semi * [0.55, 0.45, 0.3])
        bean = (q < 1) & (hilum > 1)
        canvas.paint(sl, bean, f"kidney_{side}", np.where(q < 0.4, _T["kidney_medulla"],
                                                          _T["kidney_cortex"]).astype(np.uint8))

    # Aorta, then the iliac arteries below the bifurcation.
    sl = frame.region((-150, -80, -320), (120, 60, 320))
    x, y, z = frame.xyz(sl)
    d2, radius = _aorta_d2(params["aorta"], spine, x, y, z)
    canvas.paint(sl, d2 < radius**2, "aorta", "blood")

    # Vertebrae: bodies (cortical shell, marrow core) separated by discs, a neural arch around the canal.
    sl = frame.region((-45, -110, -320), (45, 10, 320))
    x, y, z = frame.xyz(sl)
    yc = _spine_y(spine, z)
    size = np.float32(spine["size"]) * (1 - z / 1600)  # lumbar bodies are larger
    phase = np.mod(z - np.float32(spine["offset"]), np.float32(spine["period"]))
    q = (x / (21 * size)) ** 2 + ((y - yc) / (15 * size)) ** 2
    in_body = (q < 1) & (phase > spine["disc"])
    shell = (q > 0.55) | (phase < spine["disc"] + 2.5) | (phase > spine["period"] - 2.5)
    canvas.paint(sl, (q < 1) & ~in_body, "body_wall", "disc")
    canvas.paint(sl, in_body, "vertebra", np.where(shell, _T["cortical_bone"], _T["marrow"]).astype(np.uint8))
    canal_y = yc - 15 * size - 9
    rc = np.sqrt(x**2 + (y - canal_y) ** 2)
    arch = ((rc > 7.5) & (rc < 13) & (y < canal_y + 4)) | ((np.abs(x) < 4) & (y < canal_y) & (y > canal_y - 20))
    arch &= phase > spine["disc"] + 3
    canvas.paint(sl, arch, "vertebra", "cortical_bone")
    canvas.paint(sl, rc <= 7.5, "body_wall", "csf")


def _paint_ribs(frame, params, canvas, cavity) -> None:
    """Ribs: oblique bands of bone in the chest wall (labelled body wall, not vertebra)."""
    p, body = params["ribs"], params["body"]
    sl = frame.region((-220, -160, -120), (220, 160, 320))
    x, y, z = frame.xyz(sl)
    wall = (canvas.label[sl] == _L["body_wall"]) & ~cavity[sl]
    phase = np.mod(z + 0.4 * y - np.float32(p["phase"]), np.float32(p["period"]))
    costal = z > -25 + 0.55 * y - 0.15 * np.abs(x)
    ribs = wall & (phase < p["thickness"]) & costal & ((np.abs(x) > 18) | (y < 0)) & (y > -0.8 * body["b_post"])
    canvas.paint(sl, ribs, "body_wall", "marrow")
