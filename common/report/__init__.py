"""Retrieval reports: a self-contained HTML page (thumbnails embedded) and a PNG contact sheet of example queries,
written by the evaluation scripts with ``--report DIR``.

``args`` (the flags) is light; ``page``, ``grid`` and the adapters (``cir``: composed image retrieval, ``rerank``:
stage 1 vs stage 2, ``retrieval``: image-text before/after adaptation, ``classify``: test-time classification) are
imported only when a report is asked for.
"""
