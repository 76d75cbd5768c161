"""The error types of `orchestra.checkpoint`."""


class CheckpointError(ValueError):
  """A checkpoint that cannot be read, written or matched to a state; names the path."""


class StepNotRestored(CheckpointError):
  """One step failed to restore (damaged files, or a state it does not match).

  `step` is the step; a resume may fall back to the step before it.
  """

  def __init__(self, message: str, step: int):
    super().__init__(message)
    self.step = step
