#!/usr/bin/env bash
# A three-node RabbitMQ cluster on this machine, beside the default node (which it never
# touches): nodes bulkops-c1..c3@localhost, AMQP on 5681-5683, distribution on 25681-25683,
# no plugins (so no management or Prometheus listener to clash with the default node's),
# data and logs under $BULKOPS_TEST_CLUSTER_DIR (default /tmp/bulkops-cluster), a cookie of its own.
#
#   scripts/cluster.sh start         start the nodes that are down, join 2 and 3 to 1 (idempotent)
#   scripts/cluster.sh stop          stop every node (SIGKILL after a bound)
#   scripts/cluster.sh status        one line per node: up or down
#   scripts/cluster.sh start-node N  start node N alone (after a test killed it)
#   scripts/cluster.sh pid N         the OS pid of node N's beam process
#   scripts/cluster.sh urls          the nodes' AMQP URLs, comma-separated
#
# Every step is bounded in time (TIMEOUT seconds per node, default 90).
set -euo pipefail

BASE="${BULKOPS_TEST_CLUSTER_DIR:-/tmp/bulkops-cluster}"
TIMEOUT="${BULKOPS_TEST_CLUSTER_TIMEOUT:-90}"
BIN=/usr/lib/rabbitmq/bin  # the Debian wrappers in /usr/sbin switch to the rabbitmq user
NODES=(1 2 3)

node_name() { echo "bulkops-c$1@localhost"; }
amqp_port() { echo $((5680 + $1)); }
dist_port() { echo $((25680 + $1)); }

prepare() {
  mkdir -p "$BASE/home"
  if [[ ! -f "$BASE/home/.erlang.cookie" ]]; then
    (umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$BASE/home/.erlang.cookie")
  fi
  chmod 400 "$BASE/home/.erlang.cookie"
  echo "[]." >"$BASE/enabled_plugins"
  : >"$BASE/rabbitmq-env.conf"  # not /etc/rabbitmq's: that one names the default node
}

node_env() {  # the environment of node $1, for its server and for rabbitmqctl against it
  local n=$1 dir="$BASE/c$1"
  mkdir -p "$dir"
  cat >"$dir/rabbitmq.conf" <<EOF
listeners.tcp.local = 127.0.0.1:$(amqp_port "$n")
loopback_users = none
EOF
  export HOME="$BASE/home"
  export RABBITMQ_NODENAME
  RABBITMQ_NODENAME="$(node_name "$n")"
  export RABBITMQ_DIST_PORT
  RABBITMQ_DIST_PORT="$(dist_port "$n")"
  export RABBITMQ_NODE_PORT
  RABBITMQ_NODE_PORT="$(amqp_port "$n")"
  export RABBITMQ_CONFIG_FILE="$dir/rabbitmq.conf"
  export RABBITMQ_CONF_ENV_FILE="$BASE/rabbitmq-env.conf"
  export RABBITMQ_ENABLED_PLUGINS_FILE="$BASE/enabled_plugins"
  export RABBITMQ_MNESIA_BASE="$dir/mnesia"
  export RABBITMQ_LOG_BASE="$dir/log"
  export RABBITMQ_PID_FILE="$dir/pid"
  export ERL_EPMD_ADDRESS=127.0.0.1
  export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
}

ctl() {  # ctl N args...: rabbitmqctl against node N, bounded
  local n=$1
  shift
  (node_env "$n" && timeout "$TIMEOUT" "$BIN/rabbitmqctl" -q -n "$(node_name "$n")" "$@")
}

up() { (node_env "$1" && timeout 10 "$BIN/rabbitmq-diagnostics" -q -n "$(node_name "$1")" ping >/dev/null 2>&1); }

pid_of() {  # node $1's beam process: the pid file the node writes, if that process lives
  local file="$BASE/c$1/pid" pid
  [[ -f "$file" ]] || return 0
  pid="$(cat "$file")"
  if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then echo "$pid"; fi
}

start_node() {
  local n=$1
  prepare
  if up "$n"; then return 0; fi
  (
    node_env "$n"
    mkdir -p "$RABBITMQ_LOG_BASE"
    setsid "$BIN/rabbitmq-server" >"$RABBITMQ_LOG_BASE/stdout.log" 2>&1 </dev/null &
  )
  local deadline=$((SECONDS + TIMEOUT))
  # await_startup fails at once while the node has not registered with epmd yet: retry
  until ctl "$n" await_startup --timeout "$TIMEOUT" >/dev/null 2>>"$BASE/c$n/log/ctl.log"; do
    if ((SECONDS >= deadline)); then
      echo "cluster: node $n did not start within $TIMEOUT s (see $BASE/c$n/log)" >&2
      return 1
    fi
    sleep 1
  done
}

joined() {  # whether node $1 is already in node 1's cluster
  ctl 1 cluster_status --formatter json 2>/dev/null | grep -q "\"$(node_name "$1")\""
}

join() {
  local n=$1
  if joined "$n"; then return 0; fi
  ctl "$n" stop_app >/dev/null
  ctl "$n" reset >/dev/null
  ctl "$n" join_cluster "$(node_name 1)" >/dev/null
  ctl "$n" start_app >/dev/null
  ctl "$n" await_startup --timeout "$TIMEOUT" >/dev/null
}

start() {
  local started=$SECONDS n
  for n in "${NODES[@]}"; do start_node "$n" & done
  wait
  for n in 2 3; do join "$n"; done
  echo "cluster: 3 nodes up in $((SECONDS - started)) s: $(urls)"
}

stop_node() {
  local n=$1 pid
  pid="$(pid_of "$n")"
  [[ -z "$pid" ]] && return 0
  ctl "$n" stop >/dev/null 2>&1 || true
  for _ in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.2
  done
  kill -9 "$pid" 2>/dev/null || true
}

stop() {
  local n
  for n in "${NODES[@]}"; do stop_node "$n" & done
  wait
  echo "cluster: stopped"
}

status() {
  local n
  for n in "${NODES[@]}"; do
    if up "$n"; then echo "$(node_name "$n") up amqp:$(amqp_port "$n") pid:$(pid_of "$n")"
    else echo "$(node_name "$n") down"; fi
  done
}

urls() {
  local n out=()
  for n in "${NODES[@]}"; do out+=("amqp://guest:guest@127.0.0.1:$(amqp_port "$n")/"); done
  (IFS=,; echo "${out[*]}")
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  start-node) start_node "$2" ;;
  pid) pid_of "$2" ;;
  urls) urls ;;
  *) echo "usage: $0 start|stop|status|start-node N|pid N|urls" >&2; exit 2 ;;
esac
