"""VideoMambaPro / VideoMamba models and the baselines they are compared with. Importing this package registers
them in timm: ``videomambapro_{tiny,small,middle}``, ``videomamba_{tiny,small,middle}`` (video), the ``*_image``
variants, and the small ``*_test`` / ``*_demo`` variants; the baselines ``timesformer_{tiny,small,base}``,
``vivit_{tiny,small,base}`` (factorised encoder) and ``videomambaout_{tiny,small,middle}`` (gated CNN, no SSM),
each with ``*_test`` / ``*_demo`` variants (``videomambaout_*_image`` too); the masked-pretraining students
``videomambapro_{size}_pretrain`` / ``videomamba_{size}_pretrain`` (CLIP-aligned, models/videomamba_pretrain.py) and
``{videomambapro,videomamba,timesformer}_*_maskfeat`` (MaskFeat, models/maskfeat.py)."""
from . import (  # noqa: F401  (registers the models)
    maskfeat,
    timesformer,
    videomamba_pretrain,
    videomambaout,
    videomambapro,
    vivit,
)
from ._common import MODEL_SIZES, PRO_OPTIONS
from .checkpoint import load_checkpoint_file, load_pretrained
from .videomambapro import VideoMambaPro, checkpoint_filter_fn

__all__ = ["VideoMambaPro", "checkpoint_filter_fn", "load_checkpoint_file", "load_pretrained", "MODEL_SIZES",
           "PRO_OPTIONS", "registered_models"]


def registered_models(pattern: str = "*") -> list:
    """Names of the timm models this package registers (matching ``pattern``), sorted."""
    import timm
    from timm.models import model_entrypoint

    return [n for n in timm.list_models(pattern)
            if (model_entrypoint(n).__module__ or "").startswith(__name__ + ".")]
