"""The trainer: heads (and any unfrozen encoder blocks) learn the shared Hamming space.

* Frozen encoders are run once: their features come from the on-disk cache
  (``crossmodal/features.py``), so an epoch over Flickr8k takes seconds on two CPU cores.
  A partly trainable encoder whose forward splits (a CNN's ``last:N`` or learned pool, a
  BERT-like text encoder's ``last:N``) trains its tail on cached trunk outputs; other
  unfrozen encoders run end to end on raw images / captions.
* AdamW with linear warm-up and cosine decay; validation each epoch through a
  ``scorer`` (injected, so this package does not depend on ``retrieval``) with early
  stopping; everything seeded: batch order and caption choice are functions of
  (seed, epoch, batch), so a resumed run continues exactly where it stopped.
* Checkpoints (``checkpoint.py``) are safetensors + JSON, written atomically each epoch
  and every ``checkpoint_every`` steps; ``resume=True`` continues from the last one.
* Data-parallel across processes under ``torchrun`` (DDP; gloo on CPU; ``distributed.py``):
  every rank takes its share of each global batch.
"""
from __future__ import annotations

import json
import math
import random
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from crossmodal.data.images import open_cell
from crossmodal.cache import default_cache_dir
from crossmodal.data.prepared import PreparedSplits
from crossmodal.data.splits import FlatSplit, label_vocab
from crossmodal.split_outputs import relaxed_outputs, training_inputs
from crossmodal.model import CrossModalHasher
from crossmodal.progress import progress

from .checkpoint import load_checkpoint, remove_checkpoint, save_checkpoint
from .distributed import barrier, pick_device, world
from .config import TrainConfig, resolve_loss_config
from .losses import HashingLoss, label_positives

#: scores the validation split's outputs at a code length: (image outputs, caption outputs,
#: the split, its label matrix or None, bits) -> metrics with ``score`` (higher is better);
#: ``retrieval.evaluation.ValidationEvaluator`` is the one the CLI passes
Scorer = Callable[[np.ndarray, np.ndarray, FlatSplit, "np.ndarray | None", int], dict]


class _TrainModule(nn.Module):
    """Model + loss in one module, so DDP syncs every trainable parameter."""

    def __init__(self, model: CrossModalHasher, loss: HashingLoss):
        super().__init__()
        self.model = model
        self.loss = loss

    def forward(self, img_in, img2_in, txt_in, txt2_in, image_mode: str, text_mode: str, pos, item_pos,
                targets=None):
        m = self.model
        img_fn = {"features": m.image_relaxed_from_features, "trunk": m.image_relaxed_from_trunk,
                  "pixels": lambda x: m.image_relaxed(x, views="plain")}[image_mode]
        txt_fn = {"features": m.text_relaxed_from_features, "trunk": lambda x: m.text_relaxed_from_trunk(*x),
                  "tokens": m.text_relaxed}[text_mode]
        img = img_fn(img_in)
        img2 = img_fn(img2_in) if img2_in is not None else None
        txt = txt_fn(txt_in)
        txt2 = txt_fn(txt2_in) if txt2_in is not None else None
        return self.loss(img, txt, pos, image_view2=img2, text_positives=item_pos, text2=txt2,
                         image_positives=item_pos, targets=targets)


class Trainer:
    def __init__(self, model: CrossModalHasher, data: PreparedSplits, out_dir: str | Path,
                 config: TrainConfig | None = None, scorer: Scorer | None = None):
        self.model = model
        self.cfg = config or TrainConfig()
        self.out = Path(out_dir)
        self.scorer = scorer
        self.rank, self.world = world()
        self.data = data
        self.train_ds = data[self.cfg.train_split]
        self.val_ds = data[self.cfg.val_split] if self.cfg.val_split and self.cfg.val_split in data else None
        #: validation scores codes of this length (the configured one if the model serves it)
        self.val_bits = self.cfg.val_bits if self.cfg.val_bits in model.config.bits else model.config.bits[-1]
        if self.cfg.num_threads:
            torch.set_num_threads(self.cfg.num_threads)
        self.device = pick_device(self.cfg.device, self.world)

    # ---- data ----------------------------------------------------------------------
    def _prepare_data(self) -> None:
        cfg, m = self.cfg, self.model
        self.train = self.data.flat(self.cfg.train_split)
        self.val = self.data.flat(self.cfg.val_split) if self.val_ds is not None else None
        if m.text_encoder.needs_vocab and not m.text_encoder.has_vocab():
            m.text_encoder.build_vocab(self.train.captions)
        use_labels = cfg.supervision == "labels" or (cfg.supervision == "auto" and self.train.has_labels)
        self.vocab = label_vocab(self.train) if use_labels else []
        self.train_labels = torch.from_numpy(self.train.label_matrix(self.vocab)) if self.vocab else None
        self.loss_config = resolve_loss_config(cfg.loss, labelled=bool(self.vocab))
        self.captions_of = self.train.captions_of()
        # never more caption rounds than the most captions any image has (one-caption data: 1)
        self.captions_per_step = max(1, min(cfg.captions_per_step, max((len(c) for c in self.captions_of), default=1)))
        self.image_mode, self.text_mode = m.image_input, m.text_input  # what each side trains from
        self.cache_dir = cache = Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir()

        lw = self.loss_config
        #: the mirrored view is computed only where something uses it: flips as augmentation, the
        #: intra-image term's second view, a trunk under a trained tail (its views are cached as a pair)
        self.train_views = "flip" if (cfg.flip_augment or lw.intra_image or lw.intra_triplet
                                      or self.image_mode == "trunk") else "plain"
        val_views = "flip" if m.config.image_views == "flip" else "plain"

        def compute_all():
            out = {}
            for name, ds, flat, views in (("train", self.train_ds, self.train, self.train_views),
                                          ("val", self.val_ds, self.val, val_views)):
                if ds is not None:
                    inputs = training_inputs(m, ds, flat.captions, cache, name, views)
                    out.update({f"{name}_img": inputs.image, f"{name}_txt": inputs.text})
            return out

        # Rank 0 fills the cache first; the others then read it.
        if self.rank == 0:
            self.feats = compute_all()
        barrier(self.world)
        if self.rank != 0:
            self.feats = compute_all()
        self._decoded: dict[int, object] = {}

    def _decoder_dims(self) -> dict[str, int]:
        """Feature widths the reconstruction term decodes to: the cached features of each
        side that trains from them (a side trained end to end has no fixed target)."""
        dims = {}
        if self.loss_config.reconstruction:
            if self.image_mode == "features":
                dims["image"] = int(self.feats["train_img"].shape[-1])
            if self.text_mode == "features":
                dims["text"] = int(self.feats["train_txt"].shape[-1])
        return dims

    def _image_inputs(self, idx: np.ndarray, views: np.ndarray, train: bool):
        if self.image_mode != "pixels":
            x = self.feats["train_img"][torch.from_numpy(idx), torch.from_numpy(views)].to(self.device).float()
            if self.image_mode == "features" and train and self.cfg.feature_noise:
                x = nn.functional.dropout(x, self.cfg.feature_noise)
            return x
        tf = self.model.image_transform(train=train)
        rows = self.train_ds.select(idx.tolist())["image"]
        return torch.stack([tf(open_cell(v)) for v in rows])

    def _text_inputs(self, cap_idx: np.ndarray, train: bool):
        if self.text_mode == "trunk":
            states, mask = self.feats["train_txt"].batch(cap_idx)
            return states.to(self.device), mask.to(self.device)
        if self.text_mode == "features":
            x = self.feats["train_txt"][torch.from_numpy(cap_idx)].to(self.device)
            if train and self.cfg.feature_noise:
                x = nn.functional.dropout(x, self.cfg.feature_noise)
            return x
        return self.model.text_encoder.tokenize([self.train.captions[i] for i in cap_idx])

    def _batches(self, epoch: int) -> list[np.ndarray]:
        rng = np.random.default_rng([self.cfg.seed, epoch])
        order = rng.permutation(len(self.train.ids))
        bs = self.cfg.batch_size
        return [order[s:s + bs] for s in range(0, len(order), bs) if len(order[s:s + bs]) >= 2]

    def _caption_choice(self, rng: np.random.Generator, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Captions for a batch of images: [k, B] (round r = the r-th distinct caption of
        each image, repeating when it has fewer than k) and [B] (another caption of each
        image, for the intra-text loss)."""
        k = self.captions_per_step
        cap1 = np.empty((k, len(idx)), dtype=np.int64)  # row r: the r-th chosen caption of each image
        cap2 = np.empty(len(idx), dtype=np.int64)
        for j, i in enumerate(idx):
            caps = self.captions_of[i]
            pick = rng.permutation(len(caps))
            cap1[:, j] = caps[pick[np.arange(k) % len(caps)]]
            cap2[j] = caps[pick[1 % len(caps)]]
        return cap1, cap2

    def _batch_inputs(self, epoch: int, b: int, idx: np.ndarray):
        rng = np.random.default_rng([self.cfg.seed, epoch, b, 1])
        idx = idx[self.rank::self.world]
        cap1, cap2 = self._caption_choice(rng, idx)
        v1 = rng.integers(0, 2, len(idx))  # drawn either way: the rest of the batch's draws stay the same
        if self.train_views == "plain":
            v1[:] = 0
        lw = self.loss_config
        img = self._image_inputs(idx, v1, True)
        img2 = self._image_inputs(idx, 1 - v1, True) if (lw.intra_image or lw.intra_triplet) else None
        txt = self._text_inputs(cap1.reshape(-1), True)
        txt2 = self._text_inputs(cap2, True) if (lw.intra_text or lw.intra_triplet) else None
        pos = torch.eye(len(idx), dtype=torch.bool)
        if self.train_labels is not None:
            lab = self.train_labels[torch.from_numpy(idx)]
            pos = pos | label_positives(lab, lab)
        targets = {}  # the clean features the noisy inputs came from: what the reconstruction term decodes to
        if lw.reconstruction:
            if self.image_mode == "features":
                targets["image"] = self.feats["train_img"][torch.from_numpy(idx), torch.from_numpy(v1)].to(
                    self.device).float()
            if self.text_mode == "features":
                targets["text"] = self.feats["train_txt"][torch.from_numpy(cap1.reshape(-1))].to(self.device).float()
        return img, img2, txt, txt2, pos.to(self.device), targets

    @staticmethod
    def _pair_positives(item_pos: torch.Tensor, captions_per_step: int) -> torch.Tensor:
        """[B, B] item positives -> [B, k*B] image/caption positives (captions stacked by round)."""
        return item_pos.repeat(1, captions_per_step)

    # ---- optimisation -----------------------------------------------------------------
    def _build_optimizer(self, module: _TrainModule, total_steps: int):
        cfg = self.cfg
        head_params, enc_params = [], []
        fresh = {id(p) for enc in (self.model.image_encoder, self.model.text_encoder) for p in enc.new_parameters()}
        for name, p in module.named_parameters():
            if not p.requires_grad:
                continue
            if id(p) in fresh:  # a learned pool starts from scratch: the heads' rate
                head_params.append(p)
                continue
            is_encoder = ".image_encoder." in f".{name}" or ".text_encoder." in f".{name}"
            scratch = any(e.always_trainable and f"{part}." in name
                          for part, e in (("image_encoder", self.model.image_encoder),
                                          ("text_encoder", self.model.text_encoder)))
            (enc_params if is_encoder and not scratch else head_params).append(p)
        groups = [{"params": head_params, "lr": cfg.lr}]
        if enc_params:
            groups.append({"params": enc_params, "lr": cfg.encoder_lr})
        opt = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
        return opt, warmup_cosine(opt, cfg.warmup_fraction, total_steps)

    # ---- validation -----------------------------------------------------------------
    def split_outputs(self, split: str, model: CrossModalHasher | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Relaxed image and caption outputs of the ``train`` or ``val`` split by the model
        being trained (or ``model``), through the feature cache where the encoders are frozen."""
        name = self.cfg.train_split if split == "train" else self.cfg.val_split
        out = relaxed_outputs(model or self.model, self.data[name], self.data.flat(name).captions, self.cache_dir)
        return out.image_relaxed, out.text_relaxed

    def validate(self, model: CrossModalHasher | None = None) -> dict:
        if self.val is None or self.scorer is None:
            return {}
        img, txt = self.split_outputs("val", model)
        # relevance is the validation split's own labels, as `crossmodal eval` reads them (a label
        # only dev has still makes two dev items relevant to each other)
        labels = self.val.label_matrix(label_vocab(self.val)) if self.vocab else None
        return self.scorer(img, txt, self.val, labels, self.val_bits)

    # ---- checkpoints (training/checkpoint.py) ---------------------------------------
    def _save_checkpoint(self, module, opt, sched, state: dict) -> None:
        if self.rank == 0:
            save_checkpoint(self.out, self.model, module.loss, opt, sched, state, self.cfg)

    # ---- the loop -------------------------------------------------------------------
    def fit(self, resume: bool = False) -> dict:
        cfg = self.cfg
        self.out.mkdir(parents=True, exist_ok=True)
        random.seed(cfg.seed)
        np.random.seed(cfg.seed)
        torch.manual_seed(cfg.seed)
        self.model.to(self.device)
        #: wall seconds per phase, written to train_summary.json (where a run's time goes)
        self.timings = {"features_s": 0.0, "steps_s": 0.0, "validation_s": 0.0, "checkpoints_s": 0.0, "write_s": 0.0}
        t0 = time.perf_counter()
        self._prepare_data()
        self.timings["features_s"] = time.perf_counter() - t0
        loss = HashingLoss(self.loss_config, self.model.config.trained_bits, self.model.config.output_width,
                           self._decoder_dims())
        module = _TrainModule(self.model, loss).to(self.device)
        steps_per_epoch = len(self._batches(0))
        opt, sched = self._build_optimizer(module, steps_per_epoch * cfg.epochs)
        ddp = nn.parallel.DistributedDataParallel(
            module, find_unused_parameters=True,
            device_ids=[self.device.index] if self.device.type == "cuda" else None) if self.world > 1 else module

        state = {"epoch": 0, "batch": 0, "step": 0, "best_score": -float("inf"), "best_epoch": -1, "bad_epochs": 0}
        if resume:
            loaded = load_checkpoint(self.out, self.model, module.loss, opt, sched, self.device)
            if loaded:
                state.update({k: loaded[k] for k in state})
                if self.rank == 0:
                    print(f"resumed from {self.out / 'checkpoint'}: epoch {state['epoch']}, batch {state['batch']}")
        log_path = self.out / "train_log.jsonl"
        if self.rank == 0 and state["epoch"] == 0 and state["batch"] == 0:
            log_path.unlink(missing_ok=True)  # a fresh run: a log an earlier run left in this folder is not its own
        best_dir = self.out / ".best"
        start = time.time()
        for epoch in range(state["epoch"], cfg.epochs):
            batches = self._batches(epoch)
            module.train()
            _frozen_to_eval(self.model)
            bar = progress(range(state["batch"], len(batches)), desc=f"epoch {epoch + 1}/{cfg.epochs}",
                           unit="batch", disable=self.rank != 0)
            sums: dict[str, float] = {}
            done = 0  # batches run in this call (fewer than the epoch's after a resume)
            t_steps = time.perf_counter()
            for b in bar:
                torch.manual_seed(cfg.seed * 1_000_003 + state["step"])
                img, img2, txt, txt2, pos, targets = self._batch_inputs(epoch, b, batches[b])
                parts = ddp(img, img2, txt, txt2, self.image_mode, self.text_mode,
                            self._pair_positives(pos, self.captions_per_step), pos, targets or None)
                opt.zero_grad(set_to_none=True)
                parts["total"].backward()
                opt.step()
                sched.step()
                state["step"] += 1
                state["batch"] = b + 1
                done += 1
                for k, v in parts.items():
                    sums[k] = sums.get(k, 0.0) + float(v.detach())
                bar.set_postfix(loss=f"{float(parts['total'].detach()):.3f}")
                if cfg.checkpoint_every and state["step"] % cfg.checkpoint_every == 0 and b + 1 < len(batches):
                    self._save_checkpoint(module, opt, sched, state)
            n = max(1, done)
            t_val = time.perf_counter()
            self.timings["steps_s"] += t_val - t_steps
            scores = self.validate()
            self.timings["validation_s"] += time.perf_counter() - t_val
            score = scores.get("score", -float(sums.get("total", 0.0)) / n)
            record = {"epoch": epoch + 1, "step": state["step"], "time_s": round(time.time() - start, 1),
                      "lr": sched.get_last_lr()[0], "temperature": float(loss.temperature.detach()),
                      **{f"loss_{k}": v / n for k, v in sums.items()}, **{f"val_{k}": v for k, v in scores.items()}}
            improved = score > state["best_score"]
            if improved:
                state.update(best_score=score, best_epoch=epoch + 1, bad_epochs=0)
                if self.rank == 0:
                    self.model.save_pretrained(best_dir)
            else:
                state["bad_epochs"] += 1
            state.update(epoch=epoch + 1, batch=0)
            if self.rank == 0:
                with log_path.open("a") as f:
                    f.write(json.dumps(record) + "\n")
                shown = ", ".join(f"{k[4:]}={v:.2f}" for k, v in record.items()
                                  if k.startswith("val_") and isinstance(v, float))
                print(f"epoch {epoch + 1}: loss {record.get('loss_total', 0):.4f}  {shown}"
                      f"{'  *' if improved else ''}", flush=True)
            t_ckpt = time.perf_counter()
            self._save_checkpoint(module, opt, sched, state)
            self.timings["checkpoints_s"] += time.perf_counter() - t_ckpt
            if cfg.stop_at_score is not None and scores.get("score", -float("inf")) >= cfg.stop_at_score:
                if self.rank == 0:
                    print(f"stop: the validation score reached {cfg.stop_at_score}", flush=True)
                break
            if state["bad_epochs"] >= cfg.patience:
                if self.rank == 0:
                    print(f"early stop: no improvement for {cfg.patience} epochs", flush=True)
                break
        return self._finish(state, best_dir)

    def _finish(self, state: dict, best_dir: Path) -> dict:
        t0 = time.perf_counter()
        barrier(self.world)
        if (best_dir / "model.safetensors").is_file():
            self.model.load_saved_weights(best_dir)
        if self.model.quantizer.needs_fit:
            self._fit_quantizer()
        summary = {"best_epoch": state["best_epoch"], "best_score": state["best_score"], "steps": state["step"],
                   "epochs_run": state["epoch"]}
        if self.rank == 0:
            self.model.save_pretrained(self.out, heads_dtype=self.cfg.heads_dtype)
            if self.val is not None and self.scorer is not None:
                # the heads as stored (float16 or int8 round them) score a little differently from
                # the float32 ones that picked the epoch: what `crossmodal eval` on dev will show
                summary["saved_score"] = self.validate(CrossModalHasher.from_pretrained(self.out))["score"]
            self.timings["write_s"] = time.perf_counter() - t0
            summary["timings"] = {k: round(v, 1) for k, v in self.timings.items()}
            (self.out / "train_summary.json").write_text(json.dumps(
                {**summary, "train_config": asdict(self.cfg), "loss_used": asdict(self.loss_config),
                 "label_vocab": self.vocab}, indent=2))
            shutil.rmtree(best_dir, ignore_errors=True)
            if not self.cfg.keep_checkpoint:
                remove_checkpoint(self.out)  # the model is written: resuming has nothing left to do
        return summary

    def _fit_quantizer(self) -> None:
        self.model.fit_quantizer(*self.split_outputs("train"))


def warmup_cosine(opt: torch.optim.Optimizer, warmup_fraction: float, total_steps: int):
    """Linear warm-up over ``warmup_fraction`` of the steps, then cosine decay to zero: the
    schedule of every training run (captioned or photos)."""
    warmup = max(1, int(warmup_fraction * total_steps))

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(opt, schedule)


def _frozen_to_eval(model: CrossModalHasher) -> None:
    """Frozen encoders, and the frozen blocks of partly trained ones, keep eval mode
    (BatchNorm running statistics, dropout) while the rest trains."""
    for enc in (model.image_encoder, model.text_encoder):
        if enc.is_frozen:
            enc.eval()
        else:
            for block in enc.blocks():
                if not any(p.requires_grad for p in block.parameters()):
                    block.eval()
