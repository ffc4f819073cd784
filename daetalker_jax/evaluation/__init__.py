"""Evaluation metrics for generated talking-face video (docs/EVALUATION.md, strict mouth metrics), independent of the models.

  image   PSNR, SSIM, temporal jitter; frame range conversions
  series  Pearson r, lagged r and the best lag of per-frame series
  audio   per-frame audio level and the silence mask
  mouth   synthface mouth series (soft and strict), landmark distance, closed-in-silence, mouth strips
  sync    SyncNet LSE-C / LSE-D (joonson/syncnet_python), with its MFCC
  video   all the metrics of one generated clip against its real clip (evaluate, demo)
  report  an evaluation run's per-clip lines, summary table, means and contact sheet

Conventions used by every module here:
- Frames are (..., H, W, 3) RGB, either uint8 0..255 or floating point in [-1, 1] (the model's range).
  Image metrics map both to [0, 1] first (uint8 / 255, float (x + 1) / 2), so PSNR has peak 1.0 -- the
  same number as PSNR with peak 255 on uint8 frames -- and SSIM uses a data range of 1.0.
- Audio is mono 16 kHz, float in [-1, 1] or int16; a video frame is 40 ms = 640 samples (25 fps,
  `daetalker_jax.data.contract`).
- Per-frame series (mouth opening, ...) are 1-D numpy arrays with one value per video frame.
Degenerate inputs (a constant series, no silent frames) give nan with a `RuntimeWarning`, never a crash,
so one odd clip does not stop an evaluation run.
"""
