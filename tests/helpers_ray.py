"""Run as a Ray job's entrypoint by ``tests/test_ray.py``: two Ray Train workers each record
where ``core.training.device.ranks_from_env`` puts them, beside what Ray Train's own context
says, into ``OUT_DIR/rank<N>.json``."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def record_ranks(config: dict) -> None:
    import ray.train

    from core.training.device import ranks_from_env

    ranks = ranks_from_env()
    context = ray.train.get_context()
    seen = {
        "ours": [ranks.rank, ranks.local_rank, ranks.world],
        "ray": [context.get_world_rank(), context.get_local_rank(), context.get_world_size()],
    }
    (Path(config["out"]) / f"rank{ranks.rank}.json").write_text(json.dumps(seen))


def main(out: str) -> None:
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    ray.init()
    TorchTrainer(
        record_ranks,
        train_loop_config={"out": out},
        scaling_config=ScalingConfig(num_workers=2, use_gpu=False, resources_per_worker={"CPU": 1}),
        run_config=RunConfig(name="ranks", storage_path=str(Path(out) / "ray")),
    ).fit()


if __name__ == "__main__":
    main(sys.argv[1])
