"""The artifact store: every artifact's identity, place, provenance, locks and safe writes.

An artifact's identity is its readable key fields (model, task, languages, method, seed, ...) plus a
short hash of exactly the settings that determine it, upstream identities included (a mask's identity
contains the identity of the model run it was pruned from), in the manner of OpenLTH. Settings that
cannot change a result are listed in IGNORED and never hashed. Same identity: reuse. Another identity:
a new artifact beside the old one. Every path of the store is spelled out here and nowhere else.

A stage finds its inputs from its own config: `upstream(cfg, ...)` recomposes the same command line
with the key fields changed (another stage, language, seed, task or method), so `stage=prune
train.lr=5e-3` looks for the model trained with lr=5e-3. A missing input is one `Missing` line with
the exact command that makes it, built from the key by `command()`.

Writes: `claim(key)` takes the artifact's exclusive lock, gives a `.partial` directory for resumable
state, and `Claim.commit()` stages every file in a temporary directory that is renamed into place
with DONE.json last, so an artifact appears whole or not at all. Readers take the shared lock, so a
`force=true` rewrite never swaps files under a job that is reading them.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from xsub.config import NEURON_METHODS, ConfigError, XsubError, selected_languages

log = logging.getLogger(__name__)

DONE = "DONE.json"  # written last into a finished artifact directory
CONFIG = "config.yaml"  # the resolved settings of the run that made it
HASH_LEN = 10

# Settings that cannot change a result: never part of an identity (dotted prefixes).
IGNORED = (
    "paths",  # where the store is
    "logger",  # experiment tracking
    "hydra",  # launcher, output folders
    "force",  # asks to redo the same artifact
    "stage",  # which stage runs (the kind of artifact says it)
    "experiment_name",
    "pipeline",
    "report",  # a view of the store, never an input
    "store",  # listing and removal
    "interpolate",  # only the interpolation's own key reads it
    "train.progress",  # progress display
    "train.save_steps",  # which snapshots are kept, not how training goes
    "train.device",  # where it runs (the resolved precision is hashed)
    "model.device_map",  # how the weights are spread over devices, not what they compute
    "model.max_memory",
    "data.num_workers",  # data loading processes
    "pruning.allow_chance",  # whether a model at chance may be pruned, not how it is pruned
)

# The stage that makes each kind, and the store folder it lives in.
STAGE = {
    "data": "",
    "model": "train",
    "activations": "prune",
    "mask": "prune",
    "analysis": "analyze",
    "interpolation": "interpolate",
}
FOLDER = {
    "data": "data",
    "activations": "activations",
    "model": "models",
    "mask": "masks",
    "analysis": "analysis",
    "interpolation": "interpolate",
    "report": "reports",
}


class Missing(ConfigError):
    """An input artifact that is not in the store; the message carries the command that makes it."""


# ---- keys ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Key:
    """Identity of one artifact: readable fields (also its folders) + hash of settings and upstreams."""

    kind: str
    fields: tuple[tuple[str, str], ...]
    settings: str  # canonical JSON of the settings that determine the result
    upstream: tuple[Key, ...] = ()
    cfg: Any = field(default=None, compare=False, hash=False, repr=False)  # for command()

    @property
    def hash(self) -> str:
        blob = json.dumps(
            {
                "kind": self.kind,
                "fields": self.fields,
                "settings": self.settings,
                "up": [u.id for u in self.upstream],
            },
            sort_keys=True,
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:HASH_LEN]

    @property
    def id(self) -> str:
        return f"{self.kind}:{'/'.join(v for _, v in self.fields)}/{self.hash}"

    @property
    def rel(self) -> Path:
        return Path(FOLDER[self.kind], *(v for _, v in self.fields), self.hash)

    def field(self, name: str) -> str:
        return dict(self.fields)[name]

    def settings_dict(self) -> dict[str, Any]:
        return json.loads(self.settings)

    def describe(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.fields)


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))


def root(cfg: Any) -> Path:
    """Store root: `paths.artifacts` (default `$XSUB_ARTIFACTS` or ./artifacts)."""
    return Path(str(cfg.paths.artifacts)).expanduser().resolve()


def base_of(cfg_or_root: Any) -> Path:
    """The store root of a config, or a root given as a path."""
    return Path(cfg_or_root) if isinstance(cfg_or_root, (str, Path)) else root(cfg_or_root)


def path(cfg_or_root: Any, key: Key) -> Path:
    return base_of(cfg_or_root) / key.rel


def _plain(node: Any, drop: tuple[str, ...] = ()) -> Any:
    value = (
        OmegaConf.to_container(node, resolve=True, enum_to_str=True) if OmegaConf.is_config(node) else node
    )
    if isinstance(value, dict):
        return {k: v for k, v in value.items() if k not in drop}
    return value


def _section(cfg: DictConfig, name: str) -> dict[str, Any]:
    """cfg.<name> without the IGNORED keys of that section."""
    drop = tuple(i.split(".", 1)[1] for i in IGNORED if i.startswith(name + "."))
    return _plain(cfg[name], drop)


def precision_of(cfg: DictConfig) -> str:
    """The precision the run's matmuls actually use (a result depends on it, not on `auto`)."""
    from xsub.precision import for_run

    return for_run(cfg)


def langs_label(cfg: DictConfig) -> str:
    return "all" if "all" in cfg.lang else "+".join(selected_languages(cfg))


def data_key(name: str, params: Mapping[str, Any]) -> Key:
    """Generated data (the embedded synthetic languages) by its generator parameters."""
    return Key("data", (("name", name),), _canonical(dict(params)))


def model_key(cfg: DictConfig) -> Key:
    """A train-stage run: (model, task, training languages, seed) + everything that shapes the weights."""
    settings: dict[str, Any] = {
        "task": _plain(cfg.task),
        "langs": selected_languages(cfg),
        "model": _section(cfg, "model"),
        "data": _section(cfg, "data"),
        "train": _section(cfg, "train"),
        "seed": int(cfg.seed),
        "precision": precision_of(cfg),
    }
    upstream: list[Key] = []
    pretrain = pretrain_key(cfg)
    if pretrain is not None:
        upstream.append(pretrain)
    if str(cfg.mask.source) != "none":
        settings["mask"] = _mask_settings(cfg)
        mask_upstream, extra = retrain_mask_upstream(cfg)
        upstream += mask_upstream
        settings["mask"].update(extra)
    fields = (
        ("model", str(cfg.model.name)),
        ("task", str(cfg.task.name)),
        ("langs", langs_label(cfg)),
        ("seed", f"seed{cfg.seed}"),
    )
    return Key("model", fields, _canonical(settings), tuple(upstream), cfg)


def _mask_settings(cfg: DictConfig) -> dict[str, Any]:
    """`mask.*` with its defaults filled in, so spellings of the same mask share one identity."""
    src = str(cfg.mask.source)
    langs = selected_languages(cfg)
    if len(langs) == 1 and src == f"lang:{langs[0]}":
        src = "own"  # the training language's own mask
    seed = int(cfg.mask.seed) if int(cfg.mask.seed) >= 0 else int(cfg.seed)
    return {"source": src, "pruning": str(cfg.mask.pruning or cfg.pruning.method), "seed": seed}


def pretrain_key(cfg: DictConfig) -> Key | None:
    """The embedded model's pretraining run (`model.pretrain_task`), upstream of every run built on it."""
    task = str(cfg.model.get("pretrain_task", "") or "")
    if not task or task == cfg.task.name:
        return None
    # the pretraining keeps the model (and debug) settings, not the finetuning's hyperparameters
    return model_key(upstream(cfg, "train", task=task, lang="all", seed=0, mask="none", carry=("model",)))


def model_seed(cfg: DictConfig) -> int:
    ms = int(cfg.pruning.get("model_seed", -1))
    return ms if ms >= 0 else int(cfg.seed)


def mask_key(cfg: DictConfig, lang: str) -> Key:
    """A prune-stage mask of one language: the pruning settings, its data, and the model it came from."""
    method = str(cfg.pruning.method)
    settings: dict[str, Any] = {
        "pruning": _section(cfg, "pruning"),
        "lang": lang,
        "seed": int(cfg.seed),
        "data": _section(cfg, "data"),
        "precision": precision_of(cfg),
    }
    if method in NEURON_METHODS:
        return _neuron_mask_key(cfg, lang, settings)
    if method == "imp":  # IMP trains: it starts from the pretrained model and reads the train settings
        settings["train"] = _section(cfg, "train")
        settings["task"] = _plain(cfg.task)
        settings["model"] = _section(cfg, "model")
        pretrain = pretrain_key(upstream(cfg, "train", lang=lang, seed=cfg.seed, mask="none"))
        ups: tuple[Key, ...] = (pretrain,) if pretrain is not None else ()
    else:
        ups = (pruned_model_key(cfg, lang),)
    return Key("mask", _mask_fields(cfg, lang), _canonical(settings), ups, cfg)


def _neuron_mask_key(cfg: DictConfig, lang: str, settings: dict[str, Any]) -> Key:
    """A language-neuron mask: its selection is joint over the run's languages, so their list is part of
    it; imported from a released file, the file's content is its identity instead of a model's."""
    fields = _mask_fields(cfg, lang)
    file = str(cfg.pruning.get("neurons_file", "") or "")
    if file:
        settings["pruning"] = {"method": str(cfg.pruning.method), "file_langs": list(cfg.pruning.file_langs)}
        settings["file_sha256"] = (
            file_digest(Path(file).expanduser()) if Path(file).expanduser().is_file() else "absent"
        )
        settings["model"] = _section(cfg, "model")
        return Key("mask", fields, _canonical(settings), (), cfg)
    settings["pruning"]["languages"] = neuron_languages(cfg)
    model = neuron_model_key(cfg)
    if model is None:
        settings["model"] = _section(cfg, "model")
    return Key("mask", fields, _canonical(settings), (model,) if model is not None else (), cfg)


def neuron_languages(cfg: DictConfig) -> list[str]:
    """The languages a language-neuron selection compares: `pruning.languages`, else the run's."""
    return list(cfg.pruning.get("languages") or []) or selected_languages(cfg)


def neuron_model_key(cfg: DictConfig) -> Key | None:
    """The model whose neurons a language-neuron method scores (`pruning.model`). `released`: the hub (or
    local, package) weights as they are — no run, None — or, for an embedded model, its pretraining run
    (this task's `lang=all` run when the task is its pretraining). `trained`: this task's `lang=all` run."""
    embedded = str(cfg.model.source) == "embedded"
    if str(cfg.pruning.get("model", "trained")) == "released":
        if not embedded:
            return None
        pre = pretrain_key(upstream(cfg, "train", lang="all", seed=model_seed(cfg), mask="none"))
        if pre is not None:
            return pre
    return model_key(upstream(cfg, "train", lang="all", seed=model_seed(cfg), mask="none"))


def activations_key(cfg: DictConfig, lang: str) -> Key:
    """One language's neuron statistics (`xsub.neurons`): the model, the corpus (data, n_tokens or n_texts
    and, for sampled texts, the seed), batching and precision — not the selection that reads them."""
    p = cfg.pruning
    method = str(p.method)
    corpus = (
        {"n_tokens": int(p.n_tokens)}
        if method == "lape"
        else {"n_texts": int(p.n_texts), "seed": int(cfg.seed)}
    )
    settings: dict[str, Any] = {
        "statistic": method,
        **corpus,
        "batch_size": int(p.batch_size),
        "lang": lang,
        "task": _plain(cfg.task),
        "data": _section(cfg, "data"),
        "precision": precision_of(cfg),
    }
    model = neuron_model_key(cfg)
    if model is None:
        settings["model"] = _section(cfg, "model")
    fields = (
        ("model", str(cfg.model.name)),
        ("task", str(cfg.task.name)),
        ("statistic", method),
        ("lang", lang),
    )
    return Key("activations", fields, _canonical(settings), (model,) if model is not None else (), cfg)


def _mask_fields(cfg: DictConfig, lang: str) -> tuple[tuple[str, str], ...]:
    return (
        ("model", str(cfg.model.name)),
        ("task", str(cfg.task.name)),
        ("method", str(cfg.pruning.method)),
        ("lang", lang),
        ("seed", f"seed{cfg.seed}"),
    )


def model_langs(cfg: DictConfig) -> str:
    """`pruning.model_langs`: `own` (the language's own run) or `all` (the multilingual run)."""
    return str(cfg.pruning.get("model_langs", "all") or "all")


def pruned_model_key(cfg: DictConfig, lang: str | None = None) -> Key:
    """The finetuned run a structured, magnitude or Wanda prune of `lang` reads (`pruning.model_seed`):
    with `pruning.model_langs=own` the run trained on that language alone (`stage=train lang=<lang>`),
    with `all` the multilingual one (`lang=all`)."""
    train_langs = "all"
    if model_langs(cfg) == "own":
        langs = [lang] if lang else selected_languages(cfg)
        if len(langs) != 1 or ("all" in cfg.lang and not lang):
            raise ConfigError("pruning.model_langs=own reads one language's own run; pass lang=<code>")
        train_langs = langs[0]
    return model_key(upstream(cfg, "train", lang=train_langs, seed=model_seed(cfg), mask="none"))


def retrain_mask_upstream(cfg: DictConfig) -> tuple[list[Key], dict[str, Any]]:
    """The stored mask(s) a `mask.source=` retraining run is built from, or a file's digest."""
    src = str(cfg.mask.source)
    method = str(cfg.mask.pruning or cfg.pruning.method)
    seed = int(cfg.mask.seed) if int(cfg.mask.seed) >= 0 else int(cfg.seed)
    langs = selected_languages(cfg)
    if src.startswith("lang:"):
        lang, task = src.split(":", 1)[1], str(cfg.task.name)
    elif src.startswith("task:"):
        lang, task = (langs[0] if langs else ""), src.split(":", 1)[1]
    elif src in ("own", "random", "bad", "inverted"):
        lang, task = (langs[0] if len(langs) == 1 else ""), str(cfg.task.name)
    else:  # a mask file from outside the store: its content is its identity
        file = Path(src).expanduser()
        digest = file_digest(file) if file.is_file() else "absent"
        return [], {"file_sha256": digest}
    if not lang:
        return [], {}
    # train.* of a retraining command is how the retraining trains, not how the mask's model was trained:
    # the mask keeps the command's model, data, pruning and debug settings and the default finetuning
    carry = ("model", "data", "precision", "pruning")
    mcfg = upstream(cfg, "prune", task=task, lang=lang, seed=seed, pruning=method, mask="none", carry=carry)
    return [mask_key(mcfg, lang)], {}


def file_digest(file: Path) -> str:
    h = hashlib.sha256()
    with open(file, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def analysis_key(
    cfg: DictConfig, tasks: list[str], langs: list[str], seeds: list[int], ups: list[Key]
) -> Key:
    settings = {
        "analysis": _plain(cfg.analysis),
        "tasks": tasks,
        "langs": langs,
        "seeds": seeds,
        "method": str(cfg.pruning.method),
        "data": _section(cfg, "data"),
        "precision": precision_of(cfg),
    }
    fields = (
        ("name", str(cfg.analysis.name)),
        ("model", str(cfg.model.name)),
        ("tasks", "+".join(tasks)),
        ("method", str(cfg.pruning.method)),
        ("seeds", "seed" + "+".join(str(s) for s in seeds)),
    )
    return Key("analysis", fields, _canonical(settings), tuple(ups), cfg)


def interpolation_key(cfg: DictConfig, ends: list[Key | str], settings: Mapping[str, Any]) -> Key:
    """A mode-connectivity path between two model runs (keys) or given directories (their digests)."""
    given = [e for e in ends if isinstance(e, str)]
    body = {
        **settings,
        "given": given,
        "langs": selected_languages(cfg),
        "data": _section(cfg, "data"),
        "precision": precision_of(cfg),
    }
    fields = (("model", str(cfg.model.name)), ("task", str(cfg.task.name)))
    return Key("interpolation", fields, _canonical(body), tuple(e for e in ends if isinstance(e, Key)), cfg)


def report_dir(cfg: DictConfig, name: str) -> Path:
    """Reports are views of the store, remade on every run (never an input to anything)."""
    return root(cfg) / FOLDER["report"] / name


def runs_dir(cfg: DictConfig) -> Path:
    return root(cfg) / "runs"


def wandb_dir(cfg: DictConfig) -> Path:
    return root(cfg) / "wandb"


# ---- recomposing a config with other key fields ----------------------------------------------------

_KEY_FIELDS = ("stage", "seed", "lang", "experiment_name", "pipeline", "force")
_DEFAULTS_CACHE: dict[tuple, DictConfig] = {}


def _compose(overrides: list[str]) -> DictConfig:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from xsub.config import conf_dir

    if GlobalHydra.instance().is_initialized():
        return compose("config", overrides=overrides)
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        return compose("config", overrides=overrides)


def choices(cfg: DictConfig) -> dict[str, str]:
    """The group options a config was composed from, as far as its values name them."""
    return {
        "task": str(cfg.task.name),
        "model": str(cfg.model.name),
        "pruning": str(cfg.pruning.method),
        "analysis": str(cfg.analysis.name),
    }


def defaults(groups: Mapping[str, str]) -> DictConfig:
    """The config `python -m xsub <group>=<option> ...` composes with nothing else set (cached)."""
    key = tuple(sorted(groups.items()))
    if key not in _DEFAULTS_CACHE:
        _DEFAULTS_CACHE[key] = _compose([f"{g}={o}" for g, o in key])
    return _DEFAULTS_CACHE[key]


def _leaves(node: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(node, dict):
        for k, v in node.items():
            out.update(_leaves(v, f"{prefix}{k}."))
        if not node and prefix:
            out[prefix[:-1]] = {}
        return out
    out[prefix[:-1]] = node
    return out


def _ignored(dotted: str) -> bool:
    return any(dotted == i or dotted.startswith(i + ".") for i in (*IGNORED, *_KEY_FIELDS))


def differences(cfg: DictConfig) -> dict[str, Any]:
    """Dotted settings where `cfg` differs from the defaults of its group options (key fields and
    IGNORED settings aside): what a command line must say to compose it again."""
    base = _leaves(_plain(defaults(choices(cfg))))
    mine = _leaves(_plain(cfg))
    return {k: v for k, v in mine.items() if not _ignored(k) and (k not in base or base[k] != v)}


def upstream(
    cfg: DictConfig,
    stage: str,
    *,
    task: str | None = None,
    lang: str | list[str] | None = None,
    seed: int | None = None,
    pruning: str | None = None,
    mask: str | None = None,
    carry: tuple[str, ...] | None = None,
) -> DictConfig:
    """The config the same command line composes with these fields changed: the settings the user
    gave (every difference from the defaults; with `carry`, only those of these sections plus the
    `debug=` option) stay, and a new task or method brings its own defaults."""
    groups = choices(cfg)
    if task is not None:
        groups["task"] = task
    if pruning is not None:
        groups["pruning"] = pruning
    if groups == choices(cfg) and carry is None:
        out = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    else:
        diffs = differences(cfg)
        if groups["task"] != choices(cfg)["task"]:  # another task brings its own task settings
            diffs = {k: v for k, v in diffs.items() if not k.startswith("task.")}
        debug, diffs = _collapse_debug(diffs, choices(cfg))
        if carry is not None:
            diffs = {k: v for k, v in diffs.items() if k.split(".")[0] in carry}
        if debug:
            groups["debug"] = debug[0].split("=", 1)[1]
        out = OmegaConf.create(OmegaConf.to_container(defaults(groups), resolve=False))
        for dotted, value in diffs.items():
            if OmegaConf.select(out, dotted, default="__absent__") != "__absent__":
                OmegaConf.update(out, dotted, value, merge=False)
        with open_dict(out):
            out.lang = OmegaConf.to_container(cfg.lang)
            out.seed = cfg.seed
            out.paths = OmegaConf.to_container(cfg.paths)
    with open_dict(out):
        out.stage = stage
        if lang is not None:
            codes = [lang] if isinstance(lang, str) else list(lang)
            p = out.get("pruning") or {}
            if str(p.get("method")) in NEURON_METHODS and "languages" in p and not p.languages:
                out.pruning.languages = selected_languages(cfg)  # the set a joint selection compares
            out.lang = {c: {"code": c} for c in codes}
        if seed is not None:
            out.seed = int(seed)
        if mask is not None:
            out.mask.source = mask
    return out


# ---- the command that makes an artifact --------------------------------------------------------------

_COMMAND_SECTIONS = {
    "model": ("task", "model", "data", "train", "precision", "mask", "pruning"),
    "mask": ("task", "model", "data", "train", "precision", "pruning"),
    "analysis": ("task", "model", "data", "train", "precision", "pruning", "analysis"),
    "interpolation": ("task", "model", "data", "train", "precision", "interpolate"),
}


def _float(value: float) -> str:
    """The shorter of 0.005 and 5e-3 (as a user would type it)."""
    plain = repr(value)
    mantissa, exponent = f"{value:e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".")
    short = f"{mantissa}e{int(exponent)}"
    return short if len(short) < len(plain) and float(short) == value else plain


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, float):
        return _float(value)
    if isinstance(value, list):
        return "[" + ",".join(_fmt(v) for v in value) + "]"
    text = str(value)
    if text == "" or any(c in text for c in " ,[]{}()='\"\\$*?!#&|;<>"):
        return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return text


def _arg(dotted: str, value: Any) -> str:
    arg = f"{dotted}={_fmt(value)}"
    return f"'{arg}'" if any(c in arg for c in "[]{}()*?!#&|;<>$ ") and not arg.endswith("'") else arg


def _collapse_debug(diffs: dict[str, Any], groups: Mapping[str, str]) -> tuple[list[str], dict[str, Any]]:
    """`debug=<option>` instead of the settings it sets, when the run has all of them."""
    from xsub.config import conf_dir

    for option in sorted(p.stem for p in (conf_dir() / "debug").glob("*.yaml")):
        with_debug = _leaves(_plain(defaults({**groups, "debug": option})))
        base = _leaves(_plain(defaults(groups)))
        sets = {k: v for k, v in with_debug.items() if not _ignored(k) and base.get(k) != v}
        same = [k for k, v in sets.items() if k in diffs and diffs[k] == v]
        if sets and all(k in diffs for k in sets) and 2 * len(same) >= len(sets):
            return [f"debug={option}"], {k: v for k, v in diffs.items() if k not in same}
    return [], diffs


def command(key: Key, force: bool = False) -> str:
    """The command line that makes `key`'s artifact (one function for every "make it with" line)."""
    cfg = key.cfg
    if cfg is None or key.kind not in _COMMAND_SECTIONS:
        return f"python -m xsub ...  # {key.id}"
    groups = choices(cfg)
    diffs = {
        k: v
        for k, v in differences(cfg).items()
        if k.split(".")[0] in _COMMAND_SECTIONS[key.kind]
        and not (key.kind == "model" and k.startswith("pruning.") and str(cfg.mask.source) == "none")
    }
    extra, diffs = _collapse_debug(diffs, groups)
    args = [f"stage={STAGE[key.kind]}", f"task={cfg.task.name}", f"model={cfg.model.name}"]
    langs = selected_languages(cfg) if "all" not in cfg.lang else ["all"]
    args.append(f"lang={langs[0]}" if len(langs) == 1 else _arg("lang", langs))
    masked = key.kind in ("mask", "analysis") or (key.kind == "model" and str(cfg.mask.source) != "none")
    if masked and groups["pruning"] != "heads":
        args.append(f"pruning={groups['pruning']}")
    if key.kind == "analysis":
        args.append(f"analysis={groups['analysis']}")
    args.append(f"seed={cfg.seed}")
    args += extra
    args += [
        _arg(k, v) for k, v in sorted(diffs.items()) if not k.endswith(".method") and k != "analysis.name"
    ]
    if force:
        args.append("force=true")
    return "python -m xsub " + " ".join(args)


def sweep_command(keys: list[Key]) -> str:
    """One `-m` command line that makes all of `keys` (their commands differ in a few values)."""
    commands = [command(k).split(" ")[3:] for k in keys]
    if len(commands) == 1:
        return command(keys[0])
    order: list[str] = []
    values: dict[str, list[str]] = {}
    for args in commands:
        for arg in args:
            name, _, value = arg.partition("=")
            if name not in values:
                order.append(name)
                values[name] = []
            if value not in values[name]:
                values[name].append(value)
    return "python -m xsub -m " + " ".join(f"{n}={','.join(values[n])}" for n in order)


# ---- reading ----------------------------------------------------------------------------------------


def is_done(directory: Path) -> bool:
    return (Path(directory) / DONE).is_file()


def read_done(directory: Path) -> dict[str, Any]:
    return json.loads((Path(directory) / DONE).read_text())


def done(cfg: Any, key: Key) -> dict[str, Any] | None:
    """The finished artifact's DONE record, or None. A DONE.json that does not parse is corrupt."""
    target = path(cfg, key) / DONE
    if not target.is_file():
        return None
    try:
        return json.loads(target.read_text())
    except (OSError, ValueError) as err:
        raise Missing(
            f"{key.kind} at {target.parent} is corrupt ({err}); redo it with: {command(key, force=True)}"
        ) from err


@contextlib.contextmanager
def reading(cfg: Any, key: Key, what: str = "") -> Iterator[Path]:
    """Hold the shared lock on an input artifact while it is read: waits (and says so) for a job
    writing it; a missing input is one line with the command that makes it."""
    target = path(cfg, key)
    with _locked(cfg, key, shared=True):
        if done(cfg, key) is None:
            label = what or key.kind
            raise Missing(f"no {label} at {target}{near_misses(cfg, key)}; make it with: {command(key)}")
        yield target


def near_misses(cfg: Any, key: Key) -> str:
    """What the store has under the same key fields but other settings (as overrides to pass)."""
    base = base_of(cfg)
    mine = _leaves(key.settings_dict())
    others = []
    for entry in find(base, key.kind, **dict(key.fields)):
        if entry.status != "done":
            continue
        theirs = _leaves(entry.settings)
        diff = [f"{k}={_fmt(v)}" for k, v in sorted(theirs.items()) if mine.get(k, "__absent__") != v]
        if diff:
            others.append(" ".join(diff[:4]) + (" ..." if len(diff) > 4 else ""))
    if not others:
        return ""
    return f" (the store has {len(others)} with other settings, e.g. {others[0]})"


def provenance(cfg: Any, key: Key) -> dict[str, Any]:
    """What a downstream artifact records of an input: identity and the run that wrote it."""
    record = done(cfg, key) or {}
    return {"id": key.id, "path": str(key.rel), "run_id": record.get("run_id", "")}


# ---- locks ------------------------------------------------------------------------------------------


def _lock_file(cfg: Any, key: Key) -> Path:
    """Locks live in one hidden folder, not beside the artifacts."""
    return base_of(cfg) / ".locks" / (str(key.rel).replace(os.sep, "+") + ".lock")


@contextlib.contextmanager
def _locked(cfg: Any, key: Key, shared: bool) -> Iterator[None]:
    lock_file = _lock_file(cfg, key)
    try:
        lock_file.parent.mkdir(parents=True, exist_ok=True)
        fh = open(lock_file, "a+")  # noqa: SIM115 - held for the whole context
    except OSError as err:
        if shared and err.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            yield  # a read-only store: nobody can be writing through this path
            return
        raise
    try:
        mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
        try:
            fcntl.flock(fh, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            action = "writing" if shared else "using"
            log.warning("waiting for %s: another job is %s it", path(cfg, key), action)
            fcntl.flock(fh, mode)
        yield
    finally:
        fcntl.flock(fh, fcntl.LOCK_UN)
        fh.close()


@contextlib.contextmanager
def lock(target: Path) -> Iterator[None]:
    """Exclusive lock for building a file outside any key (e.g. a mask file saved by a user)."""
    lock_file = Path(str(target) + ".lock")
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_file, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def is_locked(cfg: Any, key_rel: Path) -> bool:
    lock_file = base_of(cfg) / ".locks" / (str(key_rel).replace(os.sep, "+") + ".lock")
    if not lock_file.is_file():
        return False
    with open(lock_file, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fh, fcntl.LOCK_UN)
    return False


# ---- writing ----------------------------------------------------------------------------------------

_PARTIAL: list[Path] = []  # resumable states started and not yet committed (named on Ctrl-C)


def current_partial() -> Path | None:
    """The resumable state of the artifact being built when a job is interrupted."""
    return _PARTIAL[-1] if _PARTIAL else None


class Claim:
    """The exclusive right to build one artifact; `done` is its record when it can be reused."""

    def __init__(self, cfg: Any, key: Key, force: bool) -> None:
        self.cfg, self.key, self.force = cfg, key, force
        self.path = path(cfg, key)
        self.partial = self.path.with_name(self.path.name + ".partial")
        self.upstream: list[dict[str, Any]] = []
        self.record: dict[str, Any] = {}  # what DONE.json records beside the identity
        try:
            record = done(cfg, key)
        except Missing:  # a corrupt record of this very artifact: build it again in its place
            record = None
        self.done = None if force else record

    def stale_upstream(self) -> bool:
        """An input recorded in DONE was rewritten since (same identity, new run): recompute."""
        if self.done is None:
            return False
        base = base_of(self.cfg)
        for up in self.done.get("upstream", []):
            record = base / up["path"] / DONE
            if record.is_file() and json.loads(record.read_text()).get("run_id") != up.get("run_id"):
                log.info("input %s was rewritten since; recomputing %s", up["path"], self.path)
                return True
        return False

    def read(self, key: Key, what: str = "") -> contextlib.AbstractContextManager[Path]:
        """Read an input artifact under its shared lock, and record it as an upstream of this one."""
        if all(u["id"] != key.id for u in self.upstream):
            self.upstream.append(provenance(self.cfg, key))
        return reading(self.cfg, key, what)

    def start(self) -> Path:
        """The `.partial` directory that holds resumable state; `force=true` starts it afresh."""
        if self.force and self.partial.exists():
            shutil.rmtree(self.partial)
        self.partial.mkdir(parents=True, exist_ok=True)
        (self.partial / "KEY.json").write_text(json.dumps(_key_record(self.key), indent=2, default=str))
        _PARTIAL.append(self.partial)
        return self.partial

    @contextlib.contextmanager
    def commit(self, record: Mapping[str, Any] | None = None) -> Iterator[Path]:
        """A staging directory: write the artifact's files into it; on success it becomes the
        artifact (config.yaml and DONE.json added last) and the partial state is removed."""
        staging = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.", dir=_mkparent(self.path)))
        try:
            yield staging
            if self.key.cfg is not None:
                (staging / CONFIG).write_text(OmegaConf.to_yaml(self.key.cfg, resolve=True))
            body = {
                **_key_record(self.key),
                "upstream": self.upstream or [provenance(self.cfg, u) for u in self.key.upstream],
                "run_id": uuid.uuid4().hex,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
                **self.record,
                **(record or {}),
            }
            (staging / DONE).write_text(json.dumps(body, indent=2, sort_keys=True, default=str) + "\n")
            _swap_in(staging, self.path)
            self.done = body
        except OSError as err:
            raise disk_error(err, self.path) from err
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(self.partial, ignore_errors=True)
        if self.partial in _PARTIAL:
            _PARTIAL.remove(self.partial)


def _key_record(key: Key) -> dict[str, Any]:
    overrides: list[str] = []
    cmd = ""
    if key.cfg is not None and key.kind in _COMMAND_SECTIONS:
        cmd = command(key)
        shown = ("stage=", "task=", "model=", "lang=", "seed=", "analysis=", "pruning=")  # the key says them
        overrides = [a for a in cmd.split(" ")[3:] if not a.startswith(shown)]
    return {
        "kind": key.kind,
        "id": key.id,
        "path": str(key.rel),
        "hash": key.hash,
        "fields": dict(key.fields),
        "key": "/".join(v for _, v in key.fields),  # the readable fields in their order
        "settings": key.settings_dict(),
        "command": cmd,
        "overrides": overrides,
    }


def _mkparent(target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    return target.parent


def _swap_in(staging: Path, target: Path) -> None:
    if target.exists():  # force=true: the same identity made again
        old = target.with_name(f".{target.name}.old.{os.getpid()}")
        target.rename(old)
        staging.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        staging.rename(target)


@contextlib.contextmanager
def claim(cfg: Any, key: Key, force: bool = False) -> Iterator[Claim]:
    """Build-or-reuse one artifact under its exclusive lock (a second job waits, then reuses)."""
    c = Claim(cfg, key, force)
    if c.done is not None and not c.stale_upstream():
        yield c  # finished: no lock needed to reuse it, so a read-only store works
        return
    try:
        with _locked(cfg, key, shared=False):
            c = Claim(cfg, key, force)  # another job may have finished it while we waited
            if c.stale_upstream():
                c.done = None
            try:
                yield c
            except Exception:  # a failure, not Ctrl-C: an interrupted run names its partial folder
                _drop_empty_partial(c.partial)
                raise
            _drop_empty_partial(c.partial)
    except OSError as err:
        raise disk_error(err, c.path) from err


def _drop_empty_partial(partial: Path) -> None:
    """A run that failed before saving any state leaves nothing to resume from: no partial entry."""
    if partial.is_dir() and all(p.name == "KEY.json" for p in partial.iterdir()):
        shutil.rmtree(partial, ignore_errors=True)
        if partial in _PARTIAL:
            _PARTIAL.remove(partial)


def disk_error(err: OSError, target: Path) -> XsubError | OSError:
    """One line for what a user can fix: a full disk or a store they cannot write."""
    where = err.filename or target
    if err.errno == errno.ENOSPC:
        return XsubError(f"no space left on device writing {where}; free space or move paths.artifacts")
    if err.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return XsubError(
            f"cannot write {where} (read-only store); point paths.artifacts at a writable folder"
        )
    return err


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path next to `target`; on success rename it over `target` (file or dir)."""
    target = Path(target)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=_mkparent(target))) / target.name
    except OSError as err:
        raise disk_error(err, target) from err
    try:
        yield tmp
        if target.is_dir() and tmp.is_dir():
            _swap_in(tmp, target)
        else:
            os.replace(tmp, target)
    except OSError as err:
        raise disk_error(err, target) from err
    finally:
        shutil.rmtree(tmp.parent, ignore_errors=True)


def write_json(target: Path, obj: Any) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_text(target: Path, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text)


# ---- resumable state ---------------------------------------------------------------------------------


class Checkpoint:
    """The one resumable-state helper of every iterative loop (training epochs, pruning rounds, IMP
    events, stitching and Bezier trainings): a torch file stamped with the identity it belongs to.
    A checkpoint of another identity is never resumed from; the loop starts fresh."""

    def __init__(self, file: Path | None, identity: str) -> None:
        self.file = Path(file) if file is not None else None
        self.identity = identity

    def stamped(self, detail: str) -> Checkpoint:
        """The same file, valid only for this loop's own fingerprint too (weights, decisions)."""
        return Checkpoint(self.file, f"{self.identity}#{detail}")

    def child(self, name: str) -> Checkpoint:
        if self.file is None:
            return Checkpoint(None, f"{self.identity}/{name}")
        return Checkpoint(
            self.file.with_name(f"{self.file.stem}.{name}{self.file.suffix}"), f"{self.identity}/{name}"
        )

    def load(self) -> dict[str, Any] | None:
        import torch

        if self.file is None or not self.file.is_file():
            return None
        try:
            saved = torch.load(self.file, map_location="cpu", weights_only=True)
        except Exception as err:  # a torn or foreign file: not a state to resume from
            log.warning("ignoring unreadable checkpoint %s (%s); starting fresh", self.file, err)
            return None
        if not isinstance(saved, dict) or saved.get("identity") != self.identity:
            log.info("checkpoint %s belongs to other settings; starting fresh", self.file)
            return None
        return saved["state"]

    def save(self, state: Mapping[str, Any]) -> None:
        import torch

        if self.file is None:
            return
        with atomic_path(self.file) as tmp:
            torch.save({"identity": self.identity, "state": dict(state)}, tmp)

    def clear(self) -> None:
        if self.file is not None:
            self.file.unlink(missing_ok=True)


# ---- walking the store ------------------------------------------------------------------------------


@dataclass
class Entry:
    """One artifact found in the store."""

    path: Path
    kind: str
    fields: dict[str, str]
    status: str  # done | partial | locked
    record: dict[str, Any]

    @property
    def settings(self) -> dict[str, Any]:
        return self.record.get("settings", {})

    @property
    def overrides(self) -> list[str]:
        return list(self.record.get("overrides", []))


def find(base: Path, kind: str | None = None, **fields: Any) -> list[Entry]:
    """Every artifact under the store root `base` (optionally of one kind, with matching fields)."""
    base = Path(base)
    kinds = [kind] if kind else [k for k in FOLDER if k != "report"]
    entries: list[Entry] = []
    for k in kinds:
        top = base / FOLDER[k]
        if not top.is_dir():
            continue
        for record_file in sorted(top.rglob(DONE)):
            directory = record_file.parent
            if any(part.startswith(".") for part in directory.relative_to(top).parts):
                continue
            try:
                record = json.loads(record_file.read_text())
            except (OSError, ValueError):
                continue
            if record.get("kind") != k:
                continue
            locked = is_locked(base, directory.relative_to(base))
            entries.append(
                Entry(directory, k, record.get("fields", {}), "locked" if locked else "done", record)
            )
        for key_file in sorted(top.rglob("*.partial/KEY.json")):
            directory = key_file.parent
            try:
                record = json.loads(key_file.read_text())
            except (OSError, ValueError):
                continue
            final = directory.with_name(directory.name[: -len(".partial")])
            locked = is_locked(base, final.relative_to(base))
            entries.append(
                Entry(directory, k, record.get("fields", {}), "locked" if locked else "partial", record)
            )
    return [e for e in entries if all(str(e.fields.get(f, "")) == str(v) for f, v in fields.items())]


def size_on_disk(directory: Path) -> int:
    return sum(f.stat().st_size for f in Path(directory).rglob("*") if f.is_file())
