"""ImageNet-1K supervised pre-training of the image models (DeiT recipe: AdamW, cosine, mixup/cutmix,
RandAugment, repeated augmentation, EMA), optionally with self-distillation from a frozen teacher.

The loop is the fine-tuning loop (engines.finetune.fit / train_one_epoch, engines.evaluate.evaluate): a model that returns
``(logits, auxiliary_loss)`` - the distillation wrapper - has that loss added to the task loss.
This module adds what differs: the repeated-augmentation sampler and the distillation summary.
"""
from __future__ import annotations


def repeat_aug_sampler(dataset, args, world: int, rank: int):
    """timm's RepeatAugSampler (each image ``--num_repeats`` times per epoch across ranks) with --repeated_aug,
    else a plain shuffling DistributedSampler. Both reshuffle from (seed, epoch) via ``set_epoch``."""
    import torch.utils.data as tud

    if getattr(args, "repeated_aug", False):
        from timm.data.distributed_sampler import RepeatAugSampler

        sampler = RepeatAugSampler(dataset, num_replicas=world, rank=rank, shuffle=True,
                                   num_repeats=args.num_repeats)
        return _SeededRepeatAug(sampler, args.seed)
    return tud.DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=args.seed,
                                  drop_last=True)


class _SeededRepeatAug:
    """RepeatAugSampler seeds its shuffle with the epoch only; offset it by --seed so runs differ by seed."""

    def __init__(self, sampler, seed: int):
        self.sampler, self.seed = sampler, int(seed)

    def set_epoch(self, epoch: int):
        self.sampler.set_epoch(self.seed * 100003 + epoch)

    def __iter__(self):
        return iter(self.sampler)

    def __len__(self):
        return len(self.sampler)


def describe_distillation(args) -> str:
    if not getattr(args, "teacher_model", None):
        return "no distillation"
    return (f"self-distillation from {args.teacher_model} ({args.teacher_ckpt or 'random weights!'}), "
            f"weight {args.distill_weight}, style {getattr(args, 'distill_style', 'videomamba')}")
