"""The one error type of `orchestra.checkpoint`."""


class CheckpointError(ValueError):
  """A checkpoint that cannot be read, written or matched to a state; names the path."""
