"""azure-identity credentials against the emulator; tokens checked with PyJWT against jwks_uri;
one Key Vault round trip proving token + challenge end to end."""

import time
import uuid

import jwt
import pytest
from azure.core.exceptions import ClientAuthenticationError
from azure.identity import (
    ClientSecretCredential,
    CredentialUnavailableError,
    ManagedIdentityCredential,
    WorkloadIdentityCredential,
)
from azure.keyvault.secrets import SecretClient

from conftest import (
    FIC_AUDIENCE,
    FIC_ISSUER,
    FIC_SUBJECT,
    GRAPH,
    HELPDESK,
    HELPDESK_EXPIRED_SECRET,
    MSI_CLIENT_ID,
    READER,
    ROLE_IDS,
    ROTATOR,
    TENANT,
    TENANT_DOMAIN,
    VAULT_AUD,
)


@pytest.mark.parametrize("tenant", [TENANT, TENANT_DOMAIN])
def test_client_secret_credential_token_validates_against_jwks(tenant, validate):
    from conftest import ROTATOR_SECRET

    cred = ClientSecretCredential(tenant, ROTATOR, ROTATOR_SECRET)
    tok = cred.get_token(VAULT_AUD + "/.default")
    assert tok.expires_on > time.time() + 600
    claims = validate(tok.token, VAULT_AUD)
    assert claims["appid"] == ROTATOR
    assert claims["tid"] == TENANT
    assert claims["idtyp"] == "app"
    assert jwt.get_unverified_header(tok.token)["alg"] == "RS256"


def test_graph_token_carries_permissions_and_role_template_ids(rotator_credential, validate):
    tok = rotator_credential.get_token(GRAPH + "/.default")
    claims = validate(tok.token, GRAPH)
    assert "User-PasswordProfile.ReadWrite.All" in claims["roles"]
    assert claims["wids"] == [ROLE_IDS["Privileged Authentication Administrator"]]


def test_a_token_for_another_audience_fails_validation(rotator_credential, validate):
    tok = rotator_credential.get_token(VAULT_AUD + "/.default")
    with pytest.raises(jwt.InvalidAudienceError):
        validate(tok.token, GRAPH)


def test_a_tampered_token_fails_validation(rotator_credential, validate):
    tok = rotator_credential.get_token(VAULT_AUD + "/.default").token
    head, payload, sig = tok.split(".")
    forged = jwt.utils.base64url_encode(
        jwt.utils.base64url_decode(payload).replace(b'"idtyp":"app"', b'"idtyp":"usr"')
    ).decode()
    with pytest.raises(jwt.InvalidSignatureError):
        validate("%s.%s.%s" % (head, forged, sig), VAULT_AUD)


def test_wrong_client_secret_is_aadsts7000215():
    cred = ClientSecretCredential(TENANT, ROTATOR, "not-the-secret")
    with pytest.raises(ClientAuthenticationError) as e:
        cred.get_token(GRAPH + "/.default")
    assert "AADSTS7000215" in str(e.value)


def test_expired_client_secret_is_aadsts7000222():
    cred = ClientSecretCredential(TENANT, HELPDESK, HELPDESK_EXPIRED_SECRET)
    with pytest.raises(ClientAuthenticationError) as e:
        cred.get_token(GRAPH + "/.default")
    assert "AADSTS7000222" in str(e.value)


def test_unknown_tenant_is_refused_at_discovery():
    cred = ClientSecretCredential("nowhere.example", ROTATOR, "x")
    with pytest.raises(ClientAuthenticationError) as e:
        cred.get_token(GRAPH + "/.default")
    assert "AADSTS90002" in str(e.value) or "nowhere.example" in str(e.value)


def _app_service_env(monkeypatch, emu):
    monkeypatch.setenv("IDENTITY_ENDPOINT", emu.identity_endpoint)
    monkeypatch.setenv("IDENTITY_HEADER", emu.identity_header)


def test_managed_identity_app_service_system_assigned(monkeypatch, emu, validate):
    _app_service_env(monkeypatch, emu)
    tok = ManagedIdentityCredential().get_token(VAULT_AUD + "/.default")
    claims = validate(tok.token, VAULT_AUD)
    assert claims["appid"] == ROTATOR  # the identity acts as keyturn-rotator
    assert tok.expires_on > time.time() + 600


def test_managed_identity_app_service_user_assigned_by_client_id(monkeypatch, emu, validate):
    _app_service_env(monkeypatch, emu)
    tok = ManagedIdentityCredential(client_id=MSI_CLIENT_ID).get_token(GRAPH + "/.default")
    assert validate(tok.token, GRAPH)["appid"] == ROTATOR


def test_managed_identity_unknown_client_id_fails(monkeypatch, emu):
    _app_service_env(monkeypatch, emu)
    cred = ManagedIdentityCredential(client_id=str(uuid.uuid4()))
    with pytest.raises((ClientAuthenticationError, CredentialUnavailableError)):
        cred.get_token(VAULT_AUD + "/.default")


def test_managed_identity_wrong_header_fails(monkeypatch, emu):
    _app_service_env(monkeypatch, emu)
    monkeypatch.setenv("IDENTITY_HEADER", "wrong")
    with pytest.raises((ClientAuthenticationError, CredentialUnavailableError)):
        ManagedIdentityCredential().get_token(VAULT_AUD + "/.default")


def _federated_token_file(tmp_path, subject=FIC_SUBJECT):
    now = int(time.time())
    assertion = jwt.encode(
        {"iss": FIC_ISSUER, "sub": subject, "aud": FIC_AUDIENCE, "iat": now, "nbf": now, "exp": now + 600},
        "kubernetes-signing-key-not-checked-by-the-emulator",
        algorithm="HS256",
    )
    path = tmp_path / "token"
    path.write_text(assertion)
    return str(path)


def test_workload_identity_from_environment(monkeypatch, tmp_path, validate):
    monkeypatch.setenv("AZURE_TENANT_ID", TENANT)
    monkeypatch.setenv("AZURE_CLIENT_ID", ROTATOR)
    monkeypatch.setenv("AZURE_FEDERATED_TOKEN_FILE", _federated_token_file(tmp_path))
    monkeypatch.setenv("AZURE_AUTHORITY_HOST", "https://login.microsoftonline.com")
    tok = WorkloadIdentityCredential().get_token(GRAPH + "/.default")
    claims = validate(tok.token, GRAPH)
    assert claims["appid"] == ROTATOR


def test_workload_identity_wrong_subject_is_aadsts700213(tmp_path):
    cred = WorkloadIdentityCredential(
        tenant_id=TENANT,
        client_id=ROTATOR,
        token_file_path=_federated_token_file(tmp_path, subject="system:serviceaccount:other:other"),
    )
    with pytest.raises(ClientAuthenticationError) as e:
        cred.get_token(GRAPH + "/.default")
    assert "AADSTS700213" in str(e.value)


def test_key_vault_set_and_get_with_the_challenge_check_on(emu, secret_client):
    name = "py-smoke-" + uuid.uuid4().hex[:8]
    s = secret_client.set_secret(name, "smoke-value-1", content_type="text/plain")
    assert s.id.startswith("%s/secrets/%s/" % (emu.vault_url, name)), s.id
    got = secret_client.get_secret(name)
    assert got.value == "smoke-value-1"
    assert got.properties.version == s.properties.version
    assert got.properties.content_type == "text/plain"


def test_key_vault_challenge_for_another_tenant_name_is_refused_by_the_sdk(emu):
    # The challenge names the tenant id; azure-identity will not answer it with a credential
    # made for the domain name (it would in real Azure too, whose challenge carries the GUID).
    from conftest import ROTATOR_SECRET

    client = SecretClient(emu.vault_url, ClientSecretCredential(TENANT_DOMAIN, ROTATOR, ROTATOR_SECRET))
    with pytest.raises(ClientAuthenticationError) as e:
        client.get_secret("anything")
    assert "additionally_allowed_tenants" in str(e.value)


def test_key_vault_reader_cannot_write(emu, reader_credential):
    from azure.core.exceptions import HttpResponseError

    client = SecretClient(emu.vault_url, reader_credential)
    with pytest.raises(HttpResponseError) as e:
        client.set_secret("py-denied", "x")
    assert e.value.status_code == 403
