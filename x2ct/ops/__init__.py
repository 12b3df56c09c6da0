"""Pure tensor functions that several layers share: volume metrics (PSNR, 3D SSIM, MAE) and 3D patch crops.

A leaf: nothing here imports the rest of x2ct, so training, losses, models and evaluation can all use one
definition without an import running upward (``tests/test_import_direction.py``).
"""
