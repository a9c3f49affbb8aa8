#!/usr/bin/env bash
# The figures of BENCHMARKS.md "Replication with Litestream": one run of
# `--mode publish` at 64 connections, hookbox under a Litestream daemon
# replicating to a file or sftp replica (sshd on 127.0.0.1, as in
# tests/litestream.rs). Run from the repository root after `bash .ci/litestream`:
#   bash contrib/litestream/bench.sh none|file|sftp ["--ack-after-replica"]
# LITESTREAM=PATH overrides the litestream binary.
set -euo pipefail
L=${LITESTREAM:-${XDG_CACHE_HOME:-$HOME/.cache}/hookbox/litestream/bin/litestream}
kind=$1; extra=${2:-}
W=$(mktemp -d); trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf $W' EXIT
if [ "$kind" = none ]; then
  cargo bench -q --bench publish -- --mode publish --connections 64 --duration 10 --server-args "$extra" 2>/dev/null | tail -1
  exit
fi
if [ "$kind" = file ]; then
  REPLICA="      type: file
      path: $W/replica"
else
  mkdir -p $W/ssh /run/sshd
  ssh-keygen -q -t ed25519 -N "" -f $W/ssh/host_key; ssh-keygen -q -t ed25519 -N "" -f $W/ssh/user_key
  cp $W/ssh/user_key.pub $W/ssh/authorized_keys
  P=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
  printf "ListenAddress 127.0.0.1\nPort $P\nHostKey $W/ssh/host_key\nAuthorizedKeysFile $W/ssh/authorized_keys\nPidFile $W/ssh/pid\nUsePAM no\nStrictModes no\nPasswordAuthentication no\nSubsystem sftp internal-sftp\nLogLevel ERROR\n" > $W/ssh/cfg
  /usr/sbin/sshd -D -e -f $W/ssh/cfg 2>/dev/null &
  REPLICA="      type: sftp
      host: 127.0.0.1:$P
      user: $(id -un)
      key-path: $W/ssh/user_key
      host-key: \"$(cut -d' ' -f1,2 $W/ssh/host_key.pub)\"
      path: $W/sftp-replica"
  sleep 0.5
fi
cat > $W/ls.yml <<EOC
socket:
  enabled: true
  path: $W/ls.sock
dbs:
  - path: $W/bench.db
    monitor-interval: 200ms
    replica:
$REPLICA
      sync-interval: 200ms
EOC
$L replicate -config $W/ls.yml >$W/ls.log 2>&1 &
sleep 0.5
cargo bench -q --bench publish -- --mode publish --connections 64 --duration 10 --db $W/bench.db \
  --server-args "--litestream --litestream-socket $W/ls.sock --litestream-command $L $extra" 2>/dev/null | tail -1
