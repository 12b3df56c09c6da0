"""Adversarial training building blocks (milestone 3): objectives, discriminators, projection rendering.

The training step that uses them lives in the engine; nothing here knows about optimisers or the trainer.
"""
