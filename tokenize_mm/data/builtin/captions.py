"""Captions and paragraphs for the built-in data: a scene described in English.

A caption is one line naming the scene's colour and shape (and sometimes its size, position or
background), from several templates; a paragraph is three to five sentences about the concept,
longer than a caption. The templates give a text tokenizer some variety. ``concept_caption`` is
the caption that names nothing but the concept: the candidates of zero-shot evaluation;
``caption_prompts`` a concept's captions over sampled scenes: a prompt ensemble;
``scene_captions`` one scene's caption by every template.
"""

from __future__ import annotations

import dataclasses
import math

from tokenize_mm.data.builtin.scenes import (
    BACKGROUNDS,
    COLOURS,
    SHAPES,
    TEXTURES,
    RenderOptions,
    Scene,
    sample_scene,
)
from tokenize_mm.data.errors import DataError


def _a(word: str) -> str:
    """``word`` with its indefinite article: "a red", "an orange"."""
    return f"{'an' if word[0] in 'aeiou' else 'a'} {word}"


_WHERE = {  # position word -> phrase; the four corners use "in the top left corner"
    "centre": "in the middle",
    "top": "at the top",
    "bottom": "at the bottom",
    "left": "on the left",
    "right": "on the right",
}
_CAPTIONS = (
    "{a_colour} {shape} on a {bg} background",
    "there is a {size} {colour} {shape} near the {pos}",
    "{a_size} {colour} {shape} {where}",
    "this picture shows {a_colour} {shape}",
    "{a_colour} {shape} on a {tex} {bg} background",
    "the {shape} is {colour} and sits near the {pos}",
    "a {bg} background with {a_size} {colour} {shape}",
    "you can see {a_colour} {shape} {where} of the picture",
)

_OPENERS = (
    "This note is about {a_colour} {shape}.",
    "Think of {a_colour} {shape}.",
    "Here is a short description of {a_colour} {shape}.",
    "The {colour} {shape} is a simple figure.",
)
_SHAPE_FACTS = {
    "circle": ("A circle has no corners at all.", "A circle looks the same however you turn it."),
    "square": ("A square has four equal sides.", "Every corner of a square is a right angle."),
    "triangle": (
        "A triangle has three sides and three corners.",
        "A triangle can point up like a roof.",
    ),
    "star": ("A star has five sharp points.", "The points of a star spread out from its middle."),
    "cross": (
        "A cross is made of two bars that meet in the middle.",
        "A cross looks like a plus sign.",
    ),
    "ring": ("A ring is a circle with a hole in the middle.", "A ring is round and hollow."),
    "diamond": (
        "A diamond is a tall shape that stands on one tip.",
        "A diamond has four sides and two sharp tips.",
    ),
    "hexagon": ("A hexagon has six sides.", "A hexagon looks like a cell of a honeycomb."),
}
_COLOUR_FACTS = {
    "red": ("Red is the colour of a ripe tomato.", "Red is the colour of a stop sign."),
    "green": ("Green is the colour of fresh grass.", "Green is the colour of a leaf in spring."),
    "blue": ("Blue is the colour of a clear sky.", "Blue is the colour of the deep sea."),
    "yellow": ("Yellow is the colour of a lemon.", "Yellow is the colour of the sun in a drawing."),
    "orange": ("Orange is the colour of a carrot.", "Orange is the colour of autumn leaves."),
    "purple": ("Purple is the colour of a plum.", "Purple is the colour of lavender flowers."),
    "pink": ("Pink is the colour of a flamingo.", "Pink is the colour of cherry blossom."),
    "cyan": ("Cyan is the colour of shallow tropical water.", "Cyan sits between green and blue."),
}
_CLOSERS = (
    "On a {bg} background the {colour} {shape} is easy to spot.",
    "If you turn the {shape} a little, it is still {a_colour} {shape}.",
    "A small {colour} {shape} can hide in a corner, while a large one fills the picture.",
    "Children often draw {a_colour} {shape} first.",
    "You could paint {a_colour} {shape} with a single brush stroke.",
)


def _words(scene: Scene) -> dict[str, str]:
    return {
        "colour": scene.colour,
        "shape": scene.shape,
        "a_colour": _a(scene.colour),
        "size": scene.size_word,
        "a_size": _a(scene.size_word),
        "pos": scene.position_word,
        "where": _WHERE.get(scene.position_word, f"in the {scene.position_word} corner"),
        "bg": scene.background,
        "tex": TEXTURES[scene.texture],
    }


def concept_caption(concept: str) -> str:
    """The caption of a concept, ``"<colour> <shape>"`` → "this picture shows a red circle".

    One of the caption templates (the one that names nothing but the concept): the candidate
    captions of zero-shot evaluation (``tokenize_mm.evaluation.zero_shot``).

    Raises:
        DataError: ``concept`` is not one of ``BuiltinSource.concepts()``.
    """
    colour, _, shape = concept.partition(" ")
    if colour not in COLOURS or shape not in SHAPES:
        raise DataError(f"unknown concept {concept!r}; concepts are BuiltinSource.concepts()")
    return f"this picture shows {_a(colour)} {shape}"


def caption_prompts(concept: str, count: int = 16, seed: int = 0) -> list[str]:
    """``count`` captions of ``concept`` as the caption templates write them: the prompts of a
    caption ensemble for zero-shot classification by embedding.

    Template i % 8 for the i-th caption; size, position, rotation, background and texture drawn
    from the scenes of ``seed`` (the prompt seed, not an evaluation seed), the background kept
    apart from the shape colour as ``sample_scene`` does. Averaging their embeddings gives the
    concept's mean caption with what the concept leaves open (where, how large, on what)
    averaged out: CLIP's prompt ensembling with the training captions' own templates.

    Raises:
        DataError: ``concept`` is not one of ``BuiltinSource.concepts()``; ``count`` < 1.
    """
    concept_caption(concept)  # checks the concept
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise DataError(f"count must be a positive int, got {count!r}")
    colour, _, shape = concept.partition(" ")
    backgrounds = [b for b in BACKGROUNDS if math.dist(BACKGROUNDS[b], COLOURS[colour]) > 110]
    prompts = []
    for i in range(count):
        scene = sample_scene(seed, i)
        scene = dataclasses.replace(
            scene, colour=colour, shape=shape,
            background=backgrounds[scene.choices[1] % len(backgrounds)],
        )  # fmt: skip
        prompts.append(_CAPTIONS[i % len(_CAPTIONS)].format(**_words(scene)))
    return prompts


def scene_captions(scene: Scene) -> list[str]:
    """The scene's caption by every template, in template order (``render_caption`` picks one)."""
    return [t.format(**_words(scene)) for t in _CAPTIONS]


def render_caption(scene: Scene, options: RenderOptions) -> str:
    """A one-line caption naming the scene's colour and shape (and sometimes more)."""
    return _CAPTIONS[scene.choices[0] % len(_CAPTIONS)].format(**_words(scene))


def render_paragraph(scene: Scene, options: RenderOptions) -> str:
    """Three to five sentences about the scene's concept: longer than a caption."""
    c = scene.choices
    shape_facts, colour_facts = _SHAPE_FACTS[scene.shape], _COLOUR_FACTS[scene.colour]
    sentences = [
        _OPENERS[c[1] % len(_OPENERS)],
        shape_facts[c[2] % len(shape_facts)],
        colour_facts[c[3] % len(colour_facts)],
    ]
    if c[4] % 3:  # two out of three paragraphs get a closing sentence...
        sentences.append(_CLOSERS[c[4] % len(_CLOSERS)])
    if c[5] % 2:  # ...and half get the other fact about the shape
        sentences.insert(2, shape_facts[(c[2] + 1) % len(shape_facts)])
    return " ".join(sentences).format(**_words(scene))
