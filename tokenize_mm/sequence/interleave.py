"""Interleaving: an example's encoded items become one token sequence, and back.

Each item becomes a *span*: its modality's begin marker, its codes as global ids (audio laid out by
the layout's codebook pattern), its end marker. An example is ``bos``, its spans in the chosen
order, ``eos``::

    bos <image> i0 … i63 </image> <text> t0 … t11 </text> <audio> a0 … a124 </audio> eos

Every position has a modality id (``core.modalities.MODALITY_IDS``: markers count for their
modality, bos and eos as special). ``cuts`` lists the positions where a span begins: the packer
may split an example there and nowhere else. ``deinterleave`` parses a sequence back into
(modality, codes) items, the exact inverse of ``interleave``, and names the position of any
malformed span.

Span order (``SpanOrder``): ``"fixed"`` (text, image, audio, or the order given), ``"random"`` (a
permutation per example, seeded by the example's id, so a rerun gives the same sequence), or a
named template from ``ORDER_TEMPLATES`` such as ``"caption_after_image"``. Items of one modality
(several audio clips) stay together in their given order.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from tokenize_mm.core.modalities import MODALITIES, MODALITY_IDS
from tokenize_mm.sequence.patterns import get_pattern
from tokenize_mm.sequence.vocab import SPECIALS, LayoutError, VocabLayout
from tokenize_mm.tokenizers.errors import InvalidCodesError

ORDER_TEMPLATES: dict[str, tuple[str, ...]] = {
    "text_first": ("text", "image", "audio"),
    "caption_after_image": ("image", "text", "audio"),
    "caption_after_audio": ("audio", "text", "image"),
    "caption_last": ("image", "audio", "text"),
}
_LOCAL_PAD = -1  # the pattern's pad id for local codes (never a code)


@dataclass(frozen=True)
class SpanOrder:
    """How the spans of an example are ordered.

    Args:
        mode: ``"fixed"``, ``"random"``, or the name of a template in ``ORDER_TEMPLATES``.
        order: the modality order for ``"fixed"`` (default text, image, audio).
        seed: mixed into the per-example permutation of ``"random"``.
    """

    mode: str = "fixed"
    order: tuple[str, ...] = MODALITIES
    seed: int = 0

    def __post_init__(self) -> None:
        if self.mode not in ("fixed", "random") and self.mode not in ORDER_TEMPLATES:
            raise LayoutError(
                f"span order must be 'fixed', 'random' or one of {list(ORDER_TEMPLATES)}, got "
                f"{self.mode!r}"
            )
        if sorted(self.order) != sorted(MODALITIES):
            raise LayoutError(f"order must be a permutation of {MODALITIES}, got {self.order}")

    def arrange(self, modalities: Sequence[str], example_id: str = "") -> list[str]:
        """The present modalities, in this order (``example_id`` seeds ``"random"``)."""
        present = [m for m in MODALITIES if m in modalities]
        if self.mode == "random":
            digest = hashlib.sha256(f"{self.seed}/{example_id}".encode()).digest()
            random.Random(int.from_bytes(digest[:8], "little")).shuffle(present)
            return present
        order = self.order if self.mode == "fixed" else ORDER_TEMPLATES[self.mode]
        return sorted(present, key=order.index)


DEFAULT_ORDER = SpanOrder()


@dataclass(frozen=True)
class Interleaved:
    """One example as a sequence.

    Attributes:
        tokens: (N,) int64 global ids.
        modality: (N,) uint8 modality ids.
        cuts: (M,) int64 positions where a span begins, increasing, all in (0, N).
        spans: (modality, start, stop) of each span, markers included.
    """

    tokens: torch.Tensor
    modality: torch.Tensor
    cuts: torch.Tensor
    spans: tuple[tuple[str, int, int], ...]


def span_tokens(layout: VocabLayout, modality: str, codes: torch.Tensor) -> torch.Tensor:
    """Codes (K, T) of one item → its span (markers included) as global ids (N,)."""
    if codes.dim() != 2:
        raise InvalidCodesError(f"codes must be (K, T), got shape {tuple(codes.shape)}")
    if modality == "audio":
        body = _audio_body(layout, codes)
    else:
        if codes.shape[0] != 1:
            raise InvalidCodesError(f"{modality} codes have one codebook, got {codes.shape[0]}")
        body = layout.to_global(modality, codes[0])
    begin, end = torch.tensor([layout.begin(modality)]), torch.tensor([layout.end(modality)])
    return torch.cat([begin, body, end])


def _audio_body(layout: VocabLayout, codes: torch.Tensor) -> torch.Tensor:
    k = codes.shape[0]
    expected = layout.infos["audio"].num_codebooks
    if k != expected:
        raise InvalidCodesError(f"audio codes have {k} codebooks, the layout {expected}")
    grid = get_pattern(layout.audio_pattern).build(codes, _LOCAL_PAD)
    if layout.audio_pattern == "flatten":  # (K·T,): position p holds codebook p mod K
        codebook = torch.arange(grid.numel()) % k
        return layout.to_global("audio", grid, codebook)
    steps = grid.T.reshape(-1)  # delay (K, S) → step-major (S·K,): position p holds stream p mod K
    codebook = torch.arange(steps.numel()) % k
    pad = steps == _LOCAL_PAD
    out = layout.to_global("audio", steps.clamp(min=0), codebook)
    return torch.where(pad, torch.tensor(layout.special("delay_pad")), out)


def interleave(
    layout: VocabLayout,
    items: Sequence[tuple[str, torch.Tensor]],
    *,
    order: SpanOrder = DEFAULT_ORDER,
    example_id: str = "",
) -> Interleaved:
    """Encoded items of one example → its sequence.

    Args:
        layout: the global vocabulary.
        items: (modality, codes (K, T)) pairs; several items of one modality keep their order.
        order: how the modalities' spans are ordered.
        example_id: seeds a ``"random"`` order.

    Raises:
        LayoutError: a modality has no range in the layout.
        InvalidCodesError: codes of the wrong shape or outside their codebook.
    """
    missing = sorted({m for m, _ in items} - set(layout.modalities))
    if missing:
        raise LayoutError(
            f"the layout has no tokenizer for {missing}; it covers {layout.modalities}"
        )
    parts = [torch.tensor([layout.special("bos")])]
    spans, cuts, pos = [], [], 1
    for modality in order.arrange([m for m, _ in items], example_id):
        for m, codes in items:
            if m != modality:
                continue
            span = span_tokens(layout, m, codes)
            spans.append((m, pos, pos + span.numel()))
            cuts.append(pos)
            parts.append(span)
            pos += span.numel()
    parts.append(torch.tensor([layout.special("eos")]))
    tokens = torch.cat(parts)
    return Interleaved(
        tokens=tokens,
        modality=layout.modality_of(tokens),
        cuts=torch.tensor(cuts[1:], dtype=torch.int64),  # position 1 follows bos: no cut there
        spans=tuple(spans),
    )


def deinterleave(layout: VocabLayout, tokens: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    """A sequence made by ``interleave`` → its (modality, codes (K, T)) items, in sequence order.

    Raises:
        InvalidCodesError: a missing bos/eos, an unclosed or mismatched span, or ids inside a span
            that belong to another modality or codebook (the message gives the position).
    """
    tokens = torch.as_tensor(tokens, dtype=torch.int64).reshape(-1)
    _, codebooks, local = layout.to_local(tokens)
    bos, eos = layout.special("bos"), layout.special("eos")
    if tokens.numel() < 2 or int(tokens[0]) != bos or int(tokens[-1]) != eos:
        raise InvalidCodesError("a sequence starts with bos and ends with eos", item="deinterleave")
    begins = {layout.begin(m): m for m in layout.modalities}
    out, pos, n = [], 1, tokens.numel() - 1
    while pos < n:
        modality = begins.get(int(tokens[pos]))
        if modality is None:
            raise InvalidCodesError(
                f"position {pos}: expected a span's begin marker, got id {int(tokens[pos])}",
                item="deinterleave",
            )
        end_marker = layout.end(modality)
        stops = (tokens[pos + 1 : n] == end_marker).nonzero()
        if not len(stops):
            raise InvalidCodesError(
                f"position {pos}: {modality} span is never closed", item="deinterleave"
            )
        stop = pos + 1 + int(stops[0])
        body = slice(pos + 1, stop)
        out.append((modality, _span_codes(layout, modality, tokens[body], codebooks[body],
                                          local[body], pos + 1)))  # fmt: skip
        pos = stop + 1
    return out


def _span_codes(
    layout: VocabLayout,
    modality: str,
    ids: torch.Tensor,
    codebooks: torch.Tensor,
    local: torch.Tensor,
    offset: int,
) -> torch.Tensor:
    mods = layout.modality_of(ids)
    is_delay_pad = ids == layout.special("delay_pad")
    specials = ids < len(SPECIALS)
    wrong = (mods != MODALITY_IDS[modality]) | (specials & ~is_delay_pad)
    if modality != "audio" or layout.audio_pattern != "delay":
        wrong |= is_delay_pad
    if bool(wrong.any()):
        p = offset + int(wrong.nonzero()[0])
        raise InvalidCodesError(
            f"position {p}: id does not belong inside a {modality} span", item="deinterleave"
        )
    if modality != "audio":
        return local[None]
    k = layout.infos["audio"].num_codebooks
    if ids.numel() % k:
        raise InvalidCodesError(
            f"position {offset}: audio span of {ids.numel()} ids is not a multiple of K = {k}",
            item="deinterleave",
        )
    expected = torch.arange(ids.numel()) % k
    ok = (codebooks == expected) | is_delay_pad
    if not bool(ok.all()):
        p = offset + int((~ok).nonzero()[0])
        raise InvalidCodesError(
            f"position {p}: audio id of the wrong codebook", item="deinterleave"
        )
    pattern = get_pattern(layout.audio_pattern)
    values = torch.where(is_delay_pad, torch.tensor(_LOCAL_PAD), local)
    if layout.audio_pattern == "flatten":
        return pattern.revert(values, k, _LOCAL_PAD)
    grid = values.reshape(-1, k).T.contiguous()  # step-major → (K, S)
    return pattern.revert(grid, k, _LOCAL_PAD)
