"""Published adult reference values the phantom generator aims at, each a named range with its source.

These are the yardsticks the v2 generator's ranges are set against and its tests check: organ volumes, chest
diameters, bone sizes and tissue densities of adults (both sexes, supine CT). Where a source gives a mean and
spread, the range spans roughly the 5th to 95th percentile of both sexes; where the exact figure is not at hand,
the range is deliberately wide and the note says so. No value here comes from this project's own example CT.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Reference:
    """A published range: ``low`` to ``high`` in ``unit``, with the source and how it was read."""

    low: float
    high: float
    unit: str
    source: str

    def __contains__(self, value: float) -> bool:
        return self.low <= value <= self.high


_ICRP89 = "ICRP Publication 89 (2002), Basic anatomical and physiological data, reference adult male/female"

# --- organ volumes (ml)
LUNG_VOLUME_ML = Reference(
    2000.0, 8500.0, "ml",
    "air-containing lungs between FRC and TLC: Quanjer et al. 1993, Eur Respir J 6 Suppl 16 (ECSC/ERS reference "
    "equations: TLC about 5-7.5 L men, 4-6 L women; FRC about 2.5-3.5 L, lower limits near 2 L in small "
    "adults); conservative envelope")
HEART_VOLUME_ML = Reference(
    400.0, 1000.0, "ml",
    f"whole heart (myocardium + chamber blood): {_ICRP89}, heart wall 330 g / 250 g plus blood in the heart "
    "about 510 g / 370 g, density about 1.05 g/ml (about 800 / 590 ml); widened for small and large adults")
LIVER_VOLUME_ML = Reference(
    1000.0, 2300.0, "ml",
    f"{_ICRP89}: liver 1800 g / 1400 g at about 1.05 g/ml; CT volumetry of normal livers spans about 1.0-2.2 L "
    "(e.g. Heinemann et al. 1999, Transplantation 67); conservative envelope")
SPLEEN_VOLUME_ML = Reference(
    80.0, 400.0, "ml",
    f"{_ICRP89}: spleen 150 g / 130 g; normal CT splenic volume about 100-300 ml (Prassopoulos et al. 1997, "
    "Eur Radiol 7); conservative envelope")

# --- chest size (mm), external body contour at the level of the widest rib cage
CHEST_LR_DIAMETER_MM = Reference(
    240.0, 400.0, "mm",
    "chest breadth of adults: ANSUR II anthropometric survey (Gordon et al. 2014, US Army NSRDEC TR-15/007), means "
    "about 29 cm women / 33 cm men; exact percentiles not reproduced here, conservative envelope")
CHEST_AP_DIAMETER_MM = Reference(
    170.0, 320.0, "mm",
    "chest depth of adults: ANSUR II (Gordon et al. 2014), means about 24 cm women / 26 cm men; exact "
    "percentiles not reproduced here, conservative envelope")
HALLER_INDEX = Reference(
    1.8, 3.3, "ratio",
    "inner transverse / inner AP (sternum to vertebral body) thoracic diameter, normal adults about 2.5 "
    "(Haller et al. 1987, J Pediatr Surg 22; Daunt et al. 2004, Pediatr Radiol 34)")

# --- bone sizes (mm)
CLAVICLE_LENGTH_MM = Reference(
    120.0, 175.0, "mm", "adult clavicle length about 14 cm women / 15.5 cm men (e.g. Andermahr et al. 2007, "
    "Clin Anat 20); conservative envelope")
HUMERAL_HEAD_DIAMETER_MM = Reference(
    36.0, 56.0, "mm", "humeral head radius of curvature about 20-28 mm (Iannotti et al. 1992, JBJS Am 74)")
SCAPULA_HEIGHT_MM = Reference(
    130.0, 190.0, "mm", "scapular length, superior to inferior angle, about 14-17 cm in adults; approximate, "
    "conservative envelope (standard osteology texts)")
BIACROMIAL_BREADTH_MM = Reference(
    320.0, 440.0, "mm", "biacromial breadth: ANSUR II (Gordon et al. 2014), means about 36 cm women / 40 cm men; "
    "conservative envelope")
THORACIC_VERTEBRA_WIDTH_MM = Reference(
    28.0, 50.0, "mm", "thoracic vertebral body transverse width, T1 about 30 mm to T12 about 45 mm (Panjabi et "
    "al. 1991, Spine 16)")

# --- tissue densities (HU), unenhanced unless stated
_HU_TABLE = ("standard CT attenuation tables (e.g. Lev & Gonzalez, in Lee/Sagel/Stanley/Heiken, Computed Body "
             "Tomography with MRI Correlation; Brant & Helms, Fundamentals of Diagnostic Radiology)")
FAT_HU = Reference(-130.0, -70.0, "HU", f"adipose tissue: {_HU_TABLE}")
MUSCLE_HU = Reference(20.0, 70.0, "HU", f"skeletal muscle about 40 +- 10 HU: {_HU_TABLE}")
BLOOD_HU = Reference(30.0, 60.0, "HU", f"unenhanced blood about 40 +- 10 HU (higher with high haematocrit): "
                     f"{_HU_TABLE}")
LIVER_HU = Reference(45.0, 75.0, "HU", f"normal unenhanced liver about 55-65 HU: {_HU_TABLE}")
SPLEEN_HU = Reference(35.0, 60.0, "HU", f"normal unenhanced spleen about 45 HU, a little below liver: {_HU_TABLE}")
LUNG_HU = Reference(-920.0, -750.0, "HU", "aerated lung parenchyma at inspiration about -850 HU (e.g. Gevenois "
                    "et al. 1996, AJRCCM 154: mean lung density of normal lungs around -850 to -870 HU)")
CORTICAL_BONE_HU = Reference(700.0, 1900.0, "HU", f"cortical bone: {_HU_TABLE}")
CANCELLOUS_BONE_HU = Reference(100.0, 600.0, "HU", f"cancellous (trabecular) bone, age dependent: {_HU_TABLE}")
BREAST_HU = Reference(-110.0, 40.0, "HU", "breast tissue: a mixture of fat (about -100 HU) and fibroglandular "
                      "tissue (about +30 HU); approximate envelope")

# --- contrast enhancement (HU of blood and organs)
ARTERIAL_BLOOD_HU = Reference(
    200.0, 500.0, "HU", "aortic enhancement in the arterial phase of CT angiography, diagnostic above about "
    "200-250 HU (Bae 2010, Radiology 256: intravenous contrast medium administration and scan timing at CT)")
VENOUS_BLOOD_HU = Reference(
    110.0, 220.0, "HU", "aortic / caval blood in the portal venous phase about 130-200 HU (Bae 2010, Radiology "
    "256); conservative envelope")
VENOUS_LIVER_HU = Reference(
    85.0, 140.0, "HU", "liver in the portal venous phase, about 50 HU above unenhanced (Bae 2010, Radiology 256; "
    "Heiken et al. 1995, Radiology 195)")
