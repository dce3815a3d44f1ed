"""RA-TTA ratta_pre_extract_imagenet.py.

Stage 1: CLIP embeddings of each test image and its random views (the five ImageNet test sets).

    python ratta/ratta_pre_extract_imagenet.py --help
"""
from ratta.pre_extract import main

if __name__ == "__main__":
    main(imagenet=True)
