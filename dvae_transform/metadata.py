"""Package metadata, declared once: the version and what the Hub shows for every saved model."""

from __future__ import annotations

__version__ = "0.1.0"

LIBRARY_NAME = "dvae-transform"
PAPER_URL = "https://arxiv.org/abs/2405.01460"

TAGS = ("dvae-transform", "unlearnable-examples", "availability-poisoning", "data-purification", "pytorch")


def hub_metadata() -> dict[str, object]:
    """The class keywords of every Hub-enabled class (``DVAE`` and ``DVAEPurify``).

    Model cards written by either carry the same library name, tags, license and paper. A new dict
    each call: ``huggingface_hub`` appends its own tags to the list it is given.
    """
    return {
        "library_name": LIBRARY_NAME,
        "tags": list(TAGS),
        "license": "mit",
        "paper_url": PAPER_URL,
        "pipeline_tag": "image-to-image",
    }
