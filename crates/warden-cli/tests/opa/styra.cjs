// OPA's TypeScript SDK (npm `@styra/opa`), unchanged, against `warden serve`.
// usage: node styra.cjs NPM_DIR BASE_URL REGO_KEY SYSTEM_KEY
// Prints one JSON object: what each SDK call answered or threw ({"error": message}).
const path = require("node:path");
const [npm, url, regoKey, systemKey] = process.argv.slice(2);
const { OPAClient } = require(require.resolve("@styra/opa", { paths: [path.join(npm, "node_modules")] }));

async function attempt(f) {
  try {
    return await f();
  } catch (e) {
    return { error: String(e && e.message ? e.message : e), status: e?.httpMeta?.response?.status };
  }
}

(async () => {
  const rego = new OPAClient(url, { headers: { Authorization: `Bearer ${regoKey}` } });
  const system = new OPAClient(url, { headers: { Authorization: `Bearer ${systemKey}` } });
  const stranger = new OPAClient(url, { headers: { Authorization: "Bearer wdn_not_a_key" } });
  const out = {
    withInput: await attempt(() => rego.evaluate("authz/allow", { user: "alice" })),
    denied: await attempt(() => rego.evaluate("authz/allow", { user: "mallory" })),
    withoutInput: await attempt(() => rego.evaluate("authz/allow")),
    element: await attempt(() => rego.evaluate("admins/0")),
    byDefault: await attempt(() => system.evaluateDefault({ user: "alice" })),
    batch: await attempt(() => rego.evaluateBatch("authz/allow", { a: { user: "alice" }, b: { user: "bob" } })),
    unauthorized: await attempt(() => stranger.evaluate("authz/allow", { user: "alice" })),
    badPath: await attempt(() => rego.evaluate("authz/not-an-identifier", {})),
  };
  out.health = await attempt(async () => {
    const { OpaApiClient } = require(require.resolve("@styra/opa/sdk/sdk", { paths: [path.join(npm, "node_modules")] }));
    const low = new OpaApiClient({ serverURL: url });
    const r = await low.health(true, true);
    return r.healthyServer ?? r;
  });
  process.stdout.write(JSON.stringify(out) + "\n");
})();
