"""Which part of the concept does a trained model's image embedding hold? Zero-shot with the
nuisance held fixed.

The image embedding of a contrastive model can find its own caption among a batch's by what the
caption says besides the concept (background, texture, place, size). This probe takes that away:
for each held-out built-in image it builds the 64 concepts' prototypes from captions of *the
image's own scene* with each concept swapped in (every caption template, embeddings averaged), so
that the prototypes differ only in the concept's words, and reports top-1 accuracy for the
concept, its colour and its shape (chance 1/64, 1/8, 1/8), beside the caption ensemble of
``caption_prompts`` (nuisance averaged out instead).

    .venv/bin/python benchmarks/nuisance_probe.py <out_dir>/model [--examples 64] [--seed 1000]

``<out_dir>/model`` is what ``tmm-train contrastive=clip`` writes (``models/bundle.py``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json

import torch


def main(argv: list[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("model", help="a trained model folder with a contrastive head")
    p.add_argument("--examples", type=int, default=64, help="held-out tri-modal examples")
    p.add_argument("--seed", type=int, default=1000, help="their BuiltinSource seed")
    args = p.parse_args(argv)
    from tokenize_mm.data.builtin import (
        BuiltinSource,
        caption_prompts,
        sample_scene,
        scene_captions,
    )
    from tokenize_mm.evaluation import SpanEmbedder
    from tokenize_mm.evaluation.embedding import class_embeddings
    from tokenize_mm.models.bundle import ModelFolderError, load_trained_model

    trained = load_trained_model(args.model)
    if trained.head is None:
        raise ModelFolderError(f"{args.model}: trained without contrastive=clip, nothing to embed")
    embed = SpanEmbedder(trained.model, trained.head.eval(), trained.layout, truncate=True)
    text, image = trained.tokenizers["text"], trained.tokenizers["image"]
    source = BuiltinSource(num_examples=args.examples, seed=args.seed, sources=("trimodal",),
                           image_size=image.info.image_size or 64)  # fmt: skip
    concepts = BuiltinSource.concepts()
    seen: dict[str, torch.Tensor] = {}  # prompts recur across images: embed each once

    def embed_text(prompt: str) -> torch.Tensor:
        if prompt not in seen:
            seen[prompt] = embed("text", [text.encode(prompt).codes])
        return seen[prompt]

    def own_scene(scene) -> dict[str, list[str]]:
        """Each concept's captions of ``scene``, the concept swapped in."""
        return {c: scene_captions(dataclasses.replace(scene, colour=c.split()[0],
                                                      shape=c.split()[1])) for c in concepts}  # fmt: skip

    hits = {"ensemble": 0.0, "own_scene": 0.0, "own_scene_colour": 0.0, "own_scene_shape": 0.0}
    with torch.no_grad():
        _, ensemble = class_embeddings(embed_text, {c: caption_prompts(c) for c in concepts})
        images = [source.example_at(i).image for i in range(args.examples)]
        for index, enc in enumerate(image.encode_batch(images)):
            scene = sample_scene(args.seed, index)  # what example_at(index) rendered
            v = embed("image", [enc.codes])
            truth = (scene.colour, scene.shape)
            hits["ensemble"] += concepts[int((ensemble @ v).argmax())] == " ".join(truth)
            _, own = class_embeddings(embed_text, own_scene(scene))
            colour, shape = concepts[int((own @ v).argmax())].split()
            hits["own_scene"] += (colour, shape) == truth
            hits["own_scene_colour"] += colour == truth[0]
            hits["own_scene_shape"] += shape == truth[1]
    result = {k: v / args.examples for k, v in hits.items()} | {"examples": args.examples}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
