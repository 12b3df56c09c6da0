"""X-ray physics: attenuation, projection geometry and the differentiable DRR projector."""
