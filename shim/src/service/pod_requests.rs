//! The agent requests the Task service makes of a pod, as typed methods: each builds its
//! request in one place (no request literal with `..Default::default()` at every call site)
//! and uses the pod's request deadline, except the waits, which last as long as the process
//! or the pod does.

use cloak_protocol::agent::{
    ContainerRequest, CreateContainerRequest, ExecProcessRequest, ListProcessesResponse,
    ProcessRequest, RemoveContainerRequest, SignalProcessRequest, StatsContainerResponse,
    StdioConfig, Storage, TtyWinResizeRequest, UpdateContainerRequest, WaitProcessResponse,
};

use super::pod::Pod;

/// A ttrpc context without a deadline.
fn no_deadline() -> ttrpc::context::Context {
    ttrpc::context::with_timeout(0)
}

fn container(id: &str) -> ContainerRequest {
    ContainerRequest {
        container_id: id.to_owned(),
        ..Default::default()
    }
}

impl Pod {
    /// Creates container `id` from its OCI spec on `rootfs` (a directory the guest finds in
    /// the share, or `layers`: the verified layer images of `storages`).
    pub async fn create_container(
        &self,
        id: &str,
        oci_spec_json: Vec<u8>,
        rootfs: Storage,
        storages: Vec<Storage>,
        stdio: StdioConfig,
    ) -> ttrpc::Result<()> {
        let request = CreateContainerRequest {
            container_id: id.to_owned(),
            oci_spec_json,
            rootfs: Some(rootfs).into(),
            storages,
            stdio: Some(stdio).into(),
            ..Default::default()
        };
        self.agent()
            .create_container(self.context(), &request)
            .await
            .map(drop)
    }

    pub async fn start_container(&self, id: &str) -> ttrpc::Result<()> {
        self.agent()
            .start_container(self.context(), &container(id))
            .await
            .map(drop)
    }

    pub async fn remove_container(&self, id: &str) -> ttrpc::Result<()> {
        let request = RemoveContainerRequest {
            container_id: id.to_owned(),
            ..Default::default()
        };
        self.agent()
            .remove_container(self.context(), &request)
            .await
            .map(drop)
    }

    /// Runs process `exec_id` (OCI process JSON) in container `id`.
    pub async fn exec_process(
        &self,
        id: &str,
        exec_id: &str,
        process_json: Vec<u8>,
        stdio: StdioConfig,
    ) -> ttrpc::Result<()> {
        let request = ExecProcessRequest {
            container_id: id.to_owned(),
            exec_id: exec_id.to_owned(),
            process_json,
            stdio: Some(stdio).into(),
            ..Default::default()
        };
        self.agent()
            .exec_process(self.context(), &request)
            .await
            .map(drop)
    }

    pub async fn signal_process(
        &self,
        id: &str,
        exec_id: &str,
        signal: u32,
        all: bool,
    ) -> ttrpc::Result<()> {
        let request = SignalProcessRequest {
            container_id: id.to_owned(),
            exec_id: exec_id.to_owned(),
            signal,
            all,
            ..Default::default()
        };
        self.agent()
            .signal_process(self.context(), &request)
            .await
            .map(drop)
    }

    /// Waits, without a deadline, until the process exits.
    pub async fn wait_process(
        &self,
        id: &str,
        exec_id: &str,
    ) -> ttrpc::Result<WaitProcessResponse> {
        let request = ProcessRequest {
            container_id: id.to_owned(),
            exec_id: exec_id.to_owned(),
            ..Default::default()
        };
        self.agent().wait_process(no_deadline(), &request).await
    }

    pub async fn list_processes(&self, id: &str) -> ttrpc::Result<ListProcessesResponse> {
        self.agent()
            .list_processes(self.context(), &container(id))
            .await
    }

    pub async fn pause_container(&self, id: &str) -> ttrpc::Result<()> {
        self.agent()
            .pause_container(self.context(), &container(id))
            .await
            .map(drop)
    }

    pub async fn resume_container(&self, id: &str) -> ttrpc::Result<()> {
        self.agent()
            .resume_container(self.context(), &container(id))
            .await
            .map(drop)
    }

    /// Applies OCI `LinuxResources` (JSON) to container `id`.
    pub async fn update_container(&self, id: &str, resources_json: Vec<u8>) -> ttrpc::Result<()> {
        let request = UpdateContainerRequest {
            container_id: id.to_owned(),
            resources_json,
            ..Default::default()
        };
        self.agent()
            .update_container(self.context(), &request)
            .await
            .map(drop)
    }

    pub async fn stats_container(&self, id: &str) -> ttrpc::Result<StatsContainerResponse> {
        self.agent()
            .stats_container(self.context(), &container(id))
            .await
    }

    pub async fn resize_terminal(
        &self,
        id: &str,
        exec_id: &str,
        rows: u32,
        columns: u32,
    ) -> ttrpc::Result<()> {
        let request = TtyWinResizeRequest {
            container_id: id.to_owned(),
            exec_id: exec_id.to_owned(),
            rows,
            columns,
            ..Default::default()
        };
        self.agent()
            .tty_win_resize(self.context(), &request)
            .await
            .map(drop)
    }
}
