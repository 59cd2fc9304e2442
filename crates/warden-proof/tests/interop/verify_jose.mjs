// Verify a Warden decision token with `jose` (npm), independently of Warden's code.
// usage: node verify_jose.mjs JWKS TOKEN ARGS TOOL NOW [AUDIENCE]
// Prints the claims and exits 0 when valid; prints the error and exits 1 otherwise; exits 3 when
// `jose` cannot be found (looked up through NODE_PATH, as `.ci/run` sets it).
import { readFileSync } from "node:fs";
import { createHash } from "node:crypto";
import { createRequire } from "node:module";
import path from "node:path";
import { pathToFileURL } from "node:url";

async function loadJose() {
  const dirs = (process.env.NODE_PATH || "").split(path.delimiter).filter(Boolean);
  for (const dir of dirs) {
    try {
      const pkg = path.join(dir, "jose", "package.json");
      const meta = JSON.parse(readFileSync(pkg, "utf8"));
      const entry = typeof meta.exports?.["."] === "object"
        ? meta.exports["."].import ?? meta.exports["."].default
        : meta.module ?? meta.main;
      return await import(pathToFileURL(path.join(dir, "jose", entry)).href);
    } catch {}
  }
  try {
    return await import("jose");
  } catch (e) {
    console.error(`MISSING: jose not found (NODE_PATH=${process.env.NODE_PATH ?? ""}): ${e}`);
    process.exit(3);
  }
}

// RFC 8785 for values without floats: sorted keys, no whitespace.
function jcs(v) {
  if (Array.isArray(v)) return "[" + v.map(jcs).join(",") + "]";
  if (v && typeof v === "object") {
    return "{" + Object.keys(v).sort().map((k) => JSON.stringify(k) + ":" + jcs(v[k])).join(",") + "}";
  }
  return JSON.stringify(v);
}

const [jwksPath, tokenPath, argsPath, tool, now, audience] = process.argv.slice(2);
const jose = await loadJose();
const jwks = JSON.parse(readFileSync(jwksPath, "utf8"));
const token = readFileSync(tokenPath, "utf8").trim();
const args = JSON.parse(readFileSync(argsPath, "utf8"));
try {
  const keySet = jose.createLocalJWKSet(jwks);
  const { payload, protectedHeader } = await jose.jwtVerify(token, keySet, {
    algorithms: ["EdDSA"],
    typ: "JWT",
    currentDate: new Date(Number(now) * 1000),
    requiredClaims: ["exp", "iat", "jti", "iss"],
    ...(audience ? { audience } : {}),
  });
  if (payload.tool !== tool) throw new Error("tool");
  const want = "sha256:" + createHash("sha256").update(jcs(args), "utf8").digest("hex");
  if (payload.args_hash !== want) throw new Error("args_hash");
  console.log(JSON.stringify({ header: protectedHeader, payload }));
} catch (e) {
  console.log(`REJECTED: ${e.code ?? ""} ${e.message}`);
  process.exit(1);
}
