"""MLCL (Zhao et al., ICASSP 2024): multi-level contrastive learning for composed image retrieval on CLIP features.

Scripts (run from the repository root, same names and flags as the original): ``clip_fine_tune.py`` (stage 1),
``combiner_train.py`` (stage 2), ``validate.py``, ``cirr_test_submission.py`` and ``prepare_shoes_data.py``.
"""
