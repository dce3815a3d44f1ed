"""RA-TTA ratta_after_extract.py.

Stage 2: retrieval-augmented test-time adaptation (the twelve non-ImageNet test sets).

    python ratta/ratta_after_extract.py --help
"""
from ratta.after_extract import main

if __name__ == "__main__":
    main(imagenet=False)
