#!/usr/bin/env bash
# Throughput and latency through Envoy alone, Envoy + Warden as ext_authz, Envoy + Warden as
# ext_proc, in one run, on loopback: wrk (apt-get install wrk) at full load for DURATION seconds
# per setup, the same upstream (a tiny Python server would be the bottleneck, so Envoy's own
# direct_response stands in for the upstream) and the same route chain (apiKeyAuth, rateLimit
# high enough not to refuse, addSecurityHeaders on ext_proc's response); then oha at a fixed
# rate (half the slowest setup's maximum) for the latency each setup adds at that rate.
# Usage: bench/envoy.sh [DURATION] (needs target/release/warden: cargo build --release -p warden-cli)
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${1:-10}"
ENVOY="${WARDEN_TEST_ENVOY:-.ci/envoy/envoy/_bin/envoy}"
WARDEN="${WARDEN_BIN:-target/release/warden}"
THREADS=2 CONNS=32
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

mkdir -p "$work/policies"
cat > "$work/warden.yaml" <<YAML
policies: $work/policies
keys_file: $work/keys.json
state: memory
decision_log: false
log_level: warn
envoy:
  listen: 127.0.0.1:19191
  route_from: "attribute:xds.route_name"
  routes:
    bench:
      request:
        - {policy: apiKeyAuth}
        - {policy: rateLimit, config: {requests: 1000000000, window_secs: 1}}
      response: [{policy: addSecurityHeaders}]
YAML
printf 'warden: 1\nname: p\ndefault: allow\n' > "$work/policies/p.yaml"
KEY=$("$WARDEN" keys create --tenant bench --policy p --config "$work/warden.yaml" 2>/dev/null)
"$WARDEN" serve --config "$work/warden.yaml" --listen 127.0.0.1:0 --port-file "$work/port" 2>"$work/warden.log" &
pids+=($!)
for _ in $(seq 100); do [ -s "$work/port" ] && break; sleep 0.1; done

envoy_config() { # $1: none | ext_authz | ext_proc, $2: port, $3: admin port
  local filter=""
  case "$1" in
    ext_proc) filter='          - name: envoy.filters.http.ext_proc
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor
              grpc_service: {envoy_grpc: {cluster_name: warden}, timeout: 5s}
              processing_mode: {request_header_mode: SEND, response_header_mode: SEND, request_body_mode: NONE, response_body_mode: NONE, request_trailer_mode: SKIP, response_trailer_mode: SKIP}
              request_attributes: ["xds.route_name"]' ;;
    ext_authz) filter='          - name: envoy.filters.http.ext_authz
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
              transport_api_version: V3
              grpc_service: {envoy_grpc: {cluster_name: warden}, timeout: 5s}' ;;
  esac
  cat <<YAML
admin: {address: {socket_address: {address: 127.0.0.1, port_value: $3}}}
static_resources:
  listeners:
  - name: main
    address: {socket_address: {address: 127.0.0.1, port_value: $2}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - name: bench
                match: {prefix: "/"}
                direct_response: {status: 200, body: {inline_string: "ok"}}
                typed_per_filter_config:
                  envoy.filters.http.ext_authz:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute
                    check_settings: {context_extensions: {xds.route_name: bench}}
          http_filters:
$filter
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
  clusters:
  - name: warden
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {http2_protocol_options: {}}
    load_assignment:
      cluster_name: warden
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 19191}}}}]}]
YAML
}

start_envoy() { # $1: setup, $2: index; sets port, epid
  port=$((18000 + $2)) admin=$((18100 + $2))
  envoy_config "$1" "$port" "$admin" > "$work/envoy-$1.yaml"
  "$ENVOY" -c "$work/envoy-$1.yaml" --base-id $((4000 + $2)) --concurrency 1 --log-level error >"$work/envoy-$1.log" 2>&1 &
  epid=$!
  pids+=($epid)
  for _ in $(seq 100); do curl -sf "127.0.0.1:$admin/ready" >/dev/null && break; sleep 0.1; done
  code=$(curl -s -o /dev/null -w '%{http_code}' -H "x-api-key: $KEY" "127.0.0.1:$port/")
  [ "$code" = 200 ] || { echo "$1: a keyed request answered $code"; exit 1; }
}

echo "== maximum rate: wrk -t$THREADS -c$CONNS -d${DURATION}s --latency; envoy --concurrency 1"
echo "setup        requests/s   p50      p99"
declare -A max
i=0
for setup in none ext_authz ext_proc; do
  i=$((i + 1))
  start_envoy "$setup" "$i"
  wrk -t$THREADS -c$CONNS -d"${DURATION}s" --latency -H "x-api-key: $KEY" "http://127.0.0.1:$port/" > "$work/wrk-$setup.txt"
  rps=$(awk '/Requests\/sec/ {print $2}' "$work/wrk-$setup.txt")
  max[$setup]=${rps%.*}
  p50=$(awk '$1 == "50%" {print $2}' "$work/wrk-$setup.txt")
  p99=$(awk '$1 == "99%" {print $2}' "$work/wrk-$setup.txt")
  printf '%-12s %-12s %-8s %-8s\n' "$setup" "$rps" "$p50" "$p99"
  kill "$epid"; wait "$epid" 2>/dev/null || true
done

# Half the slowest setup's maximum, the same fixed rate for all three, so that the latency
# Warden adds is read against Envoy alone at that rate.
slowest=${max[none]}
for s in ext_authz ext_proc; do [ "${max[$s]}" -lt "$slowest" ] && slowest=${max[$s]}; done
rate=$((slowest / 2))
echo "== fixed rate: $rate requests/s (half the slowest maximum), oha -z ${DURATION}s -c $CONNS -q $rate --latency-correction"
echo "setup        p50(ms)  p99(ms)  p99.9(ms)  p99 added(ms)"
base_p99=""
for setup in none ext_authz ext_proc; do
  i=$((i + 1))
  start_envoy "$setup" "$i"
  oha -z "${DURATION}s" -c $CONNS -q $rate --latency-correction --no-tui --output-format json \
    -H "x-api-key: $KEY" "http://127.0.0.1:$port/" > "$work/oha-$setup.json"
  read -r p50 p99 p999 < <(python3 -c 'import json,sys; p=json.load(open(sys.argv[1]))["latencyPercentiles"]; print(*(round(p[k]*1000, 3) for k in ("p50","p99","p99.9")))' "$work/oha-$setup.json")
  [ -z "$base_p99" ] && base_p99=$p99
  added=$(python3 -c "print(round($p99 - $base_p99, 3))")
  printf '%-12s %-8s %-8s %-10s %s\n' "$setup" "$p50" "$p99" "$p999" "$added"
  kill "$epid"; wait "$epid" 2>/dev/null || true
done
