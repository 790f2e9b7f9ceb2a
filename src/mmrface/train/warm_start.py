"""Warm start one size up: an mmrface restorer at S/2 seeds a fresh one at S (`train.warm_start`).

The 2S network is the S network with one more level on each side; everything the two share is
copied, and the new level starts as close to "the S model, bilinearly upsampled" as the
architecture allows, so the run begins where the smaller model ended:

* **prior** — const, mapping, the styled convs / to-RGBs / noise of levels 4 … S are copied
  (same indices). The new level's to-RGB starts at zero, so the prior's image is the S image
  upsampled until that level has learnt something. Its two styled convs start at random.
* **W+ codes** — `encoder.to_latent` rows of codes 0 … 2·log2(S)−3 are copied; the two new codes
  (the new level's second conv and to-RGB) start as copies of the S model's last two.
* **encoder** — the old levels move one index down (`body.k` → `body.k+1`). The new input level
  carries RGB through unchanged: `conv_in` writes (+r, +g, +b, −r, −g, −b) into its first six
  channels (the rest start at random), and lrelu(x) − lrelu(−x) = 1.2 x, so the new stride-2
  conv can compute exactly the old `conv_in` applied to the input blurred with [1, 2, 1]/4 and
  subsampled: its weight is the old `conv_in` ⊗ that blur on the ± channels, zero on the others.
  With no residual blocks at the new level (`enc_blocks[0] = 0`) the old levels see what the S
  model saw on the blurred, subsampled input; with blocks it is approximate (they start near
  identity).
* **decoder** — levels 8 … S are copied; the new level's SFT head starts at scale 1, shift 0
  (no modulation), its up-conv and to-RGB at random.

Only one doubling, MMRFaceNet only; any shared tensor whose shape differs is an error that names
it (the widths of the shared levels must be the same: see model.*.min_channels).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mmrface.errors import UserError

BLUR = torch.tensor([1.0, 2.0, 1.0]) / 4  # separable; the 3x3 kernel is its outer product
LRELU_SLOPE = 0.2


def _levels(G: nn.Module) -> int:
    return len(G.encoder.body)


def grow_state(small: dict[str, Tensor], G: nn.Module, where: str = "train.warm_start") -> tuple[dict[str, Tensor], dict[str, int]]:
    """The state dict for the fresh network `G` (at 2S) seeded from `small` (an S network's state).

    Returns (state, counts) with counts of tensors copied / constructed / left at their fresh init.
    """
    new = {k: v.clone() for k, v in G.state_dict().items()}
    n_old_levels = 1 + max(int(k.split(".")[2]) for k in small if k.startswith("encoder.body."))
    if n_old_levels + 1 != _levels(G):
        raise UserError(f"{where}: the file's model has {n_old_levels + 2} encoder levels, this one {_levels(G) + 1}: "
                        "a warm start grows by exactly one level (S -> 2S)")
    counts = {"copied": 0, "constructed": 0}
    used: set[str] = set()

    def put(key: str, value: Tensor, src: str | None, kind: str = "copied") -> None:
        if key not in new:
            raise UserError(f"{where}: this model has no tensor {key}")
        if tuple(value.shape) != tuple(new[key].shape):
            raise UserError(f"{where}: {src or key} has shape {tuple(value.shape)}, this model's {key} "
                            f"{tuple(new[key].shape)} (the shared levels must have the same widths)")
        new[key] = value.to(new[key].dtype).clone()
        counts[kind] += 1
        if src is not None:
            used.add(src)

    # encoder: old level k is new level k+1; the new input level passes RGB through
    for key, value in small.items():
        if key.startswith("encoder.body."):
            parts = key.split(".")
            parts[2] = str(int(parts[2]) + 1)
            put(".".join(parts), value, key)
        elif key.startswith("encoder.to_latent."):
            put(key, _grow_codes(value, G.encoder.style_dim, G.encoder.num_latent), key)
        elif key.startswith("encoder.conv_in."):
            continue  # folded into the new down conv below
        elif key in new and tuple(value.shape) == tuple(new[key].shape):
            put(key, value, key)  # prior, decoder levels 8..S, encoder 4x4 part, buffers
    _pass_through(new, small, put)
    used |= {"encoder.conv_in.weight", "encoder.conv_in.bias"}
    _quiet_new_level(new, G, put)
    left = sorted(set(small) - used)
    if left:
        raise UserError(f"{where}: {len(left)} tensors of the file fit nowhere in this model (e.g. {left[:3]})")
    counts["fresh"] = len(new) - counts["copied"] - counts["constructed"]
    return new, counts


def _grow_codes(value: Tensor, style_dim: int, num_latent: int) -> Tensor:
    """to_latent weight (L*D, F) or bias (L*D,): copy the L codes, new ones repeat the last two."""
    rows = value.shape[0]
    if rows % style_dim:
        raise UserError(f"train.warm_start: encoder.to_latent has {rows} rows, not a multiple of {style_dim}")
    old = value.reshape(rows // style_dim, style_dim, *value.shape[1:])
    extra = num_latent - old.shape[0]
    if extra < 0 or extra > old.shape[0]:
        raise UserError(f"train.warm_start: {old.shape[0]} codes cannot grow to {num_latent}")
    grown = torch.cat([old, old[old.shape[0] - extra:]], 0)
    return grown.reshape(num_latent * style_dim, *value.shape[1:])


def _pass_through(new: dict[str, Tensor], small: dict[str, Tensor], put) -> None:
    """New conv_in: ±RGB identity on 6 channels; new body.0.down: old conv_in ⊗ blur on them."""
    w_in = new["encoder.conv_in.weight"]  # (C_2S, 3, 1, 1)
    c_big = w_in.shape[0]
    if c_big < 6:
        raise UserError(f"train.warm_start: the new input level has {c_big} channels; the RGB pass-through "
                        "needs at least 6 (raise model.codec.min_channels)")
    eye = torch.eye(3)
    w_in = w_in.clone()
    w_in[:3, :, 0, 0], w_in[3:6, :, 0, 0] = eye, -eye
    b_in = new["encoder.conv_in.bias"].clone()
    b_in[:6] = 0
    put("encoder.conv_in.weight", w_in, None, "constructed")
    put("encoder.conv_in.bias", b_in, None, "constructed")

    old_w = small["encoder.conv_in.weight"][:, :, 0, 0]  # (C_S, 3)
    c_small = old_w.shape[0]
    down = new["encoder.body.0.down.weight"]  # (C_S, C_2S, 3, 3)
    if down.shape[0] != c_small:
        raise UserError(f"train.warm_start: the file's input level has {c_small} channels, this model's "
                        f"second level {down.shape[0]} (the shared levels must have the same widths)")
    kernel = torch.outer(BLUR, BLUR)  # (3, 3)
    w = torch.zeros_like(down)
    gain = 1.0 + LRELU_SLOPE  # lrelu(x) - lrelu(-x) = 1.2 x
    w[:, :3] = old_w[:, :, None, None] * kernel / gain
    w[:, 3:6] = -old_w[:, :, None, None] * kernel / gain
    put("encoder.body.0.down.weight", w, None, "constructed")
    put("encoder.body.0.down.bias", small["encoder.conv_in.bias"], None, "constructed")


def _quiet_new_level(new: dict[str, Tensor], G: nn.Module, put) -> None:
    """The new level adds nothing at first: prior to-RGB at zero, decoder SFT head at identity."""
    top = G.prior.num_levels - 1
    key = f"prior.to_rgbs.{top}.conv.weight"
    put(key, torch.zeros_like(new[key]), None, "constructed")
    put(f"prior.to_rgbs.{top}.bias", torch.zeros_like(new[f"prior.to_rgbs.{top}.bias"]), None, "constructed")
    head = len(G.decoder.heads) - 1
    for part in ("scale", "shift"):
        for name in ("weight", "bias"):
            key = f"decoder.heads.{head}.{part}.{name}"
            put(key, torch.zeros_like(new[key]), None, "constructed")


def warm_start(G: nn.Module, source: str) -> str:
    """Load `source` (a weight file or registry name of an S-px mmrface model) grown into `G`; the
    run-log line."""
    from mmrface.models import load_state_strict
    from mmrface.weights import load_weights

    if not hasattr(G, "encoder") or not hasattr(G.encoder, "body"):
        raise UserError("train.warm_start: only mmrface models can be grown")
    state, meta = load_weights(source)
    model = ((meta.get("config") or {}).get("model") or {})
    if model.get("arch", "mmrface") != "mmrface" or model.get("size", 0) * 2 != G.size:
        raise UserError(f"train.warm_start {source}: holds a {model.get('arch', '?')} model at "
                        f"{model.get('size', '?')} px; this run needs an mmrface model at {G.size // 2} px")
    grown, counts = grow_state(state, G, f"train.warm_start {source}")
    load_state_strict(G, grown, f"train.warm_start {source}")
    return (f"warm start: {source} ({model['size']} px) sha256 {meta.get('sha256', '?')}: "
            f"{counts['copied']} tensors copied, {counts['constructed']} set for a quiet new {G.size}-px level, "
            f"{counts['fresh']} fresh")
