"""Microsoft Graph users through msgraph-sdk (+ azure-identity) against the emulator: GET with
$select, PATCH of passwordProfile (the SDK sends "@odata.type"), and the SDK's ODataError objects
for Graph's errors. The client uses its real base URL, https://graph.microsoft.com/v1.0, sent to
the emulator by conftest.py's resolver shim (with the emulator's port when it is not 443:
httpx's async transport connects to the port of the URL, whatever the resolver answers)."""

import asyncio
import datetime

import pytest
from kiota_abstractions.base_request_configuration import RequestConfiguration
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph.generated.models.password_profile import PasswordProfile
from msgraph.generated.models.user import User
from msgraph.generated.users.item.user_item_request_builder import UserItemRequestBuilder

from conftest import READER, READER_SECRET, ROTATOR, ROTATOR_SECRET, SVC1, TENANT

GRAPH_SCOPES = ["https://graph.microsoft.com/.default"]


@pytest.fixture
def rotator():
    from azure.identity import ClientSecretCredential

    return ClientSecretCredential(TENANT, ROTATOR, ROTATOR_SECRET)


@pytest.fixture
def graph(emu, rotator):
    """Runs `action(GraphServiceClient)` to completion (a client per event loop)."""

    def run(action, credential=rotator):
        from kiota_authentication_azure.azure_identity_authentication_provider import (
            AzureIdentityAuthenticationProvider,
        )
        from msgraph import GraphRequestAdapter, GraphServiceClient

        async def main():
            auth = AzureIdentityAuthenticationProvider(credential, scopes=GRAPH_SCOPES)
            adapter = GraphRequestAdapter(auth)
            if emu.port != 443:
                adapter.base_url = "https://graph.microsoft.com:%d/v1.0" % emu.port
            return await action(GraphServiceClient(request_adapter=adapter))

        return asyncio.run(main())

    return run


@pytest.fixture
def plain(new_user):
    upn, _ = new_user(display_name="Plain Py")
    return upn


def select(*names):
    q = UserItemRequestBuilder.UserItemRequestBuilderGetQueryParameters(select=list(names))
    return RequestConfiguration(query_parameters=q)


def odata_error(graph, action, **kw):
    with pytest.raises(ODataError) as e:
        graph(action, **kw)
    err = e.value
    assert err.error is not None and err.error.inner_error is not None
    assert err.error.inner_error.request_id
    assert isinstance(err.error.inner_error.date, datetime.datetime)
    return err


def test_get_with_select(graph, plain):
    u = graph(
        lambda c: c.users.by_user_id(SVC1).get(
            request_configuration=select("id", "userPrincipalName", "accountEnabled", "lastPasswordChangeDateTime")
        ),
    )
    assert u.user_principal_name == SVC1
    assert u.id == "aaaaaaaa-0000-0000-0000-000000000001" or len(u.id) == 36
    assert u.account_enabled is True
    assert isinstance(u.last_password_change_date_time, datetime.datetime)
    assert u.display_name is None, "only the selected properties come back"
    full = graph(lambda c: c.users.by_user_id(plain).get())
    assert full.display_name == "Plain Py" and full.account_enabled is None


def test_patch_password_profile(graph, plain, control):
    before = graph(lambda c: c.users.by_user_id(plain).get(request_configuration=select("lastPasswordChangeDateTime")))
    body = User(password_profile=PasswordProfile(password="Rotated-Py-Pass2", force_change_password_next_sign_in=False))
    assert graph(lambda c: c.users.by_user_id(plain).patch(body)) is None
    check = control.http.post(f"{control.base}/users/{TENANT}/{plain}/check-password", json={"password": "Rotated-Py-Pass2"})
    assert check.json() == {"current": True}
    after = graph(lambda c: c.users.by_user_id(plain).get(request_configuration=select("passwordProfile", "lastPasswordChangeDateTime")))
    assert after.password_profile.force_change_password_next_sign_in is False
    assert after.password_profile.password is None
    assert after.last_password_change_date_time >= before.last_password_change_date_time


def test_error_objects(graph, plain):
    from azure.identity import ClientSecretCredential

    reader_credential = ClientSecretCredential(TENANT, READER, READER_SECRET)
    weak = User(password_profile=PasswordProfile(password="short"))
    err = odata_error(graph, lambda c: c.users.by_user_id(plain).patch(weak))
    assert err.response_status_code == 400
    assert err.error.code == "Request_BadRequest"
    assert "complexity" in err.error.message

    err = odata_error(graph, lambda c: c.users.by_user_id("00000000-0000-0000-0000-00000000dead").get())
    assert err.response_status_code == 404
    assert err.error.code == "Request_ResourceNotFound"

    # The rotator has User-PasswordProfile.ReadWrite.All, not User.ReadWrite.All.
    err = odata_error(graph, lambda c: c.users.by_user_id(plain).patch(User(usage_location="DE")))
    assert err.response_status_code == 403
    assert err.error.code == "Authorization_RequestDenied"

    # The reader app may read but not reset.
    body = User(password_profile=PasswordProfile(password="Reader-Py-Pass3"))
    err = odata_error(
        graph,
        lambda c: c.users.by_user_id(plain).patch(body),
        credential=reader_credential,
    )
    assert err.response_status_code == 403

    err = odata_error(graph, lambda c: c.users.by_user_id(plain).patch(User(id="00000000-0000-0000-0000-000000000001")))
    assert err.response_status_code == 400
    assert err.error.message == "Property 'id' is read-only and cannot be set."

    err = odata_error(
        graph, lambda c: c.users.by_user_id(plain).get(request_configuration=select("id", "favouriteColour"))
    )
    assert err.response_status_code == 400
