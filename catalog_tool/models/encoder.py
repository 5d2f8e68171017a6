"""A SpecCLIP-style transformer spectral encoder and the embedding-MLP ensemble member built on it.

Our reading of SpecCLIP (Zhao et al. 2025, arXiv:2507.01939), adapted to the model grid
(docs/encoder.md):

* input: the normalised spectrum on the model grid (``n_in`` pixels, 1,462 for the default grid);
* per-spectrum standardisation ``z = (x - mean) / std`` over the pixels;
* tokens: windows of ``token`` pixels every ``stride`` pixels taken with ``Tensor.unfold``
  (``(n_in - token) // stride + 1`` tokens: 145 for 1,462 px with 20/10; the last
  ``(n_in - token) % stride`` pixels, 2 for the default grid, fall outside every window), each
  mapped by one Linear to ``width``; plus one token carrying ``log10(std)`` so the embedding knows
  the spectrum's contrast (line depths), which standardisation removes;
* learned position embeddings; ``torch.nn.TransformerEncoder`` (batch_first, pre-norm, GELU) and
  a final LayerNorm;
* the embedding is the mean over all tokens of the last layer.

Pre-training heads (kept in the encoder bundle, unused downstream): ``recon`` maps each token's
last-layer state back to its ``token`` standardised pixels for masked-chunk reconstruction.

:class:`EmbeddingMember` (encoder + regression head) maps ``(N, n_in)`` flux to ``(N, L)`` scaled
labels like every other ensemble member, so :func:`catalog_tool.models.infer.predict` (ensemble,
noise propagation) works unchanged. A frozen encoder shared by all members is run once per batch
(see :meth:`EmbeddingMember.forward`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from catalog_tool.errors import ConfigError
from catalog_tool.models.device import resolve_device

__all__ = [
    "EncoderConfig",
    "ENCODER_PRESETS",
    "SpectrumEncoder",
    "EmbeddingMember",
    "chunk_mask",
    "encode",
    "apply_encoder_lora",
    "merge_encoder_lora",
    "encoder_trainable",
]


@dataclass(frozen=True)
class EncoderConfig:
    """Shape of a :class:`SpectrumEncoder`.

    Parameters
    ----------
    n_in : int
        Input pixels, from the model grid (``grid["npix"]``).
    token, stride : int
        Pixels per token and step between tokens (20 and 10: tokens overlap by half).
    width, layers, heads : int
        Transformer width, depth and attention heads. The default (128, 2, 4) trains on 2 CPU
        cores; SpecCLIP's size is (768, 6, 6) (``ENCODER_PRESETS["specclip"]``), for a GPU.
    ffn : int
        Feed-forward width as a multiple of ``width`` (4, as in the transformer paper).
    dropout : float
        Dropout inside the transformer layers (0: the masking is the regulariser, and frozen
        or LoRA-adapted encoders then behave identically in training and evaluation mode).
    """

    n_in: int = 1462
    token: int = 20
    stride: int = 10
    width: int = 128
    layers: int = 2
    heads: int = 4
    ffn: int = 4
    dropout: float = 0.0

    def __post_init__(self):
        problems = []
        if int(self.token) < 1 or int(self.stride) < 1:
            problems.append(f"token and stride must be >= 1, got {self.token} and {self.stride}")
        elif int(self.n_in) < int(self.token):
            problems.append(f"n_in ({self.n_in}) must be at least one token ({self.token})")
        if min(int(self.width), int(self.layers), int(self.heads), int(self.ffn)) < 1:
            problems.append("width, layers, heads and ffn must be >= 1")
        elif int(self.width) % int(self.heads):
            problems.append(f"width ({self.width}) must be a multiple of heads ({self.heads})")
        if not 0.0 <= float(self.dropout) < 1.0:
            problems.append(f"dropout must be in [0, 1), got {self.dropout}")
        if problems:
            raise ConfigError("invalid encoder configuration: " + "; ".join(problems))

    @property
    def n_tokens(self) -> int:
        """Pixel tokens (the log10(std) token comes on top)."""
        return (int(self.n_in) - int(self.token)) // int(self.stride) + 1

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "EncoderConfig":
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"unknown encoder configuration keys: {sorted(unknown)}")
        return cls(**d)


#: Named sizes: "default" trains on a CPU; "specclip" is the authors' (768 wide, 6 layers, 6 heads).
ENCODER_PRESETS = {"default": dict(width=128, layers=2, heads=4), "medium": dict(width=256, layers=4, heads=4),
                   "specclip": dict(width=768, layers=6, heads=6)}


def chunk_mask(n: int, n_tokens: int, *, ratio: float = 0.3, min_run: int = 2, max_run: int = 8,
               generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """Masks of contiguous runs of tokens, one row per spectrum (vectorised).

    Runs of ``min_run``..``max_run`` tokens lie at uniform positions inside the row; their number is chosen so
    that about ``ratio`` of the tokens would be covered without overlaps (overlapping runs cover
    a little less). Every row masks at least one run, never all tokens.

    Returns
    -------
    torch.Tensor, bool, shape (n, n_tokens)
    """
    if not 0 < ratio < 1 or not 1 <= min_run <= max_run:
        raise ConfigError(f"mask ratio must be in (0, 1) and 1 <= min_run <= max_run, got {ratio}, {min_run}, {max_run}")
    mean_run = 0.5 * (min_run + max_run)
    runs = max(1, int(round(ratio * n_tokens / mean_run)))
    length = torch.randint(min_run, max_run + 1, (n, runs, 1), generator=generator, device=device).clamp_max(n_tokens)
    # Starts drawn so that every run fits: runs at the ends are not truncated.
    start = (torch.rand((n, runs, 1), generator=generator, device=device) * (n_tokens - length + 1)).long()
    t = torch.arange(n_tokens, device=device)[None, None, :]
    mask = ((t >= start) & (t < start + length)).any(dim=1)
    mask[:, -1] &= ~mask.all(dim=1)  # keep one token visible in the (tiny-n_tokens) worst case
    return mask


class SpectrumEncoder(nn.Module):
    """Transformer encoder of normalised spectra (see the module docstring)."""

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.config = c = config
        self.token_embed = nn.Linear(c.token, c.width)
        self.std_embed = nn.Linear(1, c.width)
        self.mask_token = nn.Parameter(torch.zeros(c.width))
        self.pos = nn.Parameter(0.02 * torch.randn(1, c.n_tokens + 1, c.width))
        layer = nn.TransformerEncoderLayer(c.width, c.heads, c.ffn * c.width, dropout=c.dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        # Nested tensors only help with padding masks, which fixed-length spectra never need.
        self.encoder = nn.TransformerEncoder(layer, c.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(c.width)
        self.recon = nn.Linear(c.width, c.token)

    def standardise(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(z, mean, std)`` with ``z = (x - mean) / std`` per spectrum; mean, std shape (N, 1)."""
        mean = x.mean(dim=1, keepdim=True)
        # A flat spectrum (std 0) would divide by zero; 1e-6 leaves it flat and finite.
        std = x.std(dim=1, keepdim=True, correction=0).clamp_min(1e-6)
        return (x - mean) / std, mean, std

    def tokens(self, z: torch.Tensor) -> torch.Tensor:
        """Pixel windows, shape (N, n_tokens, token)."""
        return z.unfold(1, self.config.token, self.config.stride)

    def hidden(self, x: torch.Tensor, *, token_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Last-layer states (N, n_tokens + 1, width) and the standardised windows (N, n_tokens, token).

        ``token_mask`` (N, n_tokens), True = hidden: those tokens are replaced by the learned mask
        token before the position embeddings are added.
        """
        if x.ndim != 2 or x.shape[1] != self.config.n_in:
            raise ConfigError(f"encoder expects spectra of {self.config.n_in} pixels, got shape {tuple(x.shape)}")
        z, _, std = self.standardise(x)
        windows = self.tokens(z)
        tok = self.token_embed(windows)
        if token_mask is not None:
            tok = torch.where(token_mask[..., None], self.mask_token.to(tok.dtype), tok)
        std_tok = self.std_embed(torch.log10(std))[:, None, :]
        h = torch.cat([tok, std_tok], dim=1) + self.pos
        return self.norm(self.encoder(h)), windows

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The embedding: mean over all tokens of the last layer, shape (N, width)."""
        h, _ = self.hidden(x)
        return h.mean(dim=1)

    def reconstruction_loss(self, x: torch.Tensor, *, token_mask: torch.Tensor, ivar: torch.Tensor | None = None,
                            return_embedding: bool = False):
        """Masked-chunk reconstruction loss on the masked tokens only.

        Mean squared error in standardised units over the pixels of masked tokens; with ``ivar``
        each pixel is weighted by ``1 / (sigma_z**2 + 0.02**2)`` (its inverse variance in
        standardised units, softened so that a few very high-S/N pixels cannot dominate a batch),
        and pixels with ``ivar <= 0`` count zero.

        Returns the loss, and with ``return_embedding`` also the (masked-input) embedding.
        """
        h, windows = self.hidden(x, token_mask=token_mask)
        pred = self.recon(h[:, :-1, :])
        err2 = (pred - windows).square()
        w = token_mask[..., None].to(err2.dtype).expand_as(err2)
        if ivar is not None:
            _, _, std = self.standardise(x)
            iv = self.tokens(ivar * std.square())  # inverse variance of z = x / std
            sig2 = torch.where(iv > 0, 1.0 / iv.clamp_min(1e-30), torch.full_like(iv, math.inf))
            w = w * torch.where(iv > 0, 1.0 / (sig2 + 0.02**2), torch.zeros_like(iv))
        loss = (w * err2).sum() / w.sum().clamp_min(1e-12)
        return (loss, h.mean(dim=1)) if return_embedding else loss


# --- LoRA on the attention projections ---------------------------------------------------------
# torch's MultiheadAttention reads ``in_proj_weight`` and ``out_proj.weight`` as tensors (not
# through a Linear call), so LoRA is a parametrisation of those weights: W -> W + (alpha/r) B A,
# computed when read. q, k and v each get their own rank-r pair (as peft does on q/k/v Linears).

class _QKVLoRA(nn.Module):
    def __init__(self, width: int, *, rank: int, alpha: float):
        super().__init__()
        self.scaling = float(alpha) / int(rank)
        self.lora_A = nn.Parameter(torch.empty(3, rank, width))
        for i in range(3):
            nn.init.kaiming_uniform_(self.lora_A[i], a=math.sqrt(5))
        self.lora_B = nn.Parameter(torch.zeros(3, width, rank))

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return w + self.scaling * torch.bmm(self.lora_B, self.lora_A).reshape(w.shape)


class _OutLoRA(nn.Module):
    def __init__(self, width: int, *, rank: int, alpha: float):
        super().__init__()
        self.scaling = float(alpha) / int(rank)
        self.lora_A = nn.Parameter(torch.empty(rank, width))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.lora_B = nn.Parameter(torch.zeros(width, rank))

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return w + self.scaling * (self.lora_B @ self.lora_A)


def apply_encoder_lora(encoder: SpectrumEncoder, *, rank: int = 4, alpha: float = 8.0) -> SpectrumEncoder:
    """Freeze ``encoder`` and add rank-``rank`` LoRA to every attention's q, k, v and output projections.

    B starts at zero, so the encoder's output is unchanged until training moves it; only the
    ``lora_A``/``lora_B`` factors are trainable. In place; returns ``encoder``.
    """
    if int(rank) < 1 or not float(alpha) > 0:
        raise ConfigError(f"encoder LoRA needs rank >= 1 and alpha > 0, got rank={rank}, alpha={alpha}")
    for p in encoder.parameters():
        p.requires_grad_(False)
    width = encoder.config.width
    for layer in encoder.encoder.layers:
        parametrize.register_parametrization(layer.self_attn, "in_proj_weight", _QKVLoRA(width, rank=rank, alpha=alpha))
        parametrize.register_parametrization(layer.self_attn.out_proj, "weight", _OutLoRA(width, rank=rank, alpha=alpha))
    return encoder


def merge_encoder_lora(encoder: SpectrumEncoder) -> SpectrumEncoder:
    """Fold LoRA factors into the attention weights (plain tensors again); in place."""
    for layer in encoder.encoder.layers:
        for mod, name in ((layer.self_attn, "in_proj_weight"), (layer.self_attn.out_proj, "weight")):
            if parametrize.is_parametrized(mod, name):
                parametrize.remove_parametrizations(mod, name, leave_parametrized=True)
    return encoder


def encoder_trainable(encoder: nn.Module) -> bool:
    return any(p.requires_grad for p in encoder.parameters())


class EmbeddingMember(nn.Module):
    """One ensemble member of an embedding bundle: ``head(encoder(x))``, (N, n_in) -> (N, L).

    Parameters
    ----------
    encoder : SpectrumEncoder
        Frozen (possibly shared by all members), LoRA-adapted or fully trainable.
    head : nn.Module
        A :class:`~catalog_tool.models.mlp.SpectrumMLP` (multi-label) or
        :class:`~catalog_tool.models.mlp.PerLabelStack` on ``width``-d embeddings, possibly
        adapted by :func:`~catalog_tool.models.adapters.adapt_member`.
    """

    def __init__(self, encoder: SpectrumEncoder, head: nn.Module):
        super().__init__()
        self.encoder = encoder
        self.head = head

    def train(self, mode: bool = True):
        # A frozen encoder stays in evaluation mode, so its embeddings equal the ones the head
        # was trained on.
        super().train(mode)
        if not encoder_trainable(self.encoder):
            self.encoder.eval()
        return self

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        enc = self.encoder
        if torch.is_grad_enabled() or enc.training or encoder_trainable(enc):
            return enc(x)
        # Without gradients a frozen encoder shared by M members computes the same embedding M
        # times; keep the last one, keyed by the very tensor object (held, so its id cannot be
        # reused) and its in-place version counter (inference tensors have none: predict never
        # modifies its batch in place).
        version = -1 if x.is_inference() else x._version
        cache = enc.__dict__.get("_stx_cache")
        if cache is not None and cache[0] is x and cache[1] == version:
            return cache[2]
        emb = enc(x)
        enc.__dict__["_stx_cache"] = (x, version, emb)
        return emb

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))


def encode(encoder: SpectrumEncoder, *, flux: np.ndarray, device="cpu", batch_size: int = 256) -> np.ndarray:
    """Embeddings (N, width) float32 of normalised spectra, batched on ``device`` (a memmap is fine)."""
    dev = resolve_device(device)
    encoder = encoder.to(dev).eval()
    n = np.shape(flux)[0]
    out = np.empty((n, encoder.config.width), np.float32)
    with torch.inference_mode():
        for s in range(0, n, batch_size):
            x = torch.from_numpy(np.ascontiguousarray(flux[s:s + batch_size], dtype=np.float32)).to(dev)
            out[s:s + len(x)] = encoder(x).float().cpu().numpy()
    return out
