"""A local composed-image search demo: the gallery index and ranking (``engine``), CLIP4Cir-style composed models
(``composed``), the HTTP server and its page (``server``), and the command line (``cli``)."""
