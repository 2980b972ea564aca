"""Inventory ConfigMaps: encode/decode round trips, and unreadable inventories are never read as empty."""

from __future__ import annotations

import json

import pytest

from fleet import inventory, model

REFS = [
    model.ObjectRef("apps", "v1", "Deployment", "web", "api"),
    model.ObjectRef("", "v1", "Namespace", "", "web"),
    model.ObjectRef("example.com", "v1", "Widget", "web", "w1"),
]


def test_an_inventory_round_trips_through_its_configmap() -> None:
    cm = inventory.encode("web", REFS, instance="fleet")
    assert cm["metadata"]["name"] == "fleet-inventory-web"
    assert cm["metadata"]["namespace"] == "fleet-system"
    assert cm["metadata"]["labels"] == {"fleet.dev/owner": "fleet", "fleet.dev/inventory": "true"}
    decoded = inventory.decode(
        {**cm, "metadata": {**cm["metadata"], "resourceVersion": "7"}}, instance="fleet"
    )
    assert decoded.bundle == "web"
    assert decoded.refs == frozenset(REFS)
    assert decoded.resource_version == "7"


def test_the_encoding_is_sorted_and_stable_whatever_the_input_order() -> None:
    a = inventory.encode("web", REFS, instance="fleet")
    b = inventory.encode("web", list(reversed(REFS)), instance="fleet")
    assert a == b
    rows = json.loads(a["data"]["objects"])
    assert rows == sorted(rows)


def test_the_instance_names_the_configmap_and_the_selector() -> None:
    cm = inventory.encode("db", REFS[:1], instance="blue")
    assert cm["metadata"]["name"] == "blue-inventory-db"
    assert inventory.selector(instance="blue") == "fleet.dev/owner=blue,fleet.dev/inventory=true"


@pytest.mark.parametrize(
    "objects",
    [
        "not json",
        json.dumps({"a": 1}),
        json.dumps([["apps", "v1", "Deployment", "web"]]),
        json.dumps([[1, 2, 3, 4, 5]]),
    ],
)
def test_an_unreadable_inventory_raises_naming_the_configmap(objects: str) -> None:
    cm = inventory.encode("web", REFS, instance="fleet")
    cm["data"]["objects"] = objects
    with pytest.raises(inventory.InventoryError, match="ConfigMap/fleet-system/fleet-inventory-web"):
        inventory.decode(cm, instance="fleet")


def test_decode_all_separates_broken_inventories_from_good_ones() -> None:
    good = inventory.encode("web", REFS, instance="fleet")
    bad = inventory.encode("db", REFS, instance="fleet")
    bad["data"]["objects"] = "{"
    found, broken = inventory.decode_all([good, bad], instance="fleet")
    assert set(found) == {"web"}
    assert set(broken) == {"db"}
    assert "data.objects is not JSON" in broken["db"]


def test_an_empty_inventory_decodes_to_no_refs() -> None:
    cm = inventory.encode("web", [], instance="fleet")
    assert inventory.decode(cm, instance="fleet").refs == frozenset()


@pytest.mark.parametrize(
    "data",
    [{"bundle": "web"}, None, ["web"], {"bundle": "web", "objects": None}],
    ids=["no objects", "no data", "data a list", "objects null"],
)
def test_an_inventory_without_its_object_list_is_unreadable_not_empty(data: object) -> None:
    cm = inventory.encode("web", REFS, instance="fleet")
    cm["data"] = data
    with pytest.raises(inventory.InventoryError, match=r"ConfigMap/fleet-system/fleet-inventory-web: .*data"):
        inventory.decode(cm, instance="fleet")
