"""resflax's one logging channel.

Library modules log with ``logging.getLogger(__name__)`` (loggers under ``'resflax'``) and never
print. The ``resflax`` program (``cli.main``, through ``show_on_stderr``) shows those records on
stderr as one line each: ``resflax: warning: ...``, ``resflax: info: ...``. Elsewhere (a notebook,
a script) they go wherever the caller's logging set-up sends them; with none, Python prints the
warnings alone.

``quiet_native_stderr`` keeps the lines that native libraries write straight to file descriptor 2
at start-up (TensorFlow's oneDNN notice and absl's "before absl::InitializeLog()" line, which ignore
``TF_CPP_MIN_LOG_LEVEL``) off the terminal.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys

LOGGER = 'resflax'


class _OneLine(logging.Formatter):
  def format(self, record: logging.LogRecord) -> str:
    return f'resflax: {record.levelname.lower()}: {record.getMessage()}'


class _Stderr(logging.StreamHandler):
  """A handler that writes to ``sys.stderr`` as it is when a record comes (not at set-up: a caller
  that swaps ``sys.stderr``, pytest's ``capsys`` among them, gets the lines)."""

  def __init__(self):
    super().__init__()
    self.setFormatter(_OneLine())

  @property
  def stream(self):
    return sys.stderr

  @stream.setter
  def stream(self, value) -> None:
    del value


def show_on_stderr(level: int = logging.INFO) -> None:
  """resflax's records from ``level`` up, one line each on stderr (once, however often called)."""
  logger = logging.getLogger(LOGGER)
  if not any(isinstance(h, _Stderr) for h in logger.handlers):
    logger.addHandler(_Stderr())
  logger.setLevel(level)


@contextlib.contextmanager
def quiet_native_stderr():
  """File descriptor 2 goes to the null device for the block (e.g. ``import tensorflow``), when
  ``$TF_CPP_MIN_LOG_LEVEL`` asks for fewer native logs (>= 1; the CLI sets 2). A Python exception
  raised in the block still reaches the caller; other threads' stderr in that window is lost."""
  level = os.environ.get('TF_CPP_MIN_LOG_LEVEL', '0').strip()
  if not (level.isdigit() and int(level) >= 1):
    yield
    return
  try:
    sys.stderr.flush()
    saved = os.dup(2)
  except (OSError, ValueError, AttributeError):  # no file descriptor 2 (an embedding host)
    yield
    return
  devnull = os.open(os.devnull, os.O_WRONLY)
  try:
    os.dup2(devnull, 2)
    yield
  finally:
    os.dup2(saved, 2)
    os.close(saved)
    os.close(devnull)
