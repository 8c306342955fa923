"""The tiny parts-world run that several test modules share (seconds on 2 cores)."""

from repcam.config import RunConfig, from_dict

TINY = {
    "name": "tiny",
    "data": {"kind": "partsworld", "options": {"num_images": 240, "image_size": 32}, "eval_options": {"val": {"num_images": 30}}},
    "backbone": {"name": "tiny_cnn", "input_size": 32},
    "multiclass": {"epochs": 2, "lr": 0.003, "batch_size": 32},
    "pairs": {"epochs": 1, "lr": 0.003, "batch_size": 32, "min_images": 3},
    "evaluation": {"map_size": 32},
}


def tiny_config(**over) -> RunConfig:
    """TINY with ``section__key=value`` overrides."""
    values = {k: (dict(v) if isinstance(v, dict) else v) for k, v in TINY.items()}
    for key, val in over.items():
        section, name = key.split("__")
        values[section] = {**values.get(section, {}), name: val}
    return from_dict(values, "test")


# ---- speed (issue 28): the frozen-trunk tiny run shared by test_featcache and test_budget ----------------------------
def frozen_tiny_config(**over) -> RunConfig:
    """Four classes, one representative each, pairs on a shared layer2 feature cache: a few pair models, enough to
    share one cache (the run of the ``frozen_run`` fixture in conftest.py)."""
    base = dict(pairs__init="multiclass", pairs__freeze_until="layer2", selection__methods=["random"], selection__n=1,
                evaluation__variants=[], data__max_eval_images=8, execution__threads=1,
                data__options={"num_images": 120, "image_size": 32, "n_groups": 2, "classes_per_group": 2})
    return tiny_config(**{**base, **over})


# ---- speed (issue 28): six classes and two representatives, for tests of plumbing that train every pair model -----
SMALL_DATA = {"num_images": 160, "image_size": 32, "n_groups": 2, "classes_per_group": 3}


def small_tiny_config(**over) -> RunConfig:
    """Six classes, two representatives each, selections Random and S-1: 12 pair models instead of TINY's 66, for
    tests whose subject (resume, executors, seeds, where pair models start) is the same with fewer of them."""
    base = dict(data__options=SMALL_DATA, selection__n=2, selection__methods=["random", "s1"])
    return tiny_config(**{**base, **over})
