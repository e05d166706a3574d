// Preloaded with `node --require`: sends Azure's real host names to the emulator.
// Every TLS connection to login.microsoftonline.com, graph.microsoft.com, localhost or
// *.vault.azure.net goes to 127.0.0.1; to port 443 (URLs without a port) it goes to the
// emulator's port (KEYTURN_EMULATOR_PORT). The server name (SNI, certificate check) and the
// Host header stay the real ones. The emulator's CA comes from NODE_EXTRA_CA_CERTS.
"use strict";
const tls = require("node:tls");
const dns = require("node:dns");

const port = Number(process.env.KEYTURN_EMULATOR_PORT);
if (!Number.isInteger(port) || port <= 0) {
  throw new Error("resolver.cjs: KEYTURN_EMULATOR_PORT must be the emulator's port");
}
const NAMES = new Set(["login.microsoftonline.com", "graph.microsoft.com", "localhost"]);
const ours = (h) => typeof h === "string" && (NAMES.has(h.toLowerCase()) || h.toLowerCase().endsWith(".vault.azure.net"));

const connect = tls.connect;
tls.connect = function (...args) {
  const opts = args[0];
  if (opts !== null && typeof opts === "object") {
    const name = opts.servername || opts.host;
    if (ours(name)) {
      const p = opts.port === undefined || Number(opts.port) === 443 ? port : opts.port;
      args[0] = { ...opts, host: "127.0.0.1", port: p, servername: name };
    }
  }
  return connect.apply(this, args);
};

const lookup = dns.lookup;
dns.lookup = function (host, options, callback) {
  if (ours(host)) {
    const cb = typeof options === "function" ? options : callback;
    const all = typeof options === "object" && options !== null && options.all;
    return process.nextTick(() => (all ? cb(null, [{ address: "127.0.0.1", family: 4 }]) : cb(null, "127.0.0.1", 4)));
  }
  return lookup.apply(this, arguments);
};
