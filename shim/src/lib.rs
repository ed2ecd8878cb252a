//! containerd's runtime v2 shim for cloak: the Task API (`service/`) on the host crate
//! (`cloak-host`: configuration, hypervisor backends, agent client, pod VM).

pub mod service;
