"""Errors that a user can fix: the CLI prints them as one line and exits non-zero."""


class ResflaxError(Exception):
  """Base class: bad input that the user can fix. The message names the problem and the fix."""


class ConfigError(ResflaxError):
  """A missing config file, an unknown key or a value of the wrong type."""


class UnknownNameError(ResflaxError):
  """An unknown model or dataset name."""


class DatasetNotFoundError(ResflaxError):
  """A dataset that is neither on disk nor downloadable (offline)."""


class ShapeMismatchError(ResflaxError):
  """The dataset's examples do not fit the model's input."""


class WorkdirError(ResflaxError):
  """A workdir that holds a different run, or that cannot be written."""


class CheckpointError(ResflaxError):
  """A missing, truncated or corrupt checkpoint."""


class NonFiniteLossError(ResflaxError):
  """The training loss became NaN or Inf."""


class DistributedError(ResflaxError):
  """jax.distributed could not start (an unreachable coordinator, wrong process settings)."""


class CheckpointSaveError(CheckpointError):
  """A checkpoint could not be written (a full disk, a lost bucket): the run stops at once."""

  exit_code = 1  # not a usage error: the same command resumes once the cause is fixed
