# compose's `setup`: certificates (for mutual TLS, once `meridian server`
# takes them) and each region's Envoy bootstrap, into shared volumes. Runs
# on every `up`; keeps what exists.
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
fi
for rn in $regions; do
  r=${rn%:*}
  meridian bootstrap --node-id "envoy-$r" --region "$r" \
    --controllers "$r=$r-1:7402,$r=$r-2:7402,$r=$r-3:7402" -O "$shared/envoy-$r.yaml"
done
echo "setup: certificates in $tls, Envoy bootstraps in $shared"
