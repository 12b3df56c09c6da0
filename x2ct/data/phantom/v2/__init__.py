"""Phantom generator v2: the chest a radiograph shows, built from v1's parts plus the anatomy v1 leaves out.

See ``x2ct.data.phantom`` for the design shared with v1 and the list of v2's modules.
"""

from x2ct.data.phantom.v2.assembly import LABELS_V2
from x2ct.data.phantom.v2.config import PhantomV2Config
from x2ct.data.phantom.v2.patient import draw_patient_v2

__all__ = ["LABELS_V2", "PhantomV2Config", "draw_patient_v2"]
