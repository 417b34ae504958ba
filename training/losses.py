"""Losses on relaxed codes (tanh outputs in (-1, 1)), each weighted in ``LossConfig``.

Similarities are cosine similarities of codes. For codes b in {-1, +1}^K,
cos(b1, b2) = 1 - 2 * hamming(b1, b2) / K, so a loss on (straight-through) binarised
codes optimises the very Hamming ranking that search uses; ``ste_weight`` mixes that
binarised term with the smooth relaxed one.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from crossmodal.heads import sign_ste

from .config import LossConfig, resolve_loss_config


def cosine_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T


def multi_positive_info_nce(logits: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """Mean over rows of -log( sum_pos exp(logit) / sum_all exp(logit) ).

    ``positives`` is a boolean matrix of the same shape; rows without any positive
    are ignored. With the identity as ``positives`` this is ordinary InfoNCE.
    """
    has_pos = positives.any(1)
    if not has_pos.any():
        return logits.sum() * 0.0
    log_all = torch.logsumexp(logits, dim=1)
    log_pos = torch.logsumexp(logits.masked_fill(~positives, float("-inf")), dim=1)
    return (log_all - log_pos)[has_pos].mean()


def symmetric_info_nce(a: torch.Tensor, b: torch.Tensor, temperature: torch.Tensor | float,
                       positives: torch.Tensor | None = None) -> torch.Tensor:
    """InfoNCE in both directions (a->b and b->a); positives default to the diagonal."""
    logits = cosine_matrix(a, b) / temperature
    if positives is None:
        positives = torch.eye(len(a), dtype=torch.bool, device=a.device)
    return 0.5 * (multi_positive_info_nce(logits, positives) + multi_positive_info_nce(logits.T, positives.T))


def max_violation_triplet(a: torch.Tensor, b: torch.Tensor, margin: float,
                          positives: torch.Tensor | None = None) -> torch.Tensor:
    """VSE++ hardest-negative margin ranking loss, in both directions.

    For each positive pair (i, j), the cost is the margin violation of the hardest
    negative in row i and in column j. Pairs marked positive are never negatives.
    """
    sim = cosine_matrix(a, b)
    if positives is None:
        positives = torch.eye(len(a), dtype=torch.bool, device=a.device)
    neg = sim.masked_fill(positives, float("-inf"))
    hardest_row = neg.max(1).values  # for each a_i, hardest b
    hardest_col = neg.max(0).values  # for each b_j, hardest a
    pi, pj = positives.nonzero(as_tuple=True)
    if len(pi) == 0:
        return sim.sum() * 0.0
    pos = sim[pi, pj]
    cost_a = (margin - pos + hardest_row[pi]).clamp(min=0)
    cost_b = (margin - pos + hardest_col[pj]).clamp(min=0)
    cost_a = torch.where(torch.isfinite(cost_a), cost_a, torch.zeros_like(cost_a))
    cost_b = torch.where(torch.isfinite(cost_b), cost_b, torch.zeros_like(cost_b))
    return (cost_a + cost_b).mean()


def quantization_loss(h: torch.Tensor) -> torch.Tensor:
    """Mean squared distance of relaxed codes from the nearest of -1/+1."""
    return (h.abs() - 1).pow(2).mean()


def balance_loss(h: torch.Tensor) -> torch.Tensor:
    """Each bit should be +1 for half the items: the squared mean of each bit."""
    return h.mean(0).pow(2).mean()


def decorrelation_loss(h: torch.Tensor) -> torch.Tensor:
    """Bits should carry different information: mean squared off-diagonal correlation."""
    if len(h) < 2:
        return h.sum() * 0.0
    z = (h - h.mean(0)) / (h.std(0) + 1e-5)
    c = (z.T @ z) / (len(h) - 1)
    off = c - torch.diag(torch.diag(c))
    k = c.shape[0]
    return off.pow(2).sum() / (k * (k - 1))


def label_positives(labels_a: torch.Tensor, labels_b: torch.Tensor) -> torch.Tensor:
    """Multi-hot label matrices [N, L], [M, L] -> boolean [N, M]: share at least one label."""
    return (labels_a.float() @ labels_b.float().T) > 0


def reconstruction_loss(decoded: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the target's variance: the share of the clean features'
    variance the decoded code leaves unexplained (0: perfect; 1: no better than the mean),
    the same scale whatever the encoder's feature magnitudes."""
    return (decoded - target).pow(2).mean() / target.var(0, unbiased=False).mean().clamp(min=1e-8)


def make_decoder(width: int, hidden: int, out_dim: int) -> nn.Module:
    """The training-only decoder of the autoencoder term: relaxed code -> features."""
    return nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, out_dim))


class HashingLoss(nn.Module):
    """All terms together, evaluated at every code length (nested prefixes). With
    ``cfg.reconstruction`` it holds the decoders of the reconstruction term (``decoder_dims``:
    modality -> feature width): they train with the heads, are checkpointed with the
    loss, and are never part of the model."""

    def __init__(self, cfg: LossConfig, bits: tuple[int, ...], code_width: int | None = None,
                 decoder_dims: dict[str, int] | None = None):
        super().__init__()
        if cfg.intra_image is None or cfg.intra_text is None:
            cfg = resolve_loss_config(cfg, labelled=False)
        self.cfg = cfg
        self.bits = tuple(bits)
        self.log_inv_temperature = nn.Parameter(torch.tensor(math.log(1.0 / cfg.temperature)),
                                                requires_grad=cfg.learn_temperature)
        self.decoders = nn.ModuleDict()
        if cfg.reconstruction and decoder_dims:
            for modality, dim in decoder_dims.items():
                self.decoders[modality] = make_decoder(code_width or max(self.bits), cfg.reconstruction_hidden, dim)

    @property
    def temperature(self) -> torch.Tensor:
        return 1.0 / self.log_inv_temperature.clamp(max=math.log(100.0)).exp()

    def _pair_terms(self, a: torch.Tensor, b: torch.Tensor, positives, contrastive_w: float, triplet_w: float):
        cfg, t = self.cfg, self.temperature
        total = a.new_zeros(())
        for use_ste, w in ((False, 1.0 - cfg.ste_weight), (True, cfg.ste_weight)):
            if w <= 0:
                continue
            x, y = (sign_ste(a), sign_ste(b)) if use_ste else (a, b)
            if contrastive_w:
                total = total + w * contrastive_w * symmetric_info_nce(x, y, t, positives)
            if triplet_w:
                total = total + w * triplet_w * max_violation_triplet(x, y, cfg.margin, positives)
        return total

    def forward(self, image: torch.Tensor, text: torch.Tensor | None, pair_positives: torch.Tensor | None,
                image_view2: torch.Tensor | None = None, text_positives: torch.Tensor | None = None,
                text2: torch.Tensor | None = None, image_positives: torch.Tensor | None = None,
                targets: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """``image``: relaxed codes [B, Kmax]; ``text``: codes [k*B, Kmax] of k captions per
        image (caption round r of image i at row r*B + i); ``pair_positives``: [B, k*B]
        which image/text pairs count as positives (own captions, or shared labels).
        ``image_positives``: [B, B] positives among images (default: ``pair_positives``
        when it is square).
        ``image_view2``: codes of a second augmented view of each image (intra-image).
        ``text2`` + ``text_positives``: codes of other captions and which are positives
        of each caption (intra-text). ``targets``: per modality ("image", "text"), the
        clean features the (noisy) inputs came from, for the reconstruction term.
        ``text=None``: photos without captions; only the image terms (the other view, the
        reconstruction, the code-shape terms) apply."""
        cfg = self.cfg
        parts: dict[str, torch.Tensor] = {}
        zero = image.new_zeros(())
        if image_positives is None:
            image_positives = pair_positives
        first_text = text[: len(image)] if text is not None else None  # round 0, for the intra-text loss
        for k in self.bits:
            a = image[:, :k]
            if text is not None:
                parts["inter"] = parts.get("inter", zero) + self._pair_terms(a, text[:, :k], pair_positives,
                                                                             cfg.inter_contrastive, cfg.triplet)
            if image_view2 is not None and (cfg.intra_image or cfg.intra_triplet):
                # the other view of the same image is a positive, and so is any image sharing a label
                parts["intra_image"] = parts.get("intra_image", zero) + self._pair_terms(
                    a, image_view2[:, :k], image_positives, cfg.intra_image, cfg.intra_triplet)
            if text is not None and text2 is not None and (cfg.intra_text or cfg.intra_triplet):
                parts["intra_text"] = parts.get("intra_text", zero) + self._pair_terms(
                    first_text[:, :k], text2[:, :k], text_positives, cfg.intra_text, cfg.intra_triplet)
        n = len(self.bits)
        parts = {k: v / n for k, v in parts.items()}
        both = torch.cat([image, text]) if text is not None else image
        if image_view2 is not None:
            both = torch.cat([both, image_view2])
        if cfg.quantization:
            parts["quantization"] = cfg.quantization * quantization_loss(both)
        if cfg.balance:
            parts["balance"] = cfg.balance * balance_loss(both)
        if cfg.decorrelation:
            parts["decorrelation"] = cfg.decorrelation * decorrelation_loss(both)
        if cfg.reconstruction and targets:
            codes = {"image": image, "text": text}
            terms = [reconstruction_loss(self.decoders[m](codes[m]), t) for m, t in targets.items()
                     if m in self.decoders and codes[m] is not None]
            if terms:
                parts["reconstruction"] = cfg.reconstruction * sum(terms) / len(terms)
        parts["total"] = sum(parts.values())
        return parts
