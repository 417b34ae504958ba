"""``crossmodal train``: a model from a prepared dataset."""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from .common import add_command, bits_list, cache_dir_arg, choices_help, print_screening

EXAMPLES = """examples:
  crossmodal train --data data/flickr8k --out models/f8k
  crossmodal train --data data/mine --text-encoder gru --image-trainable last:1 --out models/mine
  crossmodal train --images ~/Pictures --out models/my-photos   (no captions: image search, duplicates)"""


def add_train_args(p: argparse.ArgumentParser) -> None:
    from crossmodal.config import (IMAGE_VIEWS, QUANTIZER_NAMES, HeadConfig, ImageEncoderConfig, ModelConfig,
                                   TextEncoderConfig)
    from crossmodal.encoders import describe_encoders
    from training import LossConfig, TrainConfig

    d, dl, m = TrainConfig(), LossConfig(), ModelConfig()
    img, txt, head = ImageEncoderConfig(), TextEncoderConfig(), HeadConfig()
    p.add_argument("--data", default=None, help="prepared dataset folder (data_scripts/prepare_*.py)")
    p.add_argument("--images", action="append", default=None, metavar="DIR",
                   help="instead of --data: photos without captions (folders, recursively; repeatable). The image "
                        "side learns codes by reconstruction (a denoising autoencoder): the model serves image "
                        "search and duplicates, not text")
    p.add_argument("--out", required=True, help="model folder to write")
    p.add_argument("--image-encoder", default=img.name, metavar="NAME", type=image_encoder_name,
                   help="image CNN: " + choices_help(describe_encoders("image")) +
                        "; join several with '+' to concatenate their features")
    p.add_argument("--image-weights", default=img.weights, help="'default', 'none' or a local weights file")
    p.add_argument("--image-trainable", default=img.trainable, help="frozen | full | last:N (the last N stages)")
    p.add_argument("--image-pooling", default=img.pooling, choices=["mean", "attention"],
                   help="feature-map pooling: global mean, or learned attention over positions (trains even "
                        "with a frozen CNN, on cached activations)")
    p.add_argument("--image-size", type=int, default=None, help="CNN input size (default: the encoder's own)")
    p.add_argument("--text-encoder", default=txt.name, metavar="NAME",
                   help="text encoder: " + choices_help(describe_encoders("text")))
    p.add_argument("--text-trainable", default=txt.trainable, help="frozen | full | last:N (the last N layers)")
    p.add_argument("--text-vocab-size", type=int, default=None, help=f"GRU vocabulary size (default: {txt.vocab_size})")
    p.add_argument("--text-hidden", type=int, default=None,
                   help=f"GRU hidden and embedding size (default: {txt.hidden_dim} and {txt.embed_dim})")
    p.add_argument("--bits", type=bits_list, default=m.bits, help="code lengths to train, comma-separated multiples of 8")
    p.add_argument("--quantizer", default=m.quantizer, choices=list(QUANTIZER_NAMES),
                   help="how outputs become bits: sign of each output, ITQ rotation, or k-means per bit")
    p.add_argument("--head-width", type=int, default=None,
                   help=f"hash-head outputs (default: {m.output_width}, or the longest code if longer); "
                        "trained at every default length that fits, whatever --bits serves")
    p.add_argument("--image-views", default=m.image_views, choices=list(IMAGE_VIEWS),
                   help="how the trained model encodes every image: its plain view, or the mean of its plain "
                        "and mirrored views (flip: 2 CNN passes per new image) or of five zoomed crops (crops: 5 "
                        "passes); training is the same, so try it first with 'crossmodal eval --image-views'")
    p.add_argument("--head-depth", type=int, default=head.depth, help="layers of each hash head's MLP")
    p.add_argument("--head-hidden", type=int, default=head.hidden_dim, help="width of the hash heads' hidden layers")
    from training.config import PHOTO_TRAIN

    p.add_argument("--epochs", type=int, default=None,
                   help=f"passes over the training split (at most) (default: {d.epochs}; with --images: "
                        f"{PHOTO_TRAIN.epochs})")
    p.add_argument("--batch-size", type=int, default=None,
                   help=f"images per step (default: {d.batch_size}; with --images: {PHOTO_TRAIN.batch_size})")
    p.add_argument("--lr", type=float, default=d.lr, help="learning rate of the heads (and of a learned pool)")
    p.add_argument("--encoder-lr", type=float, default=d.encoder_lr,
                   help="learning rate of pretrained encoder blocks that train (last:N, full)")
    p.add_argument("--captions-per-step", type=int, default=d.captions_per_step,
                   help="captions of each image in every step (several positives per image row)")
    p.add_argument("--patience", type=int, default=None,
                   help=f"stop after this many epochs without a better validation score (default: {d.patience}; "
                        f"with --images: {PHOTO_TRAIN.patience})")
    p.add_argument("--seed", type=int, default=d.seed, help="random seed (same seed, same model)")
    p.add_argument("--flip-augment", action=argparse.BooleanOptionalAction, default=d.flip_augment,
                   help="train on the plain or mirrored view of each image at random (the CNN then runs twice per "
                        "image of the feature pass)")
    p.add_argument("--feature-noise", type=float, default=d.feature_noise,
                   help="share of the cached encoder features dropped at random in each training step (a "
                        "denoising input; 0: none)")
    p.add_argument("--supervision", default=d.supervision, choices=["auto", "pairs", "labels"],
                   help="positives: image-caption pairs, shared labels, or labels when the data has them")
    p.add_argument("--val-split", default=d.val_split, help="split scored after each epoch to pick the best")
    cache_dir_arg(p)
    p.add_argument("--loss", default=None,
                   help=f"JSON of loss weights to override, e.g. '{{\"triplet\": 0.5}}'; fields: "
                        f"{', '.join(asdict(dl))}")
    p.add_argument("--device", default=d.device, help="auto (CUDA when available) | cpu | cuda | cuda:N")
    p.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every, help="steps between checkpoints")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint")
    p.add_argument("--heads-dtype", default=d.heads_dtype, choices=["float32", "float16", "int8"],
                   help="how the trained heads are stored (float16 halves the folder; int8 quarters the weight "
                        "matrices; both move R@10 by less than 0.3 on Flickr8k)")
    p.add_argument("--keep-checkpoint", action="store_true",
                   help="keep OUT/checkpoint when training ends (it is deleted once the model is written)")


def image_encoder_name(value: str) -> str:
    from crossmodal.encoders import check_image_encoder_name
    from crossmodal.errors import InvalidInput

    try:
        return check_image_encoder_name(value)
    except InvalidInput as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def model_config_from_args(args):
    from crossmodal.config import HeadConfig, ImageEncoderConfig, ModelConfig, TextEncoderConfig

    gru = {"vocab_size": args.text_vocab_size} if args.text_vocab_size else {}
    if args.text_hidden:
        gru.update(hidden_dim=args.text_hidden, embed_dim=args.text_hidden)
    text = TextEncoderConfig(name=args.text_encoder, trainable=args.text_trainable, **gru)
    return ModelConfig(
        image_encoder=ImageEncoderConfig(name=args.image_encoder, weights=args.image_weights,
                                         trainable=args.image_trainable, image_size=args.image_size,
                                         pooling=args.image_pooling),
        text_encoder=text, head=HeadConfig(depth=args.head_depth, hidden_dim=args.head_hidden),
        bits=args.bits, quantizer=args.quantizer, head_width=args.head_width,
        image_views=args.image_views)


def train_config_from_args(args, base=None):
    """The training configuration the flags give; flags left out take ``base``'s values
    (default: ``TrainConfig()``; photos without captions: ``training.config.PHOTO_TRAIN``)."""
    from crossmodal.errors import InvalidInput
    from training import LossConfig, TrainConfig

    base = base or TrainConfig()

    loss = asdict(LossConfig())
    if args.loss:
        try:
            override = json.loads(args.loss)
        except json.JSONDecodeError as e:
            raise InvalidInput(f"--loss is not valid JSON: {e}") from None
        unknown = set(override) - set(loss)
        if unknown:
            raise InvalidInput(f"--loss: unknown field(s) {sorted(unknown)}; known: {sorted(loss)}")
        loss.update(override)
    pick = lambda value, default: default if value is None else value  # noqa: E731
    return TrainConfig(epochs=pick(args.epochs, base.epochs), batch_size=pick(args.batch_size, base.batch_size),
                       lr=args.lr, encoder_lr=args.encoder_lr, patience=pick(args.patience, base.patience),
                       captions_per_step=args.captions_per_step, seed=args.seed, supervision=args.supervision,
                       flip_augment=args.flip_augment, feature_noise=args.feature_noise,
                       val_split=args.val_split, cache_dir=args.cache_dir, checkpoint_every=args.checkpoint_every,
                       keep_checkpoint=args.keep_checkpoint, heads_dtype=args.heads_dtype,
                       device=args.device, loss=LossConfig(**loss))


def run(args) -> dict:
    from crossmodal.errors import InvalidInput

    if (args.data is None) == (args.images is None):
        raise InvalidInput("give either --data (a prepared dataset with captions) or --images DIR (photos without "
                           "captions), not both or neither")
    if args.images is not None:
        return run_photos(args)
    from retrieval.evaluation import ValidationEvaluator
    from training import init_distributed_from_env, train_model

    init_distributed_from_env()
    result = train_model(args.data, args.out, model_config_from_args(args), train_config_from_args(args),
                         scorer=ValidationEvaluator(), resume=args.resume, on_screened=print_screening)
    if result.is_main_process:
        s = result.summary
        print(f"model written to {args.out} (best epoch {s['best_epoch']}, validation score {s['best_score']:.3f})")
        t = s.get("timings", {})
        if t:
            print(f"time: features {t['features_s']:.0f} s, steps {t['steps_s']:.0f} s, validation "
                  f"{t['validation_s']:.0f} s, checkpoints {t['checkpoints_s']:.0f} s, writing {t['write_s']:.0f} s")
        print_screening(result.screening)
    return result.summary


def run_photos(args) -> dict:
    """``--images``: an image-only model trained by reconstruction on the photos' features."""
    from crossmodal.errors import InvalidInput
    from retrieval.photos import PhotoReport, walk_photos
    from training import LossConfig
    from training.config import PHOTO_LOSS, PHOTO_TRAIN
    from training.photos import train_on_photos

    report = PhotoReport()
    photos = walk_photos(args.images, report)
    if not photos:
        raise InvalidInput(f"no photos found under {', '.join(args.images)} (JPEG, PNG, WebP, ... files); check the "
                           f"folder")
    config = train_config_from_args(args, PHOTO_TRAIN)  # checks --loss
    # --loss changes the photo defaults (reconstruction, no pair terms), not the caption ones
    loss = LossConfig(**{**asdict(PHOTO_LOSS), **(json.loads(args.loss) if args.loss else {})})
    run = train_on_photos([p.path for p in photos], args.out, model_config_from_args(args), config, loss,
                          card={"folders": [str(f) for f in args.images]})
    s = run.summary
    print(f"model written to {args.out} from {s['photos']['train']} photos, {s['photos']['dev']} held out (best "
          f"epoch {s['best_epoch']}, held-out score {s['best_score']:.2f}); unreadable: "
          f"{s['photos']['unreadable'] + len(report.failed)}")
    for path, why in run.failed:
        print(f"skipped {path}: {why}")
    return s


def register(sub) -> None:
    p = add_command(sub, "train", "train a model on a prepared dataset", EXAMPLES)
    add_train_args(p)
    p.set_defaults(func=run)
