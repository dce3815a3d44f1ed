"""TTA baselines run through the same online loop as TCR (``models/tta_baselines/``): logits ``z Gᵀ / τ`` over the
full gallery.

Tent, SAR, READ and SHOT follow the original TCR code. Its EATA and DeYO sources were never published (only their
bytecode names survive), so ``eata`` and ``deyo`` are written from their own papers.
"""
from tcr.baselines.deyo import DeYO
from tcr.baselines.eata import EATA
from tcr.baselines.read import READ
from tcr.baselines.sar import SAR
from tcr.baselines.shot import SHOT
from tcr.baselines.tent import Tent

BASELINES = {cls.name: cls for cls in (Tent, EATA, SAR, READ, SHOT, DeYO)}

__all__ = ["BASELINES", "DeYO", "EATA", "READ", "SAR", "SHOT", "Tent"]
