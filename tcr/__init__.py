"""TCR: test-time adaptation for cross-modal retrieval under query shift (ICLR 2025)."""
