//! `kubectl exec -it`, `kubectl attach` and their stdin through containerd's CRI streaming
//! server, with runc's behaviour as the expected one: each scenario runs in a runc pod and in a
//! cloak pod of the same containerd and both must give the same, stated answer. The streams go
//! the whole way a cluster's do: WebSocket → the CRI plugin → containerd's fifos → the shim →
//! vsock → the agent's terminal or pipes, and resizes → ResizePty → TtyWinResize.

#![allow(clippy::unwrap_used)] // a test fails loudly by design

use std::time::Duration;

use cloak_tests::containerd::image;
use cloak_tests::cri::{container_config, CriClient, PodSpec};
use cloak_tests::cri_compare::{on_runc_and_cloak, start};
use cloak_tests::cri_stream::{ChannelStream, STDERR, STDOUT};

const WAIT: Duration = Duration::from_secs(60);

async fn sleeper(cri: &mut CriClient, pod: &PodSpec, pod_id: &str) -> String {
    start(
        cri,
        pod,
        pod_id,
        container_config("main", &image(), &["sleep", "3600"]),
    )
    .await
}

/// Types `command` into the terminal until `answer` shows on it: a resize travels beside the
/// typed input (containerd applies it from another goroutine), so the first `stty size` may
/// run before the new size is set; what counts is that it arrives.
async fn type_until(session: &mut ChannelStream, command: &str, answer: &str) -> bool {
    for _ in 0..10 {
        session.send(0, command.as_bytes()).await.unwrap();
        if session
            .read_until(STDOUT, answer, Duration::from_secs(3))
            .await
            .is_ok()
        {
            return true;
        }
    }
    false
}

#[test]
fn exec_with_a_terminal_takes_typed_input_and_resizes() {
    let Some((runc, cloak)) = on_runc_and_cloak(
        "exec_with_a_terminal_takes_typed_input_and_resizes",
        |_| {},
        async |cri, pod, pod_id, _| {
            let id = sleeper(cri, pod, pod_id).await;
            let mut session = cri.exec_stream(&id, &["sh"], true, true).await.unwrap();
            session
                .send(0, b"read answer; echo got-$answer\n")
                .await
                .unwrap();
            session.send(0, b"forty-two\n").await.unwrap();
            session
                .read_until(STDOUT, "got-forty-two", WAIT)
                .await
                .unwrap();
            session.resize(123, 45).await.unwrap();
            let resized = type_until(&mut session, "stty size\n", "45 123").await;
            // A terminal it is: the shell sees one on stdin.
            session
                .send(0, b"[ -t 0 ] && echo on-a-tty\n")
                .await
                .unwrap();
            let tty = session
                .read_until(STDOUT, "on-a-tty\r\n", WAIT)
                .await
                .is_ok();
            session.send(0, b"exit 7\n").await.unwrap();
            session.read_to_close(WAIT).await.unwrap();
            (resized, tty, session.exit_code())
        },
    ) else {
        return;
    };
    assert_eq!(runc, (true, true, Some(7)), "runc: the expected behaviour");
    assert_eq!(cloak, runc, "cloak behaves as runc");
}

#[test]
fn exec_without_a_terminal_keeps_stdout_and_stderr_apart_and_reads_stdin() {
    let Some((runc, cloak)) = on_runc_and_cloak(
        "exec_without_a_terminal_keeps_stdout_and_stderr_apart_and_reads_stdin",
        |_| {},
        async |cri, pod, pod_id, _| {
            let id = sleeper(cri, pod, pod_id).await;
            let script = "read line; echo out-$line; echo err-$line >&2; [ -t 0 ] || exit 3";
            let mut session = cri
                .exec_stream(&id, &["sh", "-c", script], false, true)
                .await
                .unwrap();
            session.send(0, b"typed\n").await.unwrap();
            session.read_to_close(WAIT).await.unwrap();
            (
                session.text(STDOUT),
                session.text(STDERR),
                session.exit_code(),
            )
        },
    ) else {
        return;
    };
    assert_eq!(
        runc,
        ("out-typed\n".into(), "err-typed\n".into(), Some(3)),
        "runc: the expected behaviour"
    );
    assert_eq!(cloak, runc, "cloak behaves as runc");
}

#[test]
fn attach_reaches_the_main_process_and_closing_stdin_once_ends_it() {
    let Some((runc, cloak)) = on_runc_and_cloak(
        "attach_reaches_the_main_process_and_closing_stdin_once_ends_it",
        |_| {},
        async |cri, pod, pod_id, _| {
            // An interactive shell as the main process (`kubectl run -it … -- sh`).
            let mut config = container_config("shell", &image(), &["sh"]);
            config.stdin = true;
            config.tty = true;
            let shell = start(cri, pod, pod_id, config).await;
            let mut session = cri.attach_stream(&shell, true, true).await.unwrap();
            session.resize(90, 30).await.unwrap();
            let answered = type_until(
                &mut session,
                "echo attached-$((40+2)); stty size\n",
                "30 90",
            )
            .await;
            session.close().await.unwrap();

            // stdinOnce: when the attached client's input ends, the container's stdin
            // closes, and a reader of it sees the end.
            let mut config =
                container_config("reader", &image(), &["sh", "-c", "cat; echo stdin-ended"]);
            config.stdin = true;
            config.stdin_once = true;
            let reader = start(cri, pod, pod_id, config).await;
            let mut session = cri.attach_stream(&reader, false, true).await.unwrap();
            session.send(0, b"abc\n").await.unwrap();
            session.read_until(STDOUT, "abc\n", WAIT).await.unwrap();
            session.close().await.unwrap();
            let exit = cri.wait_for_exit(&reader, WAIT).await.unwrap();
            let log = std::fs::read_to_string(pod.log_directory.join("reader.log")).unwrap();
            let ended = log.contains("stdout F abc") && log.contains("stdout F stdin-ended");
            (answered, exit, ended, session_state(cri, &shell).await)
        },
    ) else {
        return;
    };
    assert_eq!(
        runc,
        (true, 0, true, "running".into()),
        "runc: the expected behaviour"
    );
    assert_eq!(cloak, runc, "cloak behaves as runc");
}

/// The shell's state after its attached client left: it keeps running (no stdinOnce).
async fn session_state(cri: &mut CriClient, id: &str) -> String {
    let status = cri.container_status(id).await.unwrap();
    if status.state == k8s_cri::v1::ContainerState::ContainerRunning as i32 {
        "running".into()
    } else {
        format!("state {} exit {}", status.state, status.exit_code)
    }
}
