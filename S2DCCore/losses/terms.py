"""What every objective returns: the total to back-propagate and its named parts for logging."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class LossTerms:
    """A weighted total and the unweighted terms it was built from.

    Attributes:
        total: 0-d tensor, ``Σ weight_i · parts[i]``; the only tensor that carries the autograd graph.
        parts: the **unweighted** named terms (e.g. ``{"p2p", "p2s", "global"}``) as 0-d tensors,
            **detached** (for logging: keeping them does not keep the graph alive). A term whose
            weight is 0 is not computed and is absent from ``parts``.

    Examples:
        >>> terms = LossTerms(total=torch.tensor(1.5), parts={"a": torch.tensor(3.0)})
        >>> terms.floats()
        {'total': 1.5, 'a': 3.0}
    """

    total: Tensor
    parts: dict[str, Tensor]

    def floats(self) -> dict[str, float]:
        """``{"total": ..., **parts}`` as Python floats, read from the device in one transfer.

        Values pass through float32 (enough for logs; MPS has no float64).
        """
        names = ["total", *self.parts]
        values = [self.total, *self.parts.values()]
        # One stack + tolist is one device synchronisation instead of one per term.
        stacked = torch.stack([v.detach().reshape(()).to(device=self.total.device, dtype=torch.float32)
                               for v in values])
        return dict(zip(names, stacked.tolist()))
