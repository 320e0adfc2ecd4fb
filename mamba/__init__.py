"""VideoMambaPro's own selective-scan package.

The import name is ``mamba`` (never ``mamba_ssm``): an installed upstream mamba-ssm is only ever used
as an optional kernel provider, imported lazily by ``mamba.ops``; it can neither shadow nor be
shadowed by this package. Importing this package needs no GPU and no compiler.
"""

# Self-check marker: ``models/`` refuses to run when another package called ``mamba`` was imported.
IS_VIDEOMAMBAPRO_MAMBA = True

__version__ = "0.1.0"
