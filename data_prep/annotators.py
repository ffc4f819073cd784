"""Frame annotators: the pluggable crop / landmarks / pose step of `data_prep.prepare`, and their registry.

An annotator is chosen by name (`--crop NAME[:ARG]`): `get(NAME)(ARG, size)` builds it. Modules add
annotators with the `register` decorator; `prepare` registers `none`, `face` and `box`, and
`data_prep.face` registers `auto`, which `get('auto')` imports on first use (face detection is heavy).

    @annotators.register('mine')
    class MyAnnotator(annotators.FrameAnnotator):
      def __init__(self, arg: str, size: int): ...
      def annotate_frame(self, frame, index): return annotators.Annotation(box=(0, 0, 64, 64))
"""

from __future__ import annotations

import dataclasses
import importlib
import pathlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np


class AnnotatorError(ValueError):
  """An annotator cannot be chosen or built; the message is one line meant for the user."""


@dataclasses.dataclass
class Annotation:
  """What an annotator says about one frame.

  box: (x0, y0, x1, y1) crop in source pixels (square; may extend past the frame, padded black).
  landmarks: float (68, 2) in source pixels, or None when unknown.
  pose: float (3,) yaw, pitch, roll in degrees, or None (stored as zeros).
  drop: a short reason ('no_face', ...) to drop this frame; the current clip ends here.
  """
  box: tuple[float, float, float, float] | None = None
  landmarks: np.ndarray | None = None
  pose: np.ndarray | None = None
  drop: str | None = None


class FrameAnnotator:
  """Base class. `prepare` calls `begin` per video, `annotate` over its frame stream, then `end`.

  `annotate` must yield exactly one (frame, Annotation) per input frame, in order (it may look
  ahead, e.g. to smooth boxes over time, as long as it yields every frame). Subclasses that need
  no look-ahead implement `annotate_frame` only.
  """

  def begin(self, source: pathlib.Path, info: Any) -> None:
    """Called before the frames of `source` (`info`: its `video_io.VideoInfo`); raise VideoError to skip it."""
    del source, info

  def annotate(self, frames: Iterator[np.ndarray]) -> Iterator[tuple[np.ndarray, Annotation]]:
    for index, frame in enumerate(frames):
      yield frame, self.annotate_frame(frame, index)

  def annotate_frame(self, frame: np.ndarray, index: int) -> Annotation:
    raise NotImplementedError

  def end(self) -> dict:
    """Per-source notes for the manifest (e.g. warnings); called after the last frame."""
    return {}


Factory = Callable[[str, int], FrameAnnotator]  # (argument after 'name:', crop size) -> annotator

_REGISTRY: dict[str, Factory] = {}
# Annotators whose module registers them when imported; imported by `get` on first use.
_PLUGINS = {'auto': 'data_prep.face'}


def register(name: str) -> Callable[[Factory], Factory]:
  """Decorator: makes `get(name)` return the decorated factory (a FrameAnnotator subclass or a function)."""
  def add(factory: Factory) -> Factory:
    _REGISTRY[name] = factory
    return factory
  return add


def names() -> list[str]:
  """Every annotator name, registered or loadable."""
  return sorted(set(_REGISTRY) | set(_PLUGINS))


def get(name: str) -> Factory:
  """The factory registered as `name`; an AnnotatorError (one line, listing the choices) when unknown."""
  if name not in _REGISTRY and name in _PLUGINS:
    module = _PLUGINS[name]
    try:
      importlib.import_module(module)
    except ModuleNotFoundError as e:
      raise AnnotatorError(f'annotator {name!r} needs {module}, which needs a missing module ({e.name})') from None
    if name not in _REGISTRY:
      raise AnnotatorError(f'{module} did not register the annotator {name!r}')
  if name not in _REGISTRY:
    raise AnnotatorError(f'unknown annotator {name!r}; choose from {", ".join(names())}')
  return _REGISTRY[name]
