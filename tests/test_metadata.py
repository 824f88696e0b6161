"""Package metadata: the version, and what every saved model's card says about the library and the paper."""

from __future__ import annotations

import configparser
import re
from pathlib import Path

from huggingface_hub import ModelHubMixin
from packaging.version import Version

import dvae_transform
from dvae_transform import metadata
from dvae_transform.metadata import hub_metadata

REPO = Path(__file__).resolve().parents[1]
SETUP = configparser.ConfigParser()
SETUP.read(REPO / "setup.cfg")
HUB_TAG = re.compile(r"[a-z0-9]+(-[a-z0-9]+)*")  # the Hub's lowercase, hyphenated tag form


def test_the_version_is_declared_once_and_is_a_release_version() -> None:
    assert SETUP["metadata"]["version"] == "attr: dvae_transform.metadata.__version__"
    assert dvae_transform.__version__ == metadata.__version__
    version = Version(metadata.__version__)
    assert str(version) == metadata.__version__ and not version.is_prerelease and not version.is_devrelease


def test_the_hub_metadata_names_the_package_its_license_and_the_paper() -> None:
    card = hub_metadata()
    assert card["library_name"] == SETUP["metadata"]["name"]
    assert card["license"] == SETUP["metadata"]["license"].lower()
    assert re.fullmatch(r"https://arxiv\.org/abs/\d{4}\.\d{4,5}", card["paper_url"])
    assert card["pipeline_tag"] == "image-to-image"  # a purifier maps images to images


def test_the_tags_are_hub_tags_led_by_the_library_name() -> None:
    tags = hub_metadata()["tags"]
    assert isinstance(tags, list) and tags[0] == hub_metadata()["library_name"]
    assert len(set(tags)) == len(tags) and all(HUB_TAG.fullmatch(tag) for tag in tags)
    assert {"unlearnable-examples", "pytorch"} <= set(tags)


def test_each_call_returns_a_fresh_dict_and_tag_list() -> None:
    first = hub_metadata()
    first["tags"].append("added-by-the-hub")
    first["license"] = "other"
    assert "added-by-the-hub" not in hub_metadata()["tags"] and hub_metadata()["license"] == "mit"


def test_a_hub_mixin_class_built_with_it_writes_the_card_the_hub_needs() -> None:
    class Probe(ModelHubMixin, **hub_metadata()):
        pass

    card = Probe().generate_model_card()
    expected = hub_metadata()
    assert card.data.library_name == expected["library_name"] and card.data.license == expected["license"]
    assert card.data.pipeline_tag == expected["pipeline_tag"] and set(expected["tags"]) <= set(card.data.tags)
    assert f"Paper: {expected['paper_url']}" in card.text


def test_the_bundled_model_cards_cite_the_same_paper() -> None:
    cards = sorted((REPO / "dvae_transform" / "pretrained" / "bundled").glob("*/README.md"))
    assert cards and all(metadata.PAPER_URL in card.read_text(encoding="utf-8") for card in cards)
