"""The bones: spine (vertebral bodies, discs, neural arches, processes), sternum, ribs with costal cartilage.

Each is an SDF in RAS mm (negative inside) placed on the patient's ``BodyFrame``: the spine on its spine line,
the sternum on the cage's front line, the ribs on the cage ellipse itself.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from x2ct.data.phantom.body import BodyFrame
from x2ct.data.phantom.config import PhantomConfig
from x2ct.data.phantom.sdf import BIG_MM, MIN_GRADIENT, ellipse_sdf, segment_distance

_SPINOUS_DROP = 0.3  # the spinous process tip lies this fraction of a vertebral half-height below its root


class Spine:
    """Vertebrae stacked one pitch apart from the first rib's level, following the frame's kyphotic line."""

    def __init__(self, p: SimpleNamespace, frame: BodyFrame) -> None:
        self.p, self.frame = p, frame

    @property
    def column_bounds(self) -> np.ndarray:
        p = self.p
        reach = p.vertebral_half_width_mm + p.pleural_gap_mm
        y0 = self.frame.y_spine0 - p.vertebral_half_depth_mm - p.pleural_gap_mm
        return np.array([[-reach, reach], [y0, y0 + 2 * reach + p.kyphosis_mm], [-np.inf, np.inf]])

    def column_sdf(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """The stack of vertebral bodies and discs as one elliptic cylinder (what the lungs must avoid)."""
        p = self.p
        return ellipse_sdf(x, y - self.frame.spine_y(z), p.vertebral_half_width_mm, p.vertebral_half_depth_mm)

    def sdf(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Vertebral bodies, neural arches, spinous and transverse processes, periodic along z."""
        p = self.p
        pitch = p.vertebra_pitch_mm
        u = np.mod(z - p.first_rib_z_mm + 0.5 * pitch, pitch) - 0.5 * pitch  # height within the vertebra
        half_height = 0.5 * pitch * (1.0 - p.disc_fraction)
        in_level = np.abs(u) - half_height
        ys = self.frame.spine_y(z)
        rho2 = np.minimum((x / p.vertebral_half_width_mm) ** 2 + ((y - ys) / p.vertebral_half_depth_mm) ** 2, 1.0)
        body = np.maximum(self.column_sdf(x, y, z), in_level + p.endplate_sag_mm * (1.0 - rho2))
        canal_y = ys - p.vertebral_half_depth_mm - p.spinal_canal_radius_mm + p.lamina_thickness_mm / 2
        dy = y - canal_y
        rho = np.sqrt(x * x + dy * dy)
        arch = np.maximum(np.maximum(rho - p.spinal_canal_radius_mm - p.lamina_thickness_mm,
                                     p.spinal_canal_radius_mm - rho), in_level)
        back = -(p.spinal_canal_radius_mm + 0.5 * p.lamina_thickness_mm)
        # processes, in (x, y - canal_y, u) coordinates; the spinous process slopes down posteriorly
        spinous, _ = segment_distance(x, dy, u, (0.0, back, 0.0),
                                      (0.0, back - p.spinous_process_length_mm, -_SPINOUS_DROP * half_height))
        transverse, _ = segment_distance(np.abs(x), dy, u, (p.spinal_canal_radius_mm, 0.0, 0.0),
                                         (p.transverse_process_length_mm, back, 0.0))
        processes = np.minimum(spinous, transverse) - p.process_radius_mm
        return np.minimum(np.minimum(body, arch), processes)

    @property
    def bounds(self) -> np.ndarray:
        p = self.p
        y_spine0 = self.frame.y_spine0
        reach = p.transverse_process_length_mm + p.process_radius_mm
        back = (p.vertebral_half_depth_mm + 2 * p.spinal_canal_radius_mm + p.lamina_thickness_mm
                + p.spinous_process_length_mm + p.process_radius_mm)
        return np.array([[-reach, reach],
                         [y_spine0 - back, y_spine0 + p.vertebral_half_depth_mm + p.kyphosis_mm],
                         [-np.inf, np.inf]])


class Sternum:
    """A flat plate of oval cross-section on the cage's front line, from the sternal notch down."""

    def __init__(self, p: SimpleNamespace, frame: BodyFrame) -> None:
        self.p, self.frame = p, frame
        self.top = p.first_rib_z_mm - p.sternum_top_below_first_rib_mm

    def sdf(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        p = self.p
        yc, _, b = self.frame.cage(z)
        half_len = 0.5 * p.sternum_length_mm
        plate = ellipse_sdf(x, y - (yc + b), p.sternum_half_width_mm, 0.5 * p.sternum_thickness_mm)
        return np.maximum(plate, np.abs(z - (self.top - half_len)) - half_len)

    @property
    def bounds(self) -> np.ndarray:
        p = self.p
        return np.array([[-p.sternum_half_width_mm, p.sternum_half_width_mm],
                         [self.frame.y_spine0, self.frame.cage_front0 + p.sternum_thickness_mm],
                         [self.top - p.sternum_length_mm, self.top]])


class Ribs:
    """Rib pairs on the cage ellipse, one per thoracic vertebra, evaluated only at points near that ellipse.

    The upper ``sternal_rib_count`` reach the sternum through costal cartilage; the rest float.
    """

    def __init__(self, p: SimpleNamespace, config: PhantomConfig, frame: BodyFrame) -> None:
        self.p, self.frame = p, frame
        self.count, self.sternal_count = config.rib_count, config.sternal_rib_count

    def sdfs(
        self, x: np.ndarray, y: np.ndarray, z: np.ndarray, dr: np.ndarray,
        drawn_axes: tuple[float, float], true_axes: tuple[float, float],
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(rib drawn, cartilage drawn, rib true) SDFs at points at signed distance ``dr`` from the cage ellipse.

        Rib k's centreline lies on the cage ellipse at height first_rib_z - k * pitch at the back, dropping by
        rib_drop toward the front. The axes are the (radial, vertical) semi-axes of the tube cross-section.
        """
        p = self.p
        yc, _, _ = self.frame.cage(z)
        dy = y - yc
        front = (1.0 + dy / np.maximum(np.sqrt(x * x + dy * dy), MIN_GRADIENT)) / 2  # 0 at the back, 1 in front
        level = (p.first_rib_z_mm - z - p.rib_drop_mm * front) / p.vertebra_pitch_mm
        k = np.rint(level)
        v = (level - k) * p.vertebra_pitch_mm
        present = (k >= 0) & (k < self.count)
        sternal = k < self.sternal_count
        x_end = np.where(sternal, p.sternum_half_width_mm + p.cartilage_length_mm + k * p.cartilage_growth_mm,
                         BIG_MM)
        ax = np.abs(x)
        anterior = dy > 0
        extent = np.where(present, np.where(anterior, x_end - ax, p.vertebral_half_width_mm - ax), BIG_MM)
        tube = ellipse_sdf(dr, v, *drawn_axes)
        # cartilage runs from the rib's end into the sternum's edge, so the joint has no gap
        cartilage = np.maximum(np.maximum(tube, ax - x_end), 0.5 * p.sternum_half_width_mm - ax)
        cartilage = np.where(present & anterior & sternal, cartilage, BIG_MM)
        return np.maximum(tube, extent), cartilage, np.maximum(ellipse_sdf(dr, v, *true_axes), extent)
