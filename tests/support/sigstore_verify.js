// Verifies a Sigstore bundle with sigstore-js's own verifier
// (@sigstore/verify, installed by .ci/setup), given a public key and no
// transparency log: the way a key-based (not keyless) signature is checked.
//
// usage: node sigstore_verify.js BUNDLE.json KEY.pub MANIFEST
//   A message-signature bundle must sign MANIFEST; a DSSE bundle must verify
//   and its in-toto Statement's subject must be MANIFEST's sha256.
// Prints "verified" and exits 0, or prints why and exits 1.
'use strict';
const fs = require('fs');
const crypto = require('crypto');
const { Verifier, toSignedEntity, toTrustMaterial } = require('@sigstore/verify');
const { bundleFromJSON } = require('@sigstore/bundle');

const [bundlePath, keyPath, manifestPath] = process.argv.slice(2);
try {
  const bundle = bundleFromJSON(JSON.parse(fs.readFileSync(bundlePath, 'utf8')));
  const der = crypto.createPublicKey(fs.readFileSync(keyPath, 'utf8')).export({ type: 'spki', format: 'der' });
  const hint = bundle.verificationMaterial.content.publicKey.hint;
  const trust = toTrustMaterial(
    { certificateAuthorities: [], timestampAuthorities: [], tlogs: [], ctlogs: [] },
    { [hint]: { rawBytes: der } },
  );
  const verifier = new Verifier(trust, { tlogThreshold: 0, ctlogThreshold: 0, timestampThreshold: 0 });
  const manifest = fs.readFileSync(manifestPath);
  if (bundle.content.$case === 'messageSignature') {
    verifier.verify(toSignedEntity(bundle, manifest));
  } else {
    verifier.verify(toSignedEntity(bundle));
    const statement = JSON.parse(Buffer.from(bundle.content.dsseEnvelope.payload).toString('utf8'));
    const digest = crypto.createHash('sha256').update(manifest).digest('hex');
    if (!statement.subject.some((s) => s.digest.sha256 === digest)) {
      throw new Error(`the Statement's subject is not sha256:${digest}`);
    }
  }
  console.log('verified');
} catch (e) {
  console.log(`refused: ${e.code || ''} ${e.message}`);
  process.exit(1);
}
