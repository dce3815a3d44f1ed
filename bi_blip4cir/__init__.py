"""Bi-BLIP4CIR (Liu et al., WACV 2024): bi-directional training for composed image retrieval on BLIP features.

Scripts (run from the repository root, same names and flags as the original): ``clip_fine_tune.py`` (stage I),
``combiner_train.py`` (stage II), ``validate.py`` and ``cirr_test_submission.py``.
"""
