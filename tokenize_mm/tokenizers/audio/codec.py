"""``CodecTokenizer``: what every neural audio codec tokenizer shares, whatever made its weights.

The 50 Hz codec that tokenize_mm fits (``AudioTokenizer``, ``tokenizer.py``, kind ``audio.codec``)
and pretrained EnCodec 24/48 kHz (``EncodecTokenizer``, ``pretrained.py``, kind ``audio.encodec``)
are sibling subclasses of this class; it holds their common encode/decode path:

A clip (path, or a tensor (C, S) / (S,) with its sample rate) is converted by the policy of
``io.py`` (mixed to the model's channels, resampled to its rate), encoded to codes of shape
(K, ceil(S / hop)) — exactly ``info.frame_rate`` frames per second of audio, K residual codebooks
— and decoded back to a float tensor (C, S) at ``info.sample_rate``, trimmed to the encoded length
(``Encoded.extras["num_samples"]``). The clip is zero-padded to whole frames first, so a clip
shorter than one hop is one frame. Long clips are cut into chunks with left context, and
``encode_batch`` encodes the pieces of many clips together (``batch.py``). ``evaluate`` measures
SI-SNR, log-mel distance and per-codebook usage (``metrics.py``).

A subclass sets ``kind``, ``model_class``, ``arch_config`` (``ModuleTokenizer``) and
``derive_info``; it may override ``_pieces`` and ``_decode_codes`` (EnCodec 48 kHz does, for its
normalised segments). The model has ``sample_rate``, ``channels``, ``hop_length``,
``num_frames(S)``, ``encoder``, ``quantize(latent)`` and ``decode(codes)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tokenize_mm.tokenizers.audio import io as audio_io
from tokenize_mm.tokenizers.audio.batch import encode_pieces, folded_copy
from tokenize_mm.tokenizers.base import Encoded, TokenizerInfo, check_codes, map_batch
from tokenize_mm.tokenizers.errors import InvalidCodesError
from tokenize_mm.tokenizers.module_artifact import ModuleTokenizer
from tokenize_mm.tokenizers.quant.usage import codebook_usage
from tokenize_mm.tokenizers.threads import one_thread


class CodecTokenizer(ModuleTokenizer):
    """A codec model on the tokenizer contract (see the module docstring). Not registered: its
    subclasses are, each with its own artifact kind.

    Args:
        model: the codec model (a ``CodecModel`` or a ``PretrainedEncodec``).
        info: its ``TokenizerInfo``.
        hparams: architecture and fit hyper-parameters (saved in the artifact; see the
            subclass for their layout).
        fit_data: description of the fit data (saved in the artifact).
        chunk_seconds: clips longer than this are encoded chunk by chunk, so that memory stays
            bounded for recordings of any length (see ``encode``).
        context_seconds: audio before each chunk that the encoder sees and whose frames are
            dropped, so that frames near a chunk boundary have the left context of a one-shot
            encode.
        batch_seconds: most audio (pieces × the longest) that ``encode_batch`` puts in one
            forward pass; ``None``: 60 s on the CPU (where larger batches gain nothing), 300 s on
            an accelerator (about 2 GB per activation of the full-width encoder's first layers).
    """

    def __init__(
        self,
        model: nn.Module,
        info: TokenizerInfo,
        hparams: dict[str, Any],
        fit_data: dict[str, Any] | None = None,
        chunk_seconds: float = 30.0,
        context_seconds: float = 1.0,
        batch_seconds: float | None = None,
    ):
        self.model = model.eval()
        self._info = info
        self.hparams = dict(hparams)
        self.fit_data = dict(fit_data or {})
        hop, rate = model.hop_length, model.sample_rate
        # Both are whole numbers of frames, so that chunk boundaries fall on frame boundaries.
        self.chunk = max(1, round(chunk_seconds * rate / hop)) * hop
        self.context = max(0, round(context_seconds * rate / hop)) * hop
        self.batch_seconds = batch_seconds
        self._folded: nn.Module | None = None

    @property
    def batch_samples(self) -> int:
        """Most samples (pieces × the longest) in one forward pass of ``encode_batch``."""
        seconds = self.batch_seconds
        if seconds is None:
            seconds = 60.0 if self.device.type == "cpu" else 300.0
        return max(self.chunk + self.context, round(seconds * self.model.sample_rate))

    @property
    def causal(self) -> bool:
        """Whether the encoder's convolutions are causal (pieces of any length then batch)."""
        return bool(self.hparams.get("causal", True))

    def preprocess(self, item: Any, sample_rate: int | None = None) -> torch.Tensor:
        """One clip → float32 (C, S) at the model's rate and channels (``io.py`` policy)."""
        return audio_io.to_model_input(
            item, sample_rate, target_rate=self.model.sample_rate, channels=self.model.channels
        )

    def encode(self, item: Any, sample_rate: int | None = None) -> Encoded:
        """A path, a ``(tensor, sample_rate)`` pair, or a tensor with ``sample_rate`` → codes
        (K, ceil(S / hop)) and ``extras["num_samples"]`` (S at the model's rate).

        The clip is zero-padded at the end to whole frames (a clip shorter than one frame is one
        frame). A clip longer than ``chunk_seconds`` is encoded in chunks of that length, each
        preceded by ``context_seconds`` of the audio before it (their frames are dropped): memory
        is bounded by the chunk, and the frame count is exactly that of a one-shot encode. With a
        causal codec without LSTM layers and a context longer than its receptive field, the codes
        equal a one-shot encode (tested); with non-causal convolutions the last frames of each
        chunk can differ, and with LSTM layers any frame can, through the LSTM state.
        """
        return self._encode_wavs([self.preprocess(item, sample_rate)])[0]

    def encode_batch(self, items: Sequence[Any]) -> list[Encoded]:
        """Encode many clips in few batched forward passes (``batch.py``), with the codes
        that ``encode`` gives each of them; errors name the index of the item at fault."""
        out: list[Encoded] = []
        pending: list[torch.Tensor] = []
        pending_samples, bound = 0, 4 * self.batch_samples  # bound the memory held at once
        for wav in map_batch(self.preprocess, items):
            pending.append(wav)
            pending_samples += wav.shape[-1]
            if pending_samples >= bound:
                out += self._encode_wavs(pending)
                pending, pending_samples = [], 0
        return out + (self._encode_wavs(pending) if pending else [])

    def _pieces(self, wav: torch.Tensor) -> tuple[list[tuple[torch.Tensor, int]], Any]:
        """A clip (C, S) zero-padded to whole frames → (pieces (C, L) with the number of their
        leading frames to drop, per-segment scales or ``None``)."""
        hop = self.model.hop_length
        padded = F.pad(wav, (0, -wav.shape[-1] % hop))
        spans = []
        for start in range(0, padded.shape[-1], self.chunk):
            left = max(0, start - self.context)
            spans.append((padded[:, left : start + self.chunk], (start - left) // hop))
        return spans, None

    def _encode_wavs(self, wavs: Sequence[torch.Tensor]) -> list[Encoded]:
        """Preprocessed clips (C, S_i) → one ``Encoded`` each, all pieces encoded together."""
        pieces, plan = [], []
        for wav in wavs:
            spans, scale = self._pieces(wav)
            plan.append((wav.shape[-1], [drop for _, drop in spans], scale))
            pieces += [piece for piece, _ in spans]
        on_cpu = self.device.type == "cpu"
        workers = torch.get_num_threads() if on_cpu else 1  # the caller's thread budget
        with one_thread(self.device):  # codes independent of the thread count (threads.py)
            codes = encode_pieces(
                self.inference_model(), pieces, causal=self.causal,
                batch_samples=self.batch_samples, batch_convs=not on_cpu, workers=workers,
            )  # fmt: skip
        out, k = [], 0
        for num_samples, drops, scale in plan:
            parts = [codes[k + j][:, drop:] for j, drop in enumerate(drops)]
            k += len(drops)
            extras = {"num_samples": torch.tensor([num_samples])}
            if scale is not None:
                extras["scale"] = scale
            out.append(Encoded(codes=torch.cat(parts, dim=-1), extras=extras))
        return out

    def inference_model(self) -> nn.Module:
        """The model with weight normalisation folded into plain weights (``batch.py``),
        built on first use and again after the model moves to another device."""
        folded = self._folded
        if folded is None or next(folded.parameters()).device != self.device:
            config = self.arch_config(self.hparams)
            self._folded = folded_copy(self.model, lambda: self.build_model(config))
        return self._folded

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_folded": None}  # rebuilt on first use

    def decode(self, encoded: Encoded) -> torch.Tensor:
        """Codes (K, T) → float32 waveform (C, S) at ``info.sample_rate``."""
        check_codes(encoded, self._info)
        if encoded.num_steps == 0:
            raise InvalidCodesError(
                "codes have 0 frames; encode gives every clip at least one, so these codes were "
                "cut or built by hand: pass codes of shape (K, T) with T >= 1"
            )
        n = _num_samples(encoded)
        if n is not None and self.model.num_frames(n) != encoded.num_steps:
            raise InvalidCodesError(
                f"extras['num_samples'] = {n} needs {self.model.num_frames(n)} frames, codes "
                f"have {encoded.num_steps}; were codes and extras taken from different clips?"
            )
        with torch.inference_mode():
            wav = self._decode_codes(encoded).cpu()
        return (wav[:, :n] if n is not None else wav).clone()

    def _decode_codes(self, encoded: Encoded) -> torch.Tensor:
        """Checked codes (K, T) → waveform (C, T · hop) on the model's device."""
        return self.inference_model().decode(encoded.codes[None].to(self.device))[0]

    def decode_batch(self, encoded: Sequence[Encoded]) -> list[torch.Tensor]:
        return map_batch(self.decode, encoded)

    def evaluate(self, clips: Sequence[torch.Tensor]) -> dict[str, float]:
        """SI-SNR (dB), log-mel L1 distance and per-codebook usage on preprocessed clips (C, S),
        each encoded and decoded as ``encode`` and ``decode`` do."""
        from tokenize_mm.tokenizers.audio.metrics import log_mel_distance, si_snr

        snrs, mels = [], []
        encoded = self._encode_wavs(list(clips))
        for wav, enc in zip(clips, encoded, strict=True):
            y = self.decode(enc)
            snrs.append(si_snr(y, wav))
            mels.append(log_mel_distance(y, wav, self.model.sample_rate))
        all_codes = torch.cat([enc.codes for enc in encoded], dim=1)  # (K, sum T)
        out = {
            "si_snr_db": sum(snrs) / len(snrs),
            "mel_distance": sum(mels) / len(mels),
            "num_eval_clips": float(len(clips)),
        }
        for k in range(all_codes.shape[0]):
            usage = codebook_usage(all_codes[k], self._info.codebook_size)
            out[f"perplexity_{k}"] = float(usage["perplexity"])
            out[f"used_fraction_{k}"] = float(usage["used_fraction"])
        return out


def _num_samples(encoded: Encoded) -> int | None:
    """``extras["num_samples"]`` as an int (``None`` if absent): one whole number >= 1 in an
    integer tensor; a fractional, empty or multi-valued one is refused, never truncated."""
    value = encoded.extras.get("num_samples")
    if value is None:
        return None
    if torch.is_floating_point(value) or value.dtype == torch.bool or value.numel() != 1:
        raise InvalidCodesError(
            f"extras['num_samples'] must hold one whole number of samples in an integer tensor, "
            f"got {value.dtype} of shape {tuple(value.shape)}; use torch.tensor([n])"
        )
    n = int(value.reshape(-1)[0])
    if n < 1:
        raise InvalidCodesError(f"extras['num_samples'] = {n}; a clip has at least one sample")
    return n
