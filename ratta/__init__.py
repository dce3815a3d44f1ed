"""RA-TTA: retrieval-augmented test-time adaptation for vision-language models (ICLR 2025)."""
