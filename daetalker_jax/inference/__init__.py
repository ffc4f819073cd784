"""Inference for every method: one jitted codec per model family, one Pipeline per method.

  from daetalker_jax import inference
  pipeline = inference.load_pipeline('dae_talker', dae=DAE_WORKDIR, s2l=S2L_WORKDIR,
                                     options=inference.Options(steps=20))
  video = pipeline(speech)        # Video(frames=iterator of uint8 batches, num_frames, size, audio, info)

Modules: dae_codec (encode / invert / decode / reconstruct of a DAE), speech2latent (windowed speech →
latents), pose (pose tracks), paste_back, clips (dataset look-ups), loading (validated checkpoints and
audio), pipeline (the Pipeline interface and DAETalkerPipeline); difftalk_codec, face_source (video / photo / clip
faces with landmarks) and difftalk_pipeline (DiffTalkPipeline); landmark_pipeline (LandmarkPipeline, landmark
diffusion with TalkFormer, built on DiffTalk's). generate.py, evaluate.py, extract.py,
demo.py and the DAE task's eval are thin users of these.
"""

from daetalker_jax.inference.difftalk_pipeline import DiffTalkOptions
from daetalker_jax.inference.difftalk_pipeline import DiffTalkPipeline
from daetalker_jax.inference.errors import GenerateError
from daetalker_jax.inference.landmark_pipeline import LandmarkOptions
from daetalker_jax.inference.landmark_pipeline import LandmarkPipeline
from daetalker_jax.inference.pipeline import DAETalkerPipeline
from daetalker_jax.inference.pipeline import Options
from daetalker_jax.inference.pipeline import Pipeline
from daetalker_jax.inference.pipeline import Video

# --method name → pipeline class; each method's checkpoints are its constructor's keyword arguments.
PIPELINES = {
    'dae_talker': DAETalkerPipeline,     # dae=, s2l=, options=Options
    'difftalk': DiffTalkPipeline,        # model=, options=DiffTalkOptions
    'landmark': LandmarkPipeline,        # model=, options=LandmarkOptions
}
METHODS = tuple(PIPELINES)


def load_pipeline(method: str, **kwargs) -> Pipeline:
  """The pipeline of `method` built from its checkpoints/options (GenerateError for an unknown method)."""
  if method not in PIPELINES:
    raise GenerateError(f'--method={method!r}: expected one of {", ".join(METHODS)}')
  return PIPELINES[method](**kwargs)
