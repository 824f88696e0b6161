"""Purify through a cache on a disk that fills up, in a process of its own.

Usage: ``python tests/_full_disk_worker.py PURIFIER_DIR CACHE_DIR OUT_JSON [FILE_SIZE_LIMIT]``

CACHE_DIR lies on a small filesystem (a tmpfs mounted by the test), or, given FILE_SIZE_LIMIT,
this process may not write files larger than that many bytes (``RLIMIT_FSIZE``, so writes fail
with ``EFBIG`` like a full disk; no DataLoader workers then, whose shared memory is files too).
Writes to OUT_JSON: the warnings raised, whether the served images equal an uncached purification,
and how many shards the cache holds.
"""

from __future__ import annotations

import json
import resource
import signal
import sys
import warnings
from pathlib import Path

import torch
from _cache_worker import load_purifier, make_dataset

from dvae_transform.cache.store import read_manifest_file
from dvae_transform.purified_dataset import PurifiedDataset

SHARD_SIZE = 8


def main(purifier_dir: str, cache_dir: str, out_json: str, limit: str | None = None) -> None:
    torch.set_num_threads(1)
    purifier = load_purifier(purifier_dir)
    data = make_dataset(purifier)
    reference = PurifiedDataset(data, purifier, shard_size=SHARD_SIZE, cache=False, progress=False).images
    result = {}
    if limit is not None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (int(limit), resource.RLIM_INFINITY))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dataset = PurifiedDataset(data, purifier, cache_dir=cache_dir, shard_size=SHARD_SIZE, progress=False,
                                  num_workers=None if limit is None else 0)
        result["equal"] = torch.equal(dataset.images, reference) and torch.equal(dataset.labels, data.tensors[1])
        result["items"] = [torch.equal(dataset[index][0], reference[index]) for index in (0, 21, 47)]
    result["warnings"] = [str(warning.message) for warning in caught]
    resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    manifests = [read_manifest_file(path) for path in Path(cache_dir).glob("*/manifest.json")]
    result["cached_shards"] = sum(len(manifest["shards"]) for manifest in manifests if manifest)
    with open(out_json, "w") as handle:
        json.dump(result, handle)


if __name__ == "__main__":
    main(*sys.argv[1:])
