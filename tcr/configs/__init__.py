"""TCR's config tree, generated from a template (:mod:`tcr.configs.tree`); ``make_configs.py`` writes it to disk."""
