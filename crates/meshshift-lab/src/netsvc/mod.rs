//! Service networking: kube-proxy and load balancers. (being written)
