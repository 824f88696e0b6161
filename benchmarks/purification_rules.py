"""Issue #16 probe: fit D-VAE once per (attack, seed) on Fashion-MNIST 4,000 / 1,000, compare stage 1's
perturbation estimates with the true perturbation, and train the `resnet18_cpu` victim on each purification
rule. Results are appended to /work/research/out/results.jsonl; fits are kept under /work/research/fits.

    THREADS=1 python benchmarks/purification_rules.py lsp --victims published eff2 bitdepth
    THREADS=1 python benchmarks/purification_rules.py lsp --tag zi --fit '{"zero_init_perturbation": true}' \
        --victims published eff2
"""

import argparse
import json
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from dvae_transform import DVAEPurify
from dvae_transform.evaluation.attacks import make_poison
from dvae_transform.evaluation.baselines import BitDepthReduction, JPEGCompression
from dvae_transform.evaluation.datasets import load_bench_data
from dvae_transform.evaluation.defenses import JPEG_QUALITY
from dvae_transform.evaluation.victims import accuracy, train_victim
from dvae_transform.precision import quantize
from dvae_transform.purify import purify_two_stage
from dvae_transform.training.losses import psnr

ap = argparse.ArgumentParser()
ap.add_argument("attack")
ap.add_argument("--seed", type=int, default=0)
ap.add_argument("--victims", nargs="*", default=[])
ap.add_argument("--fit", default="{}")
ap.add_argument("--tag", default="fast")
a = ap.parse_args()

torch.set_num_threads(int(os.environ.get("THREADS", "1")))
out = Path("/work/research/out")
out.mkdir(exist_ok=True)
data = load_bench_data("fashion-mnist", None, train=4000, test=1000, seed=0)
x0, y = data.train_images, data.train_labels
x = x0 if a.attack == "clean" else make_poison(a.attack, x0, y, num_classes=10, seed=a.seed)
fitdir = Path(f"/work/research/fits/{a.tag}_{a.attack}_s{a.seed}")
t = time.time()
if fitdir.exists():
    pur = DVAEPurify.from_pretrained(fitdir)
else:
    pur = DVAEPurify.fit((x, y), 10, preset="fast", seed=a.seed, progress=False, **json.loads(a.fit))
    pur.save_pretrained(fitdir)
    (fitdir / "history.json").write_text(json.dumps(pur.history))
fit_s = time.time() - t
s1, s2 = pur.stage1.eval(), pur.stage2.eval()


@torch.inference_mode()
def parts(model, imgs, labels):
    rec, p, pm, p0 = [], [], [], []
    for i in range(0, len(imgs), 500):
        xb, yb = imgs[i : i + 500], labels[i : i + 500]
        h, mu, lv = model.encode(xb)
        z = model.from_latent(mu)
        rec.append(model.image_decoder(z))
        dec = model.perturbation_decoder
        E = model.class_embedding.weight.view(-1, *model.latent_shape)
        base = z if model.embedding_target == "latent" else h
        p.append(dec(base + E[yb]))
        pm.append(torch.stack([dec(base + E[c].expand_as(base)) for c in range(E.shape[0])]).mean(0))
        p0.append(dec(base + E.mean(0)))
    return [torch.cat(v) for v in (rec, p, pm, p0)]


rec, p, pm, p0 = parts(s1, x, y)
delta = x - x0


def cos(e):
    if not delta.any():
        return None
    return F.cosine_similarity(e.flatten(1).double(), delta.flatten(1).double(), dim=1).mean().item()


def ccos(e):
    if not delta.any():
        return None
    return (
        sum(
            F.cosine_similarity(
                e[y == c].mean(0).flatten().double(), delta[y == c].mean(0).flatten().double(), dim=0
            ).item()
            for c in range(10)
        )
        / 10
    )


est = {"raw": p, "eff": (rec + p).clamp(0, 1) - rec, "ld_mean": p - pm, "ld_meanemb": p - p0}
res = {
    "attack": a.attack,
    "seed": a.seed,
    "tag": a.tag,
    "fit_s": fit_s,
    "psnr_poisoned": psnr(x, x0).item(),
    "psnr_rec1": psnr(rec, x0).item(),
}
x1s = {}
for k, e in est.items():
    x1 = quantize(x - e)
    x1s[k] = x1
    res[f"cos_{k}"] = cos(e)
    res[f"ccos_{k}"] = ccos(e)
    res[f"psnr_x1_{k}"] = psnr(x1, x0).item()
    res[f"rms_{k}"] = e.pow(2).mean().sqrt().item()
print(json.dumps(res, indent=1), flush=True)
variants = {
    "none": lambda: x,
    "bitdepth": lambda: BitDepthReduction().purify(x, y),
    "jpeg": lambda: JPEGCompression(quality=JPEG_QUALITY).purify(x, y),
    "published": lambda: purify_two_stage(s1, s2, x, y),
    **{f"s1_{k}": (lambda k=k: x1s[k]) for k in est},
    **{f"s1_{k}_s2rec": (lambda k=k: purify_two_stage_from(x1s[k])) for k in est},
}


@torch.inference_mode()
def eff_two_stage():
    x1 = x1s["eff"]
    out = []
    for i in range(0, len(x1), 500):
        xb, yb = x1[i : i + 500], y[i : i + 500]
        o = s2(xb, yb, sample=False)
        xc = (xb - ((o.reconstruction + o.perturbation).clamp(0, 1) - o.reconstruction)).clamp(0, 1)
        out.append(s2.reconstruct(xc).clamp(0, 1))
    return torch.cat(out)


variants["eff2"] = eff_two_stage


def purify_two_stage_from(x1):
    from dvae_transform.purify import reconstruct

    return reconstruct(s2, x1)


for v in a.victims:
    t = time.time()
    imgs = variants[v]()
    m = train_victim(imgs, y, victim="resnet18_cpu", seed=a.seed)
    acc = accuracy(m, data.test_images, data.test_labels)
    r = {**res, "variant": v, "acc": acc, "psnr_out": psnr(imgs, x0).item(), "victim_s": time.time() - t}
    print(f"{a.tag} {a.attack} s{a.seed} {v}: acc {acc:.3f} psnr {r['psnr_out']:.2f}", flush=True)
    with open(out / "results.jsonl", "a") as f:
        f.write(json.dumps(r) + "\n")
