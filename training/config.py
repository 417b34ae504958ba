"""The training configuration as plain data: what ``crossmodal train`` sets from its
flags and ``train_summary.json`` records. Nothing here imports torch, so the command
line's ``--help`` shows these defaults without loading it."""
from __future__ import annotations

from dataclasses import dataclass, field, replace


@dataclass
class LossConfig:
    inter_contrastive: float = 1.0
    #: intra-modal weights; None = ``INTRA_WITH_LABELS`` when labels supervise the run and 0
    #: with pairs only. Without labels every other image (caption) in the batch is a
    #: negative, which pushes apart images that merely look alike: on Flickr8k that cost
    #: 1-2 points of R@10 (BENCHMARKS.md ablation); with label positives it helps.
    intra_image: float | None = None
    intra_text: float | None = None
    triplet: float = 0.0
    intra_triplet: float = 0.0
    quantization: float = 0.5
    balance: float = 0.01
    decorrelation: float = 0.01
    temperature: float = 0.07
    learn_temperature: bool = True
    margin: float = 0.2
    #: share of the contrastive/triplet terms computed on straight-through binary codes
    ste_weight: float = 0.5
    #: denoising reconstruction (the autoencoder family): a training-only decoder per
    #: modality maps the relaxed code back to the clean encoder features the head read
    #: (corrupted by ``feature_noise``); the weight of its loss (fraction of the features'
    #: variance left unexplained). 0: off. Alone (every other weight 0) it needs no pairs.
    reconstruction: float = 0.0
    #: hidden width of the reconstruction decoders
    reconstruction_hidden: int = 512


INTRA_WITH_LABELS = 0.2


def resolve_loss_config(cfg: LossConfig, labelled: bool) -> LossConfig:
    """Fill the automatic (None) intra-modal weights for a run with or without labels."""
    auto = INTRA_WITH_LABELS if labelled else 0.0
    return replace(cfg, intra_image=auto if cfg.intra_image is None else cfg.intra_image,
                   intra_text=auto if cfg.intra_text is None else cfg.intra_text)


@dataclass
class TrainConfig:
    #: The Flickr8k recipe was chosen on dev over three seeds (BENCHMARKS.md, "Choosing the training
    #: recipe over seeds"): 25 passes of batches of 256 images with all five captions each
    #: (``captions_per_step``) and no flips match 80 passes of 512 with one caption in half the time.
    epochs: int = 25
    batch_size: int = 256
    lr: float = 1e-3
    encoder_lr: float = 2e-5
    weight_decay: float = 1e-4
    warmup_fraction: float = 0.05
    #: epochs without a better validation score before stopping; long enough to reach the
    #: cosine schedule's low-rate tail, where the short codes settle
    patience: int = 8
    #: stop as soon as the validation score reaches this (None: never early for that reason):
    #: a run that is already perfect on dev has nothing left to learn there (the demo's shapes)
    stop_at_score: float | None = None
    seed: int = 0
    train_split: str = "train"
    val_split: str = "dev"
    val_bits: int = 64
    #: "auto": labels as positives when the dataset has labels; "pairs": only matched pairs
    supervision: str = "auto"
    feature_noise: float = 0.1
    #: each step takes the plain or the mirrored view of each image at random (the feature
    #: cache then holds both views: the CNN runs twice per image); without it only the plain
    #: view is computed unless the intra-image term needs a second view. Off: the recipe chosen
    #: on dev trains without it, and the cold feature pass is then half as long (flips alone, in
    #: that recipe, were not measured)
    flip_augment: bool = False
    #: captions of each image in every step: the image-text loss sees k of them at once
    #: (an image's row then has k positives); images with fewer captions repeat theirs. Five:
    #: every Flickr8k caption in every epoch (one per step learned far less per epoch)
    captions_per_step: int = 5
    checkpoint_every: int = 500
    #: keep ``out/checkpoint`` after training (by default it is deleted once the model is
    #: written: it exists to resume an interrupted run)
    keep_checkpoint: bool = False
    #: how the trained heads are stored: float16 halves the folder (the default's heads are
    #: 70 MB in float32) for R@10 moves under 0.3 (benchmarks/results/default-model-*.json)
    heads_dtype: str = "float16"
    cache_dir: str | None = None
    num_threads: int | None = None
    #: "auto" (CUDA when available, else CPU), "cpu", "cuda", "cuda:1", ...
    device: str = "auto"
    loss: LossConfig = field(default_factory=LossConfig)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        d = dict(d)
        loss = LossConfig(**d.pop("loss", {}))
        return cls(**d, loss=loss)


#: the loss of a photo run when ``--loss`` says nothing: the reconstruction term and the
#: code-shape terms; no pair terms (there are no captions)
PHOTO_LOSS = LossConfig(inter_contrastive=0.0, intra_image=0.0, intra_text=0.0, reconstruction=1.0)
#: the schedule of a photo run when the flags say nothing: a photo gives one input per epoch
#: (a captioned image gives five pairs), so smaller batches and more epochs than the captioned
#: recipe; on 3,000 fashion photos the codes still gained at 30 epochs of 128
PHOTO_TRAIN = TrainConfig(epochs=40, batch_size=128, patience=8)
