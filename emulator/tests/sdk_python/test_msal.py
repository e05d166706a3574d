"""msal: ConfidentialClientApplication client credentials and ROPC
(acquire_token_by_username_password), success and every AADSTS answer keyturn relies on."""

import msal
import pytest

from conftest import (
    GRAPH,
    HELPDESK,
    HELPDESK_EXPIRED_SECRET,
    HELPDESK_SECRET,
    READER,
    ROTATOR,
    ROTATOR_SECRET,
    SVC_CA,
    TENANT,
    TENANT_DOMAIN,
)

AUTHORITY = "https://login.microsoftonline.com/" + TENANT_DOMAIN
SCOPES = [GRAPH + "/.default"]


def app(client_id=ROTATOR, secret=ROTATOR_SECRET, tenant=TENANT_DOMAIN):
    return msal.ConfidentialClientApplication(
        client_id,
        client_credential=secret,
        authority="https://login.microsoftonline.com/" + tenant,
    )


@pytest.mark.parametrize("tenant", [TENANT, TENANT_DOMAIN])
def test_client_credentials_and_the_token_cache(tenant, validate):
    a = app(tenant=tenant)
    first = a.acquire_token_for_client(SCOPES)
    assert "access_token" in first, first
    assert first.get("token_type") == "Bearer"
    claims = validate(first["access_token"], GRAPH)
    assert claims["appid"] == ROTATOR
    second = a.acquire_token_for_client(SCOPES)
    assert second["access_token"] == first["access_token"]
    assert second.get("token_source") == "cache"


@pytest.mark.parametrize(
    "client_id,secret,code,error",
    [
        (ROTATOR, "wrong", 7000215, "invalid_client"),
        (HELPDESK, HELPDESK_EXPIRED_SECRET, 7000222, "invalid_client"),
        ("99999999-9999-9999-9999-999999999999", "x", 700016, "unauthorized_client"),
    ],
)
def test_client_credential_errors(client_id, secret, code, error):
    r = app(client_id, secret).acquire_token_for_client(SCOPES)
    assert "access_token" not in r
    assert r["error"] == error, r
    assert r["error_codes"] == [code], r
    assert r["error_description"].startswith("AADSTS%d: " % code), r


def test_ropc_success_gives_tokens_and_an_account(new_user, validate):
    upn, password = new_user(display_name="Py ROPC", directory_roles=["User Administrator"])
    a = app()
    r = a.acquire_token_by_username_password(upn, password, scopes=SCOPES)
    assert "access_token" in r, r
    claims = validate(r["access_token"], GRAPH)
    assert claims["upn"] == upn
    assert claims["idtyp"] == "user"
    assert claims["wids"] == ["fe930be7-5e62-47db-91af-98c3a49a38b1"]
    # MSAL checked the v2.0 id_token (issuer, audience) and keeps the account.
    assert r["id_token_claims"]["preferred_username"] == upn
    assert r["id_token_claims"]["aud"] == ROTATOR
    assert [x["username"] for x in a.get_accounts()] == [upn]
    silent = a.acquire_token_silent(SCOPES, account=a.get_accounts()[0])
    assert silent and silent["access_token"] == r["access_token"]


def test_ropc_as_a_public_client_needs_no_secret(control, new_user):
    # A public client needs no secret, but consent all the same (AADSTS65001 without it):
    # seed one with tenant-wide consent for what MSAL asks.
    control.seed(
        {
            "apps": [
                {
                    "tenant": TENANT,
                    "name": "py-public",
                    "client_id": "66666666-6666-6666-6666-666666666666",
                    "public_client": True,
                }
            ],
            "oauth2_permission_grants": [
                {
                    "app": "66666666-6666-6666-6666-666666666666",
                    "scope": "openid profile offline_access User.Read",
                }
            ],
        }
    )
    upn, password = new_user()
    pca = msal.PublicClientApplication(
        "66666666-6666-6666-6666-666666666666", authority=AUTHORITY
    )
    r = pca.acquire_token_by_username_password(upn, password, scopes=SCOPES)
    assert "access_token" in r, r


@pytest.mark.parametrize(
    "fields,wrong_password,code,error",
    [
        ({}, True, 50126, "invalid_grant"),  # bad password (also: replication after a reset)
        ({"disabled": True}, False, 50057, "invalid_grant"),
        ({"password_expired": True}, False, 50055, "invalid_grant"),
        ({"mfa_required": True}, False, 50076, "interaction_required"),
        ({"mfa_registration_required": True}, False, 50079, "interaction_required"),
        ({"ca_blocked": True}, False, 53003, "invalid_grant"),
        ({"security_defaults_blocked": True}, False, 530035, "invalid_grant"),
    ],
    ids=["50126-bad-password", "50057-disabled", "50055-expired", "50076-mfa",
         "50079-mfa-registration", "53003-conditional-access", "530035-security-defaults"],
)
def test_ropc_aadsts_answers(new_user, fields, wrong_password, code, error):
    upn, password = new_user(**fields)
    r = app().acquire_token_by_username_password(
        upn, "Not-The-Password-1" if wrong_password else password, scopes=SCOPES
    )
    assert "access_token" not in r, r
    assert r["error"] == error, r
    assert r["error_codes"] == [code], r
    assert r["error_description"].startswith("AADSTS%d: " % code), r
    assert r.get("correlation_id"), r


def test_ropc_unknown_user_is_50034():
    r = app().acquire_token_by_username_password(
        "nobody@" + TENANT_DOMAIN, "Whatever-Pass-1", scopes=SCOPES
    )
    assert r["error_codes"] == [50034], r


def test_ropc_lockout_is_50053_after_the_threshold(new_user):
    upn, password = new_user()
    a = app()
    codes = [
        a.acquire_token_by_username_password(upn, "Wrong-Pass-%d!" % i, scopes=SCOPES)["error_codes"][0]
        for i in range(10)
    ]
    assert codes == [50126] * 10
    r = a.acquire_token_by_username_password(upn, password, scopes=SCOPES)
    assert r["error_codes"] == [50053], r


def test_ropc_conditional_access_account_of_the_demo(control):
    # The demo's svc-coreview-ca: right password, blocked by Conditional Access. Another test
    # may have rotated it, so set a known password through the control API first.
    control.set_password(SVC_CA, "Known-Pass-3!")
    r = app().acquire_token_by_username_password(SVC_CA, "Known-Pass-3!", scopes=SCOPES)
    assert r["error_codes"] == [53003], r


def test_reader_has_no_password_grant_rights_without_secret():
    r = msal.ConfidentialClientApplication(
        READER, client_credential="wrong", authority=AUTHORITY
    ).acquire_token_by_username_password("x@" + TENANT_DOMAIN, "y", scopes=SCOPES)
    assert r["error_codes"] == [7000215], r


def test_helpdesk_client_credentials_wids(validate):
    r = app(HELPDESK, HELPDESK_SECRET).acquire_token_for_client(SCOPES)
    assert validate(r["access_token"], GRAPH)["wids"] == ["fe930be7-5e62-47db-91af-98c3a49a38b1"]


def test_instance_discovery_refuses_an_unknown_authority_host():
    # A host MSAL does not know makes it ask login.microsoftonline.com/common/discovery/instance
    # first; Entra answers invalid_instance for a host that is not one of its own.
    with pytest.raises(ValueError) as e:
        msal.ConfidentialClientApplication(
            ROTATOR,
            client_credential=ROTATOR_SECRET,
            authority="https://login.keyturn-unknown.example/" + TENANT_DOMAIN,
        )
    assert "invalid_instance" in str(e.value)
