"""x2ct: reconstruct a 3D CT volume from a few X-ray projections."""

__version__ = "0.1.0"
