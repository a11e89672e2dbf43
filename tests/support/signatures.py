"""Checks nixoci's signatures with tools nixoci did not write, and makes a
cosign key file the way cosign documents it.

usage:
  signatures.py dsse ENVELOPE.json KEY.pub MANIFEST
      securesystemslib's DSSE verification of the envelope with the key
      (its keyid: the hex SHA-256 of the key's DER), then the in-toto
      Statement's subject must be MANIFEST's sha256 (in-toto's model reads it).
  signatures.py cosign PAYLOAD SIGNATURE_B64 KEY.pub MANIFEST_DIGEST
      cryptography's ECDSA P-256 SHA-256 verification of the payload, which
      must name MANIFEST_DIGEST.
  signatures.py cosign-key PASSWORD PREFIX
      writes PREFIX.key, cosign's encrypted key format (scrypt N=32768 r=8
      p=1 over a 32-byte salt, NaCl secretbox with a 24-byte nonce, around
      the PKCS#8 DER of a new P-256 key), and PREFIX.pub.
Prints "verified" (or the files) and exits 0; else says why and exits 1.
"""

import base64
import copy
import hashlib
import json
import os
import sys

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec


def load_key(path):
    with open(path, "rb") as f:
        key = serialization.load_pem_public_key(f.read())
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return key, hashlib.sha256(der).hexdigest()


def dsse(envelope_path, key_path, manifest_path):
    from securesystemslib import dsse as sslib_dsse
    from securesystemslib.signer import SSlibKey
    from in_toto.models.metadata import Envelope as InTotoEnvelope

    key, keyid = load_key(key_path)
    with open(envelope_path) as f:
        raw = json.load(f)
    envelope = sslib_dsse.Envelope.from_dict(copy.deepcopy(raw))
    sslib_key = SSlibKey.from_crypto(key, keyid=keyid, scheme="ecdsa-sha2-nistp256")
    envelope.verify([sslib_key], 1)
    if envelope.payload_type != "application/vnd.in-toto+json":
        raise ValueError(f"payload type {envelope.payload_type}")
    InTotoEnvelope.from_dict(copy.deepcopy(raw))  # in-toto's own reading of the envelope
    statement = json.loads(envelope.payload)
    with open(manifest_path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    if not any(s["digest"].get("sha256") == digest for s in statement["subject"]):
        raise ValueError(f"the Statement's subject is not sha256:{digest}")


def cosign(payload_path, signature_b64, key_path, manifest_digest):
    key, _ = load_key(key_path)
    with open(payload_path, "rb") as f:
        payload = f.read()
    key.verify(base64.b64decode(signature_b64), payload, ec.ECDSA(hashes.SHA256()))
    named = json.loads(payload)["critical"]["image"]["docker-manifest-digest"]
    if named != manifest_digest:
        raise ValueError(f"the payload names {named}, not {manifest_digest}")


def cosign_key(password, prefix):
    import nacl.secret

    private = ec.generate_private_key(ec.SECP256R1())
    der = private.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    salt, nonce = os.urandom(32), os.urandom(24)
    key = hashlib.scrypt(password.encode(), salt=salt, n=32768, r=8, p=1, dklen=32, maxmem=64 << 20)
    ciphertext = nacl.secret.SecretBox(key).encrypt(der, nonce).ciphertext
    b64 = lambda b: base64.b64encode(b).decode()
    document = json.dumps({
        "kdf": {"name": "scrypt", "params": {"N": 32768, "r": 8, "p": 1}, "salt": b64(salt)},
        "cipher": {"name": "nacl/secretbox", "nonce": b64(nonce)},
        "ciphertext": b64(ciphertext),
    }).encode()
    body = base64.encodebytes(document).decode()
    with open(prefix + ".key", "w") as f:
        f.write(f"-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n{body}-----END ENCRYPTED SIGSTORE PRIVATE KEY-----\n")
    with open(prefix + ".pub", "wb") as f:
        f.write(private.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo))


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    try:
        {"dsse": dsse, "cosign": cosign, "cosign-key": cosign_key}[command](*args)
    except Exception as e:  # every failure is a refusal, named
        print(f"refused: {type(e).__name__}: {e}")
        sys.exit(1)
    print("verified" if command != "cosign-key" else "written")
