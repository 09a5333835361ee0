"""An independent JOSE implementation (joserfc) checks what the sidecar produced.

Reads {"jobs": [...]} as JSON on stdin and prints one JSON result per job:
- {"kind": "jwe", "token", "alg", "enc", "key", "sig_alg", "sig_key"}: decrypt the compact
  JWE with the recipient's key, then verify the nested JWS with the signing key;
- {"kind": "jws", "token", "alg", "key"}: verify a compact JWS;
- {"kind": "to_jwk", "pem", "private"}: convert a PEM key to a JWK (dict).
A key is {"pem": "..."} or {"jwk": {...}} or {"oct": "<base64url>"}.
"""
import base64, json, sys, traceback

from joserfc import jwe, jws
from joserfc.jwk import ECKey, OctKey, OKPKey, RSAKey


def b64d(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def load(key):
    if "oct" in key:
        return OctKey.import_key(b64d(key["oct"]))
    if "jwk" in key:
        kty = key["jwk"]["kty"]
        return {"RSA": RSAKey, "EC": ECKey, "OKP": OKPKey, "oct": OctKey}[kty].import_key(key["jwk"])
    pem = key["pem"].encode()
    for cls in (RSAKey, ECKey, OKPKey):
        try:
            return cls.import_key(pem)
        except Exception:
            pass
    raise ValueError("unreadable PEM key")


def run(job):
    kind = job["kind"]
    if kind == "to_jwk":
        key = load({"pem": job["pem"]})
        return {"ok": True, "jwk": key.as_dict(private=job.get("private", False))}
    if kind == "jwe":
        obj = jwe.decrypt_compact(job["token"], load(job["key"]), algorithms=[job["alg"], job["enc"]])
        inner = jws.deserialize_compact(obj.plaintext, load(job["sig_key"]), algorithms=[job["sig_alg"]])
        return {"ok": True, "header": obj.protected, "inner_header": inner.protected,
                "claims": json.loads(inner.payload)}
    if kind == "jws":
        obj = jws.deserialize_compact(job["token"], load(job["key"]), algorithms=[job["alg"]])
        return {"ok": True, "header": obj.protected, "claims": json.loads(obj.payload)}
    raise ValueError("unknown job kind " + kind)


results = []
for job in json.load(sys.stdin)["jobs"]:
    try:
        results.append(run(job))
    except Exception as e:
        results.append({"ok": False, "error": "%s: %s" % (type(e).__name__, e)})
print(json.dumps(results))
