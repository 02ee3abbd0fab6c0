#!/bin/sh
# Regenerates signed/*.eml: the messages in messages/ signed by OpenDKIM
# (Debian's opendkim package) with the test keys here, in relaxed/relaxed and
# simple/simple, through milter-check. The dkim example's tests verify them.
# Usage: make-fixtures.sh PATH-TO-milter-check
set -eu
check=$1
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; rm -rf "$work"' EXIT
printf 'rsa._domainkey.example.com example.com:rsa:%s/rsa2048.pem\ned._domainkey.example.com example.com:ed:%s/ed25519.pem\n' "$here" "$here" > "$work/keytable"
printf 'example.com rsa._domainkey.example.com\nexample.com ed._domainkey.example.com\n' > "$work/signtable"
for canon in relaxed simple; do
    cat > "$work/opendkim.conf" <<CONF
Mode s
Canonicalization $canon/$canon
KeyTable $work/keytable
SigningTable $work/signtable
MultipleSignatures yes
RequireSafeKeys false
InternalHosts 127.0.0.1
SignHeaders From,To,Subject,Date,Message-ID,MIME-Version,Content-Type,Content-Transfer-Encoding
Socket inet:18891@127.0.0.1
Background no
Syslog no
CONF
    opendkim -f -x "$work/opendkim.conf" & pid=$!
    sleep 1
    for m in "$here"/messages/*.eml; do
        name=$(basename "$m" .eml)
        "$check" --quiet --client-addr 127.0.0.1 --output "$here/signed/$name.$canon.eml" \
            inet:18891@127.0.0.1 "$m"
    done
    kill $pid; wait $pid 2>/dev/null || true
done
