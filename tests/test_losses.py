import torch

from crossmodal.model import CrossModalHasher
from conftest import tiny_config
from training.losses import (HashingLoss, LossConfig, balance_loss, decorrelation_loss, label_positives,
                             max_violation_triplet, quantization_loss, symmetric_info_nce)


def _aligned(n=8, k=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, k, generator=g).tanh()
    b = (a + 0.1 * torch.randn(n, k, generator=g)).tanh()
    return a, b


def test_info_nce_aligned_lower_than_shuffled():
    a, b = _aligned()
    shuffled = b[torch.roll(torch.arange(len(b)), 1)]
    assert symmetric_info_nce(a, b, 0.1) < symmetric_info_nce(a, shuffled, 0.1) - 1.0


def test_triplet_aligned_lower_than_shuffled_and_zero_when_margin_met():
    a, b = _aligned()
    shuffled = b[torch.roll(torch.arange(len(b)), 1)]
    assert max_violation_triplet(a, b, 0.2) < max_violation_triplet(a, shuffled, 0.2)
    e = torch.eye(4)
    assert max_violation_triplet(e, e, 0.5).item() == 0.0  # cos 1 vs 0: margin 0.5 satisfied
    assert max_violation_triplet(e, e, 1.5).item() > 0.0


def test_label_positives_are_honoured():
    # items 0 and 1 share a label; their codes are identical, so pair-only InfoNCE
    # punishes the "negative" 0-1 while label-aware InfoNCE treats it as a positive.
    a = torch.tensor([[1.0, 1, 1, 1], [1, 1, 1, 1], [-1, -1, 1, 1], [1, -1, -1, 1]])
    labels = torch.tensor([[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]])
    pos = label_positives(labels, labels)
    assert pos[0, 1] and not pos[0, 2]
    assert symmetric_info_nce(a, a, 0.1, pos) < 0.01
    assert symmetric_info_nce(a, a, 0.1) > 0.3  # rows 0 and 1 each lose log 2
    # and triplet never uses a label-sharing item as a negative
    assert max_violation_triplet(a, a, 0.2, pos) < max_violation_triplet(a, a, 0.2)


def test_regularisers_on_hand_made_codes():
    assert quantization_loss(torch.tensor([[1.0, -1.0]])).item() == 0.0
    assert quantization_loss(torch.tensor([[0.0, 0.0]])).item() == 1.0
    balanced = torch.tensor([[1.0, -1], [-1, 1]])
    assert balance_loss(balanced).item() == 0.0
    assert balance_loss(torch.ones(2, 2)).item() == 1.0
    independent = torch.tensor([[1.0, 1], [1, -1], [-1, 1], [-1, -1]])
    duplicated = torch.tensor([[1.0, 1], [1, 1], [-1, -1], [-1, -1]])
    assert decorrelation_loss(independent).item() < 1e-6
    assert decorrelation_loss(duplicated).item() > 0.9


def test_full_loss_gradients_reach_both_encoders_and_heads():
    torch.manual_seed(0)
    model = CrossModalHasher(tiny_config())
    model.text_encoder.build_vocab(["a red circle", "a blue square", "green star", "yellow triangle"])
    loss = HashingLoss(LossConfig(triplet=0.5, intra_triplet=0.2, intra_image=0.2, intra_text=0.2), model.config.bits)
    pixels = torch.randn(4, 3, 32, 32)
    tokens = model.text_encoder.tokenize(["a red circle", "a blue square", "green star", "yellow triangle"])
    img, txt = model.image_relaxed(pixels), model.text_relaxed(tokens)
    img2 = model.image_relaxed(pixels.flip(3))
    parts = loss(img, txt, torch.eye(4, dtype=torch.bool), image_view2=img2, text2=txt,
                 text_positives=torch.eye(4, dtype=torch.bool))
    assert {"inter", "intra_image", "intra_text", "quantization", "balance", "decorrelation"} <= set(parts)
    parts["total"].backward()
    for name, module in [("image encoder", model.image_encoder), ("text encoder", model.text_encoder),
                         ("image head", model.image_head), ("text head", model.text_head)]:
        grads = [p.grad for p in module.parameters() if p.requires_grad]
        assert grads and any(g is not None and g.abs().sum() > 0 for g in grads), name
    assert loss.log_inv_temperature.grad is not None  # learned temperature


def test_intra_image_loss_uses_label_positives():
    # two images of one class with identical codes: with labels they are positives of
    # each other (no penalty); pair-only they are negatives (penalised)
    img = torch.tensor([[1.0, 1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 1, 1], [-1, -1, -1, -1, 1, 1, 1, 1],
                        [1, -1, 1, -1, 1, -1, 1, -1]])
    cfg = LossConfig(inter_contrastive=0, intra_image=0.2, intra_text=0, quantization=0, balance=0,
                     decorrelation=0, learn_temperature=False, ste_weight=0)
    loss = HashingLoss(cfg, (8,))
    labels = torch.tensor([[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]])
    with_labels = loss(img, img, label_positives(labels, labels), image_view2=img)["intra_image"]
    pairs_only = loss(img, img, torch.eye(4, dtype=torch.bool), image_view2=img)["intra_image"]
    assert with_labels < 0.05 < pairs_only


def test_several_captions_per_image_rows_are_matched_by_round():
    """Text rows r*B + i are captions of image i: with k=3 captions per image the loss is
    low when each image's three captions lie near it, and high when the rounds are shuffled."""
    torch.manual_seed(0)
    b, k, d = 6, 3, 32
    img = torch.randn(b, d)
    txt = torch.cat([img + 0.05 * torch.randn(b, d) for _ in range(k)])  # round r, image i at r*b + i
    pos = torch.eye(b, dtype=torch.bool).repeat(1, k)
    cfg = LossConfig(intra_image=0, intra_text=0, quantization=0, balance=0, decorrelation=0, ste_weight=0,
                     learn_temperature=False, temperature=0.1)
    loss = HashingLoss(cfg, (d,))
    aligned = loss(torch.tanh(img), torch.tanh(txt), pos, image_positives=torch.eye(b, dtype=torch.bool))["inter"]
    shuffled = loss(torch.tanh(img), torch.tanh(txt[torch.randperm(b * k)]), pos,
                    image_positives=torch.eye(b, dtype=torch.bool))["inter"]
    assert aligned < 0.5 * shuffled
