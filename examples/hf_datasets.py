"""Purify a Hugging Face ``datasets.Dataset`` and train on it with ``with_format("torch")``.

``PurifiedDataset(...).to_hf_dataset()`` returns the dataset with its image column replaced
by the purified images (other columns kept), so the rest of a ``datasets`` pipeline is
unchanged: ``with_format``, ``map``, ``save_to_disk``.

    python examples/hf_datasets.py --fit                   # uoft-cs/cifar10 from the Hub
    python examples/hf_datasets.py --data ./saved --weights ./purifier --save-to ./purified
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import datasets
import torch
from torch import nn
from torch.utils.data import DataLoader

from dvae_transform import PurifiedDataset
from dvae_transform.cli import purifier_from_args, script_parser
from dvae_transform.data.sources import hf_columns
from dvae_transform.evaluation.victims import small_cnn


def load_train_split(args: argparse.Namespace) -> datasets.Dataset:
    """The ``train`` split of a ``save_to_disk`` folder, or the first ``--limit`` CIFAR-10 images from the Hub."""
    if args.data is None:
        return datasets.load_dataset("uoft-cs/cifar10", split=f"train[:{args.limit}]")
    loaded = datasets.load_from_disk(args.data)
    return loaded["train"] if isinstance(loaded, datasets.DatasetDict) else loaded


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = script_parser(__doc__.split("\n\n")[0], epochs=2, batch_size=64,
                           data="a save_to_disk folder (default: uoft-cs/cifar10 from the Hub)")
    parser.add_argument("--limit", type=int, default=5000, help="CIFAR-10 images to use from the Hub (default: 5000)")
    parser.add_argument("--image-column", help="image column (default: image/img/pixel_values)")
    parser.add_argument("--label-column", help="label column (default: label/labels/fine_label)")
    parser.add_argument("--save-to", help="also save the purified dataset here with save_to_disk")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, object]:
    """Purify the dataset, train a small classifier on it; returns the purified dataset and the losses."""
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    train = load_train_split(args)
    image_column, label_column = hf_columns(train, args.image_column, args.label_column)
    purifier = purifier_from_args(args, train, image_column=image_column, label_column=label_column, seed=args.seed)

    purified = PurifiedDataset(train, purifier, image_column=image_column, label_column=label_column).to_hf_dataset()
    if args.save_to is not None:
        purified.save_to_disk(args.save_to)

    loader = DataLoader(purified.with_format("torch", columns=[image_column, label_column]),
                        batch_size=args.batch_size, shuffle=True)
    model = small_cnn(purifier.in_channels, purifier.num_classes)
    model(torch.zeros(1, purifier.in_channels, purifier.image_size, purifier.image_size))  # size the lazy layer
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for epoch in range(args.epochs):
        total = 0.0
        for batch in loader:
            images = batch[image_column]
            images = images.float() / 255 if images.dtype == torch.uint8 else images  # Image columns load as uint8
            loss = nn.functional.cross_entropy(model(images), batch[label_column])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(images)
        losses.append(total / len(purified))
        print(f"epoch {epoch + 1}/{args.epochs}: loss {losses[-1]:.4f}")
    return {"dataset": purified, "losses": losses}


if __name__ == "__main__":
    main()
