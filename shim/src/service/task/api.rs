//! containerd's `Task` trait: each method logs the request, calls its `do_*` handler and
//! converts the error (errors.rs) — nothing else happens here.

use async_trait::async_trait;
use containerd_shim::api::{
    CheckpointTaskRequest, CloseIORequest, ConnectRequest, ConnectResponse, CreateTaskRequest,
    CreateTaskResponse, DeleteRequest, DeleteResponse, Empty, ExecProcessRequest, KillRequest,
    PauseRequest, PidsRequest, PidsResponse, ResizePtyRequest, ResumeRequest, ShutdownRequest,
    StartRequest, StartResponse, StateRequest, StateResponse, StatsRequest, StatsResponse,
    UpdateTaskRequest, WaitRequest, WaitResponse,
};
use containerd_shim::{Task, TtrpcContext, TtrpcResult};
use tracing::Instrument as _;

use super::super::errors::TaskError;
use super::TaskService;

fn log_request(request: &str, id: &str, exec_id: &str) {
    tracing::debug!(id, exec = exec_id, "{request}");
}

#[async_trait]
impl Task for TaskService {
    async fn create(
        &self,
        _ctx: &TtrpcContext,
        req: CreateTaskRequest,
    ) -> TtrpcResult<CreateTaskResponse> {
        log_request("create", &req.id, "");
        Ok(self
            .inner
            .do_create(req)
            .instrument(self.span.clone())
            .await?)
    }

    async fn start(&self, _ctx: &TtrpcContext, req: StartRequest) -> TtrpcResult<StartResponse> {
        log_request("start", &req.id, &req.exec_id);
        Ok(self
            .inner
            .do_start(req)
            .instrument(self.span.clone())
            .await?)
    }

    async fn delete(&self, _ctx: &TtrpcContext, req: DeleteRequest) -> TtrpcResult<DeleteResponse> {
        log_request("delete", &req.id, &req.exec_id);
        Ok(self
            .inner
            .do_delete(req)
            .instrument(self.span.clone())
            .await?)
    }

    async fn kill(&self, _ctx: &TtrpcContext, req: KillRequest) -> TtrpcResult<Empty> {
        log_request("kill", &req.id, &req.exec_id);
        self.inner
            .do_kill(req)
            .instrument(self.span.clone())
            .await?;
        Ok(Empty::new())
    }

    async fn exec(&self, _ctx: &TtrpcContext, req: ExecProcessRequest) -> TtrpcResult<Empty> {
        log_request("exec", &req.id, &req.exec_id);
        self.span.in_scope(|| self.inner.do_exec(&req))?;
        self.inner.events.exec_added(&req.id, &req.exec_id).await;
        Ok(Empty::new())
    }

    async fn state(&self, _ctx: &TtrpcContext, req: StateRequest) -> TtrpcResult<StateResponse> {
        Ok(self.inner.do_state(&req)?)
    }

    async fn wait(&self, _ctx: &TtrpcContext, req: WaitRequest) -> TtrpcResult<WaitResponse> {
        log_request("wait", &req.id, &req.exec_id);
        Ok(self
            .inner
            .do_wait(&req)
            .instrument(self.span.clone())
            .await?)
    }

    async fn pids(&self, _ctx: &TtrpcContext, req: PidsRequest) -> TtrpcResult<PidsResponse> {
        Ok(self
            .inner
            .do_pids(&req)
            .instrument(self.span.clone())
            .await?)
    }

    async fn pause(&self, _ctx: &TtrpcContext, req: PauseRequest) -> TtrpcResult<Empty> {
        log_request("pause", &req.id, "");
        self.inner
            .do_pause(&req.id, true)
            .instrument(self.span.clone())
            .await?;
        Ok(Empty::new())
    }

    async fn resume(&self, _ctx: &TtrpcContext, req: ResumeRequest) -> TtrpcResult<Empty> {
        log_request("resume", &req.id, "");
        self.inner
            .do_pause(&req.id, false)
            .instrument(self.span.clone())
            .await?;
        Ok(Empty::new())
    }

    async fn checkpoint(
        &self,
        _ctx: &TtrpcContext,
        _req: CheckpointTaskRequest,
    ) -> TtrpcResult<Empty> {
        Err(TaskError::Unimplemented(
            "checkpoint is not supported by cloak: a container's state lives in its pod VM's memory"
                .into(),
        )
        .into())
    }

    async fn close_io(&self, _ctx: &TtrpcContext, req: CloseIORequest) -> TtrpcResult<Empty> {
        log_request("close_io", &req.id, &req.exec_id);
        self.span.in_scope(|| self.inner.do_close_io(&req))?;
        Ok(Empty::new())
    }

    async fn resize_pty(&self, _ctx: &TtrpcContext, req: ResizePtyRequest) -> TtrpcResult<Empty> {
        self.inner
            .do_resize_pty(&req)
            .instrument(self.span.clone())
            .await?;
        Ok(Empty::new())
    }

    async fn update(&self, _ctx: &TtrpcContext, req: UpdateTaskRequest) -> TtrpcResult<Empty> {
        log_request("update", &req.id, "");
        self.inner
            .do_update(&req)
            .instrument(self.span.clone())
            .await?;
        Ok(Empty::new())
    }

    async fn stats(&self, _ctx: &TtrpcContext, req: StatsRequest) -> TtrpcResult<StatsResponse> {
        Ok(self
            .inner
            .do_stats(&req)
            .instrument(self.span.clone())
            .await?)
    }

    async fn connect(
        &self,
        _ctx: &TtrpcContext,
        req: ConnectRequest,
    ) -> TtrpcResult<ConnectResponse> {
        Ok(self
            .inner
            .do_connect(&req)
            .instrument(self.span.clone())
            .await?)
    }

    async fn shutdown(&self, _ctx: &TtrpcContext, _req: ShutdownRequest) -> TtrpcResult<Empty> {
        log_request("shutdown", "", "");
        self.inner.do_shutdown().instrument(self.span.clone()).await;
        Ok(Empty::new())
    }
}
