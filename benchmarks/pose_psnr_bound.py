"""What a head pose other than the clip's own costs in PSNR, on synthface (the mouth-quality issue's PSNR target).

  python -m benchmarks.pose_psnr_bound --out runs/pose_bound            # the quality preset's clips 10-13

synthface draws each clip's yaw/pitch/roll as smooth random noise whose *amplitude* follows the speech energy
(data_prep/synthface.pose_tracks): the direction of a head turn is not in the audio, so the best a pose predicted
from audio can do is, on average, no turn at all. This renders clips with everything else true (mouth, blink,
identity: a perfect face model) and the pose replaced, at the demo dataset's resolution (the whole 128-px frame
shrunk to 64 px with INTER_AREA, as data_prep.prepare does), and scores them against the true frames with the
evaluation's own PSNR/SSIM (daetalker_jax/evaluation/image.py). Writes OUT/pose_bound.json and OUT/pose_bound.png
(true frames above the same frames rendered frontal, at the frames of largest head turn). docs/RESULTS.md has the
numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
from typing import Callable

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))

import cv2  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top

from daetalker_jax.evaluation import image  # pylint: disable=g-import-not-at-top
from data_prep import synthface  # pylint: disable=g-import-not-at-top
from data_prep import synthface_render  # pylint: disable=g-import-not-at-top

_POSE = ('yaw', 'pitch', 'roll')
_KEYS = ('mouth_open', 'mouth_width', 'blink') + _POSE


def render(sidecar: dict, pose: Callable[[int, dict], dict], size: int) -> np.ndarray:
  """The clip's frames (N, size, size, 3) uint8 with pose(i, frame_values) overriding the head pose."""
  f, out = sidecar['frames'], []
  for i in range(sidecar['num_frames']):
    kw = {k: f[k][i] for k in _KEYS}
    kw.update(pose(i, kw))
    img = synthface_render.render_frame(sidecar['size'], identity=sidecar.get('identity_params'), **kw)
    out.append(cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA))
  return np.stack(out)


def variants(sidecar: dict) -> dict[str, Callable[[int, dict], dict]]:
  f, n = sidecar['frames'], sidecar['num_frames']
  mean = {k: float(np.mean(f[k])) for k in _POSE}
  return {
      'frontal (pose 0: the best guess from audio)': lambda i, kw: dict.fromkeys(_POSE, 0.0),
      "the clip's mean pose (an oracle constant)": lambda i, kw: mean,
      'true pose x 0.5': lambda i, kw: {k: 0.5 * kw[k] for k in _POSE},
      'true pose + 2 deg yaw': lambda i, kw: dict(yaw=kw['yaw'] + 2.0),
      'true pose + 4 deg (yaw and pitch 2.8 each)': lambda i, kw: dict(yaw=kw['yaw'] + 8 ** .5,
                                                                       pitch=kw['pitch'] + 8 ** .5),
      'the true track played backwards': lambda i, kw: {k: f[k][n - 1 - i] for k in _POSE},
  }


def main(argv: list[str] | None = None) -> dict:
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--out', required=True)
  p.add_argument('--clips', type=int, nargs='+', default=[10, 11, 12, 13],
                 help='synthface clip indices (the quality preset held out clip 10)')
  p.add_argument('--seed', type=int, default=0)
  p.add_argument('--seconds', type=float, default=6.0)
  p.add_argument('--video-size', type=int, default=128)
  p.add_argument('--image-size', type=int, default=64)
  args = p.parse_args(argv)
  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)

  scores: dict[str, list[tuple[float, float]]] = {}
  strip = None
  for idx in args.clips:
    sc = synthface.make_clip(idx, seconds=args.seconds, size=args.video_size, seed=args.seed)['sidecar']
    true = render(sc, lambda i, kw: {}, args.image_size)
    for name, fn in variants(sc).items():
      gen = render(sc, fn, args.image_size)
      scores.setdefault(name, []).append((image.psnr(gen, true), image.ssim(gen, true)))
      if strip is None:   # the first clip, frontal: the 8 frames of largest head turn
        turn = np.abs(np.asarray([sc['frames'][k] for k in _POSE])).sum(0)
        pick = np.sort(np.argsort(turn)[-8:])
        strip = np.concatenate([np.concatenate(list(true[pick]), 1), np.concatenate(list(gen[pick]), 1)], 0)
    print(f'[pose bound] clip {idx}: ' + ', '.join(f'{k} sd {np.std(sc["frames"][k]):.1f} deg' for k in _POSE),
          flush=True)
  res = {name: dict(psnr=float(np.mean([s[0] for s in v])), ssim=float(np.mean([s[1] for s in v])),
                    psnr_per_clip=[round(s[0], 2) for s in v]) for name, v in scores.items()}
  res['_setup'] = vars(args)
  (out / 'pose_bound.json').write_text(json.dumps(res, indent=1))
  cv2.imwrite(str(out / 'pose_bound.png'), cv2.cvtColor(strip, cv2.COLOR_RGB2BGR))
  for name, r in res.items():
    if not name.startswith('_'):
      print(f'[pose bound] {name:45s} PSNR {r["psnr"]:5.2f} dB  SSIM {r["ssim"]:.3f}')
  print(f'[pose bound] wrote {out}/pose_bound.json, pose_bound.png')
  return res


if __name__ == '__main__':
  main()
