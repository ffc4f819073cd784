"""Evaluation metrics (docs/EVALUATION.md): the names of `daetalker_jax.evaluation`'s modules in one namespace.

The metrics live in `daetalker_jax/evaluation/` (image, series, audio, mouth, sync; conventions in its
`__init__`). This module keeps `eval_metrics.<name>` working for the callers that use it.
"""

# pylint: disable=unused-import
from daetalker_jax.data.contract import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME  # noqa: F401
from daetalker_jax.evaluation.audio import frame_rms_dbfs, silence_mask  # noqa: F401
from daetalker_jax.evaluation.image import (  # noqa: F401
    jitter_ratio, psnr, ssim, temporal_jitter, to_unit_range)
from daetalker_jax.evaluation.mouth import (  # noqa: F401
    MOUTH, OUTER_EYE_CORNERS, STRICT_CLOSED_AREA, STRICT_MAX_LAG, STRICT_OPEN_AREA, STRICT_RECALL_RATIO,
    STRICT_TEETH_AREA, lip_sync_correlation, most_open_frames, mouth_closed_in_silence_rate,
    mouth_landmark_distance, mouth_open_series, mouth_strip, save_mouth_strip, strict_mouth_metrics,
    strict_mouth_scores, strict_mouth_series)
from daetalker_jax.evaluation.series import best_lag, lagged_pearson, pearson  # noqa: F401
from daetalker_jax.evaluation.sync import (  # noqa: F401
    load_syncnet, lse_from_embeddings, mfcc, sync_scores, syncnet_embeddings, syncnet_face_crop)
from daetalker_jax.mouth_measure import measure_frame as _measure_frame


def _default_measure_frame():
  """The synthface mouth reader (`daetalker_jax.mouth_measure.measure_frame`); kept for old callers."""
  return _measure_frame
