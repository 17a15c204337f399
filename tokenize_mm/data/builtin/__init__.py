"""Built-in sample data: coloured shapes, drawn, described and played, generated from a seed.

Why it exists: a multimodal pipeline needs data that runs anywhere in seconds (tests, debug
configs, first runs) and on which cross-modal *grounding* is learnable and measurable. Here every
example is about one concept, a colour-shape pair such as "red circle" (8 shapes x 8 colours):
the image draws it, the caption names it and the audio clip plays it, so a model can only predict
the caption's colour and shape words well if it reads the image or hears the clip (and vice
versa). The concept is kept as a label for evaluation (grounding gain, docs/architecture.md §6).

Each example is a pure function of (seed, index): a scene is sampled first, and each modality is
then *rendered* from it by one function. One module per idea:

- ``scenes.py``: the concepts (``SHAPES``, ``COLOURS``), backgrounds and textures; ``Scene`` and
  ``sample_scene``, everything random about one example; ``RenderOptions``.
- ``images.py``: ``render_image``, textured backgrounds and anti-aliased shapes.
- ``captions.py``: ``render_caption``, ``render_paragraph``, ``concept_caption``,
  ``caption_prompts`` and ``scene_captions``.
- ``audio.py``: ``render_audio``, a synthetic melody whose motif is the shape and whose voice is
  the colour.
- ``source.py``: ``BuiltinSource``, the sub-sources (``SOURCES``) and the fingerprint.

Token budget at the default sizes (``make train``'s tokenizers): a trimodal example has about
150 audio tokens (3 s at audio_small's 50 frames per second, K = 1), 256 image tokens
(image_small: 64 px, downsample 4, as many as the default tokenizer gives a real 256 px image)
and 15 text tokens (text_small: a 512-piece SentencePiece model fitted on the default source's
train split; its captions are 8 to 22 pieces), i.e. audio : image : text = 9.9 : 17 : 1. The
image is the longest span: with downsample 8 (64 tokens, 9.9 : 4.2 : 1, audio longest) the codes
lost the shapes (docs/results/concept_probe_grid.md). The image-to-text ratio is fixed by those
two tokenizers; ``audio_seconds`` sets the audio one. Measured over the 128 trimodal examples of
``BuiltinSource()``: mean ``len(text_tok.encode(caption))``, and ``ceil(S * 50 / 24000)`` for
the audio.

Generation is vectorised (numpy over samples): the 512 default examples, all four sub-sources,
take about a second on a 2-core CPU, most of it for the audio.
"""

from tokenize_mm.data.builtin.audio import render_audio
from tokenize_mm.data.builtin.captions import (
    caption_prompts,
    concept_caption,
    render_caption,
    render_paragraph,
    scene_captions,
)
from tokenize_mm.data.builtin.images import render_image
from tokenize_mm.data.builtin.scenes import (
    BACKGROUNDS,
    COLOURS,
    SHAPES,
    TEXTURES,
    RenderOptions,
    Scene,
    sample_scene,
)
from tokenize_mm.data.builtin.source import SOURCES, BuiltinSource, Renderer

_sample_scene = sample_scene  # the name it had in builtin.py, which tests import

__all__ = [
    "BACKGROUNDS",
    "COLOURS",
    "SHAPES",
    "SOURCES",
    "TEXTURES",
    "BuiltinSource",
    "RenderOptions",
    "Renderer",
    "Scene",
    "caption_prompts",
    "concept_caption",
    "render_audio",
    "render_caption",
    "render_image",
    "render_paragraph",
    "sample_scene",
    "scene_captions",
]
