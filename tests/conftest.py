import os
import sys

# Run from the repository root so our top-level `datasets/` and `mamba/` win over installed packages.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if sys.path[0] != ROOT:
    sys.path.insert(0, ROOT)
