// A test relying party on @simplewebauthn/server (the version in
// package-lock.json). Each line on stdin is a JSON request, answered by one
// line of JSON on stdout (one process serves a whole test: Node's start-up
// is the slow part). test/simplewebauthn_test.go drives it; python-fido2
// on passkeyd plays the browser.
//
//   {"op": "registrationOptions", "rpID", "rpName", "userName", "attestationType",
//    "userVerification", "residentKey", "supportedAlgorithmIDs"}
//       -> generateRegistrationOptions' options (PublicKeyCredentialCreationOptionsJSON)
//   {"op": "verifyRegistration", "options", "response", "origin",
//    "requireUserVerification", "rootCertificates": [PEM]}   (tpm's trust anchors)
//       -> {"verified", "fmt", "aaguid", "credentialID", "publicKey", "counter",
//           "userVerified", "credentialType", "credentialDeviceType"} or {"verified": false, "error"}
//   {"op": "authenticationOptions", "rpID", "allowCredentials": [id], "userVerification"}
//       -> generateAuthenticationOptions' options
//   {"op": "verifyAuthentication", "options", "response", "origin",
//    "requireUserVerification", "credential": {"id", "publicKey", "counter"}}
//       -> {"verified", "credentialID", "newCounter", "userVerified"} or {"verified": false, "error"}
//
// The expected challenge and RP ID are always the ones in "options", the
// options this script generated: the test cannot loosen a check.
import { createInterface } from 'node:readline';
import {
  generateAuthenticationOptions,
  generateRegistrationOptions,
  SettingsService,
  verifyAuthenticationResponse,
  verifyRegistrationResponse,
} from '@simplewebauthn/server';
import { isoBase64URL } from '@simplewebauthn/server/helpers';

const ops = {
  async registrationOptions(req) {
    return generateRegistrationOptions({
      rpName: req.rpName,
      rpID: req.rpID,
      userName: req.userName,
      attestationType: req.attestationType,
      authenticatorSelection: {
        residentKey: req.residentKey,
        userVerification: req.userVerification,
      },
      supportedAlgorithmIDs: req.supportedAlgorithmIDs,
    });
  },

  async verifyRegistration(req) {
    // Trust anchors for "tpm": the CA that `passkeyctl attestation ca`
    // exports, or none (SimpleWebAuthn's default for tpm: then it checks
    // the statement but no certificate path). Set on every request: the
    // setting is global.
    SettingsService.setRootCertificates({ identifier: 'tpm', certificates: req.rootCertificates ?? [] });
    const result = await verifyRegistrationResponse({
      response: req.response,
      expectedChallenge: req.options.challenge,
      expectedOrigin: req.origin,
      expectedRPID: req.options.rp.id,
      requireUserVerification: req.requireUserVerification,
      supportedAlgorithmIDs: req.options.pubKeyCredParams.map((p) => p.alg),
    });
    if (!result.verified) return { verified: false };
    const info = result.registrationInfo;
    return {
      verified: true,
      fmt: info.fmt,
      aaguid: info.aaguid,
      credentialID: info.credential.id,
      publicKey: isoBase64URL.fromBuffer(info.credential.publicKey),
      counter: info.credential.counter,
      userVerified: info.userVerified,
      credentialType: info.credentialType,
      credentialDeviceType: info.credentialDeviceType,
    };
  },

  async authenticationOptions(req) {
    return generateAuthenticationOptions({
      rpID: req.rpID,
      allowCredentials: (req.allowCredentials ?? []).map((id) => ({ id })),
      userVerification: req.userVerification,
    });
  },

  async verifyAuthentication(req) {
    const result = await verifyAuthenticationResponse({
      response: req.response,
      expectedChallenge: req.options.challenge,
      expectedOrigin: req.origin,
      expectedRPID: req.options.rpId,
      requireUserVerification: req.requireUserVerification,
      credential: {
        id: req.credential.id,
        publicKey: isoBase64URL.toBuffer(req.credential.publicKey),
        counter: req.credential.counter,
      },
    });
    const info = result.authenticationInfo;
    return {
      verified: result.verified,
      credentialID: info.credentialID,
      newCounter: info.newCounter,
      userVerified: info.userVerified,
    };
  },
};

for await (const line of createInterface({ input: process.stdin, crlfDelay: Infinity })) {
  if (!line.trim()) continue;
  const req = JSON.parse(line);
  const op = ops[req.op];
  if (!op) {
    process.stderr.write(`rp.mjs: unknown op ${JSON.stringify(req.op)}\n`);
    process.exit(2);
  }
  let answer;
  try {
    answer = await op(req);
  } catch (err) {
    // A verification that throws is a rejection with a reason, which the
    // test asserts.
    answer = { verified: false, error: String(err?.message ?? err) };
  }
  process.stdout.write(JSON.stringify(answer) + '\n');
}
