"""The manifest of released checkpoints (``manifest.json``) and its checker (``weights.check``)."""
