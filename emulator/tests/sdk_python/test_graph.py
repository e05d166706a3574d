"""Microsoft Graph users through msgraph-sdk (+ azure-identity) against the emulator: GET with
$select, PATCH of passwordProfile, and the SDK's ODataError objects for Graph's errors."""

import asyncio
import datetime

import pytest
from kiota_abstractions.base_request_configuration import RequestConfiguration
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph.generated.models.password_profile import PasswordProfile
from msgraph.generated.models.user import User
from msgraph.generated.users.item.user_item_request_builder import UserItemRequestBuilder

import emu_h7
from emu_h7 import SVC1, TENANT

PLAIN = "plain-py@contoso.onmicrosoft.com"


@pytest.fixture(scope="module")
def emu(tmp_path_factory):
    e = emu_h7.Emulator(tmp_path_factory.mktemp("graph"))
    e.control(
        "POST",
        "scenario",
        {"users": [{"tenant": TENANT, "upn": PLAIN, "password": "Plain-Py-Pass1", "display_name": "Plain Py"}]},
    )
    yield e
    e.stop()


def run(emu, action, **kw):
    async def main():
        return await action(emu_h7.graph_client(emu, **kw))

    return asyncio.run(main())


def select(*names):
    q = UserItemRequestBuilder.UserItemRequestBuilderGetQueryParameters(select=list(names))
    return RequestConfiguration(query_parameters=q)


def odata_error(emu, action, **kw):
    with pytest.raises(ODataError) as e:
        run(emu, action, **kw)
    err = e.value
    assert err.error is not None and err.error.inner_error is not None
    assert err.error.inner_error.request_id
    assert isinstance(err.error.inner_error.date, datetime.datetime)
    return err


def test_get_with_select(emu):
    u = run(
        emu,
        lambda c: c.users.by_user_id(SVC1).get(
            request_configuration=select("id", "userPrincipalName", "accountEnabled", "lastPasswordChangeDateTime")
        ),
    )
    assert u.user_principal_name == SVC1
    assert u.id == "aaaaaaaa-0000-0000-0000-000000000001" or len(u.id) == 36
    assert u.account_enabled is True
    assert isinstance(u.last_password_change_date_time, datetime.datetime)
    assert u.display_name is None, "only the selected properties come back"
    full = run(emu, lambda c: c.users.by_user_id(PLAIN).get())
    assert full.display_name == "Plain Py" and full.account_enabled is None


def test_patch_password_profile(emu):
    before = run(emu, lambda c: c.users.by_user_id(PLAIN).get(request_configuration=select("lastPasswordChangeDateTime")))
    body = User(password_profile=PasswordProfile(password="Rotated-Py-Pass2", force_change_password_next_sign_in=False))
    assert run(emu, lambda c: c.users.by_user_id(PLAIN).patch(body)) is None
    assert emu.control("POST", f"users/{TENANT}/{PLAIN}/check-password", {"password": "Rotated-Py-Pass2"}) == {
        "current": True
    }
    after = run(emu, lambda c: c.users.by_user_id(PLAIN).get(request_configuration=select("passwordProfile", "lastPasswordChangeDateTime")))
    assert after.password_profile.force_change_password_next_sign_in is False
    assert after.password_profile.password is None
    assert after.last_password_change_date_time >= before.last_password_change_date_time


def test_error_objects(emu):
    weak = User(password_profile=PasswordProfile(password="short"))
    err = odata_error(emu, lambda c: c.users.by_user_id(PLAIN).patch(weak))
    assert err.response_status_code == 400
    assert err.error.code == "Request_BadRequest"
    assert "complexity" in err.error.message

    err = odata_error(emu, lambda c: c.users.by_user_id("00000000-0000-0000-0000-00000000dead").get())
    assert err.response_status_code == 404
    assert err.error.code == "Request_ResourceNotFound"

    # The rotator has User-PasswordProfile.ReadWrite.All, not User.ReadWrite.All.
    err = odata_error(emu, lambda c: c.users.by_user_id(PLAIN).patch(User(usage_location="DE")))
    assert err.response_status_code == 403
    assert err.error.code == "Authorization_RequestDenied"

    # The reader app may read but not reset.
    body = User(password_profile=PasswordProfile(password="Reader-Py-Pass3"))
    err = odata_error(
        emu,
        lambda c: c.users.by_user_id(PLAIN).patch(body),
        client_id=emu_h7.READER,
        secret=emu_h7.READER_SECRET,
    )
    assert err.response_status_code == 403

    err = odata_error(emu, lambda c: c.users.by_user_id(PLAIN).patch(User(id="00000000-0000-0000-0000-000000000001")))
    assert err.response_status_code == 400
    assert err.error.message == "Property 'id' is read-only and cannot be set."

    err = odata_error(
        emu, lambda c: c.users.by_user_id(PLAIN).get(request_configuration=select("id", "favouriteColour"))
    )
    assert err.response_status_code == 400
