"""Helpers for test_keyvault.py and test_graph.py: one emulator process per test module, the
resolver shim that sends Azure's real host names (port 443) to it, and the SDK clients.

The emulator binary comes from KEYTURN_EMULATOR_BIN (set by the Rust test that runs pytest).
Vault URLs keep their real form, https://{vault}.vault.azure.net/ (no port), so the SDK's
challenge-resource check stays on: azure-keyvault-secrets compares the URL's netloc, port
included, with the challenge's resource.
"""

import json
import os
import pathlib
import socket
import ssl
import subprocess
import urllib.request

REPO = pathlib.Path(__file__).resolve().parents[3]
SCENARIO = REPO / "config" / "demo-scenario.toml"

TENANT = "contoso"
VAULT = "keyturn-demo"
ROTATOR = "11111111-1111-1111-1111-111111111111"
ROTATOR_SECRET = "demo-client-secret"
READER = "22222222-2222-2222-2222-222222222222"
READER_SECRET = "reader-client-secret"
SVC1 = "svc-coreview-1@contoso.onmicrosoft.com"

_SUFFIXES = (".vault.azure.net",)
_NAMES = ("login.microsoftonline.com", "graph.microsoft.com", "localhost")
_real_getaddrinfo = socket.getaddrinfo


def _ours(host):
    h = (host.decode() if isinstance(host, bytes) else str(host or "")).lower()
    return h in _NAMES or h.endswith(_SUFFIXES)


def install_resolver(port):
    """Resolves the emulated names to 127.0.0.1 and sends their port 443 to the emulator."""

    def getaddrinfo(host, p, family=0, type=0, proto=0, flags=0):
        if _ours(host):
            target = port if p in (443, "443", "https", None) else int(p)
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", target))]
        return _real_getaddrinfo(host, p, family, type, proto, flags)

    socket.getaddrinfo = getaddrinfo


class Emulator:
    """A running emulator process and what its ready line says."""

    def __init__(self, tmp):
        binary = os.environ.get("KEYTURN_EMULATOR_BIN")
        if not binary:
            raise RuntimeError("KEYTURN_EMULATOR_BIN is not set: run through `cargo test --test sdk_python`")
        self.proc = subprocess.Popen(
            [binary, "--scenario", str(SCENARIO), "--ca-out", str(tmp / "ca.pem"), "--log", "warn"],
            stdout=subprocess.PIPE,
            text=True,
        )
        line = self.proc.stdout.readline()
        if not line.startswith("KEYTURN_EMULATOR_READY "):
            self.proc.kill()
            raise RuntimeError(f"emulator did not start: {line!r}")
        self.ready = json.loads(line.split(" ", 1)[1])
        self.port = int(self.ready["addr"].rsplit(":", 1)[1])
        self.ca = self.ready["ca_pem"]
        self.authority = f"https://localhost:{self.port}"
        self.vault_url = f"https://{VAULT}.vault.azure.net/"
        self.graph_base = f"https://graph.microsoft.com:{self.port}/v1.0"
        self.ssl = ssl.create_default_context(cafile=self.ca)
        install_resolver(self.port)
        os.environ["REQUESTS_CA_BUNDLE"] = self.ca
        os.environ["SSL_CERT_FILE"] = self.ca

    def control(self, method, route, body=None):
        """Calls the control API (`/_emulator/{route}`) and returns the decoded answer."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            f"https://localhost:{self.port}/_emulator/{route}",
            data=data,
            method=method,
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(req, context=self.ssl) as r:
            return json.loads(r.read() or b"null")

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)


def credential(emu, client_id=ROTATOR, secret=ROTATOR_SECRET):
    from azure.identity import ClientSecretCredential

    return ClientSecretCredential(TENANT, client_id, secret, authority=emu.authority)


def secret_client(emu, **kw):
    from azure.keyvault.secrets import SecretClient

    return SecretClient(emu.vault_url, credential(emu, **kw))


def graph_client(emu, **kw):
    """A GraphServiceClient on the emulator (its base URL carries the port; the vault check
    that needs port 443 does not exist in Graph). Create it inside the event loop using it."""
    import httpx
    from kiota_authentication_azure.azure_identity_authentication_provider import (
        AzureIdentityAuthenticationProvider,
    )
    from msgraph import GraphRequestAdapter, GraphServiceClient
    from msgraph_core import GraphClientFactory

    auth = AzureIdentityAuthenticationProvider(
        credential(emu, **kw), scopes=["https://graph.microsoft.com/.default"]
    )
    http = GraphClientFactory.create_with_default_middleware(client=httpx.AsyncClient(verify=emu.ssl))
    adapter = GraphRequestAdapter(auth, http)
    adapter.base_url = emu.graph_base
    return GraphServiceClient(request_adapter=adapter)
