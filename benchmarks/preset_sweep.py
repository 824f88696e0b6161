"""Sweep of candidate ``fast`` presets: fit, purify and train the victim per attack (one config per process).

Usage (from the repository root): ``bash benchmarks/preset_sweep.sh`` with ``OUT`` set to a results folder;
each process writes ``$OUT/<name>.json``. The MNIST split is cached in ``sweep/mnist.pt``.
"""

import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, os.getcwd())
from dvae_transform import DVAEPurify
from dvae_transform.evaluation.attacks import make_poison
from dvae_transform.evaluation.victims import accuracy, train_victim
from dvae_transform.purify import remove_perturbation
from dvae_transform.training.losses import psnr

name, overrides = sys.argv[1], json.loads(sys.argv[2])
attacks = sys.argv[3].split(",")
out = os.environ.get("OUT", "/tmp")
torch.set_num_threads(2)
if not Path("sweep/mnist.pt").is_file():
    from dvae_transform.evaluation.mnist import load_mnist32

    Path("sweep").mkdir(exist_ok=True)
    split = load_mnist32()
    torch.save({key: getattr(split, key) for key in split._fields}, "sweep/mnist.pt")
d = torch.load("sweep/mnist.pt")
dev = "cuda" if torch.cuda.is_available() else "cpu"
res = {"name": name, "overrides": overrides, "rows": []}
for atk in attacks:
    t = time.time()
    if atk == "clean":
        xp = d["train_images"]
    else:
        xp = make_poison(atk, d["train_images"], d["train_labels"], seed=0)
    atk_s = time.time() - t
    row = {"attack": atk, "attack_s": atk_s}
    if name == "none":
        m = train_victim(xp, d["train_labels"], device=dev)
        row["acc"] = accuracy(m, d["test_images"], d["test_labels"])
    else:
        t = time.time()
        p = DVAEPurify.fit((xp, d["train_labels"]), progress=False, **overrides)
        row["fit_s"] = time.time() - t
        xc = p.purify(xp, d["train_labels"])
        x1 = remove_perturbation(p.stage1, xp.to(p.device), d["train_labels"].to(p.device))
        clean = d["train_images"]
        row["psnr_poisoned"] = psnr(xp, clean).item()
        row["psnr_stage1"] = psnr(x1, clean).item()
        row["psnr_final"] = psnr(xc, clean).item()
        if atk != "clean":
            cosine = torch.nn.functional.cosine_similarity((xp - x1).flatten(1), (xp - clean).flatten(1))
            row["cos_stage1"] = cosine.mean().item()
        row["kl_end"] = [h["kl"] for h in p.history if h["epoch"] == max(hh["epoch"] for hh in p.history)]
        m = train_victim(xc, d["train_labels"], device=dev)
        row["acc"] = accuracy(m, d["test_images"], d["test_labels"])
    res["rows"].append(row)
    print(name, row, flush=True)
    json.dump(res, open(f"{out}/{name}.json", "w"), indent=1)
