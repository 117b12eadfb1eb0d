"""``/api/v1/modules`` and ``nemo module ...`` against a running `nemo up`: register, rotate, revoke, list, errors."""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.stack import Stack, running_stack
from tests.stack import expect_error as _error

from nemo_kernel.bus import ModuleIdentity

pytestmark = pytest.mark.e2e  # starts `nemo up`: run first (tests/conftest.py)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("modules")
    clusters = root / "clusters.yaml"
    clusters.write_text(yaml.safe_dump({"clusters": []}))
    with running_stack(root / "data", {"NEMO_CLUSTERS_FILE": str(clusters)}) as s:
        yield s


def _public(identity: ModuleIdentity) -> dict[str, Any]:
    return {k: v for k, v in identity.public().to_dict().items() if k != "created_at"}


def test_control_plane_registers_its_own_identity(stack: Stack) -> None:
    identity_file = stack.data_dir / "identities" / "orchestrator.json"
    assert stat.S_IMODE(identity_file.stat().st_mode) == 0o600
    own = ModuleIdentity.load(identity_file)
    entry = stack.api("GET", "/modules/orchestrator").json()
    assert entry["current_key_id"] == own.key_id
    assert "signing_key" not in json.dumps(entry)  # public halves only
    # Its keys are the control plane's business, not the API's.
    _error(stack.api("POST", "/modules/orchestrator/revoke", json={}), 409, "conflict")


def test_register_rotate_revoke_through_the_api(stack: Stack) -> None:
    first, second = ModuleIdentity.generate("ppef"), ModuleIdentity.generate("ppef")
    created = stack.api("POST", "/modules", json=_public(first))
    assert created.status_code == 201, created.text
    assert created.json()["current_key_id"] == first.key_id
    assert stack.api("POST", "/modules", json=_public(first)).status_code == 201  # idempotent

    rotated = stack.api("POST", "/modules/ppef/rotate", json=_public(second)).json()
    assert rotated["current_key_id"] == second.key_id
    assert [(k["key_id"], k["current"], k["revoked"]) for k in rotated["keys"]] == [
        (first.key_id, False, False),
        (second.key_id, True, False),
    ]
    revoked = stack.api("POST", "/modules/ppef/revoke", json={"key_id": first.key_id}).json()
    assert revoked == {"module": "ppef", "revoked": [first.key_id]}
    # Rotating back to a revoked key is a conflict; registering it for another module too.
    _error(stack.api("POST", "/modules/ppef/rotate", json=_public(first)), 409, "conflict")
    _error(stack.api("POST", "/modules", json={**_public(second), "module": "other"}), 409, "conflict")

    third = ModuleIdentity.generate("ppef")
    rotated = stack.api("POST", "/modules/ppef/rotate", json={**_public(third), "revoke_previous": True}).json()
    assert [k["revoked"] for k in rotated["keys"]] == [True, True, False]
    listed = {m["module"]: m for m in stack.api("GET", "/modules").json()}
    assert listed["ppef"]["current_key_id"] == third.key_id and "orchestrator" in listed
    assert stack.api("POST", "/modules/ppef/revoke").json()["revoked"] == [first.key_id, second.key_id, third.key_id]
    assert stack.api("GET", "/modules/ppef").json()["current_key_id"] is None


def test_bad_input_names_the_field(stack: Stack) -> None:
    good = _public(ModuleIdentity.generate("agent-7"))
    for body, field in [
        ({**good, "signing_public": "not base64!"}, "signing_public"),
        ({**good, "encryption_public": "AAAA"}, "encryption_public"),
        ({**good, "key_id": "0123456789abcdef"}, "key_id"),
        ({**good, "module": "Not A Name"}, "module"),
        ({k: v for k, v in good.items() if k != "signing_public"}, "signing_public"),
        ({**good, "signing_key": "-----BEGIN PRIVATE KEY-----"}, "signing_key"),
        ({**good, "revoked": True}, "revoked"),
    ]:
        error = _error(stack.api("POST", "/modules", json=body), 422, "invalid")
        assert field in [d["field"] for d in error["details"]], (field, error)
    _error(
        stack.api("POST", "/modules", content=b"{nope", headers={"content-type": "application/json"}), 400, "malformed"
    )
    _error(stack.api("POST", "/modules/agent-7/rotate", json={**good, "module": "agent-8"}), 422, "invalid")
    _error(stack.api("GET", "/modules/nobody"), 404, "not_found")
    _error(stack.api("POST", "/modules/nobody/rotate", json={**good, "module": "nobody"}), 404, "not_found")
    _error(stack.api("POST", "/modules/nobody/revoke"), 404, "not_found")
    stack.api("POST", "/modules", json=good)
    _error(stack.api("POST", "/modules/agent-7/revoke", json={"key_id": "0000000000000000"}), 404, "not_found")
    assert stack.api("GET", "/modules/agent-7").json()["current_key_id"] == good["key_id"]  # nothing half-applied


def test_registration_declares_the_routing_keys_a_module_reads(stack: Stack) -> None:
    first, second = ModuleIdentity.generate("watcher"), ModuleIdentity.generate("watcher")
    created = stack.api("POST", "/modules", json={**_public(first), "subscriptions": ["cluster.#", "workload.*"]})
    assert created.status_code == 201, created.text
    assert created.json()["subscriptions"] == ["cluster.#", "workload.*"]
    # A rotation without subscriptions keeps them; with them, it replaces them.
    assert stack.api("POST", "/modules/watcher/rotate", json=_public(second)).json()["subscriptions"] == [
        "cluster.#",
        "workload.*",
    ]
    replaced = stack.api("POST", "/modules/watcher/rotate", json={**_public(second), "subscriptions": ["sla.*"]})
    assert replaced.json()["subscriptions"] == ["sla.*"]
    # Re-registering the current key is how a module changes what it reads.
    again = stack.api("POST", "/modules", json={**_public(second), "subscriptions": []})
    assert again.json()["subscriptions"] == []
    assert stack.api("GET", "/modules/orchestrator").json()["subscriptions"] == ["intent.#"]

    newcomer = _public(ModuleIdentity.generate("newcomer"))
    for patterns, field in [
        (["workload.*", "#.Workload"], "subscriptions[1]"),
        (["workload..x"], "subscriptions[0]"),
        (["workload.x\n"], "subscriptions[0]"),
        (["work load"], "subscriptions[0]"),
        ([7], "subscriptions[0]"),
        ("workload.*", "subscriptions"),
        ([f"w{i}" for i in range(65)], "subscriptions"),
    ]:
        error = _error(stack.api("POST", "/modules", json={**newcomer, "subscriptions": patterns}), 422, "invalid")
        assert field in [d["field"] for d in error["details"]], (patterns, error)
    _error(stack.api("GET", "/modules/newcomer"), 404, "not_found")  # nothing half-applied
    bad_rotation = stack.api("POST", "/modules/watcher/rotate", json={**_public(first), "subscriptions": ["#x"]})
    _error(bad_rotation, 422, "invalid")
    assert stack.api("GET", "/modules/watcher").json()["subscriptions"] == []


def test_cli_keygen_register_rotate_revoke_list(stack: Stack, tmp_path: Path) -> None:
    identity_file, public_file = tmp_path / "billing.json", tmp_path / "billing.pub.json"
    printed = json.loads(stack.cli("module", "keygen", "billing", "--out", str(identity_file)).stdout)
    assert stat.S_IMODE(identity_file.stat().st_mode) == 0o600
    identity = ModuleIdentity.load(identity_file)
    assert printed["key_id"] == identity.key_id and set(printed) == {
        "module",
        "key_id",
        "signing_public",
        "encryption_public",
    }
    assert stack.cli("module", "keygen", "billing", "--out", str(identity_file), check=False).returncode != 0
    public_file.write_text(json.dumps(printed))

    registered = stack.cli_json(
        "module", "register", "billing", "--keys", str(public_file), "--subscribe", "workload.*", "--subscribe", "sla.#"
    )
    assert registered["current_key_id"] == identity.key_id
    assert registered["subscriptions"] == ["workload.*", "sla.#"]
    bad = stack.cli("module", "register", "billing", "--keys", str(public_file), "--subscribe", "#.#x", check=False)
    assert bad.returncode != 0 and "subscriptions[0]" in bad.stderr
    # The identity file itself is refused: private keys never leave the module.
    refused = stack.cli("module", "register", "billing", "--keys", str(identity_file), check=False)
    assert refused.returncode != 0 and "private" in refused.stderr

    new_public = tmp_path / "billing-2.pub.json"
    stack.cli("module", "keygen", "billing", "--out", str(tmp_path / "billing-2.json"), "--public", str(new_public))
    rotated = stack.cli_json("module", "rotate", "billing", "--keys", str(new_public), "--revoke-previous")
    assert [k["revoked"] for k in rotated["keys"]] == [True, False]

    assert rotated["subscriptions"] == ["workload.*", "sla.#"]

    table = stack.cli("module", "list").stdout
    assert "billing" in table and "revoked" in table and "current" in table and "workload.*" in table
    as_yaml = yaml.safe_load(stack.cli("module", "list", "-o", "yaml").stdout)
    assert "billing" in {m["module"] for m in as_yaml}
    assert stack.cli_json("module", "revoke", "billing")["revoked"] == [k["key_id"] for k in rotated["keys"]]
    missing = stack.cli("module", "revoke", "nobody", check=False)
    assert missing.returncode != 0 and "404" in missing.stderr
