#!/bin/sh
# Entry point of the cloak node installer (configs/kubernetes/node-installer.yaml): installs
# cloak into the node's root filesystem mounted at $HOST_ROOT, restarts the node's containerd,
# labels the node for the RuntimeClasses' nodeSelectors, then sleeps so the DaemonSet stays
# ready. On SIGTERM (DaemonSet deleted) it uninstalls and removes the labels again.
set -eu

HOST_ROOT=${HOST_ROOT:-/host}
NODE_NAME=${NODE_NAME:?the DaemonSet passes the node name (fieldRef spec.nodeName)}
RUNTIME_LABEL=cloak.io/runtime
SNP_LABEL=cloak.io/sev-snp

log() { echo "cloak-node-installer: $*"; }

host() {
    # The node's own mount namespace (hostPID): systemctl talks to the node's systemd.
    nsenter --target 1 --mount --uts --ipc --net --pid -- "$@"
}

install() {
    cloak install --root "$HOST_ROOT" --guest-image /opt/cloak/guest --binaries /opt/cloak/bin
    log "restarting containerd on $NODE_NAME"
    host systemctl restart containerd
    kubectl label node "$NODE_NAME" --overwrite "$RUNTIME_LABEL=true"
    if cloak check --config "$HOST_ROOT/etc/cloak/configuration-snp.toml" | grep -q '^yes  SNP guests'; then
        kubectl label node "$NODE_NAME" --overwrite "$SNP_LABEL=true"
        log "$NODE_NAME can launch SEV-SNP pods"
    else
        kubectl label node "$NODE_NAME" "$SNP_LABEL-" >/dev/null 2>&1 || true
    fi
    log "installed; node labelled"
}

uninstall() {
    log "uninstalling from $NODE_NAME"
    kubectl label node "$NODE_NAME" "$RUNTIME_LABEL-" "$SNP_LABEL-" >/dev/null 2>&1 || true
    cloak uninstall --root "$HOST_ROOT"
    host systemctl restart containerd
    exit 0
}

trap uninstall TERM INT
install
while :; do sleep 3600 & wait $!; done
