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
- ``assembly``: ``generate_chest_phantom``: the parts composed, painted in order with their HU and ``LABELS``.
"""

from x2ct.data.phantom.assembly import LABELS, generate_chest_phantom
from x2ct.data.phantom.config import PhantomConfig, draw_patient

__all__ = ["LABELS", "PhantomConfig", "draw_patient", "generate_chest_phantom"]
