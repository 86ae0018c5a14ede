# shellcheck shell=bash
# Sourced by bench/cluster_ingest.sh and bench/cluster_failover.sh: starts REPLICAS (1 or 3)
# nats-servers with JetStream on free loopback ports, each with its store under "$work"
# (clustered by routes when 3, as docs/cluster.md's "Three nodes on one machine"), appends
# their pids to "pids" (the caller's trap stops them) and sets nats_url to every server's
# client URL, comma-separated. Returns once every server's JetStream answers /healthz (with 3,
# once the meta leader is elected). The nodes then create their streams at REPLICAS replicas
# (--cluster-replicas "$replicas").
replicas="${REPLICAS:-1}"
case "$replicas" in
  1 | 3) ;;
  *) echo "REPLICAS must be 1 or 3" >&2; exit 2 ;;
esac

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

start_nats() {
  local i routes="" url
  local -a client_ports=() cluster_ports=() monitor_ports=()
  for i in $(seq "$replicas"); do
    client_ports+=("$(free_port)")
    cluster_ports+=("$(free_port)")
    monitor_ports+=("$(free_port)")
  done
  nats_url=""
  for i in $(seq 0 $((replicas - 1))); do
    nats_url+="${nats_url:+,}nats://127.0.0.1:${client_ports[i]}"
  done
  for i in $(seq 0 $((replicas - 1))); do
    local -a args=(-a 127.0.0.1 -p "${client_ports[i]}" -m "${monitor_ports[i]}" -n "nats$((i + 1))"
      -js -sd "$work/nats$((i + 1))")
    if [ "$replicas" -gt 1 ]; then
      routes=""
      for j in $(seq 0 $((replicas - 1))); do
        [ "$j" = "$i" ] && continue
        routes+="${routes:+,}nats://127.0.0.1:${cluster_ports[j]}"
      done
      args+=(--cluster_name bench-nats --cluster "nats://127.0.0.1:${cluster_ports[i]}" --routes "$routes")
    fi
    nats-server "${args[@]}" >"$work/nats$((i + 1)).log" 2>&1 &
    pids+=($!)
  done
  for port in "${monitor_ports[@]}"; do
    url="http://127.0.0.1:$port/healthz"
    for _ in $(seq 600); do
      curl -sf "$url" >/dev/null 2>&1 && break
      sleep 0.1
    done
    curl -sf "$url" >/dev/null || { echo "nats-server on monitor port $port not healthy" >&2; exit 1; }
  done
}
