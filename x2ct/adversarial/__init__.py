"""Adversarial training building blocks (milestone 3): objectives and discriminators. What the projection
discriminator sees is rendered by ``x2ct.physics.volume_projections``.

The training step that uses them lives in the engine; nothing here knows about optimisers or the trainer.
"""
