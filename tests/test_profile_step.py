"""benchmarks/profile_step.py: the kernel classes by name, and the harness at a tiny size on the CPU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EVALUATE = "autograd::engine::evaluate_function: "


@pytest.fixture(scope="module")
def module():
    """benchmarks/profile_step.py (which imports benchmarks/gpu_check.py)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(REPO / "benchmarks"))
        import profile_step

        yield profile_step


# (operator chain, innermost first; kernel name or None; class)
KNOWN = [
    (["aten::mkldnn_convolution", "aten::_convolution", "aten::convolution", "aten::conv3d"], None, "convolution"),
    (["aten::convolution_backward", "ConvolutionBackward0", EVALUATE + "ConvolutionBackward0"], None, "convolution"),
    (["aten::cudnn_convolution", "aten::_convolution", "aten::convolution", "aten::conv3d"],
     "sm90_xmma_fprop_implicit_gemm_bf16bf16_bf16f32_f32_nhwckrsc_nhwc_tilesize128x128x64", "convolution"),
    (["aten::cudnn_convolution", "aten::_convolution", "aten::convolution", "aten::conv3d"],
     "void cudnn::ops::nchwToNhwcKernel<__nv_bfloat16, __nv_bfloat16, float, false, true>", "copy/layout"),
    (["aten::conv_transpose3d", "aten::convolution"], None, "convolution"),
    (["aten::native_batch_norm", "aten::_batch_norm_impl_index", "aten::batch_norm", "aten::instance_norm"], None,
     "norm"),
    (["aten::native_batch_norm_backward", "NativeBatchNormBackward0", EVALUATE + "NativeBatchNormBackward0"], None,
     "norm"),
    (["aten::native_group_norm", "aten::group_norm"], None, "norm"),
    (["aten::native_layer_norm", "aten::layer_norm"], None, "norm"),
    (["aten::_scaled_dot_product_flash_attention_for_cpu", "aten::scaled_dot_product_attention"], None,
     "attention"),
    (["aten::all", "aten::_safe_softmax", "aten::_scaled_dot_product_attention_math",
      "aten::scaled_dot_product_attention"], None, "attention"),
    (["aten::_efficient_attention_backward", "aten::_scaled_dot_product_efficient_attention_backward",
      "ScaledDotProductEfficientAttentionBackward0", EVALUATE + "ScaledDotProductEfficientAttentionBackward0"],
     "fmha_cutlassB_f32_aligned_64x64_k64_sm80", "attention"),
    (["aten::addmm", "aten::linear"], None, "matmul"),
    (["aten::mm", "MmBackward0", EVALUATE + "MmBackward0"], None, "matmul"),
    (["aten::bmm", "aten::matmul"], "sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize64x64x64", "matmul"),
    (["aten::upsample_trilinear3d"], None, "resampling"),
    (["aten::grid_sampler_3d", "aten::grid_sampler"], None, "resampling"),
    (["aten::avg_pool3d"], None, "resampling"),
    (["aten::copy_", "aten::_to_copy", "aten::to"], None, "copy/layout"),
    (["aten::copy_", "aten::contiguous"], None, "copy/layout"),
    (["aten::copy_", "aten::instance_norm"], None, "copy/layout"),  # a copy is a copy wherever it runs
    (["aten::roll"], None, "copy/layout"),
    (["aten::copy_", "aten::_to_copy", "aten::to"], "Memcpy HtoD (Pageable -> Device)", "copy/layout"),
    (["aten::gelu"], None, "elementwise"),
    (["aten::leaky_relu_"], "void at::native::vectorized_elementwise_kernel<4, ...>", "elementwise"),
    (["aten::add_", EVALUATE + "CatBackward0"], None, "elementwise"),  # a gradient accumulated in the engine
    (["aten::leaky_relu_backward", "LeakyReluBackward1", "torch::autograd::CopySlices",
      EVALUATE + "torch::autograd::CopySlices"], None, "elementwise"),
    (["aten::sum", "aten::mean"], None, "elementwise"),
    (["aten::_foreach_norm"], None, "optimizer"),
    (["aten::_fused_adamw_"], None, "optimizer"),
    (["aten::_foreach_lerp_"], None, "optimizer"),
    (["aten::empty"], None, "other"),
    (["aten::_fft_r2c", "aten::fft_rfftn"], None, "other"),
    ([], None, "other"),
]


@pytest.mark.parametrize(("chain", "kernel", "expected"), KNOWN)
def test_known_operators_land_in_their_class(module, chain, kernel, expected):
    assert module.classify(chain, kernel) == expected


def test_a_range_decides_before_the_names(module):
    conv = ["aten::mkldnn_convolution", "aten::conv2d"]
    assert module.classify(conv, scope="loss terms") == "loss terms"
    assert module.classify(["aten::mul_"], scope="optimizer") == "optimizer"
    assert module.snake_case("NativeBatchNormBackward0") == "native_batch_norm_backward0"
    assert module.snake_case("aten::conv3d") == "aten::conv3d"


@pytest.fixture(scope="module")
def tiny_profile(module, tmp_path_factory):
    """The harness on milestone 1 at the rehearsal's size, on the CPU, batch 2 then 1: (report, output folder)."""
    out = tmp_path_factory.mktemp("profile")
    assert module.main(["--device", "cpu", "--tiny", "--batch-sizes", "2,1", "--out", str(out)]) == 0
    return json.loads((out / "profile_step_cpu_tiny.json").read_text()), out


def test_classes_add_up_to_the_profiled_step(tiny_profile):
    report, out = tiny_profile
    assert [run["batch"] for run in report["runs"]] == [2, 1]
    for run in report["runs"]:
        assert run["status"] == "ok", run
        assert sum(run["classes_ms"].values()) == pytest.approx(run["device_time_ms"], rel=1e-9)
        assert 0 < run["busy_fraction"] <= 1 and run["device_time_ms"] <= run["step_wall_ms"]
        assert run["busy_fraction"] == pytest.approx(run["device_time_ms"] / run["step_wall_ms"], rel=1e-9)
        assert run["operator_calls_top_level"] > 100 and run["unprofiled_step_ms"] > 0
        assert "busy_fraction_unprofiled" not in run  # on the CPU the profiler slows the operators themselves
        for name in ("convolution", "norm", "attention", "copy/layout", "optimizer", "loss terms"):
            assert run["classes_ms"].get(name, 0) > 0, (name, run["classes_ms"])
    assert report["code"]["commit"] and report["machine"]["cpu_count"] > 0
    assert (report["volume_size"], report["views"], report["view_size"], report["precision"]) == (16, 2, 32, "fp32")
    markdown = (out / "profile_step_cpu_tiny.md").read_text()
    assert "| class | batch 2 ms (share) | batch 1 ms (share) |" in markdown and "| loss terms |" in markdown


def test_loss_terms_hold_their_forward_and_their_backward(module):
    """Every loss term's operators are ``loss terms``, its backward found by autograd sequence number: the
    convolutions' backward of the perceptual (VGG16), SSIM (Gaussian window) and edge (Sobel) terms are loss time,
    the model's are ``convolution``; the optimizer's range is ``optimizer``."""
    import gpu_check

    spec = gpu_check.training_spec("milestone1", "cpu", True)
    work = module.classified_work(module.profiled_step(gpu_check.build_training(spec)), on_cuda=False)
    conv_backward = [(class_name, term) for name, class_name, term, _ in work if name == "aten::convolution_backward"]
    assert {term for class_name, term in conv_backward if class_name == "loss terms"} == {"perceptual", "ssim", "edge"}
    assert {class_name for class_name, _ in conv_backward} == {"loss terms", "convolution"}
    terms = {term for _, class_name, term, _ in work if class_name == "loss terms"}
    assert terms == {"l1", "ssim", "perceptual", "edge", "deep_supervision", "frequency", "combining the terms"}
    assert all(term is None for _, class_name, term, _ in work if class_name != "loss terms")
    assert {class_name for name, class_name, _, _ in work if name == "aten::_fused_adamw_"} == {"optimizer"}
    assert all(us >= 0 for *_, us in work)
