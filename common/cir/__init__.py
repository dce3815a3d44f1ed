"""What the CLIP4Cir descendants (Bi-BLIP4CIR, Candidate Re-ranking, MLCL) share: the Combiner, the FashionIQ /
CIRR / Shoes datasets as triplets and galleries, frozen-feature tables, the validation loop with the original metric
keys, and the original checkpoint selection rules."""
