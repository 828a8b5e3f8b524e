//! The node agent: the lab's kubelet. (being written)
