// What the VM test pages (browser/index.html for Chromium,
// firefox/index.html for Firefox) share: bounded calls, reporting to the
// test through /report?check=NAME&result=PASS|FAIL&detail=..., and the
// checks a relying party makes (clientData, rpIdHash, flags, the ES256
// signature through WebCrypto, a small CBOR decoder for attestation
// objects).
"use strict";

// Every WebAuthn call is bounded: a browser would otherwise wait for a
// dialog nobody closes. A page may change the bound before its first call.
let callTimeout = 30000;
function bounded() {
  const c = new AbortController();
  setTimeout(() => c.abort(new Error("no answer after " + callTimeout + " ms")), callTimeout);
  return c.signal;
}

async function report(check, ok, detail) {
  const q = new URLSearchParams({check, result: ok ? "PASS" : "FAIL", detail: String(detail || "")});
  await fetch("/report?" + q.toString());
}

function bytes(b) {
  return b instanceof ArrayBuffer ? new Uint8Array(b) : new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
}
function equal(a, b) {
  a = bytes(a); b = bytes(b);
  return a.length === b.length && a.every((v, i) => v === b[i]);
}
function random(n) { return crypto.getRandomValues(new Uint8Array(n)); }
function b64url(b) {
  return btoa(String.fromCharCode(...bytes(b))).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

// cbor decodes one CBOR item (RFC 8949) from b: what attestation objects
// and COSE keys use (unsigned and negative integers, byte and text strings,
// arrays, maps, simple values). It returns [value, next offset]; maps
// become Map objects so that integer keys stay integers.
function cbor(b, i = 0) {
  b = bytes(b);
  const ib = b[i++];
  if (ib === undefined) throw new Error("CBOR: truncated");
  const major = ib >> 5;
  let n = ib & 0x1f;
  if (n === 24) { n = b[i]; i += 1; }
  else if (n === 25) { n = (b[i] << 8) | b[i + 1]; i += 2; }
  else if (n === 26) { n = ((b[i] << 24) >>> 0) + (b[i + 1] << 16) + (b[i + 2] << 8) + b[i + 3]; i += 4; }
  else if (n > 26) throw new Error("CBOR: unsupported additional info " + n);
  switch (major) {
  case 0: return [n, i];
  case 1: return [-1 - n, i];
  case 2: if (i + n > b.length) throw new Error("CBOR: truncated"); return [b.slice(i, i + n), i + n];
  case 3: if (i + n > b.length) throw new Error("CBOR: truncated"); return [new TextDecoder().decode(b.subarray(i, i + n)), i + n];
  case 4: {
    const a = [];
    for (let k = 0; k < n; k++) { let v; [v, i] = cbor(b, i); a.push(v); }
    return [a, i];
  }
  case 5: {
    const m = new Map();
    for (let k = 0; k < n; k++) { let key, v; [key, i] = cbor(b, i); [v, i] = cbor(b, i); m.set(key, v); }
    return [m, i];
  }
  case 7: return [{20: false, 21: true, 22: null}[n], i];
  }
  throw new Error("CBOR: unsupported major type " + major);
}

// coseToSpki turns an EC2 P-256 COSE key (RFC 9053 §7.1) into the SPKI
// that WebCrypto imports.
function coseToSpki(cose) {
  if (cose.get(1) !== 2 || cose.get(-1) !== 1) throw new Error("COSE key is not EC2 P-256");
  const x = cose.get(-2), y = cose.get(-3);
  const prefix = [0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01,
    0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00, 0x04];
  const spki = new Uint8Array(prefix.length + 64);
  spki.set(prefix);
  spki.set(x, prefix.length);
  spki.set(y, prefix.length + 32);
  return spki;
}

// verifyES256 checks an ASN.1 DER ECDSA P-256 signature over data.
async function verifyES256(spki, der, data) {
  const key = await crypto.subtle.importKey("spki", spki, {name: "ECDSA", namedCurve: "P-256"}, false, ["verify"]);
  return crypto.subtle.verify({name: "ECDSA", hash: "SHA-256"}, key, derToRaw(der), data);
}

// An ECDSA signature in ASN.1 DER (WebAuthn) as r || s (WebCrypto).
function derToRaw(der) {
  const d = bytes(der);
  const fail = () => { throw new Error("malformed DER signature"); };
  if (d[0] !== 0x30) fail();
  let i = 2;
  const out = new Uint8Array(64);
  for (let k = 0; k < 2; k++) {
    if (d[i] !== 0x02) fail();
    let len = d[i + 1];
    let v = d.subarray(i + 2, i + 2 + len);
    i += 2 + len;
    while (v.length > 32 && v[0] === 0) v = v.subarray(1);
    if (v.length > 32) fail();
    out.set(v, k * 32 + 32 - v.length);
  }
  return out;
}

// checkAssertion verifies what a relying party verifies (the UV flag too
// when uv) and returns the authenticator data flags; it throws with the
// reason otherwise.
async function checkAssertion(a, challenge, spki, rpIdHash, uv) {
  const cd = JSON.parse(new TextDecoder().decode(a.response.clientDataJSON));
  if (cd.type !== "webauthn.get") throw new Error("clientData type " + cd.type);
  if (cd.challenge !== b64url(challenge)) throw new Error("clientData challenge differs");
  if (cd.origin !== location.origin) throw new Error("clientData origin " + cd.origin);
  const ad = bytes(a.response.authenticatorData);
  if (!equal(ad.subarray(0, 32), rpIdHash)) throw new Error("rpIdHash is not SHA-256(\"localhost\")");
  if (!(ad[32] & 0x01)) throw new Error("UP flag not set");
  if (uv && !(ad[32] & 0x04)) throw new Error("flags 0x" + ad[32].toString(16) + ": UV flag not set");
  const cdHash = bytes(await crypto.subtle.digest("SHA-256", a.response.clientDataJSON));
  const signed = new Uint8Array(ad.length + 32);
  signed.set(ad);
  signed.set(cdHash, ad.length);
  if (!await verifyES256(spki, a.response.signature, signed)) {
    throw new Error("signature does not verify");
  }
  return {flags: ad[32]};
}

// step runs one check and reports it; it returns fn's result or null.
async function step(check, fn) {
  const t0 = performance.now();
  try {
    const r = await fn();
    const flags = r && r.flags !== undefined ? ", flags 0x" + r.flags.toString(16) : "";
    const detail = r && r.detail ? ", " + r.detail : "";
    await report(check, true, Math.round(performance.now() - t0) + " ms" + flags + detail);
    return r;
  } catch (e) {
    await report(check, false, e.name + ": " + e.message + " (after " + Math.round(performance.now() - t0) + " ms)");
    return null;
  }
}

