# compose's `setup`: the certificates of every controller, agent, Envoy
# and of the admin operator `init` and the host's CLI use, and each
# region's Envoy bootstrap (mutual TLS to its controllers, each checked on
# its /readyz), into shared
# volumes. Runs on every `up`; keeps what exists.
set -euo pipefail
tls=/etc/meridian/tls
shared=/etc/meridian/shared
regions="us-east:1 eu-west:2 ap-south:3"
if [ ! -f "$tls/ca.pem" ]; then
  meridian certs init-ca --dir "$tls"
  for rn in $regions; do
    r=${rn%:*} n=${rn#*:}
    for i in 1 2 3; do
      meridian certs node --dir "$tls" --id "$n$i" --host "$r-$i" --host "10.90.0.$n$i"
    done
    meridian certs agent --dir "$tls" --cluster "compose-$r"
  done
  meridian certs envoy --dir "$tls" --group default
  meridian certs operator --dir "$tls" --name compose-admin --role admin
fi
for rn in $regions; do
  r=${rn%:*}
  meridian bootstrap --node-id "envoy-$r" --region "$r" \
    --controllers "$r=$r-1:7402,$r=$r-2:7402,$r=$r-3:7402" --controller-admin-port 7403 \
    --tls-cert "$tls/proxy-default.pem" --tls-key "$tls/proxy-default-key.pem" --tls-ca "$tls/ca.pem" \
    -O "$shared/envoy-$r.yaml"
done
echo "setup: certificates in $tls, Envoy bootstraps in $shared"
