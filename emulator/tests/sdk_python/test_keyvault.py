"""Key Vault secrets through azure-keyvault-secrets + azure-identity against the emulator, with
the vault's real URL (https://keyturn-demo.vault.azure.net) and the challenge-resource check
on. Fixtures (emu, control) come from conftest.py. The credentials name the tenant by the id
the vault's challenge carries ("contoso"): azure-identity refuses a challenge for another tenant
than the credential's unless additionally_allowed_tenants says so."""

import time
import uuid

import pytest
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from conftest import READER, READER_SECRET, ROTATOR, ROTATOR_SECRET, TENANT



def credential(client_id=ROTATOR, secret=ROTATOR_SECRET):
    from azure.identity import ClientSecretCredential

    return ClientSecretCredential(TENANT, client_id, secret)


@pytest.fixture
def client(emu):
    from azure.keyvault.secrets import SecretClient

    return SecretClient(emu.vault_url, credential())


def counters(control):
    return control._ok(control.http.get(control.base + "/counters"))


def fresh(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_set_get_latest_and_by_version(client, emu):
    name = fresh("py-set")
    first = client.set_secret(name, "First-Value-1", content_type="password", tags={"keyturn-state": "pending"})
    second = client.set_secret(name, "Second-Value-2")
    assert first.properties.version != second.properties.version
    assert len(second.properties.version) == 32
    assert second.properties.vault_url.rstrip("/") == emu.vault_url.rstrip("/")
    latest = client.get_secret(name)
    assert latest.value == "Second-Value-2"
    assert latest.properties.version == second.properties.version
    old = client.get_secret(name, first.properties.version)
    assert old.value == "First-Value-1"
    assert old.properties.content_type == "password"
    assert old.properties.tags == {"keyturn-state": "pending"}
    assert old.properties.enabled is True
    assert old.properties.recovery_level == "Recoverable+Purgeable"
    with pytest.raises(ResourceNotFoundError):
        client.get_secret(fresh("py-missing"))


def test_list_versions_over_several_pages(client):
    name = fresh("py-pages")
    versions = [client.set_secret(name, f"Value-{i}").properties.version for i in range(5)]
    pages = list(client.list_properties_of_secret_versions(name, max_page_size=2).by_page())
    items = [p for page in pages for p in page]
    assert len(pages) == 3, "5 versions at 2 per page follow nextLink twice"
    assert sorted(p.version for p in items) == sorted(versions)
    assert all(p.name == name for p in items)


def test_list_secrets_with_tags(client):
    name = fresh("py-tags")
    client.set_secret(name, "Tagged-Value-1", tags={"owner": "keyturn", "keyturn-state": "current"})
    found = {p.name: p for p in client.list_properties_of_secrets()}
    assert found[name].tags == {"owner": "keyturn", "keyturn-state": "current"}
    assert "svc-coreview-1" in found, "the scenario's seeded secrets are listed too"


def test_update_properties_and_disabled_version(client):
    name = fresh("py-update")
    v1 = client.set_secret(name, "Update-Value-1").properties.version
    v2 = client.set_secret(name, "Update-Value-2").properties.version
    updated = client.update_secret_properties(name, v1, content_type="text/plain", tags={"a": "b"}, enabled=False)
    assert updated.version == v1
    assert updated.enabled is False
    assert updated.content_type == "text/plain"
    assert updated.tags == {"a": "b"}
    with pytest.raises(HttpResponseError) as e:
        client.get_secret(name, v1)
    assert e.value.status_code == 403
    assert client.get_secret(name).properties.version == v2
    # No version: the latest is updated.
    latest = client.update_secret_properties(name, tags={"keyturn-state": "current"})
    assert latest.version == v2 and latest.tags == {"keyturn-state": "current"}
    client.update_secret_properties(name, v1, enabled=True)
    assert client.get_secret(name, v1).value == "Update-Value-1"


def test_soft_delete_recover_and_purge(client):
    name = fresh("py-delete")
    client.set_secret(name, "Delete-Value-1")
    deleted = client.begin_delete_secret(name, _polling_interval=0.05).result()
    assert deleted.name == name
    assert deleted.recovery_id.endswith(f"/deletedsecrets/{name}")
    assert deleted.scheduled_purge_date > deleted.deleted_date
    with pytest.raises(ResourceNotFoundError):
        client.get_secret(name)
    assert client.get_deleted_secret(name).name == name
    assert name in [d.name for d in client.list_deleted_secrets()]
    with pytest.raises(ResourceExistsError) as e:
        client.set_secret(name, "Again-Value-1")
    assert e.value.status_code == 409
    recovered = client.begin_recover_deleted_secret(name, _polling_interval=0.05).result()
    assert recovered.name == name
    assert client.get_secret(name).value == "Delete-Value-1"
    client.begin_delete_secret(name, _polling_interval=0.05).result()
    client.purge_deleted_secret(name)
    with pytest.raises(ResourceNotFoundError):
        client.get_deleted_secret(name)
    client.set_secret(name, "After-Purge-1")


def test_throttling_is_honoured(client, control):
    name = fresh("py-throttle")
    client.set_secret(name, "Throttle-Value-1")
    before = counters(control)["responses"].get("kv.get 429", 0)
    control.add_fault({"route": "kv.get", "kind": "status", "status": 429, "retry_after": 1, "count": 1})
    start = time.monotonic()
    assert client.get_secret(name).value == "Throttle-Value-1"
    assert time.monotonic() - start >= 1.0, "the SDK waited Retry-After before retrying"
    assert counters(control)["responses"]["kv.get 429"] == before + 1


def test_reader_may_read_but_not_write(emu):
    from azure.keyvault.secrets import SecretClient

    reader = SecretClient(emu.vault_url, credential(READER, READER_SECRET))
    assert reader.get_secret("svc-coreview-1").value
    with pytest.raises(HttpResponseError) as e:
        reader.set_secret(fresh("py-denied"), "Denied-Value-1")
    assert e.value.status_code == 403


def test_emulated_vault_throttling_is_waited_out(client, control):
    """Not an injected fault: the emulator's own per-vault limit answers 429 `Throttled` with
    Retry-After = the seconds left in the window, and the SDK's retry policy waits them out."""
    name = fresh("py-limit")
    client.set_secret(name, "Limit-Value-1")
    before = counters(control)["throttled"].get("kv.get", 0)
    control.seed({"limits": {"kv_window_ms": 2000, "kv_other_limit": 2}})
    try:
        values = [client.get_secret(name).value for _ in range(4)]
    finally:
        control.seed({"limits": {}})
    assert values == ["Limit-Value-1"] * 4
    assert counters(control)["throttled"].get("kv.get", 0) > before
