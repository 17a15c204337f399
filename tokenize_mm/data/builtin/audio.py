"""Audio synthesis for the built-in data: a scene played as a short melody.

Audio clips are short synthetic melodies (mono float32 at 24 kHz by default, ``(wav (1, S),
sample_rate)`` pairs that the audio tokenizer reads as they are): the shape picks the motif (pitch
contour, note count and rhythm: a circle is a smooth four-note arch, a star ten fast high-low
leaps, a ring one note struck eight times) and the colour picks the voice (a register, 3
semitones from the next colour's, and a harmonic mix: blue is hollow odd harmonics, red a bright
sawtooth, green nearly a sine). Tempo (clip length within +-8 %), a pitch offset (+-0.5
semitone), loudness, note accents and a little white noise vary from example to example without
touching the concept. Synthesis is vectorised over samples (numpy).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from tokenize_mm.data.builtin.scenes import RenderOptions, Scene

# Shape -> motif: (pitches in semitones above the colour's base note, note lengths in beats,
# gate = the sounding share of each note). Contour, note count and rhythm all differ by shape.
_MOTIFS: dict[str, tuple[tuple[int, ...], tuple[float, ...], float]] = {
    "circle": ((0, 4, 7, 4), (1, 1, 1, 1), 0.95),  # a smooth arch, legato
    "square": ((0, 0, 7, 7), (1, 1, 1, 1), 0.45),  # two flat blocks, staccato
    "triangle": ((0, 4, 7), (4 / 3, 4 / 3, 4 / 3), 0.9),  # three rising notes
    "star": ((9, 0) * 5, (0.4,) * 10, 0.5),  # five spikes: fast high-low leaps
    "cross": ((7, 0), (2, 2), 0.95),  # two long notes, a falling fifth
    "ring": ((4,) * 8, (0.5,) * 8, 0.6),  # one note rung eight times
    "diamond": ((0, 3, 6, 9, 6, 3), (2 / 3,) * 6, 0.85),  # a pointed climb and descent
    "hexagon": ((9, 7, 5, 4, 2, 0), (2 / 3,) * 6, 0.85),  # six steps down
}
# Colour -> voice: (base note as a MIDI number, amplitudes of harmonics 1, 2, ...). Registers are
# 3 semitones apart and every colour has its own harmonic mix (timbre): two cues for the colour.
_VOICES: dict[str, tuple[int, tuple[float, ...]]] = {
    "blue": (51, (1.0, 0.0, 0.33, 0.0, 0.2, 0.0, 0.14)),  # odd harmonics: hollow, clarinet-like
    "purple": (54, (0.5, 1.0, 0.3, 0.6)),  # the octave dominates
    "red": (57, (1.0, 0.5, 0.33, 0.25, 0.2, 0.17, 0.14, 0.12)),  # sawtooth: bright
    "green": (60, (1.0, 0.15, 0.05)),  # nearly a sine: soft
    "orange": (63, (1.0, 0.0, 0.8, 0.0, 0.5, 0.0, 0.3)),  # strong odd harmonics: reedy
    "yellow": (66, (1.0, 0.7, 0.0, 0.45, 0.0, 0.3)),  # even harmonics
    "pink": (69, (1.0, 0.5, 0.5, 0.25, 0.25)),
    "cyan": (72, (1.0, 0.0, 0.0, 0.2, 0.6)),  # a bell-like fifth harmonic
}
_ATTACK_S, _RELEASE_S = 0.01, 0.03  # note envelope: linear attack and release, in seconds


def render_audio(scene: Scene, options: RenderOptions) -> tuple[torch.Tensor, int]:
    """The scene as a short melody: ``(wav, sample_rate)``, wav float32 (1, S) in [-1, 1].

    The shape picks the motif (contour, note count, rhythm), the colour picks the voice (register
    and harmonic mix). The scene's nuisances vary what does not carry the concept: clip length
    (tempo, S = audio_seconds x stretch x rate), pitch offset, loudness, per-note accents and a
    little white noise. Synthesis is vectorised over samples (numpy).
    """
    rate = options.sample_rate
    pitches, beats, gate = _MOTIFS[scene.shape]
    base, amps = _VOICES[scene.colour]
    rng = np.random.default_rng(scene.audio_seed)
    n = max(1, round(options.audio_seconds * scene.stretch * rate))

    # Which note each sample belongs to, and how far into it (in seconds).
    bounds = np.round(np.concatenate([[0.0], np.cumsum(beats)]) * (n / sum(beats))).astype(int)
    note = np.repeat(np.arange(len(beats)), np.diff(bounds))
    into = (np.arange(n) - bounds[note]).astype(np.float32) / np.float32(rate)
    sounding = (gate / rate * np.diff(bounds)).astype(np.float32)[note]
    envelope = (
        np.clip(into / np.float32(_ATTACK_S), 0.0, 1.0)
        * np.clip((sounding - into) / np.float32(_RELEASE_S), 0.0, 1.0)
        * np.exp(np.float32(-1.5) * into / sounding)  # a gentle decay within each note
        * rng.uniform(0.75, 1.0, len(beats)).astype(np.float32)[note]  # accents
    )

    # Continuous phase through the note changes (accumulated in float64). Harmonics come from
    # the Chebyshev recurrence sin((k+1)p) = 2 cos(p) sin(kp) - sin((k-1)p): one sin and one cos
    # per sample whatever the voice. Harmonics above 0.45 x rate are left out.
    note_freqs = 440.0 * 2.0 ** ((base + scene.detune + np.asarray(pitches) - 69.0) / 12.0)
    freq = note_freqs.astype(np.float32)[note]
    phase = np.mod(np.cumsum(freq, dtype=np.float64) * (2 * math.pi / rate), 2 * math.pi)
    phase = phase.astype(np.float32)
    two_cos, previous, current = 2 * np.cos(phase), np.zeros_like(phase), np.sin(phase)
    wave = np.zeros_like(phase)
    for k, amp in enumerate(amps, start=1):
        keep = k * note_freqs < 0.45 * rate  # per note
        if amp and keep.all():
            wave += np.float32(amp) * current
        elif amp and keep.any():
            wave += (amp * keep).astype(np.float32)[note] * current
        previous, current = current, two_cos * current - previous
    wave *= envelope

    wave *= scene.loudness / max(float(np.abs(wave).max()), 1e-9)
    wave += np.float32(scene.loudness * rng.uniform(0.003, 0.02)) * rng.standard_normal(
        n, dtype=np.float32
    )
    wav = np.clip(wave, -1.0, 1.0).astype(np.float32)
    return torch.from_numpy(wav)[None], rate
