"""RA-TTA ratta_after_extract_imagenet.py.

Stage 2: retrieval-augmented test-time adaptation (the five ImageNet test sets).

    python ratta/ratta_after_extract_imagenet.py --help
"""
from ratta.after_extract import main

if __name__ == "__main__":
    main(imagenet=True)
