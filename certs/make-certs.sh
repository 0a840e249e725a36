#!/usr/bin/env bash
# Regenerates the test/dev certificates in this directory with the openssl command-line tool.
#
#   certs/make-certs.sh            # new CA + new leaves
#   KEEP_CA=1 certs/make-certs.sh  # keep test-ca.crt/.key, re-issue only the leaves
#
# Everything here is for tests and local development only: the private keys are public.
# See README.md beside this script for what each file is.
set -euo pipefail

cd "$(dirname "$0")"

if ! command -v openssl >/dev/null 2>&1; then
    echo "openssl not found; installing it with apt-get" >&2
    apt-get update && apt-get install -y openssl
fi

DAYS=3650
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

# ECDSA P-256 private key, PKCS#8 PEM ("-----BEGIN PRIVATE KEY-----").
new_key() {
    openssl genpkey -algorithm EC \
        -pkeyopt ec_paramgen_curve:P-256 -pkeyopt ec_param_enc:named_curve \
        -out "$1"
    chmod 0644 "$1"
}

# Random positive serial number (15 random bytes, under the 20-octet limit of RFC 5280).
serial() {
    echo "0x$(openssl rand -hex 15)"
}

# --- CAs --------------------------------------------------------------------------------------
# new_ca KEY CRT CN  -> a self-signed CA certificate CRT for the new key KEY
new_ca() {
    local key="$1" crt="$2" cn="$3"
    new_key "$key"
    cat > "$WORK/ca.ext" <<EXT
[req]
distinguished_name = dn
prompt = no
x509_extensions = v3_ca
[dn]
O = Switchyard Test
CN = $cn
[v3_ca]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
EXT
    openssl req -new -x509 -sha256 -days "$DAYS" -set_serial "$(serial)" \
        -key "$key" -config "$WORK/ca.ext" -out "$crt"
    echo "wrote $crt"
}

if [[ "${KEEP_CA:-0}" == "1" && -f test-ca.crt && -f test-ca.key ]]; then
    echo "keeping existing test-ca.crt / test-ca.key"
else
    new_ca test-ca.key test-ca.crt "Switchyard Test CA"
fi

# other-ca.crt: a second self-signed CA (its key is thrown away), for tests that need a CA that
# did not issue the server's certificate.
if [[ "${KEEP_CA:-0}" == "1" && -f other-ca.crt ]]; then
    echo "keeping existing other-ca.crt"
else
    new_ca "$WORK/other-ca.key" other-ca.crt "Switchyard Other Test CA"
fi

# --- leaves -----------------------------------------------------------------------------------
# issue NAME SAN [EKU]  -> NAME.key (PKCS#8 P-256) and NAME.crt (leaf followed by the CA);
# EKU defaults to serverAuth.
issue() {
    local name="$1" san="$2" eku="${3:-serverAuth}"
    new_key "$name.key"
    openssl req -new -sha256 -key "$name.key" \
        -subj "/O=Switchyard Test/CN=$name" -out "$WORK/$name.csr"
    cat > "$WORK/$name.ext" <<EXT
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = $eku
subjectAltName = $san
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
EXT
    openssl x509 -req -sha256 -days "$DAYS" -set_serial "$(serial)" \
        -in "$WORK/$name.csr" -CA test-ca.crt -CAkey test-ca.key \
        -extfile "$WORK/$name.ext" -out "$WORK/$name.leaf.pem"
    cat "$WORK/$name.leaf.pem" test-ca.crt > "$name.crt"
    echo "wrote $name.crt (leaf + CA), $name.key"
}

issue example.com "DNS:example.com, DNS:*.example.com"
issue other.test  "DNS:other.test, DNS:*.other.test"
issue localhost   "DNS:localhost, IP:127.0.0.1"
issue client      "DNS:client.test" clientAuth

# --- check ------------------------------------------------------------------------------------
for name in example.com other.test localhost; do
    # openssl verify checks the first certificate of the file; the CA copy in it is untrusted input.
    openssl verify -CAfile test-ca.crt -untrusted "$name.crt" -purpose sslserver "$name.crt"
done
openssl verify -CAfile test-ca.crt -untrusted client.crt -purpose sslclient client.crt
