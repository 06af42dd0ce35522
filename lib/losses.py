"""Focal loss for multi-class classification (Lin et al., 2017), in the softmax form study 02 uses."""
import numbers

import torch
from torch import nn
from torch.nn import functional as F

REDUCTIONS = ("mean", "sum", "none")


class FocalLoss(nn.Module):
    """Cross-entropy scaled by (1 - p_t)^gamma, so well-classified samples count less and hard ones more.

    p_t is the softmax probability of the true class. gamma=0 gives cross-entropy exactly. `alpha` weighs the
    samples: a scalar scales every sample, a per-class sequence or tensor weighs each sample by its true class.
    reduction="mean" averages over the samples (as torchvision.ops.sigmoid_focal_loss does), so with a per-class
    alpha it is not CrossEntropyLoss(weight=alpha)'s weighted mean; reduction="sum" matches it at gamma=0.
    """

    def __init__(self, gamma=2.0, alpha=None, reduction="mean"):
        super().__init__()
        if not gamma >= 0:
            raise ValueError(f"FocalLoss gamma={gamma!r} must be >= 0 (0 is plain cross-entropy)")
        if reduction not in REDUCTIONS:
            raise ValueError(f"FocalLoss reduction={reduction!r} must be one of {REDUCTIONS}")
        self.gamma, self.reduction = float(gamma), reduction
        if alpha is None or isinstance(alpha, numbers.Real):
            self.alpha = alpha
        else:
            # a buffer follows the module to the GPU and into state_dict
            self.register_buffer("alpha", torch.as_tensor(alpha, dtype=torch.float32).flatten())

    def forward(self, logits, target):
        """Loss of N x C logits against N class indices."""
        log_pt = F.log_softmax(logits.float(), dim=1).gather(1, target.unsqueeze(1)).squeeze(1)
        # 1 - p_t via expm1 stays accurate when p_t is close to 1, where the focal factor matters most
        loss = -(-torch.expm1(log_pt)) ** self.gamma * log_pt
        if isinstance(self.alpha, torch.Tensor):
            if len(self.alpha) != logits.shape[1]:
                raise ValueError(f"FocalLoss alpha has {len(self.alpha)} entries but the logits have "
                                 f"{logits.shape[1]} classes: give one weight per class")
            loss = loss * self.alpha[target]
        elif self.alpha is not None:
            loss = loss * self.alpha
        if self.reduction == "mean":
            return loss.mean()
        return loss.sum() if self.reduction == "sum" else loss

    def extra_repr(self):
        alpha = self.alpha if not isinstance(self.alpha, torch.Tensor) else "per-class"
        return f"gamma={self.gamma}, alpha={alpha}, reduction={self.reduction!r}"
