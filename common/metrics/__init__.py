"""Retrieval metrics: composed image retrieval (FashionIQ, CIRR, Shoes) and image–text retrieval (itm_eval)."""
from common.metrics.cir import (cirr_rankings, cirr_recalls, cirr_summary, fiq_recalls, fiq_summary, index_of,
                                rank_gallery, recall_at_k, safe_means, shoes_recalls, subset_ranks, target_ranks)
from common.metrics.retrieval import itm_eval, permute_maps

__all__ = [
    "cirr_rankings", "cirr_recalls", "cirr_summary", "fiq_recalls", "fiq_summary", "index_of", "itm_eval",
    "permute_maps", "rank_gallery", "recall_at_k", "safe_means", "shoes_recalls", "subset_ranks", "target_ranks",
]
