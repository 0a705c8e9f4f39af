"""``donkey_tub``: Donkeycar tub folders (the driving data a Donkeycar records) as a tfds dataset.

  resflax train --config experiments/configs/steering_conv_shortcut.py \
      --config.dataset=donkey_tub --config.tubs=data/tub_1,data/tub_2 --workdir runs/car

The formats are those of donkeycar's own writers (read from the donkeycar 5.1.0 sources):

- **tub v2** (donkeycar >= 4.0; ``donkeycar/parts/tub_v2.py`` ``Tub.write_record`` and
  ``donkeycar/parts/datastore_v2.py`` ``Manifest`` / ``Catalog``): ``manifest.json`` holds five
  JSON lines (inputs, types, user metadata, manifest metadata with the sessions, and catalog
  metadata ``{"paths": [...], "current_index": n, "max_len": m, "deleted_indexes": [...]}``); the
  records are JSON lines in the ``catalog_<k>.catalog`` files named in ``paths``, in order (each
  with a ``catalog_<k>.catalog_manifest`` of line lengths, not needed to read it). A record's index
  is its position over all catalogs (``ManifestIterator``), which is also its ``_index`` field;
  indexes in ``deleted_indexes`` are skipped. A record holds ``cam/image_array`` (a file name in
  ``images/``, e.g. ``12_cam_image_array_.jpg``), ``user/angle``, ``user/throttle``, ``user/mode``,
  ``_index``, ``_session_id`` (e.g. ``24-05-01_0``: one per ``donkey drive`` run) and
  ``_timestamp_ms``.
- **tub v1** (donkeycar < 4.0; ``donkeycar/parts/datastore.py`` ``Tub.put_record``):
  ``meta.json``, one ``record_<n>.json`` per record and the jpgs (``<n>_cam-image_array_.jpg``) in
  the same folder; ``exclude.json`` (a JSON list) holds the deleted indexes.

Labels are ``user/angle`` (the steering angle in [-1, 1]); ``user/throttle`` is kept as a feature.
Images are decoded with PIL, as donkeycar's ``utils.load_image`` does, and stored as raw pixels
(about 58 KB a frame on disk, as in memory; TF's own JPEG decoder differs from PIL's by up to 4
levels).

Unlike donkeycar, which logs and skips a catalog line it cannot parse and silently resizes an image
of another size, any bad record is an error (``TubError``) that names the file and the record:
an empty or missing tub, a line that does not parse, a missing, unreadable or wrong-size image, an
angle that is missing, not a number, NaN or outside [-1, 1]. With ``--config.skip_bad_records=True``
bad records are skipped instead, with one warning that gives the count.

Train / validation split (``--config.validation_split=f``, which must be > 0): deterministic, by
record (``--config.tub_split=record``: the ``round(f * n)`` records with the smallest hash of
``<tub folder name>/<index>`` are held out) or by session (``--config.tub_split=session``: whole
drives, in the order of the hash of ``<tub folder name>/<_session_id>``, each held out if that
brings the held-out count closer to ``f * n``, so frames of one drive never land on both sides; a
v1 tub counts as one session).
The split does not depend on where the tubs are, and a record keeps its side when a tub grows (by
record) or when sessions are added (mostly; by session).

The prepared dataset lives in the tfds data dir under ``donkey_tub/tubs-<fingerprint>``: the
fingerprint covers the tub paths, their catalogs and image files and the options, so a changed tub
is read again and an unchanged one is not.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import pathlib
import re
import warnings

import numpy as np
import tensorflow_datasets as tfds

from resflax.errors import ConfigError, ResflaxError

IMAGE_SHAPE = (120, 160, 3)  # Donkeycar's default camera frame: IMAGE_H, IMAGE_W, IMAGE_DEPTH
IMAGE_KEY, ANGLE_KEY, THROTTLE_KEY = 'cam/image_array', 'user/angle', 'user/throttle'
SPLIT_BY = ('record', 'session')
_V1_RECORD = re.compile(r'record_(\d+)\.json')


class TubError(ResflaxError):
  """A tub that is missing, empty or holds a bad record; the message names the file and record."""


@dataclasses.dataclass(frozen=True)
class Record:
  """One driving record of a tub: where its frame is, its labels and where it came from."""

  tub: str  # the tub folder, as given
  index: int  # donkeycar's record index
  image: str  # path of the frame
  angle: float
  throttle: float  # NaN when the record has none
  session: str  # '<tub folder name>/<_session_id>' (v2) or '<tub folder name>' (v1)
  where: str  # for messages: 'tub/catalog_0.catalog line 4 (record 3)'


class BadRecord(Exception):
  """Internal: a record that cannot be used; turned into a TubError or a skip by ``read_tubs``."""


# --- reading ------------------------------------------------------------------------------------

def tub_version(path: pathlib.Path) -> int:
  """2 for a tub v2 folder, 1 for a v1 folder; a TubError if ``path`` is no tub."""
  if not path.exists():
    raise TubError(f'tub {str(path)!r} does not exist: check --config.tubs (comma-separated tub '
                   'folders, each holding manifest.json or record_*.json)')
  if not path.is_dir():
    raise TubError(f'tub {str(path)!r} is not a folder: --config.tubs takes tub folders')
  if (path / 'manifest.json').is_file():
    return 2
  if (path / 'meta.json').is_file() or any(_V1_RECORD.fullmatch(p.name) for p in path.iterdir()):
    return 1
  raise TubError(f'tub {str(path)!r} is empty or not a Donkeycar tub: it has neither manifest.json '
                 '(tub v2, donkeycar >= 4) nor record_*.json files (tub v1)')


def _json_lines(path: pathlib.Path) -> list[str]:
  try:
    text = path.read_text(encoding='utf-8')
  except FileNotFoundError:
    raise TubError(f'{path} is missing') from None
  except (OSError, UnicodeDecodeError) as e:
    raise TubError(f'{path} cannot be read ({e})') from None
  return text.split('\n')[:-1] if text.endswith('\n') else text.split('\n')


def _v2_manifest(tub: pathlib.Path) -> dict:
  """The catalog metadata (5th line) of ``tub/manifest.json``."""
  path = tub / 'manifest.json'
  lines = _json_lines(path)
  try:
    meta = json.loads(lines[4])
    paths, deleted = meta['paths'], meta.get('deleted_indexes', [])
    if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
      raise TypeError('"paths" is not a list of file names')
    if not isinstance(deleted, list) or not all(isinstance(i, int) for i in deleted):
      raise TypeError('"deleted_indexes" is not a list of integers')
  except (IndexError, ValueError, KeyError, TypeError) as e:
    raise TubError(f'{path} is not a Donkeycar tub v2 manifest (line 5 must be the catalog '
                   f'metadata {{"paths": [...], "deleted_indexes": [...], ...}}: {e})') from None
  return {'paths': paths, 'deleted': set(deleted)}


def _label(record: dict, key: str, where: str, required: bool) -> float:
  value = record.get(key)
  if value is None:
    if required:
      raise BadRecord(f'{where} has no {key!r}')
    return math.nan
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    raise BadRecord(f'{where}: {key!r} is {value!r}, not a number')
  if required and not -1.0 <= value <= 1.0:  # also catches NaN
    raise BadRecord(f'{where}: {key!r} is {value!r}, outside [-1, 1]')
  return float(value)


def _record(tub: pathlib.Path, index: int, line: str, image_dir: pathlib.Path, session: str | None,
            where: str) -> Record:
  try:
    record = json.loads(line)
  except ValueError as e:
    raise BadRecord(f'{where} does not parse as JSON ({e})') from None
  if not isinstance(record, dict):
    raise BadRecord(f'{where} is {type(record).__name__}, not a JSON object')
  name = record.get(IMAGE_KEY)
  if not isinstance(name, str) or not name:
    raise BadRecord(f'{where} has no {IMAGE_KEY!r} image file name')
  angle = _label(record, ANGLE_KEY, where, required=True)
  throttle = _label(record, THROTTLE_KEY, where, required=False)
  if session is None:  # v2: the drive the record belongs to (absent in tubs of donkeycar 4.0)
    session = f"{tub.name}/{record.get('_session_id', '')}"
  return Record(str(tub), index, str(image_dir / name), angle, throttle, session, where)


def _read_v2(tub: pathlib.Path):
  """Yields (record or BadRecord) for each non-deleted line of the tub's catalogs, in order."""
  manifest = _v2_manifest(tub)
  index = 0
  for name in manifest['paths']:
    catalog = tub / name
    for number, line in enumerate(_json_lines(catalog), 1):
      where = f'{catalog} line {number} (record {index})'
      if index not in manifest['deleted']:
        try:
          yield _record(tub, index, line, tub / 'images', None, where)
        except BadRecord as e:
          yield e
      index += 1


def _read_v1(tub: pathlib.Path):
  """Yields (record or BadRecord) for each ``record_<n>.json`` not in ``exclude.json``, by n."""
  exclude = set()
  if (tub / 'exclude.json').is_file():
    try:
      exclude = set(json.loads((tub / 'exclude.json').read_text()))
    except (ValueError, TypeError) as e:
      raise TubError(f'{tub / "exclude.json"} is not a JSON list of record indexes ({e})') from None
  numbered = sorted((int(m.group(1)), p) for p in tub.iterdir()
                    if (m := _V1_RECORD.fullmatch(p.name)))
  for index, path in numbered:
    if index in exclude:
      continue
    where = f'{path} (record {index})'
    try:
      line = path.read_text(encoding='utf-8')
    except (OSError, UnicodeDecodeError) as e:
      yield BadRecord(f'{where} cannot be read ({e})')
      continue
    try:
      yield _record(tub, index, line, tub, tub.name, where)
    except BadRecord as e:
      yield e


def load_image(record: Record) -> np.ndarray:
  """The record's frame, uint8 [120, 160, 3], decoded by PIL as donkeycar does; else BadRecord."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  try:
    with Image.open(record.image) as image:
      array = np.asarray(image)
  except FileNotFoundError:
    raise BadRecord(f'{record.where}: image {record.image} is missing') from None
  except (OSError, ValueError, Image.DecompressionBombError) as e:
    raise BadRecord(f'{record.where}: image {record.image} cannot be decoded ({e})') from None
  if array.shape != IMAGE_SHAPE or array.dtype != np.uint8:
    raise BadRecord(f'{record.where}: image {record.image} is {array.dtype} {array.shape}, not '
                    f'uint8 {IMAGE_SHAPE} (height, width, RGB) as the model takes')
  return array


def read_tubs(tubs: list[str] | tuple[str, ...], skip_bad_records: bool = False,
              check_images: bool = True) -> tuple[list[Record], int]:
  """The good records of ``tubs`` in order, and the number skipped (0 unless ``skip_bad_records``).

  Every record's frame is decoded once (``check_images``) to check it. A bad record raises a
  TubError naming it, or is skipped with ``skip_bad_records``; a tub with no good record left is
  always an error.
  """
  if not tubs:
    raise TubError('no tubs given: set --config.tubs=PATH[,PATH...] (Donkeycar tub folders)')
  records, skipped, first_bad = [], 0, None
  for tub in tubs:
    path = pathlib.Path(tub)
    reader = _read_v2 if tub_version(path) == 2 else _read_v1
    count = 0
    for item in reader(path):
      if isinstance(item, Record) and check_images:
        try:
          load_image(item)
        except BadRecord as e:
          item = e
      if isinstance(item, BadRecord):
        if not skip_bad_records:
          raise TubError(f'{item}; fix or delete the record (donkey tubclean), or set '
                         '--config.skip_bad_records=True to skip bad records') from None
        skipped, first_bad = skipped + 1, first_bad or str(item)
        continue
      records.append(item)
      count += 1
    if not count:
      raise TubError(f'tub {tub!r} has no records' + (' left after skipping bad ones' if skipped
                                                      else ' (all deleted, or none written)'))
  if skipped:
    warnings.warn(f'skipped {skipped} bad records of {skipped + len(records)} in '
                  f"{', '.join(tubs)} (--config.skip_bad_records); the first: {first_bad}",
                  stacklevel=2)
  return records, skipped


# --- splitting ------------------------------------------------------------------------------------

def _hash(text: str) -> str:
  return hashlib.sha256(text.encode()).hexdigest()


def split_records(records: list[Record], validation_split: float,
                  by: str = 'record') -> tuple[list[Record], list[Record]]:
  """(train, validation): a deterministic hold-out of about ``validation_split`` of the records."""
  if by not in SPLIT_BY:
    raise ConfigError(f"--config.tub_split={by!r}: use 'record' or 'session'")
  if not 0 < validation_split < 1:
    raise ConfigError(f'--config.validation_split={validation_split}: donkey_tub holds out a '
                      'validation set itself and needs a fraction in (0, 1), e.g. 0.2')
  n = len(records)
  if by == 'record':
    order = sorted(range(n), key=lambda i: (
        _hash(f'{pathlib.Path(records[i].tub).name}/{records[i].index}'), i))
    held = set(order[:round(validation_split * n)])
  else:
    sessions: dict[str, list[int]] = {}
    for i, r in enumerate(records):
      sessions.setdefault(r.session, []).append(i)
    if len(sessions) < 2:
      raise TubError(f'--config.tub_split=session needs at least 2 driving sessions, but the tubs '
                     f'hold one ({next(iter(sessions))}): record another drive, or use '
                     '--config.tub_split=record')
    order = sorted(sessions, key=lambda s: (_hash(s), s))
    # In hash order, hold out each drive that brings the held-out count closer to the target.
    target, chosen, count = validation_split * n, [], 0
    for s in order:
      if abs(count + len(sessions[s]) - target) < abs(count - target):
        chosen.append(s)
        count += len(sessions[s])
    if not chosen:  # every drive is larger than twice the target: hold out the smallest
      chosen = [min(order, key=lambda s: len(sessions[s]))]
    if len(chosen) == len(order):
      chosen.pop()
    held = {i for s in chosen for i in sessions[s]}
  train = [r for i, r in enumerate(records) if i not in held]
  validation = [r for i, r in enumerate(records) if i in held]
  if not train or not validation:
    raise TubError(f'{n} records are too few to hold out --config.validation_split='
                   f'{validation_split} by {by}: record more data or change the split')
  return train, validation


# --- the tfds builder ---------------------------------------------------------------------------

def fingerprint(tubs: tuple[str, ...], *options) -> str:
  """A hash of the tub paths, their record files, their image files' names and sizes, options."""
  h = hashlib.sha256(json.dumps([list(tubs), list(options)]).encode())
  for tub in tubs:
    path = pathlib.Path(tub)
    version = tub_version(path)  # a missing or empty tub fails here, before tfds starts
    h.update(str(path.resolve()).encode())
    if version == 2:
      files = [path / 'manifest.json'] + [path / p for p in _v2_manifest(path)['paths']]
      image_dir = path / 'images'
    else:
      files = sorted(p for p in path.iterdir()
                     if _V1_RECORD.fullmatch(p.name) or p.name == 'exclude.json')
      image_dir = path
    for f in files:
      h.update(f.name.encode())
      h.update(f.read_bytes() if f.is_file() else b'<missing>')
    if image_dir.is_dir():
      with os.scandir(image_dir) as entries:
        for e in sorted((e.name, e.stat().st_size) for e in entries
                        if e.is_file() and not e.name.endswith('.json')):
          h.update(f'{e[0]}:{e[1]};'.encode())
  return h.hexdigest()[:16]


@dataclasses.dataclass
class DonkeyTubConfig(tfds.core.BuilderConfig):
  """The tubs to read and how to split them."""

  tubs: tuple[str, ...] = ()
  validation_split: float = 0.2
  split_by: str = 'record'
  skip_bad_records: bool = False


class DonkeyTub(tfds.core.GeneratorBasedBuilder):
  """Donkeycar tubs (v2 and v1): 'train' and 'validation' splits of 120x160x3 frames + angles."""

  name = 'donkey_tub'
  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Tub v2 and v1 readers; split by record or by session.'}

  @classmethod
  def config(cls, tubs, validation_split: float = 0.2, split_by: str = 'record',
             skip_bad_records: bool = False) -> DonkeyTubConfig:
    """The builder config for these tubs (pass it as ``config=``); checks that each is a tub."""
    tubs = tuple(str(t) for t in tubs)
    if not tubs:
      raise TubError('--config.dataset=donkey_tub needs --config.tubs=PATH[,PATH...] '
                     '(Donkeycar tub folders)')
    if split_by not in SPLIT_BY:
      raise ConfigError(f"--config.tub_split={split_by!r}: use 'record' or 'session'")
    if not 0 < validation_split < 1:
      raise ConfigError(f'--config.validation_split={validation_split}: donkey_tub holds out a '
                        'validation set itself and needs a fraction in (0, 1), e.g. 0.2')
    options = (validation_split, split_by, skip_bad_records)
    return DonkeyTubConfig(
        name=f'tubs-{fingerprint(tubs, *options)}', tubs=tubs, validation_split=validation_split,
        split_by=split_by, skip_bad_records=skip_bad_records,
        description=f"{', '.join(tubs)}: validation_split={validation_split} by {split_by}")

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=tfds.features.FeaturesDict({
            # PIL's pixels, raw: TF's JPEG decoder differs from PIL's (donkeycar's) by a few levels.
            'image': tfds.features.Tensor(shape=IMAGE_SHAPE, dtype=np.uint8,
                                          encoding=tfds.features.Encoding.BYTES),
            'label': tfds.features.Scalar(np.float32, doc='user/angle: steering in [-1, 1]'),
            'throttle': tfds.features.Scalar(np.float32, doc='user/throttle (NaN if absent)'),
            'session': tfds.features.Text(doc='<tub folder name>/<_session_id>'),
            'record': tfds.features.Text(doc='<tub folder>:<index>'),
        }),
        supervised_keys=('image', 'label'),
        homepage='https://docs.donkeycar.com/guide/train_autopilot/',
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Local files.
    c = self.builder_config
    if c is None:
      raise TubError('donkey_tub needs tubs: build it with config=DonkeyTub.config([...])')
    records, _ = read_tubs(c.tubs, c.skip_bad_records)
    train, validation = split_records(records, c.validation_split, c.split_by)
    return {'train': self._generate_examples(train),
            'validation': self._generate_examples(validation)}

  def _generate_examples(self, records):
    for r in records:
      yield f'{r.tub}:{r.index}', {
          'image': load_image(r), 'label': np.float32(r.angle),
          'throttle': np.float32(r.throttle), 'session': r.session,
          'record': f'{r.tub}:{r.index}'}


def builder_options(config) -> dict:
  """``DonkeyTub`` kwargs from a resflax config (``tubs``, ``tub_split``, ``skip_bad_records``)."""
  tubs = [t.strip() for t in config.get('tubs', '').split(',') if t.strip()]
  return {'config': DonkeyTub.config(tubs, config.validation_split,
                                     config.get('tub_split', 'record'),
                                     config.get('skip_bad_records', False))}
