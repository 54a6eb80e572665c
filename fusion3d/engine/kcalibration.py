"""``train.k_auto``: choose the sparsity coefficient k by measurement instead of by dataset.

At the first v-DropPath step, the classification loss's pull on the drop logits (the mean over paths
of the magnitude of its batch-averaged gradient, over ``BATCHES`` batches of the epoch's first clips,
gates relaxed) is set against the regulariser's pull per unit of k (``weight_term_pull``), and k is
chosen so that the regulariser starts ``train.k_auto`` times as strong (``calibrated_k``). The
measurement changes no weight; it draws from the same random streams as training, so a run is as
reproducible as before, and the k chosen travels in the checkpoint (a resumed run keeps it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fusion3d.models.regularizer import calibrated_k, weight_term_pull

BATCHES = 8


def measure_k(ctx: dict, epoch: int) -> dict:
    """Measure both pulls and return ``{"k": ..., "ce_pull": ..., "unit_pull": ..., "batches": ...}``."""
    model, net, t_cfg, device, prec = ctx["model"], ctx["net"], ctx["t_cfg"], ctx["device"], ctx["precision"]
    pairs = model.gated_weights()
    logits = [lg for lg, _ in pairs]
    ctx["sampler"].set_epoch(epoch)
    ctx["sampler"].skip = 0
    net.train()
    total = [torch.zeros_like(lg) for lg in logits]
    seen = 0
    for batch in ctx["loader"]:
        x = prec.prepare_input(batch["clip"].to(device, non_blocking=True))
        y = torch.as_tensor(batch["label"]).to(device, non_blocking=True)
        with prec.autocast():
            out = net(x)
        grads = torch.autograd.grad(F.cross_entropy(out.float(), y), logits, allow_unused=True)
        for acc, g in zip(total, grads):
            if g is not None:
                acc += g.detach()
        seen += 1
        if seen == BATCHES:
            break
    ce_pull = float(torch.stack([(g / seen).abs().sum() for g in total]).mean())
    with torch.no_grad():
        stacked = torch.stack([lg.detach() for lg in logits])
        norms = torch.stack([w.detach().pow(2).sum() for _, w in pairs]).to(stacked.dtype)
        unit_pull = float(weight_term_pull(stacked, norms, ctx["n_train"]).mean())
    k = calibrated_k(ce_pull, unit_pull, t_cfg.k_auto, t_cfg.reg_form)
    return {"k": k, "ce_pull": ce_pull, "unit_pull": unit_pull, "batches": seen}
