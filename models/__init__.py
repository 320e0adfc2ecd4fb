"""VideoMambaPro / VideoMamba models. Importing this package registers them in timm:
``videomambapro_{tiny,small,middle}``, ``videomamba_{tiny,small,middle}`` (video), the ``*_image``
variants, and the small ``*_test`` / ``*_demo`` variants."""
from . import videomambapro  # noqa: F401  (registers the models)
from .checkpoint import load_checkpoint_file, load_pretrained
from .videomambapro import MODEL_SIZES, PRO_OPTIONS, VideoMambaPro, checkpoint_filter_fn

__all__ = ["VideoMambaPro", "checkpoint_filter_fn", "load_checkpoint_file", "load_pretrained", "MODEL_SIZES",
           "PRO_OPTIONS"]
