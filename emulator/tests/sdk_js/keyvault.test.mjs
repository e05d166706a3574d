// @azure/identity + @azure/keyvault-secrets against keyturn-emulator, run by
// emulator/tests/testsuite/sdk_js.rs with `node --require ./resolver.cjs --test`. The vault URL keeps its
// real form (https://{vault}.vault.azure.net/) and the challenge-resource check stays on.
import { test } from "node:test";
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { ClientSecretCredential, AuthenticationRequiredError } from "@azure/identity";
import { SecretClient } from "@azure/keyvault-secrets";

const env = (k) => {
  const v = process.env[k];
  assert.ok(v, `${k} must be set (run through cargo test --test testsuite sdk_js::)`);
  return v;
};
const TENANT = env("KT_TENANT");
const AUTHORITY = env("KT_AUTHORITY_HOST");
const VAULT_URL = env("KT_VAULT_URL");
const credential = new ClientSecretCredential(TENANT, env("KT_CLIENT_ID"), env("KT_CLIENT_SECRET"), {
  authorityHost: AUTHORITY,
});
const client = new SecretClient(VAULT_URL, credential);
const fresh = (p) => `${p}-${randomUUID().slice(0, 8)}`;

test("ClientSecretCredential gets a Key Vault token", async () => {
  const t = await credential.getToken("https://vault.azure.net/.default");
  assert.equal(t.token.split(".").length, 3);
  assert.ok(t.expiresOnTimestamp > Date.now());
});

// MSAL reports Entra's error answer as a ServerError, which @azure/identity turns into an
// AuthenticationRequiredError carrying the AADSTS text.
test("a wrong client secret is refused with invalid_client / AADSTS7000215", async () => {
  const bad = new ClientSecretCredential(TENANT, env("KT_CLIENT_ID"), "not-the-secret", { authorityHost: AUTHORITY });
  await assert.rejects(bad.getToken("https://vault.azure.net/.default"), (e) => {
    assert.ok(e instanceof AuthenticationRequiredError, `${e.name}: ${e.message}`);
    assert.match(e.message, /invalid_client/);
    assert.match(e.message, /AADSTS7000215: Invalid client secret provided/);
    return true;
  });
});

test("set, get latest and by version", async () => {
  const name = fresh("js-set");
  const first = await client.setSecret(name, "First-Js-Value1", { contentType: "password", tags: { "keyturn-state": "pending" } });
  const second = await client.setSecret(name, "Second-Js-Value2");
  assert.notEqual(first.properties.version, second.properties.version);
  assert.equal(second.properties.version.length, 32);
  assert.equal((await client.getSecret(name)).value, "Second-Js-Value2");
  const old = await client.getSecret(name, { version: first.properties.version });
  assert.equal(old.value, "First-Js-Value1");
  assert.equal(old.properties.contentType, "password");
  assert.deepEqual(old.properties.tags, { "keyturn-state": "pending" });
  await assert.rejects(client.getSecret(fresh("js-missing")), (e) => e.statusCode === 404 && e.code === "SecretNotFound");
});

test("list versions over several pages", async () => {
  const name = fresh("js-pages");
  const made = [];
  for (let i = 0; i < 5; i++) made.push((await client.setSecret(name, `Js-Value-${i}`)).properties.version);
  const pages = [];
  for await (const page of client.listPropertiesOfSecretVersions(name).byPage({ maxPageSize: 2 })) pages.push(page);
  assert.equal(pages.length, 3, "5 versions at 2 per page follow nextLink twice");
  assert.deepEqual(pages.flat().map((p) => p.version).sort(), made.sort());
});

test("update properties; a disabled version is refused", async () => {
  const name = fresh("js-update");
  const v1 = (await client.setSecret(name, "Update-Js-Value1")).properties.version;
  const v2 = (await client.setSecret(name, "Update-Js-Value2")).properties.version;
  const p = await client.updateSecretProperties(name, v1, { enabled: false, tags: { a: "b" }, contentType: "text/plain" });
  assert.equal(p.version, v1);
  assert.equal(p.enabled, false);
  assert.deepEqual(p.tags, { a: "b" });
  await assert.rejects(client.getSecret(name, { version: v1 }), (e) => e.statusCode === 403);
  assert.equal((await client.getSecret(name)).properties.version, v2);
  const tagged = [];
  for await (const s of client.listPropertiesOfSecrets()) if (s.name === name) tagged.push(s);
  assert.equal(tagged.length, 1);
});

test("soft delete, recover and purge", async () => {
  const name = fresh("js-delete");
  await client.setSecret(name, "Delete-Js-Value1");
  const deleted = await (await client.beginDeleteSecret(name, { intervalInMs: 50 })).pollUntilDone();
  assert.equal(deleted.name, name);
  assert.ok(deleted.properties.recoveryId.endsWith(`/deletedsecrets/${name}`));
  await assert.rejects(client.getSecret(name), (e) => e.statusCode === 404);
  await assert.rejects(client.setSecret(name, "Again-Js-Value1"), (e) => e.statusCode === 409);
  await (await client.beginRecoverDeletedSecret(name, { intervalInMs: 50 })).pollUntilDone();
  assert.equal((await client.getSecret(name)).value, "Delete-Js-Value1");
  await (await client.beginDeleteSecret(name, { intervalInMs: 50 })).pollUntilDone();
  await client.purgeDeletedSecret(name);
  await assert.rejects(client.getDeletedSecret(name), (e) => e.statusCode === 404);
});

test("a 429 with Retry-After is waited out and retried", async () => {
  const name = fresh("js-throttle");
  await client.setSecret(name, "Throttle-Js-Value1");
  const control = `${AUTHORITY}/_emulator`;
  const counters = async () => (await (await fetch(`${control}/counters`)).json()).responses["kv.get 429"] ?? 0;
  const before = await counters();
  const rule = { route: "kv.get", kind: "status", status: 429, retry_after: 1, count: 1 };
  const r = await fetch(`${control}/faults`, { method: "POST", body: JSON.stringify(rule), headers: { "content-type": "application/json" } });
  assert.equal(r.status, 200);
  const started = Date.now();
  assert.equal((await client.getSecret(name)).value, "Throttle-Js-Value1");
  assert.ok(Date.now() - started >= 1000, "the SDK waited Retry-After");
  assert.equal(await counters(), before + 1);
});
