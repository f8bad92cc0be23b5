"""Registers the fake node kwok manages (idempotent). Usage: fake_node.py KUBECONFIG"""

import sys

from kubernetes import client, config
from kubernetes.client.rest import ApiException

config.load_kube_config(sys.argv[1])
node = {
    "apiVersion": "v1",
    "kind": "Node",
    "metadata": {
        "name": "kwok-node-0",
        "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
        "labels": {"type": "kwok", "kubernetes.io/hostname": "kwok-node-0", "kubernetes.io/os": "linux"},
    },
    "status": {
        "allocatable": {"cpu": "32", "memory": "256Gi", "pods": "110"},
        "capacity": {"cpu": "32", "memory": "256Gi", "pods": "110"},
    },
}
try:
    client.CoreV1Api().create_node(node)
    print("[testenv] fake node kwok-node-0 registered")
except ApiException as e:
    if e.status != 409:
        raise
