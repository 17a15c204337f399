"""The ``Quantizer`` protocol: what the image VQ and the audio residual VQ have in common.

A quantizer maps channel-last latents z (B, N, dim) to discrete codes and back:

- ``forward(z) -> (quantized, codes, loss)``: the training path. ``quantized`` has z's shape
  with gradients passed straight through to z, ``codes`` are int64, ``loss`` is the weighted
  commitment loss (a float32 scalar). In training mode the codebooks are initialised and updated.
- ``encode(z) -> codes``: never changes a codebook.
- ``decode(codes) -> vectors`` (B, N, dim): the code vectors (their sum for residual stages).
- ``codebook_size``: codes per codebook; ``num_codebooks``: K.

Codes have shape (B, N) for a single codebook (``VectorQuantizer``) and (B, K, N) for K
codebooks (``ResidualVectorQuantizer``). Like ``tokenizers/base.py``'s ``Tokenizer`` this is a
``Protocol``, not a base class: ``isinstance(q, Quantizer)`` checks that the members exist.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from torch import Tensor


@runtime_checkable
class Quantizer(Protocol):
    """Latents (B, N, dim) to codes and back; see the module docstring for shapes."""

    codebook_size: int
    num_codebooks: int

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor, Tensor]: ...

    def encode(self, z: Tensor) -> Tensor: ...

    def decode(self, codes: Tensor) -> Tensor: ...
