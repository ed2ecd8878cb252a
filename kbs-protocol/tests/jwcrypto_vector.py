# Writes the JWE test vector of src/tests.rs with jwcrypto, an implementation independent of
# cloak's: a fresh P-256 key (its private scalar to testdata/jwcrypto-key-d.txt) and a JWE to
# it, ECDH-ES+A256KW with A256GCM, flattened JSON (testdata/jwcrypto-jwe.json).
# Run: python3 -m pip install jwcrypto==1.5.6 && python3 tests/jwcrypto_vector.py
import json
from jwcrypto import jwe, jwk

key = jwk.JWK.generate(kty="EC", crv="P-256")
token = jwe.JWE(
    b"a secret written by jwcrypto",
    protected=json.dumps({"alg": "ECDH-ES+A256KW", "enc": "A256GCM"}),
)
token.add_recipient(key)
with open("testdata/jwcrypto-key-d.txt", "w") as out:
    out.write(json.loads(key.export_private())["d"] + "\n")
with open("testdata/jwcrypto-jwe.json", "w") as out:
    out.write(token.serialize(compact=False) + "\n")
