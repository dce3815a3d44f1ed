"""RA-TTA ratta_pre_extract.py.

Stage 1: CLIP embeddings of each test image and its random views (the twelve non-ImageNet test sets).

    python ratta/ratta_pre_extract.py --help
"""
from ratta.pre_extract import main

if __name__ == "__main__":
    main(imagenet=False)
