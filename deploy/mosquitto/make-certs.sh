#!/usr/bin/env bash
# Make a throwaway test CA, a server certificate and a client certificate for
# glucotwin's mosquitto TLS listener (deploy/mosquitto/mosquitto.conf).
#
#   deploy/mosquitto/make-certs.sh OUTDIR [SERVER_NAME_OR_IP ...]
#
# Writes into OUTDIR (created if missing; existing files are overwritten):
#   ca.crt  ca.key          the test CA (self-signed; keep ca.key off the broker)
#   server.crt server.key   the broker's certificate; its subjectAltName holds
#                           localhost, 127.0.0.1, ::1 and every SERVER_NAME_OR_IP given
#   client.crt client.key   a client certificate (extendedKeyUsage clientAuth) whose
#                           common name is $CLIENT_CN (default loop-alice), for
#                           listeners with require_certificate true
#
# Environment: CLIENT_CN (default loop-alice), DAYS (validity, default 365),
# KEY_TYPE ec (P-256, default, fast) or rsa (RSA 2048).
#
# This is for tests and lab rigs. For a device that stays in service, use your
# own CA (or keep this CA's key offline) and plan certificate renewal.
set -euo pipefail

if [[ $# -lt 1 || $1 == -h || $1 == --help ]]; then
  sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'
  exit $(( $# < 1 ? 2 : 0 ))
fi
out=$1; shift
client_cn=${CLIENT_CN:-loop-alice}
days=${DAYS:-365}
key_type=${KEY_TYPE:-ec}
if ! command -v openssl >/dev/null; then
  echo "make-certs.sh: openssl not found (Debian: apt-get install openssl)" >&2
  exit 1
fi

mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

new_key() {  # new_key FILE
  case $key_type in
    ec)  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null ;;
    rsa) openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$1" 2>/dev/null ;;
    *)   echo "make-certs.sh: KEY_TYPE must be ec or rsa, not '$key_type'" >&2; exit 2 ;;
  esac
  chmod 600 "$1"
}

# An EC key only signs (ECDHE); an RSA key may also encipher (RSA key exchange).
leaf_usage="digitalSignature"; [[ $key_type == rsa ]] && leaf_usage+=", keyEncipherment"

# subjectAltName: names are DNS entries, addresses are IP entries.
san="DNS:localhost,IP:127.0.0.1,IP:::1"
for name in "$@"; do
  if [[ $name =~ ^[0-9.]+$ || $name == *:* ]]; then san+=",IP:$name"; else san+=",DNS:$name"; fi
done

# Our own minimal OpenSSL configuration, so the result does not depend on the
# system's openssl.cnf. Key identifiers and a critical basicConstraints keep
# strict verifiers (Python 3.13+ VERIFY_X509_STRICT) happy.
cat > "$work/openssl.cnf" <<CNF
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[v3_ca]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[v3_server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, $leaf_usage
extendedKeyUsage = serverAuth
subjectAltName = $san
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[v3_client]
basicConstraints = critical, CA:FALSE
keyUsage = critical, $leaf_usage
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
CNF

serial() { echo "0x$(openssl rand -hex 16)"; }

# The CA.
new_key "$out/ca.key"
openssl req -config "$work/openssl.cnf" -new -x509 -sha256 -days "$days" -key "$out/ca.key" \
  -subj "/O=glucotwin/CN=glucotwin test CA" -extensions v3_ca -set_serial "$(serial)" -out "$out/ca.crt"

sign() {  # sign NAME CN EXTENSIONS
  new_key "$out/$1.key"
  openssl req -config "$work/openssl.cnf" -new -sha256 -key "$out/$1.key" -subj "/O=glucotwin/CN=$2" \
    -out "$work/$1.csr"
  openssl x509 -req -sha256 -days "$days" -in "$work/$1.csr" -CA "$out/ca.crt" -CAkey "$out/ca.key" \
    -set_serial "$(serial)" -extfile "$work/openssl.cnf" -extensions "$3" -out "$out/$1.crt" 2>/dev/null
}

sign server "${1:-localhost}" v3_server
sign client "$client_cn" v3_client
chmod 644 "$out/ca.crt" "$out/server.crt" "$out/client.crt"

openssl verify -CAfile "$out/ca.crt" "$out/server.crt" "$out/client.crt" >/dev/null
echo "make-certs.sh: wrote ca, server ($san) and client (CN=$client_cn) certificates to $out"
