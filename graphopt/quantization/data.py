"""Calibration and evaluation samples: where they come from, how they are split, how they are checked.

A data spec is `PATH[:ARRAY=INPUT,...]`:
- PATH is an `.npz` file or a folder of them (read in sorted name order, one file at a time);
- each array holds samples along its first axis. An array of rank r+1 for an input of rank r
  holds one full input per sample (`[S, 1, 128]` for an input `[1, 128]`); an array of the input's
  own rank holds samples along the batch axis and each sample is fed with batch 1
  (`[64, 1, 8, 8]` for an input `[N, 1, 8, 8]` or `[1, 1, 8, 8]`);
- arrays are matched to inputs by name, or by the mapping after the colon
  (`digits_test.npz:calib=input`); with a mapping, unmapped arrays are ignored, without one an
  array that names no input is an error (except the labels array of evaluation data).
A Python mapping `{input_name: array}` (samples along axis 0) is accepted as well.

Everything is checked before calibration starts, one array at a time (memory stays bounded):
missing or extra names, dtypes, shapes, sample counts, NaN/Inf, empty files, and object arrays
(files are opened with allow_pickle=False: graphopt never unpickles data). Every failure is one
BadInputError line.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping, Sequence, Union

import numpy as np

from graphopt.errors import BadInputError
from graphopt.inputs import check_inputs, describe_inputs
from graphopt.ir.graph import Value

DataSource = Union[str, os.PathLike, Mapping[str, np.ndarray]]


@dataclass(frozen=True)
class DataSpec:
    """A parsed `PATH[:ARRAY=INPUT,...]` spec."""

    path: Path
    mapping: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, text: str | os.PathLike) -> "DataSpec":
        text = os.fspath(text)
        head, sep, tail = text.rpartition(":")
        if not sep or "=" not in tail:
            return cls(Path(text))
        pairs = []
        for item in filter(None, (p.strip() for p in tail.split(","))):
            array, eq, name = item.partition("=")
            if not eq or not array.strip() or not name.strip():
                raise BadInputError(f"data spec {text!r}: expected PATH:ARRAY=INPUT[,...], "
                                    f"got {item!r}")
            pairs.append((array.strip(), name.strip()))
        return cls(Path(head), tuple(pairs))


class SampleSet:
    """Validated samples for a model's inputs, streamed one sample (batch 1) at a time."""

    def __init__(self, source: DataSource, inputs: Sequence[Value], labels: str | None = None,
                 what: str = "calibration data"):
        self.inputs = list(inputs)
        self.labels_key = labels
        self.what = what
        if isinstance(source, Mapping):
            self._spec = None
            self._files: list[Path | Mapping[str, np.ndarray]] = [source]
        else:
            self._spec = DataSpec.parse(source)
            self._files = list(_npz_files(self._spec.path, what))
        self.num_samples = sum(self._check_file(f) for f in self._files)
        if self.num_samples == 0:
            raise BadInputError(f"{what} {self._label(self._files[0])}: holds 0 samples")

    # --- reading ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        """Feeds for one sample at a time, in file order."""
        for file in self._files:
            with _Opened(file, self.what) as arrays:
                bound = {name: self._split_rule(arrays, name, key)
                         for name, key in self._keys(arrays, file).items()}
                count = _count(bound)
                for i in range(count):
                    yield {name: _take(array, i, per_sample)
                           for name, (array, per_sample) in bound.items()}

    def labels(self) -> np.ndarray:
        """The labels array (one integer class per sample), concatenated over files."""
        if self.labels_key is None:
            raise BadInputError(f"{self.what}: no labels array named")
        parts = []
        for file in self._files:
            with _Opened(file, self.what) as arrays:
                parts.append(np.asarray(arrays[self.labels_key]).reshape(-1))
        return np.concatenate(parts)

    # --- checking ---------------------------------------------------------------------------
    def _label(self, file: Path | Mapping) -> str:
        return str(file) if isinstance(file, Path) else "(in-memory arrays)"

    def _keys(self, arrays: Mapping[str, np.ndarray], file: Path | Mapping) -> dict[str, str]:
        """Input name -> array key in this file."""
        names = [v.name for v in self.inputs]
        where = f"{self.what} {self._label(file)}"
        present = list(arrays.keys())
        if not present:
            raise BadInputError(f"{where}: the file holds no arrays")
        if self._spec is not None and self._spec.mapping:
            keys = {}
            for array, name in self._spec.mapping:
                if name not in names:
                    raise BadInputError(f"{where}: mapping names input '{name}', but the model's "
                                        f"inputs are {describe_inputs(self.inputs)}")
                if array not in present:
                    raise BadInputError(f"{where}: no array '{array}' (it has "
                                        f"{', '.join(present)})")
                keys[name] = array
        else:
            extra = [k for k in present if k not in names and k != self.labels_key]
            if extra:
                raise BadInputError(
                    f"{where}: array(s) {', '.join(map(repr, extra))} name no model input "
                    f"(inputs: {describe_inputs(self.inputs)}); map arrays to inputs with "
                    f"PATH:ARRAY=INPUT")
            keys = {n: n for n in names if n in present}
        missing = [n for n in names if n not in keys]
        if missing:
            raise BadInputError(f"{where}: missing input(s) {', '.join(map(repr, missing))}; "
                                f"the model's inputs are {describe_inputs(self.inputs)}")
        if self.labels_key is not None and self.labels_key not in present:
            raise BadInputError(f"{where}: no labels array '{self.labels_key}'")
        return keys

    def _split_rule(self, arrays: Mapping[str, np.ndarray], name: str,
                    key: str) -> tuple[np.ndarray, bool]:
        """(array, per_sample): per_sample means array[i] is a whole input, else array[i:i+1]."""
        value = next(v for v in self.inputs if v.name == name)
        array = _read(arrays, key, self.what)
        rank = None if value.type is None or value.type.shape is None else len(value.type.shape)
        if rank is None or array.ndim == rank + 1:
            return array, True
        first = value.type.shape[0] if rank else None
        if array.ndim == rank and rank > 0 and (first == 1 or not isinstance(first, int)):
            return array, False
        raise BadInputError(f"{self.what}: array '{key}' has shape {tuple(array.shape)}; for input "
                            f"'{name}' {value.type} it needs rank {rank + 1} (samples along axis "
                            f"0) or rank {rank} with samples along the batch axis")

    def _check_file(self, file: Path | Mapping[str, np.ndarray]) -> int:
        """Check one file completely (one array at a time); return its sample count."""
        where = f"{self.what} {self._label(file)}"
        with _Opened(file, self.what) as arrays:
            keys = self._keys(arrays, file)
            counts = {}
            first: dict[str, np.ndarray] = {}
            for name, key in keys.items():
                array, per_sample = self._split_rule(arrays, name, key)
                counts[key] = array.shape[0]
                if array.dtype.kind == "f" and not np.isfinite(array).all():
                    bad = int(array.size - np.isfinite(array).sum())
                    raise BadInputError(f"{where}: array '{key}' holds {bad} NaN/Inf value(s); "
                                        "calibration needs finite inputs")
                if array.shape[0]:
                    first[name] = _take(array, 0, per_sample)
                del array
            if self.labels_key is not None:
                counts[self.labels_key] = np.asarray(arrays[self.labels_key]).reshape(-1).shape[0]
        if len(set(counts.values())) > 1:
            detail = ", ".join(f"'{k}' {n}" for k, n in counts.items())
            raise BadInputError(f"{where}: arrays hold different sample counts ({detail})")
        if first and len(first) == len(keys):
            try:
                check_inputs(self.inputs, first)
            except BadInputError as err:
                raise BadInputError(f"{where}: sample 0: {err}") from None
        return next(iter(counts.values()), 0)


class _Opened:
    """Context manager over an .npz file or an in-memory mapping."""

    def __init__(self, file: Path | Mapping[str, np.ndarray], what: str):
        self.file, self.what, self.handle = file, what, None

    def __enter__(self) -> Mapping[str, np.ndarray]:
        if not isinstance(self.file, Path):
            return self.file
        try:
            self.handle = np.load(self.file, allow_pickle=False)
        except Exception as err:
            raise BadInputError(f"{self.what} {self.file}: not a readable .npz "
                                f"({type(err).__name__}: {str(err)[:120]})") from None
        if not hasattr(self.handle, "files"):
            raise BadInputError(f"{self.what} {self.file}: a single .npy array, not an .npz "
                                "archive keyed by input name")
        return self.handle

    def __exit__(self, *exc: object) -> None:
        if self.handle is not None and hasattr(self.handle, "close"):
            self.handle.close()


def _read(arrays: Mapping[str, np.ndarray], key: str, what: str) -> np.ndarray:
    try:
        array = np.asarray(arrays[key])
    except ValueError as err:
        if "allow_pickle" in str(err) or "Object arrays" in str(err):
            raise BadInputError(f"{what}: array '{key}' holds pickled Python objects; graphopt "
                                "never unpickles data: save numeric arrays") from None
        raise BadInputError(f"{what}: array '{key}' cannot be read ({err})") from None
    except Exception as err:
        raise BadInputError(f"{what}: array '{key}' cannot be read ({type(err).__name__}: "
                            f"{str(err)[:120]})") from None
    if array.dtype == object:
        raise BadInputError(f"{what}: array '{key}' holds Python objects; save numeric arrays")
    if array.ndim == 0:
        raise BadInputError(f"{what}: array '{key}' is a scalar; samples go along axis 0")
    return array


def _take(array: np.ndarray, index: int, per_sample: bool) -> np.ndarray:
    sample = array[index] if per_sample else array[index:index + 1]
    return np.ascontiguousarray(sample)


def _count(bound: Mapping[str, tuple[np.ndarray, bool]]) -> int:
    return min((a.shape[0] for a, _ in bound.values()), default=0)


def _npz_files(path: Path, what: str) -> Iterator[Path]:
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix == ".npz" and p.is_file())
        if not files:
            raise BadInputError(f"{what} {path}: the folder holds no .npz files")
        yield from files
    elif path.is_file():
        yield path
    else:
        raise BadInputError(f"{what} {path}: no such file or folder")
