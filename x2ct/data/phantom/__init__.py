"""Procedural chest CT phantoms: the embedded default data set, so every pipeline runs with no download.

``generate_chest_phantom(seed)`` draws one synthetic patient, a chest in Hounsfield units from the lower neck
to the upper abdomen: body outline with subcutaneous fat, rib cage with costal cartilage, sternum, spine
(vertebral bodies, discs, neural arches, processes), lungs with branching pulmonary vessels, trachea and main
bronchi, heart in its fat layer, aortic arch and descending aorta, liver dome, and optional lung nodules. Every
size, position and density is drawn from a range in ``PhantomConfig``; ``LABELS`` names the label map's ids.

Why it is built this way:

- Anatomy is a set of signed distance functions (SDFs, mm, negative inside) in RAS world millimetres centred
  on the volume centre; only then is it sampled on the voxel grid. The same seed is the same patient on a 32^3
  or a 256^3 grid, and a 128^3 phantom block-averaged to 64^3 matches the 64^3 phantom.
- Partial volume: a voxel takes the fraction ``clip(0.5 - sdf / w, 0, 1)`` of a structure, with ``w`` one
  voxel: the exact coverage of a planar edge. Thin tubes (vessels, ribs) and small spheres (nodules) are drawn
  with a shrunken radius, or a reduced contrast when thinner than a voxel, so their total attenuation -- what a
  DRR integrates -- does not depend on the voxel size. Labels name the structure containing the voxel centre.
- Every anatomical parameter has its own random stream keyed by ``(seed, field name)``: overriding one range
  leaves every other draw of the same patient unchanged, so an ablation compares the same patients.

The modules, in the order a patient is built:

- ``config``: ``PhantomConfig`` ranges, ``draw_patient`` and the per-parameter random streams.
- ``sdf``: the shapes (ellipse, flat-backed ellipse, ellipsoid, height field, segment) as SDFs.
- ``body``: the frame the rest hangs on: body outline, spine line, rib-cage ellipse, diaphragm domes.
- ``organs``: heart, aorta, trachea and main bronchi (with the hila), liver.
- ``skeleton``: spine, sternum, ribs and costal cartilage.
- ``lungs``: the lungs carved by heart, aorta and spine; pulmonary vessel trees; nodules.
- ``partial_volume``: the voxel grid, the edge ramp, painting HU over HU.
- ``assembly``: ``render_chest``: the parts composed, painted in order with their HU and ``LABELS``;
  its ``Thorax`` (every part but the liver) and painters (lungs, vessels, aorta, airways, bones, nodules) are
  shared with v2.
- ``references``: published adult ranges (organ volumes, chest diameters, bone sizes, tissue HU), each with its
  source: what v2's ranges are set against and its tests check.

Version 2, ``generate_chest_phantom(seed, config=PhantomV2Config())`` (package ``v2``), adds what shapes a chest
radiograph and varies between real patients, keeping v1 bit-identical: v1's parts are built on an *effective*
patient (habitus, overall scale, inspiration applied to the drawn ranges) and painted through a slightly rotated
grid (pose); the v2 parts hang on them. ``PhantomV2Config`` extends ``PhantomConfig``; ``LABELS_V2`` keeps v1's
ids and appends new ones.

- ``v2.config``: ``PhantomV2Config`` and the categorical draws (habitus, sex, arm pose, contrast phase, table,
  truncation, stomach gas), each from its own stream.
- ``v2.patient``: the drawn patient and its effective anatomy for v1's parts.
- ``v2.pose``: ``PoseGrid``, v1's grid seen from the rotated patient's frame.
- ``v2.shapes``: oriented ellipsoids, tube chains, triangular plates, smooth union.
- ``v2.shoulders``: clavicles, scapulae, humeri, forearms; arms down, up or across.
- ``v2.contour``: the skin: torso capped at the shoulders, neck, shoulder masses, arms, breasts.
- ``v2.mediastinum``: heart chambers inside the myocardium; arch branches, SVC, pulmonary trunk and arteries.
- ``v2.contrast``: blood and organ HU in the patient's phase (none, venous, arterial).
- ``v2.abdomen``: whole liver, spleen, stomach with its gas cap.
- ``v2.table``: the scanner table (world frame) below a foam gap.
- ``v2.texture``: correlated HU texture from voxel-averaged plane waves.
- ``v2.truncation``: the scanned slab of a truncated scan.
- ``v2.assembly``: ``render_chest_v2``: everything painted in order, then cut to the scanned slab.

``generate``: ``generate_chest_phantom`` checks the arguments, makes the grid and paints the version its
config's type names (``GENERATORS``: v1 ``PhantomConfig``, v2 ``PhantomV2Config``).
"""

from x2ct.data.phantom.assembly import LABELS
from x2ct.data.phantom.config import PhantomConfig, draw_patient
from x2ct.data.phantom.generate import GENERATORS, generate_chest_phantom
from x2ct.data.phantom.v2 import LABELS_V2, PhantomV2Config, draw_patient_v2

__all__ = ["GENERATORS", "LABELS", "LABELS_V2", "PhantomConfig", "PhantomV2Config", "draw_patient",
           "draw_patient_v2", "generate_chest_phantom"]


def __getattr__(name: str):
    """The v2 generator's former name, refused with the call that replaces it."""
    if name == "generate_chest_phantom_v2":
        raise AttributeError("x2ct.data.phantom.generate_chest_phantom_v2 is now "
                             "generate_chest_phantom(seed, ..., config=PhantomV2Config(...)): the config picks v2")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
