"""Candidate Set Re-ranking for composed image retrieval (Liu, Sun, Teney, Gould, TMLR 2024).

Stage 1 filters the gallery with BLIP's image-grounded text encoder and writes top-K files; stage 2 re-ranks each
top-K with the dual multi-modal encoder. Scripts keep the names and flags of Candidate-Reranking-CIR's ``src/``.
"""
