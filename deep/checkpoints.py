"""The one checkpoint format of ``deep`` (``CHECKPOINT_FORMAT``) and its one loader.

Every model file a trainer of ``deep`` writes, and its resumable training state, is a
``torch.save``d dictionary that loads with ``weights_only=True``: a header (``HEADER_FIELDS``:
``format``, ``kind`` (a key of ``KINDS``), ``trainer``, ``env_name``, ``config``, ``meta``,
``networks`` (the keyword arguments that rebuild each network), ``dataset_spec``,
``marlcov_version``, ``state_dicts``; docs/formats.md) and beside it the fields of its kind
(``stats`` of a reward model; ``step``, ``generators``, ``rng``, ``extra`` of a training state).

``save_checkpoint`` writes one atomically (``deep.common.atomic_torch_save``);
``load_checkpoint`` reads one, validates its header (ValueError naming the file and the field)
and returns a ``Checkpoint``, from which each loader (``deep.marlhf.vdn.load_policy``,
``load_reward_model``, ``load_reference``, ``deep.algos.load_policy``, ``load_mamql``,
``load_score_decomposition``, ``TrainingState.load``) builds its object. Files written before
this format (``LEGACY_FORMATS``: one format per kind) are read and converted to the same
``Checkpoint``, so old run folders still load and resume; any other ``format`` is refused with
a message naming ``CHECKPOINT_FORMAT``.

Length: a little over 400 lines, a third of them the converters of the seven earlier formats,
which belong beside the format they convert to.
"""

from __future__ import annotations

import json
import os
import pickle
import struct
import zipfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, is_dataclass
from pathlib import Path
from typing import Any

import torch

from marlcov.deep.config_model import config_values

CHECKPOINT_FORMAT = "marlcov.deep-checkpoint/1"

#: ``kind -> what a checkpoint of that kind holds``.
KINDS = {
    "q-policy": "the greedy policy of a per-agent Q-network (VDN: expert.pt, rookie_<steps>.pt, policy.pt)",
    "policy": "a per-agent policy network and its value networks (O-MAPL, OMIGA: model.pt)",
    "q-function": "MAMQL's joint critic and recovered reward network (mamql.pt)",
    "score-model": "score decomposition's actor and denoiser (score_decomposition.pt)",
    "reward-model": "a reward model r_phi and its dataset statistics (reward_model.pt)",
    "reference": "a behaviour-cloned reference policy pi_ref (reference.pt)",
    "train-state": "a resumable training state (train_state.pt)",
}

#: The header's fields; anything else in the file belongs to its kind (``Checkpoint.fields``).
HEADER_FIELDS = ("format", "kind", "trainer", "env_name", "config", "meta", "networks", "dataset_spec", "marlcov_version", "state_dicts")
_JSON_MAPPINGS = ("config", "meta", "networks")

#: What reading a damaged or foreign file raises (``torch.load`` unpickles a zip archive; a
#: flipped byte inside it can surface as any of these).
UNREADABLE_ERRORS = (
    pickle.UnpicklingError,
    EOFError,
    zipfile.BadZipFile,
    RuntimeError,
    OSError,
    ValueError,
    KeyError,
    TypeError,
    AttributeError,
    ImportError,
    IndexError,
    UnicodeDecodeError,
    struct.error,
)


class UnreadableCheckpointError(ValueError):
    """The file is not a dictionary ``torch.load(weights_only=True)`` can read (truncated,
    foreign, or a pickled object)."""


@dataclass(frozen=True)
class Checkpoint:
    """A validated checkpoint: its header (JSON fields parsed), state dicts and the fields of
    its kind. ``source_format`` is the ``format`` the file was written in (``CHECKPOINT_FORMAT``
    or one of ``LEGACY_FORMATS``)."""

    path: Path
    kind: str
    trainer: str | None
    env_name: str | None
    config: dict[str, Any]
    meta: dict[str, Any]
    networks: dict[str, dict[str, Any]]
    dataset_spec: dict[str, Any] | None
    marlcov_version: str | None
    state_dicts: dict[str, Any]
    fields: dict[str, Any]
    source_format: str

    def field(self, name: str) -> Any:
        """The field ``name`` of the checkpoint's kind (ValueError naming the file when absent)."""
        if name not in self.fields:
            raise ValueError(f"{self.path}: field {name!r} is missing")
        return self.fields[name]

    def network(self, name: str, required: Iterable[str] = ()) -> dict[str, Any]:
        """The keyword arguments of network ``name``, holding at least the keys ``required``."""
        if name not in self.networks:
            raise ValueError(f"{self.path}: field 'networks' lacks {name!r} (it has {sorted(self.networks)})")
        args = self.networks[name]
        missing = [k for k in required if k not in args]
        if missing:
            raise ValueError(f"{self.path}: field 'networks' entry {name!r} lacks {missing}")
        return args

    def spec_attrs(self) -> dict[str, Any]:
        """The training dataset's spec attributes (ValueError naming the file when not recorded)."""
        if self.dataset_spec is None:
            raise ValueError(f"{self.path}: field 'dataset_spec' is missing")
        return self.dataset_spec

    def module(self, name: str, factory: Callable[..., torch.nn.Module], device: str | torch.device = "cpu") -> torch.nn.Module:
        """``factory(**networks[name])`` on ``device`` with ``state_dicts[name]`` loaded, in eval
        mode (ValueError naming the file and the field when the arguments or weights do not fit)."""
        args = self.network(name)
        try:
            net = factory(**args)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{self.path}: field 'networks' entry {name!r} ({args}) does not build a {factory.__name__}: {exc}") from exc
        return self.load_into(net.to(device), name).eval()

    def load_into(self, module: Any, name: str) -> Any:
        """``module`` with ``state_dicts[name]`` loaded (ValueError naming the file when absent or
        when it does not fit the module)."""
        if name not in self.state_dicts:
            raise ValueError(f"{self.path}: field 'state_dicts' lacks {name!r} (it has {sorted(self.state_dicts)})")
        try:
            module.load_state_dict(self.state_dicts[name])
        except (RuntimeError, KeyError, ValueError) as exc:
            raise ValueError(
                f"{self.path}: field 'state_dicts' entry {name!r} does not fit the network {self.networks.get(name)}: {exc}"
            ) from exc
        return module


# ----------------------------------------------------------------------------- writing
def save_checkpoint(
    path: str | os.PathLike,
    kind: str,
    state_dicts: Mapping[str, Any],
    *,
    trainer: str | None,
    env_name: str | None = None,
    config: Any = None,
    meta: Mapping[str, Any] | None = None,
    networks: Mapping[str, Mapping[str, Any]] | None = None,
    dataset_spec: Mapping[str, Any] | None = None,
    fields: Mapping[str, Any] | None = None,
) -> Path:
    """Write a ``CHECKPOINT_FORMAT`` file atomically; returns its path.

    ``config``: a config dataclass or a JSON-able mapping (None: empty); ``fields``: the fields
    of the kind, stored beside the header (tensors and plain values only)."""
    # deep.common imports deep.training, which imports this module: import it when writing.
    from marlcov import __version__
    from marlcov.deep.common import atomic_torch_save

    if kind not in KINDS:
        raise ValueError(f"kind: expected one of {sorted(KINDS)}, got {kind!r}")
    extra = dict(fields or {})
    clash = sorted(set(extra) & set(HEADER_FIELDS))
    if clash:
        raise ValueError(f"fields: {clash} are header fields of {CHECKPOINT_FORMAT!r}")
    cfg = config_values(config) if is_dataclass(config) else dict(config or {})
    obj = {
        "format": CHECKPOINT_FORMAT,
        "kind": kind,
        "trainer": None if trainer is None else str(trainer),
        "env_name": None if env_name is None else str(env_name),
        "config": json.dumps(cfg, sort_keys=True),
        "meta": json.dumps(dict(meta or {})),
        "networks": json.dumps({name: dict(args) for name, args in (networks or {}).items()}),
        "dataset_spec": None if dataset_spec is None else json.dumps(dict(dataset_spec)),
        "marlcov_version": __version__,
        "state_dicts": dict(state_dicts),
        **extra,
    }
    return atomic_torch_save(obj, path)


# ----------------------------------------------------------------------------- formats written before
def _get(obj: Mapping[str, Any], name: str, path: Path) -> Any:
    if name not in obj:
        raise ValueError(f"{path}: field {name!r} is missing")
    return obj[name]


def _json(obj: Mapping[str, Any], name: str, path: Path) -> dict[str, Any]:
    """The JSON object stored as text in the field ``name``."""
    try:
        value = json.loads(_get(obj, name, path))
    except (TypeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: field {name!r} is not JSON text ({exc})") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path}: field {name!r} is a JSON {type(value).__name__}; expected an object")
    return value


def _header(kind, trainer, env_name, config, meta, networks, state_dicts, dataset_spec=None, **fields) -> dict[str, Any]:
    """A header as ``load_checkpoint`` sees it (JSON fields already parsed)."""
    return {
        "kind": kind,
        "trainer": trainer,
        "env_name": env_name,
        "config": config,
        "meta": meta,
        "networks": networks,
        "dataset_spec": dataset_spec,
        "marlcov_version": None,
        "state_dicts": state_dicts,
        **fields,
    }


def _from_deep_policy(obj, path):
    meta = _json(obj, "meta", path)
    return _header(
        "q-policy",
        meta.get("trainer", "vdn"),
        _get(obj, "env_name", path),
        _json(obj, "config", path),
        meta,
        {"q": _json(obj, "network", path)},
        {"q": _get(obj, "state_dict", path)},
    )


def _from_offline_policy(obj, path):
    from marlcov.deep.data.schema import DatasetSpec

    attrs, config = _json(obj, "spec", path), _json(obj, "config", path)
    spec = DatasetSpec.from_attrs(attrs, str(path))
    if "hidden" not in config or "layers" not in config:
        raise ValueError(f"{path}: field 'config' lacks 'hidden' or 'layers'")
    policy_args = {
        "obs_dim": spec.obs_dim,
        "n_agents": spec.n_agents,
        "hidden": config["hidden"],
        "layers": config["layers"],
        "out_dim": spec.n_actions,
    }
    modules = dict(_get(obj, "modules", path))
    return _header(
        "policy",
        None,
        spec.env_name,
        config,
        {},
        {"policy": policy_args},
        {"policy": _get(obj, "policy", path), **modules},
        attrs,
    )


def _from_mamql(obj, path):
    network = _json(obj, "network", path)
    return _header(
        "q-function",
        "mamql",
        _get(obj, "env_name", path),
        _json(obj, "config", path),
        _json(obj, "meta", path),
        {"critic": network, "reward": network},
        {"critic": _get(obj, "critic", path), "reward": _get(obj, "reward", path)},
        _json(obj, "spec", path),
    )


def _from_score_decomposition(obj, path):
    return _header(
        "score-model",
        "score-decomposition",
        _get(obj, "env_name", path),
        _json(obj, "config", path),
        _json(obj, "meta", path),
        {"actor": _json(obj, "actor_network", path), "denoiser": _json(obj, "denoiser_network", path)},
        {"actor": _get(obj, "actor", path), "denoiser": _get(obj, "denoiser", path)},
    )


def _from_reward_model(obj, path):
    sizes = _json(obj, "sizes", path)
    return _header(
        "reward-model",
        "reward-model",
        sizes.get("env_name"),
        _json(obj, "config", path),
        {"metrics": _json(obj, "metrics", path)},
        {"reward": sizes},
        {"reward": _get(obj, "state_dict", path)},
        stats=_get(obj, "stats", path),
    )


def _from_reference(obj, path):
    sizes, config = _json(obj, "sizes", path), _json(obj, "config", path)
    config.setdefault("model", "mlp")  # files written before the GRU reference hold an MLP
    return _header(
        "reference",
        "reference",
        sizes.get("env_name"),
        config,
        {"metrics": _json(obj, "metrics", path)},
        {"reference": sizes},
        {"reference": _get(obj, "state_dict", path)},
    )


def _from_train_state(obj, path):
    return _header(
        "train-state",
        None,
        None,
        _json(obj, "config", path),
        {},
        {},
        _get(obj, "modules", path),
        step=_get(obj, "step", path),
        generators=_get(obj, "generators", path),
        rng=_get(obj, "rng", path),
        extra=_get(obj, "extra", path),
    )


#: ``format written before CHECKPOINT_FORMAT -> (its kind, converter to a parsed header)``.
LEGACY_FORMATS: dict[str, tuple[str, Callable[[Mapping[str, Any], Path], dict[str, Any]]]] = {
    "marlcov.deep-policy/1": ("q-policy", _from_deep_policy),
    "marlcov.deep-offline-policy/1": ("policy", _from_offline_policy),
    "marlcov.deep-mamql/1": ("q-function", _from_mamql),
    "marlcov.deep-score-decomposition/1": ("score-model", _from_score_decomposition),
    "marlcov.deep-reward-model/1": ("reward-model", _from_reward_model),
    "marlcov.deep-reference/1": ("reference", _from_reference),
    "marlcov.deep-train-state/1": ("train-state", _from_train_state),
}


# ----------------------------------------------------------------------------- reading
def _read(path: Path, map_location) -> Any:
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except UNREADABLE_ERRORS as exc:
        # torch's own message for a file that is not a checkpoint spans many lines of advice
        # about weights_only; say what the file is not, in one line.
        raise UnreadableCheckpointError(
            f"{path}: not a readable checkpoint (expected a torch.save file of format {CHECKPOINT_FORMAT!r}): {type(exc).__name__}"
        ) from exc


def _check_kind(path: Path, found: str, expected: tuple[str, ...] | None, legacy_format: str | None) -> None:
    if expected is None or found in expected:
        return
    want = expected[0] if len(expected) == 1 else list(expected)
    where = f"field 'format' is {legacy_format!r}, a {found!r} file" if legacy_format else f"field 'kind' is {found!r}"
    raise ValueError(f"{path}: {where}; expected a {want!r} checkpoint ({KINDS[expected[0]]})")


def _parsed_header(obj: Mapping[str, Any], path: Path) -> dict[str, Any]:
    out = dict(obj)
    for name in HEADER_FIELDS:
        _get(obj, name, path)
    for name in _JSON_MAPPINGS:
        out[name] = _json(obj, name, path)
    out["dataset_spec"] = None if obj["dataset_spec"] is None else _json(obj, "dataset_spec", path)
    return out


def _validated(header: Mapping[str, Any], path: Path) -> None:
    for name in ("trainer", "env_name", "marlcov_version"):
        if header[name] is not None and not isinstance(header[name], str):
            raise ValueError(f"{path}: field {name!r} is {header[name]!r}; expected a string or None")
    if not isinstance(header["state_dicts"], Mapping):
        raise ValueError(f"{path}: field 'state_dicts' is a {type(header['state_dicts']).__name__}; expected a mapping")
    for name, args in header["networks"].items():
        if not isinstance(args, Mapping):
            raise ValueError(f"{path}: field 'networks' entry {name!r} is a {type(args).__name__}; expected a mapping")
    for name, state in header["state_dicts"].items():
        if not isinstance(state, Mapping):
            raise ValueError(f"{path}: field 'state_dicts' entry {name!r} is a {type(state).__name__}; expected a state dict")


def load_checkpoint(path: str | os.PathLike, kind: str | Iterable[str] | None = None, device: str | torch.device = "cpu") -> Checkpoint:
    """The checkpoint at ``path``, its tensors on ``device``.

    ``kind``: the kind (or kinds) the caller can build; a file of another kind is refused.
    Files of a format in ``LEGACY_FORMATS`` are converted. Raises FileNotFoundError for a
    missing file, ``UnreadableCheckpointError`` (a ValueError) for one ``torch.load`` cannot read
    as weights, and ValueError naming the file and the field for any other mismatch."""
    path = Path(path)
    expected = None if kind is None else ((kind,) if isinstance(kind, str) else tuple(kind))
    unknown = [k for k in expected or () if k not in KINDS]
    if unknown:
        raise ValueError(f"kind: expected names from {sorted(KINDS)}, got {unknown}")
    obj = _read(path, device)
    if not isinstance(obj, Mapping) or "format" not in obj:
        raise ValueError(f"{path}: field 'format' is missing; expected {CHECKPOINT_FORMAT!r}")
    fmt = obj["format"]
    if fmt == CHECKPOINT_FORMAT:
        found = obj.get("kind")
        if not (isinstance(found, str) and found in KINDS):
            raise ValueError(f"{path}: field 'kind' is {found!r}; expected one of {sorted(KINDS)}")
        _check_kind(path, found, expected, None)
        header = _parsed_header(obj, path)
    elif isinstance(fmt, str) and fmt in LEGACY_FORMATS:
        found, convert = LEGACY_FORMATS[fmt]
        _check_kind(path, found, expected, fmt)
        header = convert(obj, path)
    else:
        raise ValueError(
            f"{path}: field 'format' is {fmt!r}; expected {CHECKPOINT_FORMAT!r} "
            f"(files of the formats before it, {sorted(LEGACY_FORMATS)}, are read too)"
        )
    _validated(header, path)
    return Checkpoint(
        path=path,
        kind=header["kind"],
        trainer=header["trainer"],
        env_name=header["env_name"],
        config=dict(header["config"]),
        meta=dict(header["meta"]),
        networks={name: dict(args) for name, args in header["networks"].items()},
        dataset_spec=None if header["dataset_spec"] is None else dict(header["dataset_spec"]),
        marlcov_version=header["marlcov_version"],
        state_dicts=dict(header["state_dicts"]),
        fields={k: v for k, v in header.items() if k not in HEADER_FIELDS},
        source_format=fmt,
    )
