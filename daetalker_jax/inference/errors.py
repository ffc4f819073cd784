"""The one error type of the inference layer."""


class GenerateError(ValueError):
  """Unusable input for inference (generation, evaluation); the message is one line naming the file or
  option and the problem."""
