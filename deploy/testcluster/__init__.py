"""The test cluster (kube-apiserver + etcd on loopback): `python -m deploy.testcluster.cluster --help`."""
