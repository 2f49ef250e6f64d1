"""A text-conditional diffusion model denoising in pixel space: Hugging Face diffusers' UNet2DConditionModel
reading the token states of a text tower by cross-attention.

References: J. Ho et al., "Denoising Diffusion Probabilistic Models", NeurIPS 2020 (noise prediction,
``DDPMScheduler`` for training); J. Song et al., "Denoising Diffusion Implicit Models", ICLR 2021 (``DDIMScheduler``
for sampling in few steps); J. Ho and T. Salimans, "Classifier-Free Diffusion Guidance", 2022 (the caption is
dropped for some training samples; sampling mixes the conditional and unconditional predictions); R. Rombach
et al., "High-Resolution Image Synthesis with Latent Diffusion Models", CVPR 2022 (a locked pre-trained text
encoder's token states as cross-attention context).

Design, measured on 2 CPU cores: cross-attention only at the coarse resolutions (``cross_attention_max_res``,
8x8 and below by default), where it is cheap; at 16x16 or 32x32 it costs several times the step time. The
text tower is the locked all-MiniLM-L6-v2 by default (its token states are cached per distinct caption, so it
costs nothing after the first epoch); ``text_mode="scratch"`` trains a small Transformer instead (the
ablation). The unconditional context of classifier-free guidance is the empty caption's. An exponential
moving average of the UNet's weights (``ema_unet``, saved with the model) is what samples.

Images are ``(B, 3, S, S)`` in [-1, 1]; the noise schedule and the samplers are diffusers' own.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from vislang.errors import VislangError
from vislang.models.encoders import set_trainable
from vislang.models.registry import create_model, register_family, register_model
from vislang.models.text_encoders import HF_TOWERS

SAMPLERS = ("ddim", "dpm")
"""Samplers of :meth:`TextToImageDiffusion.sample`: DDIM (deterministic, eta 0) and DPM-Solver++ (2nd order)."""


@dataclass
class DiffusionUNetConfig:
    """The denoiser, its text tower and its noise schedule.

    Attributes:
        image_size: Side of the generated images in pixels (32; 64 as an option).
        channels: Output channels of each UNet level (the first at full resolution, each next one at half).
        layers_per_block: ResNet layers per level.
        attention_head_dim: Channels per attention head.
        norm_num_groups: Groups of the GroupNorm layers (divides every entry of ``channels``).
        cross_attention_max_res: Levels at this resolution and below cross-attend to the text (the others are
            plain ResNet levels).
        pooled_text: Also add the text's mean token state, projected, to the timestep embedding, which every
            ResNet layer of every level reads: a cheap global condition (colour, kind) at full resolution.
        text_encoder: Registered text encoder (``minilm``, ``hf_text``, ``text_transformer``, ...).
        text_encoder_kwargs: Its options (``vocab_size``/``pad_id`` for a tower over a vocabulary).
        text_mode: ``"locked"`` (a pre-trained tower, frozen, cached) or ``"scratch"`` (trained with the UNet).
        train_timesteps: Steps of the training noise schedule.
        beta_schedule: diffusers' name of the schedule (``squaredcos_cap_v2``: the cosine schedule).
        ema_decay: Decay of the moving average of the UNet weights (0: the EMA copy follows the weights); it
            warms up as ``min(ema_decay, (1 + k) / (10 + k))`` after ``k`` updates, so that early weights fade.
    """

    image_size: int = 32
    channels: tuple[int, ...] = (32, 64, 128, 128)
    layers_per_block: int = 1
    attention_head_dim: int = 8
    norm_num_groups: int = 16
    cross_attention_max_res: int = 8
    pooled_text: bool = True
    text_encoder: str = "minilm"
    text_encoder_kwargs: dict[str, Any] = field(default_factory=dict)
    text_mode: str = "locked"
    train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"
    ema_decay: float = 0.999

    def __post_init__(self) -> None:
        if self.text_mode not in ("locked", "scratch"):
            raise VislangError(f"diffusion_unet: text_mode must be 'locked' or 'scratch', not {self.text_mode!r}")
        if self.text_mode == "scratch" and self.text_encoder in HF_TOWERS:
            raise VislangError(f"diffusion_unet: {self.text_encoder!r} is pre-trained; text_mode 'scratch' needs "
                               "a tower such as text_transformer")
        if self.image_size % 2 ** (len(self.channels) - 1):
            raise VislangError(f"diffusion_unet: image_size {self.image_size} does not halve {len(self.channels) - 1}"
                               " times (one per level after the first)")
        if any(c % self.norm_num_groups for c in self.channels):
            raise VislangError(f"diffusion_unet: norm_num_groups {self.norm_num_groups} must divide every channel "
                               f"count {self.channels}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise VislangError(f"diffusion_unet: ema_decay must be in [0, 1), not {self.ema_decay}")

    def resolutions(self) -> list[int]:
        """Side of the feature maps of each level."""
        return [self.image_size // 2 ** i for i in range(len(self.channels))]


def _diffusers():
    try:
        import diffusers
    except ImportError:
        raise VislangError("text-to-image generation needs diffusers: pip install 'vislang[generate]'") from None
    return diffusers


def build_unet(cfg: DiffusionUNetConfig, context_dim: int) -> nn.Module:
    """diffusers' UNet2DConditionModel with cross-attention at the levels of ``cfg.cross_attention_max_res`` and
    below (and in the middle block, at the coarsest level)."""
    cross = [res <= cfg.cross_attention_max_res for res in cfg.resolutions()]
    down = tuple("CrossAttnDownBlock2D" if c else "DownBlock2D" for c in cross)
    up = tuple("CrossAttnUpBlock2D" if c else "UpBlock2D" for c in reversed(cross))
    return _diffusers().UNet2DConditionModel(
        sample_size=cfg.image_size, in_channels=3, out_channels=3, down_block_types=down, up_block_types=up,
        block_out_channels=tuple(cfg.channels), layers_per_block=cfg.layers_per_block,
        cross_attention_dim=context_dim, attention_head_dim=cfg.attention_head_dim,
        norm_num_groups=cfg.norm_num_groups,
        class_embed_type="projection" if cfg.pooled_text else None,
        projection_class_embeddings_input_dim=context_dim if cfg.pooled_text else None)


@dataclass
class TextContext:
    """What the UNet cross-attends to."""

    states: Tensor   # (B, L, D) token states of the text tower
    mask: Tensor     # (B, L) 1 where a token is, 0 at padding


class TextToImageDiffusion(nn.Module):
    """Noise prediction ``eps(x_t, t, text)`` by a UNet over a text tower's token states, with an EMA copy.

    Args:
        unet: The denoiser (diffusers' UNet2DConditionModel).
        text_encoder: A vislang text encoder (``forward(input_ids, attention_mask) -> TextFeatures``).
        cfg: The model's config (schedule, text mode, EMA decay).
    """

    def __init__(self, unet: nn.Module, text_encoder: nn.Module, cfg: DiffusionUNetConfig):
        super().__init__()
        self.cfg = cfg
        self.unet = unet
        self.text_encoder = text_encoder
        self.ema_unet = copy.deepcopy(unet)
        set_trainable(self.ema_unet, False)
        self.locked = cfg.text_mode == "locked"
        if self.locked:
            set_trainable(text_encoder, False)
        self._text_cache: dict[tuple[int, ...], Tensor] = {}  # token ids -> (L, D) states of a locked tower
        self.register_buffer("ema_updates", torch.zeros((), dtype=torch.long))  # saved: resume keeps the warm-up

    @property
    def image_size(self) -> int:
        return self.cfg.image_size

    def train(self, mode: bool = True) -> TextToImageDiffusion:
        super().train(mode)
        self.ema_unet.eval()
        if self.locked:
            self.text_encoder.eval()  # no dropout in a locked tower
        return self

    # ----------------------------------------------------------------------------------------------- text

    def encode_text(self, input_ids: Tensor, attention_mask: Tensor) -> TextContext:
        """Token states of ``input_ids`` ``(B, L)``; a locked tower's are computed once per distinct caption."""
        if not self.locked:
            return TextContext(self.text_encoder(input_ids, attention_mask).tokens, attention_mask)
        ids_cpu, mask_cpu = input_ids.cpu(), attention_mask.cpu().bool()  # one copy, not a sync per caption
        keys = [tuple(ids[m].tolist()) for ids, m in zip(ids_cpu, mask_cpu)]
        missing = [i for i, k in enumerate(keys) if k not in self._text_cache]
        if missing:
            with torch.no_grad():
                states = self.text_encoder(input_ids[missing], attention_mask[missing]).tokens  # (M, L, D)
            for j, i in enumerate(missing):
                self._text_cache[keys[i]] = states[j, : len(keys[i])].detach()
        out = input_ids.new_zeros((*input_ids.shape, self._text_cache[keys[0]].shape[-1]), dtype=torch.float32)
        for i, k in enumerate(keys):
            out[i, : len(k)] = self._text_cache[k]
        return TextContext(out, (attention_mask > 0).long())

    # -------------------------------------------------------------------------------------------- denoise

    def forward(self, noisy: Tensor, timesteps: Tensor, context: TextContext, *, ema: bool = False) -> Tensor:
        """Predicted noise ``(B, 3, S, S)`` of ``noisy`` ``(B, 3, S, S)`` at ``timesteps`` ``(B,)``."""
        unet = self.ema_unet if ema else self.unet
        pooled = None
        if self.cfg.pooled_text:
            mask = context.mask.to(context.states.dtype).unsqueeze(-1)                      # (B, L, 1)
            pooled = (context.states * mask).sum(1) / mask.sum(1).clamp(min=1.0)             # (B, D)
            pooled = pooled.to(noisy.dtype)
        return unet(noisy, timesteps, encoder_hidden_states=context.states.to(noisy.dtype),
                    encoder_attention_mask=context.mask, class_labels=pooled, return_dict=False)[0]

    @torch.no_grad()
    def update_ema(self) -> None:
        """Move the EMA weights towards the trained ones (after each optimiser step)."""
        k = int(self.ema_updates)
        decay = min(self.cfg.ema_decay, (1 + k) / (10 + k))
        self.ema_updates += 1
        ema, params = list(self.ema_unet.parameters()), [p.detach() for p in self.unet.parameters()]
        torch._foreach_lerp_(ema, params, 1.0 - decay)
        for e, b in zip(self.ema_unet.buffers(), self.unet.buffers()):
            e.copy_(b)

    def noise_scheduler(self, kind: str = "ddpm") -> Any:
        """A fresh diffusers scheduler over the training schedule: ``ddpm`` (training), ``ddim`` or ``dpm``."""
        d = _diffusers()
        common = {"num_train_timesteps": self.cfg.train_timesteps, "beta_schedule": self.cfg.beta_schedule}
        if kind == "ddpm":
            return d.DDPMScheduler(**common, clip_sample=True)
        if kind == "ddim":
            return d.DDIMScheduler(**common, clip_sample=True, set_alpha_to_one=True)
        if kind == "dpm":
            return d.DPMSolverMultistepScheduler(**common, algorithm_type="dpmsolver++", solver_order=2)
        raise VislangError(f"unknown sampler {kind!r}; use one of {', '.join(SAMPLERS)}")

    # --------------------------------------------------------------------------------------------- sample

    @torch.no_grad()
    def sample(self, context: TextContext, uncond: TextContext | None, *, guidance: float = 3.0, steps: int = 50,
               sampler: str = "ddim", generator: torch.Generator | None = None, noise: Tensor | None = None,
               ema: bool = True, on_step: Callable[[int, Tensor], None] | None = None) -> Tensor:
        """Images ``(B, 3, S, S)`` in [-1, 1] for ``context`` (B texts), by ``steps`` steps of ``sampler``.

        Classifier-free guidance: ``eps = eps_u + guidance * (eps_c - eps_u)`` with ``uncond`` the empty caption's
        context (one row, or B); ``guidance == 1`` (or ``uncond`` None) is the conditional prediction alone.
        ``on_step(i, x)`` sees each intermediate image (for explanations and progress).
        """
        if steps < 1:
            raise VislangError(f"steps must be >= 1, not {steps}")
        b, s = context.states.shape[0], self.cfg.image_size
        device = context.states.device
        scheduler = self.noise_scheduler(sampler)
        scheduler.set_timesteps(steps, device=device)
        x = noise if noise is not None else torch.randn((b, 3, s, s), generator=generator, device="cpu").to(device)
        x = x * scheduler.init_noise_sigma
        guided = uncond is not None and guidance != 1.0
        if guided:
            u_states = uncond.states.expand(b, -1, -1) if uncond.states.shape[0] == 1 else uncond.states
            u_mask = uncond.mask.expand(b, -1) if uncond.mask.shape[0] == 1 else uncond.mask
            both = _concat_contexts(context, TextContext(u_states, u_mask))
        for i, t in enumerate(scheduler.timesteps):
            xin = scheduler.scale_model_input(x, t)
            if guided:
                eps_c, eps_u = self(torch.cat([xin, xin]), t.expand(2 * b), both, ema=ema).chunk(2)
                eps = eps_u + guidance * (eps_c - eps_u)
            else:
                eps = self(xin, t.expand(b), context, ema=ema)
            x = scheduler.step(eps, t, x, return_dict=False)[0]
            if on_step is not None:
                on_step(i, x)
        return x.clamp(-1.0, 1.0)


def pad_context(c: TextContext, length: int) -> TextContext:
    """``c`` right-padded to ``length`` tokens (zero states, mask 0)."""
    extra = length - c.states.shape[1]
    return TextContext(nn.functional.pad(c.states, (0, 0, 0, extra)), nn.functional.pad(c.mask, (0, extra)))


def _concat_contexts(a: TextContext, b: TextContext) -> TextContext:
    """Two contexts as one batch, padded to the longer length."""
    n = max(a.states.shape[1], b.states.shape[1])
    a, b = pad_context(a, n), pad_context(b, n)
    return TextContext(torch.cat([a.states, b.states]), torch.cat([a.mask, b.mask]))


# ------------------------------------------------------------------------------- cross-attention recorder


class CrossAttentionRecorder:
    """A diffusers attention processor that keeps the cross-attention probabilities of the layers it is set
    on, then computes the layer as diffusers' own ``AttnProcessor`` does.

    ``maps`` holds, per call, ``(B, heads, Q, L)`` probabilities (Q query positions of an ``h x w`` map)."""

    def __init__(self) -> None:
        self.inner = _diffusers().models.attention_processor.AttnProcessor()
        self.maps: list[Tensor] = []

    def __call__(self, attn: Any, hidden_states: Tensor, encoder_hidden_states: Tensor | None = None,
                 attention_mask: Tensor | None = None, temb: Tensor | None = None, **kwargs: Any) -> Tensor:
        if encoder_hidden_states is not None:
            b, q = hidden_states.shape[0], hidden_states.shape[1]
            mask = attn.prepare_attention_mask(attention_mask, encoder_hidden_states.shape[1], b)
            query = attn.head_to_batch_dim(attn.to_q(hidden_states))
            key = attn.head_to_batch_dim(attn.to_k(encoder_hidden_states))
            probs = attn.get_attention_scores(query, key, mask)             # (B * heads, Q, L)
            self.maps.append(probs.reshape(b, attn.heads, q, -1).detach())
        return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, temb)


def record_cross_attention(unet: nn.Module) -> tuple[CrossAttentionRecorder, Callable[[], None]]:
    """Set a :class:`CrossAttentionRecorder` on every cross-attention layer of ``unet``; returns it and a
    function that puts the previous processors back."""
    previous = dict(unet.attn_processors)
    recorder = CrossAttentionRecorder()
    unet.set_attn_processor({name: recorder if name.endswith("attn2.processor") else proc
                             for name, proc in previous.items()})
    return recorder, lambda: unet.set_attn_processor(previous)


# ----------------------------------------------------------------------------------- family and variants


@register_family("diffusion_unet", DiffusionUNetConfig)
def build_diffusion_unet(cfg: DiffusionUNetConfig) -> TextToImageDiffusion:
    """The text tower from the registry, then a UNet whose cross-attention width is the tower's."""
    text = create_model(cfg.text_encoder, **cfg.text_encoder_kwargs)
    width = int(getattr(text, "out_dim", 0))
    if width <= 0:
        raise VislangError(f"diffusion_unet: text encoder {cfg.text_encoder!r} does not say its width (out_dim)")
    return TextToImageDiffusion(build_unet(cfg, width), text, cfg)


register_model("diffusion_unet", "diffusion_unet", "Text-to-image diffusion at 32 px: a diffusers UNet (32-64-128-128 "
               "channels, cross-attention at 8x8 and 4x4) over the locked all-MiniLM-L6-v2 token states, with EMA.")
register_model("diffusion_unet_tiny", "diffusion_unet", "A tiny text-to-image diffusion model for tests: 16 px, "
               "8-16 channels, a tiny text Transformer trained from scratch.",
               image_size=16, channels=(8, 16), attention_head_dim=4, norm_num_groups=4,
               text_encoder="text_transformer_tiny", text_mode="scratch", train_timesteps=100, ema_decay=0.9)
