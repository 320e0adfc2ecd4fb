from .bimamba import RESIDUAL_START, BiMamba

__all__ = ["BiMamba", "RESIDUAL_START"]
